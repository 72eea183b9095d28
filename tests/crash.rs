//! A writer killed with SIGKILL in the middle of appending loses no acknowledged record: under
//! `Durability::EveryRecord`, and under `Durability::NoSync` (every other trial, which syncs
//! nothing and leaves the bytes to the OS), a record whose `append` returned is in the log after the kill, the
//! log opens, whatever follows the acknowledged prefix is whole records or a torn tail, `verify`
//! reports the torn tail, `recover` cuts it, and replay gives the state of exactly the records
//! that remain. A `compact` killed while writing leaves the old output, or none, or the whole new
//! one. Trials: `MMSB_CRASH_TRIALS` (8 by default), kill points from `MMSB_CRASH_SEED`
//! (default: the clock; printed in every failure).
//!
//! SIGKILL keeps the page cache, so this checks that a record is written before it is
//! acknowledged and that an append cut short reads as a torn tail; survival of a power loss rests
//! on the `fdatasync` before the acknowledgement (docs/FORMAT.md, "Assumptions about the storage").
//!
//! The writer is this test binary run again (`crash_child_writer`) with `MMSB_CRASH_CHILD` set;
//! it prints each acknowledged sequence number on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

use std::collections::BTreeMap;

use common::{ok, replay_hash};
use mmsb::format::checkpoint::{Checkpoint, PageSpec, write_checkpoint};
use mmsb::format::log::{Durability, Log, LogOptions, LogWriter, recover};
use mmsb::format::record::{Delta, Op};
use mmsb::ops::verify::verify;
use mmsb::page::PageMeta;
use mmsb::replay::{PageCheck, ReplayLimit, State};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// The checkpoint the crash tests' logs belong to: 7 zero pages of 3000 bytes.
fn crash_checkpoint(path: &std::path::Path) -> Checkpoint {
    let zeros = vec![0u8; 3000];
    let pages = (0..7).map(|id| {
        (
            PageSpec {
                id,
                len: 3000,
                epoch: 0,
                meta: PageMeta::default(),
            },
            &zeros[..],
        )
    });
    write_checkpoint(path, BTreeMap::new(), pages).unwrap();
    Checkpoint::open(path).unwrap()
}

/// Record `seq` of the crash writer: a sparse write whose place and bytes follow from `seq`.
fn nth_delta(seq: u64, bytes: &[u8]) -> Delta<'_> {
    let len = (seq as usize * 13) % 1000 + 1;
    Delta {
        page_id: seq % 7,
        epoch: seq,
        timestamp_ns: seq,
        source: "crash".into(),
        op: Op::Sparse(vec![((seq * 37) % 2000, &bytes[..len])]),
    }
}

#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("MMSB_CRASH_CHILD") else {
        return;
    };
    let ckpt = Checkpoint::open(std::env::var("MMSB_CRASH_CKPT").unwrap().as_ref()).unwrap();
    let opts = LogOptions {
        segment_size: 64 << 10,
        durability: if std::env::var_os("MMSB_CRASH_NO_SYNC").is_some() {
            Durability::NoSync
        } else {
            Durability::EveryRecord
        },
        ..Default::default()
    };
    let mut w = LogWriter::create(dir.as_ref(), ckpt.state_hash(), 1, opts).unwrap();
    let mut out = std::io::stdout().lock();
    for seq in 1u64.. {
        let bytes = vec![seq as u8; 1000];
        let acked = w.append(&nth_delta(seq, &bytes)).unwrap();
        std::io::Write::write_all(&mut out, format!("{acked}\n").as_bytes()).unwrap();
        std::io::Write::flush(&mut out).unwrap();
    }
}

