//! `mmsb replay --device cuda:N`: a whole replay on the GPU, with the time of each phase.
//! CUDA starts (and NVRTC compiles) on other threads while this one opens the checkpoint and the
//! log and asks the kernel to read the file ahead, so a cold small file is in the page cache by
//! the time the device is ready.

use crate::timing::ms;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::ReplayOptions;
use super::state::{ReplayLimit, ReplaySummary};
use crate::error::{Error, GpuError, Result};
use crate::format::checkpoint::{Checkpoint, PageEntry};
use crate::format::log::Log;
use crate::gpu::apply::{ApplyStats, PreparedLog};
use crate::gpu::loader::ReadMode;
use crate::gpu::store::{DevicePageStore, LoadOptions, LoadStats};
use crate::gpu::{Gpu, KernelCompile};
use crate::page::{PageMeta, StateHash};

/// Phase timings in milliseconds, from the start of the call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuTimings {
    /// CUDA driver load and context creation (on its own thread, overlapping `open`).
    pub cuda_start: f64,
    /// Getting the kernels' code (an NVRTC compile overlapping the above; about 0 for a built-in
    /// CUBIN); 0 when the run needed none.
    pub nvrtc_compile: f64,
    /// Opening the checkpoint and log (headers, index, log scan with CRCs).
    pub open: f64,
    /// Planning the log's deltas against the checkpoint (decoding, checking, listing tiles),
    /// after `open` and still overlapping the CUDA start; 0 without a log.
    pub log_plan: f64,
    /// Waiting for CUDA after `open` and `log_plan` were done.
    pub wait_for_cuda: f64,
    /// Device allocation of the page pool.
    pub alloc: f64,
    /// File read and host-to-device copy (pipelined together).
    pub read_h2d: f64,
    /// GPU CRC32C of the loaded pages against the checkpoint (`--verify`).
    pub verify: f64,
    /// Log upload, record decoding, kernels.
    pub delta_apply: f64,
    /// State hash from GPU CRCs (`--verify`).
    pub hash: f64,
    /// Writing the output checkpoint.
    pub write: f64,
    /// From the call to the end.
    pub total: f64,
    /// From opening the checkpoint to the last byte on the device (allocation included).
    pub open_to_resident: f64,
}

/// What a GPU replay did.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReplayReport {
    /// `cuda:N`.
    pub device: String,
    /// The device's name.
    pub device_name: String,
    /// Pool memory kind.
    pub memory: String,
    /// What the kernels were (`cubin sm_90 (built in)`, `cubin sm_75` compiled by NVRTC, or the
    /// fallback `ptx compute_80`); `None` when the run needed none (no log, no `--verify`).
    pub kernels: Option<String>,
    /// Pages in the store at the end.
    pub pages: u64,
    /// The load.
    pub load: LoadStats,
    /// The delta application, when a log was given.
    pub apply: Option<ApplyStats>,
    /// Records applied and bytes written.
    pub summary: ReplaySummary,
    /// State hash computed on the GPU (with `--verify`).
    pub state_hash: Option<StateHash>,
    /// Phase timings.
    pub timings_ms: GpuTimings,
    /// Page bytes loaded per second from open to resident, GB/s.
    pub load_gb_per_s: f64,
}

