//! The committed files in testdata/: that they are exactly what the builder writes, what each
//! one holds, and that every single-byte corruption of them is caught by `verify`.

mod common;

use std::path::{Path, PathBuf};

use common::{code, copy_testdata, run, testdata};
use mmsb::error::{Corruption, Error};
use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::Log;
use mmsb::replay::{PageCheck, ReplayLimit, State};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out.sort();
    out
}

#[test]
fn committed_testdata_is_exactly_what_the_builder_writes() {
    let dir = tempfile::tempdir().unwrap();
    common::golden_files::write_all(dir.path()).unwrap();
    let fresh: Vec<PathBuf> = files_under(dir.path())
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().to_owned())
        .collect();
    let committed: Vec<PathBuf> = files_under(&testdata())
        .iter()
        .map(|p| p.strip_prefix(testdata()).unwrap().to_owned())
        .filter(|p| !p.starts_with("README.md") && !p.starts_with("regressions") && !p.starts_with("v1.0"))
        .collect();
    assert_eq!(
        fresh, committed,
        "testdata/ is stale: run `cargo run --example make_testdata -- testdata`"
    );
    for f in fresh {
        assert!(
            std::fs::read(dir.path().join(&f)).unwrap() == std::fs::read(testdata().join(&f)).unwrap(),
            "{} differs: regenerate testdata",
            f.display()
        );
    }
}

fn replay(ckpt: &str, log: &str) -> (Checkpoint, Log) {
    (
        Checkpoint::open(&testdata().join(ckpt)).unwrap(),
        Log::open(&[testdata().join(log)]).unwrap(),
    )
}

#[test]
fn small_checkpoint_plus_log_replays_to_the_hand_computed_pages() {
    let (ckpt, log) = replay("small.ckpt", "small.log");
    assert_eq!(log.segments().len(), 2, "the golden log spans a segment rotation");
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    let summary = s.replay(&log, ReplayLimit::default()).unwrap();
    assert_eq!(summary.records, 9);
    assert_eq!(s.page(0).unwrap().data(), b"Hi!LO");
    let mut p1: Vec<u8> = (0..100u8).collect();
    p1[..2].copy_from_slice(b"ab");
    p1[50..54].copy_from_slice(b"cdef");
    p1.resize(120, 0);
    assert_eq!(s.page(1).unwrap().data(), &p1[..]);
    let mut p2: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    // mask 0b1010_0001, 0b1001 over 10..22: bits 0, 5, 7, 8, 11 take w, x, y, z, 5
    for (bit, v) in [(0, b'w'), (5, b'x'), (7, b'y'), (8, b'z'), (11, b'5')] {
        p2[10 + bit] = v;
    }
    p2[100..700].fill(0);
    assert_eq!(s.page(2).unwrap().data(), &p2[..]);
    assert!(s.page(7).is_none(), "created then deleted");
    assert_eq!(s.page(1).unwrap().epoch, 6);
    assert!(
        log.segments()
            .iter()
            .flat_map(|seg| seg.frames())
            .any(|f| f.flags & 1 != 0),
        "one record is stored zstd-compressed"
    );
}

#[test]
fn newer_minor_version_reads_as_the_same_state() {
    let small = Checkpoint::open(&testdata().join("small.ckpt")).unwrap();
    let future = Checkpoint::open(&testdata().join("future-minor.ckpt")).unwrap();
    assert_eq!(future.head().minor, 4);
    assert_eq!(future.state_hash(), small.state_hash());
    assert!(future.check_pages(None).is_empty());
}

