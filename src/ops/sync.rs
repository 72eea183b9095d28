//! Weight sync: the difference between two sets of pages a process holds in memory (a trainer's
//! tensors before and after a step) appended to a log as one atomic group, and a log's deltas
//! applied in place onto pages another process holds (an inference server's tensors). A sync log
//! starts with a BASE record (docs/FORMAT.md), so that both sides know the base's pages by name,
//! dtype and shape without the checkpoint file.
//!
//! [`append_delta`] stamps each record with its own sequence number as its epoch: epochs rise
//! from step to step without the writer reading the log back, and a log's base (epochs zero,
//! first record 1) is below all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::encoding::{PageWrites, smallest_write};
use crate::error::{Error, Result};
use crate::format::base;
use crate::format::checkpoint::{CheckpointHead, PageEntry, head_of};
use crate::format::log::{Compression, Durability, Log, LogOptions, LogWriter};
use crate::format::record::{Delta, PageShape, TYPE_CREATE, TYPE_DELETE, TYPE_RESIZE, TargetPage, apply_writes};
use crate::fsutil::AtomicDir;
use crate::gpu::diff::{DeviceDiffer, DevicePair};
use crate::page::{PageMeta, StateHash, TensorInfo};
use crate::timing::ms;

/// A page a process holds, as it describes it: what is checked against the log's base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPage {
    /// The page's name (a tensor's key).
    pub name: String,
    /// Its safetensors dtype name, if it is a tensor.
    pub dtype: Option<String>,
    /// Its shape (empty for a scalar or a page of bytes).
    pub shape: Vec<u64>,
    /// Its length in bytes.
    pub len: u64,
}

/// A sync log, opened: every segment and record checked, and its base as the BASE record gives
/// it.
pub struct SyncLog {
    log: Log,
    base: CheckpointHead,
    /// The log's first sequence number (its BASE record's).
    first_seq: u64,
}

impl SyncLog {
    /// Opens the log at `paths` (a directory or segments) and reads its BASE record.
    pub fn open(paths: &[PathBuf]) -> Result<SyncLog> {
        SyncLog::open_at(paths, None)
    }

    /// Opens the log at `paths` for applying the records from `from_seq` on: its BASE record,
    /// from the first segment, and with `from_seq` only the segments from the one that holds it
    /// ([`Log::open_from`]): the segments between are not read, so an apply of the latest step
    /// costs that step, not the log's length. Pages' epochs are then known, and checked, from
    /// the first segment opened on. Every segment opened is checked, checksums included.
    pub fn open_at(paths: &[PathBuf], from_seq: Option<u64>) -> Result<SyncLog> {
        let (base, _, first_seq) = read_base(paths)?;
        let log = match from_seq {
            Some(from) => Log::open_from(paths, from)?,
            None => Log::open(paths)?,
        };
        log.check()?;
        Ok(SyncLog { log, base, first_seq })
    }

    /// The base's pages (ids, lengths, epochs, CRCs, names, dtypes, shapes).
    pub fn base(&self) -> &CheckpointHead {
        &self.base
    }

    /// The log itself.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The index in the base of each of `held`, matched by name: every page of the base must
    /// be held once, with its dtype, shape and length; the first that is not is named in a
    /// [`Error::HeldPagesNotBase`].
    pub fn match_pages(&self, held: &[HeldPage]) -> Result<Vec<usize>> {
        match_pages(&self.base, held, self.path())
    }

    fn path(&self) -> PathBuf {
        self.log
            .segments()
            .first()
            .map_or_else(PathBuf::new, |s| s.path().to_owned())
    }
}

fn no_base(paths: &[PathBuf]) -> Error {
    let at = paths.first().map_or_else(String::new, |p| p.display().to_string());
    Error::Invalid(format!(
        "{at}: the log has no BASE record, so the pages it applies to are known only by id: \
         replay it onto its checkpoint (`mmsb replay`, `mmsb.torch.load(CKPT, logs=[LOG])`) \
         instead"
    ))
}

/// The BASE record of the sync log at `paths`, from its first segment alone (it is that
/// segment's first record), with that segment's path and the log's first sequence number.
fn read_base(paths: &[PathBuf]) -> Result<(CheckpointHead, PathBuf, u64)> {
    let first = crate::format::log::expand_paths(paths)?
        .into_iter()
        .next()
        .ok_or_else(|| no_base(paths))?;
    let log = Log::open(std::slice::from_ref(&first))?;
    log.check()?;
    let base = base::read(&log)?.ok_or_else(|| no_base(paths))?;
    let first_seq = log.segments().first().map_or(1, |s| s.header().first_seq);
    Ok((base, first, first_seq))
}

fn wrong_base(path: &Path, base: &CheckpointHead, why: String) -> Error {
    Error::HeldPagesNotBase {
        path: path.to_owned(),
        log_base: base.state_hash().to_hex(),
        why,
    }
}

fn match_pages(base: &CheckpointHead, held: &[HeldPage], path: PathBuf) -> Result<Vec<usize>> {
    let by_name: BTreeMap<&str, usize> = base
        .pages
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.meta.name.as_deref().map(|n| (n, i)))
        .collect();
    let mut seen = vec![false; base.pages.len()];
    let mut out = Vec::with_capacity(held.len());
    for h in held {
        let Some(&i) = by_name.get(h.name.as_str()) else {
            return Err(wrong_base(
                &path,
                base,
                format!("tensor {:?} is not in the log's base", h.name),
            ));
        };
        let p = &base.pages[i];
        let (dtype, shape) = match &p.meta.tensor {
            Some(t) => (Some(t.dtype.as_str()), t.shape.as_slice()),
            None => (None, &[][..]),
        };
        if h.dtype.as_deref() != dtype || (dtype.is_some() && h.shape != shape) || h.len != p.len {
            return Err(wrong_base(
                &path,
                base,
                format!(
                    "tensor {:?} is {} {:?} ({} bytes); the log's base has {} {:?} ({} bytes)",
                    h.name,
                    h.dtype.as_deref().unwrap_or("bytes"),
                    h.shape,
                    h.len,
                    dtype.unwrap_or("bytes"),
                    shape,
                    p.len
                ),
            ));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(wrong_base(&path, base, format!("tensor {:?} is given twice", h.name)));
        }
        out.push(i);
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        let p = &base.pages[i];
        let name = p.meta.name.clone().unwrap_or_else(|| format!("page {}", p.id));
        return Err(wrong_base(
            &path,
            base,
            format!("tensor {name:?} of the log's base is not given"),
        ));
    }
    Ok(out)
}

