//! `mmsb watch`: snapshots of a log that another process may be appending to.
//!
//! A snapshot opens the log as every reader does (whole records and closed groups only, each
//! frame's checksum checked, a segment's read lock held shared while it is mapped), so it never
//! shows half a record or half a group, and an appender never waits for it: appends take no
//! segment lock. The writer is named from the lock's pid file, read without touching the lock.
//! Rates come from two snapshots ([`WatchSnapshot::with_rates_since`]). A [`DeviceMirror`] keeps
//! a copy of the state on a CUDA device and applies the log's new records to it at each refresh.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::format::checkpoint::Checkpoint;
use crate::format::lock;
use crate::format::log::{Log, Segment, SegmentEnd, expand_paths};
use crate::format::record::{changes_no_page, kind_name};
use crate::ops::inspect::{LogInfo, SegmentCounts, log_info_of, segment_counts};
use crate::page::StateHash;

/// One look at a log.
#[derive(Debug, Clone, Serialize)]
pub struct WatchSnapshot {
    /// The log directory (or first segment) watched.
    pub log: PathBuf,
    /// When the snapshot was taken, ns since the Unix epoch.
    pub taken_at_ns: u64,
    /// Segment files this snapshot read: a follower reads the last one it saw and those after
    /// it ([`LogFollower`]).
    pub segments_read: u64,
    /// Segments, record counts by type, sequence range, bytes, compression, problems.
    #[serde(flatten)]
    pub info: LogInfo,
    /// The epoch of the last page record.
    pub last_epoch: Option<u64>,
    /// Bytes of frames (header, payload, checksum) by record type.
    pub bytes_by_type: BTreeMap<&'static str, u64>,
    /// The pages written most, most records first.
    pub top_pages: Vec<PageWrites>,
    /// The tail: how far every checksum was checked, a torn record, the writer.
    pub tail: TailHealth,
    /// With a checkpoint: whether the log's base state is the checkpoint's state.
    pub base_matches_checkpoint: Option<bool>,
    /// Rates since the previous snapshot (`None` for the first).
    pub rates: Option<Rates>,
    /// The copy of the state on a device, when one is kept ([`DeviceMirror`]).
    pub device: Option<DeviceStatus>,
}

/// A page and how much the log writes to it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PageWrites {
    /// Page id.
    pub page_id: u64,
    /// Its name, when a checkpoint was given and names it.
    pub name: Option<String>,
    /// Records that write it.
    pub records: u64,
    /// Their stored payload bytes.
    pub stored_bytes: u64,
}

/// The state of a log's tail.
#[derive(Debug, Clone, Serialize)]
pub struct TailHealth {
    /// The last whole record: every frame up to it had its checksum checked.
    pub checked_through: Option<CheckedThrough>,
    /// A record cut short at the end (a crash, or an append caught half-written; the next
    /// snapshot sees it whole if a writer is still appending).
    pub torn_tail: Option<TornTailInfo>,
    /// The process holding the log's writer lock, from its pid file.
    pub writer: Option<Writer>,
}

/// The last record checked.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedThrough {
    /// Its sequence number.
    pub seq: u64,
    /// Its segment file.
    pub segment: PathBuf,
    /// Where it ends in that file.
    pub end_offset: u64,
    /// Its record checksum (CRC32C), as checked.
    pub record_crc32c: Option<u32>,
}

/// A torn last record.
#[derive(Debug, Clone, Serialize)]
pub struct TornTailInfo {
    /// The segment.
    pub segment: PathBuf,
    /// Where the torn record starts.
    pub offset: u64,
    /// Its bytes.
    pub len: u64,
}

/// The writer named by the lock's pid file.
#[derive(Debug, Clone, Serialize)]
pub struct Writer {
    /// Its pid.
    pub pid: u32,
    /// Whether that process exists (a pid file left by a killed writer names one that does
    /// not, and then nobody holds the lock).
    pub running: bool,
}

/// Rates between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Seconds between them.
    pub seconds: f64,
    /// Records a second.
    pub records_per_s: f64,
    /// Log bytes a second.
    pub bytes_per_s: f64,
    /// By record type.
    pub by_type: BTreeMap<&'static str, TypeRate>,
}

