//! The GPU apply's plan (src/gpu/plan.rs), run on the host the way the `apply_tiles` kernel runs
//! it, gives the CPU replay's pages, epochs and summary: for every record kind, compressed or
//! not, with replay limits and page selections, from a log opened with or without its record
//! checksums or read in pieces with its records decoded as they are read (as the GPU upload
//! does). No GPU needed: this checks the ordering and clipping decisions the kernel follows.

use std::collections::HashMap;
use std::path::Path;

use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::{Compression, Log};
use mmsb::gpu::plan::{self, Planner, Step};
use mmsb::replay::{PageCheck, ReplayLimit, State};
use mmsb::testing::generate::{GenOptions, Mix, SizeDist, generate};
use proptest::prelude::*;

/// How the plan's log is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Opening {
    /// Every checksum checked on the CPU.
    Checked,
    /// Frame headers only ([`Log::open_deferred`]).
    Deferred,
    /// The files read in pieces, each walked and decoded as `mmsb replay --device` does while
    /// it uploads them ([`Planner::walk_piece`], [`Planner::open_log_from_pieces`]).
    FromPieces,
}

const OPENINGS: [Opening; 3] = [Opening::Checked, Opening::Deferred, Opening::FromPieces];

/// Bytes per piece for [`Opening::FromPieces`]: small, so that frames cross many piece edges.
const PIECE: usize = 48 << 10;

/// Opens the log at `log_path` as `how` says and plans it against the checkpoint's pages for
/// which `selected` holds.
fn open_and_plan(
    ckpt: &Checkpoint,
    log_path: &Path,
    how: Opening,
    limit: ReplayLimit,
    selected: &dyn Fn(u64) -> bool,
) -> (Log, mmsb::Result<plan::ApplyPlan>) {
    let planner = Planner::new(ckpt.head(), selected);
    let (log, decoded) = match how {
        Opening::Checked => (Log::open(&[log_path]).unwrap(), None),
        Opening::Deferred => (Log::open_deferred(&[log_path]).unwrap(), None),
        Opening::FromPieces => {
            let paths = mmsb::format::log::expand_paths(&[log_path]).unwrap();
            let walked: Vec<std::sync::Mutex<Vec<plan::DecodedPiece>>> = paths
                .iter()
                .map(|p| {
                    let bytes = std::fs::read(p).unwrap();
                    let pieces = bytes
                        .chunks(PIECE)
                        .enumerate()
                        .map(|(k, b)| planner.walk_piece(b, (k * PIECE) as u64))
                        .collect();
                    std::sync::Mutex::new(pieces)
                })
                .collect();
            let take = |i: usize| std::mem::take(&mut *walked[i].lock().unwrap());
            let (log, decoded) = planner.open_log_from_pieces(&paths, &take).unwrap();
            (log, Some(decoded))
        }
    };
    let bases = plan::segment_bases(&log);
    let planned = planner.plan(&log, decoded, &bases, limit, &|id, _| selected(id));
    (log, planned)
}

/// Pages of the checkpoint for which `selected` holds, after running the plan on the host.
fn run_on_host(
    ckpt: &Checkpoint,
    log_path: &Path,
    how: Opening,
    limit: ReplayLimit,
    selected: &dyn Fn(u64) -> bool,
) -> (HashMap<u64, (u64, Vec<u8>)>, plan::ApplyPlan) {
    let mut pages: HashMap<u64, Vec<u8>> = ckpt
        .pages()
        .iter()
        .filter(|p| selected(p.id))
        .map(|p| (p.id, ckpt.page_bytes(p).to_vec()))
        .collect();
    let (log, planned) = open_and_plan(ckpt, log_path, how, limit, selected);
    let p = planned.expect("the generated log plans");
    let log_bytes: Vec<u8> = log.segments().iter().flat_map(|s| s.bytes().iter().copied()).collect();
    for step in &p.steps {
        match step {
            Step::Writes(b) => plan::run_batch_on_host(b, &mut pages, &log_bytes),
            Step::Create { page_id, len, .. } => {
                pages.insert(*page_id, vec![0; *len as usize]);
            }
            Step::Delete { page_id } => {
                pages.remove(page_id);
            }
            Step::Resize { page_id, len } => pages.get_mut(page_id).unwrap().resize(*len as usize, 0),
        }
    }
    let epochs: HashMap<u64, u64> = ckpt
        .pages()
        .iter()
        .map(|p| (p.id, p.epoch))
        .chain(p.epochs.iter().copied())
        .collect();
    let out = pages.into_iter().map(|(id, data)| (id, (epochs[&id], data))).collect();
    (out, p)
}

