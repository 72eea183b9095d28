//! `inspect`: what is inside a checkpoint or a log, as plain data the binary prints as a table
//! or as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::format::checkpoint::{
    Checkpoint, PageEntry, SECTION_DEPENDENCY_GRAPH, SECTION_METADATA, SECTION_PAGE_INDEX,
};
use crate::format::log::{FLAG_ZSTD, Log, Segment, SegmentEnd};
use crate::format::record::{Delta, LogPageLens, Op, kind_name};
use crate::graph::{Graph, GraphStats, has_graph, read_history};
use crate::page::{PageMeta, Residency, StateHash};
use crate::select::PageSelector;

/// One page, as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PageInfo<'a> {
    /// Page id.
    pub id: u64,
    /// Name, if any.
    pub name: Option<&'a str>,
    /// dtype, if the page holds a tensor.
    pub dtype: Option<&'a str>,
    /// Shape, if the page holds a tensor.
    pub shape: Option<&'a [u64]>,
    /// Length in bytes.
    pub len: u64,
    /// Epoch.
    pub epoch: u64,
    /// CRC32C, 8 hex digits.
    pub crc32c: String,
    /// Residency hint.
    pub residency: Residency,
    /// Offset of the page's bytes in the file.
    pub offset: u64,
}

impl<'a> PageInfo<'a> {
    /// What `inspect` shows of an index entry.
    pub fn of(p: &'a PageEntry) -> PageInfo<'a> {
        PageInfo {
            id: p.id,
            name: p.meta.name.as_deref(),
            dtype: p.meta.tensor.as_ref().map(|t| t.dtype.as_str()),
            shape: p.meta.tensor.as_ref().map(|t| &t.shape[..]),
            len: p.len,
            epoch: p.epoch,
            crc32c: format!("{:08x}", p.crc32c),
            residency: p.meta.residency,
            offset: p.offset,
        }
    }
}

/// A checkpoint's pages (those a selector picks), listed from its index as they are printed:
/// a million pages cost no more memory than the index itself.
pub struct PageList(Checkpoint, PageSelector);

impl PageList {
    /// The selected pages, in id order.
    pub fn iter(&self) -> impl Iterator<Item = PageInfo<'_>> {
        self.0
            .pages()
            .iter()
            .filter(|p| self.1.matches(p.id, &p.meta))
            .map(PageInfo::of)
    }
}

impl std::fmt::Debug for PageList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageList({} pages)", self.0.pages().len())
    }
}

impl Serialize for PageList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One section of a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SectionInfo {
    /// Section kind number.
    pub kind: u32,
    /// What the kind is.
    pub name: &'static str,
    /// Whether readers must know it.
    pub required: bool,
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A checkpoint's header, sections and page table.
#[derive(Debug, Serialize)]
pub struct CheckpointInfo {
    /// Path.
    pub path: PathBuf,
    /// `"checkpoint"`.
    pub kind: &'static str,
    /// Format version, `major.minor`.
    pub version: String,
    /// File length.
    pub file_bytes: u64,
    /// Offset of the first page byte.
    pub data_offset: u64,
    /// Number of pages.
    pub page_count: u64,
    /// Page bytes, without padding.
    pub data_bytes: u64,
    /// State hash.
    pub state_hash: StateHash,
    /// Sections.
    pub sections: Vec<SectionInfo>,
    /// File-level metadata.
    pub metadata: BTreeMap<String, String>,
    /// Pages, in id order.
    pub pages: PageList,
}

/// Reads a checkpoint's header and index (page bytes are not read); the page list holds the
/// pages `pages` selects.
pub fn inspect_checkpoint(path: &Path, pages: PageSelector) -> Result<CheckpointInfo> {
    let c = Checkpoint::open(path)?;
    let h = c.head();
    Ok(CheckpointInfo {
        path: path.to_owned(),
        kind: "checkpoint",
        version: format!("{}.{}", h.major, h.minor),
        file_bytes: h.file_len,
        data_offset: h.data_offset,
        page_count: h.pages.len() as u64,
        data_bytes: h.data_bytes(),
        state_hash: h.state_hash(),
        sections: h
            .sections
            .iter()
            .map(|s| SectionInfo {
                kind: s.kind,
                name: match s.kind {
                    SECTION_PAGE_INDEX => "page index",
                    SECTION_METADATA => "metadata",
                    SECTION_DEPENDENCY_GRAPH => "dependency graph",
                    _ => "unknown (skipped)",
                },
                required: s.flags & crate::format::checkpoint::SECTION_FLAG_REQUIRED != 0,
                offset: s.offset,
                len: s.len,
            })
            .collect(),
        metadata: h.metadata.clone(),
        pages: PageList(c, pages),
    })
}

/// One segment of a log.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    /// Path.
    pub path: PathBuf,
    /// Format version.
    pub version: String,
    /// Segment number.
    pub segment_no: u64,
    /// First sequence number.
    pub first_seq: u64,
    /// Whole records.
    pub records: u64,
    /// File length.
    pub file_bytes: u64,
    /// `clean`, `torn_tail` or `corrupt`.
    pub end: &'static str,
}

