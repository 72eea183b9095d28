//! Checkpoint files: a header block, checksummed sections (the page index first), then every
//! page's bytes at a 4096-aligned offset. See docs/FORMAT.md, "Checkpoint file".

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::graph::Derivation;
use super::{
    ALIGN, CHECKPOINT_MINOR, Cursor, FORMAT_MAJOR, GRAPH_CHECKPOINT_MINOR, ParseError, PutLe, align_up, bad_field,
    check_zero, crc32c,
};
use crate::error::{Corruption, Error, Result};
use crate::fsutil;
use crate::page::{PageMeta, Residency, StateHash, TensorInfo};

/// Magic bytes at offset 0 of a checkpoint.
pub const MAGIC: [u8; 8] = *b"MMSBCKPT";
/// Length of the fixed part of the header, before the section table.
pub const HEADER_FIXED_LEN: usize = 64;
/// Length of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 32;
/// Most sections a header may list (the table and its CRC must fit in the 4096-byte block).
pub const MAX_SECTIONS: u32 = 64;
/// Length of the page-index section's prefix (entry count, heap length).
pub const INDEX_PREFIX_LEN: usize = 16;
/// Length of one page-index entry.
pub const INDEX_ENTRY_LEN: usize = 64;
/// Section kind: the page index (required).
pub const SECTION_PAGE_INDEX: u32 = 1;
/// Section kind: file-level metadata, a JSON object of strings (safetensors `__metadata__`).
pub const SECTION_METADATA: u32 = 2;
/// Section kind: the page dependency graph (1.2).
pub const SECTION_DEPENDENCY_GRAPH: u32 = 3;
/// Section flag: a reader that does not know the section's kind must refuse the file.
pub const SECTION_FLAG_REQUIRED: u32 = 1;

const ENTRY_FLAG_NAME: u8 = 1;
const ENTRY_FLAG_TENSOR: u8 = 2;
/// Dimensions a tensor may have; more is refused as corrupt.
pub const MAX_NDIM: u16 = 64;

/// One page as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageEntry {
    /// Page id, unique in the file.
    pub id: u64,
    /// Offset of the page's first byte in the file (a multiple of 4096).
    pub offset: u64,
    /// Length of the page in bytes.
    pub len: u64,
    /// The page's epoch.
    pub epoch: u64,
    /// CRC32C of the page's bytes.
    pub crc32c: u32,
    /// Name, tensor info and residency hint.
    pub meta: PageMeta,
}

/// One section-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Section kind (`SECTION_*`).
    pub kind: u32,
    /// Flags (`SECTION_FLAG_*`).
    pub flags: u32,
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC32C of the section's bytes.
    pub crc32c: u32,
}

/// The parsed header and index of a checkpoint: everything but the page bytes.
#[derive(Debug, Clone)]
pub struct CheckpointHead {
    /// Major format version.
    pub major: u16,
    /// Minor format version.
    pub minor: u16,
    /// File length the header records (equal to the real length once checked).
    pub file_len: u64,
    /// Offset of the first page byte.
    pub data_offset: u64,
    /// The section table as stored.
    pub sections: Vec<Section>,
    /// Pages in increasing id order.
    pub pages: Vec<PageEntry>,
    /// File-level metadata (safetensors `__metadata__` for imported files).
    pub metadata: BTreeMap<String, String>,
    /// The dependency graph section's derived pages, in increasing id order (empty without
    /// one).
    pub graph: Vec<Derivation>,
}

impl CheckpointHead {
    /// The state hash of the pages this checkpoint holds, from the index alone.
    pub fn state_hash(&self) -> StateHash {
        StateHash::compute(self.pages.iter().map(|p| (p.id, p.len, p.epoch, p.crc32c)))
    }

