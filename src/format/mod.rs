//! The on-disk format, version 1: checkpoint files, log segments and the records inside them.
//!
//! `docs/FORMAT.md` is the byte-exact specification; the constants here carry its names, and
//! `format_constants_match_the_spec` in this module's tests pins each of them.

pub mod base;
pub mod checkpoint;
pub mod graph;
pub mod lock;
pub mod log;
pub mod record;

use crate::error::Corruption;

/// The format major version this build reads and writes. A file of another major is refused.
pub const FORMAT_MAJOR: u16 = 1;
/// The minor version log segments are written with (1.1: atomic record groups). Graph
/// records (1.2) are optional record types, which a 1.1 segment may hold: a 1.1 reader skips
/// them and reaches the same pages.
pub const FORMAT_MINOR: u16 = 1;
/// The newest format minor version this build knows (1.3: the BASE record; 1.2: the dependency
/// graph). Newer minors are read as far as FORMAT.md allows.
pub const NEWEST_MINOR: u16 = 3;
/// The minor version a checkpoint without a dependency graph is written with: the lowest that
/// describes it.
pub const CHECKPOINT_MINOR: u16 = 0;
/// The minor version a checkpoint with a dependency graph section is written with.
pub const GRAPH_CHECKPOINT_MINOR: u16 = 2;
/// True for a minor version this build knows, whose reserved fields must be zero; newer minors
/// are read leniently (FORMAT.md, "Versions").
pub fn is_known_minor(minor: u16) -> bool {
    minor <= NEWEST_MINOR
}

/// What a file that is not the mmsb file expected looks like, and what to do with it, judged
/// from its first bytes: `(what it is, what to do)`. `None` when it looks like nothing known.
pub fn sniff_foreign(bytes: &[u8], expected: &str) -> Option<(&'static str, &'static str)> {
    // An 8-byte little-endian JSON header length (safetensors caps it at 100 MB), then `{`.
    let safetensors = bytes.len() >= 9
        && bytes[8] == b'{'
        && u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) < 100_000_000;
    Some(match bytes {
        [] => (
            "an empty file",
            "it holds nothing; was the write that made it interrupted?",
        ),
        b if b.starts_with(b"version https://git-lfs") => (
            "a Git LFS pointer, not the file's content",
            "run `git lfs pull` to fetch the content",
        ),
        [0x28, 0xB5, 0x2F, 0xFD, ..] => ("a zstd-compressed file", "decompress it first (`zstd -d`)"),
        [0x1F, 0x8B, ..] => ("a gzip-compressed file", "decompress it first (`gunzip`)"),
        _ if safetensors => (
            "a safetensors file",
            "make a checkpoint of it with `mmsb import FILE -o FILE.ckpt`",
        ),
        b if b.starts_with(&log::MAGIC) && expected != "log" => {
            ("an mmsb log segment", "give the checkpoint first and the log after it")
        }
        b if b.starts_with(&checkpoint::MAGIC) && expected != "checkpoint" => {
            ("an mmsb checkpoint", "give the checkpoint first and the log after it")
        }
        _ => return None,
    })
}

/// Page data, sections and the file length are aligned to this many bytes.
pub const ALIGN: u64 = 4096;

/// Rounds `n` up to the next multiple of [`ALIGN`], or `None` on overflow.
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// CRC32C (Castagnoli, reflected, init and final XOR 0xFFFFFFFF: the iSCSI CRC), unmasked.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC32C of `len` zero bytes, without reading any: a created page's checksum, whatever its size.
pub fn crc32c_of_zeros(len: u64) -> u32 {
    // Zero runs of 1, 2, 4, ... bytes by doubling, joined for each bit set in `len`.
    let (mut run, mut run_len, mut acc, mut n) = (crc32c(&[0]), 1u64, 0u32, len);
    while n != 0 {
        let shift = crc32c_shift_factor(run_len);
        if n & 1 != 0 {
            acc = crc32c_combine_with(acc, run, shift);
        }
        run = crc32c_combine_with(run, run, shift);
        run_len <<= 1;
        n >>= 1;
    }
    acc
}

/// CRC32C of a large buffer, computed in parallel pieces and combined.
pub fn crc32c_parallel(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    const PIECE: usize = 4 << 20;
    if bytes.len() <= PIECE {
        return crc32c(bytes);
    }
    // Every piece but the last has one length: one shift factor serves them all.
    let piece_shift = crc32c_shift_factor(PIECE as u64);
    bytes
        .par_chunks(PIECE)
        .map(|c| (crc32c(c), c.len()))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(None, |acc: Option<u32>, (crc, len)| match acc {
            None => Some(crc),
            Some(a) => {
                let shift = if len == PIECE {
                    piece_shift
                } else {
                    crc32c_shift_factor(len as u64)
                };
                Some(crc32c_combine_with(a, crc, shift))
            }
        })
        .unwrap_or(0)
}

const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

/// `a * b mod P` in the reflected bit order of CRC32C (bit 31 is x^0).
fn crc32c_multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLY_REFLECTED
        } else {
            b >> 1
        };
    }
}

