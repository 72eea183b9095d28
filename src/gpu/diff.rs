//! Where pairs of device buffers differ (a trainer's tensors before and after a step), found on
//! the device: one kernel marks the [`DIFF_WINDOW`]-byte windows that differ in all the pairs at
//! once, another gathers those windows' old and new bytes into one device buffer, and they cross
//! to the host in one copy. Only the changed windows leave the device; the exact bytes that
//! differ are found on the host, in the windows alone (`ops::sync`).

use std::sync::Arc;
use std::time::Instant;

use super::Gpu;
use super::driver::{DeviceBuffer, MemoryKind, copy_d2h, copy_h2d_sync};
use super::kernels::DIFF_WINDOW;
use crate::error::{Error, GpuError, Result};

/// Windows per word of the kernel's bitmap.
const WORD_WINDOWS: u64 = 32;

/// Two buffers of one length in device memory: a page before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePair {
    /// Device address of the old bytes.
    pub old: u64,
    /// Device address of the new bytes.
    pub new: u64,
    /// Length of each, bytes.
    pub len: u64,
}

/// A run of adjacent differing windows of one pair, clipped to its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRun {
    /// The pair's index.
    pub pair: usize,
    /// Offset of the run in the pair's bytes.
    pub offset: u64,
    /// Length of the run, bytes.
    pub len: usize,
    /// Where the run's old bytes start in [`ChangedWindows::old`].
    pub at_old: usize,
    /// Where the run's new bytes start in [`ChangedWindows::new`].
    pub at_new: usize,
}

/// The windows where pairs differ, with their bytes on the host.
pub struct ChangedWindows<'a> {
    /// Runs of differing windows, by pair, then offset.
    pub runs: Vec<WindowRun>,
    /// The runs' old bytes (pinned host memory, valid until the next compare).
    pub old: &'a [u8],
    /// The runs' new bytes.
    pub new: &'a [u8],
    /// Marking the windows and reading the marks back, ms.
    pub mark_ms: f64,
    /// Gathering the runs' bytes and copying them to the host, ms.
    pub gather_ms: f64,
}

/// Compares pairs of device buffers on one device, keeping the pinned host memory the changed
/// windows arrive in from one compare to the next (pinning costs milliseconds; a weight-sync
/// loop compares about as much each step).
pub struct DeviceDiffer {
    gpu: Arc<Gpu>,
    host: Option<DeviceBuffer>,
}

impl DeviceDiffer {
    /// A differ on `gpu`'s device.
    pub fn new(gpu: Arc<Gpu>) -> DeviceDiffer {
        DeviceDiffer { gpu, host: None }
    }

    /// The device it compares on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Finds the windows where each pair's old and new bytes differ and copies their bytes to
    /// the host. The work runs on the device's stream; the call returns when it is done.
    ///
    /// # Safety
    ///
    /// Each pair's `old` and `new` must be addresses of `len` readable bytes of this device's
    /// memory that stay allocated, and that no other work writes, until the call returns; the
    /// caller has waited for any work queued elsewhere that writes them.
    pub unsafe fn changed_windows(&mut self, pairs: &[DevicePair]) -> Result<ChangedWindows<'_>> {
        let t = Instant::now();
        let gpu = &self.gpu;
        let kernels = gpu.kernels()?;
        let stream = &gpu.stream;
        // Each pair's windows start a word of the bitmap.
        let mut first_word = Vec::with_capacity(pairs.len());
        let mut nwords = 0u64;
        for p in pairs {
            first_word.push(nwords);
            nwords += p.len.div_ceil(DIFF_WINDOW * WORD_WINDOWS);
        }
        let too_many = || Error::Gpu(GpuError::Internal("too many buffers to compare at once".into()));
        let npairs = u32::try_from(pairs.len()).map_err(|_| too_many())?;
        let mut table = Vec::with_capacity(pairs.len() * 32);
        for (p, w) in pairs.iter().zip(&first_word) {
            for x in [p.old, p.new, p.len, *w] {
                table.extend_from_slice(&x.to_le_bytes());
            }
        }
        let words_len = usize::try_from(nwords * 4).map_err(|_| too_many())?;
        let d_table = DeviceBuffer::alloc(&gpu.ctx, table.len(), MemoryKind::Device)?;
        let d_bits = DeviceBuffer::alloc(&gpu.ctx, words_len, MemoryKind::Device)?;
        copy_h2d_sync(stream, d_table.ptr(), &table)?;
        // SAFETY: the table holds `npairs` entries with ascending first words covering each
        // pair's windows within `nwords`; the pairs' memory is the caller's contract; `d_bits`
        // holds `nwords` words. The stream is waited for below, before the buffers drop.
        unsafe { kernels.diff_windows(stream, d_table.ptr(), npairs, nwords, d_bits.ptr())? };
        gpu.synchronize()?;
        let mut bits = vec![0u8; words_len];
        copy_d2h(&gpu.ctx, d_bits.ptr(), &mut bits)?;
        let mark_ms = crate::timing::ms(t);