/// One record type's rates.
#[derive(Debug, Clone, Serialize)]
pub struct TypeRate {
    /// Records a second.
    pub records_per_s: f64,
    /// Frame bytes a second.
    pub bytes_per_s: f64,
}

/// Takes a snapshot of the log at `log` (a directory or segment files): the `top` pages written
/// most, named from `ckpt` when one is given (opened once by a caller that takes many). A
/// caller that takes many follows the log with a [`LogFollower`] instead.
pub fn snapshot(log: &[PathBuf], ckpt: Option<&Checkpoint>, top: usize) -> Result<WatchSnapshot> {
    LogFollower::new(log, top).snapshot(ckpt)
}

/// Follows a log that may be growing, for snapshot after snapshot: the segments before the last
/// are counted once and kept, so a snapshot reads only the last segment it saw and any after it,
/// however long the log has grown. A counted segment whose file changed (its length,
/// modification time or inode: a repair, a `compact` that replaced the log) has the whole log
/// read again, as do logs with problems (which are then reported afresh each time). Damage
/// that leaves a counted file's stamp as it was (a flipped bit on the disk) is `mmsb verify`'s
/// to find, as for an appender ([`Log::open_for_append`]).
pub struct LogFollower {
    paths: Vec<PathBuf>,
    top: usize,
    /// The segments counted for good, in order, each with its file's stamp when counted.
    closed: Vec<(SegmentCounts, FileStamp)>,
    /// Their base state, and what a watch counts in them, summed.
    closed_base: Option<StateHash>,
    closed_watch: SegmentWatch,
}

/// What identifies the contents of a segment file that is no longer appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    inode: u64,
    modified: Option<std::time::SystemTime>,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        inode: m.ino(),
        modified: m.modified().ok(),
    })
}

/// What a watch counts in a run of segments beyond [`SegmentCounts`].
#[derive(Debug, Clone, Default)]
struct SegmentWatch {
    bytes_by_type: BTreeMap<&'static str, u64>,
    /// Records and stored payload bytes per page.
    pages: HashMap<u64, (u64, u64)>,
    last_epoch: Option<u64>,
    checked_through: Option<CheckedThrough>,
}

impl SegmentWatch {
    /// Adds what `later`, counted over the segments after these, holds.
    fn add(&mut self, later: &SegmentWatch) {
        for (kind, n) in &later.bytes_by_type {
            *self.bytes_by_type.entry(kind).or_insert(0) += n;
        }
        for (page, (records, bytes)) in &later.pages {
            let e = self.pages.entry(*page).or_default();
            e.0 += records;
            e.1 += bytes;
        }
        if later.last_epoch.is_some() {
            self.last_epoch = later.last_epoch;
        }
        if later.checked_through.is_some() {
            self.checked_through = later.checked_through.clone();
        }
    }

    fn count(&mut self, s: &Segment) {
        for f in s.frames() {
            *self.bytes_by_type.entry(kind_name(f.kind)).or_insert(0) += f.frame_len();
            self.checked_through = Some(CheckedThrough {
                seq: f.seq,
                segment: s.path().to_owned(),
                end_offset: f.offset + f.frame_len(),
                record_crc32c: f.record_crc(s.bytes()),
            });
            if changes_no_page(f.kind) {
                continue;
            }
            // A record whose head cannot be read is among the log's problems already.
            if let Ok((page, epoch)) = s.page_and_epoch(f) {
                let e = self.pages.entry(page).or_default();
                e.0 += 1;
                e.1 += f.payload_len;
                self.last_epoch = Some(epoch);
            }
        }
    }
}

impl LogFollower {
    /// A follower of the log at `log` (a directory or segment files) whose snapshots list the
    /// `top` pages written most.
    pub fn new(log: &[PathBuf], top: usize) -> LogFollower {
        LogFollower {
            paths: log.to_vec(),
            top,
            closed: Vec::new(),
            closed_base: None,
            closed_watch: SegmentWatch::default(),
        }
    }

    fn forget(&mut self) {
        self.closed.clear();
        self.closed_base = None;
        self.closed_watch = SegmentWatch::default();
    }

