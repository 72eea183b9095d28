//! The device page store: pages resident in GPU memory, with their metadata, residency and
//! epochs, handed out through [`PageHandle`]s (device pointer and length) so other code can use
//! a page without copying it.
//!
//! Pages loaded from a checkpoint share one pooled allocation laid out as in the file (page
//! offset minus data offset), so many small pages cost one allocation and the file's bytes move
//! without re-packing; pages created or resized by deltas get allocations of their own.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mmsb::format::checkpoint::Checkpoint;
//! use mmsb::gpu::{Gpu, KernelCompile, store::{DevicePageStore, LoadOptions}};
//!
//! let gpu = Arc::new(Gpu::open(0, KernelCompile::WhenNeeded)?);
//! let ckpt = Checkpoint::open("model.ckpt".as_ref())?;
//! let (store, _stats) = DevicePageStore::load(&gpu, &ckpt, &|_| true, &LoadOptions::default())?;
//! let page = store.page(0).expect("page 0 is resident");
//! println!("page 0: {} bytes at device address {:#x}", page.len(), page.device_ptr());
//! # Ok::<(), mmsb::Error>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::Gpu;
use super::driver::{DeviceBuffer, MemoryKind, copy_d2h, copy_h2d_sync, memset, prefetch};
use super::loader::{CopyJob, Pipeline, ReadMode, Source};
use crate::error::{Error, Result};
use crate::format::checkpoint::{Checkpoint, PageEntry};
use crate::format::{align_up, crc32c_combine_with, crc32c_shift_factor};
use crate::page::{PageMeta, StateHash};

/// Where a page's bytes are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageResidency {
    /// Dedicated device memory.
    Device,
    /// Unified memory.
    Unified,
    /// Pinned host memory mapped into the device's address space.
    HostMapped,
    /// Copied back to host memory and released from the device.
    Evicted,
}

/// Options for loading a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// What memory the pool is.
    pub memory: MemoryKind,
    /// How file bytes are read (`None`: by whether the file is in the page cache).
    pub read_mode: Option<ReadMode>,
    /// Staging pipeline (`None`: chosen by size).
    pub pipeline: Option<Pipeline>,
    /// Fill the pool with this byte before loading (tests: catches bytes never written).
    pub poison: Option<u8>,
    /// Counts the page bytes that have reached the device, for a progress bar.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            memory: MemoryKind::Device,
            read_mode: None,
            pipeline: None,
            poison: None,
            progress: None,
        }
    }
}

/// What a load did and how long each part took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadStats {
    /// Pages loaded.
    pub pages: u64,
    /// Bytes moved to the device (page bytes plus padding between them).
    pub bytes: u64,
    /// Page bytes.
    pub page_bytes: u64,
    /// How the file was read.
    pub read_mode: Option<ReadMode>,
    /// Fraction of the file in the page cache before the load.
    pub cached_fraction: f64,
    /// Device allocation (and poisoning) time, ms.
    pub alloc_ms: f64,
    /// File read and host-to-device copy time (pipelined together), ms.
    pub read_h2d_ms: f64,
    /// Of `read_h2d_ms`: probing how much of the file is in the page cache, ms.
    pub probe_ms: f64,
    /// Of `read_h2d_ms`: the loader's own phases (staging or pinning, copying, releasing).
    pub phases: super::loader::LoadTimes,
}

pub(crate) struct DevicePage {
    pub(crate) epoch: u64,
    pub(crate) meta: PageMeta,
    pub(crate) ptr: u64,
    pub(crate) len: u64,
    pub(crate) residency: PageResidency,
    /// The page's own allocation (pages created or resized by deltas, or restored).
    pub(crate) own: Option<DeviceBuffer>,
    /// Host copy while evicted.
    pub(crate) host: Option<Vec<u8>>,
    /// CRC32C of the bytes when known (checked at load, or computed since the last write).
    pub(crate) crc: Option<u32>,
}

/// A resident page's device address and length, valid while the store is borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PageHandle<'a> {
    ptr: u64,
    len: u64,
    ordinal: usize,
    _store: std::marker::PhantomData<&'a DevicePageStore>,
}

impl PageHandle<'_> {
    /// The device address of the page's first byte (a `CUdeviceptr`).
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }
    /// The page's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True for an empty page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The CUDA device ordinal that holds the page.
    pub fn device(&self) -> usize {
        self.ordinal
    }
}

/// Whether [`DevicePageStore::checksums`] may use the CRCs it already knows (pages loaded and
/// not written since) or must read every page again (to check the bytes on the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownCrcs {
    /// Use a known CRC; compute only the others.
    Reuse,
    /// Compute every page's CRC from the bytes on the device.
    Recompute,
}