    /// Total bytes of page data (without padding).
    pub fn data_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.len).sum()
    }

    /// Finds a page by id (binary search: the index is sorted).
    pub fn page(&self, id: u64) -> Option<&PageEntry> {
        self.pages
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.pages[i])
    }

    /// Parses the header block and sections of a checkpoint.
    ///
    /// `prefix` holds at least the file's bytes up to the data offset (the whole mapped file
    /// will do); `file_len` is the real length of the file. Page bytes are not read.
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<CheckpointHead, ParseError> {
        let mut c = Cursor::new(prefix, 0);
        let minor = c.magic_and_version(MAGIC, "MMSBCKPT")?;
        let section_count = c.u32()?;
        if section_count > MAX_SECTIONS {
            return Err(bad_field(
                12,
                "section_count",
                section_count.into(),
                format!("at most {MAX_SECTIONS}"),
            ));
        }
        // The header CRC comes first among the checks on field values: a flipped bit in any
        // header field is reported as a checksum mismatch rather than as a strange value.
        let covered = HEADER_FIXED_LEN + SECTION_ENTRY_LEN * section_count as usize;
        let head = prefix.get(..covered + 4).ok_or_else(|| {
            ParseError::new(
                0,
                Corruption::Truncated {
                    needed: (covered + 4) as u64,
                    available: prefix.len() as u64,
                },
            )
        })?;
        let stored = u32::from_le_bytes(head[covered..].try_into().expect("4 bytes"));
        let computed = crc32c(&head[..covered]);
        if stored != computed {
            return Err(ParseError::new(
                covered as u64,
                Corruption::ChecksumMismatch {
                    what: "header".into(),
                    stored,
                    computed,
                },
            ));
        }
        let header_file_len = c.u64()?;
        let page_count = c.u64()?;
        let data_offset = c.u64()?;
        let flags = c.u32()?;
        let strict = super::is_known_minor(minor);
        if strict && flags != 0 {
            return Err(bad_field(
                40,
                "flags",
                flags.into(),
                "no flags are defined in version 1.0",
            ));
        }
        if strict {
            c.zeros(20, "header reserved bytes")?;
        } else {
            c.take(20)?;
        }
        if header_file_len != file_len {
            return Err(bad_field(
                16,
                "file_len",
                header_file_len,
                format!("the file is {file_len} bytes long"),
            ));
        }
        if data_offset % ALIGN != 0 || data_offset < ALIGN || data_offset > file_len {
            return Err(bad_field(
                32,
                "data_offset",
                data_offset,
                "must be a multiple of 4096, at least 4096, within the file",
            ));
        }
        check_zero(
            prefix.get(covered + 4..ALIGN as usize).ok_or_else(|| {
                ParseError::new(
                    covered as u64 + 4,
                    Corruption::Truncated {
                        needed: ALIGN,
                        available: prefix.len() as u64,
                    },
                )
            })?,
            covered as u64 + 4,
            "header block padding",
        )?;

        let mut sections = Vec::with_capacity(section_count as usize);
        let mut expected_offset = ALIGN;
        let mut index = None;
        let mut metadata = BTreeMap::new();
        let mut graph_section = None;
        for i in 0..section_count as usize {
            let at = (HEADER_FIXED_LEN + i * SECTION_ENTRY_LEN) as u64;
            let kind = c.u32()?;
            let sflags = c.u32()?;
            let offset = c.u64()?;
            let len = c.u64()?;
            let scrc = c.u32()?;
            if strict {
                c.zeros(4, "section entry reserved bytes")?;
            } else {
                c.take(4)?;
            }
            if offset != expected_offset {
                return Err(bad_field(
                    at + 8,
                    "section offset",
                    offset,
                    format!("sections are packed from 4096: expected {expected_offset}"),
                ));
            }
            let end = offset
                .checked_add(len)
                .filter(|&e| e <= data_offset)
                .ok_or_else(|| bad_field(at + 16, "section length", len, "section runs past the data offset"))?;
            expected_offset = end;
            let bytes = slice(prefix, offset, len)?;
            let computed = crc32c(bytes);
            if computed != scrc {
                return Err(ParseError::new(
                    offset,
                    Corruption::ChecksumMismatch {
                        what: format!("section {i} (kind {kind})"),
                        stored: scrc,
                        computed,
                    },
                ));
            }
            let section = Section {
                kind,
                flags: sflags,
                offset,
                len,
                crc32c: scrc,
            };
            match kind {
                SECTION_PAGE_INDEX => {
                    if index.is_some() {
                        return Err(bad_field(at, "section kind", kind.into(), "a second page index"));
                    }
                    index = Some(parse_index(bytes, offset, page_count)?);
                }
                SECTION_METADATA => {
                    if sections.iter().any(|s: &Section| s.kind == SECTION_METADATA) {
                        return Err(bad_field(at, "section kind", kind.into(), "a second metadata section"));
                    }
                    let text = std::str::from_utf8(bytes).map_err(|e| {
                        ParseError::new(
                            offset + e.valid_up_to() as u64,
                            Corruption::BadText {
                                what: "metadata section",
                                why: e.to_string(),
                            },
                        )
                    })?;
                    metadata = serde_json::from_str(text).map_err(|e| {
                        ParseError::new(
                            offset,
                            Corruption::BadText {
                                what: "metadata section",
                                why: e.to_string(),
                            },
                        )
                    })?;
                }
                // Parsed once the index is known: its pages are checked against it.
                SECTION_DEPENDENCY_GRAPH => {
                    if graph_section.is_some() {
                        return Err(bad_field(at, "section kind", kind.into(), "a second dependency graph"));
                    }
                    graph_section = Some((bytes, offset));
                }
                _ if sflags & SECTION_FLAG_REQUIRED != 0 => {
                    return Err(ParseError::new(at, Corruption::UnknownRequiredSection { kind }));
                }
                _ => {}
            }
            sections.push(section);
        }
        let index_end = expected_offset;
        if align_up(index_end) != Some(data_offset) {
            return Err(bad_field(
                32,
                "data_offset",
                data_offset,
                format!(
                    "must be the end of the last section rounded up to 4096 ({})",
                    align_up(index_end).unwrap_or(0)
                ),
            ));
        }
        check_zero(
            slice(prefix, index_end, data_offset - index_end)?,
            index_end,
            "padding after sections",
        )?;
        let pages = index.ok_or_else(|| {
            ParseError::new(
                12,
                Corruption::UnknownRequiredSection {
                    kind: SECTION_PAGE_INDEX,
                },
            )
        })?;

        // Canonical layout: pages in index order, each at the next 4096-aligned offset.
        let mut cursor = data_offset;
        for (i, p) in pages.iter().enumerate() {
            let at = ALIGN + (INDEX_PREFIX_LEN + i * INDEX_ENTRY_LEN) as u64 + 8;
            if p.offset != cursor {
                return Err(bad_field(
                    at,
                    "page offset",
                    p.offset,
                    format!("page {} must start at {cursor}", p.id),
                ));
            }
            let end = p.offset.checked_add(p.len).filter(|&e| e <= file_len).ok_or_else(|| {
                bad_field(
                    at + 8,
                    "page length",
                    p.len,
                    format!("page {} runs past the end of the file ({file_len} bytes)", p.id),
                )
            })?;
            cursor = align_up(end).ok_or_else(|| bad_field(at + 8, "page length", p.len, "overflow"))?;
        }
        if cursor != file_len {
            return Err(bad_field(
                16,
                "file_len",
                file_len,
                format!("the layout of the pages ends at {cursor}"),
            ));
        }
        let graph = match graph_section {
            Some((bytes, offset)) => {
                super::graph::parse_section(bytes, offset, |id| pages.binary_search_by_key(&id, |p| p.id).is_ok())?
            }
            None => Vec::new(),
        };
        Ok(CheckpointHead {
            major: FORMAT_MAJOR,
            minor,
            file_len,
            data_offset,
            sections,
            pages,
            metadata,
            graph,
        })
    }
}

