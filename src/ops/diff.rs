//! Differences between two states (each a checkpoint, optionally after a log): pages added,
//! removed, resized and changed, with the byte ranges that differ; and [`emit_log`], the smallest
//! log that turns one state into the other.
//!
//! Pages are compared in 256 KiB chunks on all cores. A page still holding the bytes it was
//! loaded with is checked against its checkpoint CRC in the same pass, while the chunk is in
//! cache, so a diff reads each byte once and never reports on corrupt data.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Corruption, Error, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::log::{Compression, Durability, Log, LogOptions, LogWriter};
use crate::format::record::{Delta, Op};
use crate::format::{crc32c_combine_with, crc32c_shift_factor};
use crate::fsutil::AtomicDir;
use crate::ops::encoding::{PageWrites, WriteOp, smallest_writes};
use crate::ops::inspect::log_info;
use crate::page::{PageMeta, StateHash};
use crate::replay::{Page, PageCheck, ReplayLimit, State};

/// Bytes compared per task: small enough that both sides of a chunk stay in L2 between the
/// checksum and the comparison.
const CHUNK: usize = 256 << 10;

/// One side of a diff: a checkpoint, optionally with a log replayed onto it.
pub struct DiffSide<'a> {
    checkpoint: &'a Checkpoint,
    state: State<'a>,
    /// Every page was checked before the log was applied (so the diff pass need not).
    checked: bool,
    /// The log's path when it was one directory replayed to its end.
    whole_log: Option<PathBuf>,
}

impl<'a> DiffSide<'a> {
    /// The checkpoint's state after `log` (up to `limit`), checked as `verify` checks it. With a
    /// log every page is checked against its CRC first, since deltas could otherwise land on
    /// corrupt bytes unnoticed; without one, the diff itself checks each page as it reads it.
    pub fn open(checkpoint: &'a Checkpoint, log: Option<&Log>, limit: ReplayLimit) -> Result<DiffSide<'a>> {
        let checked = log.is_some();
        let mut whole_log = None;
        // Checked as `verify` checks it: CRCs and padding now (with a log), or the padding now
        // and each page's CRC as the diff reads it.
        if !checked && let Some(e) = checkpoint.check_padding().into_iter().next() {
            return Err(e);
        }
        let mut state = State::from_checkpoint(checkpoint, if checked { PageCheck::Check } else { PageCheck::Trust })?;
        if let Some(log) = log {
            log.refuse_torn_tail("run `mmsb recover` first")?;
            let summary = state.replay(log, limit)?;
            let dirs: BTreeSet<_> = log.segments().iter().filter_map(|s| s.path().parent()).collect();
            if summary.last_seq == log.last_seq() && dirs.len() == 1 {
                whole_log = dirs.first().map(|d| d.to_path_buf());
            }
        }
        Ok(DiffSide {
            checkpoint,
            state,
            checked,
            whole_log,
        })
    }

    /// The side's pages.
    pub fn state(&self) -> &State<'a> {
        &self.state
    }

    /// The CRC a page's bytes must have, when the diff pass is to check it.
    fn expected_crc(&self, page: &Page<'_>) -> Option<u32> {
        if self.checked { None } else { page.stored_crc() }
    }

    fn corrupt(&self, id: u64, stored: u32, computed: u32) -> Error {
        let offset = self.checkpoint.head().page(id).map_or(0, |e| e.offset);
        Error::Corrupt {
            path: self.checkpoint.path().to_owned(),
            offset,
            problem: Corruption::ChecksumMismatch {
                what: format!("page {id} data"),
                stored,
                computed,
            },
        }
    }
}

/// How a page differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
    /// In both, with different bytes, length or metadata.
    Changed,
}

/// A differing byte range: `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    /// First byte.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// One page that differs.
#[derive(Debug, Clone, Serialize)]
pub struct PageDiff {
    /// Page id.
    pub id: u64,
    /// Name (B's, else A's).
    pub name: Option<String>,
    /// How it differs.
    pub change: Change,
    /// Length in A.
    pub len_a: Option<u64>,
    /// Length in B.
    pub len_b: Option<u64>,
    /// Epoch in A.
    pub epoch_a: Option<u64>,
    /// Epoch in B.
    pub epoch_b: Option<u64>,
    /// Name, dtype, shape or residency differ.
    pub meta_changed: bool,
    /// Differing ranges over the bytes both have, plus the bytes one side has past the other's
    /// end as one more range.
    pub ranges: u64,
    /// Bytes in those ranges.
    pub bytes: u64,
    /// The first ranges, in offset order.
    pub first_ranges: Vec<Range>,
}

