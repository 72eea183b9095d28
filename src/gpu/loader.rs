//! File bytes to device memory: several threads copy (from the page-cache mapping, or with
//! O_DIRECT reads when the file is not cached) into a small ring of registered staging slots, and
//! each slot's host-to-device copy runs asynchronously on its thread's stream while the thread
//! fills the next slot. See ../shared/gpu-limits/README.md for the measurements behind this.

use crate::timing::ms;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use cudarc::driver::CudaContext;

use super::Gpu;
use super::driver::{DeviceAccess, RawStream, Registered, gpu_err};
use crate::error::{Error, GpuError, Result};
use crate::format::ALIGN;
use crate::mmap::ReadOnlyMap;

/// How file bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// `pread` out of the page cache into the staging slots (warm, large files). Copying out of
    /// a fresh mapping instead would take a page fault per 4 KiB, which can cost as much as
    /// reading the disk.
    Buffered,
    /// Pin the read-only file mapping itself in 16 MiB pieces and copy each piece as soon as it
    /// is pinned (warm, small files: no staging memory to set up).
    PinMapping,
    /// `O_DIRECT` reads, several in flight (cold files: the only way to reach the disk's rate).
    Direct,
}

/// A file to read from: its path, and for [`ReadMode::PinMapping`] its mapping.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its read-only mapping (needed only to pin the mapping).
    pub map: Option<&'a Arc<ReadOnlyMap>>,
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

/// Where a [`load`]'s time went, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LoadTimes {
    /// Allocating and pinning staging memory (0 when the device's kept staging was big enough),
    /// or pinning the mapping's pieces, summed over threads.
    pub setup_ms: f64,
    /// From the first read to the last byte on the device.
    pub copy_ms: f64,
    /// Unpinning and freeing before returning (0 for pinned mappings, which the caller lets
    /// go later: see [`PinnedMapping`]).
    pub release_ms: f64,
}

/// Staging memory kept by a [`Gpu`] between loads, so that a process allocates and pins it once:
/// pinning costs more than moving a small file (../shared/gpu-limits). Loads that want more
/// than [`STAGING_KEEP`] bytes use staging of their own and free it after.
pub(crate) struct Staging {
    // Declared first: unpinned before the arena is freed.
    pinned: Registered,
    _arena: StagingArena,
}

/// The most staging memory a [`Gpu`] keeps pinned between loads (16 threads x 2 slots x 4 MiB
/// fit).
pub const STAGING_KEEP: usize = 128 << 20;

impl Staging {
    /// Bytes of staging.
    pub(crate) fn len(&self) -> usize {
        self.pinned.len()
    }

    /// The staging memory, for a caller that fills it and copies it to the device itself.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the arena is a live allocation of at least `len()` bytes that this value owns
        // (registered from its start), and `&mut self` makes this the only view of it. Loads
        // hand staging back only after their copies are done, so no copy reads it now.
        unsafe { std::slice::from_raw_parts_mut(self.pinned.ptr(), self.len()) }
    }

    fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Staging> {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN as usize)
            .map_err(|e| Error::Gpu(GpuError::Internal(e.to_string())))?;
        let arena = StagingArena::new(layout)?;
        ctx.bind_to_thread().map_err(gpu_err)?;
        // SAFETY: the arena stays allocated until after `pinned` drops (field order).
        let pinned = unsafe { Registered::new(arena.ptr, len, DeviceAccess::ReadWrite)? };
        Ok(Staging { pinned, _arena: arena })
    }
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
    /// Threads and slot size for moving `bytes` with `mode` (chosen by `scripts/probes/gpu-sweep.sh`):
    /// a small warm load wants little staging, since pinning it costs more than the copy; a
    /// large warm load is bound by `pread` out of the page cache, so it wants many threads with
    /// slots large enough to keep each copy engine busy; direct reads wait on the disk, where
    /// many small reads in flight beat a few large ones and need little pinned staging.
    pub fn for_load(bytes: u64, mode: ReadMode) -> Pipeline {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let large = bytes > 256 << 20;
        match mode {
            // One thread pinning 16 MiB pieces of the mapping and copying straight from them
            // (docs/GPU.md), as the gpu-limits probe moves a mapped file fastest.
            ReadMode::PinMapping => Pipeline {
                threads: 1,
                slot: 16 << 20,
            },
            ReadMode::Direct => Pipeline {
                threads: if large { 16 } else { cores.min(8) },
                slot: 512 << 10,
            },
            _ if large => Pipeline {
                threads: cores.min(12),
                slot: 4 << 20,
            },
            _ => Pipeline {
                threads: cores.min(8),
                slot: 2 << 20,
            },
        }
    }

    /// Bytes of staging memory this pipeline uses (two slots per thread).
    pub fn staging_len(&self) -> usize {
        self.threads.max(1) * 2 * self.slot.next_multiple_of(ALIGN as usize)
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

/// Splits jobs into pieces of at most `slot` bytes, each with the index of its job.
fn pieces(jobs: &[CopyJob], slot: u64) -> Vec<(usize, CopyJob)> {
    let mut out = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let mut done = 0;
        while done < j.len {
            let n = slot.min(j.len - done);
            let piece = CopyJob {
                src: j.src,
                file_off: j.file_off + done,
                len: n,
                dst: j.dst + done,
            };
            out.push((i, piece));
            done += n;
        }
    }
    out
}

