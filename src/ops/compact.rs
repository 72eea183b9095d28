//! Compaction. [`compact_checkpoint`] folds a log into a new checkpoint (optionally only a
//! prefix, writing the rest as a new log against it); [`compact_log`] merges a log's deltas
//! without the checkpoint: per page, later writes win byte for byte, ranges coalesce, a full
//! write or a delete drops what came before, and each page's merged writes become the smallest
//! record that carries them ([`crate::ops::encoding`]).
//!
//! The merged log replays to the same state as the original on the checkpoint it belongs to:
//! the same bytes, lengths, metadata and epochs, so the same state hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::{Error, Rejection, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::log::{Compression, Durability, Log, LogOptions, LogRecord, LogWriter};
use crate::format::record::{Delta, Op, TargetPage};
use crate::fsutil::AtomicDir;
use crate::ops::encoding::{PageWrites, WriteOp, smallest_writes};
use crate::ops::inspect::log_info;
use crate::page::{PageMeta, StateHash};
use crate::replay::{PageCheck, ReplayLimit, State};

/// Sizes of one side of a compaction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// Bytes on disk: the checkpoint (if any) plus every log segment.
    pub file_bytes: u64,
    /// Checkpoint file bytes (0 when there is none).
    pub checkpoint_bytes: u64,
    /// Log segment file bytes.
    pub log_bytes: u64,
    /// Log records.
    pub records: u64,
    /// Payload bytes as stored (after compression).
    pub stored_payload_bytes: u64,
    /// Payload bytes before compression.
    pub payload_bytes: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// Before.
    pub input: Side,
    /// After.
    pub output: Side,
    /// `input.file_bytes / output.file_bytes`.
    pub size_ratio: f64,
    /// Records folded or merged.
    pub records_folded: u64,
    /// Records after the folded prefix, copied into the output log.
    pub records_kept: u64,
    /// State hash of the new checkpoint (equal to `replay`'s); `None` for `--log-only`, which
    /// does not read the checkpoint.
    pub state_hash: Option<StateHash>,
    /// The output checkpoint, if one was written.
    pub checkpoint: Option<PathBuf>,
    /// The output log, if one was written.
    pub log: Option<PathBuf>,
    /// The input log ended in a torn tail (a record cut short by a crash), left out as `replay`
    /// leaves it out.
    pub torn_tail_ignored: bool,
}

fn log_side(log: &Log) -> Side {
    let info = log_info(log);
    Side {
        file_bytes: info.file_bytes,
        checkpoint_bytes: 0,
        log_bytes: info.file_bytes,
        records: info.records,
        stored_payload_bytes: info.stored_payload_bytes,
        payload_bytes: info.payload_bytes,
    }
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| Error::io(path, e))
}

fn with_checkpoint(mut side: Side, ckpt: &Path) -> Result<Side> {
    side.checkpoint_bytes = file_len(ckpt)?;
    side.file_bytes += side.checkpoint_bytes;
    Ok(side)
}

fn output_options(compression: Compression) -> LogOptions {
    LogOptions {
        durability: Durability::Never,
        compression,
        ..LogOptions::default()
    }
}