/// The result of [`diff`].
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The same state: same pages, lengths, bytes, metadata and epochs (so the same state hash).
    pub identical: bool,
    /// Same pages, lengths, bytes and metadata, epochs aside (two imports of the same tensors,
    /// or a state rewritten by `replay -o`, have the same bytes under other epochs).
    pub bytes_identical: bool,
    /// State hash of A.
    pub state_hash_a: StateHash,
    /// State hash of B.
    pub state_hash_b: StateHash,
    /// Pages in A.
    pub pages_a: u64,
    /// Pages in B.
    pub pages_b: u64,
    /// Pages only in B.
    pub added: u64,
    /// Pages only in A.
    pub removed: u64,
    /// Pages in both that differ.
    pub changed: u64,
    /// Pages in both with equal content and metadata.
    pub unchanged: u64,
    /// Unchanged pages whose epochs differ.
    pub epoch_only: u64,
    /// Page bytes read, both sides.
    pub bytes_compared: u64,
    /// Bytes in differing ranges, over all pages (an added or removed page counts whole).
    pub bytes_differ: u64,
    /// The pages that differ, in id order.
    pub pages: Vec<PageDiff>,
}

/// Calls `f(start, end)` for each maximal run of positions where `a` and `b` differ. Outside a
/// run it skips equal 256-byte blocks; inside, it goes a word at a time, and only words that
/// are partly equal are looked at byte by byte.
pub(crate) fn for_each_diff_run(a: &[u8], b: &[u8], mut f: impl FnMut(usize, usize)) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |i: usize| {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        x ^ u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
    };
    let mut run: Option<usize> = None;
    let mut i = 0;
    while i < n {
        if run.is_none() && i + 256 <= n && a[i..i + 256] == b[i..i + 256] {
            i += 256;
            continue;
        }
        if i + 8 <= n {
            let x = word(i);
            // No byte of x is zero: all 8 differ. x == 0: all 8 are equal.
            let all_differ = x.wrapping_sub(LO) & !x & HI == 0;
            if x == 0 {
                if let Some(s) = run.take() {
                    f(s, i);
                }
                i += 8;
                continue;
            }
            if all_differ {
                run.get_or_insert(i);
                i += 8;
                continue;
            }
        }
        let e = (i + 8).min(n);
        for j in i..e {
            match (a[j] != b[j], run) {
                (true, None) => run = Some(j),
                (false, Some(s)) => {
                    f(s, j);
                    run = None;
                }
                _ => {}
            }
        }
        i = e;
    }
    if let Some(s) = run {
        f(s, n);
    }
}

/// What one chunk of a page pair holds: its CRCs and a bounded summary of its differing runs.
#[derive(Default)]
struct ChunkResult {
    crc_a: u32,
    crc_b: u32,
    runs: u64,
    bytes: u64,
    first: Vec<Range>,
    starts_at_chunk_start: bool,
    ends_at_chunk_end: bool,
}

struct Task<'s> {
    page: usize,
    start: usize,
    a: &'s [u8],
    b: &'s [u8],
    /// Compare the chunk's common bytes (both sides have the page, same metadata or not).
    compare: bool,
}

fn run_chunk(t: &Task<'_>, crc_a: bool, crc_b: bool, keep: usize) -> ChunkResult {
    let mut r = ChunkResult::default();
    let n = t.a.len().min(t.b.len());
    // Equal chunks have equal CRCs: checksum one side only (the comparison has just brought
    // both into cache, so the checksum reads from there).
    let prefix_equal = t.compare && t.a[..n] == t.b[..n];
    let equal = prefix_equal && t.a.len() == t.b.len();
    r.crc_a = if crc_a { crc32c::crc32c(t.a) } else { 0 };
    r.crc_b = match (crc_b, equal && crc_a) {
        (false, _) => 0,
        (true, true) => r.crc_a,
        (true, false) => crc32c::crc32c(t.b),
    };
    if t.compare && !prefix_equal {
        for_each_diff_run(&t.a[..n], &t.b[..n], |s, e| {
            r.starts_at_chunk_start |= s == 0;
            r.ends_at_chunk_end = e == n;
            r.runs += 1;
            r.bytes += (e - s) as u64;
            if r.first.len() < keep {
                r.first.push(Range {
                    offset: (t.start + s) as u64,
                    len: (e - s) as u64,
                });
            }
        });
    }
    r
}