/// Where an apply starts and stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqRange {
    /// The first record to apply; `None`: the log's first, onto pages that hold the base state
    /// (checked by their CRC32C). Otherwise the pages must hold the state after record
    /// `from - 1` (as a previous apply that returned `from - 1` left them).
    pub from: Option<u64>,
    /// The last record to apply; `None`: the log's last.
    pub to: Option<u64>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    /// Records applied.
    pub records: u64,
    /// Bytes they wrote.
    pub bytes_written: u64,
    /// Pages they wrote.
    pub pages_written: u64,
    /// The last record applied (pass it plus one as the next `from`); with no record applied,
    /// the one before `from`.
    pub last_seq: Option<u64>,
    /// Whether the pages' CRC32Cs were checked against the base.
    pub base_checked: bool,
    /// Bytes of the log segments the apply opened (those from the one holding `from` on).
    pub log_bytes_read: u64,
    /// Phase times, ms.
    pub timings_ms: ApplyTimings,
    /// Of a device apply: the replay's own figures (bytes uploaded, batches, and its phases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::gpu::apply::ApplyStats>,
}

/// Phase times of an apply, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyTimings {
    /// Opening the log (frame headers; on the CPU path every checksum) and its BASE record,
    /// and matching the pages by name.
    pub open: f64,
    /// Reading the epochs of the records before the range (the device path).
    pub scan: f64,
    /// Checking the pages' CRC32Cs against the base.
    pub check_base: f64,
    /// Of the device apply: the records' upload to the device.
    pub upload: f64,
    /// Of the device apply: planning the writes.
    pub plan: f64,
    /// Writing the records into the pages (on the device: the whole apply, upload, checks and
    /// plan included, until the device has finished).
    pub apply: f64,
    /// The whole call.
    pub total: f64,
}

