//! The `mmsb` command: argument parsing, printing and exit codes. All logic is in the library.

mod man;
mod print;
mod progress;

use mmsb::timing::ms;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::{Compression, Log};
use mmsb::replay::{PageCheck, ReplayLimit, State};
use mmsb::testing::generate::{GenOptions, Mix, SizeDist};

const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  success (for verify: no problem found)
  1  the data is bad: corruption, a torn tail, a log for another state, a delta that does not apply
  2  usage error, I/O error, or a request that cannot be carried out";

/// mmsb: checkpoints of pages plus append-only, checksummed logs of byte-level deltas.
#[derive(Parser)]
#[command(name = "mmsb", version, about, after_help = EXIT_STATUS, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When another mmsb process holds a log's write lock, wait for it instead of failing.
    #[arg(long, global = true)]
    wait: bool,
}

impl Cli {
    fn lock_wait(&self) -> mmsb::format::lock::LockWait {
        if self.wait {
            mmsb::format::lock::LockWait::Wait
        } else {
            mmsb::format::lock::LockWait::Fail
        }
    }
}

/// Takes the write lock of every log directory among `logs` (before anything reads them, so
/// that what is read is what gets extended or cut).
fn lock_logs(logs: &[PathBuf], wait: mmsb::format::lock::LockWait) -> Result<Vec<mmsb::format::lock::LogLock>> {
    let mut dirs: Vec<PathBuf> = logs.iter().map(|p| mmsb::format::lock::log_dir(p)).collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs
        .iter()
        .map(|d| mmsb::format::lock::LogLock::exclusive(d, wait))
        .collect::<mmsb::Result<Vec<_>>>()?)
}

/// Ends the process on SIGINT, SIGTERM or SIGHUP after removing the temporary outputs it was
/// writing (no destructor runs when a signal kills a process).
fn remove_temp_outputs_on_signal() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            mmsb::fsutil::remove_live_temp_outputs();
            std::process::exit(128 + sig);
        }
    });
}

