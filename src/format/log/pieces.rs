//! Walking a segment's frames piece by piece as the pieces arrive (a GPU upload reads the log in
//! pieces) and stitching the walks into the in-order scan's frame list, or declining.

use super::*;

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

/// What the walk of one piece of a segment found, the piece's bytes having been read into memory
/// (by the GPU upload, which reads every byte anyway): the frames from the first offset in the
/// piece where a valid frame header starts, as far as whole frames lie in the piece, shown to a
/// visitor while the bytes are in cache. [`Segment::open_from_pieces`] joins the walks into the
/// segment's frame list.
pub struct PieceWalk<P> {
    /// File offset of the first frame walked; `None` when none was found.
    pub(super) first: Option<u64>,
    /// The frames walked, with file offsets.
    pub(super) frames: Vec<FrameRef>,
    /// File offset of the frame after the last one walked.
    pub(super) next: u64,
    /// The visitor's result.
    pub(super) visited: P,
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
pub(super) fn stitch<P>(
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
