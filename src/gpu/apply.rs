//! Log deltas applied on the GPU. The log's segment files are copied to the device as they are,
//! and the copy threads walk and decode each piece they read (src/gpu/plan.rs); the record
//! checksums are checked on the device when the log was opened without them; then each batch of
//! writes is one `apply_tiles` launch, and create, resize and delete are stream-ordered
//! allocations, copies and fills between the batches. The result is bit-identical to the CPU
//! replay.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;

use super::driver::{DeviceBuffer, MemoryKind, copy_d2d, gpu_err, memset};
use super::kernels::{CHUNK_DESC_LEN, SOURCE_PAD, put_le};
use super::loader::{CopyJob, Pipeline, ReadMode, Source};
use super::plan::{self, ApplyPlan, KIND_MASKED, Step, WriteBatch};
use super::store::{DevicePage, DevicePageStore, PageResidency};
use crate::error::{Error, GpuError, Result};
use crate::format::checkpoint::CheckpointHead;
use crate::format::log::Log;
use crate::format::{crc32c_combine_with, crc32c_shift_factor};
use crate::page::PageMeta;
use crate::replay::state::{ReplayLimit, ReplaySummary};

/// What the GPU apply did and how long each part took.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ApplyStats {
    /// Bytes of log segment files copied to the device.
    pub log_bytes: u64,
    /// Copy and fill writes.
    pub copies: u64,
    /// Masked writes.
    pub masked: u64,
    /// Tiles run (a tile is up to 64 KiB of one page, run by one thread block).
    pub tiles: u64,
    /// Batches of writes (one kernel launch each; a new batch starts after each structural
    /// record).
    pub batches: u64,
    /// Create, resize and delete records.
    pub structural: u64,
    /// Log upload, ms (in parallel with planning).
    pub upload_ms: f64,
    /// Planning on the CPU (decoding, checking, listing tiles), and in parallel the upload and
    /// the checksum check: the time until both are done, ms.
    pub plan_ms: f64,
    /// Of `plan_ms`: decoding and bounds-checking records (in parallel), ms.
    pub parse_ms: f64,
    /// Of `plan_ms`: epoch checks in sequence order and gathering the writes, ms.
    pub check_ms: f64,
    /// Of `plan_ms`: listing and sorting tile entries, ms.
    pub tiles_ms: f64,
    /// Records decoded by the upload's copy threads as they read the log (that work is in
    /// `upload_ms`; the other records were decoded in `parse_ms`).
    pub decoded_in_scan: u64,
    /// Whether the log was planned before the apply ([`PreparedLog`]; in `mmsb replay`, while
    /// CUDA started): then `parse_ms`, `check_ms` and `tiles_ms` were spent before, and
    /// `plan_ms` is the upload and its checksum checks.
    pub planned_before: bool,
    /// Checking the record checksums on the device, as the files arrive (those that arrived
    /// before the log was open in one launch), ms summed (0 when the log's opening checked
    /// them).
    pub crc_ms: f64,
    /// From the start until the log is open, ms; 0 when the caller opened it. For a log given
    /// as files this includes the upload, whose copy threads walk it, and the joining of the
    /// walked pieces.
    pub open_ms: f64,
    /// From the start to the upload and its checksum checks being done, ms.
    pub upload_done_ms: f64,
    /// From the start to the plan being done (the log opened first), ms. The larger of this
    /// and `upload_done_ms` is the critical path, and about `plan_ms`.
    pub plan_done_ms: f64,
    /// Descriptor uploads, kernels and structural steps until synchronised, ms.
    pub kernel_ms: f64,
}

/// Batches whose upload is at least this large go up from the kept pinned staging.
const PINNED_UPLOAD_MIN: usize = 1 << 20;

/// Where a batch's arrays lie in its one upload (each 256-byte aligned; the value-base table
/// never empty, so that the kernel always gets a valid address).
struct UploadLayout {
    tiles: usize,
    entries: usize,
    writes: usize,
    pages: usize,
    value_base: usize,
    /// Decompressed payloads, followed by [`SOURCE_PAD`] bytes.
    extra: usize,
    len: usize,
}

impl UploadLayout {
    fn of(b: &WriteBatch, npages: usize) -> UploadLayout {
        let mut at = 0usize;
        let mut take = |bytes: usize| {
            let start = at;
            at = (at + bytes).next_multiple_of(256);
            start
        };
        let tiles = take(b.tiles.len() * 16);
        let entries = take(b.entries.len() * 4);
        let writes = take(b.writes.len() * 32);
        let pages = take(npages * 8);
        let value_base = take(b.value_base.len().max(1) * 8);
        let extra = take(b.extra.len() + SOURCE_PAD);
        UploadLayout {
            tiles,
            entries,
            writes,
            pages,
            value_base,
            extra,
            len: at,
        }
    }

