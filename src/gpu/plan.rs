//! The CPU half of applying a log on the GPU: records are decoded and checked, and their writes
//! become descriptors that the `apply_tiles` kernel runs (see [`super::kernels`]). This module
//! needs no GPU, so its decisions are tested on every machine.
//!
//! Ordering. The bytes of each page are cut into tiles of [`TILE`] bytes. Every write is listed
//! once for each tile it touches, and a tile's list is in sequence order. One thread block runs
//! a tile's list from first to last, so where writes overlap, the later one lands last, as in
//! the CPU replay; different tiles never share a byte, so they run in parallel.
//!
//! Speed. Records between two structural records (create, resize, delete) cannot change any
//! page's length, so they are decoded and bounds-checked in parallel; only the epoch check
//! (each record must advance its page's epoch) runs in sequence order, a chunk at a time where
//! the chunk's summary allows. When the log is uploaded to the GPU, its records are decoded by
//! the upload's copy threads right after each piece is read ([`Planner::walk_piece`]), while
//! the bytes are in cache, and the log is opened from the walked pieces.

use crate::timing::ms;
use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointHead;
use crate::format::log::{FrameRef, FrameVisitor, Log, PieceWalk, VisitedPieces, frame_payload_for_page, walk_piece};
use crate::format::record::{
    Delta, OPTIONAL_TYPE_MIN, Op, PageShape, TYPE_CREATE, TYPE_DELETE, TYPE_RESIZE, TargetPage,
};
use crate::page::PageMeta;
use crate::replay::state::{ReplayLimit, ReplaySummary};

/// log2 of [`TILE`].
pub const TILE_SHIFT: u32 = 16;
/// Bytes of a page that one thread block owns while applying a batch.
pub const TILE: u64 = 1 << TILE_SHIFT;
/// High bit of a descriptor source: the bytes are in the batch's `extra` buffer (decompressed
/// payloads), not in the uploaded log.
pub const EXTRA: u64 = 1 << 63;
/// Descriptor kind: copy `len` bytes from `src`.
pub const KIND_COPY: u64 = 0;
/// Descriptor kind: masked write; the mask starts at `src`, the values follow the mask.
pub const KIND_MASKED: u64 = 1;
/// Descriptor kind: set `len` bytes to the value in `src`.
pub const KIND_FILL: u64 = 2;

/// One write, as the kernel reads it (four little-endian u64).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteDesc {
    /// Offset in the page.
    pub offset: u64,
    /// Bytes the write covers.
    pub len: u64,
    /// Where the bytes are (offset in the uploaded log, or [`EXTRA`] | offset in `extra`), or
    /// the fill value.
    pub src: u64,
    /// Bits 0..32: the page's slot in the batch; bits 32..34: the kind; bits 34..64: for a masked
    /// write, its first entry in the batch's `value_base` table.
    pub slot_kind: u64,
}

impl WriteDesc {
    fn slot(&self) -> u32 {
        self.slot_kind as u32
    }
    fn kind(&self) -> u64 {
        (self.slot_kind >> 32) & 3
    }
    fn value_base_index(&self) -> u64 {
        self.slot_kind >> 34
    }
}

/// A batch's writes in sequence order, kept in the parts the parallel decode produced them in:
/// copying a million of them into one array took as long as sorting them into tiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    parts: Vec<Vec<WriteDesc>>,
    /// Index of each part's first write.
    starts: Vec<usize>,
    len: usize,
}

impl Writes {
    /// The writes of `parts`, one after another (empty parts are dropped).
    pub fn from_parts(parts: Vec<Vec<WriteDesc>>) -> Writes {
        let parts: Vec<Vec<WriteDesc>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for p in &parts {
            starts.push(len);
            len += p.len();
        }
        Writes { parts, starts, len }
    }

    /// How many writes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, each with the index of its first write.
    pub fn parts(&self) -> impl IndexedParallelIterator<Item = (usize, &[WriteDesc])> {
        self.starts.par_iter().zip(&self.parts).map(|(s, p)| (*s, &p[..]))
    }

    /// The writes in order.
    pub fn iter(&self) -> impl Iterator<Item = &WriteDesc> {
        self.parts.iter().flatten()
    }

    /// The write at `index`.
    pub fn get(&self, index: usize) -> Option<&WriteDesc> {
        let p = self.starts.partition_point(|&s| s <= index).checked_sub(1)?;
        self.parts[p].get(index - self.starts[p])
    }
}

impl From<Vec<WriteDesc>> for Writes {
    fn from(writes: Vec<WriteDesc>) -> Writes {
        Writes::from_parts(vec![writes])
    }
}

/// A tile's run of entries (two u64 for the kernel: key, then first | count << 32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRun {
    /// slot << 32 | tile number in the page.
    pub key: u64,
    /// First entry (low 32 bits) and number of entries (high 32 bits).
    pub first_count: u64,
}

/// Writes between two structural records, ready for the kernel.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Page id of each slot.
    pub pages: Vec<u64>,
    /// The writes, in sequence order.
    pub writes: Writes,
    /// Per tile entry: the write's index; grouped by tile, in sequence order within a tile.
    pub entries: Vec<u32>,
    /// The tiles.
    pub tiles: Vec<TileRun>,
    /// For masked writes: how many values come before each tile the write touches.
    pub value_base: Vec<u64>,
    /// Decompressed payload bytes that writes refer to.
    pub extra: Vec<u8>,
}

/// One step of a plan, run in order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Run a batch of writes.
    Writes(WriteBatch),
    /// Allocate a page of zero bytes.
    Create {
        /// Page id.
        page_id: u64,
        /// Length.
        len: u64,
        /// Its metadata.
        meta: PageMeta,
    },
    /// Drop a page.
    Delete {
        /// Page id.
        page_id: u64,
    },
    /// Truncate or zero-extend a page.
    Resize {
        /// Page id.
        page_id: u64,
        /// New length.
        len: u64,
    },
}

/// What the records of a log do to the pages of a store.
#[derive(Debug, Clone, Default)]
pub struct ApplyPlan {
    /// The steps.
    pub steps: Vec<Step>,
    /// Records applied, bytes written, last sequence number.
    pub summary: ReplaySummary,
    /// Epoch after the log of every present page that a record touched.
    pub epochs: Vec<(u64, u64)>,
    /// Structural records (create, resize, delete).
    pub structural: u64,
    /// Of the planning time: decoding and bounds checks (parallel), ms.
    pub parse_ms: f64,
    /// Of the planning time: epoch checks in sequence order and gathering writes, ms.
    pub check_ms: f64,
    /// Of the planning time: listing and sorting tile entries, ms.
    pub tiles_ms: f64,
    /// Records decoded as the log's pieces were read ([`Planner::walk_piece`]); the others were
    /// decoded in `parse_ms`.
    pub decoded_in_scan: u64,
}

/// Where in the uploaded log bytes each segment starts (segments back to back).
pub fn segment_bases(log: &Log) -> Vec<u64> {
    let mut at = 0;
    log.segments()
        .iter()
        .map(|s| {
            let b = at;
            at += s.file_len();
            b
        })
        .collect()
}