    /// Opens what this follower has not counted for good: the segments after the closed ones
    /// (all of them when none is, or when those counted no longer match their files). Returns
    /// the opened segments and the stamps of their files taken before they were opened.
    fn open_uncounted(&mut self) -> Result<(Log, HashMap<PathBuf, FileStamp>)> {
        if !self
            .closed
            .iter()
            .all(|(c, stamp)| file_stamp(&c.info.path).as_ref() == Some(stamp))
        {
            self.forget();
        }
        let all = expand_paths(&self.paths)?;
        let stamps_after = |n: usize| {
            all.iter()
                .skip(n)
                .filter_map(|p| Some((p.clone(), file_stamp(p)?)))
                .collect::<HashMap<_, _>>()
        };
        if let Some((last, _)) = self.closed.last() {
            let next = last.info.first_seq + last.info.records;
            let stamps = stamps_after(self.closed.len());
            let tail = Log::open_from(&self.paths, next)?;
            let continues = tail.segments().first().is_some_and(|s| {
                s.header().segment_no == last.info.segment_no + 1
                    && s.header().first_seq == next
                    && Some(s.header().base) == self.closed_base
            });
            if continues {
                return Ok((tail, stamps));
            }
            self.forget();
        }
        let stamps = stamps_after(0);
        Ok((Log::open(&self.paths)?, stamps))
    }

    /// A snapshot of the log now, the `top` pages named from `ckpt` when one is given.
    pub fn snapshot(&mut self, ckpt: Option<&Checkpoint>) -> Result<WatchSnapshot> {
        let taken_at_ns = crate::timing::now_ns();
        let (tail, stamps) = self.open_uncounted()?;
        let tail_counts: Vec<SegmentCounts> = tail.segments().iter().map(|s| segment_counts(&tail, s)).collect();
        let counts: Vec<SegmentCounts> = self
            .closed
            .iter()
            .map(|(c, _)| c.clone())
            .chain(tail_counts.iter().cloned())
            .collect();
        let info = log_info_of(&counts, &tail);
        let mut watch = self.closed_watch.clone();
        let mut tail_watch = Vec::with_capacity(tail.segments().len());
        for s in tail.segments() {
            let mut w = SegmentWatch::default();
            w.count(s);
            watch.add(&w);
            tail_watch.push(w);
        }
        let mut top_pages: Vec<PageWrites> = watch
            .pages
            .iter()
            .map(|(&page_id, &(records, stored_bytes))| PageWrites {
                page_id,
                name: None,
                records,
                stored_bytes,
            })
            .collect();
        top_pages.sort_by(|a, b| {
            b.records
                .cmp(&a.records)
                .then(b.stored_bytes.cmp(&a.stored_bytes))
                .then(a.page_id.cmp(&b.page_id))
        });
        top_pages.truncate(self.top);
        if let Some(c) = ckpt {
            for p in &mut top_pages {
                p.name = c.head().page(p.page_id).and_then(|e| e.meta.name.clone());
            }
        }
        let dir = self.paths.first().map(|p| lock::log_dir(p));
        let writer = dir.as_deref().and_then(lock::writer_pid).map(|pid| Writer {
            pid,
            running: Path::new(&format!("/proc/{pid}")).exists(),
        });
        let snapshot = WatchSnapshot {
            log: self.paths.first().cloned().unwrap_or_default(),
            taken_at_ns,
            segments_read: tail.segments().len() as u64,
            last_epoch: watch.last_epoch,
            bytes_by_type: watch.bytes_by_type,
            top_pages,
            tail: TailHealth {
                checked_through: watch.checked_through,
                torn_tail: tail.torn_tail().map(|t| TornTailInfo {
                    segment: t.path.clone(),
                    offset: t.offset,
                    len: t.len,
                }),
                writer,
            },
            base_matches_checkpoint: ckpt.and_then(|c| info.base_state_hash.map(|b| b == c.state_hash())),
            info,
            rates: None,
            device: None,
        };
        // Segments before the last, clean, of a log without problems, and unchanged while they
        // were read, are counted for good (the last may still grow).
        if tail.problems().is_empty() {
            let last = tail.segments().len().saturating_sub(1);
            for ((s, w), c) in tail.segments().iter().zip(&tail_watch).zip(tail_counts).take(last) {
                let unchanged = stamps
                    .get(s.path())
                    .filter(|st| Some(*st) == file_stamp(s.path()).as_ref() && st.len == s.file_len());
                let (Some(stamp), SegmentEnd::Clean) = (unchanged, s.end()) else {
                    break;
                };
                self.closed.push((c, stamp.clone()));
                self.closed_base = Some(s.header().base);
                self.closed_watch.add(w);
            }
        }
        Ok(snapshot)
    }
}