#[derive(Subcommand)]
enum Command {
    Gen(GenArgs),
    Import(ImportArgs),
    Export(ExportArgs),
    Inspect(InspectArgs),
    Verify(VerifyArgs),
    Recover(RecoverArgs),
    Replay(ReplayArgs),
    Compact(CompactArgs),
    Diff(DiffArgs),
    Stress(StressArgs),
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Prints a shell completion script: bash, zsh, fish, powershell or elvish.
    #[command(
        after_help = "EXAMPLES:\n  mmsb completions bash > ~/.local/share/bash-completion/completions/mmsb\n  mmsb completions zsh > ~/.zfunc/_mmsb     (with fpath+=~/.zfunc before compinit)\n  mmsb completions fish > ~/.config/fish/completions/mmsb.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Writes the man pages (mmsb.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    ManPages {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes a synthetic checkpoint and log from a seed.
#[derive(Args)]
#[command(
    after_help = "EXAMPLE:\n  mmsb gen -o demo.ckpt --total-size 64MiB --pages 32 --deltas 10000 --mix full=1,sparse=8,masked=1\n  (writes demo.ckpt and the log directory demo.log/)"
)]
struct GenArgs {
    /// Checkpoint to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Log directory to write (default: the checkpoint's path with extension .log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// RNG seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of pages (at most 100,000,000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pages: u64,
    /// Total page bytes (suffixes K, M, G, KiB, MiB, GiB; at most 1 TiB).
    #[arg(long, default_value = "64MiB", value_parser = size_in(0, 1 << 40))]
    total_size: u64,
    /// Page-size distribution.
    #[arg(long, value_enum, default_value_t = SizeDistArg::LogUniform)]
    page_sizes: SizeDistArg,
    /// Records in the log (0: no log; at most 1,000,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    deltas: u64,
    /// Weights of record kinds: full, sparse, masked, create, resize, delete, fill.
    #[arg(long, default_value = "full=1,sparse=8,masked=1", value_parser = parse_mix)]
    mix: Mix,
    /// Bytes per sparse range, masked span or created page, as MIN..MAX (1 B to 1 GiB).
    #[arg(long, default_value = "4..4096", value_parser = parse_range)]
    delta_bytes: (u64, u64),
    /// Most ranges in one sparse record (1 to 4096).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_ranges: u32,
    /// Largest page that full-page writes go to (others get sparse writes; at most 1 TiB).
    #[arg(long, default_value = "1MiB", value_parser = size_in(0, 1 << 40))]
    full_max: u64,
    /// Fraction of pages that are hot (0 to 1).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    hot_fraction: f64,
    /// Fraction of writes that go to hot pages (0 to 1).
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    hot_weight: f64,
    /// Log segment size (4 KiB to 1 TiB).
    #[arg(long, default_value = "64MiB", value_parser = size_in(4096, 1 << 40))]
    segment_size: u64,
    /// Payload compression: none, auto, zstd or zstd:LEVEL.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compress: Compression,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MemoryArg {
    Device,
    Unified,
    HostMapped,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlacementArg {
    Shard,
    Replicate,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadArg {
    Buffered,
    PinMapping,
    Direct,
}

impl ReadArg {
    fn mode(self) -> mmsb::gpu::loader::ReadMode {
        use mmsb::gpu::loader::ReadMode;
        match self {
            ReadArg::Buffered => ReadMode::Buffered,
            ReadArg::PinMapping => ReadMode::PinMapping,
            ReadArg::Direct => ReadMode::Direct,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SizeDistArg {
    Equal,
    LogUniform,
}

/// Imports a safetensors file as a checkpoint (one page per tensor).
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb import model.safetensors -o model.ckpt\n  mmsb import step7.safetensors --epoch 7 -o step7.ckpt"
)]
struct ImportArgs {
    /// The safetensors file.
    input: PathBuf,
    /// Checkpoint to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Every page's epoch: the training step the file is, so that the records `diff --append`
    /// makes from it carry the step and `replay --to-epoch STEP` restores it.
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// Exports a checkpoint (after replaying logs on it) as a safetensors file.
#[derive(Args)]
#[command(after_help = "EXAMPLE:\n  mmsb export model.ckpt model.log -o step42.safetensors --to-epoch 42")]
struct ExportArgs {
    /// The checkpoint.
    checkpoint: PathBuf,
    /// Log segments or log directories to replay first.
    logs: Vec<PathBuf>,
    /// safetensors file to write.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    limit: LimitArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LimitArgs {
    /// Replay records up to and including this sequence number.
    #[arg(long, conflicts_with = "to_epoch")]
    to_seq: Option<u64>,
    /// Replay until the first record whose epoch is above this one.
    #[arg(long)]
    to_epoch: Option<u64>,
}

impl LimitArgs {
    fn limit(&self) -> ReplayLimit {
        ReplayLimit {
            to_seq: self.to_seq,
            to_epoch: self.to_epoch,
        }
    }
}

/// Shows what is inside checkpoints and logs.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb inspect model.ckpt\n  mmsb inspect model.ckpt --page 'model.layers.0.*'\n  mmsb inspect model.ckpt model.log --records --page 3 --page 'lm_head.*' --from-seq 100 --to-seq 200"
)]
struct InspectArgs {
    /// Checkpoints, log segments or log directories (all segments given form one log).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// List log records.
    #[arg(long)]
    records: bool,
    /// With --records: lowest sequence number.
    #[arg(long, requires = "records")]
    from_seq: Option<u64>,
    /// With --records: highest sequence number.
    #[arg(long, requires = "records")]
    to_seq: Option<u64>,
    /// Only these pages (in a checkpoint's page list, and with --records, the records for
    /// them): an id (7), an id range (10-20) or a glob over names ('model.layers.1?.*');
    /// repeatable. Names of a log's pages come from its CREATE records and from a checkpoint
    /// given with it.
    #[arg(long = "page", value_name = "PATTERN")]
    pages: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Checks every checksum, the structure, and that every delta applies. Quiet unless asked.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb verify model.ckpt model.log && echo ok\n  mmsb verify --json model.ckpt model.log | jq .problems\n  mmsb verify --repair model.ckpt model.log    (cuts a torn tail, keeping a backup)"
)]
struct VerifyArgs {
    /// One checkpoint and its log segments/directories, or any number of checkpoints.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON report of every problem on stdout.
    #[arg(long)]
    json: bool,
    /// Print a summary table even when all is well.
    #[arg(short, long)]
    verbose: bool,
    /// If the only problem is a torn tail, cut it (as `mmsb recover` does).
    #[arg(long)]
    repair: bool,
}

/// Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record.
#[derive(Args)]
#[command(after_help = "EXAMPLE:\n  mmsb recover model.log --backup torn.bin")]
struct RecoverArgs {
    /// Log segments or log directory.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Where to keep the cut bytes (default: beside the segment, SEGMENT.torn-OFFSET).
    #[arg(long)]
    backup: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb replay model.ckpt model.log\n  mmsb replay model.ckpt model.log --to-seq 5000 -o model-5000.ckpt --json\n  mmsb replay model.ckpt model.log --device cuda:0,cuda:1 --placement replicate --verify"
)]
struct ReplayArgs {
    /// The checkpoint.
    checkpoint: PathBuf,
    /// Log segments or log directories.
    logs: Vec<PathBuf>,
    /// Where to replay: auto (cuda:0 when a GPU is there, else the CPU), cpu, cuda:N, or a list
    /// of devices (cuda:0,cuda:1) with --placement.
    #[arg(long, default_value = "auto")]
    device: String,
    /// With several devices: shard (each page on one device, balanced by bytes) or replicate
    /// (every page on every device; the file is read once and copied device to device).
    #[arg(long, value_enum, default_value_t = PlacementArg::Shard)]
    placement: PlacementArg,
    /// GPU memory for the pages: device, unified or host-mapped.
    #[arg(long, value_enum, default_value_t = MemoryArg::Device)]
    memory: MemoryArg,
    /// GPU: check the bytes on the device against the checkpoint's CRC32C and compute the state
    /// hash on the GPU. (The CPU replay always checks, and always prints the hash.)
    #[arg(long)]
    verify: bool,
    /// Replay only these pages: an id (7), an id range (10-20) or a glob over names
    /// ('model.layers.1?.*'); repeatable. The hash and -o cover the selected pages. A GPU
    /// loads only them and applies only their deltas; the CPU replays the whole log (every
    /// record is still checked) and keeps them.
    #[arg(long = "pages", value_name = "PATTERN")]
    pages: Vec<String>,
    /// GPU: how to read the checkpoint (default: from the page cache when the file is cached,
    /// else with O_DIRECT).
    #[arg(long, value_enum, hide = true)]
    read: Option<ReadArg>,
    #[command(flatten)]
    limit: LimitArgs,
    /// Write the replayed state as a checkpoint.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Folds a log into a new checkpoint, or merges a log's deltas into fewer, smaller records.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb compact model.ckpt model.log -o model-2.ckpt\n  mmsb compact model.ckpt model.log --to-seq 5000 -o model-5000.ckpt --rest-log model-5000.log\n  mmsb compact --log-only model.log -o model-merged.log --compress zstd:9\n\nInputs are only read; each output appears only when it is complete. The merged log of\n--log-only replays to the same state as the original (same bytes and epochs: same state hash)."
)]
struct CompactArgs {
    /// The checkpoint, then its log segments or directories (with --log-only: logs only).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output: the new checkpoint (with --log-only: the new log directory).
    #[arg(short, long)]
    output: PathBuf,
    /// Merge the log's deltas without reading or writing a checkpoint.
    #[arg(long)]
    log_only: bool,
    /// Fold (or merge) only records up to this sequence number; later records are copied into
    /// the output log unchanged.
    #[arg(long)]
    to_seq: Option<u64>,
    /// Log directory for the records after --to-seq, against the new checkpoint (default: the
    /// output's path with extension .log).
    #[arg(long, conflicts_with = "log_only")]
    rest_log: Option<PathBuf>,
    /// Payload compression of the records written: auto (zstd where it saves 1/32), zstd,
    /// zstd:LEVEL or none.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    compress: Compression,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Shows what differs between two states; optionally writes the log that turns A into B.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb diff step1.ckpt step2.ckpt\n  mmsb diff model.ckpt model.ckpt --b-log model.log --stat   (what the log changed)\n  mmsb diff step1.ckpt step2.ckpt --emit-log step1-to-2.log   (then: mmsb replay step1.ckpt step1-to-2.log)\n  mmsb diff base.ckpt --a-log series.log step3.ckpt --emit-log series.log --append\n\nEXIT STATUS:\n  0  the states are identical (same pages, lengths, bytes, metadata and epochs: the same state\n     hash; with --bytes-only, epochs are not compared)\n  1  they differ\n  2  error (bad input, corruption, I/O)\nLike cmp and diff. With --emit-log the status is 0 once the log is written."
)]
struct DiffArgs {
    /// State A: a checkpoint (add its logs with --a-log).
    a: PathBuf,
    /// State B: a checkpoint (add its logs with --b-log).
    b: PathBuf,
    /// A log segment or directory replayed onto A (repeatable).
    #[arg(long = "a-log", value_name = "LOG")]
    a_logs: Vec<PathBuf>,
    /// A log segment or directory replayed onto B (repeatable).
    #[arg(long = "b-log", value_name = "LOG")]
    b_logs: Vec<PathBuf>,
    /// Replay A's log up to this sequence number.
    #[arg(long)]
    a_to_seq: Option<u64>,
    /// Replay B's log up to this sequence number.
    #[arg(long)]
    b_to_seq: Option<u64>,
    /// One line per differing page.
    #[arg(long, conflicts_with_all = ["quiet", "json"])]
    stat: bool,
    /// Print nothing: the exit status says whether the states differ.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Differing ranges listed per page (0 to 10,000).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000))]
    ranges: usize,
    /// Write the smallest log that turns A into B, as a new log directory against A's state.
    #[arg(long, value_name = "DIR")]
    emit_log: Option<PathBuf>,
    /// With --emit-log: add the records to the end of A's log (the one --a-log, replayed
    /// whole) instead of a new log, so a series of snapshots becomes one checkpoint and one log.
    #[arg(long, requires = "emit_log")]
    append: bool,
    /// Compare bytes, lengths and metadata only: states that differ only in page epochs (and so
    /// in state hash) count as identical for the exit status.
    #[arg(long, conflicts_with = "emit_log")]
    bytes_only: bool,
    /// With --emit-log: payload compression (auto, zstd, zstd:LEVEL or none).
    #[arg(long, default_value = "auto", value_parser = parse_compression, requires = "emit_log")]
    compress: Compression,
}

/// Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption
/// detection on small random states, checking that every path agrees on the state hash.
#[derive(Args)]
#[command(
    after_help = "EXAMPLE:\n  mmsb stress --duration 60s --seed 7\n\nExit status 0 when every check held, 1 on the first failure (its round and seed are printed:\nrerun with that seed to reproduce it), 2 on an error of the run itself."
)]
struct StressArgs {
    /// How long to run (s, m, h or ms suffix; more than 0, at most 7 days).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Seed of the first round (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for the rounds' files (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// In-process benchmarks (CUDA started once, then timed runs); JSON on stdout.
#[derive(Subcommand)]
enum BenchCommand {
    /// Times loading a checkpoint into GPU memory: file open to the last byte on the device.
    #[command(after_help = "EXAMPLE:\n  mmsb bench load model.ckpt --runs 7 --cold")]
    Load {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The device.
        #[arg(long, default_value = "cuda:0")]
        device: String,
        /// Timed runs (the median is reported; 1 to 1000).
        #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        runs: usize,
        /// Drop the file from the page cache before each run.
        #[arg(long)]
        cold: bool,
        /// How to read the file (default: by page-cache residency).
        #[arg(long, value_enum)]
        read: Option<ReadArg>,
        /// Staging threads (tuning; default: chosen by size and read mode; 1 to 256).
        #[arg(long, hide = true, requires = "slot", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
        threads: Option<usize>,
        /// Staging slot size (tuning; with --threads; 4 KiB to 1 GiB).
        #[arg(long, hide = true, value_parser = size_in(4096, 1 << 30), requires = "threads")]
        slot: Option<u64>,
    },
    /// Times applying a log to a resident checkpoint: log open to applied and synchronised.
    #[command(after_help = "EXAMPLE:\n  mmsb bench deltas model.ckpt model.log --runs 5")]
    Deltas {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// Log segments or directories.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The device.
        #[arg(long, default_value = "cuda:0")]
        device: String,
        /// Timed runs (the median is reported; 1 to 1000).
        #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        runs: usize,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_cmd(b: BenchCommand) -> Result<Outcome> {
    let open = |d: &str, compile| -> Result<std::sync::Arc<mmsb::gpu::Gpu>> {
        let ordinal = mmsb::gpu::parse_device(d).with_context(|| format!("--device {d}: expected cuda:N"))?;
        Ok(std::sync::Arc::new(mmsb::gpu::Gpu::open(ordinal, compile)?))
    };
    match b {
        BenchCommand::Load {
            checkpoint,
            device,
            runs,
            cold,
            read,
            threads,
            slot,
        } => {
            let gpu = open(&device, mmsb::gpu::KernelCompile::WhenNeeded)?;
            let mode = read.map(ReadArg::mode);
            let pipeline = threads.zip(slot).map(|(threads, slot)| mmsb::gpu::loader::Pipeline {
                threads,
                slot: slot as usize,
            });
            let r = mmsb::replay::gpu::bench_load(&gpu, &checkpoint, runs.max(1), cold, mode, pipeline)?;
            let med = median(r.iter().map(|x| x.open_to_resident_ms).collect());
            print::json(
                &serde_json::json!({"device": gpu.name, "cuda_start_ms": gpu.start_ms, "cold": cold, "median_ms": med, "median_gb_per_s": r[0].page_bytes as f64 / (med / 1e3) / 1e9, "runs": r}),
            )?;
        }
        BenchCommand::Deltas {
            checkpoint,
            logs,
            device,
            runs,
        } => {
            let gpu = open(&device, mmsb::gpu::KernelCompile::WhileStarting)?;
            let r = mmsb::replay::gpu::bench_deltas(&gpu, &checkpoint, &logs, runs.max(1))?;
            let med = median(r.iter().map(|x| x.log_open_to_applied_ms).collect());
            print::json(
                &serde_json::json!({"device": gpu.name, "median_ms": med, "median_payload_gb_per_s": r[0].payload_bytes as f64 / (med / 1e3) / 1e9, "runs": r}),
            )?;
        }
    }
    Ok(Outcome::Ok)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 64MiB, 1G)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s} is too large"))
}