/// Starts the writer child on `logdir`; returns it with its acknowledgement lines.
fn spawn_writer(
    logdir: &std::path::Path,
    ckpt: &std::path::Path,
    no_sync: bool,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env("MMSB_CRASH_CHILD", logdir)
        .env("MMSB_CRASH_CKPT", ckpt)
        .env(
            if no_sync {
                "MMSB_CRASH_NO_SYNC"
            } else {
                "MMSB_CRASH_SYNC"
            },
            "1",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[test]
fn a_reader_sees_a_whole_prefix_while_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("r.log");
    let ckpt = dir.path().join("r.ckpt");
    crash_checkpoint(&ckpt);
    let (mut child, mut acks) = spawn_writer(&logdir, &ckpt, false);
    // Wait until records are acknowledged (the segment exists from then on). The harness prints
    // "test crash_child_writer ... " without a newline, so the first number may share its line.
    let first = acks
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|l| l.trim().parse::<u64>().ok());
    assert!(first.is_some(), "the writer acknowledged nothing");
    let mut seen_max = 0;
    for round in 0..60 {
        let log = Log::open(&[&logdir]).unwrap();
        assert!(
            log.problems().is_empty(),
            "round {round}: a concurrent reader saw corruption: {:?}",
            log.problems()
        );
        let seqs: Vec<u64> = log.records().map(|r| r.frame.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}: not a gapless prefix"
        );
        seen_max = seen_max.max(seqs.len());
        // Drain acknowledgements so the writer never blocks on a full pipe.
        for _ in 0..3 {
            if acks.next().is_none() {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen_max > 1, "the reader saw the log grow");
}

#[test]
fn acknowledged_records_survive_sigkill_of_the_writer() {
    let trials: u64 = std::env::var("MMSB_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = seed_from_env();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for trial in 0..trials {
        let no_sync = trial % 2 == 1;
        let trial = format!("{trial} (MMSB_CRASH_SEED={seed}, no_sync {no_sync})");
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("c.log");
        let ckpt_path = dir.path().join("c.ckpt");
        let ckpt = crash_checkpoint(&ckpt_path);
        let (mut child, mut lines) = spawn_writer(&logdir, &ckpt_path, no_sync);
        // Kill after a random number of acknowledgements (seeded: the seed is in the message).
        let kill_after = 1 + rng.next_u64() % 200;
        let mut acked = 0u64;
        while let Some(Ok(line)) = lines.next() {
            let Ok(seq) = line.trim().parse::<u64>() else { continue };
            acked = seq;
            if seq >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            acked >= kill_after,
            "trial {trial}: the writer died early (acked {acked})"
        );

        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.problems().is_empty(), "trial {trial}: {:?}", log.problems());
        let last = log.last_seq().unwrap_or(0);
        assert!(
            last >= acked,
            "trial {trial}: acknowledged seq {acked} lost (log ends at {last})"
        );
        let seqs: Vec<u64> = log.records().map(|r| r.frame.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "trial {trial}: gapless prefix");
        let torn = log.torn_tail().is_some();
        drop(log);
        let paths = [ckpt_path.clone(), logdir.clone()];
        let v = verify(&paths, None, false).unwrap();
        assert_eq!(
            v.problems.iter().any(|p| p.kind == "torn_tail"),
            torn,
            "trial {trial}: verify reports a torn tail exactly when there is one"
        );
        assert_eq!(v.ok, !torn, "trial {trial}: {:?}", v.problems);
        recover(
            &[&logdir],
            Some(&dir.path().join("torn.bin")),
            mmsb::format::lock::LockWait::Fail,
        )
        .unwrap();
        let after = Log::open(&[&logdir]).unwrap();
        assert!(after.torn_tail().is_none() && after.problems().is_empty());
        assert_eq!(
            after.last_seq().unwrap_or(0),
            last,
            "trial {trial}: recover dropped a whole record"
        );
        assert!(
            verify(&paths, None, false).unwrap().ok,
            "trial {trial}: verifies after recover"
        );
        // Replay gives exactly the state of records 1..=last, applied one by one.
        let mut replayed = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        replayed.replay(&after, ReplayLimit::default()).unwrap();
        let mut expected = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        for seq in 1..=last {
            let bytes = vec![seq as u8; 1000];
            expected.apply(&nth_delta(seq, &bytes)).unwrap();
        }
        assert_eq!(replayed.state_hash(), expected.state_hash(), "trial {trial}");
    }
}