impl WatchSnapshot {
    /// This snapshot with the rates since `prev`, an earlier snapshot of the same log.
    pub fn with_rates_since(mut self, prev: &WatchSnapshot) -> WatchSnapshot {
        let seconds = self.taken_at_ns.saturating_sub(prev.taken_at_ns) as f64 / 1e9;
        let per_s = |now: u64, then: u64| {
            if seconds > 0.0 {
                now.saturating_sub(then) as f64 / seconds
            } else {
                0.0
            }
        };
        let by_type = self
            .info
            .records_by_type
            .iter()
            .map(|(kind, &n)| {
                let then = prev.info.records_by_type.get(kind).copied().unwrap_or(0);
                let bytes = self.bytes_by_type.get(kind).copied().unwrap_or(0);
                let bytes_then = prev.bytes_by_type.get(kind).copied().unwrap_or(0);
                (
                    *kind,
                    TypeRate {
                        records_per_s: per_s(n, then),
                        bytes_per_s: per_s(bytes, bytes_then),
                    },
                )
            })
            .collect();
        self.rates = Some(Rates {
            seconds,
            records_per_s: per_s(self.info.records, prev.info.records),
            bytes_per_s: per_s(self.info.file_bytes, prev.info.file_bytes),
            by_type,
        });
        self
    }
}

/// A copy of the watched state on a CUDA device, kept current as the log grows: replayed from
/// the checkpoint and the log once (the replay front door's GPU path), then, at each
/// [`DeviceMirror::follow`], the records after the last one applied are uploaded, checked on the
/// device and applied to the pages where they are. It follows records that write pages; one
/// that creates, deletes or resizes a page after the start stops it (a new mirror replays it).
pub struct DeviceMirror {
    store: crate::gpu::store::DevicePageStore,
    paths: Vec<PathBuf>,
    /// The checkpoint's head: the sections and metadata a plan is made against.
    head: crate::format::checkpoint::CheckpointHead,
    next_seq: u64,
    /// The segment file that holds the last record applied, as it was then: a log replaced
    /// since (`compact`, a repair, another log renamed into place) no longer has it.
    applied_in: Option<SegmentMark>,
    records_applied: u64,
    last_apply_ms: f64,
}

/// A segment file as a [`DeviceMirror`] last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentMark {
    path: PathBuf,
    inode: u64,
    segment_no: u64,
    first_seq: u64,
}

impl SegmentMark {
    /// The segment among `paths` that holds record `seq` (the last whose first record is at
    /// most `seq`), read from the headers backward.
    fn holding(paths: &[PathBuf], seq: u64) -> Result<Option<SegmentMark>> {
        for path in expand_paths(paths)?.into_iter().rev() {
            let header = crate::format::log::read_segment_header(&path)?;
            if header.first_seq <= seq {
                return Ok(Some(SegmentMark::of(path, header.segment_no, header.first_seq)?));
            }
        }
        Ok(None)
    }

    fn of(path: PathBuf, segment_no: u64, first_seq: u64) -> Result<SegmentMark> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&path)
            .map_err(|e| crate::error::Error::io(&path, e))?
            .ino();
        Ok(SegmentMark {
            path,
            inode,
            segment_no,
            first_seq,
        })
    }

    /// Whether the file is still the one seen: same inode, same header.
    fn still_there(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode)
            && crate::format::log::read_segment_header(&self.path)
                .is_ok_and(|h| h.segment_no == self.segment_no && h.first_seq == self.first_seq)
    }
}

/// What a [`DeviceMirror`] holds and has done.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// The device, as `cuda:N`.
    pub device: String,
    /// Its name.
    pub name: String,
    /// The last record applied to the copy (`None` while no record has been).
    pub applied_through_seq: Option<u64>,
    /// Records applied since the copy was made (the replay's included).
    pub records_applied: u64,
    /// Milliseconds the last replay or follow took.
    pub last_apply_ms: f64,
    /// Pages of the copy in device (or device-mapped) memory.
    pub pages_resident: u64,
    /// Their bytes.
    pub bytes_resident: u64,
    /// Device memory in use, by every process (total less free, as the driver tells).
    pub memory_used_bytes: u64,
    /// The device's memory.
    pub memory_total_bytes: u64,
}

