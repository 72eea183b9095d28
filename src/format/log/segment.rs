//! Scanning one segment: every frame checked in order (or in parallel pieces that must agree),
//! its end classified as clean, a torn tail or corruption, and unclosed groups cut off.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, Error, Result};
use crate::format::lock::LogLock;
use crate::format::record::TargetPage;
use crate::mmap::ReadOnlyMap;
use rayon::prelude::*;

use super::*;

/// How a segment's records end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Every byte belongs to a valid frame.
    Clean,
    /// The bytes from `offset` cannot be read as a frame.
    Damaged {
        /// Where the first bad frame starts.
        offset: u64,
        /// What is wrong.
        problem: Corruption,
        /// Whether a crash in the middle of an append could have left these bytes
        /// (the frame is incomplete or fails its checksum, and no valid frame follows).
        tearable: bool,
    },
}

/// An opened, scanned log segment.
pub struct Segment {
    pub(super) path: PathBuf,
    pub(super) map: ReadOnlyMap,
    pub(super) header: SegmentHeader,
    pub(super) frames: Vec<FrameRef>,
    pub(super) end: SegmentEnd,
    pub(super) payloads_checked: bool,
    /// The segment's read lock: no writer cuts the file while it is mapped (dropped after the
    /// mapping).
    pub(super) _read_lock: LogLock,
}

impl Segment {
    /// Maps `path`, parses its header and finds every whole frame.
    pub fn open(path: &Path) -> Result<Segment> {
        // Every byte of a segment is read (the frame scan checks every CRC): map it whole.
        Segment::open_scanned(path, true)
    }

    /// Like [`Segment::open`], but reads only the frame headers: the record checksums over the
    /// payloads are left unchecked (see [`Log::open_deferred`]). A segment whose frames do not
    /// end cleanly is scanned again in full, so its damage is classified exactly as by `open`.
    pub fn open_deferred(path: &Path) -> Result<Segment> {
        let s = Segment::open_scanned(path, false)?;
        if s.end != SegmentEnd::Clean {
            return Segment::open(path);
        }
        Ok(s)
    }

    /// Opens a segment whose bytes were walked piece by piece as they were read
    /// ([`walk_piece`]): its frames are the pieces' frames, each piece's taken when the chain of
    /// frames from the header reaches its first frame exactly, with the frames between pieces
    /// read from the mapping; the record checksums are not checked (as by
    /// [`Segment::open_deferred`]). When the walks cannot be joined, the segment is opened with
    /// [`Segment::open_deferred`] instead and no pieces come back.
    pub fn open_from_pieces<P>(path: &Path, pieces: Vec<PieceWalk<P>>) -> Result<(Segment, Option<VisitedPieces<P>>)> {
        let read_lock = LogLock::segment_shared(path)?;
        let map = ReadOnlyMap::open(path)?;
        let header = SegmentHeader::parse(map.bytes()).map_err(|e| e.at(path))?;
        let stitched = stitch(map.bytes(), &header, pieces).filter(|(frames, _)| groups_closed(&header, frames));
        let Some((frames, runs)) = stitched else {
            return Ok((Segment::open_deferred(path)?, None));
        };
        let segment = Segment {
            path: path.to_owned(),
            map,
            header,
            frames,
            end: SegmentEnd::Clean,
            payloads_checked: false,
            _read_lock: read_lock,
        };
        Ok((segment, Some(runs)))
    }

    pub(super) fn open_scanned(path: &Path, check_payloads: bool) -> Result<Segment> {
        // Without the payload checks only one header per record is touched: no need to
        // populate the whole mapping.
        let read_lock = LogLock::segment_shared(path)?;
        let map = ReadOnlyMap::open_with(path, check_payloads)?;
        let header = SegmentHeader::parse(map.bytes()).map_err(|e| e.at(path))?;
        let (mut frames, mut end) = scan(map.bytes(), &header, check_payloads);
        close_groups(&header, &mut frames, &mut end, map.len() as u64);
        Ok(Segment {
            path: path.to_owned(),
            map,
            header,
            frames,
            end,
            payloads_checked: check_payloads,
            _read_lock: read_lock,
        })
    }