/// A parser of sizes from `min` to `max` bytes, whose error gives the range.
fn size_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let n = parse_size(s)?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{s} is not in {} ..= {}", human_bytes(min), human_bytes(max)))
        }
    }
}

fn human_bytes(n: u64) -> String {
    print::human_bytes(n)
}

/// A fraction: a finite number from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number in 0..=1")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m, h or ms"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    match std::time::Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() && d.as_secs() <= 7 * 24 * 3600 => Ok(d),
        _ => Err(format!("{s:?} is not in 1ms..=7 days")),
    }
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?} is not MIN..MAX"))?;
    let (a, b) = (parse_size(a)?, parse_size(b)?);
    if a > b || a == 0 || b > 1 << 30 {
        return Err(format!("{s}: need 1 <= MIN <= MAX <= 1GiB"));
    }
    Ok((a, b))
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut m = Mix {
        full: 0,
        sparse: 0,
        masked: 0,
        create: 0,
        resize: 0,
        delete: 0,
        fill: 0,
    };
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KIND=WEIGHT"))?;
        let v: u32 = v.parse().map_err(|_| format!("{v:?} is not a weight"))?;
        match k.trim() {
            "full" => m.full = v,
            "sparse" => m.sparse = v,
            "masked" => m.masked = v,
            "create" => m.create = v,
            "resize" => m.resize = v,
            "delete" => m.delete = v,
            "fill" => m.fill = v,
            other => {
                return Err(format!(
                    "unknown record kind {other:?} (full, sparse, masked, create, resize, delete, fill)"
                ));
            }
        }
    }
    Ok(m)
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "auto" => Ok(Compression::Auto),
        "zstd" => Ok(Compression::Zstd(3)),
        _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(l)) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
            _ => Err(format!("{s:?}: expected none, auto, zstd or zstd:LEVEL (1-22)")),
        },
    }
}

/// What `mmsb` exits with.
enum Outcome {
    Ok,
    DataBad,
    /// The request failed (exit 2), already reported on stdout.
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    remove_temp_outputs_on_signal();
    // diff answers "do they differ" with 1, so every error, bad data included, is 2 there.
    let errors_are_2 = matches!(cli.command, Command::Diff(_));
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::DataBad) => ExitCode::from(1),
        Ok(Outcome::Failed) => ExitCode::from(2),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mmsb: {e:#}");
            let data_bad = e
                .chain()
                .any(|c| c.downcast_ref::<mmsb::Error>().is_some_and(mmsb::Error::is_data_error));
            ExitCode::from(if data_bad && !errors_are_2 { 1 } else { 2 })
        }
    }
}

fn run(cli: Cli) -> Result<Outcome> {
    let wait = cli.lock_wait();
    match cli.command {
        Command::Gen(a) => gen_cmd(a),
        Command::Import(a) => {
            let total = std::fs::metadata(&a.input).map(|m| m.len()).unwrap_or(0);
            let bar = progress::Progress::start(total, "import");
            let s = mmsb::ops::safetensors_io::import(&a.input, &a.output, a.epoch, Some(bar.shared()));
            bar.finish();
            let s = s.with_context(|| format!("import {}", a.input.display()))?;
            tensor_file_summary(a.json, &s)
        }
        Command::Export(a) => {
            let total = std::fs::metadata(&a.checkpoint).map(|m| m.len()).unwrap_or(0);
            let bar = progress::Progress::start(total, "export");
            let s = mmsb::ops::safetensors_io::export(
                &a.checkpoint,
                &a.logs,
                a.limit.limit(),
                &a.output,
                Some(bar.shared()),
            );
            bar.finish();
            let s = s.with_context(|| format!("export {}", a.checkpoint.display()))?;
            tensor_file_summary(a.json, &s)
        }
        Command::Inspect(a) => inspect_cmd(a),
        Command::Verify(a) => verify_cmd(a, wait),
        Command::Recover(a) => recover_cmd(a, wait),
        Command::Replay(a) => replay_cmd(a),
        Command::Compact(a) => compact_cmd(a),
        Command::Diff(a) => diff_cmd(a, wait),
        Command::Stress(a) => stress_cmd(a),
        Command::Bench(b) => bench_cmd(b),
        Command::ManPages { out } => {
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            man::write_man_pages(Cli::command(), &out)?;
            Ok(Outcome::Ok)
        }
        Command::Completions { shell } => {
            man::write_completions(&mut Cli::command(), shell)?;
            Ok(Outcome::Ok)
        }
    }
}

fn tensor_file_summary(json: bool, s: &mmsb::ops::safetensors_io::TensorFileSummary) -> Result<Outcome> {
    let rows = [
        ("tensors", s.tensors.to_string()),
        ("size", human_bytes(s.bytes)),
        ("state hash", s.state_hash.to_hex()),
    ];
    print::summary(json, s, &rows)?;
    Ok(Outcome::Ok)
}

