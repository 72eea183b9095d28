//! File bytes to device memory: several threads copy (from the page-cache mapping, or with
//! O_DIRECT reads when the file is not cached) into a small ring of registered staging slots, and
//! each slot's host-to-device copy runs asynchronously on its thread's stream while the thread
//! fills the next slot. See ../shared/gpu-limits/README.md for the measurements behind this.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cudarc::driver::CudaContext;

use super::driver::{RawStream, Registered, gpu_err};
use crate::error::{Error, Result};
use crate::format::ALIGN;

/// How file bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Copy out of the page cache through the file mapping (warm files).
    Mmap,
    /// `O_DIRECT` reads, several in flight (cold files: the only way to reach the disk's rate).
    Direct,
}

/// One contiguous piece to move: `len` bytes from file offset `file_off` to device address `dst`.
#[derive(Debug, Clone, Copy)]
pub struct CopyJob {
    /// Offset in the source file.
    pub file_off: u64,
    /// Bytes.
    pub len: u64,
    /// Device address of the first byte.
    pub dst: u64,
}

/// Tuning of the staging pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline {
    /// Copy threads.
    pub threads: usize,
    /// Bytes per staging slot (two slots per thread).
    pub slot: usize,
}

impl Pipeline {
    /// Threads and slot size for `bytes` to move: small loads want little staging (registering it
    /// costs more than moving the data), large ones many threads and MiB-sized slots.
    pub fn for_bytes(bytes: u64) -> Pipeline {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        if bytes <= 256 << 20 {
            Pipeline {
                threads: cores.min(8),
                slot: 1 << 20,
            }
        } else {
            Pipeline {
                threads: cores.min(16),
                slot: 4 << 20,
            }
        }
    }
}

/// The fraction of `map`'s pages that are in the page cache (sampled with mincore).
pub fn cached_fraction(map: &[u8]) -> f64 {
    if map.is_empty() {
        return 1.0;
    }
    let pages = map.len().div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes starting at a page boundary (mmap
    // returns page-aligned addresses); `vec` has one byte per page, as mincore requires.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

/// Splits jobs into pieces of at most `slot` bytes.
fn pieces(jobs: &[CopyJob], slot: u64) -> Vec<CopyJob> {
    let mut out = Vec::new();
    for j in jobs {
        let mut done = 0;
        while done < j.len {
            let n = slot.min(j.len - done);
            out.push(CopyJob {
                file_off: j.file_off + done,
                len: n,
                dst: j.dst + done,
            });
            done += n;
        }
    }
    out
}

/// Moves `jobs` from the file (`map` is its mapping) to the device. With [`ReadMode::Direct`],
/// job offsets must be multiples of 4096 (reads are rounded up to 4096 bytes and may end short
/// at the end of the file). Returns when every byte is on the device.
pub fn load(
    ctx: &Arc<CudaContext>,
    path: &Path,
    map: &[u8],
    jobs: &[CopyJob],
    mode: ReadMode,
    p: Pipeline,
) -> Result<()> {
    let work = pieces(jobs, p.slot as u64);
    if work.is_empty() {
        return Ok(());
    }
    let threads = p.threads.clamp(1, work.len());
    let slot = p.slot.next_multiple_of(ALIGN as usize);
    let arena_len = threads * 2 * slot;
    let layout =
        std::alloc::Layout::from_size_align(arena_len, ALIGN as usize).map_err(|e| Error::Gpu(e.to_string()))?;
    let arena = StagingArena::new(layout)?;
    ctx.bind_to_thread().map_err(gpu_err)?;
    // SAFETY: the arena stays allocated until after `pinned` drops (declared after it).
    let pinned = unsafe { Registered::new(arena.ptr, arena_len, false)? };
    let direct = match mode {
        ReadMode::Direct => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(|e| Error::io(path, e))?,
        ),
        ReadMode::Mmap => None,
    };
    let next = AtomicUsize::new(0);
    let result: Result<()> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|tid| {
                let (ctx, work, next, direct, pinned) = (ctx.clone(), &work, &next, direct.as_ref(), &pinned);
                s.spawn(move || -> Result<()> {
                    ctx.bind_to_thread().map_err(gpu_err)?;
                    let stream = RawStream::new()?;
                    let mut inflight: [Option<super::driver::RawEvent>; 2] = [None, None];
                    let mut k = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = work.get(i) else { break };
                        if let Some(ev) = inflight[k].take() {
                            ev.wait()?;
                        }
                        // SAFETY: slot (tid, k) is this thread's alone and lies inside the
                        // registered arena; the event wait above means no copy reads it now.
                        let slot_ptr = unsafe { pinned.ptr().add((tid * 2 + k) * slot) };
                        let len = job.len as usize;
                        match direct {
                            None => {
                                let src = &map[job.file_off as usize..job.file_off as usize + len];
                                // SAFETY: `len <= slot`; source and slot do not overlap.
                                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), slot_ptr, len) };
                            }
                            Some(f) => {
                                let want = len.next_multiple_of(ALIGN as usize);
                                // SAFETY: reads at most `want <= slot` bytes into the slot.
                                let got = unsafe {
                                    libc::pread(f.as_raw_fd(), slot_ptr as *mut _, want, job.file_off as i64)
                                };
                                if got < len as isize {
                                    return Err(Error::io(path, std::io::Error::last_os_error()));
                                }
                            }
                        }
                        // SAFETY: the slot stays untouched until the event recorded next fires
                        // (waited for above before reuse, or at the stream sync below).
                        unsafe { stream.copy_h2d(job.dst, slot_ptr, len)? };
                        inflight[k] = Some(stream.record()?);
                        k ^= 1;
                    }
                    stream.synchronize()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Gpu("a copy thread panicked".into())))
            })
            .collect()
    });
    drop(pinned);
    drop(arena);
    result
}

/// Page-aligned host memory for staging slots.
struct StagingArena {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl StagingArena {
    fn new(layout: std::alloc::Layout) -> Result<StagingArena> {
        // SAFETY: the layout has a non-zero size (at least one slot) and a valid alignment.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(Error::Gpu(format!(
                "cannot allocate {} bytes of staging memory",
                layout.size()
            )));
        }
        Ok(StagingArena { ptr, layout })
    }
}

impl Drop for StagingArena {
    fn drop(&mut self) {
        // SAFETY: frees the allocation made in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}
