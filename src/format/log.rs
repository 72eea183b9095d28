//! Log segments: a header naming the state the log applies to, then framed records.
//! See docs/FORMAT.md, "Log segment" and "Torn tail and corruption".

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::lock::{LockWait, LogLock, SegmentCutLock};
use super::record::{Delta, OPTIONAL_TYPE_MIN, TYPE_CREATE, TYPE_FILL, TargetPage, max_payload_len};
use super::{Cursor, FORMAT_MAJOR, FORMAT_MINOR, ParseError, PutLe, bad_field, crc32c};
use crate::error::{Corruption, Error, Result};
use crate::mmap::ReadOnlyMap;
use crate::page::StateHash;
use rayon::prelude::*;

/// Magic bytes at offset 0 of a log segment.
pub const MAGIC: [u8; 8] = *b"MMSBLOG\0";
/// Length of a version-1.0 segment header.
pub const SEGMENT_HEADER_LEN: usize = 72;
/// Length of a record frame's header.
pub const FRAME_HEADER_LEN: usize = 32;
/// Frame flag: the payload is one zstd frame with its content size recorded.
pub const FLAG_ZSTD: u8 = 1;
/// Frame flag (format 1.1): the record is not the last of its atomic group. A group is a run of
/// records with this bit set closed by one without it; a log that ends inside a group ends in a
/// torn tail from the group's first record.
pub const FLAG_GROUP_CONTINUES: u8 = 2;
/// Largest decompressed payload a reader accepts (4 GiB); larger payloads are stored raw.
pub const MAX_DECOMPRESSED: u64 = 4 << 30;
/// File-name extension of segment files.
pub const SEGMENT_EXT: &str = "mmsblog";

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Major format version.
    pub major: u16,
    /// Minor format version.
    pub minor: u16,
    /// Header length; records start here.
    pub header_len: u32,
    /// Position of the segment in its log, from 0.
    pub segment_no: u64,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// State hash of the checkpoint the log applies to.
    pub base: StateHash,
}

impl SegmentHeader {
    /// Encodes a 72-byte header (the layout of versions 1.0 and 1.1) with this header's minor.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SEGMENT_HEADER_LEN);
        b.extend_from_slice(&MAGIC);
        b.put_u16(FORMAT_MAJOR);
        b.put_u16(self.minor);
        b.put_u32(SEGMENT_HEADER_LEN as u32);
        b.put_u64(self.segment_no);
        b.put_u64(self.first_seq);
        b.extend_from_slice(&self.base.0);
        b.put_u32(0);
        let crc = crc32c(&b);
        b.put_u32(crc);
        b
    }

    /// Parses a header from the start of a segment.
    pub fn parse(bytes: &[u8]) -> Result<SegmentHeader, ParseError> {
        let mut c = Cursor::new(bytes, 0);
        let minor = c.magic_and_version(MAGIC, "MMSBLOG\\0")?;
        let header_len = c.u32()?;
        // A newer minor may lengthen the header; the CRC is always its last four bytes.
        let ok_len = if super::is_known_minor(minor) {
            header_len as usize == SEGMENT_HEADER_LEN
        } else {
            header_len as usize >= SEGMENT_HEADER_LEN && header_len <= 4096
        };
        if !ok_len {
            return Err(bad_field(
                12,
                "header_len",
                header_len.into(),
                "72 in version 1.0; at most 4096",
            ));
        }
        let hl = header_len as usize;
        let head = bytes.get(..hl).ok_or_else(|| {
            ParseError::new(
                0,
                Corruption::Truncated {
                    needed: hl as u64,
                    available: bytes.len() as u64,
                },
            )
        })?;
        let stored = u32::from_le_bytes(head[hl - 4..].try_into().expect("4 bytes"));
        let computed = crc32c(&head[..hl - 4]);
        if stored != computed {
            return Err(ParseError::new(
                hl as u64 - 4,
                Corruption::ChecksumMismatch {
                    what: "segment header".into(),
                    stored,
                    computed,
                },
            ));
        }
        let segment_no = c.u64()?;
        let first_seq = c.u64()?;
        let base = StateHash(c.array()?);
        if super::is_known_minor(minor) {
            c.zeros(4, "segment header reserved bytes")?;
        }
        Ok(SegmentHeader {
            major: FORMAT_MAJOR,
            minor,
            header_len,
            segment_no,
            first_seq,
            base,
        })
    }
}

/// Where a record is in its segment. Only frames whose checksums matched are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Offset of the frame header in the segment file.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// Record type.
    pub kind: u8,
    /// Frame flags.
    pub flags: u8,
    /// Stored payload length.
    pub payload_len: u64,
}

impl FrameRef {
    /// Offset of the payload in the segment file.
    pub fn payload_offset(&self) -> u64 {
        self.offset + FRAME_HEADER_LEN as u64
    }
    /// Bytes the whole frame takes.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + self.payload_len
    }
}

/// Sees every frame of a walk of a piece of a segment ([`walk_piece`]) as its header is read, so
/// that a reader can decode what it needs of each record while the piece is in cache: on a
/// large log, a second pass over the frames waits for memory again, once per record.
pub trait FrameVisitor: Sync {
    /// What the visitor makes of one piece of a segment (consecutive frames).
    type Piece: Send;
    /// A piece's state before its first frame.
    fn start_piece(&self) -> Self::Piece;
    /// One frame of the piece, in file order. `bytes` holds the segment file from offset `base`
    /// on (a piece of it read into memory); `frame.offset` is relative to `bytes`, and the whole
    /// frame lies in it. The frame's header checksum and fields have been checked, its record
    /// checksum maybe not.
    fn frame(&self, piece: &mut Self::Piece, bytes: &[u8], base: u64, frame: &FrameRef);
    /// About how many frames the piece will hold, to size its frame list once: growing it
    /// copies it and touches fresh memory, a page fault per 128 frames.
    fn frames_expected(&self) -> usize {
        0
    }
}

/// The visitor that does nothing: a plain walk.
impl FrameVisitor for () {
    type Piece = ();
    fn start_piece(&self) {}
    fn frame(&self, _: &mut (), _: &[u8], _: u64, _: &FrameRef) {}
}

/// What a visitor made of a segment: runs of frames in file order, each with its frame count
/// and the visitor's result, or `None` for frames the visitor did not see (read where walks of
/// read pieces did not join). The counts add up to the segment's frames. Only a segment
/// stitched from walked pieces has one.
pub type VisitedPieces<P> = Vec<(usize, Option<P>)>;

/// Builds a frame (header and stored payload) for a record.
pub fn encode_frame(seq: u64, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    f.put_u64(payload.len() as u64);
    f.put_u64(seq);
    f.put_u8(kind);
    f.put_u8(flags);
    f.put_u16(0);
    f.put_u32(0);
    let hcrc = crc32c(&f);
    f.put_u32(hcrc);
    let rcrc = crc32c::crc32c_append(crc32c(&f), payload);
    f.put_u32(rcrc);
    f.extend_from_slice(payload);
    f
}

/// Why the frame at an offset is not a whole, valid frame.
enum FrameFault {
    /// Could be the result of a crash in the middle of an append.
    Tearable(String),
    /// Checksums match but the content breaks the format: never a torn write.
    Invalid(ParseError),
}

/// Reads the frame at `at`; with `check_payload` false the record checksum (over the payload) is
/// left to the caller, and only the header's checksum and fields are checked.
fn read_frame(bytes: &[u8], at: u64, check_payload: bool) -> Result<FrameRef, FrameFault> {
    let rest = &bytes[at as usize..];
    let Some(h) = rest.get(..FRAME_HEADER_LEN) else {
        return Err(FrameFault::Tearable(format!(
            "{} bytes of a {FRAME_HEADER_LEN}-byte frame header",
            rest.len()
        )));
    };
    let field = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let word = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    if crc32c(&h[..24]) != word(24) {
        return Err(FrameFault::Tearable("frame header checksum mismatch".into()));
    }
    let payload_len = field(0);
    if payload_len > (rest.len() - FRAME_HEADER_LEN) as u64 {
        return Err(FrameFault::Tearable(format!(
            "payload of {payload_len} bytes, {} present",
            rest.len() - FRAME_HEADER_LEN
        )));
    }
    let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload_len as usize];
    if check_payload && crc32c::crc32c_append(crc32c(&h[..28]), payload) != word(28) {
        return Err(FrameFault::Tearable("record checksum mismatch".into()));
    }
    let (kind, flags) = (h[16], h[17]);
    if flags & !(FLAG_ZSTD | FLAG_GROUP_CONTINUES) != 0 {
        return Err(FrameFault::Invalid(bad_field(
            at + 17,
            "frame flags",
            flags.into(),
            "only bits 0 (zstd) and 1 (group continues) are defined",
        )));
    }
    if h[18..24].iter().any(|&b| b != 0) {
        return Err(FrameFault::Invalid(ParseError::new(
            at + 18,
            Corruption::NonZeroPadding {
                what: "frame reserved bytes",
                value: h[18..24].iter().copied().find(|&b| b != 0).unwrap_or(0),
            },
        )));
    }
    if !(TYPE_CREATE..=TYPE_FILL).contains(&kind) && kind < OPTIONAL_TYPE_MIN {
        return Err(FrameFault::Invalid(ParseError::new(
            at + 16,
            Corruption::UnknownRecordType { kind },
        )));
    }
    Ok(FrameRef {
        offset: at,
        seq: field(8),
        kind,
        flags,
        payload_len,
    })
}

