//! The command line: every subcommand, argument and value parser, as clap reads them (the
//! man pages and completions are generated from these definitions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mmsb::format::log::Compression;
use mmsb::metrics::RunFiles;
use mmsb::replay::ReplayLimit;
use mmsb::testing::generate::Mix;

use crate::print::human_bytes;

pub const EXIT_STATUS: &str = "\
EXIT STATUS:
  0  success (for verify: no problem found)
  1  the data is bad: corruption, a torn tail, a log for another state, a delta that does not apply
  2  usage error, I/O error, or a request that cannot be carried out";

/// mmsb: checkpoints of pages plus append-only, checksummed logs of byte-level deltas.
#[derive(Parser)]
#[command(name = "mmsb", version, about, after_help = EXIT_STATUS, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// When another mmsb process holds a log's write lock, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    /// On exit, write the run's metrics to this file in the Prometheus text format (atomically:
    /// for node_exporter's textfile collector), whatever the outcome.
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

impl Cli {
    pub fn lock_wait(&self) -> mmsb::format::lock::LockWait {
        if self.wait {
            mmsb::format::lock::LockWait::Wait
        } else {
            mmsb::format::lock::LockWait::Fail
        }
    }
}

impl Command {
    /// The command's name in metric names: `mmsb_<name>_...`.
    pub fn metrics_name(&self) -> &'static str {
        match self {
            Command::Gen(_) => "gen",
            Command::Import(_) => "import",
            Command::Export(_) => "export",
            Command::Inspect(_) => "inspect",
            Command::Verify(_) => "verify",
            Command::Recover(_) => "recover",
            Command::Replay(_) => "replay",
            Command::Compact(_) => "compact",
            Command::Diff(_) => "diff",
            Command::Stress(_) => "stress",
            Command::Derive(DeriveCommand::Set { .. }) => "derive_set",
            Command::Derive(DeriveCommand::Clear { .. }) => "derive_clear",
            Command::Propagate(_) => "propagate",
            Command::Explain(_) => "explain",
            Command::Watch(_) => "watch",
            Command::Bench(BenchCommand::Load { .. }) => "bench_load",
            Command::Bench(BenchCommand::Deltas { .. }) => "bench_deltas",
            Command::Bench(BenchCommand::Propagation(_)) => "bench_propagation",
            Command::Completions { .. } => "completions",
            Command::ManPages { .. } => "man_pages",
        }
    }

    /// What the command reads, writes whole and appends to.
    pub fn files(&self) -> RunFiles {
        let with = |ckpt: &PathBuf, logs: &[PathBuf]| {
            let mut v = vec![ckpt.clone()];
            v.extend_from_slice(logs);
            v
        };
        match self {
            Command::Gen(a) => RunFiles {
                written: vec![
                    a.output.clone(),
                    a.log.clone().unwrap_or_else(|| a.output.with_extension("log")),
                ],
                ..Default::default()
            },
            Command::Import(a) => RunFiles {
                read: vec![a.input.clone()],
                written: vec![a.output.clone()],
                ..Default::default()
            },
            Command::Export(a) => RunFiles {
                read: with(&a.checkpoint, &a.logs),
                written: vec![a.output.clone()],
                ..Default::default()
            },
            Command::Inspect(InspectArgs { files, .. }) | Command::Verify(VerifyArgs { files, .. }) => RunFiles {
                read: files.clone(),
                ..Default::default()
            },
            Command::Recover(a) => RunFiles {
                read: a.logs.clone(),
                written: a.backup.iter().cloned().collect(),
                ..Default::default()
            },
            Command::Replay(a) => RunFiles {
                read: with(&a.checkpoint, &a.logs),
                written: a.output.iter().cloned().collect(),
                ..Default::default()
            },
            Command::Compact(a) => {
                let mut written = vec![a.output.clone()];
                if !a.log_only {
                    written.push(a.rest_log.clone().unwrap_or_else(|| a.output.with_extension("log")));
                }
                RunFiles {
                    read: a.inputs.clone(),
                    written,
                    ..Default::default()
                }
            }
            Command::Diff(a) => {
                let mut read = with(&a.a, &a.a_logs);
                read.extend(with(&a.b, &a.b_logs));
                let (written, appended) = match (&a.emit_log, a.append) {
                    (Some(log), true) => (Vec::new(), vec![log.clone()]),
                    (Some(log), false) => (vec![log.clone()], Vec::new()),
                    (None, _) => (Vec::new(), Vec::new()),
                };
                RunFiles {
                    read,
                    written,
                    appended,
                }
            }
            Command::Derive(
                DeriveCommand::Set { checkpoint, log, .. } | DeriveCommand::Clear { checkpoint, log, .. },
            )
            | Command::Propagate(PropagateArgs { checkpoint, log, .. }) => RunFiles {
                read: vec![checkpoint.clone(), log.clone()],
                appended: vec![log.clone()],
                ..Default::default()
            },
            Command::Explain(a) => RunFiles {
                read: vec![a.checkpoint.clone(), a.log.clone()],
                ..Default::default()
            },
            Command::Watch(a) => RunFiles {
                read: std::iter::once(a.log.clone()).chain(a.checkpoint.clone()).collect(),
                ..Default::default()
            },
            Command::Bench(BenchCommand::Load { checkpoint, .. }) => RunFiles {
                read: vec![checkpoint.clone()],
                ..Default::default()
            },
            Command::Bench(BenchCommand::Deltas { checkpoint, logs, .. }) => RunFiles {
                read: with(checkpoint, logs),
                ..Default::default()
            },
            Command::Stress(_)
            | Command::Bench(BenchCommand::Propagation(_))
            | Command::Completions { .. }
            | Command::ManPages { .. } => RunFiles::default(),
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
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
    Derive(DeriveCommand),
    Propagate(PropagateArgs),
    Explain(ExplainArgs),
    Watch(WatchArgs),
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
    /// Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with
    /// --completions-out every shell's completion script into another (what a release ships).
    #[command(hide = true)]
    ManPages {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directory for the completion scripts.
        #[arg(long)]
        completions_out: Option<PathBuf>,
    },
}

/// Writes a synthetic checkpoint and log from a seed.
#[derive(Args)]
#[command(
    after_help = "EXAMPLE:\n  mmsb gen -o demo.ckpt --total-size 64MiB --pages 32 --deltas 10000 --mix full=1,sparse=8,masked=1\n  (writes demo.ckpt and the log directory demo.log/)"
)]
pub struct GenArgs {
    /// Checkpoint to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Log directory to write (default: the checkpoint's path with extension .log).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// RNG seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of pages (at most 100,000,000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub pages: u64,
    /// Total page bytes (suffixes K, M, G, KiB, MiB, GiB; at most 1 TiB).
    #[arg(long, default_value = "64MiB", value_parser = size_in(0, 1 << 40))]
    pub total_size: u64,
    /// Page-size distribution.
    #[arg(long, value_enum, default_value_t = SizeDistArg::LogUniform)]
    pub page_sizes: SizeDistArg,
    /// Records in the log (0: no log; at most 1,000,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub deltas: u64,
    /// Weights of record kinds: full, sparse, masked, create, resize, delete, fill.
    #[arg(long, default_value = "full=1,sparse=8,masked=1", value_parser = parse_mix)]
    pub mix: Mix,
    /// Bytes per sparse range, masked span or created page, as MIN..MAX (1 B to 1 GiB).
    #[arg(long, default_value = "4..4096", value_parser = parse_range)]
    pub delta_bytes: (u64, u64),
    /// Most ranges in one sparse record (1 to 4096).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_ranges: u32,
    /// Largest page that full-page writes go to (others get sparse writes; at most 1 TiB).
    #[arg(long, default_value = "1MiB", value_parser = size_in(0, 1 << 40))]
    pub full_max: u64,
    /// Fraction of pages that are hot (0 to 1).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    pub hot_fraction: f64,
    /// Fraction of writes that go to hot pages (0 to 1).
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    pub hot_weight: f64,
    /// Log segment size (4 KiB to 1 TiB).
    #[arg(long, default_value = "64MiB", value_parser = size_in(4096, 1 << 40))]
    pub segment_size: u64,
    /// Payload compression: none, auto, zstd or zstd:LEVEL.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compress: Compression,
    /// Make the pages a graph of derived pages of this shape (pages of one size; the log then
    /// writes root pages only, and `mmsb propagate` brings the derived pages up to date).
    #[arg(long, value_enum)]
    pub graph: Option<ShapeArg>,
    /// With --graph: children per page, for tree (1 to 1,000,000).
    #[arg(long, default_value_t = 4, requires = "graph", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub fanout: u64,
    /// With --graph: levels, for layered (1 to 1,000,000).
    #[arg(long, default_value_t = 16, requires = "graph", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub levels: u64,
    /// With --graph: parents per derived page, for layered and random (1 to 64).
    #[arg(long, default_value_t = 2, requires = "graph", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parents: u64,
    /// With --graph: the rule of every derived page (copy, xor, add-u32, min-u32, max-u32, or
    /// slice:OFFSET,LEN; a rule must keep the page size).
    #[arg(long, default_value = "add-u32", requires = "graph", value_parser = parse_rule)]
    pub rule: mmsb::graph::Rule,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Changes the dependency graph of a log (appending a graph record under its writer lock).
#[derive(Subcommand)]
pub enum DeriveCommand {
    /// Makes a page derive from parent pages by a rule (replacing any rule it had).
    #[command(
        after_help = "EXAMPLES:\n  mmsb derive set model.ckpt model.log --page 9 --rule xor --parents 3,4\n  mmsb derive set model.ckpt model.log --page 12 --rule slice --params 0,64 --parents 9\n\nRules: copy, xor, add-u32, min-u32, max-u32, concat, slice (--params OFFSET,LEN), crc32c;\nany other name is a named derivation that only a program registering it can run.\nA rule that would close a cycle is refused (exit 2), naming the cycle's pages, and so is\none whose output would not have the page's length."
    )]
    Set {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The log directory.
        log: PathBuf,
        /// The derived page.
        #[arg(long)]
        page: u64,
        /// The rule (or slice:OFFSET,LEN).
        #[arg(long, value_parser = parse_rule)]
        rule: mmsb::graph::Rule,
        /// Parent pages, in order, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        parents: Vec<u64>,
        /// The rule's parameters, comma-separated (slice: OFFSET,LEN).
        #[arg(long, value_delimiter = ',')]
        params: Vec<u64>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Makes a derived page a root again (its bytes stay as they are).
    #[command(after_help = "EXAMPLE:\n  mmsb derive clear model.ckpt model.log --page 9")]
    Clear {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The log directory.
        log: PathBuf,
        /// The page.
        #[arg(long)]
        page: u64,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Recomputes every derived page whose inputs changed since the last propagation in the log,
/// and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb diff --append new.ckpt model.ckpt --emit-log model.log && mmsb propagate model.ckpt model.log\n  mmsb propagate --dry-run model.ckpt model.log    (what it would start from and may reach)"
)]
pub struct PropagateArgs {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The log directory.
    pub log: PathBuf,
    /// Write nothing; list the pages it would start from and may recompute.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Follows a log that another process is appending to: records/s and bytes/s by record type,
/// sequence and epoch, segments, compression, the pages written most, and the tail's health
/// (how far checksums were checked, a torn record, the writer holding the lock). Reads as any
/// reader does, so a writer never waits for it and it never shows half a record or group; after
/// the first snapshot, a refresh reads only the segment that was last and any new ones. With
/// --device, it also keeps a copy of the state on a CUDA device, applying each refresh's new
/// records to it, and shows the pages resident and the device memory in use.
#[derive(Args)]
#[command(
    after_help = "KEYS: q, Esc or Ctrl-C quits.\n\nEXAMPLES:\n  mmsb watch model.log model.ckpt\n  mmsb watch model.log --once --json    (one snapshot, for scripts)\n  mmsb watch model.log --json --interval 5s    (a JSON document per line, every 5 s)\n  mmsb watch model.log model.ckpt --device cuda:0    (and a copy on the GPU, kept current)"
)]
pub struct WatchArgs {
    /// The log directory (or a segment file).
    pub log: PathBuf,
    /// The checkpoint the log applies to: names the pages, and checks the log's base.
    pub checkpoint: Option<PathBuf>,
    /// Print one snapshot and exit.
    #[arg(long)]
    pub once: bool,
    /// Print JSON on stdout: one document with --once, else one per line at each refresh.
    #[arg(long)]
    pub json: bool,
    /// Time between refreshes (e.g. 500ms, 2s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Pages listed among those written most.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Replay the checkpoint and the log onto this CUDA device (cuda:N) and apply the new
    /// records to that copy at each refresh; a record that creates, deletes or resizes a page
    /// stops the copy (exit 2).
    #[arg(long, value_name = "cuda:N", requires = "checkpoint", value_parser = parse_cuda_device)]
    pub device: Option<usize>,
}