#[test]
fn future_major_version_is_refused_at_the_version_field() {
    let err = Checkpoint::open(&testdata().join("future-major.ckpt")).err().unwrap();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                offset: 8,
                problem: Corruption::UnsupportedVersion { major: 2, .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn torn_log_replays_its_whole_records_and_recover_cuts_only_the_tail() {
    let (ckpt, log) = replay("small.ckpt", "torn.log");
    assert!(log.problems().is_empty());
    let torn = log.torn_tail().unwrap().clone();
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    assert_eq!(s.replay(&log, ReplayLimit::default()).unwrap().records, 8);
    let (full_ckpt, full_log) = replay("small.ckpt", "small.log");
    let mut eight = State::from_checkpoint(&full_ckpt, PageCheck::Check).unwrap();
    eight
        .replay(
            &full_log,
            ReplayLimit {
                to_seq: Some(8),
                to_epoch: None,
            },
        )
        .unwrap();
    assert_eq!(s.state_hash(), eight.state_hash());

    let dir = tempfile::tempdir().unwrap();
    let copy = copy_testdata("torn.log", dir.path());
    let before = std::fs::read(&torn.path).unwrap();
    let o = run(dir.path(), &["recover", "torn.log", "--backup", "cut.bin"]);
    assert_eq!(code(&o), 0, "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read(dir.path().join("cut.bin")).unwrap(),
        &before[torn.offset as usize..]
    );
    let after = Log::open(&[copy]).unwrap();
    assert!(after.torn_tail().is_none() && after.problems().is_empty());
    assert_eq!(after.last_seq(), Some(8));
}

#[test]
fn mid_log_corruption_is_not_a_torn_tail_and_recover_refuses_it() {
    let log = Log::open(&[testdata().join("midcorrupt.log")]).unwrap();
    assert!(log.torn_tail().is_none());
    assert!(
        matches!(
            &log.problems()[0],
            Error::Corrupt {
                offset: 72,
                problem: Corruption::CorruptRecord { .. },
                ..
            }
        ),
        "{}",
        log.problems()[0]
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = copy_testdata("midcorrupt.log", dir.path());
    let before: Vec<Vec<u8>> = files_under(&copy).iter().map(|p| std::fs::read(p).unwrap()).collect();
    let o = run(dir.path(), &["recover", "midcorrupt.log"]);
    assert_eq!(code(&o), 1);
    let after: Vec<Vec<u8>> = files_under(&copy).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after, "recover must not touch a corrupt log");
}

#[test]
fn log_for_another_state_is_refused() {
    let (ckpt, log) = replay("small.ckpt", "wrong-base.log");
    let err = State::from_checkpoint(&ckpt, PageCheck::Check)
        .unwrap()
        .replay(&log, ReplayLimit::default())
        .unwrap_err();
    assert!(matches!(err, Error::WrongBase { .. }));
    let o = run(&testdata(), &["verify", "small.ckpt", "wrong-base.log"]);
    assert_eq!(code(&o), 1);
    assert!(
        common::stderr(&o).contains("log belongs to state abab"),
        "{}",
        common::stderr(&o)
    );
}

/// Verifies `ckpt` (+ `log`) in process: true when verify finds a problem (the binary's exit 1).
fn verify_fails(paths: &[PathBuf]) -> bool {
    match mmsb::ops::verify::verify(paths, None, true) {
        Ok(r) => !r.ok,
        Err(e) => e.is_data_error(),
    }
}

/// Flips `offsets` of `target` (a copy of a file in `paths`) one at a time and asserts that
/// verify fails for each flip.
fn assert_every_flip_caught(paths: &[PathBuf], target: &Path, offsets: impl Iterator<Item = usize>, xor: u8) -> usize {
    use std::os::unix::fs::FileExt;
    let original = std::fs::read(target).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(target).unwrap();
    let mut n = 0;
    for i in offsets {
        file.write_all_at(&[original[i] ^ xor], i as u64).unwrap();
        assert!(
            verify_fails(paths),
            "flipping byte {i} of {} (xor {xor:#x}) went unnoticed",
            target.display()
        );
        file.write_all_at(&original[i..i + 1], i as u64).unwrap();
        n += 1;
    }
    assert!(!verify_fails(paths), "the restored files verify");
    n
}

#[test]
fn every_byte_flip_of_the_golden_checkpoint_and_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = copy_testdata("small.ckpt", dir.path());
    let log = copy_testdata("small.log", dir.path());
    let paths = [ckpt.clone(), log.clone()];
    let len = std::fs::metadata(&ckpt).unwrap().len() as usize;
    for xor in [0x01, 0xFF] {
        assert_eq!(assert_every_flip_caught(&paths, &ckpt, 0..len, xor), len);
    }
    for seg in files_under(&log) {
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        for xor in [0x01, 0xFF] {
            assert_eq!(assert_every_flip_caught(&paths, &seg, 0..len, xor), len);
        }
    }
}

#[test]
fn byte_flips_give_exit_code_1_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = copy_testdata("small.ckpt", dir.path());
    copy_testdata("small.log", dir.path());
    let original = std::fs::read(&ckpt).unwrap();
    for i in (0..original.len()).step_by(509) {
        let mut b = original.clone();
        b[i] ^= 0x20;
        std::fs::write(&ckpt, &b).unwrap();
        let o = run(dir.path(), &["verify", "small.ckpt", "small.log"]);
        assert_eq!(code(&o), 1, "flip at {i}: {}", common::stderr(&o));
        assert!(
            common::stderr(&o).contains("small.ckpt"),
            "the error names the file: {}",
            common::stderr(&o)
        );
    }
}