/// True when a whole, valid frame that could follow the bad frame at `at` (whose sequence
/// number would be `seq`) starts after it: the torn-tail test. Where the bad frame's header is
/// whole and valid, its length is trusted and the search starts past its payload, so bytes inside
/// the payload of a torn last record (which may well hold something frame-like) never count; a
/// frame whose payload runs past the end of the file is the last one. A later frame counts only
/// with a sequence number after `seq`, as a record appended after the bad one would have.
fn valid_frame_after(bytes: &[u8], at: u64, seq: u64) -> bool {
    let len = bytes.len() as u64;
    let from = match trusted_frame_len(bytes, at) {
        Some(n) if at.checked_add(n).is_none_or(|e| e > len) => return false,
        Some(n) => at + n,
        None => at + 1,
    };
    let end = len.saturating_sub(FRAME_HEADER_LEN as u64 - 1);
    (from..end).any(|p| read_frame(bytes, p, true).is_ok_and(|f| f.seq > seq && f.seq - seq <= len))
}

/// The length of the frame at `at` (header and payload) when its header is whole and its
/// header checksum matches.
fn trusted_frame_len(bytes: &[u8], at: u64) -> Option<u64> {
    let h = bytes.get(at as usize..)?.get(..FRAME_HEADER_LEN)?;
    let word = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    if crc32c(&h[..24]) != word {
        return None;
    }
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).checked_add(FRAME_HEADER_LEN as u64)
}

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
    path: PathBuf,
    map: ReadOnlyMap,
    header: SegmentHeader,
    frames: Vec<FrameRef>,
    end: SegmentEnd,
    payloads_checked: bool,
    /// The segment's read lock: no writer cuts the file while it is mapped (dropped after the
    /// mapping).
    _read_lock: LogLock,
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

    fn open_scanned(path: &Path, check_payloads: bool) -> Result<Segment> {
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

/// The payload of frame `f` of the segment whose bytes are `segment`, decompressed when the frame
/// says so; the error says why a compressed payload cannot be read.
pub fn frame_payload<'a>(segment: &'a [u8], f: &FrameRef) -> std::result::Result<Cow<'a, [u8]>, String> {
    match frame_payload_for_page(segment, f, |_| TargetPage::Unknown) {
        Ok(p) => Ok(p),
        Err(PayloadProblem::Compression(why) | PayloadProblem::DoesNotFit(why)) => Err(why),
    }
}

/// Why a payload was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadProblem {
    /// The compressed bytes are not a valid zstd frame of the declared size (corruption).
    Compression(String),
    /// The declared decompressed size is more than the record could have and still apply to
    /// its page: it is refused before anything is decompressed.
    DoesNotFit(String),
}

/// Bytes of a payload's common head: page id, epoch, timestamp and the source tag's length.
const PAYLOAD_HEAD_LEN: usize = 25;

/// Like [`frame_payload`], but a compressed payload that declares more than 1 MiB is
/// decompressed only when that size fits the page it targets: `page_len(page_id)` says what the reader knows of
/// that page now, and [`max_payload_len`] the most a record of the frame's type can
/// carry for it. Only the payload's head is decompressed to learn the page id, so a tiny record
/// that claims gigabytes costs nothing. Raw payloads are returned as they are (their bytes are
/// in the file already).
pub fn frame_payload_for_page<'a>(
    segment: &'a [u8],
    f: &FrameRef,
    page_len: impl FnOnce(u64) -> TargetPage,
) -> std::result::Result<Cow<'a, [u8]>, PayloadProblem> {
    use PayloadProblem::{Compression, DoesNotFit};
    let start = f.payload_offset() as usize;
    let stored = &segment[start..start + f.payload_len as usize];
    if f.flags & FLAG_ZSTD == 0 {
        return Ok(Cow::Borrowed(stored));
    }
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n <= MAX_DECOMPRESSED => n,
        Ok(Some(n)) => return Err(Compression(format!("content size {n} above the 4 GiB limit"))),
        Ok(None) => return Err(Compression("zstd frame without a content size".into())),
        Err(_) => return Err(Compression("not a zstd frame".into())),
    };
    // Payloads up to 1 MiB are decompressed and checked after: peeking at a head costs a
    // streaming context, more than decompressing a small payload whole.
    if f.kind < OPTIONAL_TYPE_MIN && size > 1 << 20 {
        // Decompress the head alone (a block at most) to learn the page and the head's length.
        let mut head = Vec::with_capacity(PAYLOAD_HEAD_LEN);
        let decoder = zstd::stream::read::Decoder::with_buffer(stored).map_err(|e| Compression(e.to_string()))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(decoder, PAYLOAD_HEAD_LEN as u64), &mut head)
            .map_err(|e| Compression(e.to_string()))?;
        if head.len() == PAYLOAD_HEAD_LEN {
            let page_id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let head_len = PAYLOAD_HEAD_LEN as u64 + u64::from(head[24]);
            let target = page_len(page_id);
            if let Some(max) = max_payload_len(f.kind, head_len, target)
                && size > max
            {
                let page = match target {
                    TargetPage::Len(l) => format!("page {page_id} of {l} bytes"),
                    _ => format!("page {page_id}, which does not exist"),
                };
                return Err(DoesNotFit(format!(
                    "its compressed payload declares {size} bytes, but a {} record for {page} carries at most {max}",
                    super::record::kind_name(f.kind)
                )));
            }
        }
    }
    // One decompression context per thread: making one per record costs more than
    // decompressing a small record.
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let out = DECOMPRESSOR
        .with_borrow_mut(|d| {
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut().expect("made just above").decompress(stored, size as usize)
        })
        .map_err(|e| Compression(e.to_string()))?;
    if out.len() as u64 != size {
        return Err(Compression(format!(
            "decompressed to {} bytes, frame says {size}",
            out.len()
        )));
    }
    Ok(Cow::Owned(out))
}

/// True when `frames` end with a closed group and use no flag their segment's version lacks:
/// [`close_groups`] would leave them as they are.
fn groups_closed(header: &SegmentHeader, frames: &[FrameRef]) -> bool {
    let open = |f: &FrameRef| f.flags & FLAG_GROUP_CONTINUES != 0;
    !frames.last().is_some_and(open) && (header.minor > 0 || !frames.iter().any(open))
}

