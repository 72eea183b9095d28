//! GPU replay against the CPU replay, byte for byte, on generated workloads. Every test is marked
//! ignored, so a plain `cargo test` lists them as such; scripts/gpu-test.sh runs them with
//! `--include-ignored` and `MMSB_REQUIRE_GPU=1` on a machine with a CUDA device. Run without a
//! device, each test prints "skipped: no CUDA device" and returns, unless `MMSB_REQUIRE_GPU=1`,
//! which makes a missing device a failure.
//!
//! Device memory is poisoned before every load, so a byte the GPU path forgets to write shows.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::{Compression, Log};
use mmsb::gpu::apply::PreparedLog;
use mmsb::gpu::driver::MemoryKind;
use mmsb::gpu::kernels::KernelCode;
use mmsb::gpu::loader::ReadMode;
use mmsb::gpu::store::{DevicePageStore, LoadOptions, PageResidency};
use mmsb::gpu::{Gpu, KernelCompile};
use mmsb::replay::{PageCheck, ReplayLimit, State};
use mmsb::select::PageSelector;
use mmsb::testing::generate::{GenOptions, Mix, SizeDist, generate};

fn gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| match mmsb::gpu::device_count() {
        Ok(n) if n > 0 => Gpu::open(0, KernelCompile::WhileStarting)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
        Ok(_) => Err("no device".into()),
        Err(e) => Err(e.to_string()),
    });
    match g {
        Ok(g) => Some(g.clone()),
        Err(e) if std::env::var("MMSB_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("MMSB_REQUIRE_GPU=1 but no CUDA device can be used: {e}")
        }
        Err(e) if e.contains("no CUDA driver") || e == "no device" => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
        Err(e) => panic!("a CUDA device is present but cannot be used: {e}"),
    }
}

/// 8 pages, 1 MiB, 300 records of every kind the generator mixes by default: quick to apply.
fn small_log() -> GenOptions {
    GenOptions {
        seed: 5,
        pages: 8,
        total_size: 1 << 20,
        deltas: 300,
        ..Default::default()
    }
}

fn workloads() -> Vec<(&'static str, GenOptions)> {
    let all = Mix {
        full: 1,
        sparse: 6,
        masked: 3,
        create: 1,
        resize: 1,
        delete: 1,
        fill: 1,
    };
    let mut w = vec![
        (
            "tiny pages, every record kind, hot overlaps",
            GenOptions {
                seed: 1,
                pages: 40,
                total_size: 40_000,
                deltas: 3000,
                mix: all,
                delta_bytes: (1, 300),
                hot_fraction: 0.05,
                hot_weight: 0.95,
                ..Default::default()
            },
        ),
        (
            "log-uniform pages 1 B.. MiB, zstd",
            GenOptions {
                seed: 2,
                pages: 200,
                total_size: 48 << 20,
                deltas: 5000,
                mix: all,
                compression: Compression::Auto,
                segment_size: 1 << 20,
                ..Default::default()
            },
        ),
        (
            "sparse only, no overlap expected",
            GenOptions {
                seed: 3,
                pages: 16,
                size_dist: SizeDist::Equal,
                total_size: 64 << 20,
                deltas: 20000,
                mix: Mix {
                    full: 0,
                    sparse: 1,
                    masked: 0,
                    create: 0,
                    resize: 0,
                    delete: 0,
                    fill: 0,
                },
                hot_fraction: 1.0,
                ..Default::default()
            },
        ),
        (
            "masked heavy, large spans",
            GenOptions {
                seed: 4,
                pages: 8,
                total_size: 8 << 20,
                deltas: 2000,
                mix: Mix {
                    full: 1,
                    sparse: 1,
                    masked: 8,
                    create: 0,
                    resize: 0,
                    delete: 0,
                    fill: 0,
                },
                delta_bytes: (1, 64 << 10),
                ..Default::default()
            },
        ),
    ];
    if std::env::var("MMSB_GPU_BIG").is_ok() {
        w.push((
            "pages up to hundreds of MiB",
            GenOptions {
                seed: 5,
                pages: 6,
                total_size: 900 << 20,
                deltas: 20000,
                mix: all,
                full_max: 8 << 20,
                ..Default::default()
            },
        ));
    }
    w
}