/// Ids of the pages in either side, in order.
fn page_ids(a: &DiffSide<'_>, b: &DiffSide<'_>) -> BTreeSet<u64> {
    a.state
        .pages()
        .map(|(id, _)| id)
        .chain(b.state.pages().map(|(id, _)| id))
        .collect()
}

/// The files of one side of a diff, opened: the checkpoint and its log (every header, index
/// and frame checked), and where the log's replay stops.
pub struct OpenedSide {
    checkpoint: Checkpoint,
    log: Option<Log>,
    limit: ReplayLimit,
}

impl OpenedSide {
    /// Opens `checkpoint` and `logs` (none: the checkpoint alone), to be replayed up to
    /// `to_seq`.
    pub fn open(checkpoint: &Path, logs: &[PathBuf], to_seq: Option<u64>) -> Result<OpenedSide> {
        Ok(OpenedSide {
            checkpoint: Checkpoint::open(checkpoint)?,
            log: if logs.is_empty() { None } else { Some(Log::open(logs)?) },
            limit: ReplayLimit { to_seq, to_epoch: None },
        })
    }

    /// The side's state, replayed and checked ([`DiffSide::open`]).
    pub fn side(&self) -> Result<DiffSide<'_>> {
        DiffSide::open(&self.checkpoint, self.log.as_ref(), self.limit)
    }
}

/// Compares two states; `keep_ranges` is how many ranges to list per page.
pub fn diff(a: &DiffSide<'_>, b: &DiffSide<'_>, keep_ranges: usize) -> Result<DiffReport> {
    diff_counting(a, b, keep_ranges, None)
}