/// Fails on corruption (a BASE record included); warns nothing itself: a torn tail is left out and reported by the caller.
fn open_log(logs: &[PathBuf]) -> Result<Log> {
    let log = Log::open(logs)?;
    log.check()?;
    crate::format::base::read(&log)?;
    Ok(log)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Replays `logs` on `ckpt_path` up to `to_seq` (all of it when `None`) and writes the result as
/// the checkpoint `out`; records after `to_seq` go, unchanged, into a new log `rest_log` against
/// the new checkpoint (required when there are any). Outputs appear only when complete; inputs
/// are only read. `progress` counts checkpoint bytes written.
pub fn compact_checkpoint(
    ckpt_path: &Path,
    logs: &[PathBuf],
    to_seq: Option<u64>,
    out: &Path,
    rest_log: Option<&Path>,
    compression: Compression,
    progress: Option<Arc<AtomicU64>>,
) -> Result<CompactReport> {
    let inputs: Vec<&Path> = std::iter::once(ckpt_path)
        .chain(logs.iter().map(PathBuf::as_path))
        .collect();
    crate::fsutil::refuse_output_naming_input(out, &inputs)?;
    crate::fsutil::resolve_output(out)?;
    if let Some(rest) = rest_log
        && (inputs
            .iter()
            .any(|i| std::fs::canonicalize(i).ok() == std::fs::canonicalize(rest).ok())
            || std::fs::canonicalize(crate::format::lock::log_dir(out)).ok() == std::fs::canonicalize(rest).ok())
    {
        return Err(Error::OutputRefused {
            path: rest.to_owned(),
            refusal: crate::error::OutputRefusal::RestLogCollides,
        });
    }
    let ckpt = Checkpoint::open(ckpt_path)?;
    if let Some(e) = ckpt.check_pages(None).into_iter().next() {
        return Err(e);
    }
    let log = open_log(logs)?;
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Trust)?;
    let summary = state.replay(&log, ReplayLimit { to_seq, to_epoch: None })?;
    let rest: Vec<_> = log
        .records()
        .filter(|r| to_seq.is_some_and(|n| r.frame.seq > n))
        .collect();
    let rest_log = match (rest.is_empty(), rest_log) {
        (true, _) => None,
        (false, Some(p)) => Some(p),
        (false, None) => {
            return Err(Error::Invalid(format!(
                "{} records follow sequence number {}: name a log for them",
                rest.len(),
                to_seq.unwrap_or(0)
            )));
        }
    };
    // Both outputs are written and synced under temporary names before either is published,
    // then published back to back, the checkpoint last: its appearance says the pair is whole.
    // Preparing the rest log first also makes a refused output directory cost nothing.
    let rest_dir = rest_log.map(AtomicDir::create).transpose()?;
    let graph = folded_graph(&ckpt, &log, to_seq)?;
    let (hash, staged) = state.stage_checkpoint(out, ckpt.head().metadata.clone(), &graph, progress)?;
    if let Some(dir) = rest_dir {
        let mut w = LogWriter::create(dir.path(), hash, rest[0].frame.seq, output_options(compression))?;
        append_unchanged(&mut w, &rest)?;
        w.finish()?;
        dir.commit()?;
    }
    staged.commit()?;
    let input = with_checkpoint(log_side(&log), ckpt_path)?;
    let output = match rest_log {
        Some(p) => with_checkpoint(log_side(&Log::open(&[p])?), out)?,
        None => with_checkpoint(Side::default(), out)?,
    };
    Ok(CompactReport {
        size_ratio: ratio(input.file_bytes, output.file_bytes),
        input,
        output,
        records_folded: summary.records,
        records_kept: rest.len() as u64,
        state_hash: Some(hash),
        checkpoint: Some(out.to_owned()),
        log: rest_log.map(Path::to_owned),
        torn_tail_ignored: log.torn_tail().is_some(),
    })
}

/// The dependency graph as of `to_seq`, for the new checkpoint: refused when it is broken, or
/// when changes after the last propagation would be folded in (the new checkpoint could not
/// say which derived pages are stale).
fn folded_graph(ckpt: &Checkpoint, log: &Log, to_seq: Option<u64>) -> Result<Vec<crate::format::graph::Derivation>> {
    if !crate::graph::has_graph(ckpt.head(), Some(log)) {
        return Ok(Vec::new());
    }
    let h = crate::graph::read_history(ckpt.head(), Some(log), to_seq)?;
    if let Some(p) = h.problems.first() {
        return Err(Error::Invalid(format!(
            "the log's graph is broken at seq {}: {}",
            p.seq, p.message
        )));
    }
    if let Some(&i) = h.dirty().first() {
        return Err(Error::Invalid(format!(
            "derived page {} (and maybe others) is stale: its inputs changed after the last propagation; \
             run `mmsb propagate` first, or compact up to the last propagation with --to-seq",
            h.graph.id(i)
        )));
    }
    Ok(h.graph.to_derivations())
}

/// The record's delta, refused when its type is one this build does not know (it could not be
/// rewritten); `page` says what is known of its page, to bound its payload.
fn known_delta<'r>(rec: &'r LogRecord<'_>, page: impl FnOnce(u64) -> TargetPage) -> Result<Delta<'r>> {
    rec.delta_for_page(page)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: record {} has an optional type this build does not know, so it cannot be rewritten",
            rec.segment.path().display(),
            rec.frame.seq
        ))
    })
}

/// Re-appends records as they are (with new frames, and compression per the writer's policy).
fn append_unchanged(w: &mut LogWriter, records: &[LogRecord<'_>]) -> Result<()> {
    let mut in_group = false;
    for rec in records {
        // Groups stay groups: a propagation's outputs and its marker, a snapshot's records.
        let continues = rec.frame.flags & crate::format::log::FLAG_GROUP_CONTINUES != 0;
        if continues && !in_group {
            w.begin_group()?;
            in_group = true;
        }
        if crate::format::graph::is_graph_type(rec.frame.kind) {
            // Checked by decoding, then copied as it was (its timestamp and source kept).
            crate::graph::decode_record(rec)?;
            w.append_payload(rec.frame.kind, rec.payload()?)?;
        } else if rec.frame.kind == crate::format::base::TYPE_BASE {
            // It describes the base of the log it came from; the log written here has another.
            continue;
        } else {
            w.append(&known_delta(rec, |_| TargetPage::Unknown)?)?;
        }
        if in_group && !continues {
            w.commit_group()?;
            in_group = false;
        }
    }
    Ok(())
}

/// Who wrote a record and when, and the epoch it gave its page: merged records take these from
/// the records they replace.
#[derive(Debug, Clone)]
struct Stamp {
    epoch: u64,
    timestamp_ns: u64,
    source: String,
}

impl Stamp {
    fn of(d: &Delta<'_>) -> Stamp {
        Stamp {
            epoch: d.epoch,
            timestamp_ns: d.timestamp_ns,
            source: d.source.to_string(),
        }
    }
}

/// The largest fill a log-only compaction spells out in memory (it keeps written bytes, not
/// runs): a fill claiming more fails with a clear error instead of exhausting memory.
const MAX_MERGED_FILL: u64 = 256 << 20;

/// The bytes written over a page so far: disjoint ranges keyed by offset (touching ranges
/// joined), or, once writes cover a good part of the span they reach, a dense buffer with a
/// bit per byte saying which bytes were written. The dense form turns millions of masked
/// single-byte writes into plain stores; it is taken only when the payload seen is at least an
/// eighth of the span, so its memory stays within nine times the log's own bytes.
#[derive(Debug)]
enum Overlay {
    Ranges {
        map: BTreeMap<u64, Vec<u8>>,
        /// Bytes written so far, overlaps counted again (bounds the dense form's memory).
        seen: u64,
    },
    Dense {
        data: Vec<u8>,
        written: Vec<u64>,
    },
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay::Ranges {
            map: BTreeMap::new(),
            seen: 0,
        }
    }
}