/// Applies the whole log at `lg` to `store` the way `mmsb bench deltas` does: the files opened
/// while they upload, their record checksums checked on the device.
fn apply_files(
    store: &mut DevicePageStore,
    lg: &Path,
    ckpt: &Checkpoint,
) -> mmsb::Result<(mmsb::replay::ReplaySummary, mmsb::gpu::apply::ApplyStats)> {
    store.apply_log_files(&[lg.to_owned()], ckpt.head(), ReplayLimit::default(), &|_, _| true)
}

/// How a test applies a log to a loaded store.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// `apply_log_files`: opened from the pieces its upload reads.
    Files,
    /// `apply_prepared`: opened and planned before the store was loaded, as `mmsb replay` does
    /// while CUDA starts.
    Prepared,
}

/// Applies the whole log at `lg` to `store` via `via`, every page of the checkpoint in the store.
fn apply_via(
    via: Via,
    store: &mut DevicePageStore,
    lg: &Path,
    ckpt: &Checkpoint,
) -> mmsb::Result<(mmsb::replay::ReplaySummary, mmsb::gpu::apply::ApplyStats)> {
    match via {
        Via::Files => apply_files(store, lg, ckpt),
        Via::Prepared => {
            let log = Log::open_deferred(&[lg])?;
            let prepared = PreparedLog::new(&log, ckpt.head(), &|_| true, ReplayLimit::default(), &|_, _| true);
            store.apply_prepared(&prepared)
        }
    }
}

