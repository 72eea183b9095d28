//! Data safety from the command line: the log lock, outputs that would destroy inputs, outputs
//! that are not files, checking every output before writing, and temporary outputs on a signal.
//! The many-trial versions (two appenders, kills mid-write, a full disk) are scripts/trials.sh.

mod common;

use common::{code, copy_testdata, json, ok, run, stderr};
use mmsb::format::lock::{LockWait, LogLock};

/// A directory with small.ckpt, small.log and a second state (B) to append.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_testdata("small.ckpt", dir.path());
    copy_testdata("small.log", dir.path());
    ok(dir.path(), &["replay", "small.ckpt", "small.log", "-o", "b.ckpt"]);
    ok(
        dir.path(),
        &[
            "gen",
            "-o",
            "other.ckpt",
            "--pages",
            "3",
            "--total-size",
            "8KiB",
            "--deltas",
            "0",
        ],
    );
    dir
}

const APPEND: &[&str] = &[
    "diff",
    "small.ckpt",
    "--a-log",
    "small.log",
    "other.ckpt",
    "--emit-log",
    "small.log",
    "--append",
];

#[test]
fn a_second_writer_is_refused_at_once_naming_the_holder_and_waits_with_wait() {
    let dir = workspace();
    let before = std::fs::read(dir.path().join("small.log/00000001.mmsblog")).unwrap();
    let held = LogLock::exclusive(&dir.path().join("small.log"), LockWait::Fail).unwrap();
    for args in [APPEND, &["recover", "small.log"]] {
        let o = run(dir.path(), args);
        assert_eq!(code(&o), 2, "{args:?}");
        let pid = std::process::id().to_string();
        assert!(
            stderr(&o).contains(&format!("locked by another writer, pid {pid}")),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("small.log/00000001.mmsblog")).unwrap(),
        before
    );
    let waiting = common::mmsb(dir.path()).args(APPEND).arg("--wait").spawn().unwrap();
    drop(held);
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v = json(&ok(dir.path(), &["verify", "--json", "small.ckpt", "small.log"]));
    assert_eq!(v["ok"], true);
    assert!(
        !dir.path().join("small.log/mmsb.lock").exists(),
        "the pid file goes with the lock"
    );
}

#[test]
fn recover_does_not_cut_a_log_that_a_reader_has_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_testdata("torn.log", dir.path());
    let before = std::fs::read(log.join("00000001.mmsblog")).unwrap();
    let reader = mmsb::format::log::Log::open(&[&log]).unwrap();
    let o = run(dir.path(), &["recover", "torn.log"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("locked by a reader"), "{}", stderr(&o));
    assert_eq!(std::fs::read(log.join("00000001.mmsblog")).unwrap(), before);
    assert_eq!(reader.last_seq(), Some(8), "the reader's mapping is whole");
    drop(reader);
    ok(dir.path(), &["recover", "torn.log"]);
}

/// Every way to name an input as the output: directly, through a symbolic link, through a
/// hard link. Each is refused with exit 2 before anything is written.
#[test]
fn an_output_that_names_an_input_is_refused_and_the_input_kept() {
    let dir = workspace();
    let d = dir.path();
    std::os::unix::fs::symlink("small.ckpt", d.join("link.ckpt")).unwrap();
    std::fs::hard_link(d.join("small.ckpt"), d.join("hard.ckpt")).unwrap();
    // A one-tensor safetensors file: 8-byte header length, JSON header, data.
    let header = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(b"abcd");
    std::fs::write(d.join("m.safetensors"), &st).unwrap();
    ok(d, &["import", "m.safetensors", "-o", "m.ckpt"]);
    std::os::unix::fs::symlink("m.safetensors", d.join("m-link.safetensors")).unwrap();
    let ckpt = std::fs::read(d.join("small.ckpt")).unwrap();
    let st = std::fs::read(d.join("m.safetensors")).unwrap();
    for out in ["small.ckpt", "link.ckpt", "hard.ckpt"] {
        for args in [
            vec!["replay", "small.ckpt", "small.log", "-o", out],
            vec!["compact", "small.ckpt", "small.log", "-o", out],
            vec!["export", "small.ckpt", "-o", out],
            vec!["replay", "small.ckpt", "small.log", "-o", "small.log/00000000.mmsblog"],
        ] {
            let o = run(d, &args);
            assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("names the input"), "{args:?}: {}", stderr(&o));
        }
    }
    for out in ["m.safetensors", "m-link.safetensors"] {
        let o = run(d, &["import", "m.safetensors", "-o", out]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(d.join("small.ckpt")).unwrap(), ckpt);
    assert_eq!(std::fs::read(d.join("m.safetensors")).unwrap(), st);
    ok(d, &["verify", "small.ckpt", "small.log"]);
}