/// Reads `path` into the page cache with several threads (buffered reads at the disk's rate),
/// so that a load after it takes the warm path. A file already in the page cache is left alone:
/// reading it again would only cost the process page faults of buffers and CPU time beside the
/// CUDA start.
fn warm_page_cache(path: &Path, len: u64) {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 4 << 20;
    if crate::gpu::loader::cached_fraction(path, &[(0, len)]) >= 1.0 {
        return;
    }
    let Ok(file) = std::fs::File::open(path) else { return };
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut buf = vec![0u8; CHUNK as usize];
                loop {
                    let at = next.fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
                    if at >= len || file.read_at(&mut buf, at).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Files up to this size are read ahead into the page cache while CUDA starts; larger ones
/// are read with O_DIRECT when cold.
const READ_AHEAD_MAX: u64 = 1 << 30;

/// CUDA's start, on a thread of its own beside the files' opening.
enum CudaStart {
    Running(std::thread::JoinHandle<Result<Gpu>>),
    Started(Arc<Gpu>),
}

impl CudaStart {
    /// Fails now if the start has already failed; otherwise the start, still running or done.
    fn failed_early(self) -> Result<CudaStart> {
        match self {
            CudaStart::Running(h) if h.is_finished() => Ok(CudaStart::Started(CudaStart::Running(h).wait()?)),
            other => Ok(other),
        }
    }

    /// The started device.
    fn wait(self) -> Result<Arc<Gpu>> {
        match self {
            CudaStart::Running(h) => h
                .join()
                .map_err(|_| Error::Gpu(GpuError::Internal("CUDA start thread panicked".into())))?
                .map(Arc::new),
            CudaStart::Started(gpu) => Ok(gpu),
        }
    }
}

/// Replays `checkpoint` plus `logs` on GPU `ordinal` (through [`super::run`]).
pub(super) fn run(
    checkpoint: &Path,
    logs: &[PathBuf],
    ordinal: usize,
    o: &ReplayOptions,
) -> Result<(GpuReplayReport, DevicePageStore)> {
    let t0 = Instant::now();
    let compile = KernelCompile::for_replay(Some(logs), o.verify);
    let starting = match &o.opened {
        Some(gpu) if gpu.ordinal == ordinal => CudaStart::Started(gpu.clone()),
        Some(gpu) => {
            return Err(Error::Invalid(format!(
                "the device opened (cuda:{}) is not the one asked for (cuda:{ordinal})",
                gpu.ordinal
            )));
        }
        None => CudaStart::Running(std::thread::spawn(move || Gpu::open(ordinal, compile))),
    };
    let len = std::fs::metadata(checkpoint)
        .map_err(|e| Error::io(checkpoint, e))?
        .len();
    if len <= READ_AHEAD_MAX && o.read_mode != Some(ReadMode::Direct) {
        warm_page_cache(checkpoint, len);
    }
    let topen = Instant::now();
    let ckpt = Checkpoint::open(checkpoint)?;
    let log = if logs.is_empty() {
        None
    } else {
        Some(Log::open_deferred(logs)?)
    };
    let mut t = GpuTimings {
        open: ms(topen),
        ..Default::default()
    };
    // The log is planned while CUDA starts: after the load, only its upload, its checksum
    // checks on the device and the kernels are left. Without a driver or a device the start
    // fails within milliseconds: that is reported before any time goes into the plan.
    let starting = starting.failed_early()?;
    let sel = &o.pages;
    let select = |p: &PageEntry| sel.matches(p.id, &p.meta);
    // The count is of the selected pages' bytes as they reach the device.
    if let Some(p) = &o.progress {
        p.add_total(ckpt.pages().iter().filter(|e| select(e)).map(|e| e.len).sum());
    }
    let keep_created = |id: u64, meta: &PageMeta| sel.matches(id, meta);
    let prepared = log
        .as_ref()
        .map(|l| PreparedLog::new(l, ckpt.head(), &select, o.limit, &keep_created));
    t.log_plan = prepared.as_ref().map_or(0.0, |p| p.plan_ms);
    let twait = Instant::now();
    let gpu = starting.wait()?;
    t.wait_for_cuda = ms(twait);
    t.cuda_start = gpu.start_ms;
    let tload = Instant::now();
    let opts = LoadOptions {
        memory: o.memory,
        read_mode: o.read_mode,
        pipeline: None,
        poison: None,
        progress: o.progress.as_ref().map(|p| p.shared_counter()),
    };
    let (mut store, load) = DevicePageStore::load(&gpu, &ckpt, &select, &opts)?;
    t.alloc = load.alloc_ms;
    t.read_h2d = load.read_h2d_ms;
    t.open_to_resident = t.open + ms(tload);
    if o.verify {
        let tv = Instant::now();
        store.verify_against(&ckpt)?;
        t.verify = ms(tv);
    }
    let (summary, apply) = match prepared {
        Some(p) => {
            let ta = Instant::now();
            let (s, a) = store.apply_prepared(&p)?;
            t.delta_apply = ms(ta);
            (s, Some(a))
        }
        None => (ReplaySummary::default(), None),
    };
    let state_hash = if o.verify {
        let th = Instant::now();
        let h = store.state_hash()?;
        t.hash = ms(th);
        Some(h)
    } else {
        None
    };
    if let Some(out) = &o.output {
        let tw = Instant::now();
        // The log was opened without its payload checksums (the device checked them): the
        // graph records are read from a log opened with every checksum checked.
        let graph = match &log {
            Some(l) if crate::graph::has_graph(ckpt.head(), Some(l)) => {
                let checked = l.reopen_checked()?;
                super::graph_at_stop(ckpt.head(), Some(&checked), o.limit, summary.last_seq)?
            }
            _ => super::graph_at_stop(ckpt.head(), None, o.limit, summary.last_seq)?,
        };
        store.write_checkpoint(out, ckpt.head().metadata.clone(), &graph)?;
        t.write = ms(tw);
    }
    t.nvrtc_compile = gpu.compile_ms();
    t.total = ms(t0);
    let report = GpuReplayReport {
        device: format!("cuda:{}", gpu.ordinal),
        device_name: gpu.name.clone(),
        memory: format!("{:?}", o.memory).to_lowercase(),
        kernels: gpu.kernel_code().map(|c| c.to_string()),
        pages: store.len() as u64,
        load_gb_per_s: crate::timing::gb_per_s(load.page_bytes, t.open_to_resident),
        load,
        apply,
        summary,
        state_hash,
        timings_ms: t,
    };
    Ok((report, store))
}

/// One timed load, in a process where CUDA has already started.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    /// From opening the checkpoint to the last byte on the device, allocation included, ms.
    pub open_to_resident_ms: f64,
    /// Page bytes loaded.
    pub page_bytes: u64,
    /// GB/s.
    pub gb_per_s: f64,
    /// The load's own breakdown.
    pub load: LoadStats,
}

/// Evicts a file's pages from the page cache (for cold-start measurements).
pub fn drop_from_page_cache(path: &Path) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    // SAFETY: a valid descriptor; DONTNEED only drops clean cached pages of this file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

/// A load benchmark: every run, and the median.
#[derive(Debug, Clone, Serialize)]
pub struct LoadBench {
    /// The device's name.
    pub device: String,
    /// Its CUDA start, ms (not in the runs).
    pub cuda_start_ms: f64,
    /// Whether each run started with the file out of the page cache.
    pub cold: bool,
    /// Median open-to-resident time, ms.
    pub median_ms: f64,
    /// The page bytes over that median, GB/s.
    pub median_gb_per_s: f64,
    /// Every run.
    pub runs: Vec<LoadRun>,
}

/// Loads `checkpoint` `runs` times (at least once) on GPU `ordinal`, each load freed before
/// the next; with `cold`, the file is dropped from the page cache before each run; `pipeline`
/// overrides the staging pipeline chosen by size (for tuning sweeps).
pub fn bench_load(
    ordinal: usize,
    checkpoint: &Path,
    runs: usize,
    cold: bool,
    read_mode: Option<ReadMode>,
    pipeline: Option<crate::gpu::loader::Pipeline>,
) -> Result<LoadBench> {
    let gpu = Arc::new(Gpu::open(ordinal, KernelCompile::WhenNeeded)?);
    let runs = runs.max(1);
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        if cold {
            drop_from_page_cache(checkpoint)?;
        }
        let t = Instant::now();
        let ckpt = Checkpoint::open(checkpoint)?;
        let (store, load) = DevicePageStore::load(
            &gpu,
            &ckpt,
            &|_| true,
            &LoadOptions {
                read_mode,
                pipeline,
                ..Default::default()
            },
        )?;
        gpu.synchronize()?;
        let ms = ms(t);
        drop(store);
        out.push(LoadRun {
            open_to_resident_ms: ms,
            page_bytes: load.page_bytes,
            gb_per_s: crate::timing::gb_per_s(load.page_bytes, ms),
            load,
        });
    }
    let median_ms = crate::timing::median(out.iter().map(|r| r.open_to_resident_ms).collect());
    Ok(LoadBench {
        device: gpu.name.clone(),
        cuda_start_ms: gpu.start_ms,
        cold,
        median_gb_per_s: crate::timing::gb_per_s(out[0].page_bytes, median_ms),
        median_ms,
        runs: out,
    })
}