fn gen_cmd(a: GenArgs) -> Result<Outcome> {
    let log = a.log.clone().unwrap_or_else(|| a.output.with_extension("log"));
    let o = GenOptions {
        seed: a.seed,
        pages: a.pages,
        total_size: a.total_size,
        size_dist: match a.page_sizes {
            SizeDistArg::Equal => SizeDist::Equal,
            SizeDistArg::LogUniform => SizeDist::LogUniform,
        },
        deltas: a.deltas,
        mix: a.mix,
        delta_bytes: a.delta_bytes,
        max_ranges: a.max_ranges,
        full_max: a.full_max,
        hot_fraction: a.hot_fraction,
        hot_weight: a.hot_weight,
        segment_size: a.segment_size,
        compression: a.compress,
    };
    let bar = progress::Progress::start(o.total_size, "gen");
    let s = mmsb::testing::generate::generate_with_progress(&a.output, Some(&log), &o, Some(bar.shared()));
    bar.finish();
    let s = s.context("gen")?;
    let log_shown = if a.deltas > 0 {
        log.display().to_string()
    } else {
        "(none)".into()
    };
    print::summary(
        a.json,
        &s,
        &[
            ("checkpoint", a.output.display().to_string()),
            ("log", log_shown),
            ("pages", s.pages.to_string()),
            ("page bytes", human_bytes(s.data_bytes)),
            ("records", s.records.to_string()),
            ("delta bytes", human_bytes(s.delta_bytes)),
            ("checkpoint state hash", s.checkpoint_state_hash.to_hex()),
        ],
    )?;
    Ok(Outcome::Ok)
}

/// Names temporary outputs that interrupted writes left behind (stderr; `--json` lists them).
fn warn_stale_temp_outputs(paths: &[PathBuf]) {
    for p in paths {
        eprintln!(
            "mmsb: warning: {}: temporary output of an interrupted mmsb write (safe to delete unless an mmsb write there is running)",
            p.display()
        );
    }
}

fn inspect_cmd(a: InspectArgs) -> Result<Outcome> {
    warn_stale_temp_outputs(&mmsb::fsutil::stale_temp_outputs_near(&a.files));
    let (ckpts, logs) = mmsb::ops::verify::classify(&a.files)?;
    let selector = mmsb::select::PageSelector::parse(&a.pages)?;
    // With --json, one array of every file's document, serialized as it is written (a
    // checkpoint's page list is read from its index as it goes, never collected).
    let mut docs = Vec::new();
    let mut names = std::collections::HashMap::new();
    for c in &ckpts {
        let info = mmsb::ops::inspect::inspect_checkpoint(c, selector.clone())?;
        if names.is_empty() && !logs.is_empty() && !selector.is_all() {
            names = info
                .pages
                .iter()
                .filter_map(|p| Some((p.id, p.name?.to_string())))
                .collect();
        }
        if a.json {
            docs.push(print::InspectDoc::Checkpoint(info));
        } else {
            print::checkpoint_info(&info)?;
        }
    }
    if !logs.is_empty() {
        let filter = a.records.then(|| mmsb::ops::inspect::RecordFilter {
            from_seq: a.from_seq,
            to_seq: a.to_seq,
            pages: selector,
            names,
        });
        let (info, records) = mmsb::ops::inspect::inspect_log(&logs, filter.as_ref())?;
        if a.json {
            docs.push(print::InspectDoc::Log {
                info,
                records: a.records.then_some(records),
            });
        } else {
            print::log_info(&info, a.records.then_some(&records[..]))?;
        }
    }
    if a.json {
        print::json(&docs)?;
    }
    Ok(Outcome::Ok)
}