/// A log's segments and record statistics.
#[derive(Debug, Clone, Serialize)]
pub struct LogInfo {
    /// `"log"`.
    pub kind: &'static str,
    /// The state the log applies to.
    pub base_state_hash: Option<StateHash>,
    /// Segments, in order.
    pub segments: Vec<SegmentInfo>,
    /// Whole records.
    pub records: u64,
    /// Records per type name.
    pub records_by_type: BTreeMap<&'static str, u64>,
    /// First sequence number.
    pub first_seq: Option<u64>,
    /// Last whole record's sequence number.
    pub last_seq: Option<u64>,
    /// Bytes of all segment files.
    pub file_bytes: u64,
    /// Payload bytes as stored.
    pub stored_payload_bytes: u64,
    /// Payload bytes after decompression.
    pub payload_bytes: u64,
    /// `payload_bytes / stored_payload_bytes` (1.0 without compression).
    pub compression_ratio: f64,
    /// Records stored compressed.
    pub compressed_records: u64,
    /// Problems found while reading (corruption, torn tail), as messages.
    pub problems: Vec<String>,
}

/// One record, as `inspect --records` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordInfo {
    /// Sequence number.
    pub seq: u64,
    /// Segment number.
    pub segment_no: u64,
    /// Offset of the frame in its segment.
    pub offset: u64,
    /// Type name.
    pub kind: &'static str,
    /// Page id.
    pub page_id: Option<u64>,
    /// Epoch.
    pub epoch: Option<u64>,
    /// Writer's timestamp, ns since the Unix epoch.
    pub timestamp_ns: Option<u64>,
    /// Source tag.
    pub source: Option<String>,
    /// Payload bytes as stored.
    pub stored_bytes: u64,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// Bytes the record writes into its page.
    pub written_bytes: u64,
    /// A short description of the operation.
    pub detail: String,
}

/// Which records `inspect --records` lists.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Lowest sequence number.
    pub from_seq: Option<u64>,
    /// Highest sequence number.
    pub to_seq: Option<u64>,
    /// Only records for the pages this selects (by id, or by name: the names a checkpoint
    /// given beside the log has, and those the log's CREATE records give).
    pub pages: PageSelector,
    /// Page names known from a checkpoint, for name globs.
    pub names: std::collections::HashMap<u64, String>,
}

impl RecordFilter {
    /// Learns the names of `checkpoint`'s pages, for name globs, unless names are known
    /// already or nothing is selected by pattern (then no name is ever looked up).
    pub fn learn_names(&mut self, checkpoint: &CheckpointInfo) {
        if self.names.is_empty() && !self.pages.is_all() {
            self.names = checkpoint
                .pages
                .iter()
                .filter_map(|p| Some((p.id, p.name?.to_string())))
                .collect();
        }
    }
}