/// Walks the deltas of `log` up to `range.to`, checking each against the base's page lengths
/// and the pages' epochs, and calls `visit(base index, delta, seq)` for those from `range.from`
/// on. Structural records (create, delete, resize) are refused: held pages keep their shapes.
/// An apply walks twice, writing on the second walk only, so that a log that does not apply
/// leaves the pages as they were.
pub fn walk_deltas(log: &SyncLog, range: SeqRange, visit: &mut dyn FnMut(usize, &Delta<'_>, u64)) -> Result<()> {
    let base = &log.base;
    let slot: BTreeMap<u64, usize> = base.pages.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut shapes: Vec<PageShape> = base
        .pages
        .iter()
        .map(|p| PageShape {
            len: p.len,
            epoch: p.epoch,
        })
        .collect();
    for rec in log.log.records() {
        if range.to.is_some_and(|n| rec.frame.seq > n) {
            break;
        }
        let at = |e: crate::error::Rejection| Error::DeltaRejected {
            path: rec.segment.path().to_owned(),
            offset: rec.frame.offset,
            seq: rec.frame.seq,
            reason: e,
        };
        if matches!(rec.frame.kind, TYPE_CREATE | TYPE_DELETE | TYPE_RESIZE) {
            return Err(Error::Invalid(format!(
                "{}: at byte offset {}: record {} creates, deletes or resizes a page, which pages \
                 held in memory cannot follow: replay the log onto its checkpoint instead",
                rec.segment.path().display(),
                rec.frame.offset,
                rec.frame.seq
            )));
        }
        let target = |id: u64| {
            slot.get(&id)
                .map_or(TargetPage::Missing, |&i| TargetPage::Len(shapes[i].len))
        };
        let Some(delta) = rec.delta_for_page(target)? else {
            continue;
        };
        let i = slot.get(&delta.page_id).copied();
        delta.check(i.map(|i| shapes[i])).map_err(at)?;
        let i = i.expect("checked: the page exists");
        shapes[i].epoch = delta.epoch;
        if range.from.is_none_or(|f| rec.frame.seq >= f) {
            visit(i, &delta, rec.frame.seq);
        }
    }
    Ok(())
}

/// Refuses buffers that share memory, given as `(name, address, length)`: a caller that makes
/// writable slices from addresses (a foreign-function boundary) checks this first.
pub fn refuse_shared_memory(buffers: &[(&str, usize, usize)]) -> Result<()> {
    let mut spans: Vec<(usize, usize, &str)> = buffers
        .iter()
        .filter(|(_, _, len)| *len > 0)
        .map(|(name, addr, len)| (*addr, addr.saturating_add(*len), *name))
        .collect();
    spans.sort_unstable();
    match spans.windows(2).find(|w| w[1].0 < w[0].1) {
        Some(w) => Err(Error::Invalid(format!(
            "tensors {:?} and {:?} share memory: each tensor to apply onto must be its own",
            w[0].2, w[1].2
        ))),
        None => Ok(()),
    }
}

/// Applies `log`'s records in `range` in place onto the pages `held` describes, whose bytes are
/// `pages` (in `held`'s order; matched to the base by name, [`SyncLog::match_pages`]). From the
/// log's start, each page's CRC32C is first checked against the base's, and the first that
/// differs is named.
pub fn apply_to_host(log: &SyncLog, held: &[HeldPage], pages: Vec<&mut [u8]>, range: SeqRange) -> Result<ApplyReport> {
    let start = std::time::Instant::now();
    let mut t = ApplyTimings::default();
    let base = &log.base;
    if pages.len() != held.len() || pages.iter().zip(held).any(|(p, h)| p.len() as u64 != h.len) {
        return Err(Error::Invalid(
            "each page described needs its bytes, of its length".into(),
        ));
    }
    let order = log.match_pages(held)?;
    let mut by_base: Vec<(usize, &mut [u8])> = order.into_iter().zip(pages).collect();
    by_base.sort_unstable_by_key(|(i, _)| *i);
    let mut pages: Vec<&mut [u8]> = by_base.into_iter().map(|(_, p)| p).collect();
    let from_start = range.from.is_none_or(|f| f <= log.first_seq);
    let phase = std::time::Instant::now();
    if from_start {
        use rayon::prelude::*;
        let crcs: Vec<u32> = pages.par_iter().map(|p| crate::format::crc32c_parallel(p)).collect();
        if let Some((e, c)) = base.pages.iter().zip(&crcs).find(|(e, c)| e.crc32c != **c) {
            let name = e.meta.name.clone().unwrap_or_else(|| format!("page {}", e.id));
            return Err(wrong_base(
                &log.path(),
                base,
                format!(
                    "tensor {name:?} does not hold the log's base bytes (CRC32C {c:08x}, the base's {:08x})",
                    e.crc32c
                ),
            ));
        }
    }
    t.check_base = ms(phase);
    let phase = std::time::Instant::now();
    walk_deltas(log, range, &mut |_, _, _| {})?;
    let mut report = ApplyReport {
        base_checked: from_start,
        last_seq: range.from.and_then(|f| f.checked_sub(1)),
        log_bytes_read: log.log.segments().iter().map(|s| s.file_len()).sum(),
        ..Default::default()
    };
    let mut written = vec![false; pages.len()];
    walk_deltas(log, range, &mut |i, delta, seq| {
        apply_writes(&delta.op, pages[i]);
        report.records += 1;
        report.bytes_written += delta.written_bytes();
        report.last_seq = Some(seq);
        written[i] = true;
    })?;
    report.pages_written = written.iter().filter(|w| **w).count() as u64;
    t.apply = ms(phase);
    t.total = ms(start);
    report.timings_ms = t;
    Ok(report)
}

/// Applies the records of the log at `paths` in `range` onto pages in device memory, in place,
/// with the replay's kernels: the records from `range.from` on travel to the device (a sync
/// log's earlier segments are left out) and are checked there, their CRC32Cs first, and only
/// their bytes cross the bus. `held` names the pages and `ptrs` gives each one's device address,
/// in the same order. From the log's start, every page's CRC32C is first computed on the device
/// and checked against the base's. The log is opened reading only frame headers, and with
/// `range.from` only from the segment that holds it on ([`Log::open_deferred_from`]); the
/// epochs of the records before `range.from` there are read from their payloads' first bytes.
///
/// # Safety
///
/// Each pointer must satisfy [`crate::gpu::store::DevicePageStore::over_device_memory`]'s contract for its page.
pub unsafe fn apply_to_device(
    gpu: &std::sync::Arc<crate::gpu::Gpu>,
    paths: &[PathBuf],
    held: &[HeldPage],
    ptrs: &[u64],
    range: SeqRange,
) -> Result<ApplyReport> {
    use crate::gpu::store::{DevicePageStore, KnownCrcs};
    let start = std::time::Instant::now();
    let mut t = ApplyTimings::default();
    let (base, path, log_first) = read_base(paths)?;
    let mut log = match range.from {
        Some(from) => Log::open_deferred_from(paths, from)?,
        None => Log::open_deferred(paths)?,
    };
    log.check()?;
    let order = match_pages(&base, held, path.clone())?;
    if ptrs.len() != held.len() {
        return Err(Error::Invalid(format!(
            "{} pages and {} device addresses",
            held.len(),
            ptrs.len()
        )));
    }
    let mut addr = vec![0u64; base.pages.len()];
    for (&i, &p) in order.iter().zip(ptrs) {
        addr[i] = p;
    }
    t.open = ms(start);
    let phase = std::time::Instant::now();
    let slot: BTreeMap<u64, usize> = base.pages.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let from = range.from.unwrap_or(log_first).max(log_first);
    // The pages' epochs as of `from` (as far as the segments opened tell), and the pages
    // written after it.
    let mut now = base.clone();
    let mut written = vec![false; base.pages.len()];
    for seg in log.segments() {
        for f in seg.frames() {
            if range.to.is_some_and(|n| f.seq > n) {
                break;
            }
            if matches!(f.kind, TYPE_CREATE | TYPE_DELETE | TYPE_RESIZE) {
                return Err(Error::Invalid(format!(
                    "{}: at byte offset {}: record {} creates, deletes or resizes a page, which pages \
                     held in memory cannot follow: replay the log onto its checkpoint instead",
                    seg.path().display(),
                    f.offset,
                    f.seq
                )));
            }
            if f.kind >= crate::format::record::OPTIONAL_TYPE_MIN {
                continue;
            }
            let (page, epoch) = seg.page_and_epoch(f)?;
            if let Some(&i) = slot.get(&page) {
                if f.seq < from {
                    now.pages[i].epoch = epoch;
                } else {
                    written[i] = true;
                }
            }
        }
    }
    t.scan = ms(phase);
    let phase = std::time::Instant::now();
    // SAFETY: the caller's contract, page by page, as this function's.
    let mut store = unsafe {
        DevicePageStore::over_device_memory(gpu, base.state_hash(), now.pages.iter().zip(addr.iter().copied()))
    };
    let from_start = from == log_first;
    if from_start {
        let crcs = store.checksums(KnownCrcs::Recompute)?;
        for ((_, _, _, crc), e) in crcs.iter().zip(&base.pages) {
            if *crc != e.crc32c {
                let name = e.meta.name.clone().unwrap_or_else(|| format!("page {}", e.id));
                return Err(wrong_base(
                    &path,
                    &base,
                    format!(
                        "tensor {name:?} does not hold the log's base bytes (CRC32C {crc:08x} on the device, the base's {:08x})",
                        e.crc32c
                    ),
                ));
            }
        }
    }
    t.check_base = ms(phase);
    let phase = std::time::Instant::now();
    log.drop_segments_before(from);
    let limit = crate::replay::ReplayLimit {
        to_seq: range.to,
        to_epoch: None,
    };
    let (summary, stats) = store.apply_log_from(&log, &now, from, limit)?;
    gpu.synchronize()?;
    t.apply = ms(phase);
    t.upload = stats.upload_ms;
    t.plan = stats.plan_ms;
    t.total = ms(start);
    Ok(ApplyReport {
        records: summary.records,
        bytes_written: summary.bytes_written,
        pages_written: written.iter().filter(|w| **w).count() as u64,
        last_seq: summary.last_seq.or(from.checked_sub(1)),
        base_checked: from_start,
        log_bytes_read: log.segments().iter().map(|s| s.file_len()).sum(),
        timings_ms: t,
        device: Some(stats),
    })
}

/// One held page's bytes to compare: windows of it before and after, which together cover
/// every byte that may differ (the whole page, or the chunks a device found different).
#[derive(Debug, Clone)]
pub struct ChangedPage<'a> {
    /// The page's name.
    pub name: &'a str,
    /// `(offset, old bytes, new bytes)`, ascending and disjoint, each pair of one length.
    pub windows: Vec<(u64, &'a [u8], &'a [u8])>,
}