/// Applies the group rule (format 1.1) to a scanned segment: the records of a group that the
/// segment's frames leave unclosed are not whole records. They leave `frames`, and the tail from
/// the group's first record becomes a torn tail (or, where the frames already end in damage
/// that is not tearable, that damage stands). In a 1.0 segment the group flag is corruption.
fn close_groups(header: &SegmentHeader, frames: &mut Vec<FrameRef>, end: &mut SegmentEnd, file_len: u64) {
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
fn scan(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> (Vec<FrameRef>, SegmentEnd) {
    if let Some(frames) = scan_in_parallel(bytes, header, check_payloads) {
        return (frames, SegmentEnd::Clean);
    }
    scan_in_order(bytes, header, check_payloads)
}

/// Bytes of a segment per parallel scan piece.
const SCAN_PIECE: u64 = 8 << 20;
/// How far past a piece's start a scan looks for the first frame header.
const SCAN_PROBE: u64 = 256 << 10;

/// The frames of a clean segment, found by several threads: each piece of the segment is walked
/// from the first offset in it where a valid frame header starts. A walk must end exactly where
/// the next piece's walk begins, which makes every start a link of the one chain of frames from
/// the segment's header; together with gapless sequence numbers, the result is the in-order
/// scan's. `None` (scan in order) when that does not hold, when any frame is damaged, or when the
/// segment is small.
fn scan_in_parallel(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> Option<Vec<FrameRef>> {
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
const INTERLEAVED_WALKS: usize = 4;

/// Walks each piece `(start, end)` of `group` from frame to frame, one step of each piece in
/// turn: in a large segment every frame header read waits for memory, and reads of different
/// pieces do not depend on each other, so the CPU overlaps their waits. `None` when a frame is
/// invalid or a walk does not end exactly at its piece's end.
fn walk_interleaved(bytes: &[u8], group: &[(u64, u64)], check_payloads: bool) -> Option<Vec<Vec<FrameRef>>> {
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

/// What the walk of one piece of a segment found, the piece's bytes having been read into memory
/// (by the GPU upload, which reads every byte anyway): the frames from the first offset in the
/// piece where a valid frame header starts, as far as whole frames lie in the piece, shown to a
/// visitor while the bytes are in cache. [`Segment::open_from_pieces`] joins the walks into the
/// segment's frame list.
pub struct PieceWalk<P> {
    /// File offset of the first frame walked; `None` when none was found.
    first: Option<u64>,
    /// The frames walked, with file offsets.
    frames: Vec<FrameRef>,
    /// File offset of the frame after the last one walked.
    next: u64,
    /// The visitor's result.
    visited: P,
}

impl<P> PieceWalk<P> {
    /// The visitor's result, for more work on it before the walks are joined.
    pub fn visited_mut(&mut self) -> &mut P {
        &mut self.visited
    }
}

/// Walks `bytes`, the segment file's bytes from offset `base` on (a piece of it read into
/// memory), showing each whole frame to `visitor`. The first piece (base 0) is walked from the
/// end of its segment header; any other from the first offset, within 256 KiB, where a valid
/// frame header starts and its frame lies in the piece.
pub fn walk_piece<V: FrameVisitor>(bytes: &[u8], base: u64, visitor: &V) -> PieceWalk<V::Piece> {
    let first = if base == 0 {
        SegmentHeader::parse(bytes).ok().map(|h| u64::from(h.header_len))
    } else {
        let until = SCAN_PROBE.min(bytes.len().saturating_sub(FRAME_HEADER_LEN - 1) as u64);
        // Every offset is tried: the reserved bytes, zero in every valid header, rule out most
        // of them before the header checksum (and the error it would allocate) is computed.
        (0..until).find(|&at| {
            let reserved = bytes.get(at as usize + 18..at as usize + 24);
            reserved.is_some_and(|r| r.iter().all(|&b| b == 0)) && read_frame(bytes, at, false).is_ok()
        })
    };
    let mut walk = PieceWalk {
        first: first.map(|f| base + f),
        frames: Vec::with_capacity(visitor.frames_expected()),
        next: base,
        visited: visitor.start_piece(),
    };
    let Some(mut at) = first else { return walk };
    while at < bytes.len() as u64 {
        let Ok(f) = read_frame(bytes, at, false) else { break };
        visitor.frame(&mut walk.visited, bytes, base, &f);
        walk.frames.push(FrameRef {
            offset: base + f.offset,
            ..f
        });
        at += f.frame_len();
    }
    walk.next = base + at;
    walk
}

/// The frames of a segment from walks of its pieces (in any order): the chain of frames from the
/// segment's header takes a piece's frames when it reaches exactly that piece's first frame,
/// which makes them links of the chain, and reads the frames between pieces from `bytes` (the
/// mapped file). `None` when the chain breaks anywhere (damage, a torn tail, a sequence gap):
/// the segment is then scanned as usual, which classifies the damage.
#[allow(clippy::type_complexity)]
fn stitch<P>(
    bytes: &[u8],
    header: &SegmentHeader,
    pieces: Vec<PieceWalk<P>>,
) -> Option<(Vec<FrameRef>, VisitedPieces<P>)> {
    // Pieces by their first frame; those where none was found, or none walked, give nothing.
    let mut pieces: Vec<(u64, PieceWalk<P>)> = pieces
        .into_iter()
        .filter(|p| !p.frames.is_empty())
        .filter_map(|p| Some((p.first?, p)))
        .collect();
    pieces.sort_by_key(|p| p.0);
    let len = bytes.len() as u64;
    // The chain's frames, in order: runs read from the mapping, and walks' frame lists.
    let mut parts: Vec<Vec<FrameRef>> = vec![Vec::new()];
    let mut runs: VisitedPieces<P> = Vec::new();
    let mut at = u64::from(header.header_len);
    // Reads frames from the mapping into `into` up to `until` (or the first frame past it).
    let read_to = |until: u64, at: &mut u64, into: &mut Vec<FrameRef>| -> Option<()> {
        while *at < until {
            let f = read_frame(bytes, *at, false).ok()?;
            *at += f.frame_len();
            into.push(f);
        }
        Some(())
    };
    for (first, p) in pieces {
        if first < at {
            // Inside a frame the chain has passed (a false start, or a piece read twice).
            continue;
        }
        read_to(first, &mut at, parts.last_mut().expect("never empty"))?;
        if at != first {
            // The chain stepped over the piece's start: its walk is not on the chain.
            continue;
        }
        let read_between = parts.last().map_or(0, Vec::len);
        if read_between > 0 {
            runs.push((read_between, None));
        }
        runs.push((p.frames.len(), Some(p.visited)));
        parts.push(p.frames);
        at = p.next;
        parts.push(Vec::new());
    }
    read_to(len, &mut at, parts.last_mut().expect("never empty"))?;
    let read_between = parts.last().map_or(0, Vec::len);
    if read_between > 0 {
        runs.push((read_between, None));
    }
    let frames = concat_in_parallel(&parts);
    (at == len && numbered_from(&frames, header.first_seq)).then_some((frames, runs))
}

/// Whether `frames` carry the sequence numbers `first_seq`, `first_seq + 1`, ... without a gap.
fn numbered_from(frames: &[FrameRef], first_seq: u64) -> bool {
    frames
        .par_iter()
        .enumerate()
        .all(|(i, f)| first_seq.checked_add(i as u64) == Some(f.seq))
}

/// The lists `parts` one after another in one list, made and filled in parallel: most of the
/// time of joining a large segment's walks went to writing its frame list (fresh memory, a page
/// fault per 128 frames) one piece after another.
fn concat_in_parallel(parts: &[Vec<FrameRef>]) -> Vec<FrameRef> {
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
fn scan_in_order(bytes: &[u8], header: &SegmentHeader, check_payloads: bool) -> (Vec<FrameRef>, SegmentEnd) {
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

/// The bytes of the segment files named by `paths` (as [`expand_paths`] lists them), for a
/// progress total: a path that cannot be listed or read counts 0.
pub fn segment_bytes<P: AsRef<Path>>(paths: &[P]) -> u64 {
    paths
        .iter()
        .filter_map(|p| expand_paths(&[p.as_ref()]).ok())
        .flatten()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Lists the segment files named by `paths`: files as given, directories expanded to the
/// `*.mmsblog` files in them.
pub fn expand_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|q| q.extension().is_some_and(|x| x == SEGMENT_EXT))
                .collect();
            inner.sort();
            if inner.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: directory holds no .{SEGMENT_EXT} segment files",
                    p.display()
                )));
            }
            out.extend(inner);
        } else {
            out.push(p.to_owned());
        }
    }
    Ok(out)
}

/// The torn last record of a log, as a crash in the middle of an append leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the torn record starts; everything before it is whole.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub len: u64,
}

/// A log: its segments in order, every problem found in them, and the torn tail if any.
pub struct Log {
    segments: Vec<Segment>,
    problems: Vec<Error>,
    torn_tail: Option<TornTail>,
}

/// One record read from a log, with where it came from. Its payload is decompressed when first
/// asked for.
pub struct LogRecord<'a> {
    /// The segment.
    pub segment: &'a Segment,
    /// The frame.
    pub frame: FrameRef,
    payload: std::cell::OnceCell<Cow<'a, [u8]>>,
}

impl<'a> LogRecord<'a> {
    /// The payload, decompressed (up to the format's 4 GiB limit).
    pub fn payload(&self) -> Result<&[u8]> {
        self.payload_for_page(|_| TargetPage::Unknown)
    }

    /// The payload, decompressed only when its declared size fits the page it targets;
    /// `page_len(page_id)` says what the reader knows of that page (see
    /// [`frame_payload_for_page`]).
    pub fn payload_for_page(&self, page_len: impl FnOnce(u64) -> TargetPage) -> Result<&[u8]> {
        if let Some(p) = self.payload.get() {
            return Ok(p);
        }
        let p = self.segment.payload_for_page(&self.frame, page_len)?;
        Ok(self.payload.get_or_init(|| p))
    }