/// The pages' shapes and where each is: a slot per page id ever seen.
struct Pages {
    /// Looked up once per record: foldhash, seeded per process (page ids come from files).
    slot_of: HashMap<u64, u32, foldhash::fast::RandomState>,
    ids: Vec<u64>,
    shape: Vec<Option<PageShape>>,
    present: Vec<bool>,
    touched: Vec<bool>,
}

impl Pages {
    /// What is known of page `id` at this point of the plan, to bound a compressed payload.
    fn target(&self, id: u64) -> TargetPage {
        target_of(self.slot_of.get(&id).and_then(|s| self.shape[*s as usize]))
    }

    fn slot(&mut self, id: u64) -> u32 {
        if let Some(s) = self.slot_of.get(&id) {
            return *s;
        }
        let s = self.ids.len() as u32;
        self.slot_of.insert(id, s);
        self.ids.push(id);
        self.shape.push(None);
        self.present.push(false);
        self.touched.push(false);
        s
    }
}

fn target_of(shape: Option<PageShape>) -> TargetPage {
    shape.map_or(TargetPage::Missing, |s| TargetPage::Len(s.len))
}

/// A record as the parallel pass leaves it.
#[derive(Clone, Copy)]
struct Decoded {
    state: RecordState,
    slot: u32,
    epoch: u64,
    bytes: u64,
    /// End of the record's writes / value-base entries / extra bytes in its chunk.
    writes_end: u32,
    value_base_end: u32,
    extra_end: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RecordState {
    /// Checked against the page's length; writes listed when the page is present.
    Ok,
    /// An optional record type this build does not know.
    Unknown,
    /// A graph record: known, and changing no page.
    NoPages,
    /// Fails to decode or to check: the sequential pass produces the exact error.
    Bad,
}

#[derive(Default)]
struct Chunk {
    records: Vec<Decoded>,
    writes: Vec<WriteDesc>,
    /// The slots its writes use, each once.
    slots: Vec<u32>,
    value_base: Vec<u64>,
    extra: Vec<u8>,
    /// Structural records met (left to the sequential pass).
    structural: usize,
    summary: ChunkSummary,
}

/// A chunk's records as the sequential pass takes them when it can take them all at once: they
/// all decoded and passed their bounds checks, and each page's epochs rise from record to record
/// inside the chunk. Then the chunk is accepted when each page's first epoch in it is above the
/// page's epoch before it, and no epoch is above the replay's limit; otherwise the pass goes
/// record by record.
#[derive(Default)]
struct ChunkSummary {
    /// Whether the records can be taken at once (as above).
    clean: bool,
    /// Each page the records touch: its slot, first and last epoch.
    epochs: Vec<(u32, u64, u64)>,
    /// Records that apply, and the bytes they write.
    records: u64,
    bytes: u64,
    /// Records of an optional type this build does not know (skipped).
    unknown: u64,
    max_epoch: u64,
    /// Index of the last record that applies.
    last_applied: Option<usize>,
}

/// Create, resize and delete: records that change a page's length or existence.
fn is_structural(f: &FrameRef) -> bool {
    matches!(f.kind, TYPE_CREATE | TYPE_DELETE | TYPE_RESIZE)
}

/// Decodes records as a walk of a read piece of the log finds them, against the pages as the
/// checkpoint has them: for a log without structural records, that is the plan's whole parallel
/// pass, done while each record's bytes are in cache.
struct DecodeDuringScan<'a> {
    pages: &'a Pages,
    /// The piece's expected lengths, to size its lists once.
    expect: ChunkLens,
}

impl FrameVisitor for DecodeDuringScan<'_> {
    type Piece = Chunk;
    fn start_piece(&self) -> Chunk {
        let e = &self.expect;
        Chunk {
            records: Vec::with_capacity(e.records),
            writes: Vec::with_capacity(e.writes),
            slots: Vec::with_capacity(e.slots),
            value_base: Vec::with_capacity(e.value_base),
            extra: Vec::with_capacity(e.extra),
            ..Default::default()
        }
    }
    fn frame(&self, piece: &mut Chunk, bytes: &[u8], base: u64, frame: &FrameRef) {
        decode_record(bytes, base, self.pages, frame, piece);
    }
    fn frames_expected(&self) -> usize {
        self.expect.records
    }
}

/// The lengths of a chunk's lists, and the bytes of log they came from: a walked piece's lists
/// are sized from the last piece's, scaled to its bytes. Grown a push at a time, they were
/// copied about once over, into fresh memory: a tenth of a walk's time went to page faults.
#[derive(Clone, Copy, Default)]
struct ChunkLens {
    bytes: usize,
    records: usize,
    writes: usize,
    slots: usize,
    value_base: usize,
    extra: usize,
}

impl ChunkLens {
    fn of(c: &Chunk, bytes: usize) -> ChunkLens {
        ChunkLens {
            bytes,
            records: c.records.len(),
            writes: c.writes.len(),
            slots: c.slots.len(),
            value_base: c.value_base.len(),
            extra: c.extra.len(),
        }
    }

    /// These lengths scaled to a piece of `bytes`, with an eighth more and a little to spare:
    /// pieces of one log are alike, and a list that outgrows its guess just grows. A guess is
    /// capped at an item per 8 bytes of the piece (the extra bytes at the piece's length), so
    /// that an odd last piece cannot make the next one reserve much more than it reads.
    fn scaled_to(&self, bytes: usize) -> ChunkLens {
        let scale = |n: usize, cap: usize| -> usize {
            if self.bytes == 0 {
                return 0;
            }
            let n = n as u128 * bytes as u128 / self.bytes as u128;
            let n = usize::try_from(n.saturating_add(n / 8).saturating_add(16)).unwrap_or(usize::MAX);
            n.min(cap.saturating_add(16))
        };
        let items = bytes / 8;
        ChunkLens {
            bytes,
            records: scale(self.records, items),
            writes: scale(self.writes, items),
            slots: scale(self.slots, items),
            value_base: scale(self.value_base, items),
            extra: scale(self.extra, bytes),
        }
    }
}

/// A piece of a log segment walked and decoded as the upload read it ([`Planner::walk_piece`]).
pub struct DecodedPiece(PieceWalk<Chunk>);

/// The records decoded in a log's walked pieces ([`Planner::open_log_from_pieces`]): per
/// segment, in the log's order, runs of frames with their decoded chunk or none (frames read
/// between pieces; a segment whose pieces could not be joined has no runs).
pub struct ScanDecoded(Vec<Option<VisitedPieces<Chunk>>>);

/// Consecutive records of one segment: its index and their frames.
type Span<'a> = (usize, &'a [FrameRef]);

/// Plans the pending run of writes (if any) and empties it. False when the epoch limit stopped
/// the replay inside it.
fn flush_run(
    log: &Log,
    seg_base: &[u64],
    run: &mut Vec<Span>,
    pages: &mut Pages,
    limit: ReplayLimit,
    out: &mut ApplyPlan,
) -> Result<bool> {
    if run.is_empty() {
        return Ok(true);
    }
    let (batch, stopped) = plan_writes(log, seg_base, run, pages, limit, out)?;
    run.clear();
    if !batch.writes.is_empty() {
        out.steps.push(Step::Writes(batch));
    }
    Ok(!stopped)
}

