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
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// `pread` out of the page cache into the staging slots (warm, large files). Copying out of
    /// a fresh mapping instead would take a page fault per 4 KiB, which costs about as much as
    /// the disk on some of the lent machines.
    Buffered,
    /// Pin the read-only file mapping itself in 16 MiB pieces and copy each piece as soon as it
    /// is pinned (warm, small files: no staging memory to set up).
    PinMapping,
    /// `O_DIRECT` reads, several in flight (cold files: the only way to reach the disk's rate).
    Direct,
}

/// One contiguous piece to move: `len` bytes from file offset `file_off` to device address `dst`.
#[derive(Debug, Clone, Copy)]
pub struct CopyJob {
    /// Index of the source file in the `sources` given to [`load`].
    pub src: usize,
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
    /// Threads and slot size for moving `bytes` with `mode`, from sweeps on the lent H100
    /// (scripts/gpu-sweep.sh, BENCHMARKS.md): small loads want little staging (registering it
    /// costs more than moving the data); large warm loads peak at 8-12 threads with 2 MiB slots
    /// (more threads or larger slots were slower); large direct reads wait on the disk, not on a
    /// core, and do best with 32 reads of 8 MiB in flight.
    pub fn for_load(bytes: u64, mode: ReadMode) -> Pipeline {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let large = bytes > 256 << 20;
        match mode {
            // One thread pinning 16 MiB pieces of the mapping (the probe's 4.8 ms recipe).
            ReadMode::PinMapping => Pipeline {
                threads: 1,
                slot: 16 << 20,
            },
            ReadMode::Direct if large => Pipeline {
                threads: 32,
                slot: 8 << 20,
            },
            _ if large => Pipeline {
                threads: cores.min(12),
                slot: 2 << 20,
            },
            _ => Pipeline {
                threads: cores.min(8),
                slot: 1 << 20,
            },
        }
    }
}

/// The fraction of a file's bytes in `ranges` that are in the page cache, from up to 256
/// one-byte `preadv2(RWF_NOWAIT)` probes spread over them (a read that would go to the disk
/// fails with EAGAIN instead). mincore is no use here: for files the caller cannot write, it
/// reports only the pages mapped in the caller.
pub fn cached_fraction(path: &Path, ranges: &[(u64, u64)]) -> f64 {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let Ok(file) = std::fs::File::open(path) else {
        return 0.0;
    };
    if total == 0 {
        return 1.0;
    }
    let samples = 256u64.min(total.div_ceil(ALIGN));
    let mut hits = 0;
    for i in 0..samples {
        // The i-th sample's position among all the ranges' bytes.
        let mut at = total / samples * i;
        let mut off = 0;
        for &(start, len) in ranges {
            if at < len {
                off = start + at;
                break;
            }
            at -= len;
        }
        let mut byte = [0u8; 1];
        let iov = libc::iovec {
            iov_base: byte.as_mut_ptr() as *mut _,
            iov_len: 1,
        };
        // SAFETY: one iovec of one writable byte; a valid descriptor.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off as i64, libc::RWF_NOWAIT) };
        if n == 1 {
            hits += 1;
        }
    }
    hits as f64 / samples as f64
}

/// Splits jobs into pieces of at most `slot` bytes.
fn pieces(jobs: &[CopyJob], slot: u64) -> Vec<CopyJob> {
    let mut out = Vec::new();
    for j in jobs {
        let mut done = 0;
        while done < j.len {
            let n = slot.min(j.len - done);
            out.push(CopyJob {
                src: j.src,
                file_off: j.file_off + done,
                len: n,
                dst: j.dst + done,
            });
            done += n;
        }
    }
    out
}

/// Moves `jobs` from the file (`map` is its mapping) to the device. With [`ReadMode::Direct`]
/// and [`ReadMode::PinMapping`], job offsets and lengths must be multiples of 4096 (direct reads
/// may end short at the end of the file). Returns when every byte is on the device.
pub fn load(
    ctx: &Arc<CudaContext>,
    sources: &[(&Path, &[u8])],
    jobs: &[CopyJob],
    mode: ReadMode,
    p: Pipeline,
) -> Result<()> {
    if mode == ReadMode::PinMapping {
        return load_pinning_mapping(ctx, sources, jobs, p);
    }
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
    let flags = if mode == ReadMode::Direct { libc::O_DIRECT } else { 0 };
    let files = sources
        .iter()
        .map(|(path, _)| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| Error::io(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let direct = mode == ReadMode::Direct;
    let next = AtomicUsize::new(0);
    let result: Result<()> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|tid| {
                let (ctx, work, next, files, pinned) = (ctx.clone(), &work, &next, &files, &pinned);
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
                        let (file, path) = (&files[job.src], sources[job.src].0);
                        let want = if direct {
                            len.next_multiple_of(ALIGN as usize)
                        } else {
                            len
                        };
                        let mut got = 0usize;
                        while got < len {
                            // SAFETY: reads at most `want - got` bytes into the slot past `got`;
                            // `want <= slot`.
                            let n = unsafe {
                                libc::pread(
                                    file.as_raw_fd(),
                                    slot_ptr.add(got) as *mut _,
                                    want - got,
                                    (job.file_off as usize + got) as i64,
                                )
                            };
                            if n < 0 {
                                return Err(Error::io(path, std::io::Error::last_os_error()));
                            }
                            if n == 0 {
                                let eof = std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "file shorter than its index says",
                                );
                                return Err(Error::io(path, eof));
                            }
                            got += n as usize;
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
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Gpu("a copy thread panicked".into())))
        })
    });
    drop(pinned);
    drop(arena);
    result
}

/// Pins the file mapping piece by piece (read-only registration) and copies each piece straight
/// from it: `p.threads` threads take `p.slot`-byte pieces in turn, each pinning its next piece
/// while its last one copies on its own stream.
fn load_pinning_mapping(
    ctx: &Arc<CudaContext>,
    sources: &[(&Path, &[u8])],
    jobs: &[CopyJob],
    p: Pipeline,
) -> Result<()> {
    let work = pieces(jobs, (p.slot as u64).next_multiple_of(ALIGN));
    if let Some(j) = work.iter().find(|j| j.file_off % ALIGN != 0 || j.len % ALIGN != 0) {
        return Err(Error::Gpu(format!(
            "pinning the mapping needs 4096-aligned pieces (offset {}, length {})",
            j.file_off, j.len
        )));
    }
    let next = AtomicUsize::new(0);
    let threads = p.threads.clamp(1, work.len().max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (ctx, work, next) = (ctx.clone(), &work, &next);
                s.spawn(move || -> Result<()> {
                    ctx.bind_to_thread().map_err(gpu_err)?;
                    let stream = RawStream::new()?;
                    let mut pinned = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(j) = work.get(i) else { break };
                        let src = &sources[j.src].1[j.file_off as usize..(j.file_off + j.len) as usize];
                        // SAFETY: `src` is part of the read-only mapping, which outlives this
                        // function; the registration is dropped (unpinned) after the stream has
                        // finished every copy (synchronised below).
                        let r = unsafe { Registered::new(src.as_ptr(), src.len(), true)? };
                        // SAFETY: the source stays mapped and pinned until after the
                        // synchronisation below.
                        unsafe { stream.copy_h2d(j.dst, src.as_ptr(), src.len())? };
                        pinned.push(r);
                    }
                    stream.synchronize()?;
                    drop(pinned);
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Gpu("a pinning thread panicked".into())))
        })
    })
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