impl DeviceMirror {
    /// Replays `checkpoint` plus the log at `log` onto device `ordinal` (opened here, or the
    /// device `opened` when given) and keeps the pages there.
    pub fn start(
        checkpoint: &Path,
        log: &[PathBuf],
        ordinal: usize,
        opened: Option<std::sync::Arc<crate::gpu::Gpu>>,
    ) -> Result<DeviceMirror> {
        use crate::replay::{Device, ReplayOptions};
        let start = std::time::Instant::now();
        let o = ReplayOptions {
            device: Device::Cuda(ordinal),
            opened,
            ..Default::default()
        };
        let replayed = crate::replay::run(checkpoint, log, &o)?;
        let summary = replayed.report.summary().clone();
        let store = replayed
            .device_pages
            .into_iter()
            .next()
            .ok_or_else(|| crate::error::Error::Invalid("a replay onto one device kept no pages".into()))?;
        let next_seq = match summary.last_seq {
            Some(seq) => seq + 1,
            None => match expand_paths(log)?.first() {
                Some(first) => crate::format::log::read_segment_header(first)?.first_seq,
                None => 0,
            },
        };
        let applied_in = match summary.last_seq {
            Some(seq) => SegmentMark::holding(log, seq)?,
            None => None,
        };
        Ok(DeviceMirror {
            store,
            paths: log.to_vec(),
            head: Checkpoint::open(checkpoint)?.head().clone(),
            next_seq,
            applied_in,
            records_applied: summary.records,
            last_apply_ms: crate::timing::ms(start),
        })
    }

    /// Applies the records appended since the last call (whole groups only, as every reader
    /// sees them) and says where the copy stands. Fails, leaving the copy as it was, when the
    /// log no longer continues from the last record applied (replaced by `compact`, or another
    /// log), when a new record creates, deletes or resizes a page, or when one is damaged.
    pub fn follow(&mut self) -> Result<DeviceStatus> {
        use crate::format::record::{TYPE_CREATE, TYPE_DELETE, TYPE_RESIZE};
        let start = std::time::Instant::now();
        let from = self.next_seq;
        let replaced = |path: &Path| {
            crate::error::Error::Invalid(format!(
                "{}: the log no longer continues from record {from}, which the device copy has \
                 reached (replaced, or compacted): start again",
                path.display()
            ))
        };
        if let Some(mark) = &self.applied_in
            && !mark.still_there()
        {
            return Err(replaced(&mark.path));
        }
        let mut log = Log::open_deferred_from(&self.paths, from)?;
        log.check()?;
        if let Some(first) = log.segments().first()
            && (first.header().first_seq > from || first.header().base != self.store.base)
        {
            return Err(replaced(first.path()));
        }
        let mut new = 0u64;
        for seg in log.segments() {
            for f in seg.frames().iter().filter(|f| f.seq >= from) {
                if matches!(f.kind, TYPE_CREATE | TYPE_DELETE | TYPE_RESIZE) {
                    return Err(crate::error::Error::Invalid(format!(
                        "{}: at byte offset {}: record {} creates, deletes or resizes a page, which \
                         the device copy does not follow: start again to replay it",
                        seg.path().display(),
                        f.offset,
                        f.seq
                    )));
                }
                new += 1;
            }
        }
        if new > 0 {
            log.drop_segments_before(from);
            let head = self.current_head();
            let (summary, _) = self
                .store
                .apply_log_from(&log, &head, from, crate::replay::ReplayLimit::default())?;
            if let Some(seq) = summary.last_seq {
                self.next_seq = seq + 1;
                let holding = log.segments().iter().rev().find(|s| s.header().first_seq <= seq);
                if let Some(s) = holding {
                    self.applied_in = Some(SegmentMark::of(
                        s.path().to_owned(),
                        s.header().segment_no,
                        s.header().first_seq,
                    )?);
                }
            }
            self.records_applied += summary.records;
            self.last_apply_ms = crate::timing::ms(start);
        }
        self.status()
    }