/// Spans below this stay in range form.
const DENSE_MIN_SPAN: u64 = 64 << 10;

fn set_bits(bits: &mut [u64], from: usize, to: usize) {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(64) && to - i >= 64 {
            bits[i / 64] = u64::MAX;
            i += 64;
        } else {
            bits[i / 64] |= 1 << (i % 64);
            i += 1;
        }
    }
}

impl Overlay {
    fn clear(&mut self) {
        *self = Overlay::default();
    }

    /// Switches to the dense form when writes up to `end` carrying `adding` more bytes make it
    /// worthwhile.
    fn maybe_densify(&mut self, end: u64, adding: u64) {
        let Overlay::Ranges { map, seen } = self else { return };
        let span = map.iter().next_back().map_or(0, |(s, v)| s + v.len() as u64).max(end);
        if span < DENSE_MIN_SPAN || (*seen + adding) * 8 < span {
            return;
        }
        let mut data = vec![0u8; span as usize];
        let mut written = vec![0u64; (span as usize).div_ceil(64)];
        for (o, v) in std::mem::take(map) {
            data[o as usize..o as usize + v.len()].copy_from_slice(&v);
            set_bits(&mut written, o as usize, o as usize + v.len());
        }
        *self = Overlay::Dense { data, written };
    }

    fn grow_to(data: &mut Vec<u8>, written: &mut Vec<u64>, end: usize) {
        if data.len() < end {
            data.resize(end, 0);
            written.resize(end.div_ceil(64), 0);
        }
    }

    fn write(&mut self, off: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = off + bytes.len() as u64;
        self.maybe_densify(end, bytes.len() as u64);
        let (map, seen) = match self {
            Overlay::Dense { data, written } => {
                Self::grow_to(data, written, end as usize);
                data[off as usize..end as usize].copy_from_slice(bytes);
                set_bits(written, off as usize, end as usize);
                return;
            }
            Overlay::Ranges { map, seen } => (map, seen),
        };
        *seen += bytes.len() as u64;
        // Extend the range that starts at or before `off` and reaches it, else start a new one.
        let start = match map.range_mut(..=off).next_back() {
            Some((s, v)) if s + v.len() as u64 >= off => {
                let at = (off - s) as usize;
                let keep = v.len().min(at + bytes.len());
                v[at..keep].copy_from_slice(&bytes[..keep - at]);
                v.extend_from_slice(&bytes[keep - at..]);
                *s
            }
            _ => {
                map.insert(off, bytes.to_vec());
                off
            }
        };
        // Absorb the ranges that start inside or right after the written one.
        let later: Vec<u64> = map.range(start + 1..=end).map(|(s, _)| *s).collect();
        for s in later {
            let v = map.remove(&s).expect("listed");
            let tail = (s + v.len() as u64).saturating_sub(end) as usize;
            let mine = map.get_mut(&start).expect("present");
            mine.extend_from_slice(&v[v.len() - tail..]);
        }
    }

    /// A run of one byte value. Its length comes from the log and may be up to a page's 1 TiB
    /// limit, so the bytes are allocated fallibly, as replay allocates a created page.
    fn write_fill(&mut self, off: u64, len: u64, value: u8) -> std::result::Result<(), String> {
        let too_big = || format!("cannot allocate {len} bytes to merge a fill");
        if len > MAX_MERGED_FILL {
            return Err(format!(
                "a fill of {len} bytes is more than a log-only compaction merges in memory ({MAX_MERGED_FILL} bytes); \
                 compact with the checkpoint instead"
            ));
        }
        let end = off.checked_add(len).ok_or_else(too_big)?;
        self.maybe_densify(end, len);
        if let Overlay::Dense { data, written } = self {
            if data.len() < end as usize {
                data.try_reserve_exact(end as usize - data.len())
                    .map_err(|_| too_big())?;
            }
            Self::grow_to(data, written, end as usize);
            data[off as usize..end as usize].fill(value);
            set_bits(written, off as usize, end as usize);
            return Ok(());
        }
        let mut run = Vec::new();
        run.try_reserve_exact(len as usize).map_err(|_| too_big())?;
        run.resize(len as usize, value);
        self.write(off, &run);
        Ok(())
    }

