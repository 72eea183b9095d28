//! Log deltas applied on the GPU. The log's segment files are copied to the device as they are;
//! each write becomes a descriptor (destination in a page, source in the log bytes) and kernels
//! apply them. Writes that touch the same bytes are applied in sequence order (later waves), so
//! the result is bit-identical to the CPU replay; create, resize and delete are stream-ordered
//! allocations, copies and fills between the kernels.

use std::collections::HashMap;
use std::time::Instant;

use cudarc::driver::CudaSlice;

use super::driver::{DeviceBuffer, MemoryKind, copy_d2d, gpu_err, memset};
use super::loader::{CopyJob, Pipeline, ReadMode};
use super::store::{DevicePage, DevicePageStore, PageResidency};
use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointHead;
use crate::format::log::Log;
use crate::format::record::{Op, PageShape};
use crate::page::PageMeta;
use crate::replay::{ReplayLimit, ReplaySummary};

/// What the GPU apply did and how long each part took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyStats {
    /// Bytes of log segment files copied to the device.
    pub log_bytes: u64,
    /// Copy descriptors (sparse ranges and full-page writes).
    pub copies: u64,
    /// Masked-write descriptors.
    pub masked: u64,
    /// Kernel waves (1 when no two writes overlap).
    pub waves: u64,
    /// Create, resize and delete records.
    pub structural: u64,
    /// Log upload, ms.
    pub upload_ms: f64,
    /// Decoding and checking records and building descriptors on the CPU, ms.
    pub decode_ms: f64,
    /// Of `decode_ms`: decompressing and decoding every record (in parallel), ms.
    pub parse_ms: f64,
    /// Of `decode_ms`: checking records in sequence order and building descriptors, ms.
    pub check_ms: f64,
    /// Descriptor upload, kernels and synchronisation, ms.
    pub kernel_ms: f64,
    /// Of `kernel_ms`: grouping overlapping writes into waves and bucketing descriptors (CPU), ms.
    pub waves_ms: f64,
}

/// High bit of a descriptor source: the byte is in the decompressed-payload buffer.
const EXTRA: u64 = 1 << 63;