impl<'a> ChangedPage<'a> {
    /// A page compared whole: one window over all of its old and new bytes.
    pub fn whole(name: &'a str, old: &'a [u8], new: &'a [u8]) -> ChangedPage<'a> {
        ChangedPage {
            name,
            windows: vec![(0, old, new)],
        }
    }
}

/// What [`append_delta`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    /// The log directory.
    pub log: PathBuf,
    /// The state the log applies to.
    pub base_state_hash: StateHash,
    /// Whether this call created the log.
    pub created: bool,
    /// Records written (one per changed page).
    pub records: u64,
    /// Sequence numbers of the first and last record written (`None` when nothing changed).
    pub first_seq: Option<u64>,
    /// The last of them.
    pub last_seq: Option<u64>,
    /// Bytes that differ.
    pub bytes_changed: u64,
    /// Payload bytes of the records, before compression.
    pub payload_bytes: u64,
    /// Bytes appended to the log: the records' frames, and the header of the segment they
    /// start.
    pub log_bytes_written: u64,
    /// Phase times, ms.
    pub timings_ms: DeltaTimings,
}

impl crate::metrics::Measured for DeltaReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.records;
        m.pages += self.records;
        m.written_bytes += self.log_bytes_written;
        m.phases_ms(&self.timings_ms);
    }
}

impl crate::metrics::Measured for ApplyReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.records;
        m.pages += self.pages_written;
        m.read_bytes += self.log_bytes_read;
        m.phases_ms(&self.timings_ms);
    }
}

/// Phase times of [`append_delta`], ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltaTimings {
    /// On a device ([`append_delta_from_device`]): marking the windows that differ and copying
    /// their bytes to the host.
    pub compare_on_device: f64,
    /// Taking the lock and opening the log for appending, and reading its BASE record.
    pub open: f64,
    /// Finding the changed ranges and choosing each page's record.
    pub diff: f64,
    /// Encoding and writing the group.
    pub write: f64,
    /// Syncing it to disk.
    pub sync: f64,
    /// The whole call.
    pub total: f64,
}

/// Where a page's windows differ: spans from a differing byte to a differing byte, joined
/// across gaps of equal bytes shorter than a sparse record's table entry where the windows hold
/// the bytes between (an optimizer step leaves a row's bytes mostly changed but not all: a
/// BF16's high byte often stays), ascending as `(offset, end)`; and how many bytes differ.
///
/// A gap of 16 equal bytes or more holds a whole aligned 8-byte word of equal bytes, so the
/// windows are compared a word at a time and only a word where some byte differs is looked
/// into (for its first or last differing byte, and how many differ).
fn changed_spans(page: &ChangedPage<'_>, len: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    const GAP: u64 = super::encoding::SPARSE_RANGE_COST;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    let mut changed = 0u64;
    let mut end = 0u64;
    // A differing stretch `[first, last)` of bytes: joins the open span or starts the next.
    let found = |spans: &mut Vec<(u64, u64)>, open: &mut Option<(u64, u64)>, first: u64, last: u64| match open {
        Some((_, e)) if first - *e < GAP => *e = last,
        _ => spans.extend(open.replace((first, last))),
    };
    for (off, old, new) in &page.windows {
        if old.len() != new.len() || *off < end || off.checked_add(new.len() as u64).is_none_or(|e| e > len) {
            return Err(Error::Invalid(format!(
                "tensor {:?}: a window of {} old and {} new bytes at {off} does not fit its {len} bytes \
                 after the windows before it",
                page.name,
                old.len(),
                new.len()
            )));
        }
        // The bytes between this window and the last were not compared: no span crosses them.
        if *off != end {
            spans.extend(open.take());
        }
        end = off + new.len() as u64;
        let words = old.len() / 8;
        for (i, (a, b)) in old.chunks_exact(8).zip(new.chunks_exact(8)).enumerate() {
            let x =
                u64::from_le_bytes(a.try_into().expect("8 bytes")) ^ u64::from_le_bytes(b.try_into().expect("8 bytes"));
            if x == 0 {
                continue;
            }
            // Byte k of the word is bits 8k..8k+8 (little-endian).
            let at = off + 8 * i as u64;
            changed += u64::from(differing_bytes(x));
            found(
                &mut spans,
                &mut open,
                at + u64::from(x.trailing_zeros() / 8),
                at + 8 - u64::from(x.leading_zeros() / 8),
            );
        }
        for j in words * 8..old.len() {
            if old[j] != new[j] {
                changed += 1;
                let at = off + j as u64;
                found(&mut spans, &mut open, at, at + 1);
            }
        }
    }
    spans.extend(open);
    Ok((spans, changed))
}