/// Counts the bytes of each job still to arrive, and tells when a job's last piece is on the
/// device: a caller can start on a job (check it, say) while later ones still copy.
struct JobsArriving<'a> {
    left: Vec<AtomicU64>,
    on_job_done: &'a (dyn Fn(usize) + Sync),
}

impl<'a> JobsArriving<'a> {
    fn new(jobs: &[CopyJob], on_job_done: &'a (dyn Fn(usize) + Sync)) -> JobsArriving<'a> {
        let left = jobs.iter().map(|j| AtomicU64::new(j.len)).collect();
        JobsArriving { left, on_job_done }
    }

    /// Records that a piece of job `job` of `len` bytes is on the device.
    fn arrived(&self, job: usize, len: u64) {
        if self.left[job].fetch_sub(len, Ordering::AcqRel) == len {
            (self.on_job_done)(job);
        }
    }
}

/// Moves `jobs` from the `sources` files to the device of `gpu`. With
/// [`ReadMode::Direct`] and [`ReadMode::PinMapping`], job offsets and lengths must be multiples
/// of 4096 (direct reads may end short at the end of the file). Returns when every byte is on
/// the device. With [`ReadMode::PinMapping`], the pinned pieces of the mapping come back with
/// the times: they stay pinned until that value drops. `on_job_done(i)` is called, from a copy
/// thread, once every byte of `jobs[i]` is on the device (for [`ReadMode::PinMapping`], when
/// all are); jobs of zero bytes are never reported. `on_piece_read(i, file_off, bytes)` is
/// called, from a copy thread, with each piece of `jobs[i]` read into the staging (`bytes`, from
/// file offset `file_off` on), once its copy to the device is queued: a caller that needs to
/// look at every byte can do so while they are in cache (not with [`ReadMode::PinMapping`],
/// which reads nothing itself).
pub fn load(
    gpu: &Gpu,
    sources: &[Source],
    jobs: &[CopyJob],
    mode: ReadMode,
    p: Pipeline,
    on_job_done: &(dyn Fn(usize) + Sync),
    on_piece_read: &(dyn Fn(usize, u64, &[u8]) + Sync),
) -> Result<(LoadTimes, Option<PinnedMapping>)> {
    let ctx = &gpu.ctx;
    if mode == ReadMode::PinMapping {
        let (times, pins) = load_pinning_mapping(ctx, sources, jobs, p)?;
        (0..jobs.len()).filter(|&i| jobs[i].len > 0).for_each(on_job_done);
        return Ok((times, Some(pins)));
    }
    let mut times = LoadTimes::default();
    let work = pieces(jobs, p.slot as u64);
    let arriving = JobsArriving::new(jobs, on_job_done);
    if work.is_empty() {
        return Ok((times, None));
    }
    let threads = p.threads.clamp(1, work.len());
    let slot = p.slot.next_multiple_of(ALIGN as usize);
    let arena_len = p.staging_len();
    let t = Instant::now();
    // The device's kept staging when it is big enough; otherwise staging of this load's own.
    let kept = gpu.kept_staging().take();
    let staging = match kept {
        Some(s) if s.len() >= arena_len => s,
        _ => Staging::new(ctx, arena_len)?,
    };
    times.setup_ms = ms(t);
    let t = Instant::now();
    let pinned = &staging.pinned;
    let flags = if mode == ReadMode::Direct { libc::O_DIRECT } else { 0 };
    let files = sources
        .iter()
        .map(|Source { path, .. }| {
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
                let (ctx, work, next, files, arriving) = (ctx.clone(), &work, &next, &files, &arriving);
                s.spawn(move || -> Result<()> {
                    ctx.bind_to_thread().map_err(gpu_err)?;
                    let stream = RawStream::new()?;
                    // Each slot's last copy: its event, and the piece's job and length.
                    let mut inflight: [Option<(super::driver::RawEvent, usize, u64)>; 2] = [None, None];
                    let mut k = 0;
                    // The stream is synchronised however the loop ends, so that no copy still
                    // reads the staging when it is reused or freed.
                    let copied = (|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(owner, ref job)) = work.get(i) else {
                                break Ok(());
                            };
                            if let Some((ev, done_job, done_len)) = inflight[k].take() {
                                ev.wait()?;
                                arriving.arrived(done_job, done_len);
                            }
                            // SAFETY: slot (tid, k) is this thread's alone and lies inside the
                            // registered arena; the event wait above means no copy reads it now.
                            let slot_ptr = unsafe { pinned.ptr().add((tid * 2 + k) * slot) };
                            let len = job.len as usize;
                            let (file, path) = (&files[job.src], sources[job.src].path);
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
                            inflight[k] = Some((stream.record()?, owner, job.len));
                            // SAFETY: the slot holds the `len` bytes just read; nothing writes it
                            // before this thread reuses it, after this call (the queued copy only
                            // reads it).
                            let read = unsafe { std::slice::from_raw_parts(slot_ptr, len) };
                            on_piece_read(owner, job.file_off, read);
                            k ^= 1;
                        }
                    })();
                    let synced = stream.synchronize();
                    copied.and(synced)?;
                    for (_, job, len) in inflight.into_iter().flatten() {
                        arriving.arrived(job, len);
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Gpu(GpuError::Internal("a copy thread panicked".into()))))
        })
    });
    times.copy_ms = ms(t);
    let t = Instant::now();
    if staging.len() <= STAGING_KEEP {
        let mut kept = gpu.kept_staging();
        if kept.as_ref().is_none_or(|s| s.len() < staging.len()) {
            *kept = Some(staging);
        }
    } else {
        drop(staging);
    }
    times.release_ms = ms(t);
    result.map(|()| (times, None))
}