/// [`diff`], counting the bytes read on both sides in `progress`.
pub fn diff_counting(
    a: &DiffSide<'_>,
    b: &DiffSide<'_>,
    keep_ranges: usize,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<DiffReport> {
    let ids = page_ids(a, b);
    let pairs: Vec<(u64, Option<&Page<'_>>, Option<&Page<'_>>)> = ids
        .iter()
        .map(|id| (*id, a.state.page(*id), b.state.page(*id)))
        .collect();
    let mut tasks = Vec::new();
    for (i, (_, pa, pb)) in pairs.iter().enumerate() {
        let da = pa.map_or(&[][..], |p| p.data());
        let db = pb.map_or(&[][..], |p| p.data());
        let longest = da.len().max(db.len());
        let mut start = 0;
        loop {
            let end = (start + CHUNK).min(longest);
            tasks.push(Task {
                page: i,
                start,
                a: &da[start.min(da.len())..end.min(da.len())],
                b: &db[start.min(db.len())..end.min(db.len())],
                compare: pa.is_some() && pb.is_some(),
            });
            start = end;
            if start >= longest {
                break;
            }
        }
    }
    let results: Vec<ChunkResult> = tasks
        .par_iter()
        .map(|t| {
            let (_, pa, pb) = pairs[t.page];
            let ca = pa.and_then(|p| a.expected_crc(p)).is_some();
            let cb = pb.and_then(|p| b.expected_crc(p)).is_some();
            let done = run_chunk(t, ca, cb, keep_ranges);
            if let Some(p) = progress {
                p.fetch_add((t.a.len() + t.b.len()) as u64, std::sync::atomic::Ordering::Relaxed);
            }
            done
        })
        .collect();

    let mut report = DiffReport {
        identical: true,
        bytes_identical: true,
        state_hash_a: a.state.state_hash(),
        state_hash_b: b.state.state_hash(),
        pages_a: a.state.pages().len() as u64,
        pages_b: b.state.pages().len() as u64,
        added: 0,
        removed: 0,
        changed: 0,
        unchanged: 0,
        epoch_only: 0,
        bytes_compared: 0,
        bytes_differ: 0,
        pages: Vec::new(),
    };
    // Combining chunk CRCs with the one shift factor of a whole chunk keeps this loop cheap.
    let chunk_shift = crc32c_shift_factor(CHUNK as u64);
    let mut k = 0;
    for (i, (id, pa, pb)) in pairs.iter().enumerate() {
        let (mut crc_a, mut crc_b) = (None::<u32>, None::<u32>);
        let mut d = PageDiff {
            id: *id,
            name: pb.or(*pa).and_then(|p| p.meta.name.clone()),
            change: Change::Changed,
            len_a: pa.map(|p| p.data().len() as u64),
            len_b: pb.map(|p| p.data().len() as u64),
            epoch_a: pa.map(|p| p.epoch),
            epoch_b: pb.map(|p| p.epoch),
            meta_changed: matches!((pa, pb), (Some(x), Some(y)) if x.meta != y.meta),
            ranges: 0,
            bytes: 0,
            first_ranges: Vec::new(),
        };
        let mut open_run_at_end = false;
        while k < tasks.len() && tasks[k].page == i {
            let (t, r) = (&tasks[k], &results[k]);
            let combine = |acc: Option<u32>, crc: u32, len: usize| {
                Some(acc.map_or(crc, |c| {
                    let shift = if len == CHUNK {
                        chunk_shift
                    } else {
                        crc32c_shift_factor(len as u64)
                    };
                    crc32c_combine_with(c, crc, shift)
                }))
            };
            crc_a = combine(crc_a, r.crc_a, t.a.len());
            crc_b = combine(crc_b, r.crc_b, t.b.len());
            // A run that crosses a chunk boundary is one range.
            let joined = open_run_at_end && r.starts_at_chunk_start;
            d.ranges += r.runs - u64::from(joined);
            d.bytes += r.bytes;
            let mut first = r.first.iter();
            if joined
                && let (Some(last), Some(next)) = (d.first_ranges.last_mut(), first.clone().next())
                && last.offset + last.len == next.offset
            {
                last.len += next.len;
                first.next();
            }
            for rg in first {
                if d.first_ranges.len() < keep_ranges {
                    d.first_ranges.push(*rg);
                }
            }
            open_run_at_end = r.ends_at_chunk_end && r.runs > 0 && t.a.len() == t.b.len();
            k += 1;
        }
        for (side, page, crc) in [(a, pa, crc_a), (b, pb, crc_b)] {
            if let (Some(p), Some(c)) = (page, crc)
                && let Some(stored) = side.expected_crc(p)
                && stored != c
            {
                return Err(side.corrupt(*id, stored, c));
            }
        }
        let (la, lb) = (d.len_a.unwrap_or(0), d.len_b.unwrap_or(0));
        report.bytes_compared += la + lb;
        match (pa, pb) {
            (Some(_), None) => {
                d.change = Change::Removed;
                report.removed += 1;
                d.bytes = la;
            }
            (None, Some(_)) => {
                d.change = Change::Added;
                report.added += 1;
                d.bytes = lb;
            }
            _ => {
                if la != lb {
                    // The bytes past the shorter side's end are one more range.
                    let (lo, hi) = (la.min(lb), la.max(lb));
                    d.ranges += 1;
                    d.bytes += hi - lo;
                    if d.first_ranges.len() < keep_ranges {
                        d.first_ranges.push(Range {
                            offset: lo,
                            len: hi - lo,
                        });
                    }
                }
                if d.bytes == 0 && !d.meta_changed {
                    report.unchanged += 1;
                    report.epoch_only += u64::from(d.epoch_a != d.epoch_b);
                    continue;
                }
                report.changed += 1;
            }
        }
        report.bytes_differ += d.bytes;
        report.pages.push(d);
    }
    report.bytes_identical = report.pages.is_empty();
    report.identical = report.bytes_identical && report.epoch_only == 0;
    Ok(report)
}

/// What [`emit_log`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct EmitReport {
    /// The log directory.
    pub log: PathBuf,
    /// The state the log applies to (A's).
    pub base_state_hash: StateHash,
    /// Records written.
    pub records: u64,
    /// Bytes that differ between A and B (what any log must carry, before compression).
    pub bytes_changed: u64,
    /// Payload bytes of the records written, before compression.
    pub payload_bytes: u64,
    /// Bytes of the log's segment files (the whole log, when appending).
    pub file_bytes: u64,
}

