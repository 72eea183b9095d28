//! Round trips against the real peer: files written by the Python safetensors package (installed
//! from PyPI by scripts/test.sh) are imported, exported, and compared bit for bit by Python.

mod common;

use std::path::Path;

use common::{code, json, run, stderr};
use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::{LogOptions, LogWriter};
use mmsb::format::record::{Delta, Op};

fn python(dir: &Path, args: &[&str]) -> String {
    common::python("interop.py", dir, args)
}

#[test]
fn import_then_export_is_bit_identical_to_the_python_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(d, &["write", "orig.safetensors"]);
    let o = run(d, &["import", "orig.safetensors", "-o", "m.ckpt", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["tensors"], 15);
    let c = Checkpoint::open(&d.join("m.ckpt")).unwrap();
    assert_eq!(c.head().metadata["step"], "42");
    let q = c
        .pages()
        .iter()
        .find(|p| p.meta.name.as_deref() == Some("model.layers.0.attn.q_proj.weight"))
        .unwrap();
    assert_eq!(q.meta.tensor.as_ref().unwrap().dtype, "F32");
    assert_eq!(q.meta.tensor.as_ref().unwrap().shape, vec![64, 32]);
    assert_eq!(code(&run(d, &["verify", "m.ckpt"])), 0);
    let o = run(d, &["export", "m.ckpt", "-o", "back.safetensors"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    python(d, &["same", "orig.safetensors", "back.safetensors"]);
}

#[test]
fn export_after_a_log_gives_the_replayed_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(d, &["write", "orig.safetensors"]);
    assert_eq!(code(&run(d, &["import", "orig.safetensors", "-o", "m.ckpt"])), 0);
    let c = Checkpoint::open(&d.join("m.ckpt")).unwrap();
    let q = c
        .pages()
        .iter()
        .find(|p| p.meta.name.as_deref() == Some("model.layers.0.attn.q_proj.weight"))
        .unwrap();
    let mut w = LogWriter::create(&d.join("m.log"), c.state_hash(), 1, LogOptions::default()).unwrap();
    w.append(&Delta {
        page_id: q.id,
        epoch: 1,
        timestamp_ns: 0,
        source: "test".into(),
        op: Op::Sparse(vec![(100, &[0xde, 0xad, 0xbe, 0xef])]),
    })
    .unwrap();
    w.finish().unwrap();
    let o = run(d, &["export", "m.ckpt", "m.log", "-o", "step1.safetensors"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    python(
        d,
        &[
            "same",
            "orig.safetensors",
            "step1.safetensors",
            "model.layers.0.attn.q_proj.weight",
            "100",
            "deadbeef",
        ],
    );
}

#[test]
fn a_safetensors_file_with_a_lying_header_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(d, &["write", "orig.safetensors"]);
    let good = std::fs::read(d.join("orig.safetensors")).unwrap();
    // Header length pointing past the end of the file.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    std::fs::write(d.join("long.safetensors"), &b).unwrap();
    // Offsets in the JSON header that do not match the data.
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header =
        String::from_utf8(good[8..8 + n].to_vec())
            .unwrap()
            .replacen("\"data_offsets\":[0,", "\"data_offsets\":[8,", 1);
    let mut b = good[..8].to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&good[8 + n..]);
    std::fs::write(d.join("offsets.safetensors"), &b).unwrap();
    // Truncated data.
    std::fs::write(d.join("short.safetensors"), &good[..good.len() - 3]).unwrap();
    for f in ["long.safetensors", "offsets.safetensors", "short.safetensors"] {
        let o = run(d, &["import", f, "-o", "x.ckpt"]);
        assert_eq!(code(&o), 1, "{f}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(f) && stderr(&o).contains("at byte offset"),
            "{}",
            stderr(&o)
        );
        assert!(!d.join("x.ckpt").exists());
    }
}