/// Pins the file mapping piece by piece (read-only registration) and copies each piece straight
/// from it: `p.threads` threads take `p.slot`-byte pieces in turn, each pinning its next piece
/// while its last one copies on its own stream. The pieces stay pinned in the returned value.
fn load_pinning_mapping(
    ctx: &Arc<CudaContext>,
    sources: &[Source],
    jobs: &[CopyJob],
    p: Pipeline,
) -> Result<(LoadTimes, PinnedMapping)> {
    let work: Vec<CopyJob> = pieces(jobs, (p.slot as u64).next_multiple_of(ALIGN))
        .into_iter()
        .map(|(_, piece)| piece)
        .collect();
    if let Some(j) = work.iter().find(|j| j.file_off % ALIGN != 0 || j.len % ALIGN != 0) {
        return Err(Error::Gpu(GpuError::Internal(format!(
            "pinning the mapping needs 4096-aligned pieces (offset {}, length {})",
            j.file_off, j.len
        ))));
    }
    let maps = sources
        .iter()
        .map(|s| {
            s.map.cloned().ok_or_else(|| {
                Error::Gpu(GpuError::Internal(format!(
                    "{}: pinning the mapping needs the file mapped",
                    s.path.display()
                )))
            })
        })
        .collect::<Result<Vec<Arc<ReadOnlyMap>>>>()?;
    if let Some(j) = work.iter().find(|j| j.file_off + j.len > maps[j.src].len() as u64) {
        return Err(Error::Gpu(GpuError::Internal(format!(
            "{}: piece at {} of {} bytes is past the mapping's end",
            sources[j.src].path.display(),
            j.file_off,
            j.len
        ))));
    }
    let next = AtomicUsize::new(0);
    let threads = p.threads.clamp(1, work.len().max(1));
    let t = Instant::now();
    // Each thread's pins and the time it spent pinning.
    let per_thread: Result<Vec<(Vec<Registered>, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (ctx, work, next, maps) = (ctx.clone(), &work, &next, &maps);
                s.spawn(move || -> Result<(Vec<Registered>, f64)> {
                    ctx.bind_to_thread().map_err(gpu_err)?;
                    let stream = RawStream::new()?;
                    let mut pinned = Vec::new();
                    let mut pin_ms = 0.0;
                    let copied = (|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(j) = work.get(i) else { break Ok(()) };
                            let src = &maps[j.src].bytes()[j.file_off as usize..(j.file_off + j.len) as usize];
                            let tp = Instant::now();
                            // SAFETY: `src` is part of a read-only mapping that is kept alive
                            // (an `Arc` held beside the registrations) until after they drop.
                            let r = unsafe { Registered::new(src.as_ptr(), src.len(), DeviceAccess::ReadOnly)? };
                            pin_ms += ms(tp);
                            // SAFETY: the source stays mapped and pinned until after the
                            // synchronisation below.
                            unsafe { stream.copy_h2d(j.dst, src.as_ptr(), src.len())? };
                            pinned.push(r);
                        }
                    })();
                    // However the loop ended, no copy may still read a piece once it is unpinned.
                    let synced = stream.synchronize();
                    copied.and(synced).map(|()| (pinned, pin_ms))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Gpu(GpuError::Internal("a pinning thread panicked".into()))))
            })
            .collect()
    });
    let copy_ms = ms(t);
    let per_thread = per_thread?;
    let setup_ms = per_thread.iter().map(|(_, ms)| ms).sum();
    let pins: Vec<Registered> = per_thread.into_iter().flat_map(|(p, _)| p).collect();
    let times = LoadTimes {
        setup_ms,
        copy_ms,
        release_ms: 0.0,
    };
    Ok((
        times,
        PinnedMapping {
            ctx: ctx.clone(),
            pins,
            _maps: maps,
        },
    ))
}