fn slice(bytes: &[u8], offset: u64, len: u64) -> Result<&[u8], ParseError> {
    let end = offset.checked_add(len);
    match end.and_then(|e| bytes.get(offset as usize..e as usize)) {
        Some(s) if offset <= usize::MAX as u64 => Ok(s),
        _ => Err(ParseError::new(
            offset,
            Corruption::Truncated {
                needed: len,
                available: (bytes.len() as u64).saturating_sub(offset),
            },
        )),
    }
}

/// Parses a page index section (`bytes` starts at file offset `base`).
fn parse_index(bytes: &[u8], base: u64, page_count: u64) -> Result<Vec<PageEntry>, ParseError> {
    let mut c = Cursor::new(bytes, base);
    let count = c.u64()?;
    if count != page_count {
        return Err(bad_field(
            base,
            "entry_count",
            count,
            format!("the header says {page_count} pages"),
        ));
    }
    let heap_len = c.u64()?;
    let entries_len = count.checked_mul(INDEX_ENTRY_LEN as u64);
    let expected = entries_len
        .and_then(|e| e.checked_add(INDEX_PREFIX_LEN as u64))
        .and_then(|e| e.checked_add(heap_len));
    if expected != Some(bytes.len() as u64) {
        return Err(bad_field(
            base + 8,
            "heap_len",
            heap_len,
            format!(
                "16 + 64 * {count} + heap_len must equal the section length {}",
                bytes.len()
            ),
        ));
    }
    let heap_base = base + INDEX_PREFIX_LEN as u64 + entries_len.unwrap_or(0);
    let heap = &bytes[bytes.len() - heap_len as usize..];
    // count is bounded by the section length checked above, itself bounded by the file.
    let mut pages: Vec<PageEntry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let entry = decode_entry(&mut c, heap, heap_base, true)?;
        if let Some(prev) = pages.last()
            && entry.id <= prev.id
        {
            return Err(ParseError::new(
                c.offset() - INDEX_ENTRY_LEN as u64,
                Corruption::PageOrder {
                    previous: prev.id,
                    id: entry.id,
                },
            ));
        }
        pages.push(entry);
    }
    Ok(pages)
}

/// Decodes one 64-byte index entry whose strings and shape live in `heap`.
/// `in_file`: offset and crc fields are meaningful (a checkpoint) or must be zero (a CREATE record).
pub(crate) fn decode_entry(
    c: &mut Cursor<'_>,
    heap: &[u8],
    heap_base: u64,
    in_file: bool,
) -> Result<PageEntry, ParseError> {
    let at = c.offset();
    let id = c.u64()?;
    let offset = c.u64()?;
    let len = c.u64()?;
    let epoch = c.u64()?;
    let crc = c.u32()?;
    let res = c.u8()?;
    let residency = Residency::from_byte(res)
        .ok_or_else(|| bad_field(at + 36, "residency", res.into(), "0 host, 1 device, 2 unified"))?;
    let flags = c.u8()?;
    if flags & !(ENTRY_FLAG_NAME | ENTRY_FLAG_TENSOR) != 0 {
        return Err(bad_field(
            at + 37,
            "entry flags",
            flags.into(),
            "only bits 0 and 1 are defined",
        ));
    }
    let ndim = c.u16()?;
    let name_off = c.u32()?;
    let name_len = c.u32()?;
    let dtype_off = c.u32()?;
    let dtype_len = c.u32()?;
    let shape_off = c.u32()?;
    c.zeros(4, "index entry reserved bytes")?;
    if !in_file && (offset != 0 || crc != 0) {
        return Err(bad_field(
            at + 8,
            "offset/crc32c",
            offset.max(crc.into()),
            "must be zero in a CREATE record",
        ));
    }
    let heap_str = |off: u32, len: u32, field: &'static str, fat: u64| -> Result<&str, ParseError> {
        let b = slice(heap, off.into(), len.into())
            .map_err(|_| bad_field(fat, field, off.into(), "string runs past the heap"))?;
        std::str::from_utf8(b).map_err(|e| {
            ParseError::new(
                heap_base + u64::from(off),
                Corruption::BadText {
                    what: field,
                    why: e.to_string(),
                },
            )
        })
    };
    let name = if flags & ENTRY_FLAG_NAME != 0 {
        if name_len == 0 {
            return Err(bad_field(at + 44, "name_len", 0, "a present name is never empty"));
        }
        Some(heap_str(name_off, name_len, "name", at + 40)?.to_owned())
    } else {
        if name_off != 0 || name_len != 0 {
            return Err(bad_field(
                at + 40,
                "name_off/name_len",
                name_off.max(name_len).into(),
                "must be zero without a name",
            ));
        }
        None
    };
    let tensor = if flags & ENTRY_FLAG_TENSOR != 0 {
        if dtype_len == 0 || ndim > MAX_NDIM {
            return Err(bad_field(
                at + 38,
                "ndim/dtype_len",
                ndim.into(),
                "dtype must be non-empty, ndim at most 64",
            ));
        }
        let dtype = heap_str(dtype_off, dtype_len, "dtype", at + 48)?.to_owned();
        let dims = slice(heap, shape_off.into(), u64::from(ndim) * 8)
            .map_err(|_| bad_field(at + 56, "shape_off", shape_off.into(), "shape runs past the heap"))?;
        let shape = dims
            .chunks_exact(8)
            .map(|d| u64::from_le_bytes(d.try_into().expect("8 bytes")))
            .collect();
        Some(TensorInfo { dtype, shape })
    } else {
        if ndim != 0 || dtype_off != 0 || dtype_len != 0 || shape_off != 0 {
            return Err(bad_field(
                at + 38,
                "tensor fields",
                0,
                "must be zero without tensor info",
            ));
        }
        None
    };
    Ok(PageEntry {
        id,
        offset,
        len,
        epoch,
        crc32c: crc,
        meta: PageMeta {
            name,
            tensor,
            residency,
        },
    })
}

