//! A log segment opened from walks of its pieces (as the GPU upload reads it) against the plain
//! deferred open, on arbitrary bytes cut into pieces of an arbitrary size and added in an
//! arbitrary order (as the upload's copy threads finish them): never panics, and both list the
//! same frames and the same end (the stitch joins walks only where the chain of frames from the
//! header reaches them, and falls back to the plain scan otherwise).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmsb::format::log::{Log, walk_piece};

fuzz_target!(|data: &[u8]| {
    let Some((size, data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Some((&order, data)) = data.split_first() else {
        return;
    };
    if mmsb::format::log::SegmentHeader::parse(data).is_err() {
        return;
    }
    let piece = 1 + usize::from(u16::from_le_bytes(*size)) % 8192;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000.mmsblog");
    std::fs::write(&path, data).unwrap();
    // Pieces added by their number modulo 1-8 (1: in file order), backwards when the top bit says.
    let stride = 1 + usize::from(order & 7);
    let walks = |_: usize| {
        let mut walks: Vec<_> = data
            .chunks(piece)
            .enumerate()
            .map(|(k, b)| (k, walk_piece(b, (k * piece) as u64, &())))
            .collect();
        walks.sort_by_key(|&(k, _)| (k % stride, k));
        if order & 0x80 != 0 {
            walks.reverse();
        }
        walks.into_iter().map(|(_, w)| w).collect()
    };
    let from_pieces = Log::open_from_pieces(&[path.clone()], &walks);
    let plain = Log::open_deferred(&[&path]);
    match (from_pieces, plain) {
        (Ok((a, _)), Ok(b)) => {
            assert_eq!(a.segments().len(), b.segments().len());
            for (x, y) in a.segments().iter().zip(b.segments()) {
                assert_eq!(x.frames(), y.frames(), "frames from pieces of {piece} bytes");
                assert_eq!(x.end(), y.end());
            }
            assert_eq!(a.torn_tail(), b.torn_tail());
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("from pieces: {:?}; plain: {:?}", a.is_ok(), b.is_ok()),
    }
});