/// Pieces of file mappings left pinned by a load that pinned the mapping: unpinning costs about
/// as much as pinning, so the caller lets them go when it likes (a page store, when it drops;
/// a process that ends, never: the driver unpins at exit).
pub struct PinnedMapping {
    ctx: Arc<CudaContext>,
    // Declared before the mappings: each pin drops before the mapping it pins.
    pins: Vec<Registered>,
    _maps: Vec<Arc<ReadOnlyMap>>,
}

impl Drop for PinnedMapping {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        self.pins.clear();
    }
}

/// Page-aligned host memory for staging slots.
struct StagingArena {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the arena is a plain heap allocation owned by this value; any thread may use or free it.
unsafe impl Send for StagingArena {}

impl StagingArena {
    fn new(layout: std::alloc::Layout) -> Result<StagingArena> {
        // SAFETY: the layout has a non-zero size (at least one slot) and a valid alignment.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(Error::Gpu(GpuError::Memory(format!(
                "cannot allocate {} bytes of staging memory",
                layout.size()
            ))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn job(src: usize, len: u64) -> CopyJob {
        CopyJob {
            src,
            file_off: 0,
            len,
            dst: 0,
        }
    }

    #[test]
    fn jobs_are_cut_into_slot_sized_pieces_that_name_their_job() {
        let cut = pieces(&[job(0, 10), job(1, 0), job(2, 4)], 4);
        let owners_and_lens: Vec<(usize, u64, u64)> = cut.iter().map(|(i, p)| (*i, p.file_off, p.len)).collect();
        assert_eq!(owners_and_lens, [(0, 0, 4), (0, 4, 4), (0, 8, 2), (2, 0, 4)]);
    }

    #[test]
    fn a_job_is_reported_once_when_its_last_piece_arrives_in_any_order() {
        let jobs = [job(0, 10), job(1, 0), job(2, 4)];
        let reported = Mutex::new(Vec::new());
        let tell = |j: usize| reported.lock().unwrap().push(j);
        let arriving = JobsArriving::new(&jobs, &tell);
        let mut cut = pieces(&jobs, 4);
        cut.reverse();
        for (i, (job, piece)) in cut.iter().enumerate() {
            // Job 0's pieces arrive last-first: it is reported only with the third.
            let before = reported.lock().unwrap().clone();
            arriving.arrived(*job, piece.len);
            let after = reported.lock().unwrap().clone();
            match i {
                0 => assert_eq!(after, [2]),
                1 | 2 => assert_eq!(after, before),
                _ => assert_eq!(after, [2, 0]),
            }
        }
    }
}