    /// Whether the record checksum of every listed frame was checked when the segment was read.
    pub fn payloads_checked(&self) -> bool {
        self.payloads_checked
    }

    /// The record checksum stored in a frame's header: the CRC32C of the header's first 28
    /// bytes followed by the stored payload.
    pub fn record_checksum(&self, f: &FrameRef) -> u32 {
        let at = f.offset as usize + 28;
        u32::from_le_bytes(self.map.bytes()[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }
    /// The valid frames, in file order.
    pub fn frames(&self) -> &[FrameRef] {
        &self.frames
    }
    /// How the records end.
    pub fn end(&self) -> &SegmentEnd {
        &self.end
    }
    /// The whole file's bytes (mapped).
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }
    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// A frame's payload, decompressed when the frame says so.
    pub fn payload(&self, f: &FrameRef) -> Result<Cow<'_, [u8]>> {
        self.payload_for_page(f, |_| TargetPage::Unknown)
    }

    /// The page id and epoch a record's payload starts with, decompressing no more than the
    /// block that holds them (a reader that needs only the epochs of records it has applied).
    pub fn page_and_epoch(&self, f: &FrameRef) -> Result<(u64, u64)> {
        let corrupt = |problem| Error::Corrupt {
            path: self.path.clone(),
            offset: f.payload_offset(),
            problem,
        };
        let head = frame_payload_head(self.map.bytes(), f).map_err(|p| match p {
            PayloadProblem::Compression(why) => corrupt(Corruption::Compression(why)),
            PayloadProblem::DoesNotFit(reason) => Error::DeltaRejected {
                path: self.path.clone(),
                offset: f.offset,
                seq: f.seq,
                reason,
            },
        })?;
        if head.len() < 16 {
            return Err(corrupt(Corruption::Truncated {
                needed: 16,
                available: head.len() as u64,
            }));
        }
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
        Ok((word(0), word(8)))
    }

    /// A frame's payload, decompressed only when its declared size fits the page it targets
    /// ([`frame_payload_for_page`]); a payload that cannot fit is a rejected record.
    pub fn payload_for_page(&self, f: &FrameRef, page_len: impl FnOnce(u64) -> TargetPage) -> Result<Cow<'_, [u8]>> {
        frame_payload_for_page(self.map.bytes(), f, page_len).map_err(|p| match p {
            PayloadProblem::Compression(why) => Error::Corrupt {
                path: self.path.clone(),
                offset: f.payload_offset(),
                problem: Corruption::Compression(why),
            },
            PayloadProblem::DoesNotFit(reason) => Error::DeltaRejected {
                path: self.path.clone(),
                offset: f.offset,
                seq: f.seq,
                reason,
            },
        })
    }
}

/// True when `frames` end with a closed group and use no flag their segment's version lacks:
/// [`close_groups`] would leave them as they are.
pub(super) fn groups_closed(header: &SegmentHeader, frames: &[FrameRef]) -> bool {
    let open = |f: &FrameRef| f.flags & FLAG_GROUP_CONTINUES != 0;
    !frames.last().is_some_and(open) && (header.minor > 0 || !frames.iter().any(open))
}