#[test]
fn dense_sample_of_flips_in_a_larger_generated_checkpoint_and_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("g.ckpt");
    let log = dir.path().join("g.log");
    let o = mmsb::testing::generate::GenOptions {
        pages: 40,
        total_size: 1 << 20,
        deltas: 300,
        mix: mmsb::testing::generate::Mix {
            full: 1,
            sparse: 5,
            masked: 2,
            create: 1,
            resize: 1,
            delete: 1,
            fill: 0,
        },
        compression: mmsb::format::log::Compression::Auto,
        segment_size: 64 << 10,
        ..Default::default()
    };
    mmsb::testing::generate::generate(&ckpt, Some(&log), &o).unwrap();
    let paths = [ckpt.clone(), log.clone()];
    let len = std::fs::metadata(&ckpt).unwrap().len() as usize;
    // Every byte of the header block and index, then every 1021st byte of the rest.
    let head = Checkpoint::open(&ckpt).unwrap().head().data_offset as usize;
    let n = assert_every_flip_caught(&paths, &ckpt, (0..head).chain((head..len).step_by(1021)), 0x10);
    assert!(n > head + 1000);
    for seg in files_under(&log) {
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        assert_every_flip_caught(&paths, &seg, (0..len).step_by(211), 0x04);
    }
}

#[test]
fn a_group_is_records_whose_flag_byte_says_more_follow_in_a_version_1_1_segment() {
    let seg = testdata().join("group.log/00000000.mmsblog");
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(&bytes[8..12], &[1, 0, 1, 0], "major 1, minor 1");
    let log = Log::open(&[testdata().join("group.log")]).unwrap();
    let frames = log.segments()[0].frames().to_vec();
    let flag_bytes: Vec<u8> = frames.iter().map(|f| bytes[f.offset as usize + 17]).collect();
    // A record alone, then a group of three: bit 1 on all of the group but its last.
    assert_eq!(flag_bytes, [0, 2, 2, 0]);
    let (ckpt, _) = replay("small.ckpt", "small.log");
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    assert_eq!(s.replay(&log, ReplayLimit::default()).unwrap().records, 4);
    assert_eq!(s.page(0).unwrap().data(), b"HELL!");
    assert_eq!(
        &s.page(2).unwrap().data()[..11],
        &[0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 70]
    );
}

#[test]
fn a_log_that_ends_inside_a_group_replays_none_of_it_and_recover_cuts_the_whole_group() {
    let (ckpt, log) = replay("small.ckpt", "open-group.log");
    assert!(log.problems().is_empty());
    let group = Log::open(&[testdata().join("group.log")]).unwrap();
    let torn = log.torn_tail().expect("an open group is a torn tail").clone();
    assert_eq!(
        torn.offset,
        group.segments()[0].frames()[1].offset,
        "cut at the group's first record"
    );
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    assert_eq!(s.replay(&log, ReplayLimit::default()).unwrap().records, 1);
    assert_eq!(s.page(0).unwrap().data(), b"HELLO");
    assert_eq!(
        s.page(1).unwrap().data()[..2],
        [0, 1],
        "the group's first write is not applied"
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = copy_testdata("open-group.log", dir.path());
    let o = run(dir.path(), &["recover", "open-group.log", "--backup", "cut.bin"]);
    assert_eq!(code(&o), 0, "{}", common::stderr(&o));
    let after = Log::open(&[copy]).unwrap();
    assert!(after.torn_tail().is_none() && after.problems().is_empty());
    assert_eq!(after.last_seq(), Some(1));
}

/// The 1.0 files, as the 1.0 writer wrote them (before groups): frozen, never regenerated.
const V1_0_STATE_AFTER_LOG: &str = "5251df90671c9540b609927b0351f26866764e7f5c30c768813139fa37c2a5f2";

#[test]
fn frozen_version_1_0_files_replay_to_their_recorded_state_hash() {
    let ckpt = Checkpoint::open(&testdata().join("v1.0/small.ckpt")).unwrap();
    assert_eq!(ckpt.head().minor, 0);
    let log = Log::open(&[testdata().join("v1.0/small.log")]).unwrap();
    assert!(log.segments().iter().all(|s| s.header().minor == 0));
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    assert_eq!(s.replay(&log, ReplayLimit::default()).unwrap().records, 9);
    assert_eq!(s.state_hash().to_hex(), V1_0_STATE_AFTER_LOG);
}

#[test]
fn appending_to_a_version_1_0_log_leaves_its_segments_as_they_are_and_starts_a_1_1_segment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("v1.0")).unwrap();
    copy_testdata("v1.0/small.ckpt", dir.path());
    let log = copy_testdata("v1.0/small.log", dir.path());
    let before: Vec<Vec<u8>> = ["00000000.mmsblog", "00000001.mmsblog"]
        .iter()
        .map(|n| std::fs::read(log.join(n)).unwrap())
        .collect();
    // Append the snapshot that takes the logged state back to the checkpoint's bytes.
    let o = run(
        dir.path(),
        &[
            "diff",
            "v1.0/small.ckpt",
            "--a-log",
            "v1.0/small.log",
            "v1.0/small.ckpt",
            "--emit-log",
            "v1.0/small.log",
            "--append",
        ],
    );
    assert_eq!(code(&o), 0, "{}", common::stderr(&o));
    for (n, b) in ["00000000.mmsblog", "00000001.mmsblog"].iter().zip(&before) {
        assert_eq!(&std::fs::read(log.join(n)).unwrap(), b, "{n} unchanged");
    }
    let grown = Log::open(&[&log]).unwrap();
    assert!(grown.problems().is_empty() && grown.torn_tail().is_none());
    assert_eq!(grown.segments().len(), 3);
    assert_eq!(grown.segments()[2].header().minor, 1);
    let ckpt = Checkpoint::open(&dir.path().join("v1.0/small.ckpt")).unwrap();
    let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    s.replay(&grown, ReplayLimit::default()).unwrap();
    for page in ckpt.pages() {
        let id = page.id;
        assert_eq!(
            s.page(id).unwrap().data(),
            ckpt.page_bytes(page),
            "page {id} back to the checkpoint's bytes"
        );
    }
}

