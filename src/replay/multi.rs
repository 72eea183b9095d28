//! Several GPUs: a checkpoint and its log restored sharded (each page on one device, balanced
//! by bytes) or replicated (every device holds every page, the file read once and the pool
//! copied device to device). Written for any number of devices; with one GPU the same code runs
//! on several contexts of that device (`cuda:0,cuda:0`), which is how it is tested there.

use crate::timing::ms;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::ReplayOptions;
use super::state::ReplaySummary;
use crate::error::{Error, GpuError, Result};
use crate::format::checkpoint::{Checkpoint, PageEntry};
use crate::format::log::Log;
use crate::gpu::apply::{ApplyStats, PreparedLog};
use crate::gpu::driver::enable_peer_access;
use crate::gpu::store::{DevicePageStore, LoadOptions, LoadStats};
use crate::gpu::{Gpu, KernelCompile};
use crate::page::StateHash;

/// How pages are spread over the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Each page on exactly one device, balanced by bytes; deltas go where their page is.
    Shard,
    /// Every page on every device.
    Replicate,
}

/// The device each checkpoint page goes to under [`Placement::Shard`]: largest pages first, each
/// to the device with the fewest bytes so far (ties to the lower index), so no device ends more
/// than one page's size above another.
pub fn shard_pages(pages: &[PageEntry], devices: usize) -> BTreeMap<u64, usize> {
    let mut order: Vec<&PageEntry> = pages.iter().collect();
    order.sort_by_key(|p| (std::cmp::Reverse(p.len), p.id));
    let mut load = vec![0u64; devices.max(1)];
    let mut out = BTreeMap::new();
    for p in order {
        let (d, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, b)| (**b, *i))
            .expect("at least one");
        load[d] += p.len;
        out.insert(p.id, d);
    }
    out
}

/// The device of a page: its checkpoint placement, or, for a page only the log creates, its id
/// modulo the device count (every device decides alike without talking to the others).
fn device_of(map: &BTreeMap<u64, usize>, id: u64, devices: usize) -> usize {
    map.get(&id).copied().unwrap_or((id % devices as u64) as usize)
}

/// Phase times on one device, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceTimings {
    /// Reading its pages from the file (shard, or the first replica).
    pub load: f64,
    /// Copying the pool from the first device (replicas after the first).
    pub fanout: f64,
    /// Applying the log.
    pub apply: f64,
    /// GPU CRCs and hash.
    pub hash: f64,
}

/// One device's part.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// `cuda:N`.
    pub device: String,
    /// Its name.
    pub device_name: String,
    /// What the kernels were compiled to (see [`crate::gpu::kernels::KernelCode`]); `None` when
    /// the run needed none.
    pub kernels: Option<String>,
    /// Pages it holds at the end.
    pub pages: u64,
    /// Bytes of those pages.
    pub page_bytes: u64,
    /// Its load from the file, when it read one.
    pub load: Option<LoadStats>,
    /// Its delta application.
    pub apply: Option<ApplyStats>,
    /// Hash of the pages it holds (with verify).
    pub state_hash: Option<StateHash>,
    /// Direct peer access to the first device (replicate).
    pub peer_access: Option<bool>,
    /// Phase times.
    pub timings_ms: DeviceTimings,
}

/// Wall-clock phases of the whole restore, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MultiTimings {
    /// Slowest device start (they start in parallel, while the files are opened).
    pub cuda_start: f64,
    /// Opening the checkpoint and log.
    pub open: f64,
    /// Planning the log for the devices (one plan per shard, one for all replicas), while they
    /// start; 0 without a log.
    pub log_plan: f64,
    /// From opening the checkpoint to every device holding its pages.
    pub open_to_resident: f64,
    /// Applying the log on every device.
    pub apply: f64,
    /// Hashes.
    pub hash: f64,
    /// Everything.
    pub total: f64,
}

/// What a multi-device replay did.
#[derive(Debug, Clone, Serialize)]
pub struct MultiReplayReport {
    /// Shard or replicate.
    pub placement: Placement,
    /// Per device, in the order given.
    pub devices: Vec<DeviceReport>,
    /// Records applied (every device walks the same records).
    pub summary: ReplaySummary,
    /// The state hash of the whole state (shard: over every device's pages; replicate: the
    /// devices' common hash), with verify.
    pub state_hash: Option<StateHash>,
    /// Replicate with verify: whether every device's hash is the same.
    pub replicas_agree: Option<bool>,
    /// Phases.
    pub timings_ms: MultiTimings,
}