/// Applies the group rule (format 1.1) to a scanned segment: the records of a group that the
/// segment's frames leave unclosed are not whole records. They leave `frames`, and the tail from
/// the group's first record becomes a torn tail (or, where the frames already end in damage
/// that is not tearable, that damage stands). In a 1.0 segment the group flag is corruption.
pub(super) fn close_groups(header: &SegmentHeader, frames: &mut Vec<FrameRef>, end: &mut SegmentEnd, file_len: u64) {
    let open = |f: &FrameRef| f.flags & FLAG_GROUP_CONTINUES != 0;
    if header.minor == 0
        && let Some(i) = frames.iter().position(open)
    {
        *end = SegmentEnd::Damaged {
            offset: frames[i].offset + 17,
            problem: Corruption::BadField {
                field: "frame flags",
                value: frames[i].flags.into(),
                why: "bit 1 (group continues) is not defined in a version 1.0 segment".into(),
            },
            tearable: false,
        };
        frames.truncate(i);
        return;
    }
    let whole = frames.len() - frames.iter().rev().take_while(|f| open(f)).count();
    if whole == frames.len() {
        return;
    }
    let start = frames[whole].offset;
    let cut = frames.len() - whole;
    frames.truncate(whole);
    let why = match end {
        SegmentEnd::Damaged { tearable: false, .. } => return,
        SegmentEnd::Damaged {
            problem: Corruption::TornTail { why, .. },
            ..
        } => format!("a group left open by {cut} whole records, then {why}"),
        SegmentEnd::Damaged { problem, .. } => format!("a group left open by {cut} whole records, then {problem}"),
        SegmentEnd::Clean => format!("a group of {cut} records that was never closed"),
    };
    *end = SegmentEnd::Damaged {
        offset: start,
        problem: Corruption::TornTail {
            len: file_len - start,
            why,
        },
        tearable: true,
    };
}