/// Plans the generated log opened each way and checks the result against the CPU replay.
/// Returns, for each opening, whether records were decoded during the scan.
fn check_against_cpu(o: &GenOptions, limit: ReplayLimit, every: u64) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt_path, log_path) = (dir.path().join("a.ckpt"), dir.path().join("a.log"));
    generate(&ckpt_path, Some(&log_path), o).unwrap();
    let ckpt = Checkpoint::open(&ckpt_path).unwrap();
    let selected = |id: u64| id.is_multiple_of(every);
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Trust).unwrap();
    let cpu_summary = cpu.replay(&Log::open(&[&log_path]).unwrap(), limit).unwrap();
    let mut decoded_in_scan = Vec::new();
    for how in OPENINGS {
        let (pages, p) = run_on_host(&ckpt, &log_path, how, limit, &selected);
        assert_eq!(p.summary, cpu_summary, "summary, log opened {how:?}");
        decoded_in_scan.push(p.decoded_in_scan > 0);
        let expected: HashMap<u64, (u64, Vec<u8>)> = cpu
            .pages()
            .filter(|(id, _)| selected(*id))
            .map(|(id, pg)| (id, (pg.epoch, pg.data().to_vec())))
            .collect();
        assert_eq!(pages.len(), expected.len());
        for (id, want) in &expected {
            let got = &pages[id];
            assert_eq!(got.0, want.0, "epoch of page {id}");
            assert!(
                got.1 == want.1,
                "bytes of page {id} differ ({} vs {} bytes)",
                got.1.len(),
                want.1.len()
            );
        }
    }
    decoded_in_scan
}

