//! docs/FORMAT.md against the bytes: every layout table of the spec is read from the document
//! itself, and each field is found at its documented offset in files the library writes, with
//! the value the writer was given. The constants of `mmsb::format` (lengths, codes, flags,
//! limits) are checked against the same tables and sentences, so the spec, the constants and
//! the bytes cannot drift apart silently.

use std::collections::BTreeMap;
use std::path::Path;

use mmsb::format::checkpoint::{self, Checkpoint, PageSpec, write_checkpoint};
use mmsb::format::log::{self, Compression, Durability, LogOptions, LogWriter};
use mmsb::format::record::{self, Delta, Op};
use mmsb::format::{ALIGN, CHECKPOINT_MINOR, FORMAT_MAJOR, FORMAT_MINOR, crc32c};
use mmsb::page::{PageMeta, Residency, TensorInfo};

/// One row of a spec table: its cells, trimmed.
type Row = Vec<String>;

fn spec() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md")).unwrap()
}

/// The rows of the first table after the first line containing `marker` (header and rule
/// skipped).
fn table_after(spec: &str, marker: &str) -> Vec<Row> {
    let start = spec
        .find(marker)
        .unwrap_or_else(|| panic!("FORMAT.md has no `{marker}`"));
    spec[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// A layout table as `(offset, size, field)`, checked to be packed from 0 to `len` bytes (rows
/// whose offset or size is not a plain number, such as the section table, are left out and
/// end the packed part).
fn layout(spec: &str, marker: &str, len: usize) -> Vec<(usize, usize, String)> {
    let mut fields = Vec::new();
    let mut end = 0;
    for row in table_after(spec, marker) {
        let (Ok(offset), Ok(size)) = (row[0].parse::<usize>(), row[1].parse::<usize>()) else {
            break;
        };
        assert_eq!(
            offset, end,
            "{marker}: `{}` is not packed after the field before it",
            row[2]
        );
        end = offset + size;
        fields.push((offset, size, row[2].clone()));
    }
    assert_eq!(end, len, "{marker}: the fields' sizes add up to the structure's length");
    fields
}

fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |v, b| v << 8 | u64::from(*b))
}