/// How many of the 8 bytes of `x` are not zero.
fn differing_bytes(x: u64) -> u32 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // A byte's high bit ends up set when any of its bits is.
    ((((x & LOW7) + LOW7) | x) & !LOW7).count_ones()
}

/// The page's new bytes at `[from, to)`, which the windows hold (a span crosses windows only
/// where they meet): borrowed from one window, or joined from several.
fn span_bytes<'a>(windows: &[(u64, &'a [u8], &'a [u8])], from: u64, to: u64) -> Result<std::borrow::Cow<'a, [u8]>> {
    let first = windows.partition_point(|(o, _, n)| o + n.len() as u64 <= from);
    let missing = || Error::Invalid(format!("bytes {from}..{to} of a changed span are in no window"));
    let &(o, _, n) = windows.get(first).ok_or_else(missing)?;
    if o <= from && to <= o + n.len() as u64 {
        return Ok(std::borrow::Cow::Borrowed(&n[(from - o) as usize..(to - o) as usize]));
    }
    let mut out = Vec::with_capacity((to - from) as usize);
    let mut at = from;
    for (o, _, n) in &windows[first..] {
        if at == to || *o > at {
            break;
        }
        let end = (o + n.len() as u64).min(to);
        out.extend_from_slice(&n[(at - o) as usize..(end - o) as usize]);
        at = end;
    }
    if at != to {
        return Err(missing());
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// How [`append_delta`] writes a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOptions {
    /// Payload compression (changed weights are close to random: zstd saves only a few percent
    /// of them, and costs a core's time per step).
    pub compression: Compression,
    /// The step is on disk when the call returns (fdatasync, and its new segment's file and
    /// name synced). Without, it is left to the OS ([`Durability::NoSync`]): it survives the
    /// writer's death at any instant, not a power loss; for a log that only carries steps to
    /// another process on the same host and is made again if lost.
    pub durable: bool,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            compression: Compression::None,
            durable: true,
        }
    }
}

impl StepOptions {
    /// Durable steps compressed as `compression` says.
    pub fn compressed(compression: Compression) -> StepOptions {
        StepOptions {
            compression,
            ..StepOptions::default()
        }
    }
}

/// The options a sync log is written with: a segment per step (a reader uploads only the steps
/// it has not applied), records synced at each step's end where `step` is durable.
fn sync_options(step: StepOptions) -> LogOptions {
    LogOptions {
        segment_size: 1,
        durability: if step.durable {
            Durability::Never
        } else {
            Durability::NoSync
        },
        compression: step.compression,
    }
}

/// Creates the sync log `dir` against the state `pages` describe (each with its CRC32C, epochs
/// zero, ids in order): a log holding only its BASE record, which appears whole or not at all.
/// Refused when `dir` exists.
pub fn create_log(dir: &Path, pages: &[(HeldPage, u32)]) -> Result<StateHash> {
    let entries: Vec<PageEntry> = pages
        .iter()
        .enumerate()
        .map(|(id, (h, crc))| PageEntry {
            id: id as u64,
            offset: 0,
            len: h.len,
            epoch: 0,
            crc32c: *crc,
            meta: PageMeta {
                name: Some(h.name.clone()),
                tensor: h.dtype.as_ref().map(|d| TensorInfo {
                    dtype: d.clone(),
                    shape: h.shape.clone(),
                }),
                ..Default::default()
            },
        })
        .collect();
    let hash = StateHash::compute(entries.iter().map(|p| (p.id, p.len, p.epoch, p.crc32c)));
    let head = head_of(entries, &BTreeMap::new())?;
    let payload = base::encode(&head, crate::timing::now_ns(), "mmsb delta")?;
    let out = AtomicDir::create(dir)?;
    let mut w = LogWriter::create(out.path(), hash, 1, sync_options(StepOptions::default()))?;
    w.append_payload(base::TYPE_BASE, &payload)?;
    w.sync()?;
    w.finish()?;
    out.commit()?;
    Ok(hash)
}