/// Generates a workload, replays it on the CPU and on the GPU (poisoned, the log applied via
/// `via`), compares every page.
fn check_workload(gpu: &Arc<Gpu>, dir: &Path, name: &str, o: &GenOptions, opts: &LoadOptions, via: Via) {
    let ck = dir.join(format!("{}.ckpt", o.seed));
    let lg = dir.join(format!("{}.log", o.seed));
    if !ck.exists() {
        generate(&ck, Some(&lg), o).unwrap();
    }
    let ckpt = Checkpoint::open(&ck).unwrap();
    let log = Log::open(&[&lg]).unwrap();
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&log, ReplayLimit::default()).unwrap();

    let (mut store, loaded) = DevicePageStore::load(gpu, &ckpt, &|_| true, opts).unwrap();
    store
        .verify_against(&ckpt)
        .unwrap_or_else(|e| panic!("{name}: loaded bytes: {e}"));
    // A load that pinned the file mapping keeps its pieces pinned until they are let go (or the
    // store drops); the pages stay usable after. Without a read mode asked for, the loader picks
    // one: a process's first warm load of a small file pins the mapping.
    let pinned = loaded.read_mode == Some(ReadMode::PinMapping) && opts.memory != MemoryKind::HostMapped;
    assert_eq!(store.release_pinned_source(), pinned, "{name}: pinned pieces kept");
    assert!(!store.release_pinned_source(), "{name}: released once");
    // The log is opened without its record checksums, which the device checks.
    let (summary, stats) = apply_via(via, &mut store, &lg, &ckpt).unwrap();
    assert_eq!(stats.planned_before, via == Via::Prepared, "{name}");
    assert_eq!(summary.records, o.deltas, "{name}");
    let ids: Vec<u64> = store.page_ids().collect();
    let cpu_ids: Vec<u64> = cpu.pages().map(|(id, _)| id).collect();
    assert_eq!(ids, cpu_ids, "{name}: page sets differ");
    for (id, page) in cpu.pages() {
        let got = store.read_page(id).unwrap();
        if got != page.data() {
            let first = got.iter().zip(page.data()).position(|(a, b)| a != b);
            panic!(
                "{name}: page {id} differs (len {} vs {}), first differing byte {first:?}",
                got.len(),
                page.data().len()
            );
        }
        assert_eq!(store.page_info(id).unwrap().0, page.epoch, "{name}: epoch of page {id}");
    }
    assert_eq!(store.state_hash().unwrap(), cpu.state_hash(), "{name}: GPU state hash");
    // The upload's copy threads decode the records of a log given as files as they read it,
    // unless it has structural records.
    if stats.structural > 0 || via == Via::Prepared {
        assert_eq!(stats.decoded_in_scan, 0, "{name}: structural records");
    } else {
        assert!(stats.decoded_in_scan > 0, "{name}: nothing decoded as the log was read");
    }
    eprintln!(
        "{name} ({via:?}): {} pages equal; {} copies, {} masked, {} tiles, {} structural, {} records decoded in the scan",
        cpu.pages().len(),
        stats.copies,
        stats.masked,
        stats.tiles,
        stats.structural,
        stats.decoded_in_scan
    );
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_kernels_are_compiled_for_the_card_while_starting_or_when_first_needed() {
    let Some(gpu) = gpu() else { return };
    // The crate carries CUBINs for the common architectures, and the driver loads the card's:
    // neither NVRTC's fallback compile nor PTX (compiled by the driver at load, slow with its
    // cache empty) should be needed there.
    let (major, minor) = gpu.ctx.compute_capability().unwrap();
    let cubin = if mmsb::gpu::kernels::BUILT_IN_ARCHS.contains(&(major, minor)) {
        KernelCode::BuiltIn(major, minor)
    } else {
        KernelCode::Cubin(major, minor)
    };
    assert_eq!(gpu.kernel_code(), Some(cubin));
    eprintln!("kernels: {cubin}");

    // Opened for loading only: a load runs no kernel, and the first apply compiles them.
    let lazy = Arc::new(Gpu::open(0, KernelCompile::WhenNeeded).unwrap());
    assert_eq!(lazy.kernel_code(), None);
    let dir = tempfile::tempdir().unwrap();
    let (ck, lg) = (dir.path().join("k.ckpt"), dir.path().join("k.log"));
    generate(&ck, Some(&lg), &small_log()).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let (mut store, _) = DevicePageStore::load(&lazy, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    assert_eq!(lazy.kernel_code(), None, "loading pages needs no kernel");
    assert_eq!(lazy.compile_ms(), 0.0);
    let log = Log::open(&[&lg]).unwrap();
    store
        .apply_log(&log, ckpt.head(), ReplayLimit::default(), &|_, _| true)
        .unwrap();
    assert_eq!(lazy.kernel_code(), Some(cubin), "applying deltas compiled the kernels");
    assert!(lazy.compile_ms() > 0.0);
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&log, ReplayLimit::default()).unwrap();
    assert_eq!(store.state_hash().unwrap(), cpu.state_hash());
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_replay_equals_cpu_replay_on_generated_workloads() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut all = workloads();
    if std::env::var("MMSB_GPU_SMALL").is_ok() {
        all.truncate(1); // under compute-sanitizer, which runs kernels far slower
    }
    for (name, o) in all {
        for via in [Via::Files, Via::Prepared] {
            check_workload(
                &gpu,
                dir.path(),
                name,
                &o,
                &LoadOptions {
                    poison: Some(0xA5),
                    ..Default::default()
                },
                via,
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_replay_is_exact_in_every_memory_kind_and_read_mode() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (name, mut o) = workloads().swap_remove(1);
    if std::env::var("MMSB_GPU_SMALL").is_ok() {
        // Under compute-sanitizer: nine loads of the full workload took over six minutes under
        // racecheck, and still over three with 500 records (poisoning and hashing 48 MiB nine
        // times). The memory kinds and read modes are what this test is about; the kernels get
        // the whole workloads in the test above.
        o.deltas = 500;
        o.total_size = 4 << 20;
    }
    for memory in [MemoryKind::Device, MemoryKind::Unified, MemoryKind::HostMapped] {
        for read_mode in [ReadMode::Buffered, ReadMode::PinMapping, ReadMode::Direct] {
            let opts = LoadOptions {
                memory,
                read_mode: Some(read_mode),
                poison: Some(0x5A),
                ..Default::default()
            };
            check_workload(
                &gpu,
                dir.path(),
                &format!("{name} [{memory:?}, {read_mode:?}]"),
                &o,
                &opts,
                Via::Files,
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_selected_pages_load_alone_and_get_only_their_deltas() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let o = GenOptions {
        seed: 9,
        pages: 30,
        total_size: 4 << 20,
        deltas: 2000,
        ..Default::default()
    };
    let ck = dir.path().join("s.ckpt");
    let lg = dir.path().join("s.log");
    generate(&ck, Some(&lg), &o).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let log = Log::open(&[&lg]).unwrap();
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&log, ReplayLimit::default()).unwrap();
    let sel = PageSelector::parse(&["3-5", "page.2?"]).unwrap();
    let (mut store, stats) = DevicePageStore::load(
        &gpu,
        &ckpt,
        &|p| sel.matches(p.id, &p.meta),
        &LoadOptions {
            poison: Some(0xEE),
            ..Default::default()
        },
    )
    .unwrap();
    let expect: Vec<u64> = ckpt
        .pages()
        .iter()
        .filter(|p| sel.matches(p.id, &p.meta))
        .map(|p| p.id)
        .collect();
    assert_eq!(store.page_ids().collect::<Vec<_>>(), expect);
    assert_eq!(
        stats.page_bytes,
        ckpt.pages()
            .iter()
            .filter(|p| sel.matches(p.id, &p.meta))
            .map(|p| p.len)
            .sum::<u64>()
    );
    assert!(!store.loaded_all());
    store.verify_against(&ckpt).unwrap();
    store
        .apply_log(&log, ckpt.head(), ReplayLimit::default(), &|id, m| sel.matches(id, m))
        .unwrap();
    for &id in &expect {
        assert_eq!(store.read_page(id).unwrap(), cpu.page(id).unwrap().data(), "page {id}");
    }

    // Planned for the selection before the store is loaded, as `mmsb replay --pages` does.
    let select = |p: &mmsb::format::checkpoint::PageEntry| sel.matches(p.id, &p.meta);
    let keep = |id: u64, m: &mmsb::page::PageMeta| sel.matches(id, m);
    let deferred = Log::open_deferred(&[&lg]).unwrap();
    let prepared = PreparedLog::new(&deferred, ckpt.head(), &select, ReplayLimit::default(), &keep);
    let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &select, &LoadOptions::default()).unwrap();
    let (_, stats) = store.apply_prepared(&prepared).unwrap();
    assert!(stats.planned_before);
    assert_eq!(store.page_ids().collect::<Vec<_>>(), expect);
    for &id in &expect {
        assert_eq!(store.read_page(id).unwrap(), cpu.page(id).unwrap().data(), "page {id}");
    }

    // A plan made for other pages than the store holds is not used: the log is planned again.
    let prepared = PreparedLog::new(&deferred, ckpt.head(), &select, ReplayLimit::default(), &|_, _| true);
    let (mut all, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let (_, stats) = all.apply_prepared(&prepared).unwrap();
    assert!(!stats.planned_before, "planned again for every page");
    assert_eq!(all.state_hash().unwrap(), cpu.state_hash());
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_pages_can_be_evicted_restored_and_written_back() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let o = GenOptions {
        seed: 11,
        pages: 12,
        total_size: 1 << 20,
        deltas: 500,
        ..Default::default()
    };
    let ck = dir.path().join("e.ckpt");
    let lg = dir.path().join("e.log");
    generate(&ck, Some(&lg), &o).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let before = store.read_page(4).unwrap();
    let h = store.page(4).unwrap();
    assert_eq!(h.len(), before.len() as u64);
    assert_eq!(h.device(), 0);
    assert!(h.device_ptr() != 0);
    store.evict(4).unwrap();
    assert_eq!(store.residency(4), Some(PageResidency::Evicted));
    assert!(store.page(4).is_none());
    assert_eq!(
        store.read_page(4).unwrap(),
        before,
        "evicted page keeps its bytes on the host"
    );
    store.restore(4).unwrap();
    assert_eq!(store.residency(4), Some(PageResidency::Device));
    assert_eq!(store.read_page(4).unwrap(), before);
    let log = Log::open(&[&lg]).unwrap();
    store
        .apply_log(&log, ckpt.head(), ReplayLimit::default(), &|_, _| true)
        .unwrap();
    let out = dir.path().join("out.ckpt");
    store.write_checkpoint(&out, Default::default(), &[]).unwrap();
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&log, ReplayLimit::default()).unwrap();
    assert_eq!(Checkpoint::open(&out).unwrap().state_hash(), cpu.state_hash());
}

/// A log opened without its record checksums has them checked on the device: a damaged record
/// in the middle fails the apply with the CPU's verdict, and a damaged last record is a torn
/// tail left out, as on the CPU.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_checks_record_checksums_and_gives_the_cpu_verdict() {
    let Some(gpu) = gpu() else { return };
    let small = small_log();
    // Full writes of about 2 MiB: payloads the device checks in several pieces.
    let big = GenOptions {
        seed: 6,
        pages: 2,
        total_size: 4 << 20,
        size_dist: SizeDist::Equal,
        deltas: 40,
        mix: Mix {
            full: 1,
            sparse: 0,
            masked: 0,
            ..Mix::default()
        },
        full_max: 4 << 20,
        segment_size: 1 << 30,
        ..Default::default()
    };
    for o in [small, big] {
        check_damaged_records(&gpu, &o);
    }
}

fn check_damaged_records(gpu: &Arc<Gpu>, o: &GenOptions) {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.ckpt");
    let lg = dir.path().join("c.log");
    generate(&ck, Some(&lg), o).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let seg = mmsb::format::log::segment_path(&lg, 0);
    let good = std::fs::read(&seg).unwrap();
    let frames = Log::open(&[&lg]).unwrap().segments()[0].frames().to_vec();
    assert_eq!(frames.len() as u64, o.deltas, "one segment");
    let flip = |frame: usize| {
        let mut b = good.clone();
        let at = frames[frame].payload_offset() as usize + frames[frame].payload_len as usize / 2;
        b[at] ^= 0x40;
        std::fs::write(&seg, &b).unwrap();
    };

    // The largest record before the last one.
    let mid = (1..frames.len() - 1).max_by_key(|&i| frames[i].payload_len).unwrap();
    flip(mid);
    let cpu_err = Log::open(&[&lg]).unwrap().check().unwrap_err().to_string();
    let deferred = Log::open_deferred(&[&lg]).unwrap();
    assert!(
        deferred.problems().is_empty(),
        "the header scan cannot see a payload flip"
    );
    let (mut store, _) = DevicePageStore::load(gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let err = store
        .apply_log(&deferred, ckpt.head(), ReplayLimit::default(), &|_, _| true)
        .unwrap_err();
    assert_eq!(err.to_string(), cpu_err);
    // Planned before the load, from the damaged bytes: the device's check finds the damage
    // before the plan runs, and the CPU's verdict follows.
    let (mut store, _) = DevicePageStore::load(gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let err = apply_via(Via::Prepared, &mut store, &lg, &ckpt).unwrap_err();
    assert_eq!(err.to_string(), cpu_err, "planned before the load");
    let loaded = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap().state_hash();
    assert_eq!(store.state_hash().unwrap(), loaded, "nothing written before the checks");

    flip(frames.len() - 1);
    let checked = Log::open(&[&lg]).unwrap();
    assert!(checked.torn_tail().is_some());
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    let cpu_summary = cpu.replay(&checked, ReplayLimit::default()).unwrap();
    let (mut store, _) = DevicePageStore::load(gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let (summary, _) = store
        .apply_log(
            &Log::open_deferred(&[&lg]).unwrap(),
            ckpt.head(),
            ReplayLimit::default(),
            &|_, _| true,
        )
        .unwrap();
    assert_eq!(summary, cpu_summary);
    assert_eq!(summary.records, o.deltas - 1);
    assert_eq!(store.state_hash().unwrap(), cpu.state_hash());
    let (mut store, _) = DevicePageStore::load(gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
    let (summary, _) = apply_via(Via::Prepared, &mut store, &lg, &ckpt).unwrap();
    assert_eq!(summary, cpu_summary, "planned before the load");
    assert_eq!(store.state_hash().unwrap(), cpu.state_hash());
}

/// A log of many segment files goes to the device in one pipeline, each file's checksums
/// checked once it has arrived and the log is open (the files that arrived meanwhile in one
/// launch), while later files upload: a damaged record in a middle segment
/// gives the CPU's error and leaves the store as loaded; undamaged, the result equals the CPU
/// replay.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_checks_checksums_file_by_file_across_segments() {
    let Some(gpu) = gpu() else { return };
    let o = GenOptions {
        seed: 8,
        pages: 12,
        total_size: 2 << 20,
        deltas: 500,
        segment_size: 32 << 10,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("s.ckpt");
    let lg = dir.path().join("s.log");
    generate(&ck, Some(&lg), &o).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let log = Log::open(&[&lg]).unwrap();
    let segments = log.segments().len();
    assert!(segments >= 8, "{segments} segments: too few to arrive one by one");

    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    let cpu_summary = cpu.replay(&log, ReplayLimit::default()).unwrap();
    drop(log);
    for via in [Via::Files, Via::Prepared] {
        let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
        let (summary, _) = apply_via(via, &mut store, &lg, &ckpt).unwrap();
        assert_eq!(summary, cpu_summary, "{via:?}");
        assert_eq!(store.state_hash().unwrap(), cpu.state_hash(), "{via:?}");
    }

    // Damage the largest record of the segment in the middle.
    let opened = Log::open(&[&lg]).unwrap();
    let middle = &opened.segments()[segments / 2];
    let (seg, frames) = (middle.path().to_owned(), middle.frames().to_vec());
    drop(opened);
    let f = frames.iter().max_by_key(|f| f.payload_len).unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[f.payload_offset() as usize + f.payload_len as usize / 2] ^= 0x10;
    std::fs::write(&seg, &b).unwrap();
    let cpu_err = Log::open(&[&lg]).unwrap().check().unwrap_err().to_string();
    let loaded = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap().state_hash();
    for via in [Via::Files, Via::Prepared] {
        let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
        let err = apply_via(via, &mut store, &lg, &ckpt).unwrap_err();
        assert_eq!(err.to_string(), cpu_err, "{via:?}");
        assert_eq!(
            store.state_hash().unwrap(),
            loaded,
            "{via:?}: nothing written before the checks"
        );
    }
    println!(
        "{segments} segments: equal; damaged record in segment {} refused as on the CPU",
        segments / 2
    );
}

/// Sharded and replicated restores on two devices (two contexts of device 0 where there is only
/// one GPU): each device's pages equal the CPU replay's; shards cover every page once and their
/// combined hash is the CPU's; replicas all hold every page and agree.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_sharded_and_replicated_restores_equal_the_cpu_replay() {
    use mmsb::replay::{Device, Placement, ReplayOptions, ReplayReport};
    let Some(_) = gpu() else { return };
    let count = mmsb::gpu::device_count().unwrap();
    let ordinals = if count >= 2 { vec![0, 1] } else { vec![0, 0] };
    let dir = tempfile::tempdir().unwrap();
    let o = GenOptions {
        seed: 31,
        pages: 40,
        total_size: 24 << 20,
        deltas: 600,
        mix: Mix {
            full: 1,
            sparse: 6,
            masked: 2,
            create: 1,
            resize: 0,
            delete: 1,
            fill: 0,
        },
        compression: Compression::Auto,
        ..Default::default()
    };
    let (ck, lg) = (dir.path().join("m.ckpt"), dir.path().join("m.log"));
    generate(&ck, Some(&lg), &o).unwrap();
    let ckpt = Checkpoint::open(&ck).unwrap();
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&Log::open(&[&lg]).unwrap(), ReplayLimit::default()).unwrap();
    for placement in [Placement::Shard, Placement::Replicate] {
        let opts = ReplayOptions {
            device: Device::Several(ordinals.clone()),
            placement,
            verify: true,
            ..Default::default()
        };
        let replayed = mmsb::replay::run(&ck, std::slice::from_ref(&lg), &opts).unwrap();
        let (ReplayReport::Several(report), stores) = (replayed.report, replayed.device_pages) else {
            panic!("several devices give a several-device report")
        };
        assert_eq!(
            report.state_hash,
            Some(cpu.state_hash()),
            "{placement:?}: whole-state hash"
        );
        let mut seen = std::collections::BTreeMap::new();
        for (i, store) in stores.iter().enumerate() {
            assert_eq!(store.gpu().ordinal, ordinals[i]);
            for id in store.page_ids() {
                let page = cpu
                    .page(id)
                    .unwrap_or_else(|| panic!("{placement:?}: page {id} not in the CPU state"));
                assert_eq!(
                    store.read_page(id).unwrap(),
                    page.data(),
                    "{placement:?}: device {i} page {id}"
                );
                assert_eq!(store.page(id).unwrap().device(), ordinals[i]);
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        let want = match placement {
            Placement::Shard => 1,
            Placement::Replicate => stores.len(),
        };
        assert_eq!(seen.len(), cpu.pages().len(), "{placement:?}: every page somewhere");
        assert!(seen.values().all(|n| *n == want), "{placement:?}: copies per page");
        if placement == Placement::Replicate {
            assert_eq!(report.replicas_agree, Some(true));
        }
        eprintln!(
            "{placement:?} on {:?}: equal; {}",
            ordinals,
            report
                .devices
                .iter()
                .map(|d| format!("{} {} pages {} bytes", d.device, d.pages, d.page_bytes))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_replay_of_a_propagated_log_applies_the_outputs_and_passes_graph_records() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ck, lg) = (dir.path().join("g.ckpt"), dir.path().join("g.log"));
    let o = GenOptions {
        seed: 11,
        pages: 4000,
        total_size: 4000 * 256,
        deltas: 300,
        mix: Mix {
            full: 1,
            sparse: 3,
            ..Mix::default()
        },
        graph: Some(mmsb::testing::propagation::GraphShape::default()),
        ..Default::default()
    };
    generate(&ck, Some(&lg), &o).unwrap();
    let named = mmsb::propagate::Derivations::new();
    let r = mmsb::ops::derive::propagate(&ck, &lg, false, &named, mmsb::format::lock::LockWait::Fail).unwrap();
    assert!(r.changed > 0);
    let ckpt = Checkpoint::open(&ck).unwrap();
    let log = Log::open(&[&lg]).unwrap();
    let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
    cpu.replay(&log, ReplayLimit::default()).unwrap();
    for via in [Via::Files, Via::Prepared] {
        let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default()).unwrap();
        let (summary, _) = apply_via(via, &mut store, &lg, &ckpt).unwrap();
        assert_eq!(
            summary.skipped_unknown, 0,
            "{via:?}: graph records are known, not unknown"
        );
        assert_eq!(summary.records, 300 + r.changed, "{via:?}: the writes and the outputs");
        assert_eq!(store.state_hash().unwrap(), cpu.state_hash(), "{via:?}");
    }
}

/// Device memory holding `bytes`, for pages a caller owns.
fn device_copy(gpu: &Arc<Gpu>, bytes: &[u8]) -> mmsb::gpu::driver::DeviceBuffer {
    let buf = mmsb::gpu::driver::DeviceBuffer::alloc(&gpu.ctx, bytes.len().max(1), MemoryKind::Device).unwrap();
    mmsb::gpu::driver::copy_h2d_sync(&gpu.stream, buf.ptr(), bytes).unwrap();
    buf
}

fn device_bytes(gpu: &Arc<Gpu>, buf: &mmsb::gpu::driver::DeviceBuffer, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    mmsb::gpu::driver::copy_d2h(&gpu.ctx, buf.ptr(), &mut out).unwrap();
    out
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_sync_log_steps_apply_onto_device_memory_the_caller_owns() {
    use mmsb::ops::sync::{ChangedPage, HeldPage, SeqRange, StepOptions, append_delta, apply_to_device, create_log};
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    // Three tensors, one of an odd length; five steps of scattered and clustered changes.
    let mut states: Vec<Vec<Vec<u8>>> = vec![vec![
        (0..300_000u32).map(|i| (i * 7) as u8).collect(),
        vec![9u8; 4099],
        (0..65_536u32).map(|i| (i >> 3) as u8).collect(),
    ]];
    let held: Vec<HeldPage> = ["a", "b", "c"]
        .iter()
        .zip(&states[0])
        .map(|(n, b)| HeldPage {
            name: n.to_string(),
            dtype: None,
            shape: Vec::new(),
            len: b.len() as u64,
        })
        .collect();
    let with_crc: Vec<(HeldPage, u32)> = held
        .iter()
        .zip(&states[0])
        .map(|(h, b)| (h.clone(), mmsb::format::crc32c(b)))
        .collect();
    create_log(&log, &with_crc).unwrap();
    for step in 1..=5u32 {
        let mut next = states.last().unwrap().clone();
        for k in 0..40 * step as usize {
            let at = (k * 7919 + step as usize * 131) % next[0].len();
            next[0][at] = next[0][at].wrapping_add(step as u8);
        }
        next[1][step as usize * 700..step as usize * 700 + 100].fill(step as u8);
        next[2][4096 * step as usize..4096 * step as usize + 4096].fill(0xEE);
        let prev = states.last().unwrap();
        let pages: Vec<ChangedPage> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| ChangedPage::whole(n, &prev[i], &next[i]))
            .collect();
        append_delta(&log, &pages, StepOptions::default()).unwrap();
        states.push(next);
    }
    let paths = [log.clone()];
    let bufs: Vec<_> = states[0].iter().map(|b| device_copy(&gpu, b)).collect();
    let ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr()).collect();
    let apply = |from: Option<u64>, to: Option<u64>| {
        // SAFETY: each pointer is its own live device allocation of its page's length.
        unsafe { apply_to_device(&gpu, &paths, &held, &ptrs, SeqRange { from, to }) }
    };
    let on_device = |states: &[Vec<u8>]| -> Vec<Vec<u8>> {
        bufs.iter()
            .zip(states)
            .map(|(b, s)| device_bytes(&gpu, b, s.len()))
            .collect()
    };
    // From the base to step 2 (each step is three records, one per tensor, after the BASE
    // record, seq 1), then step by step from where the last call stopped.
    let first = apply(None, Some(7)).unwrap();
    assert!(first.base_checked);
    assert_eq!(on_device(&states[2]), states[2]);
    let mut from = first.last_seq.unwrap() + 1;
    for (k, want) in states.iter().enumerate().skip(3) {
        let r = apply(Some(from), Some(1 + 3 * k as u64)).unwrap();
        assert_eq!((r.records, r.base_checked), (3, false));
        assert_eq!(&on_device(want), want, "after step {k}");
        from = r.last_seq.unwrap() + 1;
    }
    // Nothing past the end: nothing applied, the position kept.
    let r = apply(Some(from), None).unwrap();
    assert_eq!((r.records, r.last_seq), (0, Some(from - 1)));
    // Pages that are not at the base, applied from the start: named, and left as they were.
    let e = apply(None, None).unwrap_err();
    assert!(
        e.to_string().contains("\"a\" does not hold the log's base bytes"),
        "{e}"
    );
    assert_eq!(on_device(&states[5]), states[5]);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-test.sh runs it with --include-ignored"]
fn gpu_watch_keeps_a_device_copy_current_as_the_log_grows() {
    use mmsb::format::log::{LogOptions, LogWriter};
    use mmsb::format::record::{Delta, Op};
    use mmsb::ops::watch::DeviceMirror;
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ck, lg) = (dir.path().join("w.ckpt"), dir.path().join("w.log"));
    let o = small_log();
    generate(&ck, Some(&lg), &o).unwrap();
    let mut mirror = DeviceMirror::start(&ck, std::slice::from_ref(&lg), 0, Some(gpu.clone())).unwrap();
    let first = mirror.follow().unwrap();
    assert_eq!(first.records_applied, o.deltas);
    assert_eq!(first.device, "cuda:0");
    assert!(first.memory_used_bytes >= first.bytes_resident && first.memory_total_bytes > 0);
    let cpu_state = |lg: &Path| {
        let ckpt = Checkpoint::open(&ck).unwrap();
        let log = Log::open(&[lg]).unwrap();
        let mut cpu = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        cpu.replay(&log, ReplayLimit::default()).unwrap();
        cpu.pages()
            .map(|(id, p)| (id, p.epoch, p.data().to_vec()))
            .collect::<Vec<_>>()
    };
    let before = cpu_state(&lg);
    assert_eq!(first.pages_resident, before.len() as u64);
    // Three groups of writes to every page that has bytes, appended while the copy exists.
    let written: Vec<_> = before.iter().filter(|(_, _, data)| !data.is_empty()).collect();
    let mut w = LogWriter::open(&lg, LogOptions::default()).unwrap();
    let bytes = [0x5au8; 40];
    for step in 1..=3u64 {
        w.begin_group().unwrap();
        for (id, epoch, data) in &written {
            let at = (step * 977 + id * 31) % data.len() as u64;
            let n = (data.len() as u64 - at).min(40) as usize;
            w.append(&Delta {
                page_id: *id,
                epoch: epoch + step,
                timestamp_ns: 0,
                source: "test".into(),
                op: Op::Sparse(vec![(at, &bytes[..n])]),
            })
            .unwrap();
        }
        w.commit_group().unwrap();
    }
    w.finish().unwrap();
    let after = cpu_state(&lg);
    assert_ne!(after, before);
    let followed = mirror.follow().unwrap();
    let appended = 3 * written.len() as u64;
    assert_eq!(followed.records_applied, o.deltas + appended);
    assert_eq!(
        followed.applied_through_seq,
        Some(first.applied_through_seq.unwrap() + appended)
    );
    for (id, epoch, data) in &after {
        assert_eq!(&mirror.store().read_page(*id).unwrap(), data, "page {id}");
        assert_eq!(mirror.store().page_info(*id).unwrap().0, *epoch, "epoch of page {id}");
    }
    // Nothing new: nothing applied. A record that resizes a page stops the copy, as it was.
    assert_eq!(mirror.follow().unwrap().records_applied, followed.records_applied);
    let mut w = LogWriter::open(&lg, LogOptions::default()).unwrap();
    let (id, epoch, data) = &after[0];
    w.append(&Delta {
        page_id: *id,
        epoch: epoch + 1,
        timestamp_ns: 0,
        source: "test".into(),
        op: Op::Resize {
            len: data.len() as u64 + 8,
        },
    })
    .unwrap();
    w.finish().unwrap();
    let e = mirror.follow().unwrap_err().to_string();
    assert!(e.contains("resizes a page"), "{e}");
    assert_eq!(&mirror.store().read_page(*id).unwrap(), data);
    // The same records in other files (a log replaced in place, as `compact` does) are not the
    // log the copy followed.
    let copy = dir.path().join("copy.log");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&lg).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir_all(&lg).unwrap();
    std::fs::rename(&copy, &lg).unwrap();
    let e = mirror.follow().unwrap_err().to_string();
    assert!(e.contains("no longer continues"), "{e}");
}