    /// Decodes the payload. `None` for an optional record type this build does not know.
    pub fn delta(&self) -> Result<Option<Delta<'_>>> {
        self.delta_for_page(|_| TargetPage::Unknown)
    }

    /// [`LogRecord::delta`], decompressing only a payload that fits its page (see
    /// [`LogRecord::payload_for_page`]): what a reader that knows the pages calls.
    pub fn delta_for_page(&self, page_len: impl FnOnce(u64) -> TargetPage) -> Result<Option<Delta<'_>>> {
        if self.frame.kind >= OPTIONAL_TYPE_MIN {
            return Ok(None);
        }
        let payload = self.payload_for_page(page_len)?;
        Delta::decode(self.frame.kind, payload, self.frame.payload_offset())
            .map(Some)
            .map_err(|e| e.at(self.segment.path()))
    }
}

impl Log {
    /// Opens the segments named by `paths` (files or directories) and checks that they form one
    /// log: the same base state, segment numbers 0, 1, 2, ... and gapless sequence numbers.
    /// Problems in the bytes are collected in [`Log::problems`]; only I/O errors fail the call.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Log> {
        Ok(Log::open_with(paths, |_, p| Ok((Segment::open(p)?, ())))?.0)
    }

    /// Opens a log reading only its frame headers: the record checksums over the payloads are
    /// not checked ([`Log::payloads_checked`] is false), which saves reading every payload byte
    /// on the CPU. For a reader that checks them elsewhere before using any record (the GPU
    /// apply checks them on the device), and that calls [`Log::reopen_checked`] when one fails.
    /// Everything else (headers, chaining, sequence numbers, damage) is checked as by
    /// [`Log::open`].
    pub fn open_deferred<P: AsRef<Path>>(paths: &[P]) -> Result<Log> {
        Ok(Log::open_with(paths, |_, p| Ok((Segment::open_deferred(p)?, ())))?.0)
    }

    /// Opens the segments named by `paths` from walks of their pieces
    /// ([`Segment::open_from_pieces`]); `pieces(i)` gives the walks of the `i`-th segment file as
    /// [`expand_paths`] lists them (each asked for once). The second result has an entry per
    /// segment of [`Log::segments`], in the same order: the runs of its frames that walks of its
    /// pieces decoded, where it has them.
    #[allow(clippy::type_complexity)]
    pub fn open_from_pieces<P: Send>(
        paths: &[PathBuf],
        pieces: &(dyn Fn(usize) -> Vec<PieceWalk<P>> + Sync),
    ) -> Result<(Log, Vec<Option<VisitedPieces<P>>>)> {
        Log::open_with(paths, |i, p| Segment::open_from_pieces(p, pieces(i)))
    }

    /// The same segments opened again with every checksum checked: the exact verdict on a log
    /// opened with [`Log::open_deferred`] whose record checksums did not all match.
    pub fn reopen_checked(&self) -> Result<Log> {
        let paths: Vec<&Path> = self.segments.iter().map(|s| s.path()).collect();
        Log::open(&paths)
    }

    /// Whether every listed record's checksum has been checked.
    pub fn payloads_checked(&self) -> bool {
        self.segments.iter().all(|s| s.payloads_checked)
    }

    /// Opens each segment file (its index in [`expand_paths`]'s list, its path) with
    /// `open_segment`, which also returns something of its own per segment (returned in the
    /// order of the log's segments).
    fn open_with<P: AsRef<Path>, X: Send>(
        paths: &[P],
        open_segment: impl Fn(usize, &Path) -> Result<(Segment, X)> + Sync,
    ) -> Result<(Log, Vec<X>)> {
        let mut problems = Vec::new();
        let mut opened_ok = Vec::new();
        // Segments are independent until chained: map and scan them in parallel.
        let opened: Vec<Result<(Segment, X)>> = {
            expand_paths(paths)?
                .par_iter()
                .enumerate()
                .map(|(i, p)| open_segment(i, p))
                .collect()
        };
        for s in opened {
            match s {
                Ok(s) => opened_ok.push(s),
                Err(e) if e.is_data_error() => problems.push(e),
                Err(e) => return Err(e),
            }
        }
        opened_ok.sort_by_key(|(s, _)| s.header.segment_no);
        let (segments, extras): (Vec<Segment>, Vec<X>) = opened_ok.into_iter().unzip();
        let chain = |s: &Segment, offset: u64, why: String| Error::Corrupt {
            path: s.path.clone(),
            offset,
            problem: Corruption::SegmentChain(why),
        };
        for (i, s) in segments.iter().enumerate() {
            if s.header.segment_no != i as u64 {
                problems.push(chain(
                    s,
                    16,
                    format!(
                        "segment number {} where {i} was expected (is a segment missing or given twice?)",
                        s.header.segment_no
                    ),
                ));
            }
            if s.header.base != segments[0].header.base {
                problems.push(chain(
                    s,
                    32,
                    format!(
                        "base state {} differs from segment 0's {}",
                        s.header.base, segments[0].header.base
                    ),
                ));
            }
            if let Some(prev) = i.checked_sub(1).map(|j| &segments[j]) {
                let next = prev.header.first_seq.checked_add(prev.frames.len() as u64);
                if prev.end == SegmentEnd::Clean && Some(s.header.first_seq) != next {
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: 24,
                        problem: Corruption::SequenceGap {
                            expected: next.unwrap_or(u64::MAX),
                            found: s.header.first_seq,
                        },
                    });
                }
            }
        }
        let mut torn_tail = None;
        let last = segments.len().saturating_sub(1);
        for (i, s) in segments.iter().enumerate() {
            if let SegmentEnd::Damaged {
                offset,
                problem,
                tearable,
            } = &s.end
            {
                if *tearable && i == last {
                    torn_tail = Some(TornTail {
                        path: s.path.clone(),
                        offset: *offset,
                        len: s.file_len() - offset,
                    });
                } else if *tearable {
                    // A crash tears only the record being appended: in a segment that has a
                    // successor, damage is corruption.
                    let why = match problem {
                        Corruption::TornTail { why, .. } => why.clone(),
                        other => other.to_string(),
                    };
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: *offset,
                        problem: Corruption::CorruptRecord {
                            why,
                            context: "in a segment that has a successor",
                        },
                    });
                } else {
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: *offset,
                        problem: problem.clone(),
                    });
                }
            }
        }
        let log = Log {
            segments,
            problems,
            torn_tail,
        };
        Ok((log, extras))
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Every corruption found (a torn tail is not one of them: see [`Log::torn_tail`]).
    pub fn problems(&self) -> &[Error] {
        &self.problems
    }
    /// The torn tail of the last segment, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }
    /// The base state the log applies to (`None` for a log with no readable segment).
    pub fn base(&self) -> Option<StateHash> {
        self.segments.first().map(|s| s.header.base)
    }
    /// Fails with the first corruption, if any.
    pub fn check(&self) -> Result<()> {
        match self.problems.first() {
            Some(Error::Corrupt { path, offset, problem }) => Err(Error::Corrupt {
                path: path.clone(),
                offset: *offset,
                problem: problem.clone(),
            }),
            Some(other) => Err(Error::Invalid(other.to_string())),
            None => Ok(()),
        }
    }
    /// Fails with [`Error::WrongBase`] unless the log was written against the state `state`.
    pub fn check_base(&self, state: StateHash) -> Result<()> {
        match self.segments.first() {
            Some(seg) if seg.header.base != state => Err(Error::WrongBase {
                path: seg.path.clone(),
                log_base: seg.header.base.to_hex(),
                checkpoint_state: state.to_hex(),
            }),
            _ => Ok(()),
        }
    }

    /// Fails when the log ends in a torn tail, saying `why` that matters to the caller (for
    /// those that must not silently leave the cut record out).
    pub fn refuse_torn_tail(&self, why: &str) -> Result<()> {
        match &self.torn_tail {
            Some(t) => Err(Error::Corrupt {
                path: t.path.clone(),
                offset: t.offset,
                problem: Corruption::TornTail {
                    len: t.len,
                    why: why.into(),
                },
            }),
            None => Ok(()),
        }
    }

    /// Sequence number of the last whole record.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.frames.last().map(|f| f.seq))
    }
    /// Every whole record, in sequence order (payloads are decompressed when asked for). Stops
    /// after the first damaged segment: records after damage cannot be put in sequence.
    pub fn records(&self) -> impl Iterator<Item = LogRecord<'_>> {
        let usable = self
            .segments
            .iter()
            .position(|s| s.end != SegmentEnd::Clean)
            .map_or(self.segments.len(), |i| i + 1);
        self.segments[..usable].iter().flat_map(|s| {
            s.frames.iter().map(move |f| LogRecord {
                segment: s,
                frame: *f,
                payload: std::cell::OnceCell::new(),
            })
        })
    }
}

/// When appended records are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync after every record: an acknowledged record survives a crash.
    EveryRecord,
    /// fdatasync once `records` records or `bytes` bytes are unsynced, whichever comes first.
    Every {
        /// Records between syncs.
        records: u64,
        /// Bytes between syncs.
        bytes: u64,
    },
    /// Only at rotation and [`LogWriter::finish`].
    Never,
}