    /// The checkpoint's head with the pages as the copy holds them now (their epochs and
    /// lengths moved on with the records applied).
    fn current_head(&self) -> crate::format::checkpoint::CheckpointHead {
        let mut head = self.head.clone();
        head.pages = self
            .store
            .pages
            .iter()
            .map(|(&id, p)| crate::format::checkpoint::PageEntry {
                id,
                offset: 0,
                len: p.len,
                epoch: p.epoch,
                crc32c: p.crc.unwrap_or(0),
                meta: p.meta.clone(),
            })
            .collect();
        head
    }

    /// Where the copy stands, and the device's memory.
    pub fn status(&self) -> Result<DeviceStatus> {
        use crate::gpu::store::PageResidency;
        let gpu = self.store.gpu();
        gpu.ctx.bind_to_thread().map_err(crate::gpu::driver::gpu_err)?;
        let (free, total) = gpu.ctx.mem_get_info().map_err(crate::gpu::driver::gpu_err)?;
        let resident = self
            .store
            .pages
            .values()
            .filter(|p| p.residency != PageResidency::Evicted);
        let (pages, bytes) = resident.fold((0u64, 0u64), |(n, b), p| (n + 1, b + p.len));
        Ok(DeviceStatus {
            device: format!("cuda:{}", gpu.ordinal),
            name: gpu.name.clone(),
            applied_through_seq: self.next_seq.checked_sub(1).filter(|_| self.records_applied > 0),
            records_applied: self.records_applied,
            last_apply_ms: self.last_apply_ms,
            pages_resident: pages,
            bytes_resident: bytes,
            memory_used_bytes: (total - free) as u64,
            memory_total_bytes: total as u64,
        })
    }

    /// The pages on the device.
    pub fn store(&self) -> &crate::gpu::store::DevicePageStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::log::{LogOptions, LogWriter};
    use crate::format::record::{Delta, Op};
    use crate::page::StateHash;