/// Runs `f` for every item on its own thread, keeping the order; the first error wins.
fn each<T: Send, R: Send>(items: Vec<T>, f: impl Fn(usize, T) -> Result<R> + Sync) -> Result<Vec<R>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                let f = &f;
                s.spawn(move || f(i, x))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Gpu(GpuError::Internal("a device thread panicked".into()))))
            })
            .collect()
    })
}

/// Replays `checkpoint` plus `logs` onto the devices `ordinals` (through [`super::run`]).
pub(super) fn run(
    checkpoint: &Path,
    logs: &[PathBuf],
    ordinals: &[usize],
    o: &ReplayOptions,
) -> Result<(MultiReplayReport, Vec<DevicePageStore>)> {
    if ordinals.is_empty() {
        return Err(Error::Invalid("no devices given".into()));
    }
    let t0 = Instant::now();
    let compile = KernelCompile::for_replay(Some(logs), o.verify);
    let starting: Vec<_> = ordinals
        .iter()
        .map(|&n| std::thread::spawn(move || Gpu::open(n, compile)))
        .collect();
    let topen = Instant::now();
    let ckpt = Checkpoint::open(checkpoint)?;
    let log = if logs.is_empty() {
        None
    } else {
        Some(Log::open_deferred(logs)?)
    };
    let mut t = MultiTimings {
        open: ms(topen),
        ..Default::default()
    };
    // The log is planned while the devices start: a plan per shard, or one for every replica.
    let n = ordinals.len();
    let map = shard_pages(ckpt.head().pages.as_slice(), n);
    let placement = o.placement;
    let map_ref = &map;
    let keeps: Vec<_> = (0..n)
        .map(|i| {
            move |id: u64, _: &crate::page::PageMeta| {
                placement == Placement::Replicate || device_of(map_ref, id, n) == i
            }
        })
        .collect();
    let tplan = Instant::now();
    let plans = match placement {
        Placement::Shard => n,
        Placement::Replicate => 1,
    };
    let prepared: Vec<PreparedLog> = match &log {
        Some(log) => (0..plans)
            .map(|i| {
                let select = |p: &PageEntry| placement == Placement::Replicate || map[&p.id] == i;
                PreparedLog::new(log, ckpt.head(), &select, o.limit, &keeps[i])
            })
            .collect(),
        None => Vec::new(),
    };
    t.log_plan = ms(tplan);
    let gpus: Vec<Arc<Gpu>> = starting
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| Error::Gpu(GpuError::Internal("CUDA start thread panicked".into())))?
                .map(Arc::new)
        })
        .collect::<Result<_>>()?;
    t.cuda_start = gpus.iter().map(|g| g.start_ms).fold(0.0, f64::max);
    let opts = LoadOptions {
        memory: o.memory,
        read_mode: o.read_mode,
        pipeline: None,
        poison: None,
        progress: None,
    };
    let tload = Instant::now();
    let mut timings = vec![DeviceTimings::default(); n];
    let mut loads: Vec<Option<LoadStats>> = vec![None; n];
    let mut peer: Vec<Option<bool>> = vec![None; n];
    let mut stores: Vec<DevicePageStore> = match o.placement {
        Placement::Shard => {
            let done = each(gpus.clone(), |i, gpu| {
                let t = Instant::now();
                let (s, l) = DevicePageStore::load(&gpu, &ckpt, &|p| map[&p.id] == i, &opts)?;
                gpu.synchronize()?;
                Ok((s, l, ms(t)))
            })?;
            done.into_iter()
                .enumerate()
                .map(|(i, (s, l, dt))| {
                    timings[i].load = dt;
                    loads[i] = Some(l);
                    s
                })
                .collect()
        }
        Placement::Replicate => {
            let t = Instant::now();
            let (first, l) = DevicePageStore::load(&gpus[0], &ckpt, &|_| true, &opts)?;
            gpus[0].synchronize()?;
            timings[0].load = ms(t);
            loads[0] = Some(l);
            let copies = each(gpus[1..].to_vec(), |_, gpu| {
                let t = Instant::now();
                let direct = enable_peer_access(&gpu.ctx, &gpus[0].ctx)?;
                let s = first.replicate_to(&gpu)?;
                Ok((s, direct, ms(t)))
            })?;
            let mut stores = vec![first];
            for (i, (s, direct, dt)) in copies.into_iter().enumerate() {
                timings[i + 1].fanout = dt;
                peer[i + 1] = Some(direct);
                stores.push(s);
            }
            stores
        }
    };
    t.open_to_resident = t.open + ms(tload);

    let tapply = Instant::now();
    let mut summary = ReplaySummary::default();
    let mut applies: Vec<Option<ApplyStats>> = vec![None; n];
    if !prepared.is_empty() {
        let done = each(stores.iter_mut().collect(), |i, store| {
            let t = Instant::now();
            let (s, a) = store.apply_prepared(&prepared[i.min(prepared.len() - 1)])?;
            Ok((s, a, ms(t)))
        })?;
        for (i, (s, a, dt)) in done.into_iter().enumerate() {
            timings[i].apply = dt;
            applies[i] = Some(a);
            summary = s;
        }
    }
    t.apply = ms(tapply);

    let thash = Instant::now();
    let (mut hashes, mut whole, mut agree) = (vec![None; n], None, None);
    if o.verify {
        let sums = each(stores.iter_mut().collect(), |_, store| {
            let t = Instant::now();
            let c = store.checksums(crate::gpu::store::KnownCrcs::Reuse)?;
            Ok((c, ms(t)))
        })?;
        let mut all = Vec::new();
        for (i, (c, dt)) in sums.into_iter().enumerate() {
            timings[i].hash = dt;
            hashes[i] = Some(StateHash::compute(c.iter().copied()));
            all.extend(c);
        }
        match o.placement {
            Placement::Shard => {
                all.sort_unstable_by_key(|c| c.0);
                whole = Some(StateHash::compute(all.into_iter()));
            }
            Placement::Replicate => {
                let same = hashes.iter().all(|h| *h == hashes[0]);
                agree = Some(same);
                whole = hashes[0].filter(|_| same);
            }
        }
    }
    t.hash = ms(thash);
    t.total = ms(t0);
    let devices = stores
        .iter()
        .enumerate()
        .map(|(i, s)| DeviceReport {
            device: format!("cuda:{}", gpus[i].ordinal),
            device_name: gpus[i].name.clone(),
            kernels: gpus[i].kernel_code().map(|c| c.to_string()),
            pages: s.len() as u64,
            page_bytes: s.page_ids().filter_map(|id| s.page(id)).map(|h| h.len()).sum(),
            load: loads[i].clone(),
            apply: applies[i].clone(),
            state_hash: hashes[i],
            peer_access: peer[i],
            timings_ms: timings[i].clone(),
        })
        .collect();
    Ok((
        MultiReplayReport {
            placement: o.placement,
            devices,
            summary,
            state_hash: whole,
            replicas_agree: agree,
            timings_ms: t,
        },
        stores,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PageMeta;

    fn page(id: u64, len: u64) -> PageEntry {
        PageEntry {
            id,
            offset: 0,
            len,
            epoch: 0,
            crc32c: 0,
            meta: PageMeta::default(),
        }
    }

    #[test]
    fn shards_are_balanced_by_bytes_and_every_page_has_one_device() {
        let pages: Vec<PageEntry> = (0..50).map(|i| page(i, 1 + (i * 7919) % 1000)).collect();
        for devices in 1..5 {
            let map = shard_pages(&pages, devices);
            assert_eq!(map.len(), pages.len());
            let mut bytes = vec![0u64; devices];
            for p in &pages {
                bytes[map[&p.id]] += p.len;
            }
            let (lo, hi) = (*bytes.iter().min().unwrap(), *bytes.iter().max().unwrap());
            let largest = pages.iter().map(|p| p.len).max().unwrap();
            assert!(hi - lo <= largest, "{devices} devices: {bytes:?}");
        }
        assert_eq!(device_of(&shard_pages(&pages, 3), 1000, 3), 1, "created pages go by id");
    }
}
