//! Builds the golden files of `testdata/` (see testdata/README.md). Shared by
//! `examples/make_testdata.rs`, which writes them, and `tests/golden.rs`, which checks that the
//! committed files are exactly what this code writes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmsb::format::checkpoint::{Checkpoint, PageSpec, write_checkpoint};
use mmsb::format::log::{Compression, Durability, LogOptions, LogWriter, segment_path};
use mmsb::format::record::{Delta, Op};
use mmsb::page::{PageMeta, Residency, StateHash, TensorInfo};

fn d(page_id: u64, epoch: u64, op: Op<'_>) -> Delta<'_> {
    Delta {
        page_id,
        epoch,
        timestamp_ns: 1_750_000_000_000_000_000 + epoch,
        source: "golden".into(),
        op,
    }
}

fn write_log(dir: &Path, base: StateHash) -> Result<(), Box<dyn std::error::Error>> {
    let _ = std::fs::remove_dir_all(dir);
    let opts = LogOptions {
        segment_size: 700,
        durability: Durability::Never,
        compression: Compression::Auto,
    };
    let mut w = LogWriter::create(dir, base, 1, opts)?;
    let zeros = [0u8; 600];
    w.append(&d(1, 1, Op::Sparse(vec![(0, b"ab"), (50, b"cdef")])))?;
    w.append(&d(0, 2, Op::Full(b"HELLO")))?;
    w.append(&d(
        2,
        3,
        Op::Masked {
            offset: 10,
            len: 12,
            mask: &[0b1010_0001, 0b1001],
            values: b"wxyz5",
        },
    ))?;
    w.append(&d(
        7,
        4,
        Op::Create {
            len: 16,
            meta: PageMeta {
                name: Some("created".into()),
                tensor: Some(TensorInfo {
                    dtype: "U8".into(),
                    shape: vec![16],
                }),
                residency: Residency::Host,
            },
        },
    ))?;
    w.append(&d(7, 5, Op::Sparse(vec![(4, b"new page")])))?;
    w.append(&d(1, 6, Op::Resize { len: 120 }))?;
    w.append(&d(2, 7, Op::Sparse(vec![(100, &zeros)])))?; // compresses: stored as zstd
    w.append(&d(7, 8, Op::Delete))?;
    w.append(&d(0, 9, Op::Sparse(vec![(1, b"i"), (2, b"!")])))?;
    w.finish()?;
    Ok(())
}

pub fn write_all(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    let page = |id: u64, len: u64, name: Option<&str>, tensor: Option<(&str, Vec<u64>)>, residency| PageSpec {
        id,
        len,
        epoch: 0,
        meta: PageMeta {
            name: name.map(str::to_owned),
            tensor: tensor.map(|(dtype, shape)| TensorInfo {
                dtype: dtype.into(),
                shape,
            }),
            residency,
        },
    };
    let p2: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let p1: Vec<u8> = (0..100u8).collect();
    let small = out.join("small.ckpt");
    write_checkpoint(
        &small,
        BTreeMap::from([("format".to_string(), "pt".to_string())]),
        [
            (
                page(0, 5, Some("greeting"), Some(("U8", vec![5])), Residency::Host),
                &b"hello"[..],
            ),
            (
                page(1, 100, Some("weights"), Some(("F32", vec![5, 5])), Residency::Device),
                &p1[..],
            ),
            (page(2, 3000, None, None, Residency::Unified), &p2[..]),
        ],
    )?;
    let base = Checkpoint::open(&small)?.state_hash();
    write_log(&out.join("small.log"), base)?;

    // The same log with its last record cut in half: a torn tail.
    let torn = out.join("torn.log");
    copy_dir(&out.join("small.log"), &torn)?;
    let last = last_segment(&torn);
    let bytes = std::fs::read(&last)?;
    let seg = mmsb::format::log::Segment::open(&last)?;
    let f = *seg.frames().last().expect("records");
    drop(seg);
    std::fs::write(&last, &bytes[..(f.offset + f.frame_len() / 2) as usize])?;

    // One byte of the first record's payload flipped, whole records after it: corruption.
    let mid = out.join("midcorrupt.log");
    copy_dir(&out.join("small.log"), &mid)?;
    let first = segment_path(&mid, 0);
    let mut bytes = std::fs::read(&first)?;
    bytes[72 + 32 + 30] ^= 0x01;
    std::fs::write(&first, &bytes)?;

    // A log written against another state.
    write_log(&out.join("wrong-base.log"), StateHash([0xAB; 32]))?;

    // Format 1.1 groups: one record alone, then a group of three (a snapshot's records).
    let group = out.join("group.log");
    let _ = std::fs::remove_dir_all(&group);
    let mut w = LogWriter::create(&group, base, 1, LogOptions::default())?;
    w.append(&d(0, 1, Op::Full(b"HELLO")))?;
    w.begin_group()?;
    w.append(&d(1, 2, Op::Sparse(vec![(0, b"ab")])))?;
    w.append(&d(
        2,
        3,
        Op::Fill {
            offset: 0,
            len: 10,
            value: 0x55,
        },
    ))?;
    w.append(&d(0, 4, Op::Sparse(vec![(4, b"!")])))?;
    w.commit_group()?;
    w.finish()?;

    // The same log as a crash after the group's second record leaves it: the group is open.
    let open = out.join("open-group.log");
    copy_dir(&group, &open)?;
    let seg = segment_path(&open, 0);
    let frames = mmsb::format::log::Segment::open(&seg)?.frames().to_vec();
    let bytes = std::fs::read(&seg)?;
    std::fs::write(&seg, &bytes[..frames[3].offset as usize])?;

    // The checkpoint as a format 2.0 writer would stamp it (header CRC fixed up).
    let mut b = std::fs::read(&small)?;
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    fix_header_crc(&mut b);
    std::fs::write(out.join("future-major.ckpt"), &b)?;

    // The checkpoint as a format 1.4 writer might write it: an optional section of unknown kind
    // 99 after the index (and the metadata section), non-zero reserved header bytes.
    let mut b = std::fs::read(&small)?;
    let count = u32::from_le_bytes(b[12..16].try_into()?) as usize;
    let last_entry = 64 + 32 * (count - 1);
    let end = u64::from_le_bytes(b[last_entry + 8..last_entry + 16].try_into()?)
        + u64::from_le_bytes(b[last_entry + 16..last_entry + 24].try_into()?);
    let extra = b"from the future";
    assert!(end as usize + extra.len() <= 8192, "room before data_offset");
    b[end as usize..end as usize + extra.len()].copy_from_slice(extra);
    let mut entry = Vec::new();
    entry.extend_from_slice(&99u32.to_le_bytes());
    entry.extend_from_slice(&0u32.to_le_bytes());
    entry.extend_from_slice(&end.to_le_bytes());
    entry.extend_from_slice(&(extra.len() as u64).to_le_bytes());
    entry.extend_from_slice(&crc32c::crc32c(extra).to_le_bytes());
    entry.extend_from_slice(&0u32.to_le_bytes());
    let at = 64 + 32 * count;
    b[at..at + 4].fill(0);
    b[at..at + 32].copy_from_slice(&entry);
    b[12..16].copy_from_slice(&((count + 1) as u32).to_le_bytes());
    b[10..12].copy_from_slice(&4u16.to_le_bytes());
    b[50] = 0x11;
    fix_header_crc(&mut b);
    std::fs::write(out.join("future-minor.ckpt"), &b)?;
    write_graph(out)?;
    Ok(())
}

/// Format 1.2, the dependency graph: `graph.ckpt` holds roots 1 and 2 (8 bytes each), page
/// 3 = xor(1, 2) and page 4 = slice(0, 4) of page 3, in its graph section; `graph.log` writes
/// page 1, then holds the propagation's outputs for pages 3 and 4 and its PROPAGATED record (one
/// group), then sets page 2 = copy(1) and clears it again.
fn write_graph(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use mmsb::format::checkpoint::CheckpointWriter;
    use mmsb::format::graph::GraphRecord;
    use mmsb::graph::{Graph, Rule};
    let mut g = Graph::new();
    g.set_rule(3, Rule::Xor, &[1, 2])?;
    g.set_rule(4, Rule::Slice { offset: 0, len: 4 }, &[3])?;
    let (p1, p2) = (*b"ROOT one", *b"root two");
    let derive = |rule: &Rule, parents: &[&[u8]]| {
        let mut out = Vec::new();
        rule.derive(parents, &mut out);
        out
    };
    let p3 = derive(&Rule::Xor, &[&p1, &p2]);
    let p4 = derive(&Rule::Slice { offset: 0, len: 4 }, &[&p3]);
    let ckpt = out.join("graph.ckpt");
    let specs = [(1, 8), (2, 8), (3, 8), (4, 4)].map(|(id, len)| PageSpec {
        id,
        len,
        epoch: 0,
        meta: PageMeta::default(),
    });
    let mut w = CheckpointWriter::create_with_graph(&ckpt, specs.to_vec(), BTreeMap::new(), &g.to_derivations())?;
    for p in [&p1[..], &p2, &p3, &p4] {
        w.write(p)?;
    }
    let base = w.finish()?;
    let dir = out.join("graph.log");
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = LogWriter::create(&dir, base, 1, LogOptions::default())?;
    let ts = |seq: u64| 1_750_000_000_000_000_000 + seq;
    w.append(&d(1, 1, Op::Sparse(vec![(0, b"r")])))?;
    let p1 = *b"rOOT one";
    let new3 = derive(&Rule::Xor, &[&p1, &p2]);
    let new4 = derive(&Rule::Slice { offset: 0, len: 4 }, &[&new3]);
    w.begin_group()?;
    w.append(&d(3, 1, Op::Sparse(vec![(0, &new3[..1])])))?;
    w.append(&d(4, 1, Op::Sparse(vec![(0, &new4[..1])])))?;
    let marker = GraphRecord::Propagated {
        through_seq: 1,
        recomputed: 2,
        changed: 2,
    };
    w.append_graph(&marker, ts(4), "golden")?;
    w.commit_group()?;
    let copy = g.clone();
    let mut with_copy = copy;
    with_copy.set_rule(2, Rule::Copy, &[1])?;
    let set = with_copy
        .to_derivations()
        .into_iter()
        .find(|d| d.page == 2)
        .expect("page 2 derives");
    let mut set = set;
    set.height = 0;
    w.append_graph(&GraphRecord::Derive(set), ts(5), "golden")?;
    w.append_graph(&GraphRecord::Underive { page: 2 }, ts(6), "golden")?;
    w.finish()?;
    Ok(())
}

fn fix_header_crc(b: &mut [u8]) {
    let count = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let n = 64 + 32 * count;
    let crc = crc32c::crc32c(&b[..n]);
    b[n..n + 4].copy_from_slice(&crc.to_le_bytes());
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.pop().unwrap()
}