fn verify_cmd(a: VerifyArgs, wait: mmsb::format::lock::LockWait) -> Result<Outcome> {
    let total: u64 = a
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress::Progress::start(total, "verify");
    let report = mmsb::ops::verify::verify(&a.files, Some(bar.counter()));
    bar.finish();
    let report = match report {
        Ok(r) => r,
        // With --json every outcome is one JSON document on stdout, a file that cannot be
        // read at all included.
        Err(e) if a.json => {
            let problem = mmsb::ops::verify::Problem::from(&e);
            print::json(&serde_json::json!({
                "ok": false, "checkpoints": [], "log": null, "state_hash": null,
                "problems": [problem], "bytes_checked": 0, "stale_temp_outputs": [],
            }))?;
            return Ok(if e.is_data_error() {
                Outcome::DataBad
            } else {
                Outcome::Failed
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut repaired = None;
    if a.repair && !report.ok && report.problems.iter().all(|p| p.kind == "torn_tail") {
        let (_, logs) = mmsb::ops::verify::classify(&a.files)?;
        repaired = recover(&logs, None, wait)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if a.repair {
            v["repaired"] = serde_json::to_value(&repaired)?;
        }
        print::json(&v)?;
    } else {
        for p in &report.problems {
            eprintln!("mmsb: {}", p.message);
        }
        warn_stale_temp_outputs(&report.stale_temp_outputs);
        if a.verbose {
            print::verify_report(&report)?;
        }
        if let Some(r) = &repaired {
            eprintln!(
                "mmsb: repaired: cut {} bytes at offset {} of {}, backup in {}",
                r.len,
                r.offset,
                r.segment.display(),
                r.backup.display()
            );
        }
    }
    // Bad data is 1; a problem that is not the data's (I/O, a lock, memory) is 2.
    let data_problems_only = report
        .problems
        .iter()
        .all(|p| matches!(p.kind, "corrupt" | "torn_tail" | "delta_rejected" | "wrong_base"));
    Ok(if report.ok || repaired.is_some() {
        Outcome::Ok
    } else if data_problems_only {
        Outcome::DataBad
    } else {
        Outcome::Failed
    })
}

#[derive(serde::Serialize)]
struct Repaired {
    segment: PathBuf,
    offset: u64,
    len: u64,
    backup: PathBuf,
}

fn recover(logs: &[PathBuf], backup: Option<&Path>, wait: mmsb::format::lock::LockWait) -> Result<Option<Repaired>> {
    let _locks = lock_logs(logs, wait)?;
    // The backup's default name needs the torn segment's path and offset, known only after a scan.
    let log = Log::open(logs)?;
    let Some(t) = log.torn_tail().cloned() else {
        log.check()?;
        return Ok(None);
    };
    drop(log);
    let backup = backup
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(format!("{}.torn-{}", t.path.display(), t.offset)));
    let cut = mmsb::format::log::recover(logs, &backup, wait)?;
    Ok(cut.map(|t| Repaired {
        segment: t.path,
        offset: t.offset,
        len: t.len,
        backup,
    }))
}

fn recover_cmd(a: RecoverArgs, wait: mmsb::format::lock::LockWait) -> Result<Outcome> {
    let r = recover(&a.logs, a.backup.as_deref(), wait)?;
    if a.json {
        print::json(&serde_json::json!({ "repaired": r }))?;
    } else {
        match &r {
            Some(r) => writeln!(
                print::stdout(),
                "cut {} bytes of a torn last record at offset {} of {}; backup in {}",
                r.len,
                r.offset,
                r.segment.display(),
                r.backup.display()
            ),
            None => writeln!(print::stdout(), "no torn tail: nothing to do"),
        }?;
    }
    Ok(Outcome::Ok)
}

impl MemoryArg {
    fn kind(self) -> mmsb::gpu::driver::MemoryKind {
        use mmsb::gpu::driver::MemoryKind;
        match self {
            MemoryArg::Device => MemoryKind::Device,
            MemoryArg::Unified => MemoryKind::Unified,
            MemoryArg::HostMapped => MemoryKind::HostMapped,
        }
    }
}

fn warn_torn_tail(summary: &mmsb::replay::ReplaySummary) {
    if let Some(torn) = &summary.torn_tail {
        eprintln!(
            "mmsb: warning: {}: torn tail of {} bytes at offset {} ignored (run `mmsb recover`)",
            torn.path.display(),
            torn.len,
            torn.offset
        );
    }
}

fn multi_replay_cmd(a: &ReplayArgs, ordinals: Vec<usize>) -> Result<Outcome> {
    use mmsb::replay::multi::{MultiReplayOptions, Placement, replay_multi};
    if !a.pages.is_empty() || a.output.is_some() {
        bail!("--pages and -o work with one device; with several, the placement decides the pages");
    }
    let opts = MultiReplayOptions {
        ordinals,
        placement: match a.placement {
            PlacementArg::Shard => Placement::Shard,
            PlacementArg::Replicate => Placement::Replicate,
        },
        memory: a.memory.kind(),
        limit: a.limit.limit(),
        verify: a.verify,
        read_mode: a.read.map(ReadArg::mode),
    };
    let (r, _stores) = replay_multi(&a.checkpoint, &a.logs, &opts)?;
    warn_torn_tail(&r.summary);
    if a.json {
        print::json(&r)?;
    } else {
        print::multi_replay(&r)?;
    }
    if r.replicas_agree == Some(false) {
        bail!("the replicas' state hashes differ");
    }
    Ok(Outcome::Ok)
}

fn gpu_replay_cmd(a: &ReplayArgs, ordinal: usize) -> Result<Outcome> {
    let pages = mmsb::select::PageSelector::parse(&a.pages)?;
    // The bar counts the selected pages' bytes as they reach the device (measured only where a
    // bar can show: a replay into a pipe reads no index twice).
    let selected_bytes = if progress::Progress::can_show() {
        Checkpoint::open(&a.checkpoint)
            .map(|c| {
                c.pages()
                    .iter()
                    .filter(|p| pages.matches(p.id, &p.meta))
                    .map(|p| p.len)
                    .sum()
            })
            .unwrap_or(0)
    } else {
        0
    };
    let bar = progress::Progress::start(selected_bytes, "load");
    let opts = mmsb::replay::gpu::GpuReplayOptions {
        ordinal,
        memory: a.memory.kind(),
        limit: a.limit.limit(),
        verify: a.verify,
        pages,
        output: a.output.clone(),
        read_mode: a.read.map(ReadArg::mode),
        poison: None,
        progress: Some(bar.shared()),
    };
    let replayed = mmsb::replay::gpu::replay(&a.checkpoint, &a.logs, &opts);
    bar.finish();
    let (r, store) = replayed?;
    // The process ends after the report: the driver reclaims the device memory, the pinned
    // registrations and the context at exit, while releasing them one by one first would add
    // tens of milliseconds to the run. Any output was written and synced inside `replay`.
    std::mem::forget(store);
    warn_torn_tail(&r.summary);
    if a.json {
        print::json(&r)?;
    } else {
        let t = &r.timings_ms;
        let mut rows = vec![
            (
                "device",
                format!("{} ({}), memory {}", r.device, r.device_name, r.memory),
            ),
            (
                "state hash",
                r.state_hash.map_or("- (computed with --verify)".into(), |h| h.to_hex()),
            ),
            (
                "checked",
                if r.state_hash.is_some() {
                    "headers, index, every log record, every page's CRC32C on the device".into()
                } else {
                    "headers, index, every log record; page CRCs skipped (pass --verify)".to_string()
                },
            ),
            ("pages", r.pages.to_string()),
            ("page bytes loaded", human_bytes(r.load.page_bytes)),
            (
                "read mode",
                r.load.read_mode.map_or("host-mapped copy".into(), |m| {
                    format!("{m:?} ({:.0}% cached)", r.load.cached_fraction * 100.0)
                }),
            ),
            ("records applied", r.summary.records.to_string()),
            ("delta bytes", human_bytes(r.summary.bytes_written)),
        ];
        if let Some(ap) = &r.apply {
            rows.push((
                "delta kernels",
                format!(
                    "{} copies, {} masked, {} tile(s) in {} batch(es)",
                    ap.copies, ap.masked, ap.tiles, ap.batches
                ),
            ));
        }
        rows.extend([
            (
                "cuda start / nvrtc ms (in parallel)",
                match &r.kernels {
                    Some(k) => format!("{:.1} / {:.1} ({k})", t.cuda_start, t.nvrtc_compile),
                    None => format!("{:.1} / - (no kernel needed)", t.cuda_start),
                },
            ),
            (
                "open / log plan / wait for cuda ms",
                format!("{:.1} / {:.1} / {:.1}", t.open, t.log_plan, t.wait_for_cuda),
            ),
            ("alloc / read+h2d ms", format!("{:.2} / {:.2}", t.alloc, t.read_h2d)),
            (
                "verify / delta apply / hash / write ms",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.1}",
                    t.verify, t.delta_apply, t.hash, t.write
                ),
            ),
            (
                "open to resident",
                format!("{:.2} ms, {:.2} GB/s", t.open_to_resident, r.load_gb_per_s),
            ),
            ("total ms", format!("{:.1}", t.total)),
        ]);
        print::table_kv(&rows)?;
    }
    Ok(Outcome::Ok)
}

#[derive(serde::Serialize)]
struct ReplayReport {
    device: String,
    state_hash: String,
    pages: u64,
    page_bytes: u64,
    #[serde(flatten)]
    summary: mmsb::replay::ReplaySummary,
    torn_tail_ignored: bool,
    output: Option<PathBuf>,
    timings_ms: Timings,
    throughput_gb_per_s: f64,
}

#[derive(serde::Serialize, Default)]
struct Timings {
    open: f64,
    check: f64,
    apply: f64,
    hash: f64,
    write: f64,
    total: f64,
}

fn replay_cmd(a: ReplayArgs) -> Result<Outcome> {
    if let Some(out) = &a.output {
        let inputs: Vec<&Path> = std::iter::once(a.checkpoint.as_path())
            .chain(a.logs.iter().map(PathBuf::as_path))
            .collect();
        mmsb::fsutil::refuse_output_naming_input(out, &inputs)?;
        mmsb::fsutil::resolve_output(out)?;
    }
    let device = match a.device.as_str() {
        "cpu" => "cpu".to_string(),
        "auto" => match mmsb::gpu::device_count() {
            Ok(n) if n > 0 => "cuda:0".to_string(),
            Ok(_) => "cpu (auto: no CUDA device)".to_string(),
            Err(e) => format!("cpu (auto: {e})"),
        },
        d if mmsb::gpu::parse_device(d).is_some() => d.to_string(),
        d if d.contains(',') => {
            let ordinals = d
                .split(',')
                .map(|x| mmsb::gpu::parse_device(x.trim()))
                .collect::<Option<Vec<usize>>>()
                .with_context(|| format!("--device {d}: expected cuda:N,cuda:M,..."))?;
            return multi_replay_cmd(&a, ordinals);
        }
        d => bail!("--device {d}: expected auto, cpu, cuda:N or a list cuda:N,cuda:M"),
    };
    if let Some(ordinal) = mmsb::gpu::parse_device(&device) {
        return gpu_replay_cmd(&a, ordinal);
    }
    if a.read.is_some() || !matches!(a.memory, MemoryArg::Device) {
        bail!("--memory and --read apply to GPU replay (--device cuda:N)");
    }
    let selector = mmsb::select::PageSelector::parse(&a.pages)?;
    let start = Instant::now();
    let mut t = Timings::default();
    let ckpt = Checkpoint::open(&a.checkpoint)?;
    let log = if a.logs.is_empty() {
        None
    } else {
        Some(Log::open(&a.logs)?)
    };
    t.open = ms(start);
    let phase = Instant::now();
    // One bar for the whole replay: the pages checked, the log applied, the output written.
    let log_bytes: u64 = a.logs.iter().map(|p| dir_or_file_len(p)).sum();
    let bar = progress::Progress::start(ckpt.head().data_bytes() + log_bytes, "replay");
    let bad = ckpt.check_pages(Some(bar.counter()));
    if let Some(e) = bad.into_iter().next() {
        return Err(e.into());
    }
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Trust)?;
    state.count_progress(bar.shared());
    t.check = ms(phase);
    let phase = Instant::now();
    let summary = match &log {
        Some(l) => state.replay(l, a.limit.limit())?,
        None => Default::default(),
    };
    state.retain(|id, page| selector.matches(id, &page.meta));
    t.apply = ms(phase);
    let phase = Instant::now();
    let hash = state.state_hash();
    t.hash = ms(phase);
    let phase = Instant::now();
    if let Some(out) = &a.output {
        bar.add_total(state.pages().map(|(_, p)| p.data().len() as u64).sum());
        state.write_checkpoint(out, ckpt.head().metadata.clone(), Some(bar.shared()))?;
    }
    bar.finish();
    t.write = ms(phase);
    t.total = ms(start);
    warn_torn_tail(&summary);
    let page_bytes: u64 = state.pages().map(|(_, p)| p.data().len() as u64).sum();
    let report = ReplayReport {
        device,
        state_hash: hash.to_hex(),
        pages: state.pages().len() as u64,
        page_bytes,
        torn_tail_ignored: summary.torn_tail.is_some(),
        summary,
        output: a.output.clone(),
        throughput_gb_per_s: (ckpt.head().data_bytes() as f64) / (t.total / 1e3) / 1e9,
        timings_ms: t,
    };
    if a.json {
        print::json(&report)?;
    } else {
        let r = &report;
        print::table_kv(&[
            ("device", r.device.clone()),
            ("state hash", r.state_hash.clone()),
            ("pages", r.pages.to_string()),
            ("page bytes", human_bytes(r.page_bytes)),
            ("records applied", r.summary.records.to_string()),
            ("delta bytes", human_bytes(r.summary.bytes_written)),
            ("last seq", r.summary.last_seq.map_or("-".into(), |s| s.to_string())),
            (
                "open / check / apply / hash / write ms",
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                    r.timings_ms.open, r.timings_ms.check, r.timings_ms.apply, r.timings_ms.hash, r.timings_ms.write
                ),
            ),
            ("total ms", format!("{:.1}", r.timings_ms.total)),
            ("throughput", format!("{:.2} GB/s", r.throughput_gb_per_s)),
        ])?;
    }
    Ok(Outcome::Ok)
}