    /// Writes the batch's arrays into `dst` (`len` bytes), little-endian as the kernel reads
    /// them, in parallel.
    fn fill(&self, dst: &mut [u8], b: &WriteBatch, ptrs: &[u64]) {
        let (head, extra) = dst.split_at_mut(self.extra);
        let (head, value_base) = head.split_at_mut(self.value_base);
        let (head, pages) = head.split_at_mut(self.pages);
        let (head, writes) = head.split_at_mut(self.writes);
        let (tiles, entries) = head.split_at_mut(self.entries);
        put_le(tiles, &b.tiles, |t| {
            let mut x = [0u8; 16];
            x[..8].copy_from_slice(&t.key.to_le_bytes());
            x[8..].copy_from_slice(&t.first_count.to_le_bytes());
            x
        });
        put_le(entries, &b.entries, |e| e.to_le_bytes());
        // Each part of the writes to its place, the parts in parallel.
        let mut regions = Vec::new();
        let mut rest = writes;
        for (_, part) in b.writes.parts().collect::<Vec<_>>() {
            let (here, tail) = rest.split_at_mut(part.len() * 32);
            regions.push((here, part));
            rest = tail;
        }
        regions.into_par_iter().for_each(|(dst, part)| {
            put_le(dst, part, |w| {
                let mut x = [0u8; 32];
                for (k, v) in [w.offset, w.len, w.src, w.slot_kind].into_iter().enumerate() {
                    x[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
                }
                x
            })
        });
        put_le(pages, ptrs, |p| p.to_le_bytes());
        put_le(value_base, &b.value_base, |v| v.to_le_bytes());
        extra[..b.extra.len()]
            .par_chunks_mut(1 << 20)
            .zip(b.extra.par_chunks(1 << 20))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
}

/// Runs `f` on threads for building the checksum descriptors of a log, which happens beside the
/// plan: on the global pool it would queue behind the plan's tasks and finish only after them.
/// On the calling thread if that pool cannot be started.
fn on_check_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .thread_name(|i| format!("mmsb-crc-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Copy threads for the upload of a log passed in open, which runs beside the plan: fewer than
/// a lone load's 12 leave cores to the plan (fewer threads were faster for 1M deltas). A log
/// given as files is planned by the copy threads themselves, on every core.
const LOG_UPLOAD_THREADS: usize = 10;

/// The log to apply: opened already, or files to open while they upload.
enum LogInput<'a> {
    Opened(&'a Log),
    Files(&'a [std::path::PathBuf]),
}

/// A log planned against a checkpoint before the store it applies to is loaded. `mmsb replay`
/// plans while CUDA starts, so that [`DevicePageStore::apply_prepared`] only uploads the log,
/// checks its record checksums on the device and runs the plan.
///
/// ```no_run
/// use std::sync::Arc;
/// use mmsb::format::{checkpoint::Checkpoint, log::Log};
/// use mmsb::gpu::{Gpu, KernelCompile, apply::PreparedLog, store::{DevicePageStore, LoadOptions}};
/// use mmsb::replay::ReplayLimit;
///
/// let starting = std::thread::spawn(|| Gpu::open(0, KernelCompile::WhileStarting));
/// let ckpt = Checkpoint::open("model.ckpt".as_ref())?;
/// // Payload checksums are left to the device, which checks them before any write.
/// let log = Log::open_deferred(&["model.log"])?;
/// let keep_all = |_: u64, _: &mmsb::page::PageMeta| true;
/// let prepared = PreparedLog::new(&log, ckpt.head(), &|_| true, ReplayLimit::default(), &keep_all);
/// let gpu = Arc::new(starting.join().expect("CUDA start thread")?);
/// let (mut store, _) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default())?;
/// let (summary, _stats) = store.apply_prepared(&prepared)?;
/// println!("{} records applied", summary.records);
/// # Ok::<(), mmsb::Error>(())
/// ```
pub struct PreparedLog<'a> {
    log: &'a Log,
    head: &'a CheckpointHead,
    limit: ReplayLimit,
    keep_created: &'a (dyn Fn(u64, &PageMeta) -> bool + Sync),
    /// The plan; `None` when the log cannot apply as it is, which the apply plans again to
    /// report once the checksums are checked (damage takes precedence, as in
    /// [`DevicePageStore::apply_log`]).
    plan: Option<ApplyPlan>,
    /// Ids of the pages the plan takes as in the store, sorted.
    present: Vec<u64>,
    /// Time taken to plan, ms.
    pub plan_ms: f64,
}

impl<'a> PreparedLog<'a> {
    /// Plans applying `log` (up to `limit`) to a store that is to be loaded from the checkpoint
    /// whose index is `head`, with the pages `select` accepts
    /// ([`DevicePageStore::load`]); `keep_created` is as for [`DevicePageStore::apply_log`].
    pub fn new(
        log: &'a Log,
        head: &'a CheckpointHead,
        select: &dyn Fn(&crate::format::checkpoint::PageEntry) -> bool,
        limit: ReplayLimit,
        keep_created: &'a (dyn Fn(u64, &PageMeta) -> bool + Sync),
    ) -> PreparedLog<'a> {
        let t = Instant::now();
        let mut present: Vec<u64> = head.pages.iter().filter(|p| select(p)).map(|p| p.id).collect();
        present.sort_unstable();
        let planner = plan::Planner::new(head, &|id| present.binary_search(&id).is_ok());
        let plan = planner
            .plan(log, None, &plan::segment_bases(log), limit, keep_created)
            .ok();
        PreparedLog {
            log,
            head,
            limit,
            keep_created,
            plan,
            present,
            plan_ms: crate::timing::ms(t),
        }
    }
}

/// The log's upload: still running, or done (a log given as files is opened from the pieces its
/// copy threads walked, once they are done).
enum Upload<'scope> {
    Running(std::thread::ScopedJoinHandle<'scope, Result<f64>>),
    Done(f64),
}

impl Upload<'_> {
    /// Waits for the upload; its time, ms.
    fn wait(self) -> Result<f64> {
        match self {
            Upload::Running(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Gpu(GpuError::Internal("log upload thread panicked".into())))),
            Upload::Done(ms) => Ok(ms),
        }
    }
}

/// How the upload-and-plan phase ended.
enum Outcome<'p> {
    /// Planned (here, or before the call), with the times (see [`ApplyStats`]) filled in.
    Planned(Box<Cow<'p, ApplyPlan>>, ApplyStats),
    /// Run again on this log, opened with every checksum checked on the CPU.
    Again(Log),
}

impl DevicePageStore {
    /// Applies `log` (up to `limit`) to the pages in the store. `head` is the index of the
    /// checkpoint the store was loaded from: every record is checked against the shapes of all
    /// its pages, also pages not loaded; writes to pages not loaded are skipped, and pages the log
    /// creates are kept when `keep_created` accepts them. A log opened with
    /// [`Log::open_deferred`] has its record checksums checked on the device before any write;
    /// if one fails, the log is opened again with every checksum checked on the CPU, and its
    /// exact verdict (corruption, or a torn tail left out) applies.
    pub fn apply_log(
        &mut self,
        log: &Log,
        head: &CheckpointHead,
        limit: ReplayLimit,
        keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    ) -> Result<(ReplaySummary, ApplyStats)> {
        self.apply(LogInput::Opened(log), None, head, (None, limit), keep_created)
    }