fn mixes() -> impl Strategy<Value = Mix> {
    prop_oneof![
        Just(Mix::default()),
        Just(Mix {
            full: 1,
            sparse: 4,
            masked: 4,
            create: 1,
            resize: 1,
            delete: 1,
            fill: 2,
        }),
        Just(Mix {
            full: 0,
            sparse: 1,
            masked: 1,
            create: 0,
            resize: 0,
            delete: 0,
            fill: 1,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_run_on_the_host_equals_the_cpu_replay(
        seed in any::<u64>(),
        mix in mixes(),
        zstd in any::<bool>(),
        small_pages in any::<bool>(),
        limit in prop_oneof![Just(0u8), Just(1), Just(2)],
        every in prop_oneof![Just(1u64), Just(2)],
    ) {
        let o = GenOptions {
            seed,
            pages: if small_pages { 40 } else { 6 },
            // Pages of several tiles, so that writes cross tile boundaries.
            total_size: if small_pages { 64 << 10 } else { 3 << 20 },
            size_dist: SizeDist::LogUniform,
            deltas: 400,
            mix,
            delta_bytes: (1, 200_000),
            max_ranges: 4,
            hot_fraction: 0.3,
            hot_weight: 0.9,
            segment_size: 256 << 10,
            compression: if zstd { Compression::Zstd(1) } else { Compression::None },
            ..GenOptions::default()
        };
        let limit = match limit {
            0 => ReplayLimit::default(),
            1 => ReplayLimit { to_seq: Some(seed % 300 + 1), to_epoch: None },
            _ => ReplayLimit { to_seq: None, to_epoch: Some(seed % 200 + 1) },
        };
        check_against_cpu(&o, limit, every);
    }
}

#[test]
fn overlapping_writes_in_one_tile_land_in_sequence_order() {
    // One small page written over and over: every write shares tiles with many others.
    let o = GenOptions {
        seed: 7,
        pages: 1,
        total_size: 200_000,
        deltas: 2000,
        mix: Mix {
            full: 1,
            sparse: 6,
            masked: 3,
            fill: 2,
            ..Mix::default()
        },
        delta_bytes: (1, 70_000),
        max_ranges: 8,
        ..GenOptions::default()
    };
    check_against_cpu(&o, ReplayLimit::default(), 1);
}

/// Records decoded as the pieces of the log are read plan exactly as records decoded afterwards:
/// both equal the CPU replay. A log with structural records, or a sequence limit that cuts the
/// log, is decoded afterwards.
#[test]
fn records_decoded_as_the_log_is_read_plan_as_a_second_pass_does() {
    let writes_only = Mix {
        full: 1,
        sparse: 6,
        masked: 3,
        create: 0,
        resize: 0,
        delete: 0,
        fill: 1,
    };
    let o = GenOptions {
        seed: 11,
        pages: 24,
        total_size: 4 << 20,
        deltas: 3000,
        mix: writes_only,
        delta_bytes: (1, 8000),
        full_max: 64 << 10,
        // Several segments of many pieces each; zstd for decompressed payloads.
        segment_size: 2 << 20,
        compression: Compression::Auto,
        ..GenOptions::default()
    };
    let whole = ReplayLimit::default();
    let to_epoch = ReplayLimit {
        to_seq: None,
        to_epoch: Some(1500),
    };
    let to_seq = ReplayLimit {
        to_seq: Some(2000),
        to_epoch: None,
    };
    let in_scan = [false, false, true];
    assert_eq!(check_against_cpu(&o, whole, 1), in_scan);
    assert_eq!(check_against_cpu(&o, whole, 3), in_scan, "a page selection");
    assert_eq!(check_against_cpu(&o, to_epoch, 1), in_scan, "an epoch limit");
    assert_eq!(
        check_against_cpu(&o, to_seq, 1),
        [false; 3],
        "a sequence limit cutting the log"
    );
    let structural = GenOptions {
        mix: Mix {
            create: 1,
            resize: 1,
            delete: 1,
            ..writes_only
        },
        ..o
    };
    assert_eq!(
        check_against_cpu(&structural, whole, 1),
        [false; 3],
        "structural records"
    );
}

/// A log whose `bad` record breaks a rule: the plan fails with the CPU replay's error, at the
/// same record, or stops where the CPU stops when an epoch limit comes first.
#[test]
fn a_rejected_record_gives_the_cpu_replays_error() {
    use mmsb::format::log::{Durability, LogOptions, LogWriter};
    use mmsb::format::record::{Delta, Op};
    let dir = tempfile::tempdir().unwrap();
    let ckpt_path = dir.path().join("a.ckpt");
    let o = GenOptions {
        // Page 4 is written only by the records a case adds.
        pages: 5,
        total_size: 1 << 20,
        size_dist: SizeDist::Equal,
        deltas: 0,
        ..GenOptions::default()
    };
    generate(&ckpt_path, None, &o).unwrap();
    let ckpt = Checkpoint::open(&ckpt_path).unwrap();
    let ids: Vec<u64> = ckpt.pages().iter().map(|p| p.id).collect();
    let data = [7u8; 100];
    let write = |page_id: u64, epoch: u64, offset: u64| Delta {
        page_id,
        epoch,
        timestamp_ns: 1,
        source: "t".into(),
        op: Op::Sparse(vec![(offset, &data[..])]),
    };
    let cases: Vec<(&str, Delta, Option<u64>)> = vec![
        ("epoch does not advance", write(ids[1], 1, 0), None),
        (
            // Page 4's only other record is thousands of records earlier: the two are in
            // different parallel chunks, so the sequential pass must compare across them.
            "epoch goes back across chunks",
            write(ids[4], 4000, 0),
            None,
        ),
        ("range past the end", write(ids[2], 9000, (1 << 18) - 50), None),
        ("no such page", write(12345, 9000, 0), None),
        ("epoch limit before the bad record", write(ids[1], 1, 0), Some(4000)),
        (
            "epoch limit at the bad record",
            write(ids[2], 99_999, 1 << 20),
            Some(5500),
        ),
    ];
    for (name, bad, to_epoch) in cases {
        let log_path = dir.path().join(format!("{name}.log"));
        let opts = LogOptions {
            segment_size: 1 << 20,
            durability: Durability::Never,
            compression: Compression::None,
        };
        let mut w = LogWriter::create(&log_path, ckpt.state_hash(), 1, opts).unwrap();
        // Enough records before and after for several parallel chunks.
        for i in 0..6000u64 {
            w.append(&write(ids[(i % 4) as usize], 1000 + i, i % 1000)).unwrap();
            if i == 10 {
                w.append(&write(ids[4], 5000, 0)).unwrap();
            }
            if i == 4444 {
                w.append(&bad).unwrap();
            }
        }
        w.finish().unwrap();
        let limit = ReplayLimit { to_seq: None, to_epoch };
        let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Trust).unwrap();
        let cpu_result = cpu.replay(&Log::open(&[&log_path]).unwrap(), limit);
        for how in [Opening::Deferred, Opening::FromPieces] {
            let (_, planned) = open_and_plan(&ckpt, &log_path, how, limit, &|_| true);
            match (&cpu_result, planned) {
                (Err(c), Err(p)) => assert_eq!(p.to_string(), c.to_string(), "{name}, {how:?}"),
                (Ok(c), Ok(p)) => {
                    assert!(to_epoch.is_some(), "{name}: the CPU accepted the log");
                    assert_eq!(&p.summary, c, "{name}, {how:?}");
                    assert_eq!(p.decoded_in_scan > 0, how != Opening::Deferred, "{name}, {how:?}");
                }
                (c, p) => panic!("{name}, {how:?}: CPU {:?}, plan {:?}", c.as_ref().err(), p.err()),
            }
        }
    }
}