/// A number that follows `phrase` in the spec (`at most 64` → 64).
fn number_after(spec: &str, phrase: &str) -> u64 {
    let at = spec
        .find(phrase)
        .unwrap_or_else(|| panic!("FORMAT.md has no `{phrase}`"))
        + phrase.len();
    spec[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{phrase}`"))
}

struct Written {
    _dir: tempfile::TempDir,
    ckpt: Vec<u8>,
    ckpt_path: std::path::PathBuf,
    segment: Vec<u8>,
    pages: Vec<(PageSpec, Vec<u8>)>,
}

/// A checkpoint of two pages (one a named tensor) with metadata, and a log with one record of
/// every type, a group and a compressed payload.
fn written() -> Written {
    let dir = tempfile::tempdir().unwrap();
    let pages = vec![
        (
            PageSpec {
                id: 3,
                len: 5000,
                epoch: 7,
                meta: PageMeta::default(),
            },
            (0..5000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>(),
        ),
        (
            PageSpec {
                id: 9,
                len: 24,
                epoch: 2,
                meta: PageMeta {
                    name: Some("layer.0.weight".into()),
                    tensor: Some(TensorInfo {
                        dtype: "F32".into(),
                        shape: vec![2, 3],
                    }),
                    residency: Residency::Unified,
                },
            },
            vec![0xAB; 24],
        ),
    ];
    let ckpt_path = dir.path().join("s.ckpt");
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_checkpoint(&ckpt_path, metadata, pages.iter().map(|(s, d)| (s.clone(), &d[..]))).unwrap();
    let base = Checkpoint::open(&ckpt_path).unwrap().state_hash();
    let log_dir = dir.path().join("s.log");
    let options = LogOptions {
        durability: Durability::Never,
        ..Default::default()
    };
    let mut w = LogWriter::create(&log_dir, base, 1, options).unwrap();
    let d = |page_id, epoch, op| Delta {
        page_id,
        epoch,
        timestamp_ns: 1_700_000_000_000_000_000,
        source: "spec".into(),
        op,
    };
    let full = vec![0x11; 5000];
    w.append(&d(3, 8, Op::Full(&full))).unwrap();
    w.begin_group().unwrap();
    w.append(&d(3, 9, Op::Sparse(vec![(10, &b"xyz"[..])]))).unwrap();
    w.append(&d(
        3,
        10,
        Op::Masked {
            offset: 100,
            len: 9,
            mask: &[0b0000_0101, 0b1],
            values: b"abc",
        },
    ))
    .unwrap();
    w.commit_group().unwrap();
    w.append(&d(
        3,
        11,
        Op::Fill {
            offset: 0,
            len: 64,
            value: 0,
        },
    ))
    .unwrap();
    w.append(&d(9, 3, Op::Resize { len: 32 })).unwrap();
    w.append(&d(9, 4, Op::Delete)).unwrap();
    w.append(&d(
        20,
        1,
        Op::Create {
            len: 16,
            meta: PageMeta::default(),
        },
    ))
    .unwrap();
    w.finish().unwrap();
    // A compressible FULL record, compressed, appended by a second writer of the same log.
    let mut w = LogWriter::open(
        &log_dir,
        LogOptions {
            durability: Durability::Never,
            compression: Compression::Zstd(3),
            ..Default::default()
        },
    )
    .unwrap();
    w.append(&d(3, 12, Op::Full(&full))).unwrap();
    w.finish().unwrap();
    let segment = std::fs::read(log::expand_paths(&[&log_dir]).unwrap()[0].clone()).unwrap();
    Written {
        ckpt: std::fs::read(&ckpt_path).unwrap(),
        ckpt_path,
        segment,
        pages,
        _dir: dir,
    }
}

#[test]
fn checkpoint_header_fields_are_where_the_spec_puts_them() {
    let spec = spec();
    let w = written();
    let b = &w.ckpt;
    let fields = layout(&spec, "### Header block", checkpoint::HEADER_FIXED_LEN);
    let n = le(&b[12..16]) as usize;
    for (offset, size, field) in &fields {
        let v = &b[*offset..offset + size];
        match field.as_str() {
            "magic" => {
                assert_eq!(v, b"MMSBCKPT");
                assert_eq!(v, checkpoint::MAGIC);
            }
            "major" => assert_eq!(le(v), u64::from(FORMAT_MAJOR)),
            "minor" => assert_eq!(le(v), u64::from(CHECKPOINT_MINOR)),
            "section_count" => assert_eq!(le(v), 2, "an index and a metadata section"),
            "file_len" => assert_eq!(le(v), b.len() as u64),
            "page_count" => assert_eq!(le(v), w.pages.len() as u64),
            "data_offset" => {
                assert_eq!(le(v) % ALIGN, 0);
                assert_eq!(le(v), Checkpoint::open(&w.ckpt_path).unwrap().head().data_offset);
            }
            "flags" | "reserved" => assert!(v.iter().all(|&x| x == 0), "{field}"),
            other => panic!("a header field this test does not know: {other}"),
        }
    }
    let rows = table_after(&spec, "### Header block");
    assert!(
        rows.iter()
            .any(|r| r[0] == "64" && r[1] == "32 × n" && r[2] == "section table")
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "64 + 32n" && r[1] == "4" && r[2] == "header_crc")
    );
    let crc_at = checkpoint::HEADER_FIXED_LEN + checkpoint::SECTION_ENTRY_LEN * n;
    assert_eq!(le(&b[crc_at..crc_at + 4]) as u32, crc32c(&b[..crc_at]));
    assert!(b[crc_at + 4..ALIGN as usize].iter().all(|&x| x == 0), "padding to 4096");
    assert_eq!(ALIGN, number_after(&spec, "a multiple of"));
    assert_eq!(
        u64::from(checkpoint::MAX_SECTIONS),
        number_after(&spec, "entries in the section table, at most")
    );
}

#[test]
fn section_table_entries_and_the_page_index_are_where_the_spec_puts_them() {
    let spec = spec();
    let w = written();
    let b = &w.ckpt;
    let entry = layout(&spec, "Section-table entry (32 bytes)", checkpoint::SECTION_ENTRY_LEN);
    let kinds = &table_after(&spec, "Section-table entry (32 bytes)")[0][3];
    assert!(kinds.starts_with(&format!(
        "{} page index, {} metadata, {} dependency graph",
        checkpoint::SECTION_PAGE_INDEX,
        checkpoint::SECTION_METADATA,
        checkpoint::SECTION_DEPENDENCY_GRAPH
    )));
    assert!(table_after(&spec, "Section-table entry (32 bytes)")[1][3].starts_with("bit 0 REQUIRED"));
    assert_eq!(checkpoint::SECTION_FLAG_REQUIRED, 1 << 0);
    let n = le(&b[12..16]) as usize;
    let mut expected_offset = ALIGN;
    let mut index = None;
    for i in 0..n {
        let base = checkpoint::HEADER_FIXED_LEN + i * checkpoint::SECTION_ENTRY_LEN;
        let get = |name: &str| {
            let (o, s, _) = entry.iter().find(|(_, _, f)| f == name).unwrap();
            le(&b[base + o..base + o + s])
        };
        let (kind, flags, offset, len, crc) = (get("kind"), get("flags"), get("offset"), get("len"), get("crc32c"));
        assert_eq!(get("reserved"), 0);
        assert_eq!(offset, expected_offset, "sections are packed from 4096");
        expected_offset += len;
        let bytes = &b[offset as usize..(offset + len) as usize];
        assert_eq!(crc as u32, crc32c(bytes), "section {i} CRC");
        match kind as u32 {
            checkpoint::SECTION_PAGE_INDEX => {
                assert_eq!(
                    flags as u32 & checkpoint::SECTION_FLAG_REQUIRED,
                    1,
                    "the index is REQUIRED"
                );
                index = Some(bytes);
            }
            checkpoint::SECTION_METADATA => {
                assert_eq!(bytes, br#"{"format":"pt"}"#);
            }
            other => panic!("unexpected section kind {other}"),
        }
    }
    let index = index.expect("a page index");
    // entry_count u64, heap_len u64, entries, heap.
    assert_eq!(checkpoint::INDEX_PREFIX_LEN, 16);
    assert_eq!(le(&index[0..8]), w.pages.len() as u64);
    let heap_len = le(&index[8..16]) as usize;
    assert_eq!(
        index.len(),
        checkpoint::INDEX_PREFIX_LEN + checkpoint::INDEX_ENTRY_LEN * w.pages.len() + heap_len
    );
    let heap = &index[index.len() - heap_len..];
    let fields = layout(&spec, "Index entry (64 bytes)", checkpoint::INDEX_ENTRY_LEN);
    let flags_meaning = &table_after(&spec, "Index entry (64 bytes)")[6][3];
    assert!(flags_meaning.starts_with("bit 0: has a name; bit 1: has a tensor description"));
    let residency_meaning = &table_after(&spec, "Index entry (64 bytes)")[5][3];
    for r in [Residency::Host, Residency::Device, Residency::Unified] {
        assert!(
            residency_meaning.contains(&format!("{} {}", r.to_byte(), r.name())),
            "{residency_meaning}"
        );
    }
    for (i, (page, data)) in w.pages.iter().enumerate() {
        let base = checkpoint::INDEX_PREFIX_LEN + i * checkpoint::INDEX_ENTRY_LEN;
        let get = |name: &str| {
            let (o, s, _) = fields.iter().find(|(_, _, f)| f == name).unwrap();
            le(&index[base + o..base + o + s])
        };
        let heap_at = |off: &str, len: u64| &heap[get(off) as usize..(get(off) + len) as usize];
        for (_, _, field) in &fields {
            let v = get(field);
            match field.as_str() {
                "id" => assert_eq!(v, page.id),
                "offset" => {
                    assert_eq!(v % ALIGN, 0);
                    assert_eq!(&b[v as usize..v as usize + data.len()], &data[..]);
                }
                "len" => assert_eq!(v, page.len),
                "epoch" => assert_eq!(v, page.epoch),
                "crc32c" => assert_eq!(v as u32, crc32c(data)),
                "residency" => assert_eq!(v as u8, page.meta.residency.to_byte()),
                "flags" => assert_eq!(
                    v,
                    u64::from(page.meta.name.is_some()) | u64::from(page.meta.tensor.is_some()) << 1
                ),
                "ndim" => assert_eq!(v, page.meta.tensor.as_ref().map_or(0, |t| t.shape.len() as u64)),
                "name_len" => assert_eq!(v, page.meta.name.as_ref().map_or(0, |n| n.len() as u64)),
                "name_off" => {
                    if let Some(name) = &page.meta.name {
                        assert_eq!(heap_at("name_off", name.len() as u64), name.as_bytes());
                    }
                }
                "dtype_len" => assert_eq!(v, page.meta.tensor.as_ref().map_or(0, |t| t.dtype.len() as u64)),
                "dtype_off" => {
                    if let Some(t) = &page.meta.tensor {
                        assert_eq!(heap_at("dtype_off", t.dtype.len() as u64), t.dtype.as_bytes());
                    }
                }
                "shape_off" => {
                    if let Some(t) = &page.meta.tensor {
                        let dims = heap_at("shape_off", 8 * t.shape.len() as u64);
                        let read: Vec<u64> = dims.chunks(8).map(le).collect();
                        assert_eq!(read, t.shape);
                    }
                }
                "reserved" => assert_eq!(v, 0),
                other => panic!("an index field this test does not know: {other}"),
            }
        }
    }
    assert_eq!(
        u64::from(checkpoint::MAX_NDIM),
        number_after(&spec, "number of dimensions (at most")
    );
}

#[test]
fn segment_header_and_frames_are_where_the_spec_puts_them() {
    let spec = spec();
    let w = written();
    let b = &w.segment;
    let header = layout(&spec, "### Segment header", log::SEGMENT_HEADER_LEN);
    let base_state = Checkpoint::open(&w.ckpt_path).unwrap().state_hash();
    for (offset, size, field) in &header {
        let v = &b[*offset..offset + size];
        match field.as_str() {
            "magic" => {
                assert_eq!(v, b"MMSBLOG\0");
                assert_eq!(v, log::MAGIC);
            }
            "major" => assert_eq!(le(v), u64::from(FORMAT_MAJOR)),
            "minor" => assert_eq!(le(v), u64::from(FORMAT_MINOR)),
            "header_len" => assert_eq!(le(v), log::SEGMENT_HEADER_LEN as u64),
            "segment_no" => assert_eq!(le(v), 0),
            "first_seq" => assert_eq!(le(v), 1),
            "base_state" => assert_eq!(v, base_state.0),
            "reserved" => assert_eq!(le(v), 0),
            "header_crc" => assert_eq!(le(v) as u32, crc32c(&b[..*offset])),
            other => panic!("a segment header field this test does not know: {other}"),
        }
    }

    // Record types and frame flags, by name, from the spec's tables.
    let types: BTreeMap<String, u8> = table_after(&spec, "### Record types")
        .into_iter()
        .filter_map(|r| Some((r[1].clone(), r[0].parse().ok()?)))
        .collect();
    let want = [
        ("CREATE", record::TYPE_CREATE),
        ("DELETE", record::TYPE_DELETE),
        ("RESIZE", record::TYPE_RESIZE),
        ("FULL", record::TYPE_FULL),
        ("SPARSE", record::TYPE_SPARSE),
        ("MASKED", record::TYPE_MASKED),
        ("FILL", record::TYPE_FILL),
        ("DERIVE", mmsb::format::graph::TYPE_DERIVE),
        ("UNDERIVE", mmsb::format::graph::TYPE_UNDERIVE),
        ("PROPAGATED", mmsb::format::graph::TYPE_PROPAGATED),
        ("BASE", mmsb::format::base::TYPE_BASE),
    ];
    assert_eq!(types, want.iter().map(|(n, t)| (n.to_string(), *t)).collect());
    let reserved_row = table_after(&spec, "### Record types")
        .into_iter()
        .find(|r| r[1] == "optional")
        .unwrap();
    assert_eq!(reserved_row[0], format!("{}–255", record::OPTIONAL_TYPE_MIN));
    let frame = layout(&spec, "### Frame", log::FRAME_HEADER_LEN);
    let flags_meaning = &table_after(&spec, "### Frame")[3][3];
    assert!(flags_meaning.starts_with("bit 0 ZSTD"), "{flags_meaning}");
    assert!(flags_meaning.contains("bit 1 GROUP_CONTINUES"), "{flags_meaning}");
    assert_eq!((log::FLAG_ZSTD, log::FLAG_GROUP_CONTINUES), (1 << 0, 1 << 1));

    // Walk the frames: the records in the order they were appended.
    let expected: [(u8, u8); 8] = [
        (record::TYPE_FULL, 0),
        (record::TYPE_SPARSE, log::FLAG_GROUP_CONTINUES),
        (record::TYPE_MASKED, 0),
        (record::TYPE_FILL, 0),
        (record::TYPE_RESIZE, 0),
        (record::TYPE_DELETE, 0),
        (record::TYPE_CREATE, 0),
        (record::TYPE_FULL, log::FLAG_ZSTD),
    ];
    let mut at = log::SEGMENT_HEADER_LEN;
    for (i, (kind, flags)) in expected.iter().enumerate() {
        let h = &b[at..at + log::FRAME_HEADER_LEN];
        let get = |name: &str| {
            let (o, s, _) = frame.iter().find(|(_, _, f)| f == name).unwrap();
            le(&h[*o..o + s])
        };
        let payload_len = get("payload_len") as usize;
        let payload = &b[at + log::FRAME_HEADER_LEN..at + log::FRAME_HEADER_LEN + payload_len];
        assert_eq!(get("seq"), 1 + i as u64, "frame {i}");
        assert_eq!(get("type") as u8, *kind, "frame {i}");
        assert_eq!(get("flags") as u8, *flags, "frame {i}");
        assert_eq!(get("reserved"), 0);
        assert_eq!(get("header_crc") as u32, crc32c(&h[..24]), "frame {i}");
        let mut covered = h[..28].to_vec();
        covered.extend_from_slice(payload);
        assert_eq!(get("record_crc") as u32, crc32c(&covered), "frame {i}");
        if flags & log::FLAG_ZSTD == 0 {
            // page_id u64, epoch u64, timestamp_ns u64, source_len u8, source.
            let head = table_after(&spec, "Every payload (after decompression) starts with:");
            let names: Vec<&str> = head.iter().map(|r| r[1].as_str()).collect();
            assert_eq!(names, ["page_id", "epoch", "timestamp_ns", "source_len", "source"]);
            assert_eq!(le(&payload[16..24]), 1_700_000_000_000_000_000);
            assert_eq!(payload[24], 4);
            assert_eq!(&payload[25..29], b"spec");
        } else {
            assert!(payload.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]), "a zstd frame");
        }
        at += log::FRAME_HEADER_LEN + payload_len;
    }
    assert_eq!(at, b.len(), "frames are packed to the end of the segment");
}

#[test]
fn the_limits_a_reader_enforces_are_the_spec_s() {
    let spec = spec();
    assert_eq!(u64::from(record::MAX_SOURCE_LEN as u8), 255);
    assert!(spec.contains(&format!("length of the source tag, 0–{}", record::MAX_SOURCE_LEN)));
    assert_eq!(
        record::MAX_PAGE_LEN,
        1 << number_after(&spec, "CREATE and RESIZE lengths against 2^")
    );
    assert!(spec.contains(&format!("`len` at most 2^{}", record::MAX_PAGE_LEN.trailing_zeros())));
    assert_eq!(
        log::MAX_DECOMPRESSED,
        number_after(&spec, "zstd content sizes against") << 30
    );
    assert!(spec.contains("| 8–127 | — | reserved"));
    assert_eq!(record::TYPE_FILL + 1, 8);
}

#[test]
fn the_graph_section_and_rule_codes_are_where_the_spec_puts_them() {
    use mmsb::format::graph::*;
    let spec = spec();
    let entry = layout(&spec, "### Graph section entry", ENTRY_PREFIX_LEN);
    let body = layout(&spec, "### Derivation body", BODY_FIXED_LEN);
    let codes: BTreeMap<String, u8> = table_after(&spec, "### Rules")
        .into_iter()
        .map(|r| (r[1].clone(), r[0].parse().unwrap()))
        .collect();
    let want = [
        ("copy", RULE_COPY),
        ("xor", RULE_XOR),
        ("add-u32", RULE_ADD_U32),
        ("min-u32", RULE_MIN_U32),
        ("max-u32", RULE_MAX_U32),
        ("concat", RULE_CONCAT),
        ("slice", RULE_SLICE),
        ("crc32c", RULE_CRC32C),
        ("named", RULE_NAMED),
    ];
    assert_eq!(codes, want.iter().map(|(n, c)| (n.to_string(), *c)).collect());
    // The names are the command line's, and each parses back to its code.
    for (name, code) in want.iter().filter(|(n, _)| *n != "named" && *n != "slice") {
        assert_eq!(mmsb::graph::Rule::parse(name, &[]).unwrap().to_stored().code, *code);
    }
    assert_eq!(number_after(&spec, "parent_count | 1 to"), u64::from(MAX_PARENTS));
    // The golden graph checkpoint's first entry, read through the tables: page 3 = xor(1, 2)
    // at height 1.
    let b = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/graph.ckpt")).unwrap();
    let at = le(&b[104..112]) as usize + 8;
    let field = |table: &[(usize, usize, String)], base: usize, name: &str| {
        let (o, s, _) = table.iter().find(|(_, _, f)| f == name).unwrap();
        le(&b[base + o..base + o + s])
    };
    assert_eq!(field(&entry, at, "page_id"), 3);
    assert_eq!(field(&entry, at, "height"), 1);
    assert_eq!(field(&entry, at, "reserved"), 0);
    let body_at = at + ENTRY_PREFIX_LEN;
    assert_eq!(field(&body, body_at, "rule"), u64::from(RULE_XOR));
    assert_eq!(field(&body, body_at, "name_len"), 0);
    assert_eq!(field(&body, body_at, "parent_count"), 2);
    assert_eq!(field(&body, body_at, "param0"), 0);
    let parents = body_at + BODY_FIXED_LEN;
    assert_eq!(
        (le(&b[parents..parents + 8]), le(&b[parents + 8..parents + 16])),
        (1, 2)
    );
}