struct Pending {
    /// Per write: dst start, dst end, kind (0 copy, 1 masked) and descriptor fields.
    writes: Vec<Write>,
    /// Decompressed payload bytes that the pending writes refer to.
    extra: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Write {
    dst: u64,
    len: u64,
    masked: bool,
    src: u64,
    values: u64,
}

impl DevicePageStore {
    /// Applies `log` (up to `limit`) to the pages in the store. `head` is the index of the
    /// checkpoint the store was loaded from: every record is checked against the shapes of all
    /// its pages, also pages not loaded; writes to pages not loaded are skipped, and pages the log
    /// creates are kept when `keep_created` accepts them.
    pub fn apply_log(
        &mut self,
        log: &Log,
        head: &CheckpointHead,
        limit: ReplayLimit,
        keep_created: &dyn Fn(u64, &PageMeta) -> bool,
    ) -> Result<(ReplaySummary, ApplyStats)> {
        log.check()?;
        log.check_base(self.base)?;
        let mut stats = ApplyStats::default();
        let t = Instant::now();
        // The segments, back to back, in one device buffer.
        let mut seg_base = Vec::with_capacity(log.segments().len());
        let mut total = 0u64;
        for s in log.segments() {
            seg_base.push(total);
            total += s.file_len();
        }
        let logbuf = DeviceBuffer::alloc(&self.gpu.ctx, total as usize, MemoryKind::Device)?;
        // One load for all segments: one staging setup, every thread busy across files.
        let sources: Vec<(&std::path::Path, &[u8])> = log.segments().iter().map(|s| (s.path(), s.bytes())).collect();
        let jobs: Vec<CopyJob> = log
            .segments()
            .iter()
            .zip(&seg_base)
            .enumerate()
            .map(|(i, (s, base))| CopyJob {
                src: i,
                file_off: 0,
                len: s.file_len(),
                dst: logbuf.ptr() + base,
            })
            .collect();
        super::loader::load(
            &self.gpu.ctx,
            &sources,
            &jobs,
            ReadMode::Buffered,
            Pipeline::for_load(total, ReadMode::Buffered),
        )?;
        stats.log_bytes = total;
        stats.upload_ms = t.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        let mut kernel_s = 0.0;
        let mut shapes: HashMap<u64, PageShape> = head
            .pages
            .iter()
            .map(|p| {
                (
                    p.id,
                    PageShape {
                        len: p.len,
                        epoch: p.epoch,
                    },
                )
            })
            .collect();
        let mut summary = ReplaySummary {
            torn_tail: log.torn_tail().cloned(),
            ..Default::default()
        };
        let mut pending = Pending {
            writes: Vec::new(),
            extra: Vec::new(),
        };
        let mut keep_alive: Vec<DeviceBuffer> = Vec::new();
        // Records go in chunks: each chunk is decompressed and decoded in parallel, then checked
        // and turned into descriptors in sequence order. Reusing chunk-sized buffers keeps the
        // memory small; a million decoded records at once cost more in fresh-page faults than in
        // decoding.
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 15;
        let frames: Vec<_> = log
            .segments()
            .iter()
            .flat_map(|s| s.frames().iter().map(move |f| (s, *f)))
            .take_while(|(_, f)| limit.to_seq.is_none_or(|n| f.seq <= n))
            .collect();
        pending.writes.reserve(frames.len());
        let mut parse_s = 0.0;
        'records: for chunk in frames.chunks(CHUNK) {
            let tp = Instant::now();
            let records: Vec<_> = chunk
                .par_iter()
                .map(|&(segment, frame)| {
                    segment.payload(&frame).map(|payload| crate::format::log::LogRecord {
                        segment,
                        frame,
                        payload,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let deltas: Vec<_> = records.par_iter().map(|r| r.delta()).collect::<Result<Vec<_>>>()?;
            parse_s += tp.elapsed().as_secs_f64();
            for (rec, delta) in records.iter().zip(deltas) {
                let Some(delta) = delta else {
                    summary.skipped_unknown += 1;
                    continue;
                };
                if limit.to_epoch.is_some_and(|n| delta.epoch > n) {
                    break 'records;
                }
                let reject = |reason: String| Error::DeltaRejected {
                    path: rec.segment.path().to_owned(),
                    offset: rec.frame.offset,
                    seq: rec.frame.seq,
                    reason,
                };
                let after = delta.check(shapes.get(&delta.page_id).copied()).map_err(reject)?;
                match after {
                    Some(s) => shapes.insert(delta.page_id, s),
                    None => shapes.remove(&delta.page_id),
                };
                summary.records += 1;
                summary.bytes_written += delta.written_bytes();
                summary.last_seq = Some(rec.frame.seq);
                // Where a payload slice is: in the uploaded log bytes, or (decompressed) in `extra`.
                let seg_bytes = rec.segment.bytes();
                let seg_off = seg_base[rec.segment.header().segment_no as usize];
                let locate = |data: &[u8], extra: &mut Vec<u8>| -> u64 {
                    let p = data.as_ptr() as usize;
                    let start = seg_bytes.as_ptr() as usize;
                    if p >= start && p + data.len() <= start + seg_bytes.len() {
                        logbuf.ptr() + seg_off + (p - start) as u64
                    } else {
                        extra.extend_from_slice(data);
                        EXTRA | (extra.len() - data.len()) as u64
                    }
                };
                match &delta.op {
                    Op::Create { len, meta } => {
                        stats.structural += 1;
                        if keep_created(delta.page_id, meta) {
                            self.flush(&mut pending, &mut stats, &mut keep_alive, &mut kernel_s)?;
                            let buf = DeviceBuffer::alloc(&self.gpu.ctx, *len as usize, self.memory)?;
                            memset(&self.gpu.stream, buf.ptr(), 0, *len as usize)?;
                            let residency = if self.memory == MemoryKind::Device {
                                PageResidency::Device
                            } else if self.memory == MemoryKind::Unified {
                                PageResidency::Unified
                            } else {
                                PageResidency::HostMapped
                            };
                            self.pages.insert(
                                delta.page_id,
                                DevicePage {
                                    epoch: delta.epoch,
                                    meta: meta.clone(),
                                    ptr: buf.ptr(),
                                    len: *len,
                                    residency,
                                    own: Some(buf),
                                    host: None,
                                    crc: None,
                                },
                            );
                        }
                        continue;
                    }
                    Op::Delete => {
                        stats.structural += 1;
                        if let Some(p) = self.pages.remove(&delta.page_id) {
                            // Queued writes may still target it: free only when the store drops.
                            self.retired.extend(p.own);
                        }
                        continue;
                    }
                    _ => {}
                }
                let Some(page) = self.pages.get(&delta.page_id) else {
                    continue;
                };
                if page.residency == PageResidency::Evicted {
                    return Err(Error::Invalid(format!(
                        "page {} is evicted: restore it before applying deltas",
                        delta.page_id
                    )));
                }
                let (dst, page_len) = (page.ptr, page.len);
                match &delta.op {
                    Op::Resize { len } => {
                        stats.structural += 1;
                        self.flush(&mut pending, &mut stats, &mut keep_alive, &mut kernel_s)?;
                        let buf = DeviceBuffer::alloc(&self.gpu.ctx, *len as usize, self.memory)?;
                        let keep = page_len.min(*len);
                        let stream = &self.gpu.stream;
                        copy_d2d(stream, buf.ptr(), dst, keep as usize)?;
                        memset(stream, buf.ptr() + keep, 0, (*len - keep) as usize)?;
                        let page = self.pages.get_mut(&delta.page_id).expect("present");
                        page.ptr = buf.ptr();
                        page.len = *len;
                        if let Some(old) = page.own.replace(buf) {
                            self.retired.push(old);
                        }
                    }
                    Op::Full(data) => {
                        let src = locate(data, &mut pending.extra);
                        pending.writes.push(Write {
                            dst,
                            len: data.len() as u64,
                            masked: false,
                            src,
                            values: 0,
                        });
                    }
                    Op::Sparse(ranges) => {
                        for (off, data) in ranges {
                            let src = locate(data, &mut pending.extra);
                            pending.writes.push(Write {
                                dst: dst + off,
                                len: data.len() as u64,
                                masked: false,
                                src,
                                values: 0,
                            });
                        }
                    }
                    Op::Masked {
                        offset,
                        len,
                        mask,
                        values,
                    } => {
                        let src = locate(mask, &mut pending.extra);
                        let vals = locate(values, &mut pending.extra);
                        pending.writes.push(Write {
                            dst: dst + offset,
                            len: *len,
                            masked: true,
                            src,
                            values: vals,
                        });
                    }
                    Op::Fill { offset, len, value } => {
                        // A stream-ordered memset after the writes queued before it.
                        self.flush(&mut pending, &mut stats, &mut keep_alive, &mut kernel_s)?;
                        memset(&self.gpu.stream, dst + offset, *value, *len as usize)?;
                        stats.copies += 1;
                    }
                    Op::Create { .. } | Op::Delete => unreachable!("handled above"),
                }
                let page = self.pages.get_mut(&delta.page_id).expect("present");
                page.epoch = delta.epoch;
                page.crc = None;
            }
        }
        stats.parse_ms = parse_s * 1e3;
        self.flush(&mut pending, &mut stats, &mut keep_alive, &mut kernel_s)?;
        let ts = Instant::now();
        self.gpu.synchronize()?;
        kernel_s += ts.elapsed().as_secs_f64();
        drop(keep_alive);
        drop(logbuf);
        stats.kernel_ms = kernel_s * 1e3;
        stats.decode_ms = t.elapsed().as_secs_f64() * 1e3 - stats.kernel_ms;
        stats.check_ms = stats.decode_ms - stats.parse_ms;
        Ok((summary, stats))
    }

    /// Launches the pending writes: one wave when none overlap, else each group of overlapping
    /// writes spread over waves in sequence order.
    fn flush(
        &mut self,
        pending: &mut Pending,
        stats: &mut ApplyStats,
        keep_alive: &mut Vec<DeviceBuffer>,
        kernel_s: &mut f64,
    ) -> Result<()> {
        if pending.writes.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let extra_base = if pending.extra.is_empty() {
            0
        } else {
            let buf = DeviceBuffer::alloc(&self.gpu.ctx, pending.extra.len(), MemoryKind::Device)?;
            super::driver::copy_h2d_sync(&self.gpu.ctx, buf.ptr(), &pending.extra)?;
            let p = buf.ptr();
            keep_alive.push(buf);
            p
        };
        let resolve = |src: u64| {
            if src & EXTRA != 0 {
                extra_base + (src & !EXTRA)
            } else {
                src
            }
        };
        let tw = Instant::now();
        let waves = assign_waves(&pending.writes);
        let nwaves = waves.iter().copied().max().map_or(0, |w| w + 1);
        stats.waves += u64::from(nwaves);
        let mut uploads: Vec<CudaSlice<u64>> = Vec::new();
        // Descriptors bucketed by wave in one pass over the writes.
        let mut buckets: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); nwaves as usize];
        for (w, wv) in pending.writes.iter().zip(&waves) {
            if w.len == 0 {
                continue;
            }
            let (copies, masks) = &mut buckets[*wv as usize];
            if w.masked {
                masks.extend_from_slice(&[w.dst, resolve(w.src), resolve(w.values), w.len]);
            } else {
                copies.extend_from_slice(&[w.dst, resolve(w.src), w.len]);
            }
        }
        stats.waves_ms += tw.elapsed().as_secs_f64() * 1e3;
        for (copies, masks) in buckets {
            stats.copies += copies.len() as u64 / 3;
            stats.masked += masks.len() as u64 / 4;
            let stream = &self.gpu.stream;
            if !copies.is_empty() {
                let d = stream.clone_htod(&copies).map_err(gpu_err)?;
                self.gpu.kernels.apply_copies(stream, &d, (copies.len() / 3) as u32)?;
                uploads.push(d);
            }
            if !masks.is_empty() {
                let d = stream.clone_htod(&masks).map_err(gpu_err)?;
                self.gpu.kernels.apply_masked(stream, &d, (masks.len() / 4) as u32)?;
                uploads.push(d);
            }
        }
        // The extra buffer and descriptors must outlive the kernels: wait before dropping them.
        self.gpu.synchronize()?;
        drop(uploads);
        pending.writes.clear();
        pending.extra.clear();
        *kernel_s += t.elapsed().as_secs_f64();
        Ok(())
    }
}

/// For each write, the wave it runs in: writes whose byte ranges overlap (directly or through a
/// chain of others) form a group, and the i-th write of a group in sequence order runs in wave
/// i. Writes in one wave never overlap, so a wave's order does not matter.
fn assign_waves(writes: &[Write]) -> Vec<u32> {
    use rayon::prelude::*;
    let mut waves = vec![0u32; writes.len()];
    let mut order: Vec<u32> = (0..writes.len() as u32).collect();
    order.par_sort_unstable_by_key(|&i| (writes[i as usize].dst, i));
    let mut group: Vec<u32> = Vec::new();
    let mut group_end = 0u64;
    let close = |group: &mut Vec<u32>, waves: &mut Vec<u32>| {
        if group.len() > 1 {
            group.sort_unstable();
            for (rank, i) in group.iter().enumerate() {
                waves[*i as usize] = rank as u32;
            }
        }
        group.clear();
    };
    for i in order {
        let w = &writes[i as usize];
        if w.len == 0 {
            continue;
        }
        if !group.is_empty() && w.dst >= group_end {
            close(&mut group, &mut waves);
        }
        if group.is_empty() {
            group_end = w.dst + w.len;
        } else {
            group_end = group_end.max(w.dst + w.len);
        }
        group.push(i);
    }
    close(&mut group, &mut waves);
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(dst: u64, len: u64) -> Write {
        Write {
            dst,
            len,
            masked: false,
            src: 0,
            values: 0,
        }
    }

    #[test]
    fn disjoint_writes_share_one_wave_and_overlaps_go_in_sequence_order() {
        assert_eq!(assign_waves(&[w(0, 4), w(10, 4), w(4, 6)]), vec![0, 0, 0]);
        // 0 and 2 overlap; 1 is apart; 3 overlaps 2 (chain): group {0, 2, 3} in order.
        assert_eq!(assign_waves(&[w(0, 4), w(100, 4), w(2, 4), w(5, 10)]), vec![0, 0, 1, 2]);
        // A later write at a lower address still runs after the earlier one it overlaps.
        assert_eq!(assign_waves(&[w(10, 10), w(5, 6)]), vec![0, 1]);
    }
}