    fn write_masked(&mut self, offset: u64, len: u64, mask: &[u8], values: &[u8]) {
        self.maybe_densify(offset + len, values.len() as u64);
        if let Overlay::Dense { data, written } = self {
            Self::grow_to(data, written, (offset + len) as usize);
            let mut v = values.iter();
            for (i, &m) in mask.iter().enumerate() {
                let mut bits = m;
                while bits != 0 {
                    let at = offset as usize + i * 8 + bits.trailing_zeros() as usize;
                    data[at] = *v.next().expect("checked: one value per set bit");
                    written[at / 64] |= 1 << (at % 64);
                    bits &= bits - 1;
                }
            }
            return;
        }
        let (mut v, mut i) = (0usize, 0u64);
        while i < len {
            if mask[(i / 8) as usize] >> (i % 8) & 1 == 0 {
                i += 1;
                continue;
            }
            let run = (i..len)
                .take_while(|j| mask[(j / 8) as usize] >> (j % 8) & 1 == 1)
                .count();
            self.write(offset + i, &values[v..v + run]);
            v += run;
            i += run as u64;
        }
    }

    fn clip(&mut self, len: u64) {
        match self {
            Overlay::Ranges { map, .. } => {
                let past: Vec<u64> = map.range(len..).map(|(s, _)| *s).collect();
                for s in past {
                    map.remove(&s);
                }
                if let Some((s, v)) = map.iter_mut().next_back()
                    && s + v.len() as u64 > len
                {
                    v.truncate((len - s) as usize);
                }
            }
            Overlay::Dense { data, written } => {
                let len = (len as usize).min(data.len());
                data.truncate(len);
                written.truncate(len.div_ceil(64));
                if !len.is_multiple_of(64)
                    && let Some(last) = written.last_mut()
                {
                    *last &= (1u64 << (len % 64)) - 1;
                }
            }
        }
    }

    fn ranges(&self) -> Vec<(u64, &[u8])> {
        match self {
            Overlay::Ranges { map, .. } => map.iter().map(|(o, v)| (*o, &v[..])).collect(),
            Overlay::Dense { data, written } => {
                let (n, bit) = (data.len(), |i: usize| written[i / 64] >> (i % 64) & 1 == 1);
                let mut out = Vec::new();
                let mut i = 0;
                while i < n {
                    if i.is_multiple_of(64) && written[i / 64] == 0 {
                        i += 64;
                        continue;
                    }
                    if !bit(i) {
                        i += 1;
                        continue;
                    }
                    let s = i;
                    while i < n {
                        if i.is_multiple_of(64) && i + 64 <= n && written[i / 64] == u64::MAX {
                            i += 64;
                        } else if bit(i) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    out.push((s as u64, &data[s..i]));
                }
                out
            }
        }
    }
}

/// A page's history in the log, reduced.
#[derive(Debug)]
enum Body {
    /// The page as it is in the base state (bytes and length unknown here), cut to `shrink`
    /// bytes at the smallest and then grown to `len` with zeros, with writes over it.
    OnBase {
        shrink: Option<u64>,
        len: Option<u64>,
        writes: Overlay,
    },
    /// A page the log created (zero bytes), with writes over it.
    Created {
        meta: PageMeta,
        len: u64,
        writes: Overlay,
        create: Stamp,
    },
}

#[derive(Debug, Default)]
struct PageProgram {
    /// The delete that removed the base page.
    base_deleted: Option<Stamp>,
    body: Option<Body>,
    /// Stamps of the records since the body began.
    stamps: Vec<Stamp>,
    /// A record has been folded in (the first one decides whether the page is in the base).
    started: bool,
}

impl PageProgram {
    /// What is known of the page's length after the records folded in so far.
    fn target(&self) -> TargetPage {
        match &self.body {
            Some(Body::Created { len, .. } | Body::OnBase { len: Some(len), .. }) => TargetPage::Len(*len),
            _ => TargetPage::Unknown,
        }
    }

