//! The C ABI from C: `abi_test.c` is compiled against `include/mmsb.h` and the shared library
//! `cargo build -p mmsb-capi` put beside this test's directory, under AddressSanitizer, and run
//! on files made here; its output is checked line by line against what the library itself says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mmsb::format::checkpoint::{Checkpoint, PageSpec, write_checkpoint};
use mmsb::ops::sync::{ChangedPage, HeldPage, StepOptions, append_delta, create_log};
use mmsb::page::{PageMeta, TensorInfo};

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Where cargo put libmmsb_c.so: the directory above this test binary's `deps/`.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

#[test]
fn the_header_compiles_and_every_call_works_from_c_under_asan() {
    let lib = library_dir();
    if !lib.join("libmmsb_c.so").exists() {
        panic!(
            "{} has no libmmsb_c.so: `cargo build -p mmsb-capi` first (cargo test builds only the rlib)",
            lib.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let names = ["w", "b", "raw"];
    let base: Vec<Vec<u8>> = vec![
        (0..4096u32).map(|i| (i * 13) as u8).collect(),
        vec![3u8; 6],
        (0..777u32).map(|i| (i % 7) as u8).collect(),
    ];
    let metas = [Some(("F32", vec![32u64, 32])), Some(("F16", vec![3])), None];
    let ckpt = dir.path().join("base.ckpt");
    let pages = base.iter().zip(&metas).zip(names).enumerate().map(|(id, ((b, m), n))| {
        let meta = PageMeta {
            name: Some(n.into()),
            tensor: m.as_ref().map(|(d, s)| TensorInfo {
                dtype: d.to_string(),
                shape: s.clone(),
            }),
            ..Default::default()
        };
        (
            PageSpec {
                id: id as u64,
                len: b.len() as u64,
                epoch: 0,
                meta,
            },
            &b[..],
        )
    });
    write_checkpoint(&ckpt, BTreeMap::new(), pages).unwrap();
    // A sync log against the same pages: two steps.
    let log = dir.path().join("sync.log");
    let held: Vec<(HeldPage, u32)> = base
        .iter()
        .zip(&metas)
        .zip(names)
        .map(|((b, m), n)| {
            let h = HeldPage {
                name: n.into(),
                dtype: m.as_ref().map(|(d, _)| d.to_string()),
                shape: m.as_ref().map_or_else(Vec::new, |(_, s)| s.clone()),
                len: b.len() as u64,
            };
            (h, mmsb::format::crc32c(b))
        })
        .collect();
    assert_eq!(
        create_log(&log, &held).unwrap(),
        Checkpoint::open(&ckpt).unwrap().state_hash()
    );
    let mut states = vec![base.clone()];
    for step in 1..=2u8 {
        let mut next = states.last().unwrap().clone();
        next[0][100 * step as usize..100 * step as usize + 40].fill(step);
        next[1][step as usize] = 0xF0 | step;
        next[2][700 + step as usize] ^= 0xFF;
        let prev = states.last().unwrap();
        let changed: Vec<ChangedPage> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ChangedPage::whole(n, &prev[i], &next[i]))
            .collect();
        append_delta(&log, &changed, StepOptions::default()).unwrap();
        states.push(next);
    }
    let damaged = dir.path().join("damaged.ckpt");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    let missing = dir.path().join("missing.ckpt");

    let exe = dir.path().join("abi_test");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Werror",
            "-g",
            "-fsanitize=address",
            "-fno-omit-frame-pointer",
        ])
        .arg("-I")
        .arg(src.join("include"))
        .arg(src.join("tests/abi_test.c"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lmmsb_c")
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C compiler (cc, or $CC)");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let run = Command::new(&exe)
        .args([&ckpt, &log, &missing, &damaged])
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", String::from_utf8_lossy(&run.stderr));
    let hash = Checkpoint::open(&ckpt).unwrap().state_hash().to_hex();
    let mut want = vec![
        "pages 3".to_string(),
        format!("state {hash}"),
        "page 0 len 4096 name w dtype F32 ndim 2".into(),
        "page 1 len 6 name b dtype F16 ndim 1".into(),
        "page 2 len 777 name raw dtype - ndim 0".into(),
        "page past the end: 2".into(),
        "verify ok 1".into(),
    ];
    want.extend(
        names
            .iter()
            .zip(&states[0])
            .map(|(n, b)| format!("base {n} {:016x}", fnv(b))),
    );
    want.push("applied to 4".into());
    want.push("applied to 7".into());
    want.extend(
        names
            .iter()
            .zip(&states[2])
            .map(|(n, b)| format!("synced {n} {:016x}", fnv(b))),
    );
    want.push("stale base: 1 named".into());
    want.push("missing: 2 names the file".into());
    want.push("damaged: 1 names the file".into());
    want.push("null path: 2".into());
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}