fn compact_cmd(a: CompactArgs) -> Result<Outcome> {
    let report = if a.log_only {
        let total = a.inputs.iter().map(|p| dir_or_file_len(p)).sum();
        let bar = progress::Progress::start(total, "compact");
        let r = mmsb::ops::compact::compact_log(&a.inputs, a.to_seq, &a.output, a.compress, Some(bar.counter()));
        bar.finish();
        r.with_context(|| format!("compact {}", a.inputs[0].display()))?
    } else {
        let (ckpt, logs) = a.inputs.split_first().expect("required");
        let ckpt_bytes = Checkpoint::open(ckpt).map(|c| c.head().data_bytes()).unwrap_or(0);
        let bar = progress::Progress::start(ckpt_bytes, "compact");
        let rest = a.rest_log.clone().unwrap_or_else(|| a.output.with_extension("log"));
        let r = mmsb::ops::compact::compact_checkpoint(
            ckpt,
            logs,
            a.to_seq,
            &a.output,
            Some(&rest),
            a.compress,
            Some(bar.shared()),
        );
        bar.finish();
        r.with_context(|| format!("compact {}", ckpt.display()))?
    };
    if report.torn_tail_ignored {
        eprintln!("mmsb: warning: the log ends in a torn tail, left out (run `mmsb recover` to cut it)");
    }
    if a.json {
        print::json(&report)?;
    } else {
        print::compact_report(&report)?;
    }
    Ok(Outcome::Ok)
}