/// The ranges where `b` differs from `a` resized to `b`'s length (bytes past `a`'s end count as
/// zeros, as a resize or a create leaves them), touching ranges joined.
pub(crate) fn diff_ranges(a: &[u8], b: &[u8]) -> Vec<(u64, u64)> {
    let n = a.len().min(b.len());
    let zeros = vec![0u8; CHUNK.min(b.len().saturating_sub(n))];
    let chunks: Vec<(usize, usize)> = (0..b.len())
        .step_by(CHUNK)
        .map(|s| (s, (s + CHUNK).min(b.len())))
        .collect();
    let per_chunk: Vec<Vec<(u64, u64)>> = chunks
        .par_iter()
        .map(|&(s, e)| {
            let mut out = Vec::new();
            let mut push = |x: usize, y: usize| out.push(((s + x) as u64, (y - x) as u64));
            let common_end = e.min(n).max(s);
            if s < common_end {
                for_each_diff_run(&a[s..common_end], &b[s..common_end], &mut push);
            }
            if common_end < e {
                let off = common_end - s;
                for_each_diff_run(&zeros[..e - common_end], &b[common_end..e], |x, y| {
                    push(off + x, off + y)
                });
            }
            out
        })
        .collect();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in per_chunk.into_iter().flatten() {
        match out.last_mut() {
            Some((po, pl)) if *po + *pl == o => *pl += l,
            _ => out.push((o, l)),
        }
    }
    out
}

/// Epochs for `k` records that take a page from epoch `from` to `to`: ending at `to` when the
/// gap allows, else the next `k` after `from` (a state whose epoch did not advance cannot be
/// reached by deltas, which must advance it).
fn epochs(from: Option<u64>, to: u64, k: usize) -> Vec<u64> {
    let k = k as u64;
    let first = match from {
        Some(f) if to < f.saturating_add(k) => f + 1,
        None if to + 1 < k => 0,
        _ => to + 1 - k,
    };
    (first..first + k).collect()
}

/// One record of a page's plan, before epochs are assigned.
enum Emit {
    Create(u64, PageMeta),
    Delete,
    Resize(u64),
    Write(WriteOp),
}

