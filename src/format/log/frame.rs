//! The bytes of a segment: its header, and the frame around each record (docs/FORMAT.md,
//! "Segment header" and "Frame"); a frame's payload, checked against its page before it is
//! decompressed.

use std::borrow::Cow;

use crate::error::{Corruption, Rejection, Result};
use crate::format::record::{OPTIONAL_TYPE_MIN, TYPE_CREATE, TYPE_FILL, TargetPage, max_payload_len};
use crate::format::{Cursor, FORMAT_MAJOR, ParseError, PutLe, bad_field, crc32c};
use crate::page::StateHash;

use super::*;

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
        let ok_len = if crate::format::is_known_minor(minor) {
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
        if crate::format::is_known_minor(minor) {
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
    /// The record checksum (`record_crc`) stored in this frame's header, read from `segment`,
    /// the bytes of the segment it was listed in (it matched then); `None` where `segment` is
    /// too short to hold the header.
    pub fn record_crc(&self, segment: &[u8]) -> Option<u32> {
        let at = usize::try_from(self.offset).ok()?.checked_add(28)?;
        let word = segment.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(word.try_into().ok()?))
    }
}

/// Builds a frame (header and stored payload) for a record.
pub fn encode_frame(seq: u64, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    encode_frame_into(&mut f, seq, kind, flags, payload);
    f
}

/// [`encode_frame`], appended to `out`.
pub fn encode_frame_into(out: &mut Vec<u8>, seq: u64, kind: u8, flags: u8, payload: &[u8]) {
    let at = out.len();
    out.put_u64(payload.len() as u64);
    out.put_u64(seq);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u16(0);
    out.put_u32(0);
    let hcrc = crc32c(&out[at..]);
    out.put_u32(hcrc);
    let rcrc = crc32c::crc32c_append(crc32c(&out[at..]), payload);
    out.put_u32(rcrc);
    out.extend_from_slice(payload);
}

/// Clears GROUP_CONTINUES in the encoded frame `frame` (header and payload) and recomputes its
/// checksums: a group's last frame, known to be last only when the group commits.
pub(crate) fn close_group_frame(frame: &mut [u8]) {
    frame[17] &= !super::FLAG_GROUP_CONTINUES;
    let hcrc = crc32c(&frame[..24]);
    frame[24..28].copy_from_slice(&hcrc.to_le_bytes());
    let rcrc = crc32c::crc32c_append(crc32c(&frame[..28]), &frame[FRAME_HEADER_LEN..]);
    frame[28..32].copy_from_slice(&rcrc.to_le_bytes());
}

/// Why the frame at an offset is not a whole, valid frame.
pub(super) enum FrameFault {
    /// Could be the result of a crash in the middle of an append.
    Tearable(String),
    /// Checksums match but the content breaks the format: never a torn write.
    Invalid(ParseError),
}

/// Reads the frame at `at`; with `check_payload` false the record checksum (over the payload) is
/// left to the caller, and only the header's checksum and fields are checked.
pub(super) fn read_frame(bytes: &[u8], at: u64, check_payload: bool) -> Result<FrameRef, FrameFault> {
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
pub(super) fn valid_frame_after(bytes: &[u8], at: u64, seq: u64) -> bool {
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
pub(super) fn trusted_frame_len(bytes: &[u8], at: u64) -> Option<u64> {
    let h = bytes.get(at as usize..)?.get(..FRAME_HEADER_LEN)?;
    let word = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    if crc32c(&h[..24]) != word {
        return None;
    }
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).checked_add(FRAME_HEADER_LEN as u64)
}

/// The payload of frame `f` of the segment whose bytes are `segment`, decompressed when the frame
/// says so; the error says why a compressed payload cannot be read.
pub fn frame_payload<'a>(segment: &'a [u8], f: &FrameRef) -> std::result::Result<Cow<'a, [u8]>, String> {
    match frame_payload_for_page(segment, f, |_| TargetPage::Unknown) {
        Ok(p) => Ok(p),
        Err(PayloadProblem::Compression(why)) => Err(why),
        Err(PayloadProblem::DoesNotFit(why)) => Err(why.to_string()),
    }
}

/// Why a payload was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadProblem {
    /// The compressed bytes are not a valid zstd frame of the declared size (corruption).
    Compression(String),
    /// The declared decompressed size is more than the record could have and still apply to
    /// its page: it is refused before anything is decompressed.
    DoesNotFit(Rejection),
}

/// Bytes of a payload's common head: page id, epoch, timestamp and the source tag's length.
pub(super) const PAYLOAD_HEAD_LEN: usize = 25;

/// The first bytes of a frame's payload (up to the 25 of the common prefix before the source
/// tag: page id, epoch, timestamp, source length), decompressing only the block that holds them.
pub fn frame_payload_head<'a>(segment: &'a [u8], f: &FrameRef) -> std::result::Result<Cow<'a, [u8]>, PayloadProblem> {
    let start = f.payload_offset() as usize;
    let stored = &segment[start..start + f.payload_len as usize];
    if f.flags & FLAG_ZSTD == 0 {
        return Ok(Cow::Borrowed(&stored[..stored.len().min(PAYLOAD_HEAD_LEN)]));
    }
    let compression = |e: std::io::Error| PayloadProblem::Compression(e.to_string());
    let mut head = Vec::with_capacity(PAYLOAD_HEAD_LEN);
    let decoder = zstd::stream::read::Decoder::with_buffer(stored).map_err(compression)?;
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, PAYLOAD_HEAD_LEN as u64), &mut head)
        .map_err(compression)?;
    Ok(Cow::Owned(head))
}

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
        let head = frame_payload_head(segment, f)?;
        if head.len() == PAYLOAD_HEAD_LEN {
            let page_id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let head_len = PAYLOAD_HEAD_LEN as u64 + u64::from(head[24]);
            let target = page_len(page_id);
            if let Some(max) = max_payload_len(f.kind, head_len, target)
                && size > max
            {
                return Err(DoesNotFit(Rejection::PayloadCannotFit {
                    record: crate::format::record::kind_name(f.kind),
                    declared: size,
                    page: page_id,
                    page_len: match target {
                        TargetPage::Len(l) => Some(l),
                        _ => None,
                    },
                    max,
                }));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_crc_is_the_stored_checksum_of_header_and_payload() {
        let payload = b"payload bytes";
        let mut segment = vec![0xEEu8; 10];
        segment.extend(encode_frame(7, 5, 0, payload));
        let f = FrameRef {
            offset: 10,
            seq: 7,
            kind: 5,
            flags: 0,
            payload_len: payload.len() as u64,
        };
        let frame = &segment[10..];
        let expected = crc32c::crc32c_append(crc32c::crc32c(&frame[..28]), payload);
        assert_eq!(f.record_crc(&segment), Some(expected));
        assert_eq!(f.record_crc(&segment[..10 + 31]), None, "a header cut short");
    }
}