/// Appends one 64-byte entry to `entries` and its strings and shape to `heap`.
pub(crate) fn encode_entry(e: &PageEntry, entries: &mut Vec<u8>, heap: &mut Vec<u8>) -> Result<()> {
    let heap_off =
        |heap: &Vec<u8>| u32::try_from(heap.len()).map_err(|_| Error::Invalid("page index heap exceeds 4 GiB".into()));
    let mut flags = 0u8;
    let (mut name_off, mut name_len) = (0u32, 0u32);
    if let Some(name) = &e.meta.name {
        if name.is_empty() {
            return Err(Error::Invalid(format!("page {}: empty names are not allowed", e.id)));
        }
        flags |= ENTRY_FLAG_NAME;
        name_off = heap_off(heap)?;
        name_len = u32::try_from(name.len()).map_err(|_| Error::Invalid("name too long".into()))?;
        heap.extend_from_slice(name.as_bytes());
    }
    let (mut ndim, mut dtype_off, mut dtype_len, mut shape_off) = (0u16, 0u32, 0u32, 0u32);
    if let Some(t) = &e.meta.tensor {
        if t.dtype.is_empty() || t.shape.len() > MAX_NDIM as usize {
            return Err(Error::Invalid(format!(
                "page {}: dtype must be non-empty and ndim at most {MAX_NDIM}",
                e.id
            )));
        }
        flags |= ENTRY_FLAG_TENSOR;
        ndim = t.shape.len() as u16;
        dtype_off = heap_off(heap)?;
        dtype_len = t.dtype.len() as u32;
        heap.extend_from_slice(t.dtype.as_bytes());
        shape_off = heap_off(heap)?;
        for d in &t.shape {
            heap.put_u64(*d);
        }
    }
    entries.put_u64(e.id);
    entries.put_u64(e.offset);
    entries.put_u64(e.len);
    entries.put_u64(e.epoch);
    entries.put_u32(e.crc32c);
    entries.put_u8(e.meta.residency.to_byte());
    entries.put_u8(flags);
    entries.put_u16(ndim);
    entries.put_u32(name_off);
    entries.put_u32(name_len);
    entries.put_u32(dtype_off);
    entries.put_u32(dtype_len);
    entries.put_u32(shape_off);
    entries.put_u32(0);
    heap_off(heap)?;
    Ok(())
}

fn encode_index(pages: &[PageEntry]) -> Result<Vec<u8>> {
    let mut entries = Vec::with_capacity(pages.len() * INDEX_ENTRY_LEN);
    let mut heap = Vec::new();
    for p in pages {
        encode_entry(p, &mut entries, &mut heap)?;
    }
    let mut out = Vec::with_capacity(INDEX_PREFIX_LEN + entries.len() + heap.len());
    out.put_u64(pages.len() as u64);
    out.put_u64(heap.len() as u64);
    out.extend_from_slice(&entries);
    out.extend_from_slice(&heap);
    Ok(out)
}

fn encode_metadata(metadata: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(metadata).expect("a map of strings always serialises")
}

/// The complete header block (4096 bytes) for the given sections.
fn encode_header(file_len: u64, page_count: u64, data_offset: u64, sections: &[Section]) -> Vec<u8> {
    let mut h = Vec::with_capacity(ALIGN as usize);
    h.extend_from_slice(&MAGIC);
    h.put_u16(FORMAT_MAJOR);
    // The lowest minor version that describes the file.
    let graph = sections.iter().any(|s| s.kind == SECTION_DEPENDENCY_GRAPH);
    h.put_u16(if graph {
        GRAPH_CHECKPOINT_MINOR
    } else {
        CHECKPOINT_MINOR
    });
    h.put_u32(sections.len() as u32);
    h.put_u64(file_len);
    h.put_u64(page_count);
    h.put_u64(data_offset);
    h.put_u32(0);
    h.extend_from_slice(&[0u8; 20]);
    for s in sections {
        h.put_u32(s.kind);
        h.put_u32(s.flags);
        h.put_u64(s.offset);
        h.put_u64(s.len);
        h.put_u32(s.crc32c);
        h.put_u32(0);
    }
    let crc = crc32c(&h);
    h.put_u32(crc);
    h.resize(ALIGN as usize, 0);
    h
}

/// What the writer needs to know of a page before its bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSpec {
    /// Page id.
    pub id: u64,
    /// Page length in bytes.
    pub len: u64,
    /// Page epoch.
    pub epoch: u64,
    /// Name, tensor info, residency.
    pub meta: PageMeta,
}

