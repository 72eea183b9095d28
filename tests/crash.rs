//! A writer killed with SIGKILL in the middle of appending loses no acknowledged record: under
//! `Durability::EveryRecord`, a record whose `append` returned is in the log after the kill, the
//! log opens, whatever follows the acknowledged prefix is whole records or a torn tail, and
//! `recover` leaves a log that verifies.
//!
//! SIGKILL keeps the page cache, so this checks that a record is written before it is
//! acknowledged and that an append cut short reads as a torn tail; survival of a power loss rests
//! on the `fdatasync` before the acknowledgement (docs/FORMAT.md, "Assumptions about the storage").
//!
//! The writer is this test binary run again (`crash_child_writer`) with `MMSB_CRASH_CHILD` set;
//! it prints each acknowledged sequence number on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mmsb::format::log::{Durability, Log, LogOptions, LogWriter, recover};
use mmsb::format::record::{Delta, Op};
use mmsb::page::StateHash;

#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("MMSB_CRASH_CHILD") else {
        return;
    };
    let opts = LogOptions {
        segment_size: 64 << 10,
        durability: Durability::EveryRecord,
        ..Default::default()
    };
    let mut w = LogWriter::create(dir.as_ref(), StateHash([3; 32]), 1, opts).unwrap();
    let payload = vec![0x5Au8; 3000];
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let d = Delta {
            page_id: i % 7,
            epoch: i + 1,
            timestamp_ns: i,
            source: "crash".into(),
            op: Op::Full(&payload[..(i as usize * 37) % 3000]),
        };
        let seq = w.append(&d).unwrap();
        std::io::Write::write_all(&mut out, format!("{seq}\n").as_bytes()).unwrap();
        std::io::Write::flush(&mut out).unwrap();
    }
}

/// Starts the writer child on `logdir`; returns it with its acknowledgement lines.
fn spawn_writer(
    logdir: &std::path::Path,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env("MMSB_CRASH_CHILD", logdir)
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
    let (mut child, mut acks) = spawn_writer(&logdir);
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
        let seqs: Vec<u64> = log.records().map(|r| r.unwrap().frame.seq).collect();
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
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("c.log");
        let (mut child, mut lines) = spawn_writer(&logdir);
        // Kill after a varying number of acknowledgements (a cheap deterministic spread).
        let kill_after = 5 + (trial * 7919) % 150;
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
        let seqs: Vec<u64> = log.records().map(|r| r.unwrap().frame.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "trial {trial}: gapless prefix");
        drop(log);
        recover(&[&logdir], &dir.path().join("torn.bin")).unwrap();
        let after = Log::open(&[&logdir]).unwrap();
        assert!(after.torn_tail().is_none() && after.problems().is_empty());
        assert_eq!(
            after.last_seq().unwrap_or(0),
            last,
            "trial {trial}: recover dropped a whole record"
        );
    }
}