/// Finds the whole frames of a segment and how they end. Sequence numbers must run on from
/// the header's `first_seq` without gaps.
pub(super) fn scan(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> (Vec<FrameRef>, SegmentEnd) {
    if let Some(frames) = scan_in_parallel(bytes, header, check_payloads) {
        return (frames, SegmentEnd::Clean);
    }
    scan_in_order(bytes, header, check_payloads)
}

/// Bytes of a segment per parallel scan piece.
pub(super) const SCAN_PIECE: u64 = 8 << 20;
/// How far past a piece's start a scan looks for the first frame header.
pub(super) const SCAN_PROBE: u64 = 256 << 10;

/// The frames of a clean segment, found by several threads: each piece of the segment is walked
/// from the first offset in it where a valid frame header starts. A walk must end exactly where
/// the next piece's walk begins, which makes every start a link of the one chain of frames from
/// the segment's header; together with gapless sequence numbers, the result is the in-order
/// scan's. `None` (scan in order) when that does not hold, when any frame is damaged, or when the
/// segment is small.
pub(super) fn scan_in_parallel(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> Option<Vec<FrameRef>> {
    let first = u64::from(header.header_len);
    let len = bytes.len() as u64;
    let pieces = (len.saturating_sub(first) / SCAN_PIECE).min(64);
    if pieces < 2 {
        return None;
    }
    // The first frame start at or after each piece's nominal start.
    let mut starts: Vec<u64> = (1..pieces)
        .into_par_iter()
        .map(|k| {
            let from = first + k * (len - first) / pieces;
            let until = (from + SCAN_PROBE).min(len.saturating_sub(FRAME_HEADER_LEN as u64 - 1));
            (from..until).find(|&at| read_frame(bytes, at, false).is_ok())
        })
        .collect::<Option<Vec<u64>>>()?;
    starts.insert(0, first);
    starts.push(len);
    if starts.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    let pieces: Vec<(u64, u64)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    let walks: Vec<Vec<Vec<FrameRef>>> = pieces
        .par_chunks(INTERLEAVED_WALKS)
        .map(|group| walk_interleaved(bytes, group, check_payloads))
        .collect::<Option<Vec<_>>>()?;
    let frames = concat_in_parallel(&walks.into_iter().flatten().collect::<Vec<_>>());
    numbered_from(&frames, header.first_seq).then_some(frames)
}

/// Pieces one task walks at once, a frame of each in turn.
pub(super) const INTERLEAVED_WALKS: usize = 4;

/// Walks each piece `(start, end)` of `group` from frame to frame, one step of each piece in
/// turn: in a large segment every frame header read waits for memory, and reads of different
/// pieces do not depend on each other, so the CPU overlaps their waits. `None` when a frame is
/// invalid or a walk does not end exactly at its piece's end.
pub(super) fn walk_interleaved(bytes: &[u8], group: &[(u64, u64)], check_payloads: bool) -> Option<Vec<Vec<FrameRef>>> {
    let mut at: Vec<u64> = group.iter().map(|p| p.0).collect();
    let mut frames: Vec<Vec<FrameRef>> = vec![Vec::new(); group.len()];
    let mut walking = true;
    while walking {
        walking = false;
        for (k, &(_, end)) in group.iter().enumerate() {
            if at[k] < end {
                let f = read_frame(bytes, at[k], check_payloads).ok()?;
                at[k] += f.frame_len();
                frames[k].push(f);
                walking = true;
            }
        }
    }
    group.iter().zip(&at).all(|(p, &a)| a == p.1).then_some(frames)
}

/// Whether `frames` carry the sequence numbers `first_seq`, `first_seq + 1`, ... without a gap.
pub(super) fn numbered_from(frames: &[FrameRef], first_seq: u64) -> bool {
    frames
        .par_iter()
        .enumerate()
        .all(|(i, f)| first_seq.checked_add(i as u64) == Some(f.seq))
}

/// The lists `parts` one after another in one list, made and filled in parallel: most of the
/// time of joining a large segment's walks went to writing its frame list (fresh memory, a page
/// fault per 128 frames) one piece after another.
pub(super) fn concat_in_parallel(parts: &[Vec<FrameRef>]) -> Vec<FrameRef> {
    let blank = FrameRef {
        offset: 0,
        seq: 0,
        kind: 0,
        flags: 0,
        payload_len: 0,
    };
    let total = parts.iter().map(Vec::len).sum();
    let mut out: Vec<FrameRef> = (0..total).into_par_iter().with_min_len(4096).map(|_| blank).collect();
    let mut places = Vec::with_capacity(parts.len());
    let mut rest = out.as_mut_slice();
    for part in parts {
        let (here, tail) = rest.split_at_mut(part.len());
        places.push((here, part));
        rest = tail;
    }
    places.into_par_iter().for_each(|(dst, src)| dst.copy_from_slice(src));
    out
}

/// Finds the frames one after another, and classifies the damage where they stop.
pub(super) fn scan_in_order(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> (Vec<FrameRef>, SegmentEnd) {
    let mut frames = Vec::new();
    let mut at = u64::from(header.header_len);
    // `None` once a record numbered 2^64 - 1 has been read: sequence numbers never wrap.
    let mut expected = Some(header.first_seq);
    while at < bytes.len() as u64 {
        match read_frame(bytes, at, check_payloads) {
            Ok(f) if Some(f.seq) != expected => {
                let problem = match expected {
                    Some(expected) => Corruption::SequenceGap { expected, found: f.seq },
                    None => Corruption::BadField {
                        field: "seq",
                        value: f.seq,
                        why: "follows seq 2^64 - 1: sequence numbers do not wrap around".into(),
                    },
                };
                let end = SegmentEnd::Damaged {
                    offset: at + 8,
                    problem,
                    tearable: false,
                };
                return (frames, end);
            }
            Ok(f) => {
                at += f.frame_len();
                expected = f.seq.checked_add(1);
                frames.push(f);
            }
            Err(FrameFault::Invalid(e)) => {
                return (
                    frames,
                    SegmentEnd::Damaged {
                        offset: e.offset,
                        problem: e.problem,
                        tearable: false,
                    },
                );
            }
            Err(FrameFault::Tearable(why)) => {
                let len = bytes.len() as u64 - at;
                let followed = valid_frame_after(bytes, at, expected.unwrap_or(u64::MAX));
                let problem = if followed {
                    Corruption::CorruptRecord {
                        why,
                        context: "with whole records after it",
                    }
                } else {
                    Corruption::TornTail { len, why }
                };
                return (
                    frames,
                    SegmentEnd::Damaged {
                        offset: at,
                        problem,
                        tearable: !followed,
                    },
                );
            }
        }
    }
    (frames, SegmentEnd::Clean)
}