/// Writes a checkpoint atomically: pages are streamed into a temporary file beside the target,
/// which is fsynced and renamed over the target only in [`CheckpointWriter::finish`]. Dropping the
/// writer before then leaves nothing behind.
pub struct CheckpointWriter {
    path: PathBuf,
    temp: fsutil::AtomicFile,
    pages: Vec<PageEntry>,
    metadata: BTreeMap<String, String>,
    graph: Vec<u8>,
    data_offset: u64,
    file_len: u64,
    current: usize,
    written: u64,
    crc: u32,
    buf: Vec<u8>,
    progress: Option<std::sync::Arc<AtomicU64>>,
}

const WRITE_BUF: usize = 8 << 20;

impl CheckpointWriter {
    /// Starts a checkpoint at `path` holding `specs` (ids strictly increasing) and `metadata`.
    pub fn create(path: &Path, specs: Vec<PageSpec>, metadata: BTreeMap<String, String>) -> Result<Self> {
        CheckpointWriter::create_with_graph(path, specs, metadata, &[])
    }

    /// [`CheckpointWriter::create`] with a dependency graph section holding `graph` (derived
    /// pages in increasing id order, heights set; written only when not empty). The graph is
    /// checked as a reader checks it before anything is written.
    pub fn create_with_graph(
        path: &Path,
        specs: Vec<PageSpec>,
        metadata: BTreeMap<String, String>,
        graph: &[Derivation],
    ) -> Result<Self> {
        let graph = if graph.is_empty() {
            Vec::new()
        } else {
            let bytes = super::graph::encode_section(graph)?;
            super::graph::parse_section(&bytes, 0, |id| specs.binary_search_by_key(&id, |s| s.id).is_ok())
                .map_err(|e| Error::Invalid(format!("dependency graph: {}", e.problem)))?;
            bytes
        };
        let mut pages: Vec<PageEntry> = specs
            .into_iter()
            .map(|s| PageEntry {
                id: s.id,
                offset: 0,
                len: s.len,
                epoch: s.epoch,
                crc32c: 0,
                meta: s.meta,
            })
            .collect();
        let (data_offset, cursor) = lay_out(&mut pages, &metadata, &graph)?;
        let mut temp = fsutil::AtomicFile::create(path)?;
        temp.file()
            .seek(SeekFrom::Start(data_offset))
            .map_err(|e| Error::io(path, e))?;
        let mut w = CheckpointWriter {
            path: path.to_owned(),
            temp,
            pages,
            metadata,
            graph,
            data_offset,
            file_len: cursor,
            current: 0,
            written: 0,
            crc: 0,
            buf: Vec::with_capacity(WRITE_BUF),
            progress: None,
        };
        w.skip_empty_pages();
        Ok(w)
    }

    fn skip_empty_pages(&mut self) {
        while self.current < self.pages.len() && self.pages[self.current].len == self.written {
            self.pages[self.current].crc32c = self.crc;
            self.current += 1;
            self.written = 0;
            self.crc = 0;
            if let Some(p) = self.pages.get(self.current) {
                // Zero padding up to the next page's aligned offset.
                let end = self.pages[self.current - 1].offset + self.pages[self.current - 1].len;
                let pad = (p.offset - end) as usize;
                self.buf.resize(self.buf.len() + pad, 0);
            }
        }
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.temp
            .file()
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Counts page bytes written into `counter` (for a progress display).
    pub fn with_progress(mut self, counter: Option<std::sync::Arc<AtomicU64>>) -> Self {
        self.progress = counter;
        self
    }

    /// Appends bytes of the current page (pages are written in id order, each completely,
    /// possibly over several calls).
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        if let Some(p) = &self.progress {
            p.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        while !bytes.is_empty() {
            let Some(page) = self.pages.get(self.current) else {
                return Err(Error::Invalid(
                    "more page bytes than the pages' lengths add up to".into(),
                ));
            };
            let take = ((page.len - self.written) as usize).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.crc = crc32c::crc32c_append(self.crc, now);
            if self.buf.len() + now.len() > WRITE_BUF {
                self.flush_buf()?;
            }
            if now.len() >= WRITE_BUF {
                self.temp.file().write_all(now).map_err(|e| Error::io(&self.path, e))?;
            } else {
                self.buf.extend_from_slice(now);
            }
            self.written += take as u64;
            bytes = rest;
            self.skip_empty_pages();
        }
        Ok(())
    }

    /// Writes the index and header, fsyncs, and renames the file into place. Returns the state
    /// hash of what was written, from the CRCs computed while the pages streamed through.
    pub fn finish(self) -> Result<StateHash> {
        let (hash, file) = self.finish_staged()?;
        file.commit()?;
        Ok(hash)
    }

    /// Completes the checkpoint and syncs it to disk, but leaves it under its temporary name:
    /// committing the returned file publishes it (quickly: only a rename and a directory sync
    /// are left). For outputs that must appear together with another.
    pub fn finish_staged(mut self) -> Result<(StateHash, fsutil::AtomicFile)> {
        if self.current != self.pages.len() {
            let p = &self.pages[self.current];
            return Err(Error::Invalid(format!(
                "page {} got {} of its {} bytes",
                p.id, self.written, p.len
            )));
        }
        let last_end = self.pages.last().map_or(self.data_offset, |p| p.offset + p.len);
        self.buf.resize(self.buf.len() + (self.file_len - last_end) as usize, 0);
        self.flush_buf()?;
        let head = encode_head(
            &self.pages,
            &self.metadata,
            &self.graph,
            self.data_offset,
            self.file_len,
        )?;
        let f = self.temp.file();
        let io = |e| Error::io(&self.path, e);
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&head).map_err(io)?;
        f.sync_all().map_err(io)?;
        let hash = StateHash::compute(self.pages.iter().map(|p| (p.id, p.len, p.epoch, p.crc32c)));
        Ok((hash, self.temp))
    }
}