fn dir_or_file_len(p: &Path) -> u64 {
    mmsb::format::log::expand_paths(&[p])
        .map(|v| {
            v.iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn diff_cmd(a: DiffArgs, wait: mmsb::format::lock::LockWait) -> Result<Outcome> {
    use mmsb::ops::diff::{DiffSide, EmitTarget, emit_log};
    // An append extends A's log: lock it before A is read, so that no other append slips in
    // between and the records are computed against the log they extend.
    let _lock = match (&a.emit_log, a.append) {
        (Some(out), true) => Some(lock_logs(std::slice::from_ref(out), wait)?),
        _ => None,
    };
    let open = |ckpt: &Path, logs: &[PathBuf], to_seq: Option<u64>| -> Result<(Checkpoint, Option<Log>, ReplayLimit)> {
        let c = Checkpoint::open(ckpt)?;
        let l = if logs.is_empty() { None } else { Some(Log::open(logs)?) };
        Ok((c, l, ReplayLimit { to_seq, to_epoch: None }))
    };
    let (ca, la, lim_a) = open(&a.a, &a.a_logs, a.a_to_seq)?;
    let (cb, lb, lim_b) = open(&a.b, &a.b_logs, a.b_to_seq)?;
    let side_a = DiffSide::open(&ca, la.as_ref(), lim_a).with_context(|| format!("A: {}", a.a.display()))?;
    let side_b = DiffSide::open(&cb, lb.as_ref(), lim_b).with_context(|| format!("B: {}", a.b.display()))?;
    if let Some(out) = &a.emit_log {
        let target = if a.append {
            EmitTarget::Append(out)
        } else {
            EmitTarget::New(out)
        };
        let r =
            emit_log(&side_a, &side_b, target, a.compress).with_context(|| format!("emit log {}", out.display()))?;
        if a.json {
            print::json(&r)?;
        } else if !a.quiet {
            print::table_kv(&[
                ("log", r.log.display().to_string()),
                ("base state hash", r.base_state_hash.to_hex()),
                ("records", r.records.to_string()),
                ("bytes changed", human_bytes(r.bytes_changed)),
                ("payload", human_bytes(r.payload_bytes)),
                ("file size", human_bytes(r.file_bytes)),
            ])?;
        }
        return Ok(Outcome::Ok);
    }
    let side_bytes = |s: &DiffSide<'_>| s.state().pages().map(|(_, p)| p.data().len() as u64).sum::<u64>();
    let bar = progress::Progress::start(side_bytes(&side_a) + side_bytes(&side_b), "diff");
    let report = mmsb::ops::diff::diff_counting(&side_a, &side_b, a.ranges, Some(bar.counter()));
    bar.finish();
    let report = report?;
    if a.json {
        print::json(&report)?;
    } else if a.stat {
        print::diff_stat(&report)?;
    } else if !a.quiet {
        print::diff_report(&report)?;
    }
    Ok(if report.identical || (a.bytes_only && report.bytes_identical) {
        Outcome::Ok
    } else {
        Outcome::DataBad
    })
}

fn stress_cmd(a: StressArgs) -> Result<Outcome> {
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let o = mmsb::testing::stress::StressOptions {
        duration: a.duration,
        seed,
        dir: a.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let r = mmsb::testing::stress::stress(&o)?;
    if a.json {
        print::json(&r)?;
    } else {
        print::table_kv(&[
            ("seed", r.seed.to_string()),
            ("rounds", r.rounds.to_string()),
            ("records appended", r.records.to_string()),
            ("page bytes generated", human_bytes(r.page_bytes)),
            ("replays / verifies", format!("{} / {}", r.replays, r.verifies)),
            ("compactions / diffs", format!("{} / {}", r.compactions, r.diffs)),
            ("torn tails recovered", r.torn_tails.to_string()),
            ("corruptions caught", r.corruptions_caught.to_string()),
            ("seconds", format!("{:.1}", r.seconds)),
            ("result", r.failure.clone().unwrap_or_else(|| "ok".into())),
        ])?;
    }
    if let Some(f) = &r.failure {
        eprintln!("mmsb: stress: {f}");
        return Ok(Outcome::DataBad);
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_ranges_mixes_and_compression_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_range("4..4KiB"), Ok((4, 4096)));
        assert!(parse_range("9..4").is_err());
        let m = parse_mix("full=2,delete=1").unwrap();
        assert_eq!((m.full, m.sparse, m.delete), (2, 0, 1));
        assert!(parse_mix("fool=1").is_err());
        assert_eq!(parse_compression("zstd:19"), Ok(Compression::Zstd(19)));
        assert!(parse_compression("zstd:99").is_err());
    }
}