    /// Opens the log segments named by `paths` (files or directories) with
    /// [`Log::open_deferred`] and applies them as [`DevicePageStore::apply_log`] does; the
    /// files start travelling to the device while they are opened.
    pub fn apply_log_files(
        &mut self,
        paths: &[std::path::PathBuf],
        head: &CheckpointHead,
        limit: ReplayLimit,
        keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    ) -> Result<(ReplaySummary, ApplyStats)> {
        self.apply(LogInput::Files(paths), None, head, (None, limit), keep_created)
    }

    /// Applies the records of `log` from `from_seq` on (up to `limit`) to pages that hold the
    /// state after the records before it, with the epochs `head` gives them: for a store that
    /// follows a log step by step. The log may leave out its segments
    /// before `from_seq` ([`Log::drop_segments_before`]); what it holds is uploaded and checked
    /// on the device as [`DevicePageStore::apply_log`] does.
    pub fn apply_log_from(
        &mut self,
        log: &Log,
        head: &CheckpointHead,
        from_seq: u64,
        limit: ReplayLimit,
    ) -> Result<(ReplaySummary, ApplyStats)> {
        self.apply(LogInput::Opened(log), None, head, (Some(from_seq), limit), &|_, _| {
            false
        })
    }

    /// Applies a log planned before the store was loaded, as [`DevicePageStore::apply_log`]
    /// would apply it. The store must hold the pages the plan was made for, at the checkpoint's
    /// epochs; if its pages differ, the log is planned again here. One plan serves any number
    /// of stores (replicas).
    pub fn apply_prepared(&mut self, prepared: &PreparedLog) -> Result<(ReplaySummary, ApplyStats)> {
        let p = prepared;
        let same_pages = p.present.len() == self.pages.len() && p.present.iter().all(|id| self.pages.contains_key(id));
        let plan = p.plan.as_ref().filter(|_| same_pages);
        self.apply(LogInput::Opened(p.log), plan, p.head, (None, p.limit), p.keep_created)
    }