/// Pages on one device.
pub struct DevicePageStore {
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) memory: MemoryKind,
    pub(crate) pool: Option<DeviceBuffer>,
    pub(crate) pages: BTreeMap<u64, DevicePage>,
    /// Buffers of pages deleted or resized, freed when the store drops (after queued work).
    pub(crate) retired: Vec<DeviceBuffer>,
    /// The state hash of the checkpoint the store was loaded from.
    pub(crate) base: StateHash,
    /// Whether every page of the checkpoint was loaded.
    pub(crate) complete: bool,
    /// The file mapping's pinned pieces, when the load pinned the mapping (at most
    /// `SMALL_LOAD` bytes): unpinned when the store drops, off the load's path.
    pub(crate) pinned_source: Option<super::loader::PinnedMapping>,
}

const CRC_CHUNK: u64 = 32 << 10;
/// Loads up to this size, when cached, pin the file mapping instead of setting up staging.
const SMALL_LOAD: u64 = 256 << 20;

impl DevicePageStore {
    /// Loads the pages of `ckpt` that `select` accepts into device memory, reading no other
    /// page's bytes.
    pub fn load(
        gpu: &Arc<Gpu>,
        ckpt: &Checkpoint,
        select: &(dyn Fn(&PageEntry) -> bool + Sync),
        opts: &LoadOptions,
    ) -> Result<(DevicePageStore, LoadStats)> {
        let head = ckpt.head();
        let chosen: Vec<&PageEntry> = head.pages.iter().filter(|p| select(p)).collect();
        let complete = chosen.len() == head.pages.len();
        // Device layout: the whole data region as in the file when every page is loaded (one
        // copy stream, no re-packing); otherwise the chosen pages packed at 4096-aligned offsets.
        let mut jobs = Vec::new();
        let mut placed = Vec::with_capacity(chosen.len());
        let pool_len = if complete {
            if head.file_len > head.data_offset {
                jobs.push(CopyJob {
                    src: 0,
                    file_off: head.data_offset,
                    len: head.file_len - head.data_offset,
                    dst: 0,
                });
            }
            for p in &chosen {
                placed.push((*p, p.offset - head.data_offset));
            }
            head.file_len - head.data_offset
        } else {
            let mut at = 0u64;
            for p in &chosen {
                let span = align_up(p.len).expect("checked against the file length");
                if span > 0 {
                    jobs.push(CopyJob {
                        src: 0,
                        file_off: p.offset,
                        len: span,
                        dst: at,
                    });
                }
                placed.push((*p, at));
                at += span;
            }
            at
        };
        let mut stats = LoadStats {
            pages: chosen.len() as u64,
            bytes: pool_len,
            page_bytes: chosen.iter().map(|p| p.len).sum(),
            ..Default::default()
        };
        let t = Instant::now();
        let mut pool = DeviceBuffer::alloc(&gpu.ctx, pool_len as usize, opts.memory)?;
        if let Some(b) = opts.poison {
            match pool.host_slice_mut() {
                Some(h) => h.fill(b),
                None => {
                    memset(&gpu.stream, pool.ptr(), b, pool_len as usize)?;
                    gpu.synchronize()?;
                }
            }
        }
        stats.alloc_ms = crate::timing::ms(t);
        let t = Instant::now();
        let bytes = ckpt.bytes();
        let mut pinned_source = None;
        if let Some(host) = pool.host_slice_mut() {
            use rayon::prelude::*;
            for j in &jobs {
                let dst = &mut host[j.dst as usize..(j.dst + j.len) as usize];
                let src = &bytes[j.file_off as usize..(j.file_off + j.len) as usize];
                dst.par_chunks_mut(4 << 20)
                    .zip(src.par_chunks(4 << 20))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            }
        } else {
            let ranges: Vec<(u64, u64)> = jobs.iter().map(|j| (j.file_off, j.len)).collect();
            let tp = Instant::now();
            let cached = super::loader::cached_fraction(ckpt.path(), &ranges);
            stats.probe_ms = crate::timing::ms(tp);
            // Pinning fresh staging costs more than moving a small file, so a small warm file goes
            // through staging the device already keeps pinned, else through its pinned mapping;
            // a cold file, small or large, through O_DIRECT, which skips the page cache's copy
            // (scripts/probes/gpu-sweep.sh compares the modes).
            let small_staging = Pipeline::for_load(pool_len, ReadMode::Buffered).staging_len();
            let mode = opts.read_mode.unwrap_or(match (cached > 0.9, pool_len <= SMALL_LOAD) {
                (true, true) if gpu.has_staging(small_staging) => ReadMode::Buffered,
                (true, true) => ReadMode::PinMapping,
                (true, false) => ReadMode::Buffered,
                (false, _) => ReadMode::Direct,
            });
            stats.cached_fraction = cached;
            stats.read_mode = Some(mode);
            let jobs: Vec<CopyJob> = jobs
                .iter()
                .map(|j| CopyJob {
                    dst: pool.ptr() + j.dst,
                    ..*j
                })
                .collect();
            let p = opts.pipeline.unwrap_or_else(|| Pipeline::for_load(pool_len, mode));
            let source = Source {
                path: ckpt.path(),
                map: Some(ckpt.mapping()),
            };
            let landed = |i: usize| {
                if let Some(c) = &opts.progress {
                    c.fetch_add(jobs[i].len, std::sync::atomic::Ordering::Relaxed);
                }
            };
            let (phases, pins) = super::loader::load(gpu, &[source], &jobs, mode, p, &landed, &|_, _, _| {})?;
            stats.phases = phases;
            pinned_source = pins;
            if opts.memory == MemoryKind::Unified {
                prefetch(&gpu.ctx, &gpu.stream, pool.ptr(), pool_len as usize, false)?;
                gpu.synchronize()?;
            }
        }
        stats.read_h2d_ms = crate::timing::ms(t);
        let residency = match opts.memory {
            MemoryKind::Device => PageResidency::Device,
            MemoryKind::Unified => PageResidency::Unified,
            MemoryKind::HostMapped => PageResidency::HostMapped,
        };
        let pages = placed
            .into_iter()
            .map(|(p, at)| {
                (
                    p.id,
                    DevicePage {
                        epoch: p.epoch,
                        meta: p.meta.clone(),
                        ptr: pool.ptr() + at,
                        len: p.len,
                        residency,
                        own: None,
                        host: None,
                        crc: None,
                    },
                )
            })
            .collect();
        Ok((
            DevicePageStore {
                gpu: gpu.clone(),
                memory: opts.memory,
                pool: Some(pool),
                pages,
                retired: Vec::new(),
                base: ckpt.state_hash(),
                complete,
                pinned_source,
            },
            stats,
        ))
    }