/// `x^(8 * len) mod P`: the factor that shifts a CRC past `len` bytes.
pub fn crc32c_shift_factor(len: u64) -> u32 {
    // x^(2^k) for k = 3 (one byte) upward, by repeated squaring.
    let mut square = 1u32 << 30; // x^1
    for _ in 0..3 {
        square = crc32c_multmodp(square, square);
    }
    let (mut n, mut p) = (len, 1u32 << 31); // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = crc32c_multmodp(square, p);
        }
        square = crc32c_multmodp(square, square);
        n >>= 1;
    }
    p
}

/// The CRC32C of `A ++ B` from `crc(A)`, `crc(B)` and the shift factor of `B`'s length
/// ([`crc32c_shift_factor`]); with equal-length pieces the factor is computed once.
pub fn crc32c_combine_with(crc_a: u32, crc_b: u32, shift_b: u32) -> u32 {
    crc32c_multmodp(shift_b, crc_a) ^ crc_b
}

/// A bounds-checked little-endian reader over a byte slice that knows the file offset of its
/// first byte, so every error names the absolute offset where the bytes ran out.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

/// A parse failure: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// What is wrong there.
    pub problem: Corruption,
}

impl ParseError {
    pub(crate) fn new(offset: u64, problem: Corruption) -> Self {
        ParseError { offset, problem }
    }
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], base: u64) -> Self {
        Cursor { bytes, pos: 0, base }
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], ParseError> {
        let avail = self.remaining() as u64;
        if n > avail {
            return Err(ParseError::new(
                self.offset(),
                Corruption::Truncated {
                    needed: n,
                    available: avail,
                },
            ));
        }
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads the 12 bytes both file kinds start with: the 8-byte `magic` (named `expected` in
    /// the error) and the version, refusing another magic or major version. Returns the minor.
    pub(crate) fn magic_and_version(&mut self, magic: [u8; 8], expected: &'static str) -> Result<u16, ParseError> {
        let at = self.offset();
        let found = self.array::<8>()?;
        if found != magic {
            return Err(ParseError::new(
                at,
                Corruption::BadMagic {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected,
                },
            ));
        }
        let at = self.offset();
        let major = self.u16()?;
        let minor = self.u16()?;
        if major != FORMAT_MAJOR {
            return Err(ParseError::new(
                at,
                Corruption::UnsupportedVersion {
                    major,
                    minor,
                    supported: FORMAT_MAJOR,
                },
            ));
        }
        Ok(minor)
    }

    /// Reads a field that the spec requires to be zero.
    pub(crate) fn zeros(&mut self, n: u64, what: &'static str) -> Result<(), ParseError> {
        let at = self.offset();
        check_zero(self.take(n)?, at, what)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
}

/// Fails with [`Corruption::NonZeroPadding`] at the first non-zero byte of `bytes`.
pub(crate) fn check_zero(bytes: &[u8], offset: u64, what: &'static str) -> Result<(), ParseError> {
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(ParseError::new(
            offset + i as u64,
            Corruption::NonZeroPadding { what, value: bytes[i] },
        )),
    }
}

pub(crate) fn bad_field(offset: u64, field: &'static str, value: u64, why: impl Into<String>) -> ParseError {
    ParseError::new(
        offset,
        Corruption::BadField {
            field,
            value,
            why: why.into(),
        },
    )
}

/// Appends little-endian integers to a byte vector (writers' counterpart of [`Cursor`]).
pub(crate) trait PutLe {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
}

impl PutLe for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v)
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_the_iscsi_polynomial() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc_of_zeros_equals_the_crc_of_zero_bytes() {
        let zeros = vec![0u8; 5 << 20];
        for len in [0usize, 1, 2, 3, 32, 4095, 4096, 1 << 20, (5 << 20) - 1, 5 << 20] {
            assert_eq!(crc32c_of_zeros(len as u64), crc32c(&zeros[..len]), "{len} zeros");
        }
    }

    #[test]
    fn parallel_crc_equals_serial_crc() {
        let data: Vec<u8> = (0..(9u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(crc32c_parallel(&data), crc32c(&data));
    }

    #[test]
    fn fast_combine_equals_the_crate_combine_and_the_whole_crc() {
        let data: Vec<u8> = (0..100_000u32).map(|i| ((i * 31) >> 3) as u8).collect();
        for split in [0usize, 1, 7, 4096, 65_536, 99_999, 100_000] {
            let (a, b) = data.split_at(split);
            let f = crc32c_shift_factor(b.len() as u64);
            assert_eq!(
                crc32c_combine_with(crc32c(a), crc32c(b), f),
                crc32c(&data),
                "split {split}"
            );
            assert_eq!(
                crc32c_combine_with(crc32c(a), crc32c(b), f),
                crc32c::crc32c_combine(crc32c(a), crc32c(b), b.len())
            );
        }
    }

    #[test]
    fn cursor_reports_absolute_offset_of_truncation() {
        let mut c = Cursor::new(&[1, 0, 0], 100);
        assert_eq!(c.u16().unwrap(), 1);
        let e = c.u32().unwrap_err();
        assert_eq!(e.offset, 102);
        assert_eq!(
            e.problem,
            Corruption::Truncated {
                needed: 4,
                available: 1
            }
        );
    }

    #[test]
    fn align_up_rounds_to_4096_and_detects_overflow() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(4096));
        assert_eq!(align_up(4096), Some(4096));
        assert_eq!(align_up(u64::MAX), None);
    }
}