#[test]
fn the_graph_files_hold_the_graph_section_and_records_the_spec_gives() {
    let bytes = std::fs::read(testdata().join("graph.ckpt")).unwrap();
    assert_eq!(&bytes[10..12], &[2, 0], "a checkpoint with a graph is stamped 1.2");
    // Section entry 1 (after the index): kind 3, flags 0 (optional: a 1.0 reader skips it).
    assert_eq!(&bytes[96..104], &[3, 0, 0, 0, 0, 0, 0, 0]);
    let offset = u64::from_le_bytes(bytes[104..112].try_into().unwrap()) as usize;
    #[rustfmt::skip]
    let first_entry: &[u8] = &[
        2, 0, 0, 0, 0, 0, 0, 0,          // entry_count
        3, 0, 0, 0, 0, 0, 0, 0,          // page_id 3
        1, 0, 0, 0, 0, 0, 0, 0,          // height 1, reserved
        2, 0, 0, 0, 2, 0, 0, 0,          // rule 2 (xor), name_len 0, reserved; parent_count 2
        0, 0, 0, 0, 0, 0, 0, 0,          // param0
        0, 0, 0, 0, 0, 0, 0, 0,          // param1
        1, 0, 0, 0, 0, 0, 0, 0,          // parent 1
        2, 0, 0, 0, 0, 0, 0, 0,          // parent 2
    ];
    assert_eq!(&bytes[offset..offset + first_entry.len()], first_entry);
    let ckpt = Checkpoint::open(&testdata().join("graph.ckpt")).unwrap();
    assert_eq!(ckpt.head().graph.len(), 2);
    assert_eq!(ckpt.head().graph[1].height, 2, "page 4 sits above page 3");

    // The log: record types 0x80 (derive), 0x81 (underive), 0x82 (propagated); the outputs and
    // the PROPAGATED record are one group (flags 02 02 00).
    let log = Log::open(&[testdata().join("graph.log")]).unwrap();
    let frames: Vec<(u8, u8)> = log.records().map(|r| (r.frame.kind, r.frame.flags)).collect();
    assert_eq!(frames, [(5, 0), (5, 2), (5, 2), (0x82, 0), (0x80, 0), (0x81, 0)]);
    let report = mmsb::ops::verify::verify(
        &[testdata().join("graph.ckpt"), testdata().join("graph.log")],
        None,
        true,
    )
    .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    let graph = report.graph.expect("a graph");
    assert_eq!((graph.derived_pages, graph.rederived, graph.stale_pages), (2, 2, 0));
    assert_eq!(graph.last_propagation, Some(4));
    // A reader that skips graph records reaches the same pages as the live graph.
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    let summary = state.replay(&log, ReplayLimit::default()).unwrap();
    assert_eq!(
        summary.skipped_unknown, 0,
        "graph records are known, not skipped as unknown"
    );
    assert_eq!(&state.page(3).unwrap().data()[..1], &[b'r' ^ b'r'][..]);
    let steps = mmsb::graph::explain(ckpt.head(), &log, 4, None).unwrap().unwrap();
    let chain: Vec<u64> = steps.iter().map(|s| s.page).collect();
    assert_eq!(chain, [4, 3, 1]);
}