/// Says which parent change, at which record, caused a page's last recomputation, back to the
/// change from outside that started it.
#[derive(Args)]
#[command(after_help = "EXAMPLE:\n  mmsb explain model.ckpt model.log 12 --seq 4000")]
pub struct ExplainArgs {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The log directory.
    pub log: PathBuf,
    /// The page.
    pub page: u64,
    /// Only records up to this sequence number.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
}

/// A rule from the command line: a name, or `slice:OFFSET,LEN`.
pub fn parse_rule(s: &str) -> Result<mmsb::graph::Rule, String> {
    let (name, params) = s.split_once(':').unwrap_or((s, ""));
    let params: Vec<u64> = if params.is_empty() {
        Vec::new()
    } else {
        params
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u64>()
                    .map_err(|e| format!("rule parameter {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?
    };
    if name == "slice" && params.is_empty() {
        // Parameters may come from --params instead.
        return Ok(mmsb::graph::Rule::Slice { offset: 0, len: 0 });
    }
    mmsb::graph::Rule::parse(name, &params)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MemoryArg {
    Device,
    Unified,
    HostMapped,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PlacementArg {
    Shard,
    Replicate,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReadArg {
    Buffered,
    PinMapping,
    Direct,
}

impl ReadArg {
    pub fn mode(self) -> mmsb::gpu::loader::ReadMode {
        use mmsb::gpu::loader::ReadMode;
        match self {
            ReadArg::Buffered => ReadMode::Buffered,
            ReadArg::PinMapping => ReadMode::PinMapping,
            ReadArg::Direct => ReadMode::Direct,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SizeDistArg {
    Equal,
    LogUniform,
}

/// Imports a safetensors file as a checkpoint (one page per tensor).
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb import model.safetensors -o model.ckpt\n  mmsb import step7.safetensors --epoch 7 -o step7.ckpt"
)]
pub struct ImportArgs {
    /// The safetensors file.
    pub input: PathBuf,
    /// Checkpoint to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Every page's epoch: the training step the file is, so that the records `diff --append`
    /// makes from it carry the step and `replay --to-epoch STEP` restores it.
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Exports a checkpoint (after replaying logs on it) as a safetensors file.
#[derive(Args)]
#[command(after_help = "EXAMPLE:\n  mmsb export model.ckpt model.log -o step42.safetensors --to-epoch 42")]
pub struct ExportArgs {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Log segments or log directories to replay first.
    pub logs: Vec<PathBuf>,
    /// safetensors file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub limit: LimitArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LimitArgs {
    /// Replay records up to and including this sequence number.
    #[arg(long, conflicts_with = "to_epoch")]
    pub to_seq: Option<u64>,
    /// Replay until the first record whose epoch is above this one.
    #[arg(long)]
    pub to_epoch: Option<u64>,
}

impl LimitArgs {
    pub fn limit(&self) -> ReplayLimit {
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
pub struct InspectArgs {
    /// Checkpoints, log segments or log directories (all segments given form one log).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// List log records.
    #[arg(long)]
    pub records: bool,
    /// With --records: lowest sequence number.
    #[arg(long, requires = "records")]
    pub from_seq: Option<u64>,
    /// With --records: highest sequence number.
    #[arg(long, requires = "records")]
    pub to_seq: Option<u64>,
    /// Only these pages (in a checkpoint's page list, and with --records, the records for
    /// them): an id (7), an id range (10-20) or a glob over names ('model.layers.1?.*');
    /// repeatable. Names of a log's pages come from its CREATE records and from a checkpoint
    /// given with it.
    #[arg(long = "page", value_name = "PATTERN")]
    pub pages: Vec<String>,
    /// Print the dependency graph (of the checkpoint after its log) in this format instead.
    #[arg(long, value_enum)]
    pub graph: Option<GraphFormat>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Checks every checksum, the structure, and that every delta applies. Quiet unless asked.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb verify model.ckpt model.log && echo ok\n  mmsb verify --json model.ckpt model.log | jq .problems\n  mmsb verify --repair model.ckpt model.log    (cuts a torn tail, keeping a backup)"
)]
pub struct VerifyArgs {
    /// One checkpoint and its log segments/directories, or any number of checkpoints.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON report of every problem on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print a summary table even when all is well.
    #[arg(short, long)]
    pub verbose: bool,
    /// If the only problem is a torn tail, cut it (as `mmsb recover` does).
    #[arg(long)]
    pub repair: bool,
    /// Also derive every derived page again by its built-in rule and check that its bytes
    /// (the logged outputs of the last propagation) match.
    #[arg(long)]
    pub rederive: bool,
}

/// Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record.
#[derive(Args)]
#[command(after_help = "EXAMPLE:\n  mmsb recover model.log --backup torn.bin")]
pub struct RecoverArgs {
    /// Log segments or log directory.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Where to keep the cut bytes (default: beside the segment, SEGMENT.torn-OFFSET).
    #[arg(long)]
    pub backup: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb replay model.ckpt model.log\n  mmsb replay model.ckpt model.log --to-seq 5000 -o model-5000.ckpt --json\n  mmsb replay model.ckpt model.log --device cuda:0,cuda:1 --placement replicate --verify"
)]
pub struct ReplayArgs {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Log segments or log directories.
    pub logs: Vec<PathBuf>,
    /// Where to replay: auto (cuda:0 when a GPU is there, else the CPU), cpu, cuda:N, or a list
    /// of devices (cuda:0,cuda:1) with --placement.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(mmsb::replay::Device))]
    pub device: mmsb::replay::Device,
    /// With several devices: shard (each page on one device, balanced by bytes) or replicate
    /// (every page on every device; the file is read once and copied device to device).
    #[arg(long, value_enum, default_value_t = PlacementArg::Shard)]
    pub placement: PlacementArg,
    /// GPU memory for the pages: device, unified or host-mapped.
    #[arg(long, value_enum, default_value_t = MemoryArg::Device)]
    pub memory: MemoryArg,
    /// GPU: check the bytes on the device against the checkpoint's CRC32C and compute the state
    /// hash on the GPU. (The CPU replay always checks, and always prints the hash.)
    #[arg(long)]
    pub verify: bool,
    /// Replay only these pages: an id (7), an id range (10-20) or a glob over names
    /// ('model.layers.1?.*'); repeatable. The hash and -o cover the selected pages. A GPU
    /// loads only them and applies only their deltas; the CPU replays the whole log (every
    /// record is still checked) and keeps them.
    #[arg(long = "pages", value_name = "PATTERN")]
    pub pages: Vec<String>,
    /// GPU: how to read the checkpoint (default: from the page cache when the file is cached,
    /// else with O_DIRECT).
    #[arg(long, value_enum, hide = true)]
    pub read: Option<ReadArg>,
    #[command(flatten)]
    pub limit: LimitArgs,
    /// Write the replayed state as a checkpoint.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Folds a log into a new checkpoint, or merges a log's deltas into fewer, smaller records.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb compact model.ckpt model.log -o model-2.ckpt\n  mmsb compact model.ckpt model.log --to-seq 5000 -o model-5000.ckpt --rest-log model-5000.log\n  mmsb compact --log-only model.log -o model-merged.log --compress zstd:9\n\nInputs are only read; each output appears only when it is complete. The merged log of\n--log-only replays to the same state as the original (same bytes and epochs: same state hash)."
)]
pub struct CompactArgs {
    /// The checkpoint, then its log segments or directories (with --log-only: logs only).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output: the new checkpoint (with --log-only: the new log directory).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Merge the log's deltas without reading or writing a checkpoint.
    #[arg(long)]
    pub log_only: bool,
    /// Fold (or merge) only records up to this sequence number; later records are copied into
    /// the output log unchanged.
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Log directory for the records after --to-seq, against the new checkpoint (default: the
    /// output's path with extension .log).
    #[arg(long, conflicts_with = "log_only")]
    pub rest_log: Option<PathBuf>,
    /// Payload compression of the records written: auto (zstd where it saves 1/32), zstd,
    /// zstd:LEVEL or none.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    pub compress: Compression,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Shows what differs between two states; optionally writes the log that turns A into B.
#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  mmsb diff step1.ckpt step2.ckpt\n  mmsb diff model.ckpt model.ckpt --b-log model.log --stat   (what the log changed)\n  mmsb diff step1.ckpt step2.ckpt --emit-log step1-to-2.log   (then: mmsb replay step1.ckpt step1-to-2.log)\n  mmsb diff base.ckpt --a-log series.log step3.ckpt --emit-log series.log --append\n\nEXIT STATUS:\n  0  the states are identical (same pages, lengths, bytes, metadata and epochs: the same state\n     hash; with --bytes-only, epochs are not compared)\n  1  they differ\n  2  error (bad input, corruption, I/O)\nLike cmp and diff. With --emit-log the status is 0 once the log is written."
)]
pub struct DiffArgs {
    /// State A: a checkpoint (add its logs with --a-log).
    pub a: PathBuf,
    /// State B: a checkpoint (add its logs with --b-log).
    pub b: PathBuf,
    /// A log segment or directory replayed onto A (repeatable).
    #[arg(long = "a-log", value_name = "LOG")]
    pub a_logs: Vec<PathBuf>,
    /// A log segment or directory replayed onto B (repeatable).
    #[arg(long = "b-log", value_name = "LOG")]
    pub b_logs: Vec<PathBuf>,
    /// Replay A's log up to this sequence number.
    #[arg(long)]
    pub a_to_seq: Option<u64>,
    /// Replay B's log up to this sequence number.
    #[arg(long)]
    pub b_to_seq: Option<u64>,
    /// One line per differing page.
    #[arg(long, conflicts_with_all = ["quiet", "json"])]
    pub stat: bool,
    /// Print nothing: the exit status says whether the states differ.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Differing ranges listed per page (0 to 10,000).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000))]
    pub ranges: usize,
    /// Write the smallest log that turns A into B, as a new log directory against A's state.
    #[arg(long, value_name = "DIR")]
    pub emit_log: Option<PathBuf>,
    /// With --emit-log: add the records to the end of A's log (the one --a-log, replayed
    /// whole) instead of a new log, so a series of snapshots becomes one checkpoint and one log.
    #[arg(long, requires = "emit_log")]
    pub append: bool,
    /// Compare bytes, lengths and metadata only: states that differ only in page epochs (and so
    /// in state hash) count as identical for the exit status.
    #[arg(long, conflicts_with = "emit_log")]
    pub bytes_only: bool,
    /// With --emit-log: payload compression (auto, zstd, zstd:LEVEL or none).
    #[arg(long, default_value = "auto", value_parser = parse_compression, requires = "emit_log")]
    pub compress: Compression,
}

/// Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption
/// detection on small random states, checking that every path agrees on the state hash.
#[derive(Args)]
#[command(
    after_help = "EXAMPLE:\n  mmsb stress --duration 60s --seed 7\n\nExit status 0 when every check held, 1 on the first failure (its round and seed are printed:\nrerun with that seed to reproduce it), 2 on an error of the run itself."
)]
pub struct StressArgs {
    /// How long to run (s, m, h or ms suffix; more than 0, at most 7 days).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Seed of the first round (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for the rounds' files (default: the system's temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// In-process benchmarks (CUDA started once, then timed runs); JSON on stdout.
#[derive(Subcommand)]
pub enum BenchCommand {
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
    /// Streams updates through a generated graph of derived pages: the propagation engine
    /// against the naive engine and a full sweep, on the same graph and updates.
    #[command(
        after_help = "EXAMPLE:\n  mmsb bench propagation --pages 1000000 --shape layered --updates 10000 --batch 1000 --json\n\nThe baselines run on a prefix of the same updates (whole batches, at least one, at most\n--baseline-seconds); speedups compare updates per second. The graph lives in memory; `mmsb\ngen --graph`, `derive` and `propagate` build and keep one in files."
    )]
    Propagation(PropagationArgs),
}

#[derive(Args)]
pub struct PropagationArgs {
    /// Pages in the graph (2 to 100,000,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    pub pages: u64,
    /// The graph's shape.
    #[arg(long, value_enum, default_value_t = ShapeArg::Layered)]
    pub shape: ShapeArg,
    /// Children per page, for --shape tree (1 to 1,000,000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub fanout: u64,
    /// Levels, for --shape layered (1 to 1,000,000).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub levels: u64,
    /// Parents per derived page, for --shape layered and random (1 to 64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parents: u64,
    /// Root updates in all (1 to 1,000,000,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub updates: u64,
    /// Updates per flush (1 to 1,000,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub batch: u64,
    /// Bytes per page (1 B to 1 MiB).
    #[arg(long, default_value = "64", value_parser = size_in(1, 1 << 20))]
    pub page_size: u64,
    /// Share of updates (0 to 1) that go to a hot set of 1% of the roots, the rest to any root:
    /// more duplicates in a batch, more overlap between the updates' cones.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub locality: f64,
    /// Seed of the graph and the updates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The most seconds each baseline runs.
    #[arg(long, default_value_t = 30.0)]
    pub baseline_seconds: f64,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl PropagationArgs {
    pub fn options(&self) -> mmsb::testing::propagation::BenchOptions {
        mmsb::testing::propagation::BenchOptions {
            pages: self.pages,
            graph: mmsb::testing::propagation::GraphShape {
                shape: self.shape.shape(),
                fanout: self.fanout,
                levels: self.levels,
                parents: self.parents,
                rule: mmsb::graph::Rule::AddU32,
            },
            updates: self.updates,
            batch: self.batch,
            page_size: self.page_size,
            locality: self.locality,
            seed: self.seed,
            baseline_seconds: self.baseline_seconds,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ShapeArg {
    Chain,
    Tree,
    Layered,
    Random,
}

impl ShapeArg {
    pub fn shape(self) -> mmsb::testing::propagation::Shape {
        use mmsb::testing::propagation::Shape;
        match self {
            ShapeArg::Chain => Shape::Chain,
            ShapeArg::Tree => Shape::Tree,
            ShapeArg::Layered => Shape::Layered,
            ShapeArg::Random => Shape::Random,
        }
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
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
pub fn size_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let n = parse_size(s)?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{s} is not in {} ..= {}", human_bytes(min), human_bytes(max)))
        }
    }
}

/// A fraction: a finite number from 0 to 1.
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number in 0..=1")),
    }
}

/// `cuda:N` (or `N`), as a device ordinal.
pub fn parse_cuda_device(s: &str) -> Result<usize, String> {
    mmsb::gpu::parse_device(s).ok_or_else(|| format!("{s:?}: expected cuda:N"))
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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

pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?} is not MIN..MAX"))?;
    let (a, b) = (parse_size(a)?, parse_size(b)?);
    if a > b || a == 0 || b > 1 << 30 {
        return Err(format!("{s}: need 1 <= MIN <= MAX <= 1GiB"));
    }
    Ok((a, b))
}

pub fn parse_mix(s: &str) -> Result<Mix, String> {
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

pub fn parse_compression(s: &str) -> Result<Compression, String> {
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

impl PlacementArg {
    pub fn placement(self) -> mmsb::replay::Placement {
        match self {
            PlacementArg::Shard => mmsb::replay::Placement::Shard,
            PlacementArg::Replicate => mmsb::replay::Placement::Replicate,
        }
    }
}

impl MemoryArg {
    pub fn kind(self) -> mmsb::gpu::driver::MemoryKind {
        use mmsb::gpu::driver::MemoryKind;
        match self {
            MemoryArg::Device => MemoryKind::Device,
            MemoryArg::Unified => MemoryKind::Unified,
            MemoryArg::HostMapped => MemoryKind::HostMapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