/// Plans applying `log` (up to `limit`) to a store holding the pages for which `present`
/// is true, loaded from the checkpoint whose index is `head`. Every record is checked against
/// the shapes of all the checkpoint's pages, also those not present; pages the log creates are
/// kept when `keep_created` accepts them. `seg_base` is from [`segment_bases`].
pub fn plan(
    log: &Log,
    seg_base: &[u64],
    head: &CheckpointHead,
    present: &dyn Fn(u64) -> bool,
    limit: ReplayLimit,
    keep_created: &dyn Fn(u64, &PageMeta) -> bool,
) -> Result<ApplyPlan> {
    Planner::new(head, present).plan(log, None, seg_base, limit, keep_created)
}

/// Plans logs against the pages of one checkpoint: [`plan`], with the pages' shapes set up
/// before the log is read, so that [`Planner::walk_piece`] can decode the records as the
/// upload reads them instead of in a second pass.
pub struct Planner {
    pages: Pages,
    /// Records before this one are left out: the store holds their effect already.
    from_seq: Option<u64>,
    /// Working memory for finishing the chunks of walked pieces, one per copy thread at most.
    scratch: std::sync::Mutex<Vec<Scratch>>,
}

impl Planner {
    /// The pages of the checkpoint whose index is `head`; those for which `present` is true are
    /// in the store.
    pub fn new(head: &CheckpointHead, present: &dyn Fn(u64) -> bool) -> Planner {
        let mut pages = Pages {
            slot_of: HashMap::with_capacity_and_hasher(head.pages.len(), Default::default()),
            ids: Vec::with_capacity(head.pages.len()),
            shape: Vec::with_capacity(head.pages.len()),
            present: Vec::with_capacity(head.pages.len()),
            touched: Vec::with_capacity(head.pages.len()),
        };
        for p in &head.pages {
            let s = pages.slot(p.id);
            pages.shape[s as usize] = Some(PageShape {
                len: p.len,
                epoch: p.epoch,
            });
            pages.present[s as usize] = present(p.id);
        }
        Planner {
            pages,
            from_seq: None,
            scratch: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Plans only the records from `seq` on (all of them for `None`): the store's pages hold
    /// the state after the records before it, with the epochs the `head` given to
    /// [`Planner::new`] has.
    pub fn starting_at(mut self, seq: Option<u64>) -> Planner {
        self.from_seq = seq;
        self
    }

    /// Walks and decodes a piece of a log segment read into memory: `bytes`, the file's bytes
    /// from offset `base` on ([`crate::format::log::walk_piece`]). For an upload that reads
    /// every byte anyway: the records are decoded while the piece is in cache, and the log is
    /// then opened from the pieces ([`Planner::open_log_from_pieces`]) without walking it again.
    pub fn walk_piece(&self, bytes: &[u8], base: u64) -> DecodedPiece {
        let lock = || self.scratch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut scratch = lock().pop().unwrap_or_else(|| Scratch::new(&self.pages));
        let visitor = DecodeDuringScan {
            pages: &self.pages,
            expect: scratch.last_piece.scaled_to(bytes.len()),
        };
        let mut walk = walk_piece(bytes, base, &visitor);
        // Finished here too (slots listed, summarised), while the chunk is in cache.
        finish_chunk(walk.visited_mut(), &mut scratch);
        scratch.last_piece = ChunkLens::of(walk.visited_mut(), bytes.len());
        lock().push(scratch);
        DecodedPiece(walk)
    }

    /// Opens the log segments `paths` (files) from their walked pieces (`pieces(i)` gives those
    /// of `paths[i]`), as [`Log::open_from_pieces`] does; the records of the pieces come back
    /// decoded, for [`Planner::plan`].
    pub fn open_log_from_pieces(
        &self,
        paths: &[std::path::PathBuf],
        pieces: &(dyn Fn(usize) -> Vec<DecodedPiece> + Sync),
    ) -> Result<(Log, ScanDecoded)> {
        let walks = |i: usize| pieces(i).into_iter().map(|p| p.0).collect();
        let (log, decoded) = Log::open_from_pieces(paths, &walks)?;
        Ok((log, ScanDecoded(decoded)))
    }

    /// Plans applying `log` (up to `limit`), as [`plan`] does. `decoded`, from
    /// [`Planner::open_log_from_pieces`] on the same log, is used when the log has no
    /// structural record and the limit does not cut it (then every record was decoded against
    /// the checkpoint's shapes, as the plan would decode it); the records the pieces did not
    /// decode, and those of any other log, are decoded here.
    pub fn plan(
        self,
        log: &Log,
        decoded: Option<ScanDecoded>,
        seg_base: &[u64],
        limit: ReplayLimit,
        keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    ) -> Result<ApplyPlan> {
        let mut pages = self.pages;
        let mut out = ApplyPlan {
            summary: ReplaySummary {
                torn_tail: log.torn_tail().cloned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let whole_log =
            self.from_seq.is_none() && limit.to_seq.is_none_or(|n| log.last_seq().is_none_or(|last| n >= last));
        match decoded.filter(|_| whole_log).and_then(|d| scanned_chunks(log, d)) {
            Some((pieces, chunks)) => {
                out.decoded_in_scan = chunks.iter().flatten().map(|c| c.records.len() as u64).sum();
                let (batch, _) = finish_writes(log, seg_base, &pieces, chunks, &mut pages, limit, &mut out)?;
                if !batch.writes.is_empty() {
                    out.steps.push(Step::Writes(batch));
                }
            }
            None => plan_in_runs(
                log,
                seg_base,
                &mut pages,
                (self.from_seq, limit),
                keep_created,
                &mut out,
            )?,
        }
        out.epochs = (0..pages.ids.len())
            .filter(|&s| pages.touched[s] && pages.present[s])
            .filter_map(|s| pages.shape[s].map(|sh| (pages.ids[s], sh.epoch)))
            .collect();
        Ok(out)
    }
}

/// The log's records in pieces, with the decoded chunk of each run of frames that has one (the
/// other frames are cut into pieces of [`CHUNK`] records, to decode now). `None` when a record
/// is structural.
#[allow(clippy::type_complexity)]
fn scanned_chunks(log: &Log, decoded: ScanDecoded) -> Option<(Vec<Span<'_>>, Vec<Option<Chunk>>)> {
    if decoded.0.len() != log.segments().len() {
        return None;
    }
    let mut pieces = Vec::new();
    let mut chunks = Vec::new();
    for (si, (seg, visited)) in log.segments().iter().zip(decoded.0).enumerate() {
        let mut rest = seg.frames();
        // A segment without runs is one run, to decode now.
        for (n, chunk) in visited.unwrap_or_else(|| vec![(rest.len(), None)]) {
            let (here, tail) = rest.split_at_checked(n)?;
            match chunk {
                Some(chunk) => {
                    if chunk.structural > 0 || chunk.records.len() != n {
                        return None;
                    }
                    pieces.push((si, here));
                    chunks.push(Some(chunk));
                }
                None => {
                    if here.iter().any(is_structural) {
                        return None;
                    }
                    for c in here.chunks(CHUNK) {
                        pieces.push((si, c));
                        chunks.push(None);
                    }
                }
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some((pieces, chunks))
}

/// Plans the records in sequence order (from `from_seq`, up to `limit`), a run of writes between
/// structural records at a time.
fn plan_in_runs(
    log: &Log,
    seg_base: &[u64],
    pages: &mut Pages,
    (from_seq, limit): (Option<u64>, ReplayLimit),
    keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    out: &mut ApplyPlan,
) -> Result<()> {
    // The records in sequence order, as slices of the segments' frame lists (no copy).
    let spans: Vec<Span> = log
        .segments()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = s.frames();
            let start = f.partition_point(|f| from_seq.is_some_and(|m| f.seq < m));
            let end = f.partition_point(|f| limit.to_seq.is_none_or(|n| f.seq <= n));
            (i, &f[start..end.max(start)])
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    // A run: the records between two structural records, possibly across segments.
    let mut run: Vec<Span> = Vec::new();
    'spans: for &(si, frames) in &spans {
        let mut rest = frames;
        loop {
            let Some(k) = rest.iter().position(is_structural) else {
                if !rest.is_empty() {
                    run.push((si, rest));
                }
                break;
            };
            if k > 0 {
                run.push((si, &rest[..k]));
            }
            if !flush_run(log, seg_base, &mut run, pages, limit, out)? {
                break 'spans;
            }
            if !plan_structural(log, (si, rest[k]), pages, limit, keep_created, out)? {
                break 'spans;
            }
            rest = &rest[k + 1..];
        }
    }
    flush_run(log, seg_base, &mut run, pages, limit, out)?;
    Ok(())
}

/// The exact error for a record that failed the parallel pass (or the epoch check), decoded
/// again, with `shape_of` giving its page's shape at that point of the log. `None` when the
/// record decodes and the epoch limit `to_epoch` stops the replay before it, as on the CPU.
fn record_error(
    log: &Log,
    (si, f): (usize, FrameRef),
    to_epoch: Option<u64>,
    shape_of: &dyn Fn(u64) -> Option<PageShape>,
) -> Option<Error> {
    let seg = &log.segments()[si];
    let payload = match seg.payload_for_page(&f, |id| target_of(shape_of(id))) {
        Ok(p) => p,
        Err(e) => return Some(e),
    };
    let delta = match Delta::decode(f.kind, &payload, f.payload_offset()) {
        Ok(d) => d,
        Err(e) => return Some(e.at(seg.path())),
    };
    if to_epoch.is_some_and(|n| delta.epoch > n) {
        return None;
    }
    // The record failed the parallel pass, so it fails the check at this point of the log.
    let reason = delta.check(shape_of(delta.page_id)).err()?;
    Some(Error::DeltaRejected {
        path: seg.path().to_owned(),
        offset: f.offset,
        seq: f.seq,
        reason,
    })
}

/// Applies one structural record to the shapes and adds its step. False when the epoch limit
/// stops the replay at it.
fn plan_structural(
    log: &Log,
    (si, f): (usize, FrameRef),
    pages: &mut Pages,
    limit: ReplayLimit,
    keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    out: &mut ApplyPlan,
) -> Result<bool> {
    let seg = &log.segments()[si];
    let payload = seg.payload_for_page(&f, |id| pages.target(id))?;
    let delta = Delta::decode(f.kind, &payload, f.payload_offset()).map_err(|e| e.at(seg.path()))?;
    if limit.to_epoch.is_some_and(|n| delta.epoch > n) {
        return Ok(false);
    }
    let slot = pages.slot(delta.page_id) as usize;
    let after = delta.check(pages.shape[slot]).map_err(|reason| Error::DeltaRejected {
        path: seg.path().to_owned(),
        offset: f.offset,
        seq: f.seq,
        reason,
    })?;
    pages.shape[slot] = after;
    pages.touched[slot] = true;
    out.structural += 1;
    out.summary.records += 1;
    out.summary.bytes_written += delta.written_bytes();
    out.summary.last_seq = Some(f.seq);
    match delta.op {
        Op::Create { len, meta } => {
            let keep = keep_created(delta.page_id, &meta);
            pages.present[slot] = keep;
            if keep {
                out.steps.push(Step::Create {
                    page_id: delta.page_id,
                    len,
                    meta,
                });
            }
        }
        Op::Delete => {
            if pages.present[slot] {
                out.steps.push(Step::Delete { page_id: delta.page_id });
            }
            pages.present[slot] = false;
        }
        Op::Resize { len } => {
            if pages.present[slot] {
                out.steps.push(Step::Resize {
                    page_id: delta.page_id,
                    len,
                });
            }
        }
        _ => unreachable!("only structural records come here"),
    }
    Ok(true)
}

/// Records decoded per parallel task.
const CHUNK: usize = 4096;

/// Plans a run of records that contains no structural record. Returns the batch and whether the
/// epoch limit stopped the replay inside the run.
fn plan_writes(
    log: &Log,
    seg_base: &[u64],
    run: &[Span],
    pages: &mut Pages,
    limit: ReplayLimit,
    out: &mut ApplyPlan,
) -> Result<(WriteBatch, bool)> {
    let pieces: Vec<Span> = run
        .iter()
        .flat_map(|&(si, frames)| frames.chunks(CHUNK).map(move |c| (si, c)))
        .collect();
    let undecoded = pieces.iter().map(|_| None).collect();
    finish_writes(log, seg_base, &pieces, undecoded, pages, limit, out)
}

/// Plans a run of writes in `pieces`, some decoded and finished already (`chunks`, one per piece:
/// a chunk from [`Planner::walk_piece`], or `None` to decode and finish it here, in parallel);
/// then, in sequence order, epochs, the first failure, the epoch limit; then the batch's writes
/// gathered and listed by tile.
fn finish_writes(
    log: &Log,
    seg_base: &[u64],
    pieces: &[Span],
    chunks: Vec<Option<Chunk>>,
    pages: &mut Pages,
    limit: ReplayLimit,
    out: &mut ApplyPlan,
) -> Result<(WriteBatch, bool)> {
    let t = Instant::now();
    let view: &Pages = pages;
    let chunks: Vec<Chunk> = chunks
        .into_par_iter()
        .zip(pieces)
        .map_init(
            || Scratch::new(view),
            // Chunks decoded as the log was read were finished then.
            |scratch, (c, &(si, frames))| match c {
                Some(c) => c,
                None => decode_chunk(log.segments()[si].bytes(), view, frames, scratch),
            },
        )
        .collect();
    out.parse_ms += ms(t);
    // In sequence order: epochs, the first failure, the epoch limit.
    let t = Instant::now();
    let mut stop: Option<(usize, usize)> = None; // (chunk, records kept in it)
    'chunks: for (ci, c) in chunks.iter().enumerate() {
        let (si, frames) = pieces[ci];
        let sum = &c.summary;
        let at_once = sum.clean
            && limit.to_epoch.is_none_or(|n| sum.max_epoch <= n)
            && sum
                .epochs
                .iter()
                .all(|&(slot, first, _)| pages.shape[slot as usize].is_some_and(|s| first > s.epoch));
        if at_once {
            for &(slot, _, last) in &sum.epochs {
                let shape = pages.shape[slot as usize].as_mut().expect("checked just above");
                shape.epoch = last;
                pages.touched[slot as usize] = true;
            }
            out.summary.records += sum.records;
            out.summary.bytes_written += sum.bytes;
            out.summary.skipped_unknown += sum.unknown;
            if let Some(i) = sum.last_applied {
                out.summary.last_seq = Some(frames[i].seq);
            }
            continue;
        }
        for (ri, r) in c.records.iter().enumerate() {
            let frame = (si, frames[ri]);
            match r.state {
                RecordState::Unknown => {
                    out.summary.skipped_unknown += 1;
                    continue;
                }
                RecordState::NoPages => continue,
                RecordState::Bad => {
                    let shape_of = |id: u64| pages.slot_of.get(&id).and_then(|s| pages.shape[*s as usize]);
                    match record_error(log, frame, limit.to_epoch, &shape_of) {
                        Some(e) => return Err(e),
                        None => {
                            stop = Some((ci, ri));
                            break 'chunks;
                        }
                    }
                }
                RecordState::Ok => {}
            }
            if limit.to_epoch.is_some_and(|n| r.epoch > n) {
                stop = Some((ci, ri));
                break 'chunks;
            }
            let slot = r.slot as usize;
            let shape = pages.shape[slot].as_mut().expect("checked in the parallel pass");
            if r.epoch <= shape.epoch {
                let before = *shape;
                return Err(record_error(log, frame, None, &|_| Some(before))
                    .expect("without an epoch limit there is always an error"));
            }
            shape.epoch = r.epoch;
            pages.touched[slot] = true;
            out.summary.records += 1;
            out.summary.bytes_written += r.bytes;
            out.summary.last_seq = Some(frame.1.seq);
        }
    }
    let chunk_base: Vec<u64> = pieces.iter().map(|&(si, _)| seg_base[si]).collect();
    let batch = gather(pages, chunks, &chunk_base, stop);
    out.check_ms += ms(t);
    let t = Instant::now();
    // Every slot's page length: the writes were checked against these, and no structural
    // record comes inside a batch.
    let page_len: Vec<u64> = batch
        .pages
        .iter()
        .map(|id| pages.shape[pages.slot_of[id] as usize].map_or(0, |s| s.len))
        .collect();
    let batch = list_tiles(batch, &page_len)?;
    out.tiles_ms += ms(t);
    Ok((batch, stop.is_some()))
}

/// How many records ahead of the one being decoded its payload is prefetched.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading the cache line at `bytes[at]`: records are far apart in a large
/// log, and without this each one's first read waits for memory.
fn prefetch(bytes: &[u8], at: u64) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at as usize) {
        // SAFETY: a prefetch is a hint that never faults and changes no memory; the pointer is
        // into a live slice regardless. (`unsafe` only because the intrinsic takes a raw pointer.)
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(b).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// Decodes and bounds-checks a chunk of records of the segment whose bytes are `seg_bytes`, and
/// finishes it ([`finish_chunk`]).
fn decode_chunk(seg_bytes: &[u8], pages: &Pages, c: &[FrameRef], scratch: &mut Scratch) -> Chunk {
    let mut out = Chunk {
        records: Vec::with_capacity(c.len()),
        ..Default::default()
    };
    for (i, f) in c.iter().enumerate() {
        if let Some(ahead) = c.get(i + PREFETCH_AHEAD) {
            prefetch(seg_bytes, ahead.payload_offset());
        }
        decode_record(seg_bytes, 0, pages, f, &mut out);
    }
    finish_chunk(&mut out, scratch);
    out
}

/// Decodes and bounds-checks one record into `out`; `bytes` holds its segment from file offset
/// `base` on, and `f.offset` is relative to `bytes`. Its writes' sources are offsets in its
/// segment (the gather moves them to the segment's place in the upload).
fn decode_record(bytes: &[u8], base: u64, pages: &Pages, f: &FrameRef, out: &mut Chunk) {
    let mut rec = Decoded {
        state: RecordState::Bad,
        slot: 0,
        epoch: 0,
        bytes: 0,
        writes_end: 0,
        value_base_end: 0,
        extra_end: 0,
    };
    if crate::format::record::changes_no_page(f.kind) {
        rec.state = RecordState::NoPages;
    } else if f.kind >= OPTIONAL_TYPE_MIN {
        rec.state = RecordState::Unknown;
    } else if is_structural(f) {
        // Planned in sequence order by `plan_structural`, never from a chunk.
        out.structural += 1;
    } else {
        decode_one(bytes, base, pages, *f, &mut rec, out);
    }
    rec.writes_end = out.writes.len() as u32;
    rec.value_base_end = out.value_base.len() as u32;
    rec.extra_end = out.extra.len() as u64;
    out.records.push(rec);
}

/// A parallel task's working memory for [`finish_chunk`], indexed by slot, left as it was found.
struct Scratch {
    /// A bit per slot, all clear.
    seen: Vec<u64>,
    /// Per slot, `u32::MAX`.
    entry: Vec<u32>,
    /// The lengths of the last piece walked with it ([`Planner::walk_piece`]).
    last_piece: ChunkLens,
}

impl Scratch {
    fn new(pages: &Pages) -> Scratch {
        Scratch {
            seen: vec![0; pages.ids.len().div_ceil(64)],
            entry: vec![u32::MAX; pages.ids.len()],
            last_piece: ChunkLens::default(),
        }
    }
}

/// The parallel work left on a decoded chunk: the slots its writes use, and its summary.
fn finish_chunk(c: &mut Chunk, scratch: &mut Scratch) {
    list_slots(c, &mut scratch.seen);
    c.summary = summarize(&c.records, &mut scratch.entry);
}

/// Lists the slots the chunk's writes use, each once. While the writes are in cache: a bit test
/// per write, where sorting them by slot in the gather took as long as copying them.
fn list_slots(out: &mut Chunk, seen: &mut [u64]) {
    for w in &out.writes {
        let s = w.slot();
        let bit = 1u64 << (s % 64);
        if seen[(s / 64) as usize] & bit == 0 {
            seen[(s / 64) as usize] |= bit;
            out.slots.push(s);
        }
    }
    for &s in &out.slots {
        seen[(s / 64) as usize] = 0;
    }
}

/// What the sequential pass needs of a chunk's records to take them all at once. `entry` is
/// `u32::MAX` per slot, and left so.
fn summarize(records: &[Decoded], entry: &mut [u32]) -> ChunkSummary {
    let mut s = ChunkSummary {
        clean: true,
        ..Default::default()
    };
    for (i, r) in records.iter().enumerate() {
        match r.state {
            RecordState::Unknown => s.unknown += 1,
            RecordState::NoPages => {}
            RecordState::Bad => s.clean = false,
            RecordState::Ok => {
                let e = &mut entry[r.slot as usize];
                if *e == u32::MAX {
                    *e = s.epochs.len() as u32;
                    s.epochs.push((r.slot, r.epoch, r.epoch));
                } else {
                    let (_, _, last) = &mut s.epochs[*e as usize];
                    s.clean &= r.epoch > *last;
                    *last = r.epoch;
                }
                s.records += 1;
                s.bytes += r.bytes;
                s.max_epoch = s.max_epoch.max(r.epoch);
                s.last_applied = Some(i);
            }
        }
        if !s.clean {
            break;
        }
    }
    for &(slot, _, _) in &s.epochs {
        entry[slot as usize] = u32::MAX;
    }
    s
}

fn decode_one(seg_bytes: &[u8], base: u64, pages: &Pages, f: FrameRef, rec: &mut Decoded, out: &mut Chunk) {
    // A payload that cannot fit its page fails the bounds check below anyway: it is not
    // decompressed, and the record is planned again in sequence for its exact error.
    let Ok(payload) = frame_payload_for_page(seg_bytes, &f, |id| pages.target(id)) else {
        return;
    };
    let Ok(delta) = Delta::decode(f.kind, &payload, base + f.payload_offset()) else {
        return;
    };
    let Some(&slot) = pages.slot_of.get(&delta.page_id) else {
        return;
    };
    let Some(shape) = pages.shape[slot as usize] else {
        return;
    };
    // Bounds only: the epoch is checked in sequence order. Epoch 0 never advances a page, so
    // checking against epoch 0 rejects nothing that the real check accepts.
    let probe = PageShape {
        len: shape.len,
        epoch: 0,
    };
    if delta.epoch == 0 || delta.check(Some(probe)).is_err() {
        return;
    }
    rec.state = RecordState::Ok;
    rec.slot = slot;
    rec.epoch = delta.epoch;
    rec.bytes = delta.written_bytes();
    if !pages.present[slot as usize] {
        return;
    }
    // Payload slices are either in the mapped segment (uploaded as is) or decompressed.
    let extra_start = out.extra.len() as u64;
    let mut copied_payload = false;
    let mut locate = |data: &[u8], out: &mut Chunk| -> u64 {
        let p = data.as_ptr() as usize;
        let start = seg_bytes.as_ptr() as usize;
        if p >= start && p + data.len() <= start + seg_bytes.len() {
            base + (p - start) as u64
        } else {
            // Decompressed: the whole payload goes to `extra` once, so masks and values stay
            // adjacent.
            if !copied_payload {
                out.extra.extend_from_slice(&payload);
                copied_payload = true;
            }
            EXTRA | (extra_start + (p - payload.as_ptr() as usize) as u64)
        }
    };
    let slot = u64::from(slot);
    let push = |offset: u64, len: u64, src: u64, kind: u64, out: &mut Chunk| {
        if len > 0 {
            out.writes.push(WriteDesc {
                offset,
                len,
                src,
                slot_kind: slot | kind << 32,
            });
        }
    };
    match &delta.op {
        Op::Full(data) => {
            let src = locate(data, out);
            push(0, data.len() as u64, src, KIND_COPY, out);
        }
        Op::Sparse(ranges) => {
            for (off, data) in ranges {
                let src = locate(data, out);
                push(*off, data.len() as u64, src, KIND_COPY, out);
            }
        }
        Op::Masked { offset, len, mask, .. } => {
            if *len == 0 {
                return;
            }
            let src = locate(mask, out);
            // Values before each tile the write touches after its first.
            let first_value_base = out.value_base.len() as u64;
            let (t0, t1) = (offset >> TILE_SHIFT, (offset + len - 1) >> TILE_SHIFT);
            let mut count = 0u64;
            let mut bit = 0u64;
            out.value_base.push(0);
            for t in t0 + 1..=t1 {
                let until = (t << TILE_SHIFT) - offset;
                count += popcount_bits(mask, bit, until);
                bit = until;
                out.value_base.push(count);
            }
            push(*offset, *len, src, KIND_MASKED | first_value_base << 2, out);
        }
        Op::Fill { offset, len, value } => push(*offset, *len, u64::from(*value), KIND_FILL, out),
        Op::Create { .. } | Op::Delete | Op::Resize { .. } => unreachable!("not in a run of writes"),
    }
}

/// Set bits of `mask` in bit positions `from..to`.
fn popcount_bits(mask: &[u8], from: u64, to: u64) -> u64 {
    let mut n = 0u64;
    let mut b = from;
    while b < to && !b.is_multiple_of(8) {
        n += u64::from(mask[(b / 8) as usize] >> (b % 8) & 1);
        b += 1;
    }
    let whole = ((to - b) / 8) as usize;
    let start = (b / 8) as usize;
    n += mask[start..start + whole]
        .iter()
        .map(|x| u64::from(x.count_ones()))
        .sum::<u64>();
    b += whole as u64 * 8;
    while b < to {
        n += u64::from(mask[(b / 8) as usize] >> (b % 8) & 1);
        b += 1;
    }
    n
}

/// Takes the chunks' writes up to `stop`, renumbering slots densely for the batch and moving
/// references to their place in the upload (`chunk_base`: where each chunk's segment starts)
/// and to extra and value-base entries to their place in the batch.
fn gather(pages: &Pages, mut chunks: Vec<Chunk>, chunk_base: &[u64], stop: Option<(usize, usize)>) -> WriteBatch {
    // (writes, value-base entries, extra bytes) kept of each chunk.
    let kept: Vec<(usize, usize, usize)> = chunks
        .iter()
        .enumerate()
        .map(|(ci, c)| match stop {
            Some((s, _)) if ci > s => (0, 0, 0),
            Some((s, kept)) if ci == s => kept.checked_sub(1).map_or((0, 0, 0), |k| {
                let r = c.records[k];
                (r.writes_end as usize, r.value_base_end as usize, r.extra_end as usize)
            }),
            _ => (c.writes.len(), c.value_base.len(), c.extra.len()),
        })
        .collect();
    // Batch slots: any numbering will do. A chunk cut short by `stop` may add a slot no kept
    // write uses: a present page, so harmless.
    let mut b = WriteBatch::default();
    let mut batch_slot = vec![u32::MAX; pages.ids.len()];
    for &g in chunks
        .iter()
        .zip(&kept)
        .filter(|(_, k)| k.0 > 0)
        .flat_map(|(c, _)| &c.slots)
    {
        if batch_slot[g as usize] == u32::MAX {
            batch_slot[g as usize] = b.pages.len() as u32;
            b.pages.push(pages.ids[g as usize]);
        }
    }
    let mut bases = Vec::with_capacity(chunks.len());
    for (c, k) in chunks.iter().zip(&kept) {
        bases.push((b.value_base.len() as u64, b.extra.len() as u64));
        b.value_base.extend_from_slice(&c.value_base[..k.1]);
        b.extra.extend_from_slice(&c.extra[..k.2]);
    }
    let parts: Vec<Vec<WriteDesc>> = chunks
        .par_iter_mut()
        .zip(&kept)
        .zip(&bases)
        .zip(chunk_base)
        .map(|(((c, k), &(value_base_start, extra_base)), &seg_start)| {
            let mut writes = std::mem::take(&mut c.writes);
            writes.truncate(k.0);
            for w in &mut writes {
                let value_base = if w.kind() == KIND_MASKED {
                    w.value_base_index() + value_base_start
                } else {
                    0
                };
                if w.kind() != KIND_FILL {
                    w.src += if w.src & EXTRA != 0 { extra_base } else { seg_start };
                }
                w.slot_kind = u64::from(batch_slot[w.slot() as usize]) | w.kind() << 32 | value_base << 34;
            }
            writes
        })
        .collect();
    b.writes = Writes::from_parts(parts);
    b
}

/// The tiles a write touches: the first one's number in the page, and how many.
fn tile_span(w: &WriteDesc) -> (u64, u64) {
    let t0 = w.offset >> TILE_SHIFT;
    (t0, ((w.offset + w.len - 1) >> TILE_SHIFT) - t0 + 1)
}

/// Lists each write under every tile it touches and groups the list by tile, keeping sequence
/// order inside a tile. `page_len` is each slot's page length (the writes lie inside it).
fn list_tiles(mut b: WriteBatch, page_len: &[u64]) -> Result<WriteBatch> {
    // Each part of the writes fills its own stretch of the list.
    let sizes: Vec<usize> = b
        .writes
        .parts()
        .map(|(_, ws)| ws.iter().map(|w| tile_span(w).1 as usize).sum())
        .collect();
    // The kernel indexes writes and entries with 32 bits.
    let total: usize = sizes.iter().sum();
    if b.writes.len() > u32::MAX as usize || total > u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{} writes ({total} tile entries) between two structural records: more than one GPU batch holds",
            b.writes.len()
        )));
    }
    // Tiles numbered densely, slot after slot: when there are not many more tiles than entries,
    // a counting sort (stable, so sequence order holds inside a tile); else a comparison sort.
    let mut tile_base = Vec::with_capacity(page_len.len());
    let mut ntiles = 0u64;
    for len in page_len {
        tile_base.push(ntiles);
        ntiles += len.div_ceil(TILE);
    }
    if ntiles <= 4 * total as u64 + 4096 {
        count_tiles(&mut b, total, &tile_base, ntiles as usize);
        return Ok(b);
    }
    let mut keyed: Vec<(u64, u32)> = vec![(0, 0); total];
    let mut regions = Vec::with_capacity(sizes.len());
    let mut rest: &mut [(u64, u32)] = &mut keyed;
    for n in &sizes {
        let (here, tail) = rest.split_at_mut(*n);
        regions.push(here);
        rest = tail;
    }
    regions
        .into_par_iter()
        .zip(b.writes.parts())
        .for_each(|(dst, (first, ws))| {
            let mut at = 0;
            for (i, w) in ws.iter().enumerate() {
                let (t0, n) = tile_span(w);
                let slot = u64::from(w.slot()) << 32;
                for k in 0..n {
                    dst[at] = (slot | (t0 + k), (first + i) as u32);
                    at += 1;
                }
            }
        });
    sort_tiles(&mut b, keyed);
    Ok(b)
}

/// Groups the writes' `total` tile entries by tile with a counting sort over the dense tile
/// numbers (`tile_base[slot]` + tile in the page). The writes are cut into parts that count and
/// place their entries in parallel: a part's entries for a tile go after those of the parts
/// before it, and in order within it, so each tile's list stays in sequence order.
fn count_tiles(b: &mut WriteBatch, total: usize, tile_base: &[u64], ntiles: usize) {
    use std::sync::atomic::{AtomicU32, Ordering};
    // A write's first tile in the dense numbering, and how many tiles it touches.
    let dense_span = |w: &WriteDesc| {
        let (t0, n) = tile_span(w);
        (tile_base[w.slot() as usize] + t0, n)
    };
    // One count per part and tile: at most 4 x 4 bytes per entry of memory.
    let max_parts = 2 * rayon::current_num_threads();
    let parts = (4 * total / ntiles.max(1)).clamp(1, max_parts);
    let per_part = b.writes.len().div_ceil(parts).max(1);
    // A part: consecutive pieces of the writes (each with its first write's index).
    let mut groups: Vec<Vec<(usize, &[WriteDesc])>> = vec![Vec::new()];
    let mut in_group = 0;
    for piece in b.writes.parts().collect::<Vec<_>>() {
        if in_group >= per_part {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += piece.1.len();
        groups.last_mut().expect("never empty").push(piece);
    }
    let mut counts: Vec<Vec<u32>> = groups
        .par_iter()
        .map(|g| {
            let mut c = vec![0u32; ntiles];
            for w in g.iter().flat_map(|p| p.1) {
                let (first, n) = dense_span(w);
                for t in first..first + n {
                    c[t as usize] += 1;
                }
            }
            c
        })
        .collect();
    // Counts become each part's first position per tile, in parallel over ranges of tiles (the
    // tiles are independent, and a serial pass over them sits on the plan's critical path):
    // each tile's entries, then where each tile's list starts, then each part's place in its tile.
    const TILES_PER_TASK: usize = 1024;
    let tile_total: Vec<u32> = (0..ntiles)
        .into_par_iter()
        .with_min_len(TILES_PER_TASK)
        .map(|t| counts.iter().map(|c| c[t]).sum())
        .collect();
    let mut tile_first = Vec::with_capacity(ntiles);
    let mut at = 0u32;
    for n in &tile_total {
        tile_first.push(at);
        at += n;
    }
    let mut ranges: Vec<Vec<&mut [u32]>> = (0..ntiles.div_ceil(TILES_PER_TASK)).map(|_| Vec::new()).collect();
    for c in &mut counts {
        for (range, piece) in ranges.iter_mut().zip(c.chunks_mut(TILES_PER_TASK)) {
            range.push(piece);
        }
    }
    ranges.into_par_iter().enumerate().for_each(|(r, mut parts)| {
        for k in 0..parts.first().map_or(0, |p| p.len()) {
            let mut at = tile_first[r * TILES_PER_TASK + k];
            for part in &mut parts {
                let n = part[k];
                part[k] = at;
                at += n;
            }
        }
    });
    // The tiles that have entries, in order, each with its slot and number in the page.
    b.tiles = (0..ntiles)
        .into_par_iter()
        .with_min_len(TILES_PER_TASK)
        .filter(|&t| tile_total[t] > 0)
        .map(|t| {
            let slot = tile_base.partition_point(|&base| base <= t as u64) - 1;
            TileRun {
                key: (slot as u64) << 32 | (t as u64 - tile_base[slot]),
                first_count: u64::from(tile_first[t]) | u64::from(tile_total[t]) << 32,
            }
        })
        .collect();
    // Made in parallel: the allocation's pages are faulted in by the first write, which one
    // thread would do serially.
    let entries: Vec<AtomicU32> = (0..total).into_par_iter().map(|_| AtomicU32::new(0)).collect();
    groups.par_iter().zip(counts.par_iter_mut()).for_each(|(g, next)| {
        for &(start, ws) in g {
            for (i, w) in ws.iter().enumerate() {
                let (first, n) = dense_span(w);
                for t in first..first + n {
                    let at = &mut next[t as usize];
                    // Positions are disjoint between parts: relaxed stores suffice, and the
                    // parallel loop's end orders them before the reads below.
                    entries[*at as usize].store((start + i) as u32, Ordering::Relaxed);
                    *at += 1;
                }
            }
        }
    });
    // In place (the same size and alignment): a parallel collect into a new list faulted in
    // its pages anew.
    b.entries = entries.into_iter().map(AtomicU32::into_inner).collect();
}

/// Groups `keyed` (tile key, write) by tile with a parallel comparison sort.
fn sort_tiles(b: &mut WriteBatch, mut keyed: Vec<(u64, u32)>) {
    keyed.par_sort_unstable();
    b.entries = keyed.par_iter().map(|k| k.1).collect();
    let starts: Vec<usize> = (0..keyed.len())
        .into_par_iter()
        .filter(|&i| i == 0 || keyed[i].0 != keyed[i - 1].0)
        .collect();
    b.tiles = starts
        .par_iter()
        .enumerate()
        .map(|(j, &i)| {
            let end = starts.get(j + 1).copied().unwrap_or(keyed.len());
            TileRun {
                key: keyed[i].0,
                first_count: i as u64 | ((end - i) as u64) << 32,
            }
        })
        .collect();
}

/// Runs a batch on host pages the way the kernel runs it on the device: tile by tile, each
/// tile's entries in order, each write clipped to the tile. `log_bytes` is the uploaded log.
/// For tests of the plan; the GPU is the real executor.
pub fn run_batch_on_host(b: &WriteBatch, pages: &mut HashMap<u64, Vec<u8>>, log_bytes: &[u8]) {
    for t in &b.tiles {
        let slot = (t.key >> 32) as usize;
        let lo = (t.key & 0xffff_ffff) << TILE_SHIFT;
        let hi = lo + TILE;
        let page = pages.get_mut(&b.pages[slot]).expect("a present page");
        let (first, count) = (t.first_count & 0xffff_ffff, t.first_count >> 32);
        for e in first..first + count {
            let w = b
                .writes
                .get(b.entries[e as usize] as usize)
                .expect("entries index the writes");
            let (a, z) = (w.offset.max(lo), (w.offset + w.len).min(hi));
            let src = |at: u64| -> u8 {
                if w.src & EXTRA != 0 {
                    b.extra[((w.src & !EXTRA) + at) as usize]
                } else {
                    log_bytes[(w.src + at) as usize]
                }
            };
            match w.kind() {
                KIND_COPY => {
                    for x in a..z {
                        page[x as usize] = src(x - w.offset);
                    }
                }
                KIND_FILL => page[a as usize..z as usize].fill(w.src as u8),
                _ => {
                    let mask_len = w.len.div_ceil(8);
                    let tile_no = lo >> TILE_SHIFT;
                    let mut v = b.value_base[(w.value_base_index() + tile_no - (w.offset >> TILE_SHIFT)) as usize];
                    for x in a..z {
                        let bit = x - w.offset;
                        if src(bit / 8) >> (bit % 8) & 1 == 1 {
                            page[x as usize] = src(mask_len + v);
                            v += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn popcount_of_bit_ranges() {
        let mask = [0b1010_1010u8, 0xff, 0x01];
        assert_eq!(popcount_bits(&mask, 0, 24), 4 + 8 + 1);
        assert_eq!(popcount_bits(&mask, 1, 2), 1);
        assert_eq!(popcount_bits(&mask, 3, 17), 3 + 8 + 1);
        assert_eq!(popcount_bits(&mask, 9, 9), 0);
    }

    #[test]
    fn a_pieces_lists_are_sized_from_the_last_piece_scaled_to_its_bytes() {
        let last = ChunkLens {
            bytes: 8000,
            records: 80,
            writes: 160,
            slots: 8,
            value_base: 0,
            extra: 400,
        };
        let guess = last.scaled_to(4000);
        assert_eq!(
            [
                guess.bytes,
                guess.records,
                guess.writes,
                guess.slots,
                guess.value_base,
                guess.extra
            ],
            [4000, 40 + 5 + 16, 80 + 10 + 16, 4 + 16, 16, 200 + 25 + 16]
        );
        // The first piece a scratch walks has nothing to go by.
        assert_eq!(ChunkLens::default().scaled_to(3 << 20).records, 0);
        // Never more than an item per 8 bytes of the piece (and 16), however dense the last.
        let dense = ChunkLens {
            bytes: 1,
            records: usize::MAX,
            extra: usize::MAX,
            ..last
        };
        let guess = dense.scaled_to(3 << 20);
        assert_eq!([guess.records, guess.extra], [(3 << 20) / 8 + 16, (3 << 20) + 16]);
        assert_eq!(dense.scaled_to(usize::MAX).records, usize::MAX / 8 + 16);
    }

    #[test]
    fn writes_kept_in_parts_read_as_one_list() {
        let w = |offset| WriteDesc {
            offset,
            len: 1,
            src: 0,
            slot_kind: 0,
        };
        let writes = Writes::from_parts(vec![vec![w(0), w(1)], Vec::new(), vec![w(2)], vec![w(3), w(4), w(5)]]);
        assert_eq!(writes.len(), 6);
        assert_eq!(writes.iter().map(|w| w.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            (0..7).map(|i| writes.get(i).map(|w| w.offset)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert_eq!(
            writes.parts().map(|(first, p)| (first, p.len())).collect::<Vec<_>>(),
            [(0, 2), (2, 1), (3, 3)]
        );
        assert!(Writes::from_parts(vec![Vec::new()]).is_empty());
    }

    #[test]
    fn a_write_is_listed_under_every_tile_it_touches_in_sequence_order() {
        let w = |offset, len| WriteDesc {
            offset,
            len,
            src: 0,
            slot_kind: 0,
        };
        // 0: tiles 0-1; 1: tile 1; 2: tile 0; 3: tiles 0-2.
        let writes = vec![w(TILE - 2, 4), w(TILE + 5, 1), w(3, 1), w(0, 2 * TILE + 1)];
        let lists = |page_len: u64| {
            let b = list_tiles(
                WriteBatch {
                    pages: vec![7],
                    writes: writes.clone().into(),
                    ..Default::default()
                },
                &[page_len],
            )
            .unwrap();
            b.tiles
                .iter()
                .map(|t| {
                    let (f, n) = ((t.first_count & 0xffff_ffff) as usize, (t.first_count >> 32) as usize);
                    (t.key, b.entries[f..f + n].to_vec())
                })
                .collect::<Vec<(u64, Vec<u32>)>>()
        };
        let want = vec![(0, vec![0, 2, 3]), (1, vec![0, 1, 3]), (2, vec![3])];
        // A page of three tiles takes the counting sort, a huge one the comparison sort.
        assert_eq!(lists(3 * TILE), want);
        assert_eq!(lists(1 << 40), want);
    }
}
