//! Tiny, checksum-valid files that ask for huge amounts of memory: every command that reads them
//! ends with a clear answer (a result, or exit 2 naming the record) in bounded memory, measured
//! as the child's peak resident set.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{code, json, stderr};
use mmsb::format::checkpoint::write_checkpoint;
use mmsb::format::log::{FLAG_ZSTD, LogOptions, LogWriter, encode_frame};
use mmsb::format::record::{Delta, Op, TYPE_CREATE, TYPE_FILL, TYPE_FULL};
use mmsb::page::PageMeta;

/// Peak resident memory a command may use on these inputs.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

fn delta(page_id: u64, epoch: u64, op: Op<'_>) -> Delta<'_> {
    Delta {
        page_id,
        epoch,
        timestamp_ns: 0,
        source: "".into(),
        op,
    }
}

fn create(page_id: u64, len: u64) -> (u8, u8, Vec<u8>) {
    let meta = PageMeta::default();
    (
        TYPE_CREATE,
        0,
        delta(page_id, 1, Op::Create { len, meta }).encode().unwrap(),
    )
}

/// An empty checkpoint `e.ckpt` and a log `e.log` against it holding `records` (type, flags,
/// stored payload), framed with valid checksums.
fn crafted(dir: &Path, records: &[(u8, u8, Vec<u8>)]) -> (PathBuf, PathBuf) {
    let ckpt = dir.join("e.ckpt");
    let base = write_checkpoint(&ckpt, BTreeMap::new(), []).unwrap();
    let log = dir.join("e.log");
    LogWriter::create(&log, base, 1, LogOptions::default())
        .unwrap()
        .finish()
        .unwrap();
    let segment = std::fs::read_dir(&log).unwrap().next().unwrap().unwrap().path();
    let mut f = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
    for (i, (kind, flags, payload)) in records.iter().enumerate() {
        f.write_all(&encode_frame(1 + i as u64, *kind, *flags, payload))
            .unwrap();
    }
    (ckpt, log)
}

/// Exit code, stdout, stderr and peak resident memory (KiB) of `mmsb ARGS` run in `dir`.
///
/// A small Python process starts the command and reads its children's peak RSS: a child the
/// test process started itself would count this process's own memory (a child's peak includes
/// the memory of the process it was spawned from, up to its exec), and tests run beside it.
fn run_measured(dir: &Path, args: &[&str]) -> (std::process::Output, u64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
r = subprocess.run(sys.argv[2:])\n\
open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
sys.exit(r.returncode if r.returncode >= 0 else 128 - r.returncode)\n";
    let python = std::env::var("MMSB_PYTHON").unwrap_or_else(|_| "python3".into());
    let report = dir.join(".peak-rss");
    let output = std::process::Command::new(python)
        .current_dir(dir)
        .arg("-c")
        .arg(MEASURE)
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_mmsb"))
        .args(args)
        .output()
        .expect("python3 runs");
    let rss = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no peak RSS for mmsb {args:?} ({e}): {}", stderr(&output)));
    (output, rss.trim().parse().unwrap())
}

/// Runs each command on the crafted files and checks the bound and the outcome: `expect` is
/// the exit code every command must give.
fn check_commands(dir: &Path, commands: &[Vec<&str>], expect: i32) -> Vec<std::process::Output> {
    check_commands_within(dir, commands, expect, RSS_LIMIT_KIB)
}

/// [`check_commands`] with a peak resident memory limit of `limit_kib`.
fn check_commands_within(dir: &Path, commands: &[Vec<&str>], expect: i32, limit_kib: u64) -> Vec<std::process::Output> {
    let mut outs = Vec::new();
    for args in commands {
        let (o, rss) = run_measured(dir, args);
        assert!(rss < limit_kib, "mmsb {args:?} peaked at {} MiB of RSS", rss / 1024);
        assert_eq!(code(&o), expect, "mmsb {args:?}: {}", stderr(&o));
        outs.push(o);
    }
    outs
}

/// Bytes of memory and swap on this machine (0 where /proc/meminfo cannot be read).
fn memory_and_swap() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    };
    (kib("MemTotal:") + kib("SwapTotal:")) << 10
}