    /// Applies the log `input`; `planned_before`, when given, is its plan (for an opened log),
    /// so that only the upload and its checks are left.
    fn apply(
        &mut self,
        input: LogInput,
        planned_before: Option<&ApplyPlan>,
        head: &CheckpointHead,
        (from_seq, limit): (Option<u64>, ReplayLimit),
        keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    ) -> Result<(ReplaySummary, ApplyStats)> {
        let was_planned = planned_before.is_some();
        // The files and their lengths, back to back in one device buffer.
        let files: Vec<(std::path::PathBuf, u64)> = match &input {
            LogInput::Opened(log) => log
                .segments()
                .iter()
                .map(|s| (s.path().to_owned(), s.file_len()))
                .collect(),
            LogInput::Files(paths) => crate::format::log::expand_paths(paths)?
                .into_iter()
                .map(|p| {
                    std::fs::metadata(&p)
                        .map(|m| (p.clone(), m.len()))
                        .map_err(|e| Error::io(&p, e))
                })
                .collect::<Result<_>>()?,
        };
        let mut file_base = Vec::with_capacity(files.len());
        let mut total = 0u64;
        for (_, len) in &files {
            file_base.push(total);
            total += len;
        }
        let logbuf = DeviceBuffer::alloc(&self.gpu.ctx, total as usize + SOURCE_PAD, MemoryKind::Device)?;

        // The upload, whose copy threads walk a log given as files (one passed in open is
        // planned beside it); then the plan's sequential part on the CPU while the device
        // checks the record checksums.
        let t = Instant::now();
        let check_base = self.base;
        let this = &*self;
        // The log this call opens; unmapping its segments can take tens of ms (the kernel frees
        // every mapped page), so it is let go on another thread once nothing refers to it.
        let mut opened: Option<Log> = None;
        // Set up before the upload, whose copy threads walk and decode the records of a log
        // given as files as they read it.
        let pages = &self.pages;
        let planner = (!was_planned)
            .then(|| Arc::new(plan::Planner::new(head, &|id| pages.contains_key(&id)).starting_at(from_seq)));
        let walk_in_upload = matches!(input, LogInput::Files(_));
        let walked: Vec<Mutex<Vec<plan::DecodedPiece>>> = files.iter().map(|_| Mutex::new(Vec::new())).collect();
        let outcome = std::thread::scope(|outer| -> Result<Outcome> {
            let (logbuf, files, file_base) = (&logbuf, &files, &file_base);
            // Each file's index is sent once it is all on the device, so that its records'
            // checksums are checked as soon as the log is open (for a log passed in open, while
            // later files upload).
            let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
            let (walker, walked) = (planner.clone().filter(|_| walk_in_upload), &walked);
            let upload = outer.spawn(move || -> Result<f64> {
                let t = Instant::now();
                // Buffered reads need only the paths, not mappings (none exist yet here).
                let sources: Vec<Source> = files
                    .iter()
                    .map(|(p, _)| Source {
                        path: p.as_path(),
                        map: None,
                    })
                    .collect();
                let jobs: Vec<CopyJob> = files
                    .iter()
                    .zip(file_base)
                    .enumerate()
                    .map(|(i, ((_, len), base))| CopyJob {
                        src: i,
                        file_off: 0,
                        len: *len,
                        dst: logbuf.ptr() + base,
                    })
                    .collect();
                let mut pipe = Pipeline::for_load(total, ReadMode::Buffered);
                if walker.is_some() {
                    // The copy threads do the plan's walk too: every core, in no more staging
                    // than a large load's (kept pinned from the checkpoint's load: pinning more
                    // is slow, and a first run would pay for it).
                    let staging = pipe.staging_len();
                    pipe.threads = std::thread::available_parallelism().map_or(pipe.threads, |n| n.get());
                    pipe.slot = (staging / (2 * pipe.threads)) / 4096 * 4096;
                } else if !was_planned {
                    pipe.threads = pipe.threads.min(LOG_UPLOAD_THREADS);
                }
                // One pipeline for all the files: loading them group by group left the copy
                // threads idle at the end of each group. The checker may have stopped listening
                // (a mismatch): nothing to tell then.
                let tell = |file: usize| {
                    let _ = done_tx.send(file);
                };
                // Each piece is walked and its records decoded while it is in cache, right after
                // its read (its copy to the device already queued).
                let walk = |file: usize, file_off: u64, bytes: &[u8]| {
                    if let Some(w) = &walker {
                        let piece = w.walk_piece(bytes, file_off);
                        walked[file].lock().unwrap_or_else(PoisonError::into_inner).push(piece);
                    }
                };
                super::loader::load(&this.gpu, &sources, &jobs, ReadMode::Buffered, pipe, &tell, &walk)?;
                Ok(crate::timing::ms(t))
            });
            let (log, decoded, upload): (&Log, _, _) = match &input {
                LogInput::Opened(log) => (log, None, Upload::Running(upload)),
                LogInput::Files(_) => {
                    let upload_ms = Upload::Running(upload).wait()?;
                    let paths: Vec<std::path::PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
                    let take =
                        |i: usize| std::mem::take(&mut *walked[i].lock().unwrap_or_else(PoisonError::into_inner));
                    let walker = planner
                        .as_ref()
                        .ok_or_else(|| Error::Gpu(GpuError::Internal("a log given as files has no planner".into())))?;
                    let (log, decoded) = walker.open_log_from_pieces(&paths, &take)?;
                    (opened.insert(log), Some(decoded), Upload::Done(upload_ms))
                }
            };
            let open_ms = crate::timing::ms(t);
            log.check()?;
            log.check_base(check_base)?;
            // Each segment's file in the upload; a file that changed since it was measured
            // is uploaded again by the opened-log path.
            let seg_file: Option<Vec<usize>> = log
                .segments()
                .iter()
                .map(|s| {
                    let i = files.iter().position(|(p, _)| p == s.path())?;
                    (files[i].1 == s.file_len()).then_some(i)
                })
                .collect();
            let Some(seg_file) = seg_file.filter(|f| f.len() == files.len()) else {
                upload.wait()?;
                return Ok(Outcome::Again(log.reopen_checked()?));
            };
            let seg_base: Vec<u64> = seg_file.iter().map(|&i| file_base[i]).collect();
            std::thread::scope(|inner| {
                let (seg_base, seg_file) = (&seg_base, &seg_file);
                let checked = inner.spawn(move || -> Result<(f64, f64, bool, f64)> {
                    let mut crc_ms = 0.0;
                    let mut all_match = true;
                    // Segments whose checksums are still to check (each file holds one); files
                    // arrive in any order.
                    let mut unchecked = if log.payloads_checked() { 0 } else { seg_file.len() };
                    while unchecked > 0 {
                        let Ok(first) = done_rx.recv() else { break };
                        // With the files that arrived meanwhile (all of them, when the upload
                        // finished before the log was open): one launch for all, not one each.
                        let files: Vec<usize> = std::iter::once(first).chain(done_rx.try_iter()).collect();
                        let ready: Vec<usize> = (0..seg_file.len())
                            .filter(|&si| files.contains(&seg_file[si]))
                            .collect();
                        unchecked -= ready.len();
                        let tc = Instant::now();
                        let ok = ready.is_empty() || this.records_match(log, seg_base, &ready, logbuf.ptr())?;
                        crc_ms += crate::timing::ms(tc);
                        if !ok {
                            all_match = false;
                            break;
                        }
                    }
                    drop(done_rx);
                    let upload_ms = upload.wait()?;
                    // A segment never reported (no bytes to copy) is checked on the CPU instead.
                    all_match &= unchecked == 0;
                    Ok((upload_ms, crc_ms, all_match, crate::timing::ms(t)))
                });
                // The upload's copy threads, which shared it, are done.
                let planned = match (planned_before, planner) {
                    (Some(plan), _) => Ok(Cow::Borrowed(plan)),
                    (None, Some(planner)) => {
                        let planner = Arc::try_unwrap(planner)
                            .map_err(|_| Error::Gpu(GpuError::Internal("the log planner is still shared".into())))?;
                        planner
                            .plan(log, decoded, seg_base, limit, keep_created)
                            .map(Cow::Owned)
                    }
                    (None, None) => {
                        return Err(Error::Gpu(GpuError::Internal(
                            "a log with neither plan nor planner".into(),
                        )));
                    }
                };
                let plan_done_ms = crate::timing::ms(t);
                let (upload_ms, crc_ms, all_match, upload_done_ms) = checked
                    .join()
                    .unwrap_or_else(|_| Err(Error::Gpu(GpuError::Internal("checksum thread panicked".into()))))?;
                if !all_match {
                    return Ok(Outcome::Again(log.reopen_checked()?));
                }
                let times = ApplyStats {
                    planned_before: was_planned,
                    upload_ms,
                    crc_ms,
                    open_ms,
                    upload_done_ms,
                    plan_done_ms,
                    ..Default::default()
                };
                Ok(Outcome::Planned(Box::new(planned?), times))
            })
        });
        let (plan, times) = match outcome? {
            Outcome::Planned(p, times) => (*p, times),
            Outcome::Again(log) => {
                drop(logbuf);
                return self.apply(LogInput::Opened(&log), None, head, (from_seq, limit), keep_created);
            }
        };
        let mut stats = ApplyStats {
            log_bytes: total,
            plan_ms: crate::timing::ms(t),
            parse_ms: plan.parse_ms,
            check_ms: plan.check_ms,
            tiles_ms: plan.tiles_ms,
            decoded_in_scan: plan.decoded_in_scan,
            structural: plan.structural,
            ..times
        };

        let t = Instant::now();
        let summary = self.run_plan(&plan, logbuf.ptr(), &mut stats)?;
        stats.kernel_ms = crate::timing::ms(t);
        // Let go on another thread once the kernels are done: freeing the log's device copy, the
        // plan's arrays, and unmapping the log's segments, which can take tens of ms and holds
        // the process's memory-map lock (done beside the descriptor uploads, it slowed them).
        let plan = match plan {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        let log = opened.take();
        std::thread::spawn(move || drop((logbuf, plan, log)));
        Ok((summary, stats))
    }

    /// Runs the steps of a plan on the stream and waits for them.
    fn run_plan(&mut self, plan: &ApplyPlan, log_base: u64, stats: &mut ApplyStats) -> Result<ReplaySummary> {
        // Uploads must outlive the kernels that read them: kept until the final wait.
        let mut keep_alive: Vec<Box<dyn std::any::Any>> = Vec::new();
        for step in &plan.steps {
            match *step {
                Step::Writes(ref batch) => self.run_batch(batch, log_base, stats, &mut keep_alive)?,
                Step::Create { page_id, len, ref meta } => {
                    let buf = DeviceBuffer::alloc(&self.gpu.ctx, len as usize, self.memory)?;
                    memset(&self.gpu.stream, buf.ptr(), 0, len as usize)?;
                    let residency = match self.memory {
                        MemoryKind::Device => PageResidency::Device,
                        MemoryKind::Unified => PageResidency::Unified,
                        _ => PageResidency::HostMapped,
                    };
                    self.pages.insert(
                        page_id,
                        DevicePage {
                            epoch: 0,
                            meta: meta.clone(),
                            ptr: buf.ptr(),
                            len,
                            residency,
                            own: Some(buf),
                            host: None,
                            crc: None,
                        },
                    );
                }
                Step::Delete { page_id } => {
                    if let Some(p) = self.pages.remove(&page_id) {
                        // Queued writes may still target it: free only when the store drops.
                        self.retired.extend(p.own);
                    }
                }
                Step::Resize { page_id, len } => {
                    let page = self.resident(page_id)?;
                    let (src, old_len) = (page.ptr, page.len);
                    let buf = DeviceBuffer::alloc(&self.gpu.ctx, len as usize, self.memory)?;
                    let keep = old_len.min(len);
                    copy_d2d(&self.gpu.stream, buf.ptr(), src, keep as usize)?;
                    memset(&self.gpu.stream, buf.ptr() + keep, 0, (len - keep) as usize)?;
                    let page = self.pages.get_mut(&page_id).expect("resident");
                    page.ptr = buf.ptr();
                    page.len = len;
                    if let Some(old) = page.own.replace(buf) {
                        self.retired.push(old);
                    }
                }
            }
        }
        self.gpu.synchronize()?;
        drop(keep_alive);
        for (id, epoch) in &plan.epochs {
            if let Some(p) = self.pages.get_mut(id) {
                p.epoch = *epoch;
                p.crc = None;
            }
        }
        Ok(plan.summary.clone())
    }

    /// A present page that deltas may write to.
    fn resident(&self, page_id: u64) -> Result<&DevicePage> {
        let page = self
            .pages
            .get(&page_id)
            .ok_or_else(|| Error::Invalid(format!("page {page_id} is not in the device store")))?;
        if page.residency == PageResidency::Evicted {
            return Err(Error::Invalid(format!(
                "page {page_id} is evicted: restore it before applying deltas"
            )));
        }
        Ok(page)
    }

    /// Uploads one batch and launches its kernel. The batch's arrays go up in one copy on the
    /// replay stream: from the device's kept pinned staging when the batch is large and the
    /// staging holds it (a copy at the link's rate instead of the driver's pageable path), else
    /// from ordinary memory.
    fn run_batch(
        &self,
        b: &WriteBatch,
        log_base: u64,
        stats: &mut ApplyStats,
        keep_alive: &mut Vec<Box<dyn std::any::Any>>,
    ) -> Result<()> {
        let ptrs = b
            .pages
            .iter()
            .map(|id| self.resident(*id).map(|p| p.ptr))
            .collect::<Result<Vec<u64>>>()?;
        let stream = &self.gpu.stream;
        // Before anything is queued: an error here leaves nothing in flight.
        let kernels = self.gpu.kernels()?;
        let l = UploadLayout::of(b, ptrs.len());
        let buf = DeviceBuffer::alloc(&self.gpu.ctx, l.len, MemoryKind::Device)?;
        self.gpu.with_upload_memory(l.len, PINNED_UPLOAD_MIN, |host, pinned| {
            l.fill(host, b, &ptrs);
            // SAFETY: `buf` holds `l.len` bytes. Pinned staging is not touched again before
            // the event below fires; pageable memory is staged by the driver before the call
            // returns.
            unsafe { super::driver::copy_h2d_on(stream, buf.ptr(), host)? };
            let copied = match stream.record_event(None) {
                Ok(ev) => ev,
                Err(e) => {
                    // The copy is queued: nothing it reads or writes may go before it is done.
                    let _ = stream.synchronize();
                    return Err(gpu_err(e));
                }
            };
            let at = |off: usize| buf.ptr() + off as u64;
            let launched = kernels.apply_tiles(
                stream,
                at(l.tiles),
                b.tiles.len(),
                at(l.entries),
                at(l.writes),
                at(l.pages),
                at(l.value_base),
                log_base,
                at(l.extra),
            );
            if pinned {
                // Later loads reuse the staging: it is handed back only once read, also when
                // the launch failed.
                copied.synchronize().map_err(gpu_err)?;
            }
            launched
        })?;
        // In parallel: counted one by one, a million writes delayed the wait for the kernel.
        let masked = b
            .writes
            .parts()
            .map(|(_, part)| part.iter().filter(|w| (w.slot_kind >> 32) & 3 == KIND_MASKED).count())
            .sum::<usize>() as u64;
        stats.masked += masked;
        stats.copies += b.writes.len() as u64 - masked;
        stats.tiles += b.tiles.len() as u64;
        stats.batches += 1;
        keep_alive.push(Box::new(buf));
        Ok(())
    }

    /// Checks every record checksum of the segments `segs` of `log` against their bytes
    /// uploaded at `log_base`. The device computes the CRC of each payload and compares it with
    /// the stored checksum; a payload over 256 KiB is cut into pieces whose CRCs the host
    /// combines and compares. True when all match.
    fn records_match(&self, log: &Log, seg_base: &[u64], segs: &[usize], log_base: u64) -> Result<bool> {
        const FIRST: u32 = 1 << 31;
        const WHOLE: u32 = 1 << 30;
        let frames: Vec<(usize, &[crate::format::log::FrameRef])> = segs
            .iter()
            .flat_map(|&si| log.segments()[si].frames().chunks(8192).map(move |c| (si, c)))
            .collect();
        let payload_bytes: u64 = frames.iter().flat_map(|(_, fs)| fs.iter()).map(|f| f.payload_len).sum();
        let piece = crc_piece_len(payload_bytes);
        let pieces_of = |len: u64| len.div_ceil(piece).max(1);
        // On threads of their own: this runs beside the plan, which keeps the global pool busy.
        let per_chunk: Vec<(Vec<u64>, Vec<u32>)> = on_check_threads(|| {
            frames
                .par_iter()
                .map(|&(si, fs)| {
                    let (mut off, mut len) = (Vec::with_capacity(fs.len()), Vec::with_capacity(fs.len()));
                    for f in fs {
                        let start = seg_base[si] + f.payload_offset();
                        let n = pieces_of(f.payload_len);
                        for k in 0..n {
                            let bytes = piece.min(f.payload_len - k * piece) as u32;
                            off.push(start + k * piece);
                            len.push(match (k, n) {
                                (0, 1) => bytes | FIRST | WHOLE,
                                (0, _) => bytes | FIRST,
                                _ => bytes,
                            });
                        }
                    }
                    (off, len)
                })
                .collect()
        });
        let n: usize = per_chunk.iter().map(|c| c.0.len()).sum();
        let split = n > frames.iter().map(|(_, fs)| fs.len()).sum::<usize>();
        // The descriptors go up from the kept pinned staging when it is free (after a log
        // upload; not during one), else from ordinary memory.
        let (mismatches, crcs) = self.gpu.with_upload_memory(n * CHUNK_DESC_LEN, 0, |desc, _| {
            let (mut offs, mut lens) = desc.split_at_mut(8 * n);
            let mut regions = Vec::with_capacity(per_chunk.len());
            for c in &per_chunk {
                let (o, o_rest) = offs.split_at_mut(8 * c.0.len());
                let (l, l_rest) = lens.split_at_mut(4 * c.1.len());
                regions.push((o, l, c));
                (offs, lens) = (o_rest, l_rest);
            }
            on_check_threads(|| {
                regions.into_par_iter().for_each(|(o, l, (off, len))| {
                    put_le(o, off, |x| x.to_le_bytes());
                    put_le(l, len, |x| x.to_le_bytes());
                })
            });
            // Returns only once the device has read `desc`.
            self.gpu
                .kernels()?
                .check_record_pieces(&self.gpu.stream, log_base, desc, split)
        })?;
        if mismatches > 0 {
            return Ok(false);
        }
        if !split {
            return Ok(true);
        }
        // Records in several pieces: combine their pieces' CRCs.
        let full_shift = crc32c_shift_factor(piece);
        let mut at = 0usize;
        for (si, fs) in &frames {
            let s = &log.segments()[*si];
            for f in *fs {
                let n = pieces_of(f.payload_len) as usize;
                if n > 1 {
                    let mut crc = crcs[at];
                    for k in 1..n as u64 {
                        let bytes = piece.min(f.payload_len - k * piece);
                        let shift = if bytes == piece {
                            full_shift
                        } else {
                            crc32c_shift_factor(bytes)
                        };
                        crc = crc32c_combine_with(crc, crcs[at + k as usize], shift);
                    }
                    if crc != s.record_checksum(f) {
                        return Ok(false);
                    }
                }
                at += n;
            }
        }
        Ok(true)
    }
}

/// Bytes per piece when record checksums are checked on the device, one thread per piece, for
/// `payload_bytes` of payloads: at least about 4,096 pieces where the payloads allow (a thread
/// checks its piece serially, so a small log of a few large records in large pieces leaves the
/// device nearly idle and its check on the critical path), and at most 256 KiB (each extra
/// piece of a record is one more CRC combine on the host).
fn crc_piece_len(payload_bytes: u64) -> u64 {
    const MIN: u64 = 4 << 10;
    const MAX: u64 = 256 << 10;
    (payload_bytes / 4096).clamp(MIN, MAX).next_power_of_two().min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::plan::{TileRun, WriteDesc, Writes};

    #[test]
    fn checksum_pieces_shrink_for_small_logs_within_bounds() {
        assert_eq!(crc_piece_len(0), 4 << 10);
        assert_eq!(crc_piece_len(9 << 20), 4 << 10);
        assert_eq!(crc_piece_len(100 << 20), 32 << 10);
        assert_eq!(crc_piece_len(1 << 30), 256 << 10);
        assert_eq!(crc_piece_len(64 << 30), 256 << 10);
    }

    #[test]
    fn a_batch_upload_holds_each_array_where_its_layout_says() {
        let w = |i: u64| WriteDesc {
            offset: 10 * i,
            len: 3,
            src: 1000 + i,
            slot_kind: i % 2,
        };
        let b = WriteBatch {
            pages: vec![5, 9],
            writes: Writes::from_parts(vec![vec![w(0)], Vec::new(), vec![w(1), w(2)]]),
            entries: vec![2, 0, 1],
            tiles: vec![TileRun {
                key: 1 << 32 | 4,
                first_count: 3 << 32,
            }],
            value_base: Vec::new(),
            extra: vec![7, 8, 9],
        };
        let l = UploadLayout::of(&b, 2);
        let starts = [l.tiles, l.entries, l.writes, l.pages, l.value_base, l.extra];
        assert!(starts.iter().all(|s| s % 256 == 0), "{starts:?}");
        assert!(
            starts.windows(2).all(|s| s[0] < s[1]),
            "ascending, the empty value-base table too"
        );
        assert!(
            l.len >= l.extra + 3 + SOURCE_PAD,
            "room for the kernel's reads past the last byte"
        );
        let mut up = vec![0xEE; l.len];
        l.fill(&mut up, &b, &[0x1000, 0x2000]);
        let u64_at = |off: usize| u64::from_le_bytes(up[off..off + 8].try_into().unwrap());
        let u32_at = |off: usize| u32::from_le_bytes(up[off..off + 4].try_into().unwrap());
        assert_eq!((u64_at(l.tiles), u64_at(l.tiles + 8)), (1 << 32 | 4, 3 << 32));
        assert_eq!([0, 1, 2].map(|k| u32_at(l.entries + 4 * k)), [2, 0, 1]);
        let third = l.writes + 2 * 32;
        assert_eq!([0, 8, 16, 24].map(|k| u64_at(third + k)), [20, 3, 1002, 0]);
        assert_eq!((u64_at(l.pages), u64_at(l.pages + 8)), (0x1000, 0x2000));
        assert_eq!(&up[l.extra..l.extra + 3], &[7, 8, 9]);
    }
}