        let t = Instant::now();
        let runs_found = window_runs(pairs, &first_word, &bits);
        // Each run's bytes land at the same offset from an 8-byte boundary as they lie on the
        // device (the gather kernel reads whole words only inside its source).
        let mut runs = Vec::with_capacity(runs_found.len());
        let (mut end_old, mut end_new) = (0usize, 0usize);
        let place = |end: usize, src: u64| end + ((src as usize).wrapping_sub(end) & 7);
        for (pair, offset, len) in runs_found {
            let p = &pairs[pair];
            let at_old = place(end_old, p.old + offset);
            let at_new = place(end_new, p.new + offset);
            end_old = at_old + len;
            end_new = at_new + len;
            runs.push(WindowRun {
                pair,
                offset,
                len,
                at_old,
                at_new,
            });
        }
        let new_base = end_old.next_multiple_of(8);
        let total = new_base + end_new;
        if self.host.as_ref().is_none_or(|h| h.len() < total) {
            self.host = None;
            self.host = Some(DeviceBuffer::alloc(
                &gpu.ctx,
                total.next_power_of_two(),
                MemoryKind::HostMapped,
            )?);
        }
        let host = self.host.as_mut().expect("allocated above");
        if !runs.is_empty() {
            let staging = DeviceBuffer::alloc(&gpu.ctx, total, MemoryKind::Device)?;
            let mut ranges = Vec::with_capacity(runs.len() * 48);
            for r in &runs {
                let p = &pairs[r.pair];
                for (src, dst) in [
                    (p.old + r.offset, staging.ptr() + r.at_old as u64),
                    (p.new + r.offset, staging.ptr() + (new_base + r.at_new) as u64),
                ] {
                    for x in [src, dst, r.len as u64] {
                        ranges.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            let n = u32::try_from(runs.len() * 2).map_err(|_| too_many())?;
            let d_ranges = DeviceBuffer::alloc(&gpu.ctx, ranges.len(), MemoryKind::Device)?;
            copy_h2d_sync(stream, d_ranges.ptr(), &ranges)?;
            // SAFETY: every source is a window run inside its pair (clipped to its length: the
            // caller's contract), every destination a disjoint run inside `staging`, placed at
            // its source's offset from an 8-byte boundary; the stream is waited for below.
            unsafe { kernels.gather_ranges(stream, d_ranges.ptr(), n)? };
            gpu.synchronize()?;
            let dst = host.host_slice_mut().expect("host-mapped memory");
            copy_d2h(&gpu.ctx, staging.ptr(), &mut dst[..total])?;
        }
        let bytes = host.host_slice_mut().expect("host-mapped memory");
        let (old, new) = bytes[..total].split_at(new_base);
        Ok(ChangedWindows {
            runs,
            old: &old[..end_old],
            new: &new[..end_new],
            mark_ms,
            gather_ms: crate::timing::ms(t),
        })
    }
}

/// The runs of set bits in each pair's words of `bits` (little-endian u32 words), as
/// `(pair, offset, length)` in bytes, clipped to the pair's length.
fn window_runs(pairs: &[DevicePair], first_word: &[u64], bits: &[u8]) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let words = p.len.div_ceil(DIFF_WINDOW * WORD_WINDOWS);
        let mut open: Option<u64> = None;
        let mut close = |from: u64, to: u64| {
            let end = (to * DIFF_WINDOW).min(p.len);
            out.push((i, from * DIFF_WINDOW, (end - from * DIFF_WINDOW) as usize));
        };
        for w in 0..words {
            let at = ((first_word[i] + w) * 4) as usize;
            let mut word = u32::from_le_bytes(bits[at..at + 4].try_into().expect("4 bytes"));
            let base = w * WORD_WINDOWS;
            if word == 0 {
                if let Some(s) = open.take() {
                    close(s, base);
                }
                continue;
            }
            let mut k = 0u64;
            while k < WORD_WINDOWS {
                if word == 0 {
                    if let Some(s) = open.take() {
                        close(s, base + k);
                    }
                    break;
                }
                let zeros = u64::from(word.trailing_zeros());
                if zeros > 0 {
                    if let Some(s) = open.take() {
                        close(s, base + k);
                    }
                    k += zeros;
                    word >>= zeros;
                }
                let ones = u64::from((!word).trailing_zeros());
                open.get_or_insert(base + k);
                k += ones;
                word = if ones >= 32 { 0 } else { word >> ones };
            }
        }
        if let Some(s) = open {
            close(s, words * WORD_WINDOWS);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn marked_windows_become_runs_clipped_to_each_pair() {
        let pairs = [
            // Two words of windows; the last window ends at 16,000 bytes.
            DevicePair {
                old: 0,
                new: 0,
                len: 16_000,
            },
            DevicePair {
                old: 0,
                new: 0,
                len: 300,
            },
        ];
        // Pair 0: windows 0-1, 31-32 (across the word boundary), 62 (the last, clipped).
        // Pair 1: window 1 (clipped to 300).
        let bits = words(&[0b11 | 1 << 31, 1 | 1 << 30, 0b10]);
        let runs = window_runs(&pairs, &[0, 2], &bits);
        assert_eq!(
            runs,
            vec![
                (0, 0, 512),
                (0, 31 * 256, 512),
                (0, 62 * 256, 16_000 - 62 * 256),
                (1, 256, 44)
            ]
        );
        // Every window marked: one run per pair.
        let all = words(&[u32::MAX, u32::MAX, u32::MAX]);
        assert_eq!(window_runs(&pairs, &[0, 2], &all), vec![(0, 0, 16_000), (1, 0, 300)]);
        assert!(window_runs(&pairs, &[0, 2], &words(&[0, 0, 0])).is_empty());
    }
}