/// Appends the difference between the old and new bytes of `pages` to the sync log `dir` as
/// one atomic group, under the log's lock: per changed page the smallest of a full, sparse or
/// masked write, compressed as `step` says (`Auto`: zstd where it saves a 32nd), each stamped
/// with its sequence number as its epoch, and on disk at return where `step` is durable. Names
/// are checked against the log's BASE record.
pub fn append_delta(dir: &Path, pages: &[ChangedPage<'_>], step: StepOptions) -> Result<DeltaReport> {
    let start = std::time::Instant::now();
    let mut t = DeltaTimings::default();
    let mut w = LogWriter::open(dir, sync_options(step))?;
    let (head, _, _) = read_base(&[dir.to_owned()])?;
    let ids: BTreeMap<&str, (u64, u64)> = head
        .pages
        .iter()
        .filter_map(|p| p.meta.name.as_deref().map(|n| (n, (p.id, p.len))))
        .collect();
    let mut report = DeltaReport {
        log: dir.to_owned(),
        base_state_hash: head.state_hash(),
        created: false,
        records: 0,
        first_seq: None,
        last_seq: None,
        bytes_changed: 0,
        payload_bytes: 0,
        log_bytes_written: 0,
        timings_ms: DeltaTimings::default(),
    };
    t.open = ms(start);
    let phase = std::time::Instant::now();
    use rayon::prelude::*;
    let found = pages
        .par_iter()
        .map(|page| {
            let Some(&(id, len)) = ids.get(page.name) else {
                return Err(wrong_base(
                    dir,
                    &head,
                    format!("tensor {:?} is not in the log's base", page.name),
                ));
            };
            let (spans, changed) = changed_spans(page, len)?;
            let bytes = spans
                .iter()
                .map(|&(s, e)| span_bytes(&page.windows, s, e))
                .collect::<Result<Vec<_>>>()?;
            let slices: Vec<(u64, &[u8])> = spans.iter().zip(&bytes).map(|(s, b)| (s.0, &b[..])).collect();
            let whole = page.windows.len() == 1 && page.windows[0].0 == 0 && page.windows[0].2.len() as u64 == len;
            let write = smallest_write(&PageWrites {
                ranges: &slices,
                page_len: Some(len),
                target: whole.then(|| page.windows[0].2),
            });
            Ok((changed, write.map(|w| (id, w))))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut records = Vec::new();
    for (changed, write) in found {
        report.bytes_changed += changed;
        records.extend(write);
    }
    t.diff = ms(phase);
    if records.is_empty() {
        t.total = ms(start);
        report.timings_ms = t;
        return Ok(report);
    }
    let phase = std::time::Instant::now();
    // Encoded, compressed and framed in parallel, appended in order.
    let now = crate::timing::now_ns();
    let first_seq = w.next_seq();
    let payload_bytes = std::sync::atomic::AtomicU64::new(0);
    w.begin_group()?;
    w.append_many_in_group(records.len(), |i| {
        let (id, write) = &records[i];
        let delta = Delta {
            page_id: *id,
            epoch: first_seq + i as u64,
            timestamp_ns: now,
            source: "mmsb delta".into(),
            op: write.op(),
        };
        let payload = delta.encode()?;
        payload_bytes.fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((delta.kind(), payload))
    })?;
    report.records = records.len() as u64;
    report.first_seq = Some(first_seq);
    report.last_seq = Some(first_seq + records.len() as u64 - 1);
    report.payload_bytes = payload_bytes.into_inner();
    w.commit_group()?;
    report.log_bytes_written = w.bytes_appended();
    t.write = ms(phase);
    let phase = std::time::Instant::now();
    w.sync()?;
    w.finish()?;
    t.sync = ms(phase);
    t.total = ms(start);
    report.timings_ms = t;
    Ok(report)
}

/// [`append_delta`] for pages whose old and new bytes lie in device memory, each given by name
/// and its pair of buffers: the windows where they differ are found on the device and only
/// those travel to the host ([`DeviceDiffer::changed_windows`]), where the exact changed bytes
/// are found and encoded as [`append_delta`] does.
///
/// # Safety
///
/// Each pair must satisfy [`DeviceDiffer::changed_windows`]'s contract.
pub unsafe fn append_delta_from_device(
    dir: &Path,
    differ: &mut DeviceDiffer,
    pages: &[(&str, DevicePair)],
    step: StepOptions,
) -> Result<DeltaReport> {
    let start = std::time::Instant::now();
    let pairs: Vec<DevicePair> = pages.iter().map(|(_, p)| *p).collect();
    // SAFETY: the caller's contract, pair by pair.
    let found = unsafe { differ.changed_windows(&pairs)? };
    let mut changed: Vec<(usize, ChangedPage<'_>)> = Vec::new();
    for r in &found.runs {
        let window = (
            r.offset,
            &found.old[r.at_old..r.at_old + r.len],
            &found.new[r.at_new..r.at_new + r.len],
        );
        match changed.last_mut() {
            Some((pair, page)) if *pair == r.pair => page.windows.push(window),
            _ => changed.push((
                r.pair,
                ChangedPage {
                    name: pages[r.pair].0,
                    windows: vec![window],
                },
            )),
        }
    }
    let changed: Vec<ChangedPage<'_>> = changed.into_iter().map(|(_, p)| p).collect();
    let compare = ms(start);
    let mut report = append_delta(dir, &changed, step)?;
    report.timings_ms.compare_on_device = compare;
    report.timings_ms.total += compare;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::{Checkpoint, PageSpec, write_checkpoint};
    use crate::replay::{PageCheck, ReplayLimit, State};

    fn held(name: &str, len: usize) -> HeldPage {
        HeldPage {
            name: name.into(),
            dtype: Some("U8".into()),
            shape: vec![len as u64],
            len: len as u64,
        }
    }

    /// Two tensors, their base bytes, and a sync log created against them.
    fn setup(dir: &Path) -> (PathBuf, Vec<HeldPage>, Vec<Vec<u8>>) {
        let old: Vec<Vec<u8>> = vec![(0..200u8).collect(), vec![7; 5000]];
        let held = vec![held("w", 200), held("emb", 5000)];
        let with_crc: Vec<(HeldPage, u32)> = held
            .iter()
            .zip(&old)
            .map(|(h, b)| (h.clone(), crate::format::crc32c(b)))
            .collect();
        let log = dir.join("sync.log");
        create_log(&log, &with_crc).unwrap();
        (log, held, old)
    }

    fn step<'a>(old: &'a [Vec<u8>], new: &'a [Vec<u8>], names: &'a [&'a str]) -> Vec<ChangedPage<'a>> {
        names
            .iter()
            .zip(old.iter().zip(new))
            .map(|(n, (o, w))| ChangedPage::whole(n, o, w))
            .collect()
    }

    #[test]
    fn steps_appended_by_delta_apply_in_place_and_replay_onto_the_saved_base() {
        let dir = tempfile::tempdir().unwrap();
        let (log, held, old) = setup(dir.path());
        let names = ["w", "emb"];
        let mut s1 = old.clone();
        s1[0][10..20].fill(0xAA);
        s1[1][4000] = 1;
        let before = crate::format::log::segment_bytes(&[&log]);
        let r1 = append_delta(
            &log,
            &step(&old, &s1, &names),
            StepOptions::compressed(Compression::Auto),
        )
        .unwrap();
        assert_eq!(
            r1.log_bytes_written,
            crate::format::log::segment_bytes(&[&log]) - before
        );
        assert_eq!(
            (r1.records, r1.bytes_changed, r1.first_seq, r1.last_seq),
            (2, 11, Some(2), Some(3))
        );
        let mut s2 = s1.clone();
        s2[1][..100].fill(3);
        let r2 = append_delta(&log, &step(&s1, &s2, &names), StepOptions::default()).unwrap();
        assert_eq!((r2.records, r2.first_seq), (1, Some(4)));
        // Nothing changed: nothing written.
        assert_eq!(
            append_delta(&log, &step(&s2, &s2, &names), StepOptions::default())
                .unwrap()
                .records,
            0
        );

        let sync = SyncLog::open(std::slice::from_ref(&log)).unwrap();
        // The tensors may come in any order; the apply takes them in the base's.
        let reversed = [held[1].clone(), held[0].clone()];
        assert_eq!(sync.match_pages(&reversed).unwrap(), vec![1, 0]);
        let mut mem = old.clone();
        let to_step1 = SeqRange {
            from: None,
            to: Some(3),
        };
        let pages: Vec<&mut [u8]> = mem.iter_mut().map(|v| &mut v[..]).collect();
        let rep = apply_to_host(&sync, &held, pages, to_step1).unwrap();
        assert_eq!(mem, s1);
        assert_eq!((rep.records, rep.last_seq, rep.base_checked), (2, Some(3), true));
        // Given in another order, the tensors are matched by name.
        let (w, emb) = mem.split_at_mut(1);
        let pages: Vec<&mut [u8]> = vec![&mut emb[0][..], &mut w[0][..]];
        let from_step2 = SeqRange {
            from: Some(4),
            to: None,
        };
        let rep = apply_to_host(&sync, &reversed, pages, from_step2).unwrap();
        assert_eq!(mem, s2);
        assert_eq!((rep.records, rep.last_seq, rep.base_checked), (1, Some(4), false));

        // The base saved as a checkpoint (as `mmsb.numpy.save` writes it) is the log's base:
        // any reader replays the sync log onto it.
        let ckpt = dir.path().join("base.ckpt");
        let pages = held.iter().zip(&old).enumerate().map(|(id, (h, b))| {
            let spec = PageSpec {
                id: id as u64,
                len: h.len,
                epoch: 0,
                meta: sync.base().pages[id].meta.clone(),
            };
            (spec, &b[..])
        });
        let hash = write_checkpoint(&ckpt, BTreeMap::new(), pages).unwrap();
        assert_eq!(hash, sync.base().state_hash());
        let c = Checkpoint::open(&ckpt).unwrap();
        let mut state = State::from_checkpoint(&c, PageCheck::Check).unwrap();
        state.replay(sync.log(), ReplayLimit::default()).unwrap();
        assert_eq!(state.page(0).unwrap().data(), &s2[0][..]);
        assert_eq!(state.page(1).unwrap().data(), &s2[1][..]);
    }

    #[test]
    fn an_apply_from_a_later_step_reads_only_the_segments_from_that_step_on() {
        let dir = tempfile::tempdir().unwrap();
        let (log, held, old) = setup(dir.path());
        let names = ["w", "emb"];
        let mut states = vec![old.clone()];
        for k in 0..3u8 {
            let mut next = states.last().unwrap().clone();
            next[0][k as usize] = 100 + k;
            next[1][1000 * k as usize] = k;
            append_delta(
                &log,
                &step(states.last().unwrap(), &next, &names),
                StepOptions::default(),
            )
            .unwrap();
            states.push(next);
        }
        // Segment 0 holds the BASE record, 1 to 3 a step each (records 2-3, 4-5, 6-7). Damage
        // step 1's segment: a follower past it never reads it; a reader from the start does.
        let seg1 = crate::format::log::segment_path(&log, 1);
        let mut bytes = std::fs::read(&seg1).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&seg1, bytes).unwrap();
        let sync = SyncLog::open_at(std::slice::from_ref(&log), Some(6)).unwrap();
        assert_eq!(sync.log().segments().len(), 1);
        let mut mem = states[2].clone();
        let pages: Vec<&mut [u8]> = mem.iter_mut().map(|v| &mut v[..]).collect();
        let range = SeqRange {
            from: Some(6),
            to: None,
        };
        let rep = apply_to_host(&sync, &held, pages, range).unwrap();
        assert_eq!((rep.records, rep.last_seq, rep.base_checked), (2, Some(7), false));
        assert_eq!(mem, states[3]);
        assert!(SyncLog::open(std::slice::from_ref(&log)).is_err());
        // Appending reads only the last segment too.
        let mut next = states[3].clone();
        next[0][50] = 1;
        let r = append_delta(&log, &step(&states[3], &next, &names), StepOptions::default()).unwrap();
        assert_eq!(r.first_seq, Some(8));
    }

    #[test]
    fn close_runs_join_only_where_the_windows_hold_the_bytes_between() {
        let old = [0u8; 36];
        let mut new = [0u8; 36];
        for i in [2, 3, 6, 7, 8, 9, 15, 21] {
            new[i] = 1;
        }
        // Windows 0..16 and 20..36: bytes 16..20 were not compared (no window holds them).
        let windows = vec![(0, &old[..16], &new[..16]), (20, &old[20..], &new[20..])];
        let page = ChangedPage { name: "p", windows };
        let (spans, changed) = changed_spans(&page, 36).unwrap();
        // 2..16 is one span (its gaps are in the first window); 21 stays apart from it.
        assert_eq!(spans, vec![(2, 16), (21, 22)]);
        assert_eq!(changed, 8);
        assert_eq!(&span_bytes(&page.windows, 2, 16).unwrap()[..], &new[2..16]);
        assert!(span_bytes(&page.windows, 15, 21).is_err());
        // Windows out of order, or past the page, are refused.
        let bad = ChangedPage {
            name: "p",
            windows: vec![(20, &old[20..], &new[20..]), (0, &old[..16], &new[..16])],
        };
        assert!(changed_spans(&bad, 36).is_err());
        assert!(changed_spans(&page, 30).is_err());
    }

    /// The spans a byte-by-byte reading finds: every differing byte, joined to the one before
    /// when fewer than 16 equal bytes lie between and the windows hold them all.
    fn spans_byte_by_byte(windows: &[(u64, &[u8], &[u8])]) -> (Vec<(u64, u64)>, u64) {
        let mut held = std::collections::BTreeSet::new();
        let mut differ = Vec::new();
        for (o, a, b) in windows {
            for j in 0..a.len() {
                held.insert(o + j as u64);
                if a[j] != b[j] {
                    differ.push(o + j as u64);
                }
            }
        }
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for &d in &differ {
            match spans.last_mut() {
                Some((_, e)) if d - *e < 16 && (*e..d).all(|k| held.contains(&k)) => *e = d + 1,
                _ => spans.push((d, d + 1)),
            }
        }
        (spans, differ.len() as u64)
    }

    proptest::proptest! {
        #[test]
        fn spans_found_a_word_at_a_time_are_those_found_byte_by_byte(
            old in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..600),
            // Runs of differing bytes (gap before, length, how each byte changes), with gaps of
            // every length around 16.
            edits in proptest::collection::vec((0usize..24, 1usize..12, 1u8..=255), 0..80),
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            let len = old.len();
            let mut new = old.clone();
            let mut at = 0;
            for (gap, run, by) in edits {
                at += gap;
                for _ in 0..run {
                    if at < len {
                        new[at] = new[at].wrapping_add(by);
                    }
                    at += 1;
                }
            }
            // Windows from the cut points; every other hole left out (not compared).
            let mut points: Vec<usize> = cuts.into_iter().filter(|c| *c < len).collect();
            points.extend([0, len]);
            points.sort_unstable();
            points.dedup();
            let windows: Vec<(u64, &[u8], &[u8])> = points
                .windows(2)
                .enumerate()
                .filter(|(i, _)| i % 3 != 1)
                .map(|(_, w)| (w[0] as u64, &old[w[0]..w[1]], &new[w[0]..w[1]]))
                .collect();
            let page = ChangedPage { name: "p", windows };
            let (spans, changed) = changed_spans(&page, len as u64).unwrap();
            proptest::prop_assert_eq!((spans.clone(), changed), spans_byte_by_byte(&page.windows));
            for (s, e) in spans {
                proptest::prop_assert_eq!(&span_bytes(&page.windows, s, e).unwrap()[..], &new[s as usize..e as usize]);
            }
        }
    }

    #[test]
    fn held_pages_that_are_not_the_base_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (log, held, old) = setup(dir.path());
        let sync = SyncLog::open(std::slice::from_ref(&log)).unwrap();
        let message = |r: Result<Vec<usize>>| r.unwrap_err().to_string();
        assert!(message(sync.match_pages(&held[..1])).contains("\"emb\" of the log's base is not given"));
        let mut other = held.clone();
        other[1].dtype = Some("F32".into());
        assert!(message(sync.match_pages(&other)).contains("tensor \"emb\" is F32"));
        other[1] = HeldPage {
            name: "bias".into(),
            ..held[1].clone()
        };
        assert!(message(sync.match_pages(&other)).contains("\"bias\" is not in the log's base"));
        // Bytes that are not the base's: named, and nothing written.
        let mut mem = old.clone();
        mem[1][9] ^= 1;
        let before = mem.clone();
        let pages: Vec<&mut [u8]> = mem.iter_mut().map(|v| &mut v[..]).collect();
        let e = apply_to_host(&sync, &held, pages, SeqRange::default()).unwrap_err();
        assert!(matches!(e, Error::HeldPagesNotBase { .. }));
        assert!(
            e.to_string().contains("\"emb\" does not hold the log's base bytes"),
            "{e}"
        );
        assert_eq!(mem, before);
    }

    #[test]
    fn a_record_that_does_not_apply_leaves_every_page_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (log, held, old) = setup(dir.path());
        let mut s1 = old.clone();
        s1[0][0] = 99;
        append_delta(&log, &step(&old, &s1, &["w", "emb"]), StepOptions::default()).unwrap();
        // A record past the end of page 1, appended by hand after the good one.
        let mut w = LogWriter::open(&log, sync_options(StepOptions::default())).unwrap();
        let seq = w.next_seq();
        w.append(&Delta {
            page_id: 1,
            epoch: seq,
            timestamp_ns: 0,
            source: "t".into(),
            op: crate::format::record::Op::Sparse(vec![(4999, &b"xy"[..])]),
        })
        .unwrap();
        w.finish().unwrap();
        let sync = SyncLog::open(std::slice::from_ref(&log)).unwrap();
        let mut mem = old.clone();
        let pages: Vec<&mut [u8]> = mem.iter_mut().map(|v| &mut v[..]).collect();
        let e = apply_to_host(&sync, &held, pages, SeqRange::default()).unwrap_err();
        assert!(matches!(e, Error::DeltaRejected { seq, .. } if seq == 3), "{e}");
        assert_eq!(mem, old, "the good record before it was not applied either");
    }

    #[test]
    fn buffers_that_share_memory_are_refused_by_name() {
        assert!(refuse_shared_memory(&[("a", 100, 50), ("b", 150, 10), ("empty", 120, 0)]).is_ok());
        let e = refuse_shared_memory(&[("a", 100, 50), ("b", 149, 10)]).unwrap_err();
        assert!(e.to_string().contains("\"a\" and \"b\" share memory"), "{e}");
    }

    #[test]
    fn a_log_without_a_base_record_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plain.log");
        LogWriter::create(&log, StateHash::compute(std::iter::empty()), 1, LogOptions::default())
            .unwrap()
            .finish()
            .unwrap();
        let e = SyncLog::open(std::slice::from_ref(&log)).err().unwrap();
        assert!(e.to_string().contains("no BASE record"), "{e}");
        assert!(
            append_delta(&log, &[], StepOptions::default())
                .unwrap_err()
                .to_string()
                .contains("no BASE record")
        );
    }
}