/// Checks the ids increase, sets each page's offset as a writer lays the file out (packed sections from 4096, then each
/// page at the next multiple of 4096) and returns `(data_offset, file_len)`. Offsets and CRCs
/// have fixed widths, so the layout is known before any page's bytes are.
fn lay_out(pages: &mut [PageEntry], metadata: &BTreeMap<String, String>, graph: &[u8]) -> Result<(u64, u64)> {
    for w in pages.windows(2) {
        if w[1].id <= w[0].id {
            return Err(Error::Invalid(format!(
                "page ids must be strictly increasing: {} follows {}",
                w[1].id, w[0].id
            )));
        }
    }
    let index_len = encode_index(pages)?.len() as u64;
    let meta_len = if metadata.is_empty() {
        0
    } else {
        encode_metadata(metadata).len() as u64
    };
    let too_big = || Error::Invalid("checkpoint larger than 2^64 bytes".into());
    let data_offset = align_up(ALIGN + index_len + meta_len + graph.len() as u64).ok_or_else(too_big)?;
    let mut cursor = data_offset;
    for p in pages {
        p.offset = cursor;
        cursor = p.offset.checked_add(p.len).and_then(align_up).ok_or_else(too_big)?;
    }
    Ok((data_offset, cursor))
}

/// The file's bytes before its page data: the header block, then the sections (index, metadata
/// when not empty, graph when not empty), zero-padded to `data_offset`.
fn encode_head(
    pages: &[PageEntry],
    metadata: &BTreeMap<String, String>,
    graph: &[u8],
    data_offset: u64,
    file_len: u64,
) -> Result<Vec<u8>> {
    let index = encode_index(pages)?;
    let mut sections = vec![Section {
        kind: SECTION_PAGE_INDEX,
        flags: SECTION_FLAG_REQUIRED,
        offset: ALIGN,
        len: index.len() as u64,
        crc32c: crc32c(&index),
    }];
    let mut body = index;
    if !metadata.is_empty() {
        let meta = encode_metadata(metadata);
        sections.push(Section {
            kind: SECTION_METADATA,
            flags: 0,
            offset: ALIGN + body.len() as u64,
            len: meta.len() as u64,
            crc32c: crc32c(&meta),
        });
        body.extend_from_slice(&meta);
    }
    if !graph.is_empty() {
        sections.push(Section {
            kind: SECTION_DEPENDENCY_GRAPH,
            flags: 0,
            offset: ALIGN + body.len() as u64,
            len: graph.len() as u64,
            crc32c: crc32c(graph),
        });
        body.extend_from_slice(graph);
    }
    let mut head = encode_header(file_len, pages.len() as u64, data_offset, &sections);
    head.extend_from_slice(&body);
    head.resize(data_offset as usize, 0);
    Ok(head)
}

/// The head (every byte before the page data) of the checkpoint a writer would make of `pages`
/// (ids strictly increasing, CRCs set; offsets are laid out here) and `metadata`, without the
/// page bytes: what a log's BASE record carries ([`crate::format::base`]).
/// [`CheckpointHead::parse`] of it, with the `file_len` it records, gives `pages` back.
pub fn head_of(mut pages: Vec<PageEntry>, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let (data_offset, file_len) = lay_out(&mut pages, metadata, &[])?;
    encode_head(&pages, metadata, &[], data_offset, file_len)
}

/// Writes a whole checkpoint from in-memory pages (`(spec, bytes)` in increasing id order).
pub fn write_checkpoint<'a>(
    path: &Path,
    metadata: BTreeMap<String, String>,
    pages: impl IntoIterator<Item = (PageSpec, &'a [u8])>,
) -> Result<StateHash> {
    let (specs, data): (Vec<PageSpec>, Vec<&[u8]>) = pages.into_iter().unzip();
    for (s, d) in specs.iter().zip(&data) {
        if s.len != d.len() as u64 {
            return Err(Error::Invalid(format!(
                "page {}: spec says {} bytes, data has {}",
                s.id,
                s.len,
                d.len()
            )));
        }
    }
    let mut w = CheckpointWriter::create(path, specs, metadata)?;
    for d in data {
        w.write(d)?;
    }
    w.finish()
}

/// A checkpoint opened for reading: the file mapped into memory, its header and index parsed and
/// checked. Page bytes are handed out as zero-copy slices of the mapping; their checksums are
/// checked by [`Checkpoint::check_pages`] (or as they are used).
pub struct Checkpoint {
    path: PathBuf,
    map: std::sync::Arc<crate::mmap::ReadOnlyMap>,
    head: CheckpointHead,
}