    fn delta(page_id: u64, epoch: u64) -> Delta<'static> {
        Delta {
            page_id,
            epoch,
            timestamp_ns: 0,
            source: "test".into(),
            op: Op::Sparse(vec![(0, &b"ab"[..])]),
        }
    }

    #[test]
    fn a_snapshot_counts_pages_written_most_first_and_rates_from_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let mut w = LogWriter::create(&log, StateHash([7; 32]), 1, LogOptions::default()).unwrap();
        for (page, epoch) in [(3, 1), (5, 2), (3, 3)] {
            w.append(&delta(page, epoch)).unwrap();
        }
        w.sync().unwrap();
        let first = snapshot(std::slice::from_ref(&log), None, 10).unwrap();
        assert_eq!(first.info.records, 3);
        assert_eq!(first.last_epoch, Some(3));
        let pages: Vec<(u64, u64)> = first.top_pages.iter().map(|p| (p.page_id, p.records)).collect();
        assert_eq!(pages, [(3, 2), (5, 1)]);
        let checked = first.tail.checked_through.as_ref().expect("a record");
        assert_eq!(checked.seq, 3);
        assert_eq!(checked.end_offset, std::fs::metadata(&checked.segment).unwrap().len());
        assert!(checked.record_crc32c.is_some());
        // This process holds the writer lock, and its pid file names it.
        let writer = first.tail.writer.as_ref().expect("a writer");
        assert_eq!((writer.pid, writer.running), (std::process::id(), true));
        w.append(&delta(5, 4)).unwrap();
        w.finish().unwrap();
        let second = snapshot(std::slice::from_ref(&log), None, 1)
            .unwrap()
            .with_rates_since(&first);
        assert_eq!(second.top_pages.len(), 1);
        assert!(second.tail.writer.is_none(), "the lock was let go");
        let rates = second.rates.expect("rates");
        assert!(rates.seconds > 0.0);
        assert!((rates.records_per_s * rates.seconds - 1.0).abs() < 1e-6, "{rates:?}");
    }

    /// The figures of a snapshot that do not depend on when it was taken.
    fn figures(s: &WatchSnapshot) -> String {
        let mut v = serde_json::to_value(s).unwrap();
        for k in ["taken_at_ns", "segments_read"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v.to_string()
    }

    /// A log whose segments hold a few records each, and its writer.
    fn small_segments() -> (tempfile::TempDir, PathBuf, LogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let options = LogOptions {
            segment_size: 200,
            ..LogOptions::default()
        };
        let w = LogWriter::create(&log, StateHash([7; 32]), 1, options).unwrap();
        (dir, log, w)
    }

    #[test]
    fn a_follower_reads_only_the_last_segment_it_saw_and_shows_what_a_fresh_snapshot_shows() {
        let (_dir, log, mut w) = small_segments();
        let logs = std::slice::from_ref(&log);
        let mut follower = LogFollower::new(logs, 3);
        let mut epoch = 0;
        for round in 0..4 {
            for _ in 0..6 {
                epoch += 1;
                w.append(&delta(epoch % 4, epoch)).unwrap();
            }
            w.sync().unwrap();
            let followed = follower.snapshot(None).unwrap();
            let fresh = snapshot(logs, None, 3).unwrap();
            assert_eq!(figures(&followed), figures(&fresh), "round {round}");
            assert_eq!(fresh.segments_read, fresh.info.segments.len() as u64);
            if round > 0 {
                // The segment that was last at the previous snapshot and the new ones.
                assert!(
                    followed.segments_read < fresh.segments_read,
                    "round {round}: {}",
                    followed.segments_read
                );
            }
        }
        assert!(
            follower.snapshot(None).unwrap().segments_read == 1,
            "nothing new: the last segment only"
        );
        w.finish().unwrap();
    }

    #[test]
    fn a_follower_reads_the_whole_log_again_when_a_counted_segment_changed() {
        let (_dir, log, mut w) = small_segments();
        let logs = std::slice::from_ref(&log);
        for epoch in 1..=12 {
            w.append(&delta(epoch % 3, epoch)).unwrap();
        }
        w.finish().unwrap();
        let mut follower = LogFollower::new(logs, 3);
        let first = follower.snapshot(None).unwrap();
        assert!(first.info.segments.len() >= 3 && first.info.problems.is_empty());
        // A byte of the first segment's last record, damaged in place.
        let seg = &first.info.segments[0];
        let mut bytes = std::fs::read(&seg.path).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0xFF;
        std::fs::write(&seg.path, &bytes).unwrap();
        // A write within the clock's tick may leave the modification time as it was: set one.
        let f = std::fs::File::options().write(true).open(&seg.path).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        drop(f);
        let after = follower.snapshot(None).unwrap();
        assert_eq!(after.segments_read, first.info.segments.len() as u64);
        assert!(
            after
                .info
                .problems
                .iter()
                .any(|p| p.contains(&seg.path.display().to_string())),
            "{:?}",
            after.info.problems
        );
        assert_eq!(figures(&after), figures(&snapshot(logs, None, 3).unwrap()));
    }

    /// What a device copy checks before each follow: the segment holding the last record it
    /// applied is found from the headers, and is no longer "there" once the log is replaced.
    #[test]
    fn the_segment_holding_a_record_is_found_and_a_replaced_log_no_longer_has_it() {
        let (dir, log, mut w) = small_segments();
        let logs = std::slice::from_ref(&log);
        for epoch in 1..=12 {
            w.append(&delta(epoch % 3, epoch)).unwrap();
        }
        w.finish().unwrap();
        let opened = Log::open(logs).unwrap();
        assert!(opened.segments().len() >= 3);
        for seg in opened.segments() {
            let h = seg.header();
            let mark = SegmentMark::holding(logs, h.first_seq).unwrap().unwrap();
            assert_eq!((mark.path.as_path(), mark.first_seq), (seg.path(), h.first_seq));
            assert!(mark.still_there());
        }
        assert_eq!(SegmentMark::holding(logs, 0).unwrap(), None, "before the first record");
        let last = SegmentMark::holding(logs, u64::MAX).unwrap().unwrap();
        assert_eq!(last.path, opened.segments().last().unwrap().path());
        // The same bytes in new files, renamed into place.
        let copy = dir.path().join("copy.log");
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(&log).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::remove_dir_all(&log).unwrap();
        std::fs::rename(&copy, &log).unwrap();
        assert!(!last.still_there());
    }
}