#[test]
fn outputs_onto_a_fifo_or_a_directory_are_refused_and_a_symlinked_output_is_written_through() {
    let dir = workspace();
    let d = dir.path();
    let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(d.join("adir")).unwrap();
    for out in ["fifo", "adir"] {
        let o = run(d, &["replay", "small.ckpt", "small.log", "-o", out]);
        assert_eq!(code(&o), 2, "{out}: {}", stderr(&o));
        assert!(stderr(&o).contains("output is"), "{}", stderr(&o));
    }
    std::fs::create_dir(d.join("real")).unwrap();
    std::os::unix::fs::symlink("real/out.ckpt", d.join("out.ckpt")).unwrap();
    ok(d, &["replay", "small.ckpt", "small.log", "-o", "out.ckpt"]);
    assert!(
        std::fs::symlink_metadata(d.join("out.ckpt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(d.join("real/out.ckpt")).unwrap(),
        std::fs::read(d.join("b.ckpt")).unwrap(),
        "written through the link, to its target"
    );
}

#[test]
fn gen_refuses_an_existing_log_before_it_touches_the_checkpoint() {
    let dir = workspace();
    let d = dir.path();
    let before = std::fs::read(d.join("small.ckpt")).unwrap();
    let o = run(
        d,
        &[
            "gen",
            "-o",
            "small.ckpt",
            "--log",
            "small.log",
            "--total-size",
            "64KiB",
            "--deltas",
            "5",
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(std::fs::read(d.join("small.ckpt")).unwrap(), before);
}

#[test]
fn compact_with_a_rest_log_publishes_both_outputs_and_refuses_a_rest_log_that_names_an_input() {
    let dir = workspace();
    let d = dir.path();
    let compact = |rest: &str| {
        let args: Vec<&str> = "compact small.ckpt small.log --to-seq 4 -o c.ckpt --rest-log"
            .split(' ')
            .collect();
        run(d, &[&args[..], &[rest]].concat())
    };
    let o = compact("small.log");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!d.join("c.ckpt").exists());
    let o = compact("c.log");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let a = json(&ok(d, &["replay", "--json", "small.ckpt", "small.log"]));
    let c = json(&ok(d, &["replay", "--json", "c.ckpt", "c.log"]));
    assert_eq!(a["state_hash"], c["state_hash"]);
    assert!(common::stale(d).is_empty());
}

/// SIGTERM in the middle of a long write: the process removes its temporary output and exits
/// 128 + 15; a temporary output left by SIGKILL is named by verify and inspect.
#[test]
fn a_signal_during_a_long_write_leaves_no_temporary_output_and_verify_names_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut child = common::mmsb(d)
        .args(["gen", "-o", "big.ckpt", "--total-size", "4GiB", "--deltas", "0"])
        .spawn()
        .unwrap();
    // Wait (bounded) for the temporary file to appear, i.e. for the write to be under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while common::stale(d).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no temporary output appeared");
        assert!(child.try_wait().unwrap().is_none(), "gen ended before the signal");
        std::thread::yield_now();
    }
    // SAFETY: kill sends a signal to the child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(common::stale(d).is_empty(), "left: {:?}", common::stale(d));
    assert!(!d.join("big.ckpt").exists());

    copy_testdata("small.ckpt", d);
    std::fs::write(d.join(".small.ckpt.Ab12Cd.mmsb-tmp"), b"partial").unwrap();
    let o = run(d, &["verify", "small.ckpt"]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains(".small.ckpt.Ab12Cd.mmsb-tmp: temporary output of an interrupted mmsb write"));
    let v = json(&run(d, &["verify", "--json", "small.ckpt"]));
    assert_eq!(v["stale_temp_outputs"].as_array().unwrap().len(), 1);
    let o = run(d, &["inspect", "small.ckpt"]);
    assert!(stderr(&o).contains("temporary output of an interrupted mmsb write"));
}

/// A checkpoint of two U8 tensors with the given names.
fn two_tensors(dir: &std::path::Path, names: [&str; 2]) -> std::path::PathBuf {
    two_tensors_at(dir, names, 0, "two.ckpt")
}

/// [`two_tensors`] with every page at `epoch`, written to `file`.
fn two_tensors_at(dir: &std::path::Path, names: [&str; 2], epoch: u64, file: &str) -> std::path::PathBuf {
    use mmsb::format::checkpoint::{PageSpec, write_checkpoint};
    use mmsb::page::{PageMeta, TensorInfo};
    let path = dir.join(file);
    let spec = |id: u64, name: &str| PageSpec {
        id,
        len: 4,
        epoch,
        meta: PageMeta {
            name: Some(name.into()),
            tensor: Some(TensorInfo {
                dtype: "U8".into(),
                shape: vec![4],
            }),
            ..Default::default()
        },
    };
    let _ = std::fs::remove_file(&path);
    write_checkpoint(
        &path,
        Default::default(),
        [(spec(1, names[0]), &b"abcd"[..]), (spec(2, names[1]), &b"efgh"[..])],
    )
    .unwrap();
    path
}

#[test]
fn export_refuses_two_pages_of_one_name_and_a_page_named_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_tensors(d, ["w", "w"]);
    let o = run(d, &["export", "two.ckpt", "-o", "x.safetensors"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("pages 1 and 2 are both named \"w\""),
        "{}",
        stderr(&o)
    );
    two_tensors(d, ["w", "__metadata__"]);
    let o = run(d, &["export", "two.ckpt", "-o", "x.safetensors"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("page 2 is named __metadata__"), "{}", stderr(&o));
    assert!(!d.join("x.safetensors").exists());
}

#[test]
fn inputs_that_are_not_regular_files_or_not_mmsb_files_are_named_for_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(d.join("adir")).unwrap();
    std::fs::write(d.join("empty.ckpt"), b"").unwrap();
    std::fs::write(
        d.join("lfs.ckpt"),
        b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n",
    )
    .unwrap();
    std::fs::write(d.join("z.ckpt"), [0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0, 0]).unwrap();
    let mut st = 10u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{}        ");
    std::fs::write(d.join("m.safetensors"), &st).unwrap();
    for (args, says) in [
        (vec!["replay", "fifo"], "not a regular file"),
        (vec!["verify", "fifo"], "not a regular file"),
        (vec!["replay", "adir"], "is a directory"),
        (vec!["replay", "empty.ckpt"], "an empty file"),
        (vec!["replay", "lfs.ckpt"], "git lfs pull"),
        (vec!["replay", "z.ckpt"], "zstd -d"),
        (vec!["replay", "m.safetensors"], "mmsb import"),
        (vec!["verify", "m.safetensors"], "mmsb import"),
    ] {
        let o = run(d, &args);
        assert_ne!(code(&o), 0, "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn diff_agrees_with_the_state_hash_and_bytes_only_ignores_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_tensors(d, ["a", "b"]);
    two_tensors_at(d, ["a", "b"], 5, "later.ckpt");
    // The same bytes at other epochs: another state (hash), so diff says they differ.
    let o = run(d, &["diff", "two.ckpt", "later.ckpt"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        common::stdout(&o).contains("same bytes, but 2 page(s) differ in epoch"),
        "{}",
        common::stdout(&o)
    );
    let r = json(&run(d, &["diff", "--json", "two.ckpt", "later.ckpt"]));
    assert_eq!(
        (r["identical"].as_bool(), r["bytes_identical"].as_bool()),
        (Some(false), Some(true))
    );
    assert_ne!(r["state_hash_a"], r["state_hash_b"]);
    assert_eq!(
        code(&run(d, &["diff", "-q", "--bytes-only", "two.ckpt", "later.ckpt"])),
        0
    );
    assert_eq!(code(&run(d, &["diff", "-q", "two.ckpt", "two.ckpt"])), 0);
}

#[test]
fn verify_json_is_one_document_whatever_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.ckpt"), b"").unwrap();
    std::fs::write(d.join("text.ckpt"), b"hello world, not a checkpoint").unwrap();
    std::fs::create_dir(d.join("nolog")).unwrap();
    for (file, exit) in [("missing.ckpt", 2), ("empty.ckpt", 1), ("text.ckpt", 1), ("nolog", 2)] {
        let o = run(d, &["verify", "--json", file]);
        assert_eq!(code(&o), exit, "{file}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["ok"], false, "{file}");
        assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{file}: {v}");
    }
}

#[test]
fn a_closed_stdout_ends_the_output_quietly_and_diff_still_reports_the_comparison() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    // Outputs far larger than a pipe's buffer, so the writer meets the closed pipe.
    ok(
        dir.path(),
        &[
            "gen",
            "-o",
            "g.ckpt",
            "--pages",
            "3000",
            "--total-size",
            "3MiB",
            "--deltas",
            "6000",
        ],
    );
    for (args, exit) in [
        (vec!["inspect", "--json", "--records", "g.log"], 0),
        (vec!["diff", "g.ckpt", "g.ckpt", "--b-log", "g.log"], 1),
    ] {
        let mut child = common::mmsb(dir.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 10];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The pipe's reading end is closed here, as `| head -c 10` closes it.
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(exit), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("Broken pipe"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn verify_of_a_log_alone_does_not_contradict_its_result() {
    let o = ok(&common::testdata(), &["verify", "-v", "small.log"]);
    let out = common::stdout(&o);
    assert!(out.contains("ok") && !out.contains("problems found"), "{out}");
}

/// Tables fit the terminal's width (`COLUMNS`, as `ls` reads it) and give sizes as people read
/// them; `--json` keeps exact byte counts.
#[test]
fn tables_fit_the_terminal_and_give_human_sizes_while_json_keeps_exact_bytes() {
    let dir = workspace();
    for args in [
        &["inspect", "small.ckpt"][..],
        &["inspect", "--records", "small.log"],
        &["diff", "small.ckpt", "b.ckpt"],
        &["compact", "small.ckpt", "small.log", "-o", "c.ckpt"],
    ] {
        let o = common::mmsb(dir.path())
            .args(args)
            .env("COLUMNS", "60")
            .output()
            .unwrap();
        let text = common::stdout(&o);
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(
            widest <= 60,
            "mmsb {args:?} printed a line of {widest} characters:\n{text}"
        );
    }
    let o = common::mmsb(dir.path())
        .args(["inspect", "small.ckpt"])
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let text = common::stdout(&o);
    assert!(text.contains("20.00 KiB") && text.contains("2.93 KiB"), "{text}");
    let j = json(&ok(dir.path(), &["inspect", "--json", "small.ckpt"]));
    assert_eq!(j[0]["file_bytes"], 20480);
    assert_eq!(j[0]["pages"][2]["len"], 3000);
}

/// `diff` checks what it reads as `verify` does: a non-zero byte in the padding after a page is
/// corruption (exit 2 for diff, naming the file and the offset), never "identical".
#[test]
fn diff_refuses_a_checkpoint_that_verify_rejects() {
    let dir = workspace();
    let mut bytes = std::fs::read(dir.path().join("small.ckpt")).unwrap();
    let padding = 8192 + 5 + 10; // after page 0, `greeting`, 5 bytes at the data offset
    assert_eq!(bytes[padding], 0);
    bytes[padding] = 0x55;
    std::fs::write(dir.path().join("bad.ckpt"), &bytes).unwrap();
    assert_eq!(code(&run(dir.path(), &["verify", "bad.ckpt"])), 1);
    for args in [
        &["diff", "small.ckpt", "bad.ckpt"][..],
        &["diff", "-q", "bad.ckpt", "small.ckpt"],
        &["diff", "bad.ckpt", "bad.ckpt"],
    ] {
        let o = run(dir.path(), args);
        assert_eq!(code(&o), 2, "mmsb {args:?}: {}", common::stdout(&o));
        let e = stderr(&o);
        assert!(
            e.contains("bad.ckpt") && e.contains(&padding.to_string()) && e.contains("padding"),
            "{e}"
        );
    }
}

/// Every numeric option is range-checked before anything runs, and the message gives the range.
#[test]
fn numeric_options_out_of_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let gen_ = |opt: &'static str, v: &'static str| vec!["gen", "-o", "g.ckpt", opt, v];
    for (args, range) in [
        (gen_("--max-ranges", "99999999999"), "1..=4096"),
        (gen_("--max-ranges", "0"), "1..=4096"),
        (gen_("--hot-fraction", "NaN"), "0..=1"),
        (gen_("--hot-weight", "1.5"), "0..=1"),
        (gen_("--pages", "100000001"), "0..=100000000"),
        (gen_("--deltas", "1000000001"), "0..=1000000000"),
        (gen_("--segment-size", "10"), "4.00 KiB ..= 1.00 TiB"),
        (gen_("--total-size", "2TiB"), "..= 1.00 TiB"),
        (gen_("--delta-bytes", "0..8"), "1 <= MIN <= MAX <= 1GiB"),
        (vec!["diff", "a", "b", "--ranges", "10001"], "0..=10000"),
        (vec!["stress", "--duration", "0s"], "1ms..=7 days"),
    ] {
        let o = run(dir.path(), &args);
        assert_eq!(code(&o), 2, "mmsb {args:?}");
        assert!(stderr(&o).contains(range), "mmsb {args:?}: {}", stderr(&o));
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

/// CPU replay takes --pages as GPU replay does (ids, id ranges, name globs): the hash and the
/// output cover the selected pages, with the bytes a whole replay gives them; `inspect --page`
/// takes the same patterns for a checkpoint's page list and for a log's records.
#[test]
fn cpu_replay_and_inspect_select_pages_by_id_range_and_glob() {
    let dir = workspace();
    ok(
        dir.path(),
        &["replay", "small.ckpt", "small.log", "--device", "cpu", "-o", "all.ckpt"],
    );
    ok(
        dir.path(),
        &[
            "replay",
            "small.ckpt",
            "small.log",
            "--device",
            "cpu",
            "--pages",
            "gr*",
            "--pages",
            "1-1",
            "-o",
            "sel.ckpt",
        ],
    );
    let d = json(&run(dir.path(), &["diff", "--json", "all.ckpt", "sel.ckpt"]));
    let changed: Vec<(u64, &str)> = d["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["change"].as_str().unwrap()))
        .collect();
    assert_eq!(changed, [(2, "removed")], "only page 2 was left out: {d}");
    let sel = json(&ok(dir.path(), &["inspect", "--json", "sel.ckpt"]));
    assert_eq!(
        common::replay_hash(dir.path(), &["small.ckpt", "small.log", "--pages", "0-1"]),
        sel[0]["state_hash"].as_str().unwrap(),
        "the hash of the selection is the hash of the checkpoint written from it"
    );
    let listed = json(&ok(
        dir.path(),
        &["inspect", "--json", "small.ckpt", "--page", "w*", "--page", "2"],
    ));
    let ids: Vec<u64> = listed[0]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    let recs = json(&ok(
        dir.path(),
        &[
            "inspect",
            "--json",
            "small.ckpt",
            "small.log",
            "--records",
            "--page",
            "weights",
        ],
    ));
    let pages: Vec<u64> = recs[1]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["page_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pages,
        [1, 1],
        "page 1's two records, found by its name in the checkpoint"
    );
    let o = run(
        dir.path(),
        &["replay", "small.ckpt", "--device", "cpu", "--pages", "9-3"],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--pages 9-3"), "{}", stderr(&o));
}

/// Progress bars go to a terminal only: with stderr piped, long commands print nothing there.
#[test]
fn piped_commands_print_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "gen",
            "-o",
            "g.ckpt",
            "--total-size",
            "96MiB",
            "--pages",
            "16",
            "--deltas",
            "20000",
        ],
    );
    for args in [
        &["verify", "g.ckpt", "g.log"][..],
        &["replay", "--device", "cpu", "g.ckpt", "g.log", "-o", "r.ckpt"],
        &["diff", "-q", "g.ckpt", "r.ckpt"],
        &["compact", "g.ckpt", "g.log", "-o", "c.ckpt"],
    ] {
        let o = run(dir.path(), args);
        assert!(code(&o) <= 1, "mmsb {args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "mmsb {args:?} printed on a piped stderr");
    }
}