    /// A store over device memory the caller owns (tensors another library allocated): page
    /// `entry.id` at device address `ptr`, with the entry's length, epoch and metadata; `base` is
    /// the state hash of the state the pages hold. Nothing is allocated, and nothing is freed when
    /// the store drops. For applying a log in place ([`DevicePageStore::apply_log_from`]); a
    /// log that would create, delete or resize a page must be refused before it is applied.
    ///
    /// # Safety
    ///
    /// Each `ptr` must be the address of `entry.len` bytes of device memory of `gpu`'s device,
    /// writable, holding no other page's bytes, that stays allocated, and that no other work
    /// reads or writes while the store uses it (its kernels run on `gpu`'s stream).
    pub unsafe fn over_device_memory<'e>(
        gpu: &Arc<Gpu>,
        base: StateHash,
        pages: impl IntoIterator<Item = (&'e PageEntry, u64)>,
    ) -> DevicePageStore {
        let pages = pages
            .into_iter()
            .map(|(p, ptr)| {
                let page = DevicePage {
                    epoch: p.epoch,
                    meta: p.meta.clone(),
                    ptr,
                    len: p.len,
                    residency: PageResidency::Device,
                    own: None,
                    host: None,
                    crc: None,
                };
                (p.id, page)
            })
            .collect();
        DevicePageStore {
            gpu: gpu.clone(),
            memory: MemoryKind::Device,
            pool: None,
            pages,
            retired: Vec::new(),
            base,
            complete: true,
            pinned_source: None,
        }
    }

    /// Unpins the pieces of the checkpoint's file mapping that a load by pinning the mapping
    /// ([`ReadMode::PinMapping`]) left pinned; otherwise they are unpinned when the store drops.
    /// True when there were any.
    pub fn release_pinned_source(&mut self) -> bool {
        self.pinned_source.take().is_some()
    }