/// Reads a log's segments; with `records`, also decodes and lists the records it selects.
pub fn inspect_log(paths: &[PathBuf], records: Option<&RecordFilter>) -> Result<(LogInfo, Vec<RecordInfo>)> {
    let log = Log::open(paths)?;
    let mut listed = Vec::new();
    if let Some(filter) = records {
        let mut lens = LogPageLens::default();
        let mut created = std::collections::HashMap::new();
        for rec in log.records() {
            let seq = rec.frame.seq;
            if filter.from_seq.is_some_and(|n| seq < n) || filter.to_seq.is_some_and(|n| seq > n) {
                continue;
            }
            let delta = rec.delta_for_page(|id| lens.target(id))?;
            if let Some(d) = &delta {
                lens.note(d);
            }
            if let Some(Delta {
                page_id,
                op: Op::Create { meta, .. },
                ..
            }) = &delta
            {
                created.insert(*page_id, meta.clone());
            }
            let selected = |d: &Delta<'_>| {
                let named = |n: &String| PageMeta {
                    name: Some(n.clone()),
                    ..Default::default()
                };
                let meta = created
                    .get(&d.page_id)
                    .cloned()
                    .or_else(|| filter.names.get(&d.page_id).map(named))
                    .unwrap_or_default();
                filter.pages.matches(d.page_id, &meta)
            };
            if !filter.pages.is_all() && !delta.as_ref().is_some_and(selected) {
                continue;
            }
            let detail = match delta.as_ref().map(|d| &d.op) {
                None => "optional record, not known to this build".to_string(),
                Some(Op::Create { len, meta }) => format!(
                    "create {len} bytes{}",
                    meta.name.as_ref().map(|n| format!(" named {n}")).unwrap_or_default()
                ),
                Some(Op::Delete) => "delete".into(),
                Some(Op::Resize { len }) => format!("resize to {len} bytes"),
                Some(Op::Full(d)) => format!("{} bytes", d.len()),
                Some(Op::Sparse(r)) => format!("{} ranges, first at {}", r.len(), r.first().map_or(0, |x| x.0)),
                Some(Op::Masked { offset, len, .. }) => format!("mask over {offset}+{len}"),
                Some(Op::Fill { offset, len, value }) => format!("fill {offset}+{len} with {value:#04x}"),
            };
            listed.push(RecordInfo {
                seq,
                segment_no: rec.segment.header().segment_no,
                offset: rec.frame.offset,
                kind: kind_name(rec.frame.kind),
                page_id: delta.as_ref().map(|d| d.page_id),
                epoch: delta.as_ref().map(|d| d.epoch),
                timestamp_ns: delta.as_ref().map(|d| d.timestamp_ns),
                source: delta.as_ref().map(|d| d.source.to_string()),
                stored_bytes: rec.frame.payload_len,
                compressed: rec.frame.flags & FLAG_ZSTD != 0,
                written_bytes: delta.as_ref().map_or(0, |d| d.written_bytes()),
                detail,
            });
        }
    }
    Ok((log_info(&log), listed))
}

/// The statistics of a log's segments and records.
pub fn log_info(log: &Log) -> LogInfo {
    let counts: Vec<SegmentCounts> = log.segments().iter().map(|s| segment_counts(log, s)).collect();
    log_info_of(&counts, log)
}

/// What one segment of a log holds, counted once: what [`LogInfo`] sums over the segments, kept
/// by a follower ([`crate::ops::watch::LogFollower`]) for the segments that no longer change.
#[derive(Debug, Clone)]
pub struct SegmentCounts {
    /// The segment.
    pub info: SegmentInfo,
    /// Records per type name.
    pub records_by_type: BTreeMap<&'static str, u64>,
    /// Payload bytes as stored.
    pub stored_payload_bytes: u64,
    /// Payload bytes after decompression.
    pub payload_bytes: u64,
    /// Records stored compressed.
    pub compressed_records: u64,
}

