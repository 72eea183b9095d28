//! `mmsb watch` against a live writer: every snapshot `watch --once --json` prints while another
//! thread appends groups of records is whole (no half record, no half group) and agrees with
//! itself, and the next one never goes back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{json, ok};
use mmsb::format::log::{Durability, LogOptions, LogWriter};
use mmsb::format::record::{Delta, Op};
use mmsb::page::StateHash;

/// Records in each group the writer appends.
const GROUP: u64 = 3;

#[test]
fn snapshots_of_a_log_being_appended_to_are_whole_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.log");
    let options = LogOptions {
        // Small segments, so that snapshots also land while the writer moves to a new one.
        segment_size: 16 << 10,
        durability: Durability::Never,
        ..LogOptions::default()
    };
    let mut w = LogWriter::create(&log, StateHash([9; 32]), 1, options).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let groups = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, groups) = (stop.clone(), groups.clone());
        std::thread::spawn(move || {
            let payload = vec![0xa5u8; 300];
            let mut epoch = 0;
            while !stop.load(Ordering::Relaxed) {
                w.begin_group().unwrap();
                for page in 0..GROUP {
                    epoch += 1;
                    w.append(&Delta {
                        page_id: page,
                        epoch,
                        timestamp_ns: 0,
                        source: "writer".into(),
                        op: Op::Sparse(vec![(page * 7, &payload[..])]),
                    })
                    .unwrap();
                }
                w.commit_group().unwrap();
                groups.fetch_add(1, Ordering::Relaxed);
            }
            w.finish().unwrap();
        })
    };
    let mut last_records = 0;
    let mut seen_writer = false;
    let mut growing = 0;
    for _ in 0..40 {
        let s = json(&ok(dir.path(), &["watch", "live.log", "--once", "--json"]));
        let records = s["records"].as_u64().unwrap();
        // Whole groups only: a reader never sees a group the writer has not closed.
        assert_eq!(records % GROUP, 0, "half a group in {s:#}");
        let by_type: u64 = s["records_by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let in_segments: u64 = s["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["records"].as_u64().unwrap())
            .sum();
        assert_eq!((by_type, in_segments), (records, records), "{s:#}");
        if records > 0 {
            assert_eq!(s["first_seq"], 1);
            assert_eq!(s["last_seq"].as_u64().unwrap(), records, "{s:#}");
            assert_eq!(s["tail"]["checked_through"]["seq"].as_u64().unwrap(), records);
            assert_eq!(s["last_epoch"].as_u64().unwrap(), records);
        }
        assert!(s["problems"].as_array().unwrap().is_empty(), "{s:#}");
        assert!(records >= last_records, "went back from {last_records} to {records}");
        growing += u64::from(records > last_records);
        last_records = records;
        seen_writer |= s["tail"]["writer"]["running"] == true;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(seen_writer, "the writer holding the lock was never named");
    assert!(
        growing >= 2,
        "the log grew between only {growing} snapshots: the writer did not run alongside"
    );
    // Once the writer is done, a snapshot sees every group it committed.
    let s = json(&ok(dir.path(), &["watch", "live.log", "--once", "--json"]));
    assert_eq!(s["records"].as_u64().unwrap(), groups.load(Ordering::Relaxed) * GROUP);
    assert!(s["tail"]["writer"].is_null(), "{s:#}");
}

/// A checkpoint of two pages, `m.ckpt`, and a log of three records, `m.log`.
fn small_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "gen",
        "-o",
        "m.ckpt",
        "--pages",
        "2",
        "--total-size",
        "4KiB",
        "--deltas",
        "3",
    ];
    ok(dir.path(), &args);
    dir
}

#[test]
fn watch_without_a_terminal_asks_for_once_or_json() {
    let dir = small_model();
    let o = common::run(dir.path(), &["watch", "m.log"]);
    assert_eq!(common::code(&o), 2);
    assert!(common::stderr(&o).contains("--once"), "{}", common::stderr(&o));
}

/// `--device` keeps a copy on a GPU (tests/gpu.rs follows one); without a device to use, the
/// command fails before showing anything, naming the device, and without a checkpoint there is
/// nothing to copy. A snapshot without `--device` says so with a null `device`.
#[test]
fn a_device_copy_needs_a_checkpoint_and_a_device() {
    let dir = small_model();
    let s = json(&ok(dir.path(), &["watch", "m.log", "m.ckpt", "--once", "--json"]));
    assert!(s["device"].is_null(), "{s:#}");
    let o = common::run(
        dir.path(),
        &["watch", "m.log", "--device", "cuda:0", "--once", "--json"],
    );
    assert_eq!(common::code(&o), 2);
    assert!(common::stderr(&o).contains("CHECKPOINT"), "{}", common::stderr(&o));
    let o = common::run(dir.path(), &["watch", "m.log", "m.ckpt", "--device", "gpu0", "--once"]);
    assert_eq!(common::code(&o), 2);
    assert!(common::stderr(&o).contains("expected cuda:N"), "{}", common::stderr(&o));
    if mmsb::gpu::device_count().is_ok_and(|n| n > 0) {
        return; // the device test is tests/gpu.rs's
    }
    let o = common::run(
        dir.path(),
        &["watch", "m.log", "m.ckpt", "--device", "cuda:0", "--once", "--json"],
    );
    assert_eq!(common::code(&o), 2);
    assert!(common::stdout(&o).is_empty());
    assert!(common::stderr(&o).contains("cuda:0"), "{}", common::stderr(&o));
}

/// `watch --json` streams a document per refresh until its reader goes away, then exits 0
/// without a word (as `yes | head` does).
#[test]
fn a_json_stream_ends_quietly_when_its_reader_goes_away() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // A document of several KiB (many segments, many pages listed): longer than standard
    // output's buffer, so the failed write can come from inside the JSON writer.
    let make = "gen -o m.ckpt --pages 64 --total-size 64KiB --deltas 300 --segment-size 8KiB";
    ok(dir.path(), &make.split(' ').collect::<Vec<_>>());
    let mut child = common::mmsb(dir.path())
        .args(["watch", "m.log", "--json", "--interval", "10ms", "--top", "64"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(doc["records"], 300);
    assert!(first.len() > 4096, "{} bytes", first.len());
    // The reader is gone (its end of the pipe closed with the BufReader): the next write fails.
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Given the checkpoint, a snapshot names the pages written most and says whether the log
/// belongs to it.
#[test]
fn a_checkpoint_names_the_pages_and_is_checked_against_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "m.ckpt",
            "--pages",
            "4",
            "--total-size",
            "16KiB",
            "--deltas",
            "20",
        ],
    );
    ok(
        d,
        &[
            "gen",
            "-o",
            "other.ckpt",
            "--pages",
            "4",
            "--total-size",
            "16KiB",
            "--deltas",
            "0",
            "--seed",
            "9",
        ],
    );
    let s = json(&ok(d, &["watch", "m.log", "m.ckpt", "--once", "--json"]));
    assert_eq!(s["base_matches_checkpoint"], true);
    let top = s["top_pages"].as_array().unwrap();
    assert!(!top.is_empty());
    for p in top {
        assert_eq!(p["name"], format!("page.{}", p["page_id"]), "{p}");
    }
    let s = json(&ok(d, &["watch", "m.log", "other.ckpt", "--once", "--json"]));
    assert_eq!(s["base_matches_checkpoint"], false);
}