fn seed_from_env() -> u64 {
    std::env::var("MMSB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Temporary files and directories an atomic writer left in `dir` (SIGKILL gives it no chance
/// to remove them), removed so the next trial starts clean; returns how many there were.
fn remove_temporaries(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().ends_with(".tmp") {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
            n += 1;
        }
    }
    n
}

/// Bytes written so far into the temporary output beside `target` (0 before it exists).
fn temp_output_bytes(dir: &std::path::Path, target: &str) -> u64 {
    let prefix = format!(".{target}.");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let p = e.path();
            n += if p.is_dir() {
                std::fs::read_dir(&p).map_or(0, |d| {
                    d.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum()
                })
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    n
}

/// Runs `mmsb ARGS` in `dir` and SIGKILLs it once its temporary output beside `target` holds
/// `kill_at` bytes (or lets it finish). Returns whether it was killed.
fn run_and_kill(dir: &std::path::Path, args: &[&str], target: &str, kill_at: u64) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "mmsb {args:?} failed on its own");
            return false;
        }
        if temp_output_bytes(dir, target) >= kill_at {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_killed_compact_leaves_the_old_output_or_the_whole_new_one() {
    let trials: u64 = std::env::var("MMSB_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(4, |n: u64| n.div_ceil(4));
    let seed = seed_from_env();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "a.ckpt",
            "--total-size",
            "24MiB",
            "--pages",
            "12",
            "--deltas",
            "3000",
        ],
    );
    ok(
        d,
        &[
            "gen",
            "-o",
            "old.ckpt",
            "--total-size",
            "1MiB",
            "--pages",
            "3",
            "--deltas",
            "0",
            "--seed",
            "9",
        ],
    );
    let want = replay_hash(d, &["a.ckpt", "a.log"]);
    let old = std::fs::read(d.join("old.ckpt")).unwrap();
    let ckpt_len = std::fs::metadata(d.join("a.ckpt")).unwrap().len();
    let (mut killed, mut finished) = (0, 0);
    for trial in 0..trials {
        let trial = format!("{trial} (MMSB_CRASH_SEED={seed})");
        // Into a checkpoint, over an existing file: the old bytes or the complete new state.
        std::fs::write(d.join("out.ckpt"), &old).unwrap();
        let kill_at = rng.next_u64() % ckpt_len;
        let was_killed = run_and_kill(
            d,
            &["compact", "a.ckpt", "a.log", "-o", "out.ckpt"],
            "out.ckpt",
            kill_at,
        );
        let now = std::fs::read(d.join("out.ckpt")).unwrap();
        if now != old {
            assert_eq!(
                replay_hash(d, &["out.ckpt"]),
                want,
                "trial {trial}: a new output is whole"
            );
            ok(d, &["verify", "out.ckpt"]);
        }
        assert!(!was_killed || remove_temporaries(d) <= 1, "trial {trial}");
        (killed, finished) = if was_killed {
            (killed + 1, finished)
        } else {
            (killed, finished + 1)
        };

        // A merged log: absent, or complete.
        let _ = std::fs::remove_dir_all(d.join("m.log"));
        let kill_at = rng.next_u64() % (1 << 20);
        run_and_kill(d, &["compact", "--log-only", "a.log", "-o", "m.log"], "m.log", kill_at);
        if d.join("m.log").exists() {
            assert_eq!(
                replay_hash(d, &["a.ckpt", "m.log"]),
                want,
                "trial {trial}: the merged log is whole"
            );
        }
        remove_temporaries(d);
    }
    assert!(killed + finished == trials as usize);
    // Inputs untouched throughout.
    assert_eq!(replay_hash(d, &["a.ckpt", "a.log"]), want);
}