/// Where [`emit_log`] writes.
#[derive(Debug, Clone, Copy)]
pub enum EmitTarget<'p> {
    /// A new log directory against A's state; it appears only when complete.
    New(&'p Path),
    /// The end of A's own log: A must be a checkpoint plus exactly this log, replayed whole. A
    /// series of snapshots so becomes one checkpoint and one log.
    Append(&'p Path),
}

/// Writes the smallest log that turns A into B (per page the smallest of a full, sparse or
/// masked write, with compression as asked). Replaying it onto A gives B's bytes, lengths and
/// metadata, and B's epochs wherever B's epochs are above A's (deltas can only advance an
/// epoch).
pub fn emit_log(
    a: &DiffSide<'_>,
    b: &DiffSide<'_>,
    target: EmitTarget<'_>,
    compression: Compression,
) -> Result<EmitReport> {
    let options = LogOptions {
        durability: Durability::Never,
        compression,
        ..LogOptions::default()
    };
    let (mut w, dir, out, base, payload_before) = match target {
        EmitTarget::New(out) => {
            let dir = AtomicDir::create(out)?;
            let base = a.state.state_hash();
            (
                LogWriter::create(dir.path(), base, 1, options)?,
                Some(dir),
                out,
                base,
                0,
            )
        }
        EmitTarget::Append(out) => {
            let log = Log::open(&[out])?;
            let base = log.base().unwrap_or_else(|| a.checkpoint.state_hash());
            let same = |p: &Path| std::fs::canonicalize(p).ok() == std::fs::canonicalize(out).ok();
            if base != a.checkpoint.state_hash() || !a.whole_log.as_deref().is_some_and(same) {
                return Err(Error::Invalid(format!(
                    "{}: to append, A must be the checkpoint this log belongs to plus this whole log",
                    out.display()
                )));
            }
            let payload_before = log_info(&log).payload_bytes;
            drop(log);
            (LogWriter::open(out, options)?, None, out, base, payload_before)
        }
    };
    // The snapshot's records are one atomic group: a reader sees A's state or B's, never part
    // of the way (dropping the writer on an error takes the group back out).
    w.begin_group()?;
    let now = crate::timing::now_ns();
    let ids = page_ids(a, b);
    let (mut records, mut changed) = (0u64, 0u64);
    for id in ids {
        let (pa, pb) = (a.state.page(id), b.state.page(id));
        for (side, page) in [(a, pa), (b, pb)] {
            if let Some(p) = page
                && let Some(stored) = side.expected_crc(p)
            {
                let c = crate::format::crc32c_parallel(p.data());
                if c != stored {
                    return Err(side.corrupt(id, stored, c));
                }
            }
        }
        let mut plan: Vec<Emit> = Vec::new();
        let recreate = match (pa, pb) {
            (None, None) => unreachable!("id from one of the sides"),
            (Some(_), None) => {
                plan.push(Emit::Delete);
                None
            }
            (None, Some(y)) => Some(y),
            (Some(x), Some(y)) if x.meta != y.meta => {
                plan.push(Emit::Delete);
                Some(y)
            }
            (Some(_), Some(_)) => None,
        };
        let (from_data, to): (Cow<'_, [u8]>, Option<&Page<'_>>) = match (recreate, pa, pb) {
            (Some(y), _, _) => {
                plan.push(Emit::Create(y.data().len() as u64, y.meta.clone()));
                (Cow::Borrowed(&[][..]), Some(y))
            }
            (None, Some(x), Some(y)) => {
                if x.data().len() != y.data().len() {
                    plan.push(Emit::Resize(y.data().len() as u64));
                }
                (Cow::Borrowed(x.data()), Some(y))
            }
            _ => (Cow::Borrowed(&[][..]), None),
        };
        if let Some(y) = to {
            let ranges = diff_ranges(&from_data, y.data());
            let target = y.data();
            let slices: Vec<(u64, &[u8])> = ranges
                .iter()
                .map(|(o, l)| (*o, &target[*o as usize..(o + l) as usize]))
                .collect();
            changed += ranges.iter().map(|(_, l)| l).sum::<u64>();
            // More than one write record only where B's epoch still comes out exact, or could
            // not have anyway (B's epoch not above A's, or a page created at epoch 0).
            let room = match (recreate, pa) {
                (Some(_), _) if y.epoch == 0 => usize::MAX,
                (Some(_), _) => y.epoch as usize,
                (None, Some(x)) if y.epoch <= x.epoch => usize::MAX,
                (None, Some(x)) => (y.epoch - x.epoch) as usize - plan.len().min((y.epoch - x.epoch) as usize),
                (None, None) => 1,
            };
            let writes = smallest_writes(
                &PageWrites {
                    ranges: &slices,
                    page_len: Some(target.len() as u64),
                    target: Some(target),
                },
                room.max(1),
            );
            if !writes.is_empty() {
                plan.extend(writes.into_iter().map(Emit::Write));
            } else if plan.is_empty() && pa.is_some_and(|x| y.epoch > x.epoch) {
                // Same bytes, newer epoch: an empty write carries the epoch.
                plan.push(Emit::Write(WriteOp::Sparse(Vec::new())));
            }
        }
        if plan.is_empty() {
            continue;
        }
        // A delete advances A's epoch; a create starts afresh, so what follows it counts from it.
        let target_epoch = pb.map_or(0, |p| p.epoch);
        let from = pa.map(|p| p.epoch);
        let split = plan.iter().position(|e| matches!(e, Emit::Create(..)));
        let mut stamps = Vec::with_capacity(plan.len());
        match split {
            Some(c) => {
                stamps.extend(epochs(from, from.map_or(0, |f| f + c as u64), c));
                stamps.extend(epochs(None, target_epoch, plan.len() - c));
            }
            None => stamps.extend(epochs(from, target_epoch, plan.len())),
        }
        for (e, epoch) in plan.iter().zip(stamps) {
            let op = match e {
                Emit::Create(len, meta) => Op::Create {
                    len: *len,
                    meta: meta.clone(),
                },
                Emit::Delete => Op::Delete,
                Emit::Resize(len) => Op::Resize { len: *len },
                Emit::Write(wr) => wr.op(),
            };
            let delta = Delta {
                page_id: id,
                epoch,
                timestamp_ns: now,
                source: "mmsb diff".into(),
                op,
            };
            w.append(&delta)?;
            records += 1;
        }
    }
    w.finish()?;
    if let Some(dir) = dir {
        dir.commit()?;
    }
    let after = log_info(&Log::open(&[out])?);
    Ok(EmitReport {
        log: out.to_owned(),
        base_state_hash: base,
        records,
        bytes_changed: changed,
        payload_bytes: after.payload_bytes - payload_before,
        file_bytes: after.file_bytes,
    })
}

impl crate::metrics::Measured for DiffReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.pages += self.unchanged + self.changed + self.added + self.removed;
        m.state_hash = Some(self.state_hash_b.to_hex());
    }
}