impl Checkpoint {
    /// Opens and maps `path`, and parses and checks its header, sections and index.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let map = crate::mmap::ReadOnlyMap::open(path)?;
        let head = CheckpointHead::parse(map.bytes(), map.len() as u64).map_err(|e| {
            match super::sniff_foreign(map.bytes(), "checkpoint") {
                Some((what, todo)) if e.offset == 0 => Error::Corrupt {
                    path: path.to_owned(),
                    offset: 0,
                    problem: Corruption::NotMmsb {
                        expected: "an mmsb checkpoint",
                        what,
                        todo,
                    },
                },
                _ => e.at(path),
            }
        })?;
        Ok(Checkpoint {
            path: path.to_owned(),
            map: std::sync::Arc::new(map),
            head,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header and index.
    pub fn head(&self) -> &CheckpointHead {
        &self.head
    }

    /// The page entries, in increasing id order.
    pub fn pages(&self) -> &[PageEntry] {
        &self.head.pages
    }

    /// The state hash, from the index.
    pub fn state_hash(&self) -> StateHash {
        self.head.state_hash()
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// The mapping itself, shared: for users that must keep it mapped past the checkpoint's
    /// life (a device page store holding pinned pieces of it).
    pub fn mapping(&self) -> &std::sync::Arc<crate::mmap::ReadOnlyMap> {
        &self.map
    }

    /// A page's bytes, zero-copy (not checksum-checked by this call).
    pub fn page_bytes(&self, page: &PageEntry) -> &[u8] {
        // In bounds: `CheckpointHead::parse` checked every page against the file length.
        &self.map.bytes()[page.offset as usize..(page.offset + page.len) as usize]
    }

    /// Checks every page's CRC32C and that all padding after pages is zero, using all cores.
    /// Returns one problem per bad page; `progress` counts bytes done.
    pub fn check_pages(&self, progress: Option<&AtomicU64>) -> Vec<Error> {
        use rayon::prelude::*;
        let mut problems: Vec<(usize, ParseError)> = self
            .head
            .pages
            .par_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let data = self.page_bytes(p);
                let computed = super::crc32c_parallel(data);
                if let Some(c) = progress {
                    c.fetch_add(p.len, Ordering::Relaxed);
                }
                if computed != p.crc32c {
                    return Some((
                        i,
                        ParseError::new(
                            p.offset,
                            Corruption::ChecksumMismatch {
                                what: format!("page {} data", p.id),
                                stored: p.crc32c,
                                computed,
                            },
                        ),
                    ));
                }
                self.padding_problem(i).map(|e| (i, e))
            })
            .collect();
        problems.sort_by_key(|(i, _)| *i);
        problems.into_iter().map(|(_, e)| e.at(&self.path)).collect()
    }

    /// Checks that all padding after pages is zero (less than 4 KiB a page): the part of
    /// [`Checkpoint::check_pages`] for a reader that checks the pages' CRCs as it reads them.
    pub fn check_padding(&self) -> Vec<Error> {
        (0..self.head.pages.len())
            .filter_map(|i| self.padding_problem(i))
            .map(|e| e.at(&self.path))
            .collect()
    }

    /// The padding after the `i`-th page, when it is not all zero.
    fn padding_problem(&self, i: usize) -> Option<ParseError> {
        let pages = &self.head.pages;
        let end = pages[i].offset + pages[i].len;
        let pad_end = pages.get(i + 1).map_or(self.head.file_len, |next| next.offset).max(end);
        check_zero(
            &self.map.bytes()[end as usize..pad_end as usize],
            end,
            "padding after page",
        )
        .err()
    }
}

impl ParseError {
    /// Attaches the file's path.
    pub fn at(self, path: &Path) -> Error {
        Error::Corrupt {
            path: path.to_owned(),
            offset: self.offset,
            problem: self.problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u64, len: u64) -> PageSpec {
        PageSpec {
            id,
            len,
            epoch: 3,
            meta: PageMeta::default(),
        }
    }

    fn tiny() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ckpt");
        let meta = PageMeta {
            name: Some("w".into()),
            tensor: Some(TensorInfo {
                dtype: "F32".into(),
                shape: vec![2],
            }),
            residency: Residency::Device,
        };
        write_checkpoint(
            &path,
            BTreeMap::from([("k".to_string(), "v".to_string())]),
            [
                (PageSpec { meta, ..spec(1, 8) }, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]),
                (spec(5, 0), &[][..]),
                (spec(9, 5000), &vec![7u8; 5000][..]),
            ],
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn written_checkpoint_reads_back_with_aligned_pages() {
        let (_d, path) = tiny();
        let c = Checkpoint::open(&path).unwrap();
        assert_eq!(c.pages().len(), 3);
        assert_eq!(c.head().metadata["k"], "v");
        for p in c.pages() {
            assert_eq!(p.offset % ALIGN, 0);
        }
        assert_eq!(c.page_bytes(&c.pages()[0]), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.page_bytes(&c.pages()[2]), &vec![7u8; 5000][..]);
        assert_eq!(c.pages()[0].meta.name.as_deref(), Some("w"));
        assert_eq!(c.pages()[0].meta.tensor.as_ref().unwrap().shape, vec![2]);
        assert_eq!(c.pages()[0].meta.residency, Residency::Device);
        assert!(c.check_pages(None).is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len() % ALIGN, 0);
        assert_eq!(c.head().page(9).unwrap().len, 5000);
        assert!(c.head().page(2).is_none());
    }

    fn parse_err(bytes: &[u8]) -> ParseError {
        CheckpointHead::parse(bytes, bytes.len() as u64).unwrap_err()
    }

    /// tiny() with a third section: the metadata section's 9 bytes again, packed after it in the
    /// padding before the data, and the header's checksum recomputed.
    #[test]
    fn a_second_metadata_section_is_refused_at_its_table_entry() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        assert_eq!(
            u32::from_le_bytes(b[12..16].try_into().unwrap()),
            2,
            "index and metadata"
        );
        let meta_entry = 64 + 32;
        let (offset, len) = (
            u64::from_le_bytes(b[meta_entry + 8..meta_entry + 16].try_into().unwrap()) as usize,
            u64::from_le_bytes(b[meta_entry + 16..meta_entry + 24].try_into().unwrap()) as usize,
        );
        assert_eq!(&b[offset..offset + len], br#"{"k":"v"}"#);
        b.copy_within(offset..offset + len, offset + len);
        let mut entry = b[meta_entry..meta_entry + 32].to_vec();
        entry[8..16].copy_from_slice(&((offset + len) as u64).to_le_bytes());
        b[meta_entry + 32..meta_entry + 64].copy_from_slice(&entry);
        b[12..16].copy_from_slice(&3u32.to_le_bytes());
        let crc_at = 64 + 32 * 3;
        let crc = crc32c(&b[..crc_at]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        let e = parse_err(&b);
        assert_eq!(e.offset, (meta_entry + 32) as u64, "{e:?}");
        assert!(e.problem.to_string().contains("a second metadata section"), "{e:?}");
    }

    #[test]
    fn bad_magic_is_named() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        b[..8].copy_from_slice(b"NOTMMSB!");
        let e = parse_err(&b);
        assert_eq!(e.offset, 0);
        assert!(matches!(e.problem, Corruption::BadMagic { .. }));
    }

    #[test]
    fn future_major_version_is_refused_before_anything_else() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        b[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            parse_err(&b).problem,
            Corruption::UnsupportedVersion {
                major: 2,
                minor: 0,
                supported: 1
            }
        );
    }