    /// Folds one more delta in; `Err` when it could not apply to any base state.
    fn push(&mut self, d: &Delta<'_>) -> std::result::Result<(), Rejection> {
        let id = d.page_id;
        // A first record other than a create means the page is in the base state.
        if !self.started && !matches!(d.op, Op::Create { .. }) {
            self.body = Some(Body::OnBase {
                shrink: None,
                len: None,
                writes: Overlay::default(),
            });
        }
        self.started = true;
        if let Some(last) = self.stamps.last().map(|s| s.epoch).or(match &self.body {
            Some(Body::Created { create, .. }) => Some(create.epoch),
            _ => None,
        }) && !matches!(d.op, Op::Create { .. })
            && d.epoch <= last
        {
            return Err(Rejection::EpochNotAdvanced {
                page: id,
                epoch: d.epoch,
                page_epoch: last,
            });
        }
        let known_len = match &self.body {
            Some(Body::OnBase { len, .. }) => *len,
            Some(Body::Created { len, .. }) => Some(*len),
            None => None,
        };
        // A page in the base has a length the log alone may not tell: then the format's page
        // limit bounds every range, which also keeps the arithmetic below from overflowing.
        let limit = known_len.unwrap_or(crate::format::record::MAX_PAGE_LEN);
        let in_bounds = |off: u64, n: u64| off.checked_add(n).is_some_and(|e| e <= limit);
        let out_of_page = |range, offset, len| Rejection::OutOfPage {
            range,
            page: id,
            offset,
            len,
            page_len: None,
        };
        match (&d.op, &mut self.body) {
            (Op::Create { len, meta }, None) => {
                self.body = Some(Body::Created {
                    meta: meta.clone(),
                    len: *len,
                    writes: Overlay::default(),
                    create: Stamp::of(d),
                });
                self.stamps.clear();
                return Ok(());
            }
            (Op::Create { .. }, Some(_)) => return Err(Rejection::PageExists { page: id }),
            (_, None) => return Err(Rejection::NoPage { page: id }),
            (Op::Delete, Some(body)) => {
                if matches!(body, Body::OnBase { .. }) {
                    self.base_deleted = Some(Stamp::of(d));
                }
                self.body = None;
                self.stamps.clear();
                return Ok(());
            }
            (Op::Resize { len: r }, Some(Body::OnBase { shrink, len, writes })) => {
                writes.clip(*r);
                *shrink = Some(shrink.map_or(*r, |s| s.min(*r)));
                *len = Some(*r);
            }
            (Op::Resize { len: r }, Some(Body::Created { len, writes, .. })) => {
                writes.clip(*r);
                *len = *r;
            }
            (Op::Full(data), Some(body)) => {
                let n = data.len() as u64;
                if known_len.is_some_and(|l| l != n) {
                    return Err(Rejection::FullLength {
                        page: id,
                        bytes: n,
                        page_len: known_len.unwrap_or(0),
                    });
                }
                let writes = match body {
                    Body::OnBase { shrink, len, writes } => {
                        // After a resize the emitted resizes must leave the page this long.
                        if shrink.is_some() {
                            *shrink = Some(n);
                        }
                        *len = Some(n);
                        writes
                    }
                    Body::Created { writes, .. } => writes,
                };
                writes.clear();
                writes.write(0, data);
            }
            (Op::Sparse(ranges), Some(body)) => {
                if let Some((o, r)) = ranges.iter().find(|(o, r)| !in_bounds(*o, r.len() as u64)) {
                    return Err(out_of_page("range", *o, r.len() as u64));
                }
                let writes = match body {
                    Body::OnBase { writes, .. } | Body::Created { writes, .. } => writes,
                };
                for (o, r) in ranges {
                    writes.write(*o, r);
                }
            }
            (
                Op::Masked {
                    offset,
                    len,
                    mask,
                    values,
                },
                Some(body),
            ) => {
                if !in_bounds(*offset, *len) {
                    return Err(out_of_page("masked range", *offset, *len));
                }
                let writes = match body {
                    Body::OnBase { writes, .. } | Body::Created { writes, .. } => writes,
                };
                writes.write_masked(*offset, *len, mask, values);
            }
            (Op::Fill { offset, len, value }, Some(body)) => {
                if !in_bounds(*offset, *len) {
                    return Err(out_of_page("fill range", *offset, *len));
                }
                let writes = match body {
                    Body::OnBase { writes, .. } | Body::Created { writes, .. } => writes,
                };
                writes
                    .write_fill(*offset, *len, *value)
                    .map_err(Rejection::CannotMerge)?;
            }
        }
        self.stamps.push(Stamp::of(d));
        Ok(())
    }