impl crate::metrics::Measured for EmitReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.records;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::format::checkpoint::{PageSpec, write_checkpoint};

    fn ckpt(dir: &Path, name: &str, pages: &[(u64, &[u8])]) -> PathBuf {
        let path = dir.join(name);
        let input: Vec<(PageSpec, &[u8])> = pages
            .iter()
            .map(|(id, d)| {
                (
                    PageSpec {
                        id: *id,
                        len: d.len() as u64,
                        epoch: 0,
                        meta: PageMeta::default(),
                    },
                    *d,
                )
            })
            .collect();
        write_checkpoint(&path, BTreeMap::new(), input).unwrap();
        path
    }

    #[test]
    fn a_range_across_a_chunk_boundary_is_one_range_and_tails_count() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![0u8; 3 * CHUNK];
        let mut b = a.clone();
        b[CHUNK - 10..CHUNK + 10].fill(1);
        b[2 * CHUNK + 5] = 9;
        b.extend_from_slice(b"tail");
        let pa = ckpt(dir.path(), "a.ckpt", &[(1, &a), (2, b"gone")]);
        let pb = ckpt(dir.path(), "b.ckpt", &[(1, &b), (3, b"new!")]);
        let (ca, cb) = (Checkpoint::open(&pa).unwrap(), Checkpoint::open(&pb).unwrap());
        let sa = DiffSide::open(&ca, None, ReplayLimit::default()).unwrap();
        let sb = DiffSide::open(&cb, None, ReplayLimit::default()).unwrap();
        let r = diff(&sa, &sb, 10).unwrap();
        assert!(!r.identical);
        assert_eq!((r.added, r.removed, r.changed), (1, 1, 1));
        let p = &r.pages[0];
        assert_eq!((p.id, p.ranges, p.bytes), (1, 3, 20 + 1 + 4));
        let want = [
            ((CHUNK - 10) as u64, 20),
            ((2 * CHUNK + 5) as u64, 1),
            ((3 * CHUNK) as u64, 4),
        ];
        let got: Vec<(u64, u64)> = p.first_ranges.iter().map(|g| (g.offset, g.len)).collect();
        assert_eq!(got, want);
        assert!(diff(&sa, &sa, 1).unwrap().identical);
    }

    #[test]
    fn a_corrupt_page_is_an_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let pa = ckpt(dir.path(), "a.ckpt", &[(1, b"abcdefgh")]);
        let pb = ckpt(dir.path(), "b.ckpt", &[(1, b"abcdefgh")]);
        let mut bytes = std::fs::read(&pb).unwrap();
        let off = Checkpoint::open(&pb).unwrap().pages()[0].offset;
        bytes[off as usize + 3] ^= 0x20;
        std::fs::write(&pb, bytes).unwrap();
        let (ca, cb) = (Checkpoint::open(&pa).unwrap(), Checkpoint::open(&pb).unwrap());
        let sa = DiffSide::open(&ca, None, ReplayLimit::default()).unwrap();
        let sb = DiffSide::open(&cb, None, ReplayLimit::default()).unwrap();
        match diff(&sa, &sb, 1) {
            Err(Error::Corrupt { path, offset, .. }) => assert_eq!((path, offset), (pb, off)),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn diff_runs_match_a_byte_by_byte_scan() {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n = (rng.next_u64() % 2000) as usize;
            let a: Vec<u8> = (0..n).map(|_| (rng.next_u64() % 4) as u8).collect();
            let mut b = a.clone();
            for _ in 0..rng.next_u64() % 40 {
                if n == 0 {
                    break;
                }
                let at = (rng.next_u64() as usize) % n;
                let len = ((rng.next_u64() % 40) as usize).min(n - at);
                for x in &mut b[at..at + len] {
                    *x = (rng.next_u64() % 4) as u8;
                }
            }
            let mut got = Vec::new();
            for_each_diff_run(&a, &b, |s, e| got.push((s, e)));
            let mut want = Vec::new();
            let mut run = None;
            for i in 0..n {
                match (a[i] != b[i], run) {
                    (true, None) => run = Some(i),
                    (false, Some(s)) => {
                        want.push((s, i));
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                want.push((s, n));
            }
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn epochs_end_at_the_target_when_the_gap_allows() {
        assert_eq!(epochs(Some(3), 10, 2), vec![9, 10]);
        assert_eq!(epochs(Some(3), 4, 2), vec![4, 5]);
        assert_eq!(epochs(Some(7), 0, 1), vec![8]);
        assert_eq!(epochs(None, 5, 2), vec![4, 5]);
        assert_eq!(epochs(None, 0, 2), vec![0, 1]);
    }
}
