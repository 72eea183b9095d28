//! `mmsb watch`: snapshots of a log that another process may be appending to.
//!
//! A snapshot opens the log as every reader does (whole records and closed groups only, each
//! frame's checksum checked, a segment's read lock held shared while it is mapped), so it never
//! shows half a record or half a group, and an appender never waits for it: appends take no
//! segment lock. The writer is named from the lock's pid file, read without touching the lock.
//! Rates come from two snapshots ([`WatchSnapshot::with_rates_since`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::format::checkpoint::Checkpoint;
use crate::format::lock;
use crate::format::log::Log;
use crate::format::record::{changes_no_page, kind_name};
use crate::ops::inspect::{LogInfo, log_info};

/// One look at a log.
#[derive(Debug, Clone, Serialize)]
pub struct WatchSnapshot {
    /// The log directory (or first segment) watched.
    pub log: PathBuf,
    /// When the snapshot was taken, ns since the Unix epoch.
    pub taken_at_ns: u64,
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
/// most, named from `ckpt` when one is given (opened once by a caller that takes many).
pub fn snapshot(log: &[PathBuf], ckpt: Option<&Checkpoint>, top: usize) -> Result<WatchSnapshot> {
    let taken_at_ns = crate::timing::now_ns();
    let opened = Log::open(log)?;
    let info = log_info(&opened);
    let mut bytes_by_type = BTreeMap::new();
    let mut pages: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut last_epoch = None;
    let mut checked_through = None;
    for s in opened.segments() {
        for f in s.frames() {
            *bytes_by_type.entry(kind_name(f.kind)).or_insert(0) += f.frame_len();
            checked_through = Some(CheckedThrough {
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
                let e = pages.entry(page).or_default();
                e.0 += 1;
                e.1 += f.payload_len;
                last_epoch = Some(epoch);
            }
        }
    }
    let mut top_pages: Vec<PageWrites> = pages
        .into_iter()
        .map(|(page_id, (records, stored_bytes))| PageWrites {
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
    top_pages.truncate(top);
    if let Some(c) = ckpt {
        for p in &mut top_pages {
            p.name = c.head().page(p.page_id).and_then(|e| e.meta.name.clone());
        }
    }
    let dir = log.first().map(|p| lock::log_dir(p));
    let writer = dir.as_deref().and_then(lock::writer_pid).map(|pid| Writer {
        pid,
        running: Path::new(&format!("/proc/{pid}")).exists(),
    });
    Ok(WatchSnapshot {
        log: log.first().cloned().unwrap_or_default(),
        taken_at_ns,
        last_epoch,
        bytes_by_type,
        top_pages,
        tail: TailHealth {
            checked_through,
            torn_tail: opened.torn_tail().map(|t| TornTailInfo {
                segment: t.path.clone(),
                offset: t.offset,
                len: t.len,
            }),
            writer,
        },
        base_matches_checkpoint: ckpt.and_then(|c| info.base_state_hash.map(|b| b == c.state_hash())),
        info,
        rates: None,
    })
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
}