/// How records are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored raw.
    None,
    /// zstd at this level, always.
    Zstd(i32),
    /// zstd (level 3) when it saves at least 1/32 of a payload of 256 bytes or more: a masked
    /// record of changed floats (a regular mask, random values) saves about 1/16, and a
    /// decompression costs about a microsecond per record.
    Auto,
}

/// Options for a [`LogWriter`].
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A new segment is started before a record would take the current one past this size.
    pub segment_size: u64,
    /// When records reach the disk.
    pub durability: Durability,
    /// Payload compression.
    pub compression: Compression,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
            durability: Durability::EveryRecord,
            compression: Compression::None,
        }
    }
}

/// Appends records to a log directory, rotating segments and syncing per the durability policy.
///
/// A writer holds the log's exclusive lock ([`LogLock`]) from its creation to its drop. Records
/// appended between [`LogWriter::begin_group`] and [`LogWriter::commit_group`] form one atomic
/// group: a reader sees all of them or none.
pub struct LogWriter {
    dir: PathBuf,
    options: LogOptions,
    base: StateHash,
    segment_no: u64,
    file: File,
    file_path: PathBuf,
    segment_len: u64,
    segment_records: u64,
    next_seq: u64,
    unsynced_records: u64,
    unsynced_bytes: u64,
    /// The last segment is of an older minor version: the next record starts a new segment.
    rotate_first: bool,
    group: Option<OpenGroup>,
    /// A group was left open (it could not be cut back): nothing more may be appended.
    poisoned: bool,
    _lock: LogLock,
}

/// Where an open group started, and its last record, held back until the next one (or the
/// commit) says whether the group continues after it.
struct OpenGroup {
    start_segment: u64,
    start_len: u64,
    start_records: u64,
    start_seq: u64,
    started: bool,
    held: Option<(u64, u8, u8, Vec<u8>)>,
}

/// The path of segment `n` in a log directory.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.{SEGMENT_EXT}"))
}

impl LogWriter {
    /// Starts a new log in `dir` (created if missing; it must hold no segments) against the
    /// state `base`, with first sequence number `first_seq`. Takes the log's lock, failing when
    /// another process holds it.
    pub fn create(dir: &Path, base: StateHash, first_seq: u64, options: LogOptions) -> Result<LogWriter> {
        let lock = LogLock::exclusive(dir, LockWait::Fail)?;
        if expand_paths(&[dir]).is_ok() {
            return Err(Error::Invalid(format!("{}: already holds log segments", dir.display())));
        }
        let (file, file_path) = new_segment(dir, 0, first_seq, base)?;
        Ok(LogWriter {
            dir: dir.to_owned(),
            options,
            base,
            segment_no: 0,
            file,
            file_path,
            segment_len: SEGMENT_HEADER_LEN as u64,
            segment_records: 0,
            next_seq: first_seq,
            unsynced_records: 0,
            unsynced_bytes: 0,
            rotate_first: false,
            group: None,
            poisoned: false,
            _lock: lock,
        })
    }

    /// Opens an existing log in `dir` to append to it, taking its lock (held already by a caller
    /// that took it with [`LockWait::Wait`], or failing when another process holds it). A log
    /// with corruption or a torn tail is refused (`mmsb recover` cuts a torn tail), and so is
    /// one whose last segment has a newer minor version than this build writes. A last segment
    /// of an older minor version is left as it is: appends go to a new segment.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogWriter> {
        let lock = LogLock::exclusive(dir, LockWait::Fail)?;
        let log = Log::open(&[dir])?;
        log.check()?;
        log.refuse_torn_tail("run `mmsb recover` before appending")?;
        let last = log
            .segments()
            .last()
            .ok_or_else(|| Error::Invalid(format!("{}: no segments", dir.display())))?;
        if last.header().minor > FORMAT_MINOR {
            return Err(Error::Invalid(format!(
                "{}: written in format {FORMAT_MAJOR}.{}, newer than the {FORMAT_MAJOR}.{FORMAT_MINOR} this build \
                 writes: appending could break what that version promises its readers",
                last.path().display(),
                last.header().minor
            )));
        }
        let file_path = last.path().to_owned();
        let file = OpenOptions::new()
            .append(true)
            .open(&file_path)
            .map_err(|e| Error::io(&file_path, e))?;
        Ok(LogWriter {
            dir: dir.to_owned(),
            options,
            base: last.header().base,
            segment_no: last.header().segment_no,
            file,
            file_path,
            segment_len: last.file_len(),
            segment_records: last.frames().len() as u64,
            next_seq: log.last_seq().map_or(last.header().first_seq, |s| s + 1),
            unsynced_records: 0,
            unsynced_bytes: 0,
            rotate_first: last.header().minor < FORMAT_MINOR,
            group: None,
            poisoned: false,
            _lock: lock,
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The path of the segment being appended to.
    pub fn current_segment(&self) -> &Path {
        &self.file_path
    }

    /// Starts an atomic group: the records appended until [`LogWriter::commit_group`] reach
    /// readers all together or not at all. A group is never split across segments (the segment
    /// size is exceeded instead), and nothing of it is synced before the commit.
    pub fn begin_group(&mut self) -> Result<()> {
        if self.group.is_some() {
            return Err(Error::Invalid("a log group is already open".into()));
        }
        self.group = Some(OpenGroup {
            start_segment: self.segment_no,
            start_len: self.segment_len,
            start_records: self.segment_records,
            start_seq: self.next_seq,
            started: false,
            held: None,
        });
        Ok(())
    }

    /// Closes the open group: its last record is written without the continues flag, and the
    /// group is synced as the durability policy asks for one record.
    pub fn commit_group(&mut self) -> Result<()> {
        let Some(mut g) = self.group.take() else {
            return Err(Error::Invalid("no log group is open".into()));
        };
        if let Some((seq, kind, flags, stored)) = g.held.take() {
            let written = self.write_frame(&encode_frame(seq, kind, flags, &stored), !g.started);
            if let Err(e) = written {
                self.group = Some(g);
                let _ = self.abort_group();
                return Err(e);
            }
            self.after_write()?;
        }
        Ok(())
    }

    /// Drops the open group: the segment is cut back to where the group started (nothing of it
    /// was acknowledged), and its sequence numbers are given out again.
    pub fn abort_group(&mut self) -> Result<()> {
        let Some(g) = self.group.take() else { return Ok(()) };
        if g.started {
            // The group may have rotated into a new segment at its first record: then it
            // started right after that segment's header.
            let (start_len, start_records) = if self.segment_no != g.start_segment {
                (SEGMENT_HEADER_LEN as u64, 0)
            } else {
                (g.start_len, g.start_records)
            };
            // A reader in another process that mapped the segment while the group was being
            // written would fault on cut bytes: then the group is left open, which every reader
            // skips as a torn tail, and `recover` cuts later.
            if let Err(e) = self.cut_to(start_len) {
                self.poisoned = true;
                return Err(e);
            }
            self.segment_records = start_records;
        }
        self.next_seq = g.start_seq;
        self.unsynced_records = 0;
        self.unsynced_bytes = 0;
        Ok(())
    }

    /// Cuts the current segment back to `len` bytes (taking back an unacknowledged write), under
    /// the segment's cut lock; fails, leaving the bytes, when a reader has the segment open.
    fn cut_to(&mut self, len: u64) -> Result<()> {
        let _cut = SegmentCutLock::take(&self.file_path, LockWait::Fail).map_err(|_| {
            Error::Invalid(format!(
                "{}: a reader has the segment open, so an unfinished write was left as a torn tail (run `mmsb recover`)",
                self.file_path.display()
            ))
        })?;
        self.file.set_len(len).map_err(|e| Error::io(&self.file_path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.file_path, e))?;
        self.segment_len = len;
        Ok(())
    }

    /// Appends a delta; returns its sequence number once the durability policy is satisfied
    /// (inside a group: once it is written, to be synced with the group).
    pub fn append(&mut self, delta: &Delta<'_>) -> Result<u64> {
        let payload = delta.encode()?;
        let (flags, stored) = compress(&payload, self.options.compression);
        let seq = self.next_seq;
        if let Some(g) = &mut self.group {
            let held = g.held.replace((seq, delta.kind(), flags, stored.into_owned()));
            self.next_seq += 1;
            if let Some((seq, kind, flags, stored)) = held {
                let first = !std::mem::replace(&mut self.group.as_mut().expect("open").started, true);
                let frame = encode_frame(seq, kind, flags | FLAG_GROUP_CONTINUES, &stored);
                self.write_frame(&frame, first)?;
            }
            return Ok(seq);
        }
        let frame = encode_frame(seq, delta.kind(), flags, &stored);
        self.write_frame(&frame, true)?;
        self.next_seq += 1;
        self.after_write()?;
        Ok(seq)
    }

    #[cfg(test)]
    fn append_frame(&mut self, frame: &[u8]) -> Result<u64> {
        self.write_frame(frame, true)?;
        self.after_write()?;
        self.next_seq += 1;
        Ok(self.next_seq - 1)
    }

    /// Writes one frame, first rotating to a new segment when `may_rotate` (the first record of
    /// a group, or one outside any) and the frame would take the segment past its size.
    fn write_frame(&mut self, frame: &[u8], may_rotate: bool) -> Result<()> {
        if self.poisoned {
            return Err(Error::Invalid(format!(
                "{}: an unfinished group was left open; run `mmsb recover` before appending",
                self.file_path.display()
            )));
        }
        let full = self.segment_records > 0 && self.segment_len + frame.len() as u64 > self.options.segment_size;
        if may_rotate && (full || self.rotate_first) {
            let seq = u64::from_le_bytes(frame[8..16].try_into().expect("a frame header"));
            self.rotate(seq)?;
        }
        // One write per frame: a crash leaves a prefix of it, never an interleaving.
        if let Err(e) = self.file.write_all(frame) {
            // A full disk leaves part of the frame: cut it, or no later append may follow it.
            if self.cut_to(self.segment_len).is_err() {
                self.poisoned = true;
            }
            return Err(Error::io(&self.file_path, e));
        }
        self.segment_len += frame.len() as u64;
        self.segment_records += 1;
        self.unsynced_records += 1;
        self.unsynced_bytes += frame.len() as u64;
        Ok(())
    }

    /// Syncs when the durability policy asks for it after a record (or a group) is complete.
    fn after_write(&mut self) -> Result<()> {
        let due = match self.options.durability {
            Durability::EveryRecord => true,
            Durability::Every { records, bytes } => self.unsynced_records >= records || self.unsynced_bytes >= bytes,
            Durability::Never => false,
        };
        if due { self.sync() } else { Ok(()) }
    }

    /// Starts the next segment, whose first record will be `first_seq`.
    fn rotate(&mut self, first_seq: u64) -> Result<()> {
        self.sync()?;
        let n = self.segment_no + 1;
        let (file, path) = new_segment(&self.dir, n, first_seq, self.base)?;
        self.segment_no = n;
        self.file = file;
        self.file_path = path;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.segment_records = 0;
        self.rotate_first = false;
        Ok(())
    }

    /// Flushes every appended record to disk.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced_records > 0 {
            self.file.sync_data().map_err(|e| Error::io(&self.file_path, e))?;
        }
        self.unsynced_records = 0;
        self.unsynced_bytes = 0;
        Ok(())
    }