    /// The merged records for this page, in the order they must be applied.
    fn emit(&self, id: u64) -> Vec<(Stamp, OwnedOp)> {
        let mut out = Vec::new();
        if let Some(s) = &self.base_deleted {
            out.push((s.clone(), OwnedOp::Delete));
        }
        let Some(body) = &self.body else { return out };
        let mut ops = Vec::new();
        let pool: Vec<&Stamp> = match body {
            Body::OnBase { shrink, len, writes } => {
                if let (Some(s), Some(l)) = (shrink, len) {
                    ops.push(OwnedOp::Resize(*s));
                    if l > s {
                        ops.push(OwnedOp::Resize(*l));
                    }
                }
                let ranges = writes.ranges();
                let room = self.stamps.len().saturating_sub(ops.len());
                let w = PageWrites {
                    ranges: &ranges,
                    page_len: *len,
                    target: None,
                };
                ops.extend(smallest_writes(&w, room).into_iter().map(OwnedOp::Write));
                self.stamps.iter().collect()
            }
            Body::Created {
                meta,
                len,
                writes,
                create,
            } => {
                ops.push(OwnedOp::Create(*len, meta.clone()));
                let ranges = writes.ranges();
                let w = PageWrites {
                    ranges: &ranges,
                    page_len: Some(*len),
                    target: None,
                };
                // The create and the writes share the create's stamp and those after it.
                ops.extend(smallest_writes(&w, self.stamps.len()).into_iter().map(OwnedOp::Write));
                std::iter::once(create).chain(&self.stamps).collect()
            }
        };
        // Each record takes the stamp of one it replaces, the last one last, so epochs still
        // advance and the page ends at its original epoch. The reduction never emits more
        // records for a body than the body had, and writes are split only into the records left.
        assert!(
            ops.len() <= pool.len(),
            "page {id}: {} merged records from {}",
            ops.len(),
            pool.len()
        );
        if ops.is_empty() && !pool.is_empty() {
            // Nothing to write, but the page's epoch advanced: keep the last record's epoch with
            // an empty sparse write.
            ops.push(OwnedOp::Write(WriteOp::Sparse(Vec::new())));
        }
        let stamps = &pool[pool.len() - ops.len()..];
        out.extend(stamps.iter().map(|s| (*s).clone()).zip(ops));
        out
    }
}

#[derive(Debug)]
enum OwnedOp {
    Create(u64, PageMeta),
    Delete,
    Resize(u64),
    Write(WriteOp),
}

impl OwnedOp {
    fn op(&self) -> Op<'_> {
        match self {
            OwnedOp::Create(len, meta) => Op::Create {
                len: *len,
                meta: meta.clone(),
            },
            OwnedOp::Delete => Op::Delete,
            OwnedOp::Resize(len) => Op::Resize { len: *len },
            OwnedOp::Write(w) => w.op(),
        }
    }
}

/// Merges the deltas of `logs` (up to `to_seq`; records after it are kept unchanged after the
/// merged ones) into a new log `out` against the same base state. `out` appears only when
/// complete; the inputs are only read. `progress` counts log bytes read.
pub fn compact_log(
    logs: &[PathBuf],
    to_seq: Option<u64>,
    out: &Path,
    compression: Compression,
    progress: Option<&AtomicU64>,
) -> Result<CompactReport> {
    let log = open_log(logs)?;
    let base = log
        .base()
        .ok_or_else(|| Error::Invalid("the log has no readable segment".into()))?;
    let first_seq = log.segments()[0].header().first_seq;
    let dir = AtomicDir::create(out)?;
    let mut programs: BTreeMap<u64, PageProgram> = BTreeMap::new();
    let mut rest = Vec::new();
    let mut folded = 0u64;
    let mut base_record = None;
    for rec in log.records() {
        if let Some(p) = progress {
            p.fetch_add(rec.frame.frame_len(), Ordering::Relaxed);
        }
        if to_seq.is_some_and(|n| rec.frame.seq > n) {
            rest.push(rec);
            continue;
        }
        if rec.frame.kind == crate::format::base::TYPE_BASE {
            // The merged log has the same base: its BASE record stays first.
            base_record = Some(rec);
            continue;
        }
        if crate::format::graph::is_graph_type(rec.frame.kind) {
            return Err(Error::Invalid(format!(
                "{}: record {} is a graph record (derive or propagate): merging a log that holds them \
                 is not supported; fold it into a checkpoint (`mmsb compact CKPT LOG --out NEW`), which keeps the graph",
                rec.segment.path().display(),
                rec.frame.seq
            )));
        }
        let d = known_delta(&rec, |id| {
            programs.get(&id).map_or(TargetPage::Unknown, PageProgram::target)
        })?;
        programs
            .entry(d.page_id)
            .or_default()
            .push(&d)
            .map_err(|reason| Error::DeltaRejected {
                path: rec.segment.path().to_owned(),
                offset: rec.frame.offset,
                seq: rec.frame.seq,
                reason,
            })?;
        folded += 1;
    }
    let mut w = LogWriter::create(dir.path(), base, first_seq, output_options(compression))?;
    if let Some(rec) = &base_record {
        // Checked when the log was opened (`open_log`).
        w.append_payload(rec.frame.kind, rec.payload()?)?;
    }
    for (id, program) in &programs {
        for (stamp, op) in program.emit(*id) {
            w.append(&Delta {
                page_id: *id,
                epoch: stamp.epoch,
                timestamp_ns: stamp.timestamp_ns,
                source: stamp.source.into(),
                op: op.op(),
            })?;
        }
    }
    append_unchanged(&mut w, &rest)?;
    w.finish()?;
    dir.commit()?;
    let input = log_side(&log);
    let output = log_side(&Log::open(&[out])?);
    Ok(CompactReport {
        size_ratio: ratio(input.file_bytes, output.file_bytes),
        input,
        output,
        records_folded: folded,
        records_kept: rest.len() as u64,
        state_hash: None,
        checkpoint: None,
        log: Some(out.to_owned()),
        torn_tail_ignored: log.torn_tail().is_some(),
    })
}