/// An 8 GiB page that is created and never written costs no memory: replay, verify and inspect
/// of the log, and a log-only compaction, all succeed and agree on the state.
#[test]
fn a_created_8_gib_page_that_is_never_written_costs_no_memory() {
    if memory_and_swap() < 9 << 30 {
        eprintln!("skipped: this machine cannot map an 8 GiB page (mmsb says 'out of memory', exit 2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    crafted(dir.path(), &[create(1, 8 << 30)]);
    let outs = check_commands(
        dir.path(),
        &[
            vec!["replay", "--device", "cpu", "--json", "e.ckpt", "e.log"],
            vec!["verify", "--json", "e.ckpt", "e.log"],
            vec!["inspect", "--json", "--records", "e.log"],
            vec!["compact", "--log-only", "e.log", "-o", "c.log"],
        ],
        0,
    );
    let replayed = json(&outs[0])["state_hash"].clone();
    assert_eq!(json(&outs[1])["state_hash"], replayed);
}

/// Four 1 GiB pages, each with one byte written, folded by a log-only compaction and replayed.
#[test]
fn four_1_gib_pages_with_a_byte_written_each_fold_and_replay_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    for id in 1..=4u64 {
        records.push(create(id, 1 << 30));
    }
    for id in 1..=4u64 {
        let fill = Op::Fill {
            offset: (1 << 30) - 1,
            len: 1,
            value: 7,
        };
        records.push((TYPE_FILL, 0, delta(id, 2, fill).encode().unwrap()));
    }
    crafted(dir.path(), &records);
    let outs = check_commands(
        dir.path(),
        &[
            vec!["replay", "--device", "cpu", "--json", "e.ckpt", "e.log"],
            vec!["compact", "--log-only", "e.log", "-o", "c.log"],
            vec!["replay", "--device", "cpu", "--json", "e.ckpt", "c.log"],
        ],
        0,
    );
    assert_eq!(json(&outs[0])["state_hash"], json(&outs[2])["state_hash"]);
}

/// A FULL record for a 4 KiB page whose zstd payload inflates to 4 GiB: its declared content
/// size is checked against the page before anything is decompressed, and the record is refused
/// as one that does not apply (exit 1, naming the log and the page's length).
#[test]
fn a_compressed_full_record_that_inflates_past_its_page_is_refused_before_decompressing() {
    let dir = tempfile::tempdir().unwrap();
    // The FULL payload's head (page id, epoch, timestamp, source), then 4 GiB of zeros.
    let head = delta(1, 2, Op::Full(&[])).encode().unwrap();
    let content = head.len() as u64 + (4 << 30) - 64;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.set_pledged_src_size(Some(content)).unwrap();
    enc.include_contentsize(true).unwrap();
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = content - head.len() as u64;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {} bytes", bomb.len());
    crafted(dir.path(), &[create(1, 4096), (TYPE_FULL, FLAG_ZSTD, bomb)]);
    let outs = check_commands(
        dir.path(),
        &[
            vec!["replay", "--device", "cpu", "e.ckpt", "e.log"],
            vec!["verify", "e.ckpt", "e.log"],
            vec!["verify", "e.log"],
            vec!["inspect", "--records", "e.log"],
            vec!["compact", "--log-only", "e.log", "-o", "c.log"],
        ],
        1,
    );
    for o in &outs {
        let e = stderr(o);
        assert!(
            e.contains("e.log") && e.contains("4096"),
            "names the log and the page length: {e}"
        );
    }
}

/// A valid CREATE of a 1 TiB page, more than this machine can map: a clear "out of memory"
/// error with exit 2 (not bad data, not an abort). Where the kernel overcommits without limit
/// (`vm.overcommit_memory = 1`) the mapping would succeed, and the test says it cannot run.
#[test]
fn a_page_larger_than_the_machine_is_a_clear_out_of_memory_error() {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if mode.trim() == "1" {
        eprintln!("skipped: vm.overcommit_memory = 1 maps 1 TiB without complaint");
        return;
    }
    // The kernel's heuristic refuses a mapping larger than memory and swap together.
    if memory_and_swap() >= 1 << 40 {
        eprintln!("skipped: this machine has 1 TiB of memory and swap, so 1 TiB can be mapped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    crafted(dir.path(), &[create(1, 1 << 40)]);
    let outs = check_commands(
        dir.path(),
        &[
            vec!["replay", "--device", "cpu", "e.ckpt", "e.log"],
            vec!["verify", "--json", "e.ckpt", "e.log"],
        ],
        2,
    );
    let e = stderr(&outs[0]);
    assert!(e.contains("out of memory") && e.contains("page 1"), "{e}");
    assert_eq!(json(&outs[1])["problems"][0]["kind"], "out_of_memory", "not bad data");
}

/// A checkpoint of 1,000,000 zero-length pages: `inspect` and `verify` cost memory in
/// proportion to the page table (at most 300 bytes a page), not gigabytes.
#[test]
fn a_million_empty_pages_cost_memory_in_proportion_to_the_page_table() {
    use mmsb::format::checkpoint::PageSpec;
    const PAGES: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let pages = (0..PAGES).map(|id| {
        let spec = PageSpec {
            id,
            len: 0,
            epoch: 0,
            meta: PageMeta::default(),
        };
        (spec, &[][..])
    });
    write_checkpoint(&dir.path().join("m.ckpt"), BTreeMap::new(), pages).unwrap();
    let commands = [
        vec!["inspect", "m.ckpt"],
        vec!["inspect", "--json", "m.ckpt"],
        vec!["verify", "m.ckpt"],
    ];
    check_commands_within(dir.path(), &commands, 0, PAGES * 300 / 1024);
}