    /// A copy of this store on another device (or another context of the same one), made by
    /// copying the page pool device to device: the file is not read again. Every page must
    /// still be in the pool as loaded (no delta applied, nothing evicted).
    pub fn replicate_to(&self, gpu: &Arc<Gpu>) -> Result<DevicePageStore> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| Error::Invalid("the store has no page pool".into()))?;
        if self
            .pages
            .values()
            .any(|p| p.own.is_some() || p.residency == PageResidency::Evicted)
        {
            return Err(Error::Invalid(
                "only a store whose pages are all in its pool, as loaded, can be replicated".into(),
            ));
        }
        let copy = DeviceBuffer::alloc(&gpu.ctx, pool.len(), self.memory)?;
        super::driver::copy_peer(&gpu.stream, &gpu.ctx, copy.ptr(), &self.gpu.ctx, pool.ptr(), pool.len())?;
        gpu.synchronize()?;
        let pages = self
            .pages
            .iter()
            .map(|(id, p)| {
                (
                    *id,
                    DevicePage {
                        epoch: p.epoch,
                        meta: p.meta.clone(),
                        ptr: copy.ptr() + (p.ptr - pool.ptr()),
                        len: p.len,
                        residency: p.residency,
                        own: None,
                        host: None,
                        crc: p.crc,
                    },
                )
            })
            .collect();
        Ok(DevicePageStore {
            gpu: gpu.clone(),
            memory: self.memory,
            pool: Some(copy),
            pages,
            retired: Vec::new(),
            base: self.base,
            complete: self.complete,
            pinned_source: None,
        })
    }

    /// Whether every page of the checkpoint was loaded (no `--pages` selection).
    pub fn loaded_all(&self) -> bool {
        self.complete
    }

    /// The device the store is on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Ids of the pages in the store, in order.
    pub fn page_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().copied()
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// True when the store holds no page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// A handle to a resident page (`None` for an unknown or evicted page).
    pub fn page(&self, id: u64) -> Option<PageHandle<'_>> {
        let p = self.pages.get(&id)?;
        (p.residency != PageResidency::Evicted).then_some(PageHandle {
            ptr: p.ptr,
            len: p.len,
            ordinal: self.gpu.ordinal,
            _store: std::marker::PhantomData,
        })
    }

    /// A page's residency.
    pub fn residency(&self, id: u64) -> Option<PageResidency> {
        self.pages.get(&id).map(|p| p.residency)
    }

    /// A page's epoch and metadata.
    pub fn page_info(&self, id: u64) -> Option<(u64, &PageMeta)> {
        self.pages.get(&id).map(|p| (p.epoch, &p.meta))
    }

    /// Copies a page's bytes to the host.
    pub fn read_page(&self, id: u64) -> Result<Vec<u8>> {
        let p = self
            .pages
            .get(&id)
            .ok_or_else(|| Error::Invalid(format!("no page {id} in the device store")))?;
        if let Some(h) = &p.host {
            return Ok(h.clone());
        }
        self.gpu.synchronize()?;
        let mut out = vec![0u8; p.len as usize];
        copy_d2h(&self.gpu.ctx, p.ptr, &mut out)?;
        Ok(out)
    }

    /// Copies a page back to host memory and releases its device memory (a page in the shared
    /// pool gives its range back when the store drops). Its handle is gone until
    /// [`DevicePageStore::restore`].
    pub fn evict(&mut self, id: u64) -> Result<()> {
        let bytes = self.read_page(id)?;
        let p = self.pages.get_mut(&id).expect("read_page found it");
        if p.residency == PageResidency::Evicted {
            return Ok(());
        }
        p.host = Some(bytes);
        p.residency = PageResidency::Evicted;
        if let Some(own) = p.own.take() {
            drop(own);
        }
        p.ptr = 0;
        Ok(())
    }

    /// Brings an evicted page back into device memory of the store's kind.
    pub fn restore(&mut self, id: u64) -> Result<()> {
        let memory = self.memory;
        let gpu = self.gpu.clone();
        let p = self
            .pages
            .get_mut(&id)
            .ok_or_else(|| Error::Invalid(format!("no page {id} in the device store")))?;
        let Some(host) = p.host.take() else { return Ok(()) };
        let buf = DeviceBuffer::alloc(&gpu.ctx, host.len(), memory)?;
        copy_h2d_sync(&gpu.stream, buf.ptr(), &host)?;
        p.ptr = buf.ptr();
        p.own = Some(buf);
        p.residency = match memory {
            MemoryKind::Device => PageResidency::Device,
            MemoryKind::Unified => PageResidency::Unified,
            MemoryKind::HostMapped => PageResidency::HostMapped,
        };
        Ok(())
    }

    /// CRC32C of every page, computed on the GPU (a page whose CRC is already known is read
    /// again only with [`KnownCrcs::Recompute`]). Returns `(id, len, epoch, crc)` in id order.
    pub fn checksums(&mut self, known: KnownCrcs) -> Result<Vec<(u64, u64, u64, u32)>> {
        let all = known == KnownCrcs::Recompute;
        let mut off = Vec::new();
        let mut len = Vec::new();
        let mut owners = Vec::new();
        let pool_base = self.pool.as_ref().map_or(0, |p| p.ptr());
        let mut separate = Vec::new();
        for (id, p) in &self.pages {
            if (!all && p.crc.is_some()) || p.residency == PageResidency::Evicted {
                continue;
            }
            if p.own.is_some() || pool_base == 0 {
                separate.push(*id);
                continue;
            }
            let mut at = 0;
            while at < p.len || (p.len == 0 && at == 0) {
                let n = CRC_CHUNK.min(p.len - at);
                off.push(p.ptr - pool_base + at);
                len.push(n as u32);
                owners.push(*id);
                at += CRC_CHUNK;
                if p.len == 0 {
                    break;
                }
            }
        }
        let mut crcs = self
            .gpu
            .kernels()?
            .crc32c_chunks(&self.gpu.stream, pool_base, &off, &len)?;
        // Pages with their own allocation: chunks relative to address 0.
        let (mut off2, mut len2, mut owners2) = (Vec::new(), Vec::new(), Vec::new());
        for id in separate {
            let p = &self.pages[&id];
            let mut at = 0;
            loop {
                let n = CRC_CHUNK.min(p.len - at);
                off2.push(p.ptr + at);
                len2.push(n as u32);
                owners2.push(id);
                at += CRC_CHUNK;
                if at >= p.len {
                    break;
                }
            }
        }
        crcs.extend(self.gpu.kernels()?.crc32c_chunks(&self.gpu.stream, 0, &off2, &len2)?);
        owners.extend(owners2);
        len.extend(len2);
        let full_shift = crc32c_shift_factor(CRC_CHUNK);
        let mut folded: BTreeMap<u64, u32> = BTreeMap::new();
        for ((id, crc), n) in owners.iter().zip(&crcs).zip(&len) {
            folded
                .entry(*id)
                .and_modify(|acc| {
                    let shift = if u64::from(*n) == CRC_CHUNK {
                        full_shift
                    } else {
                        crc32c_shift_factor(u64::from(*n))
                    };
                    *acc = crc32c_combine_with(*acc, *crc, shift);
                })
                .or_insert(*crc);
        }
        for (id, crc) in folded {
            self.pages.get_mut(&id).expect("owner is a page").crc = Some(crc);
        }
        let mut out = Vec::with_capacity(self.pages.len());
        for (id, p) in &self.pages {
            let crc = match (p.crc, &p.host) {
                (Some(c), _) => c,
                (None, Some(h)) => crate::format::crc32c(h),
                (None, None) => unreachable!("every resident page was checksummed above"),
            };
            out.push((*id, p.len, p.epoch, crc));
        }
        Ok(out)
    }

    /// Checks every loaded page's bytes on the device against the checkpoint's CRC32C.
    pub fn verify_against(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let sums = self.checksums(KnownCrcs::Recompute)?;
        for (id, _, _, crc) in sums {
            let e = ckpt.head().page(id).expect("loaded from this checkpoint");
            if e.crc32c != crc {
                return Err(Error::Corrupt {
                    path: ckpt.path().to_owned(),
                    offset: e.offset,
                    problem: crate::error::Corruption::ChecksumMismatch {
                        what: format!("page {id} bytes on the device"),
                        stored: e.crc32c,
                        computed: crc,
                    },
                });
            }
        }
        Ok(())
    }

    /// The state hash of the pages in the store, from CRCs computed on the GPU.
    pub fn state_hash(&mut self) -> Result<StateHash> {
        Ok(StateHash::compute(self.checksums(KnownCrcs::Reuse)?.into_iter()))
    }

    /// Writes the store's pages as a checkpoint (device to host, then the atomic writer), with
    /// the dependency graph `graph` (its derived pages whose page or a parent the store lacks
    /// left out).
    pub fn write_checkpoint(
        &self,
        path: &std::path::Path,
        metadata: BTreeMap<String, String>,
        graph: &[crate::format::graph::Derivation],
    ) -> Result<()> {
        use crate::format::checkpoint::{CheckpointWriter, PageSpec};
        let graph = crate::format::graph::retain_present(graph, |id| self.pages.contains_key(&id));
        let specs = self
            .pages
            .iter()
            .map(|(id, p)| PageSpec {
                id: *id,
                len: p.len,
                epoch: p.epoch,
                meta: p.meta.clone(),
            })
            .collect();
        let mut w = CheckpointWriter::create_with_graph(path, specs, metadata, &graph)?;
        for id in self.pages.keys() {
            w.write(&self.read_page(*id)?)?;
        }
        w.finish().map(drop)
    }
}