    /// Syncs and closes the log. An open group is committed first.
    pub fn finish(mut self) -> Result<()> {
        if self.group.is_some() {
            self.commit_group()?;
        }
        self.sync()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // A group neither committed nor finished was never acknowledged: take it back out.
        let _ = self.abort_group();
    }
}

/// Creates segment `n` with its header in place before it appears under its name (written to a
/// temporary file, fsynced, renamed, directory fsynced): a crash during rotation leaves no
/// segment without a whole header, which a reader would have to call corrupt.
fn new_segment(dir: &Path, n: u64, first_seq: u64, base: StateHash) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, n);
    if path.exists() {
        return Err(Error::Invalid(format!("{}: segment exists already", path.display())));
    }
    let header = SegmentHeader {
        major: FORMAT_MAJOR,
        minor: FORMAT_MINOR,
        header_len: SEGMENT_HEADER_LEN as u32,
        segment_no: n,
        first_seq,
        base,
    };
    let mut tmp = crate::fsutil::AtomicFile::create(&path)?;
    tmp.file()
        .write_all(&header.encode())
        .map_err(|e| Error::io(&path, e))?;
    tmp.commit()?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((file, path))
}

/// Compresses a payload per the policy: `(frame flags, stored bytes)`.
pub fn compress(payload: &[u8], policy: Compression) -> (u8, Cow<'_, [u8]>) {
    let level = match policy {
        Compression::None => return (0, Cow::Borrowed(payload)),
        _ if payload.len() as u64 > MAX_DECOMPRESSED => return (0, Cow::Borrowed(payload)),
        Compression::Zstd(l) => l,
        Compression::Auto if payload.len() < 256 => return (0, Cow::Borrowed(payload)),
        Compression::Auto => 3,
    };
    match zstd::bulk::compress(payload, level) {
        Ok(z) if policy != Compression::Auto || z.len() <= payload.len() - payload.len() / 32 => {
            (FLAG_ZSTD, Cow::Owned(z))
        }
        _ => (0, Cow::Borrowed(payload)),
    }
}

/// Cuts a torn tail (a torn last record, or the records of a group never closed) off the last
/// segment of a log, under the log's exclusive lock (a reader never has the cut bytes mapped):
/// the cut bytes are first written to `backup` (fsynced), then the segment is truncated and
/// fsynced. `backup` defaults to `SEGMENT.torn-OFFSET` beside the segment. Refuses a log with
/// corruption, and does nothing to a log without a torn tail. Returns what was cut.
pub fn recover<P: AsRef<Path>>(paths: &[P], backup: Option<&Path>, wait: LockWait) -> Result<Option<Recovered>> {
    let _locks = super::lock::lock_logs(paths, wait)?;
    let log = Log::open(paths)?;
    log.check()?;
    let Some(torn) = log.torn_tail().cloned() else {
        return Ok(None);
    };
    let seg = log
        .segments()
        .iter()
        .find(|s| s.path() == torn.path)
        .expect("the torn tail is in one of the segments");
    let cut = seg.map.bytes()[torn.offset as usize..].to_vec();
    drop(log);
    let backup = backup
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(format!("{}.torn-{}", torn.path.display(), torn.offset)));
    crate::fsutil::write_atomic(&backup, &cut)?;
    let _cut = SegmentCutLock::take(&torn.path, wait)?;
    let f = OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(|e| Error::io(&torn.path, e))?;
    f.set_len(torn.offset).map_err(|e| Error::io(&torn.path, e))?;
    f.sync_all().map_err(|e| Error::io(&torn.path, e))?;
    Ok(Some(Recovered {
        segment: torn.path,
        offset: torn.offset,
        len: torn.len,
        backup,
    }))
}