    #[test]
    fn newer_minor_with_an_unknown_optional_section_is_read() {
        let (_d, path) = tiny();
        let c = Checkpoint::open(&path).unwrap();
        // Rebuild the header as a 1.2 writer would: an extra optional section of kind 77.
        let mut sections = c.head().sections.clone();
        let last = *sections.last().unwrap();
        let extra = b"future";
        sections.push(Section {
            kind: 77,
            flags: 0,
            offset: last.offset + last.len,
            len: extra.len() as u64,
            crc32c: crc32c(extra),
        });
        let mut b = c.bytes().to_vec();
        let at = (last.offset + last.len) as usize;
        b[at..at + extra.len()].copy_from_slice(extra);
        let mut header = encode_header(c.head().file_len, 3, c.head().data_offset, &sections);
        header[10..12].copy_from_slice(&2u16.to_le_bytes());
        let n = HEADER_FIXED_LEN + SECTION_ENTRY_LEN * sections.len();
        let crc = crc32c(&header[..n]);
        header[n..n + 4].copy_from_slice(&crc.to_le_bytes());
        b[..4096].copy_from_slice(&header);
        let head = CheckpointHead::parse(&b, b.len() as u64).unwrap();
        assert_eq!(head.minor, 2);
        assert_eq!(head.pages.len(), 3);
        // The same section marked required is refused.
        sections.last_mut().unwrap().flags = SECTION_FLAG_REQUIRED;
        let mut header = encode_header(c.head().file_len, 3, c.head().data_offset, &sections);
        header[10..12].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c(&header[..n]);
        header[n..n + 4].copy_from_slice(&crc.to_le_bytes());
        b[..4096].copy_from_slice(&header);
        assert_eq!(parse_err(&b).problem, Corruption::UnknownRequiredSection { kind: 77 });
    }

    #[test]
    fn flipped_header_bit_is_a_header_checksum_mismatch() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        b[24] ^= 1; // page_count
        let e = parse_err(&b);
        assert!(matches!(e.problem, Corruption::ChecksumMismatch { ref what, .. } if what == "header"));
    }

    #[test]
    fn truncated_file_is_reported_with_its_real_length() {
        let (_d, path) = tiny();
        let b = std::fs::read(&path).unwrap();
        let short = &b[..b.len() - 4096];
        let e = parse_err(short);
        assert_eq!(e.offset, 16);
        assert!(matches!(e.problem, Corruption::BadField { field: "file_len", .. }));
        assert!(matches!(parse_err(&b[..20]).problem, Corruption::Truncated { .. }));
    }

    #[test]
    fn absurd_page_count_fails_without_allocating() {
        // A hand-made header claiming 2^60 pages with a 16-byte index.
        let mut idx = Vec::new();
        idx.put_u64(1 << 60);
        idx.put_u64(0);
        let sections = [Section {
            kind: SECTION_PAGE_INDEX,
            flags: 1,
            offset: 4096,
            len: 16,
            crc32c: crc32c(&idx),
        }];
        let mut b = encode_header(8192, 1 << 60, 8192, &sections);
        b.extend_from_slice(&idx);
        b.resize(8192, 0);
        let e = parse_err(&b);
        assert_eq!(e.offset, 4096 + 8);
        assert!(matches!(e.problem, Corruption::BadField { field: "heap_len", .. }));
    }

    #[test]
    fn flipped_page_byte_is_found_by_check_pages() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        let c = Checkpoint::open(&path).unwrap();
        let off = c.pages()[2].offset as usize + 17;
        drop(c);
        b[off] ^= 0x40;
        std::fs::write(&path, &b).unwrap();
        let c = Checkpoint::open(&path).unwrap();
        let problems = c.check_pages(None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].to_string().contains("page 9 data checksum mismatch"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn non_zero_padding_after_a_page_is_found() {
        let (_d, path) = tiny();
        let mut b = std::fs::read(&path).unwrap();
        let c = Checkpoint::open(&path).unwrap();
        let off = (c.pages()[0].offset + 8) as usize;
        drop(c);
        b[off] = 1;
        std::fs::write(&path, &b).unwrap();
        let problems = Checkpoint::open(&path).unwrap().check_pages(None);
        assert!(
            matches!(&problems[0], Error::Corrupt { offset, problem: Corruption::NonZeroPadding { .. }, .. } if *offset == off as u64)
        );
    }

    #[test]
    fn writer_refuses_unsorted_ids_and_short_pages_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ckpt");
        assert!(CheckpointWriter::create(&path, vec![spec(2, 1), spec(1, 1)], BTreeMap::new()).is_err());
        let mut w = CheckpointWriter::create(&path, vec![spec(1, 10)], BTreeMap::new()).unwrap();
        w.write(&[0; 4]).unwrap();
        assert!(w.finish().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