/// Counts the records of `s`, a segment of `log`.
pub fn segment_counts(log: &Log, s: &Segment) -> SegmentCounts {
    let mut c = SegmentCounts {
        info: SegmentInfo {
            path: s.path().to_owned(),
            version: format!("{}.{}", s.header().major, s.header().minor),
            segment_no: s.header().segment_no,
            first_seq: s.header().first_seq,
            records: s.frames().len() as u64,
            file_bytes: s.file_len(),
            end: match s.end() {
                SegmentEnd::Clean => "clean",
                SegmentEnd::Damaged { .. } if log.torn_tail().is_some_and(|t| t.path == s.path()) => "torn_tail",
                SegmentEnd::Damaged { .. } => "corrupt",
            },
        },
        records_by_type: BTreeMap::new(),
        stored_payload_bytes: 0,
        payload_bytes: 0,
        compressed_records: 0,
    };
    for f in s.frames() {
        *c.records_by_type.entry(kind_name(f.kind)).or_insert(0) += 1;
        c.stored_payload_bytes += f.payload_len;
        if f.flags & FLAG_ZSTD != 0 {
            c.compressed_records += 1;
            let start = f.payload_offset() as usize;
            // The content size is in the zstd frame header: no need to decompress to count.
            let size = zstd::zstd_safe::get_frame_content_size(&s.bytes()[start..start + f.payload_len as usize]);
            c.payload_bytes += size.ok().flatten().unwrap_or(0);
        } else {
            c.payload_bytes += f.payload_len;
        }
    }
    c
}

/// The statistics of a log from the counts of all its segments (in order), the last of them
/// opened as `tail` (its base, last record, problems and torn tail; a follower opens only the
/// segments it has not counted for good).
pub fn log_info_of(counts: &[SegmentCounts], tail: &Log) -> LogInfo {
    let mut problems: Vec<String> = tail.problems().iter().map(|e| e.to_string()).collect();
    if let Some(t) = tail.torn_tail() {
        problems.push(format!(
            "{}: at byte offset {}: torn tail of {} bytes",
            t.path.display(),
            t.offset,
            t.len
        ));
    }
    let mut records_by_type = BTreeMap::new();
    for c in counts {
        for (kind, n) in &c.records_by_type {
            *records_by_type.entry(*kind).or_insert(0) += n;
        }
    }
    let stored: u64 = counts.iter().map(|c| c.stored_payload_bytes).sum();
    let decoded: u64 = counts.iter().map(|c| c.payload_bytes).sum();
    LogInfo {
        kind: "log",
        base_state_hash: tail.base(),
        records: counts.iter().map(|c| c.info.records).sum(),
        file_bytes: counts.iter().map(|c| c.info.file_bytes).sum(),
        records_by_type,
        first_seq: counts.iter().next().map(|c| c.info.first_seq),
        last_seq: tail.last_seq(),
        stored_payload_bytes: stored,
        payload_bytes: decoded,
        compression_ratio: if stored == 0 {
            1.0
        } else {
            decoded as f64 / stored as f64
        },
        compressed_records: counts.iter().map(|c| c.compressed_records).sum(),
        segments: counts.iter().map(|c| c.info.clone()).collect(),
        problems,
    }
}

/// The dependency graph of a checkpoint after its log (when given): its shape, and the graph
/// itself for `--graph dot`. `None` when the state has no derived page.
pub fn inspect_graph(ckpt: &Path, logs: &[PathBuf]) -> Result<Option<(GraphStats, Graph)>> {
    graph_after(Checkpoint::open(ckpt)?.head(), logs)
}

impl CheckpointInfo {
    /// [`inspect_graph`] for the checkpoint this describes (its index is not read again).
    pub fn graph(&self, logs: &[PathBuf]) -> Result<Option<(GraphStats, Graph)>> {
        graph_after(self.pages.0.head(), logs)
    }
}

fn graph_after(
    head: &crate::format::checkpoint::CheckpointHead,
    logs: &[PathBuf],
) -> Result<Option<(GraphStats, Graph)>> {
    let log = if logs.is_empty() { None } else { Some(Log::open(logs)?) };
    if !has_graph(head, log.as_ref()) {
        return Ok(None);
    }
    let h = read_history(head, log.as_ref(), None)?;
    let stats = h.graph.stats();
    Ok((stats.derived_pages > 0).then_some((stats, h.graph)))
}