/// What [`recover`] cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovered {
    /// The segment cut.
    pub segment: PathBuf,
    /// Where the cut began (the segment's new length).
    pub offset: u64,
    /// The bytes cut.
    pub len: u64,
    /// Where they were saved.
    pub backup: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::Op;

    fn delta(page_id: u64, epoch: u64, data: &[u8]) -> Delta<'_> {
        Delta {
            page_id,
            epoch,
            timestamp_ns: 1,
            source: "t".into(),
            op: Op::Sparse(vec![(0, data)]),
        }
    }

    fn write_log(dir: &Path, n: u64, options: LogOptions) -> PathBuf {
        let logdir = dir.join("l.log");
        let mut w = LogWriter::create(&logdir, StateHash([7; 32]), 1, options).unwrap();
        for i in 0..n {
            w.append(&delta(i % 3, i + 1, &[i as u8; 100])).unwrap();
        }
        w.finish().unwrap();
        logdir
    }

    #[test]
    fn records_read_back_across_rotated_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 1000,
            durability: Durability::Never,
            compression: Compression::Auto,
        };
        let logdir = write_log(dir.path(), 20, opts);
        let log = Log::open(&[logdir]).unwrap();
        assert!(log.segments().len() > 2);
        assert!(log.problems().is_empty());
        assert_eq!(log.torn_tail(), None);
        let seqs: Vec<u64> = log.records().map(|r| r.frame.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        let r = log.records().nth(4).unwrap();
        assert_eq!(r.delta().unwrap().unwrap(), delta(4 % 3, 5, &[4; 100]));
    }

    #[test]
    fn truncated_last_record_is_a_torn_tail_and_recover_cuts_exactly_it() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let full = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &full[..full.len() - 10]).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.problems().is_empty());
        let torn = log.torn_tail().unwrap().clone();
        assert_eq!(log.records().count(), 4);
        drop(log);
        let backup = dir.path().join("cut.bin");
        assert_eq!(
            recover(&[&logdir], Some(&backup), LockWait::Fail).unwrap(),
            Some(Recovered {
                segment: torn.path.clone(),
                offset: torn.offset,
                len: torn.len,
                backup: backup.clone()
            })
        );
        assert_eq!(
            std::fs::read(&backup).unwrap(),
            &full[torn.offset as usize..full.len() - 10]
        );
        let log = Log::open(&[&logdir]).unwrap();
        assert_eq!(log.torn_tail(), None);
        assert_eq!(log.records().count(), 4);
        // Appending continues the sequence.
        drop(log);
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        assert_eq!(w.append(&delta(0, 100, &[1])).unwrap(), 5);
    }

    #[test]
    fn a_torn_last_record_whose_payload_holds_a_valid_frame_is_still_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 3, LogOptions::default());
        // A record whose bytes are themselves a whole frame, numbered as the one after it
        // would be (a log kept inside a page, say).
        let inner = encode_frame(5, 4, 0, &[9; 40]);
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        w.append(&delta(1, 50, &inner)).unwrap();
        drop(w);
        let seg = segment_path(&logdir, 0);
        let full = std::fs::read(&seg).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        let last = *log.segments()[0].frames().last().unwrap();
        drop(log);
        // Cut after the inner frame but before the record's end.
        std::fs::write(&seg, &full[..full.len() - 4]).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.problems().is_empty(), "{:?}", log.problems());
        assert_eq!(log.torn_tail().map(|t| t.offset), Some(last.offset));
        drop(log);
        assert!(
            recover(&[&logdir], Some(&dir.path().join("cut.bin")), LockWait::Fail)
                .unwrap()
                .is_some()
        );
        assert_eq!(Log::open(&[&logdir]).unwrap().last_seq(), Some(3));
    }

    #[test]
    fn a_group_reaches_the_log_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 2, LogOptions::default());
        let before = std::fs::read(segment_path(&logdir, 0)).unwrap();
        // Dropped before its commit (an error half way): the segment is cut back.
        {
            let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
            w.begin_group().unwrap();
            for i in 0..4 {
                w.append(&delta(i, 10 + i, &[1; 64])).unwrap();
            }
        }
        assert_eq!(std::fs::read(segment_path(&logdir, 0)).unwrap(), before);
        // Committed: every record, numbered on from the log, each but the last flagged.
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        w.begin_group().unwrap();
        let seqs: Vec<u64> = (0..4).map(|i| w.append(&delta(i, 10 + i, &[1; 64])).unwrap()).collect();
        w.commit_group().unwrap();
        drop(w);
        assert_eq!(seqs, [3, 4, 5, 6]);
        let log = Log::open(&[&logdir]).unwrap();
        let flags: Vec<u8> = log.segments()[0].frames().iter().map(|f| f.flags).collect();
        let g = FLAG_GROUP_CONTINUES;
        assert_eq!(flags, [0, 0, g, g, g, 0]);
        // Every prefix of the group's bytes reads as the log before it, plus a torn tail.
        let full = std::fs::read(segment_path(&logdir, 0)).unwrap();
        drop(log);
        for cut in (before.len()..full.len()).step_by(37) {
            std::fs::write(segment_path(&logdir, 0), &full[..cut]).unwrap();
            let log = Log::open(&[&logdir]).unwrap();
            assert!(log.problems().is_empty(), "cut at {cut}");
            assert_eq!(log.last_seq(), Some(2), "cut at {cut}");
            assert_eq!(
                log.torn_tail().map(|t| t.offset),
                (cut > before.len()).then_some(before.len() as u64)
            );
        }
    }

    #[test]
    fn a_group_never_spans_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 300,
            ..LogOptions::default()
        };
        let logdir = write_log(dir.path(), 1, opts);
        let mut w = LogWriter::open(&logdir, opts).unwrap();
        w.begin_group().unwrap();
        for i in 0..5 {
            w.append(&delta(i, 10 + i, &[1; 100])).unwrap();
        }
        w.commit_group().unwrap();
        drop(w);
        let log = Log::open(&[&logdir]).unwrap();
        let counts: Vec<usize> = log.segments().iter().map(|s| s.frames().len()).collect();
        assert_eq!(counts, [1, 5], "the group moved whole to a new segment, past its size");
        assert_eq!(log.segments()[1].header().first_seq, 2);
    }

    #[test]
    fn sequence_numbers_never_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("wrap.log");
        std::fs::create_dir(&logdir).unwrap();
        let header = SegmentHeader {
            major: 1,
            minor: 1,
            header_len: 72,
            segment_no: 0,
            first_seq: u64::MAX,
            base: StateHash([7; 32]),
        };
        let mut b = header.encode();
        b.extend(encode_frame(u64::MAX, 5, 0, &[0; 40]));
        let second = b.len() as u64;
        b.extend(encode_frame(0, 5, 0, &[0; 40]));
        std::fs::write(segment_path(&logdir, 0), &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(
            matches!(&log.problems()[0], Error::Corrupt { offset, problem: Corruption::BadField { field: "seq", .. }, .. } if *offset == second + 8),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn the_group_flag_in_a_version_1_0_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("old.log");
        std::fs::create_dir(&logdir).unwrap();
        let header = SegmentHeader {
            major: 1,
            minor: 0,
            header_len: 72,
            segment_no: 0,
            first_seq: 1,
            base: StateHash([7; 32]),
        };
        let mut b = header.encode();
        b.extend(encode_frame(1, 5, FLAG_GROUP_CONTINUES, &[0; 40]));
        b.extend(encode_frame(2, 5, 0, &[0; 40]));
        std::fs::write(segment_path(&logdir, 0), &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.torn_tail().is_none());
        assert!(
            matches!(
                &log.problems()[0],
                Error::Corrupt {
                    offset: 89,
                    problem: Corruption::BadField {
                        field: "frame flags",
                        ..
                    },
                    ..
                }
            ),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn damaged_record_followed_by_whole_ones_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let mut b = std::fs::read(&seg).unwrap();
        let second = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 100 + 25 + 2 + 4 + 16 + 40;
        b[second] ^= 1;
        std::fs::write(&seg, &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert_eq!(log.torn_tail(), None);
        assert_eq!(log.problems().len(), 1);
        assert!(
            log.problems()[0].to_string().contains("with whole records after it"),
            "{}",
            log.problems()[0]
        );
        assert!(recover(&[logdir], Some(&dir.path().join("b")), LockWait::Fail).is_err());
    }

    /// Lists the frames it is shown, piece by piece.
    struct ListFrames;
    impl FrameVisitor for ListFrames {
        type Piece = Vec<FrameRef>;
        fn start_piece(&self) -> Vec<FrameRef> {
            Vec::new()
        }
        fn frame(&self, piece: &mut Vec<FrameRef>, _: &[u8], base: u64, frame: &FrameRef) {
            piece.push(FrameRef {
                offset: base + frame.offset,
                ..*frame
            });
        }
    }

    /// A writer of one segment of up to 64 MiB (no compression, no syncs), and 70 KB of
    /// patterned bytes to take payloads from.
    fn big_segment_writer(logdir: &Path) -> (LogWriter, Vec<u8>) {
        let opts = LogOptions {
            segment_size: 64 << 20,
            durability: Durability::Never,
            compression: Compression::None,
        };
        let w = LogWriter::create(logdir, StateHash([7; 32]), 1, opts).unwrap();
        (w, (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect())
    }

    #[test]
    fn the_parallel_scan_finds_the_in_order_scans_frames_or_declines() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("big.log");
        let (mut w, data) = big_segment_writer(&logdir);
        for i in 0..1500u64 {
            // Sizes from 1 byte to 70 KB, so pieces start inside payloads of every size.
            let n = ((i * 7919) % 70_000 + 1) as usize;
            w.append(&delta(i % 5, i + 1, &data[..n])).unwrap();
        }
        w.finish().unwrap();
        let seg = segment_path(&logdir, 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        // Several pieces, and more than one task's interleaved walks (the last group short).
        assert!(
            bytes.len() as u64 > (INTERLEAVED_WALKS as u64 + 1) * SCAN_PIECE,
            "pieces for more than one group of walks"
        );
        let header = SegmentHeader::parse(&bytes).unwrap();
        let (in_order, end) = scan_in_order(&bytes, &header, true);
        assert_eq!(end, SegmentEnd::Clean);
        assert_eq!(in_order.len(), 1500);
        for check in [true, false] {
            assert_eq!(scan_in_parallel(&bytes, &header, check).as_deref(), Some(&in_order[..]));
        }
        // Damage anywhere: the parallel scan declines, and the in-order scan says what it is.
        let mid = in_order[900].payload_offset() as usize + 3;
        bytes[mid] ^= 1;
        assert_eq!(scan_in_parallel(&bytes, &header, true), None);
        let (frames, end) = scan(&bytes, &header, true);
        assert_eq!(frames.len(), 900);
        assert!(matches!(end, SegmentEnd::Damaged { tearable: false, .. }), "{end:?}");
        // A header flip the deferred scan sees as well.
        bytes[mid] ^= 1;
        bytes[in_order[1200].offset as usize + 9] ^= 1;
        assert_eq!(scan_in_parallel(&bytes, &header, false), None);
        assert_eq!(scan(&bytes, &header, false).0.len(), 1200);
    }

    /// Walks `bytes` in pieces of `piece` bytes (skipping the pieces in `missing`, as if never
    /// read) and stitches the walks, given in reverse order; checks that the visitor saw each
    /// stitched run of a piece exactly as the frames list has it.
    fn stitch_pieces(bytes: &[u8], piece: usize, missing: &[usize]) -> Option<Vec<FrameRef>> {
        let header = SegmentHeader::parse(bytes).unwrap();
        let mut walks: Vec<PieceWalk<Vec<FrameRef>>> = bytes
            .chunks(piece)
            .enumerate()
            .filter(|(k, _)| !missing.contains(k))
            .map(|(k, b)| walk_piece(b, (k * piece) as u64, &ListFrames))
            .collect();
        walks.reverse();
        let (frames, runs) = stitch(bytes, &header, walks)?;
        let mut at = 0;
        for (n, seen) in runs {
            if let Some(seen) = seen {
                assert_eq!(seen, frames[at..at + n], "a piece's visited frames");
            }
            at += n;
        }
        assert_eq!(at, frames.len(), "the runs cover the frames");
        Some(frames)
    }

    #[test]
    fn walks_of_read_pieces_stitch_into_the_in_order_scans_frames_or_decline() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("big.log");
        let (mut w, data) = big_segment_writer(&logdir);
        // Record 300's payload holds a whole valid frame: a piece that starts just before it
        // finds a false first frame, which the chain from the header must step over.
        let hidden = encode_frame(1, TYPE_CREATE, 0, &[0u8; 100]);
        for i in 0..1500u64 {
            let n = ((i * 7919) % 70_000 + 1) as usize;
            if i == 300 {
                let mut payload = vec![0u8; 5000];
                payload[1000..1000 + hidden.len()].copy_from_slice(&hidden);
                w.append(&delta(i % 5, i + 1, &payload)).unwrap();
            } else {
                w.append(&delta(i % 5, i + 1, &data[..n])).unwrap();
            }
        }
        w.finish().unwrap();
        let mut bytes = std::fs::read(segment_path(&logdir, 0)).unwrap();
        let header = SegmentHeader::parse(&bytes).unwrap();
        let (in_order, end) = scan_in_order(&bytes, &header, true);
        assert_eq!((in_order.len(), end), (1500, SegmentEnd::Clean));
        // Frames crossing piece edges, pieces inside one frame, pieces never read.
        for (piece, missing) in [
            (4 << 20, vec![]),
            (1 << 20, vec![3, 4]),
            (40_000, vec![7]),
            (333, vec![]),
        ] {
            assert_eq!(
                stitch_pieces(&bytes, piece, &missing).as_deref(),
                Some(&in_order[..]),
                "pieces of {piece} bytes, {missing:?} missing"
            );
        }
        // A piece that starts inside record 300's payload, right before the hidden frame.
        let record = in_order[300].payload_offset() as usize;
        let false_start = record
            + bytes[record..]
                .windows(hidden.len())
                .position(|w| w == &hidden[..])
                .expect("the hidden frame is in record 300's payload");
        assert!(false_start < in_order[301].offset as usize);
        let walks = vec![
            walk_piece(&bytes[..false_start], 0, &ListFrames),
            walk_piece(&bytes[false_start..], false_start as u64, &ListFrames),
        ];
        assert_eq!(
            walks[1].first,
            Some(false_start as u64),
            "the second piece starts on the false frame"
        );
        let (frames, runs) = stitch(&bytes, &header, walks).unwrap();
        assert_eq!(frames, in_order, "the false start is stepped over");
        assert!(
            matches!(runs.first(), Some((_, Some(_)))),
            "the first piece's walk is used"
        );
        assert!(
            matches!(runs.last(), Some((_, None))),
            "the frames after the false start are read from the file, not taken from its walk"
        );
        // Damage: the stitch declines, and the segment is scanned as usual.
        let mid = in_order[900].offset as usize + 9;
        bytes[mid] ^= 1;
        assert_eq!(stitch_pieces(&bytes, 1 << 20, &[]), None);
        bytes[mid] ^= 1;
        // A torn tail: the stitch declines too.
        let cut = bytes.len() - 10;
        assert_eq!(stitch_pieces(&bytes[..cut], 1 << 20, &[]), None);
    }

    #[test]
    fn a_deferred_open_reads_headers_only_and_reopening_gives_the_full_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let mut b = std::fs::read(&seg).unwrap();
        let frames = Log::open(&[&logdir]).unwrap().segments()[0].frames().to_vec();
        // A payload byte of the second record: its header still checks.
        b[frames[1].payload_offset() as usize + 40] ^= 1;
        std::fs::write(&seg, &b).unwrap();
        let deferred = Log::open_deferred(&[&logdir]).unwrap();
        assert!(!deferred.payloads_checked());
        assert!(deferred.problems().is_empty());
        assert_eq!(deferred.segments()[0].frames(), &frames[..]);
        let s = &deferred.segments()[0];
        let f = &frames[1];
        let stored = s.record_checksum(f);
        let start = f.offset as usize;
        let header = &s.bytes()[start..start + 28];
        let payload = &s.bytes()[f.payload_offset() as usize..(f.payload_offset() + f.payload_len) as usize];
        assert_ne!(crc32c::crc32c_append(crc32c(header), payload), stored);
        let full = deferred.reopen_checked().unwrap();
        assert!(full.payloads_checked());
        assert_eq!(full.problems().len(), 1);
        assert_eq!(full.segments()[0].frames().len(), 1);
        // A torn header is found by the header scan too, and classified by a full scan.
        b[frames[1].payload_offset() as usize + 40] ^= 1;
        std::fs::write(&seg, &b[..frames[4].offset as usize + 10]).unwrap();
        let deferred = Log::open_deferred(&[&logdir]).unwrap();
        assert!(deferred.segments()[0].payloads_checked());
        assert!(deferred.problems().is_empty());
        assert_eq!(deferred.torn_tail().map(|t| t.offset), Some(frames[4].offset));
    }

    #[test]
    fn sequence_gap_between_segments_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 300,
            durability: Durability::Never,
            compression: Compression::None,
        };
        let logdir = write_log(dir.path(), 6, opts);
        let seg1 = segment_path(&logdir, 1);
        let mut b = std::fs::read(&seg1).unwrap();
        let h = SegmentHeader::parse(&b).unwrap();
        let bumped = SegmentHeader {
            first_seq: h.first_seq + 1,
            ..h
        }
        .encode();
        b[..SEGMENT_HEADER_LEN].copy_from_slice(&bumped);
        std::fs::write(&seg1, &b).unwrap();
        let log = Log::open(&[logdir]).unwrap();
        assert!(
            log.problems().iter().any(|p| matches!(
                p,
                Error::Corrupt {
                    problem: Corruption::SequenceGap { .. },
                    ..
                }
            )),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn segment_header_faults_are_named() {
        let h = SegmentHeader {
            major: 1,
            minor: 0,
            header_len: 72,
            segment_no: 0,
            first_seq: 1,
            base: StateHash([1; 32]),
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::parse(&b).unwrap(), h);
        b[8] = 9;
        assert!(matches!(
            SegmentHeader::parse(&b).unwrap_err().problem,
            Corruption::UnsupportedVersion { major: 9, .. }
        ));
        let mut b = h.encode();
        b[40] ^= 1;
        assert!(matches!(
            SegmentHeader::parse(&b).unwrap_err().problem,
            Corruption::ChecksumMismatch { .. }
        ));
        assert!(matches!(
            SegmentHeader::parse(b"MMSBCKPT").unwrap_err().problem,
            Corruption::BadMagic { .. }
        ));
    }

    #[test]
    fn zstd_payloads_that_are_not_frames_or_claim_too_much_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("z.log");
        let mut w = LogWriter::create(&logdir, StateHash([0; 32]), 1, LogOptions::default()).unwrap();
        // A zstd frame header (magic, single-segment, 8-byte content size) claiming 2^40 bytes.
        let mut huge = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        w.append_frame(&encode_frame(1, 4, FLAG_ZSTD, &huge)).unwrap();
        w.append_frame(&encode_frame(2, 4, FLAG_ZSTD, b"not zstd at all"))
            .unwrap();
        w.finish().unwrap();
        let log = Log::open(&[logdir]).unwrap();
        let errs: Vec<String> = log.records().map(|r| r.payload().err().unwrap().to_string()).collect();
        assert!(errs[0].contains("above the 4 GiB limit"), "{}", errs[0]);
        assert!(errs[1].contains("not a zstd frame"), "{}", errs[1]);
    }
}