/// One timed delta application.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaRun {
    /// From opening the log to every delta applied and synchronised, ms.
    pub log_open_to_applied_ms: f64,
    /// Records applied.
    pub records: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// Payload GB/s.
    pub payload_gb_per_s: f64,
    /// The apply's breakdown.
    pub apply: ApplyStats,
}

/// A delta benchmark: every run, and the median.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaBench {
    /// The device's name.
    pub device: String,
    /// Median log-open-to-applied time, ms.
    pub median_ms: f64,
    /// The payload bytes over that median, GB/s.
    pub median_payload_gb_per_s: f64,
    /// Every run.
    pub runs: Vec<DeltaRun>,
}

/// Applies `logs` to a freshly loaded `checkpoint` on GPU `ordinal`, `runs` times (at least
/// once; the load is not timed).
pub fn bench_deltas(ordinal: usize, checkpoint: &Path, logs: &[PathBuf], runs: usize) -> Result<DeltaBench> {
    let gpu = Arc::new(Gpu::open(ordinal, KernelCompile::WhileStarting)?);
    let ckpt = Checkpoint::open(checkpoint)?;
    let runs = runs.max(1);
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default())?;
        gpu.synchronize()?;
        let t = Instant::now();
        let (s, apply) = store.apply_log_files(logs, ckpt.head(), ReplayLimit::default(), &|_, _| true)?;
        let ms = ms(t);
        out.push(DeltaRun {
            log_open_to_applied_ms: ms,
            records: s.records,
            payload_bytes: s.bytes_written,
            payload_gb_per_s: crate::timing::gb_per_s(s.bytes_written, ms),
            apply,
        });
    }
    let median_ms = crate::timing::median(out.iter().map(|r| r.log_open_to_applied_ms).collect());
    Ok(DeltaBench {
        device: gpu.name.clone(),
        median_payload_gb_per_s: crate::timing::gb_per_s(out[0].payload_bytes, median_ms),
        median_ms,
        runs: out,
    })
}