impl crate::metrics::Measured for CompactReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.output.records;
        m.state_hash = self.state_hash.map(|h| h.to_hex());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::{PageSpec, write_checkpoint};

    fn d(page_id: u64, epoch: u64, op: Op<'_>) -> Delta<'_> {
        Delta {
            page_id,
            epoch,
            timestamp_ns: epoch,
            source: "t".into(),
            op,
        }
    }

    #[test]
    fn hostile_ranges_in_a_log_only_compaction_are_errors_not_panics_or_huge_allocations() {
        let dir = tempfile::tempdir().unwrap();
        for (i, op) in [
            Op::Sparse(vec![(u64::MAX - 1, &b"abcd"[..])]),
            Op::Masked {
                offset: u64::MAX,
                len: 8,
                mask: &[1],
                values: b"x",
            },
            Op::Fill {
                offset: 0,
                len: 1 << 40,
                value: 7,
            },
            Op::Fill {
                offset: 1 << 40,
                len: 1,
                value: 7,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let log = dir.path().join(format!("h{i}.log"));
            let mut w = LogWriter::create(&log, StateHash([1; 32]), 1, LogOptions::default()).unwrap();
            w.append(&d(1, 1, op)).unwrap();
            w.finish().unwrap();
            let out = dir.path().join(format!("m{i}.log"));
            let e = compact_log(&[log], None, &out, Compression::None, None).unwrap_err();
            assert!(!e.to_string().is_empty());
            assert!(!out.exists());
        }
        assert!(crate::fsutil::stale_temp_outputs(dir.path()).is_empty());
    }

    /// The merged records as `(page, epoch, op)`, and page 1 after replaying them.
    type Merged = (Vec<(u64, u64, String)>, Option<Vec<u8>>);

    /// Merges `deltas` against one 16-byte page (id 1).
    fn merge(deltas: &[Delta<'_>]) -> Merged {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("a.ckpt");
        let spec = PageSpec {
            id: 1,
            len: 16,
            epoch: 0,
            meta: PageMeta::default(),
        };
        write_checkpoint(&ck, BTreeMap::new(), [(spec, &[b'.'; 16][..])]).unwrap();
        let ckpt = Checkpoint::open(&ck).unwrap();
        let log = dir.path().join("a.log");
        let mut w = LogWriter::create(&log, ckpt.state_hash(), 1, LogOptions::default()).unwrap();
        for x in deltas {
            w.append(x).unwrap();
        }
        w.finish().unwrap();
        let out = dir.path().join("m.log");
        compact_log(&[log], None, &out, Compression::None, None).unwrap();
        let merged = Log::open(&[&out]).unwrap();
        let recs = merged
            .records()
            .map(|r| {
                let x = r.delta().unwrap().unwrap();
                (x.page_id, x.epoch, format!("{:?}", x.op))
            })
            .collect();
        let mut state = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        state.replay(&merged, ReplayLimit::default()).unwrap();
        (recs, state.page(1).map(|p| p.data().to_vec()))
    }

    #[test]
    fn later_writes_win_and_touching_ranges_coalesce() {
        let (recs, page) = merge(&[
            d(1, 1, Op::Sparse(vec![(0, b"aaaa")])),
            d(1, 2, Op::Sparse(vec![(2, b"bbbb")])),
            d(1, 3, Op::Sparse(vec![(6, b"cc")])),
        ]);
        assert_eq!(page.unwrap(), b"aabbbbcc........");
        // One record at the last epoch; for 8 bytes a masked span (25 bytes) beats a sparse
        // range (28).
        assert_eq!(
            recs,
            vec![(
                1,
                3,
                "Masked { offset: 0, len: 8, mask: [255], values: [97, 97, 98, 98, 98, 98, 99, 99] }".to_string()
            )]
        );
    }

    #[test]
    fn a_full_write_supersedes_what_came_before() {
        let (recs, page) = merge(&[
            d(1, 1, Op::Sparse(vec![(0, b"zz")])),
            d(1, 2, Op::Full(b"0123456789abcdef")),
            d(1, 3, Op::Sparse(vec![(15, b"!")])),
        ]);
        assert_eq!(page.unwrap(), b"0123456789abcde!");
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].1, &recs[0].2[..5]), (3, "Full("));
    }

    #[test]
    fn a_delete_drops_earlier_writes_and_a_recreated_page_starts_from_zeros() {
        let meta = PageMeta::default();
        let (recs, page) = merge(&[
            d(1, 1, Op::Sparse(vec![(0, b"zz")])),
            d(1, 2, Op::Delete),
            d(1, 3, Op::Create { len: 4, meta }),
            d(1, 4, Op::Sparse(vec![(1, b"x")])),
        ]);
        assert_eq!(page.unwrap(), b"\0x\0\0");
        let kinds: Vec<(u64, &str)> = recs.iter().map(|(_, e, op)| (*e, &op[..5])).collect();
        assert_eq!(kinds, vec![(2, "Delet"), (3, "Creat"), (4, "Maske")]);
    }

    #[test]
    fn shrinking_then_growing_leaves_zeros_without_knowing_the_page() {
        let (recs, page) = merge(&[
            d(1, 1, Op::Sparse(vec![(10, b"kk")])),
            d(1, 2, Op::Resize { len: 4 }),
            d(1, 3, Op::Resize { len: 12 }),
            d(1, 4, Op::Sparse(vec![(0, b"s")])),
        ]);
        assert_eq!(page.unwrap(), b"s...\0\0\0\0\0\0\0\0");
        let ops: Vec<&str> = recs.iter().map(|(_, _, op)| &op[..]).collect();
        assert_eq!(
            ops,
            vec![
                "Resize { len: 4 }",
                "Resize { len: 12 }",
                "Masked { offset: 0, len: 1, mask: [1], values: [115] }"
            ]
        );
    }

    /// The dense and the range forms of an overlay hold the same bytes after the same writes.
    #[test]
    fn dense_and_range_overlays_agree() {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut ranges = Overlay::default();
            let mut dense = Overlay::Dense {
                data: Vec::new(),
                written: Vec::new(),
            };
            let mut model: Vec<Option<u8>> = Vec::new();
            for step in 0..30 {
                let off = rng.next_u64() % 300;
                let len = 1 + rng.next_u64() % 150;
                let fill = |m: &mut Vec<Option<u8>>, at: usize, b: u8| {
                    if m.len() <= at {
                        m.resize(at + 1, None);
                    }
                    m[at] = Some(b);
                };
                match rng.next_u64() % 4 {
                    0 | 1 => {
                        let bytes: Vec<u8> = (0..len).map(|i| (step * 7 + i) as u8).collect();
                        ranges.write(off, &bytes);
                        dense.write(off, &bytes);
                        for (i, b) in bytes.iter().enumerate() {
                            fill(&mut model, off as usize + i, *b);
                        }
                    }
                    2 => {
                        let mask: Vec<u8> = (0..len.div_ceil(8)).map(|_| rng.next_u64() as u8).collect();
                        let mut mask = mask;
                        if len % 8 != 0 {
                            *mask.last_mut().unwrap() &= (1u8 << (len % 8)) - 1;
                        }
                        let n: u32 = mask.iter().map(|b| b.count_ones()).sum();
                        let values: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(3) ^ step as u8).collect();
                        ranges.write_masked(off, len, &mask, &values);
                        dense.write_masked(off, len, &mask, &values);
                        let mut v = values.iter();
                        for i in 0..len as usize {
                            if mask[i / 8] >> (i % 8) & 1 == 1 {
                                fill(&mut model, off as usize + i, *v.next().unwrap());
                            }
                        }
                    }
                    _ => {
                        let cut = rng.next_u64() % 400;
                        ranges.clip(cut);
                        dense.clip(cut);
                        model.truncate(cut as usize);
                    }
                }
                let want: Vec<(u64, Vec<u8>)> = {
                    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
                    for (i, b) in model.iter().enumerate() {
                        match (b, out.last_mut()) {
                            (Some(b), Some((o, v))) if *o as usize + v.len() == i => v.push(*b),
                            (Some(b), _) => out.push((i as u64, vec![*b])),
                            (None, _) => {}
                        }
                    }
                    out
                };
                let as_owned = |o: &Overlay| -> Vec<(u64, Vec<u8>)> {
                    o.ranges().into_iter().map(|(a, b)| (a, b.to_vec())).collect()
                };
                assert_eq!(as_owned(&ranges), want, "seed {seed} step {step}: ranges");
                assert_eq!(as_owned(&dense), want, "seed {seed} step {step}: dense");
            }
        }
    }

    #[test]
    fn records_that_cannot_apply_to_any_base_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let base = StateHash::compute(std::iter::empty());
        let mut w = LogWriter::create(&log, base, 1, LogOptions::default()).unwrap();
        w.append(&d(1, 5, Op::Sparse(vec![(0, b"a")]))).unwrap();
        w.append(&d(1, 5, Op::Sparse(vec![(0, b"b")]))).unwrap();
        w.finish().unwrap();
        let out = dir.path().join("m.log");
        let e = compact_log(&[log], None, &out, Compression::None, None).unwrap_err();
        assert!(matches!(e, Error::DeltaRejected { seq: 2, .. }), "{e}");
        assert!(!out.exists(), "no output on failure");
    }
}
