//! The `mmsb` binary's contract with scripts: exit codes, quiet defaults, `--json` schemas, and
//! an example in every subcommand's help.

mod common;

use common::{code, json, ok, replay_hash, run, stderr, stdout, testdata};

const SUBCOMMANDS: &[&str] = &[
    "gen",
    "import",
    "export",
    "inspect",
    "verify",
    "recover",
    "replay",
    "compact",
    "diff",
    "stress",
    "propagate",
    "explain",
    "watch",
    "completions",
];

#[test]
fn every_subcommand_help_has_an_example() {
    let dir = tempfile::tempdir().unwrap();
    for sub in SUBCOMMANDS {
        let o = run(dir.path(), &[sub, "--help"]);
        assert_eq!(code(&o), 0);
        assert!(
            stdout(&o).contains("EXAMPLE"),
            "mmsb {sub} --help has no example:\n{}",
            stdout(&o)
        );
        assert!(
            stdout(&o).contains(&format!("mmsb {sub}")),
            "the example runs mmsb {sub}"
        );
    }
    let o = run(dir.path(), &["--help"]);
    assert!(stdout(&o).contains("EXIT STATUS"), "{}", stdout(&o));
}

#[test]
fn verify_is_quiet_and_exits_0_on_good_data() {
    let o = ok(&testdata(), &["verify", "small.ckpt", "small.log"]);
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "quiet by default");
}

#[test]
fn verify_exit_codes_distinguish_bad_data_from_usage_and_io_errors() {
    let td = testdata();
    let o = run(&td, &["verify", "small.ckpt", "midcorrupt.log"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("midcorrupt.log/00000000.mmsblog: at byte offset 72"),
        "names file and offset: {}",
        stderr(&o)
    );
    assert_eq!(code(&run(&td, &["verify", "future-major.ckpt"])), 1);
    assert_eq!(code(&run(&td, &["verify", "no-such-file.ckpt"])), 2);
    assert_eq!(code(&run(&td, &["verify"])), 2, "missing argument is a usage error");
    assert_eq!(code(&run(&td, &["verify", "--bogus", "small.ckpt"])), 2);
    assert_eq!(
        code(&run(&td, &["verify", "README.md"])),
        1,
        "not an mmsb file: bad magic"
    );
}

#[test]
fn verify_json_reports_every_problem() {
    let o = run(&testdata(), &["verify", "--json", "small.ckpt", "midcorrupt.log"]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    for p in problems {
        for key in ["file", "offset", "kind", "message"] {
            assert!(p.get(key).is_some(), "problem lacks {key}: {p}");
        }
    }
    assert_eq!(problems[0]["kind"], "corrupt");
    assert_eq!(problems[0]["offset"], 72);

    // Two corrupted checkpoints: both are reported, not just the first.
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.ckpt", "b.ckpt"] {
        let mut b = std::fs::read(testdata().join("small.ckpt")).unwrap();
        let at = b.len() - 4096 + 7;
        b[at] ^= 1;
        std::fs::write(dir.path().join(name), b).unwrap();
    }
    let v = json(&run(dir.path(), &["verify", "--json", "a.ckpt", "b.ckpt"]));
    assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn verify_and_replay_agree_on_the_state_hash_and_replay_output_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let td = testdata();
    let v = json(&run(&td, &["verify", "--json", "small.ckpt", "small.log"]));
    let o = ok(
        &td,
        &[
            "replay",
            "small.ckpt",
            "small.log",
            "--json",
            "-o",
            dir.path().join("out.ckpt").to_str().unwrap(),
        ],
    );
    let r = json(&o);
    assert_eq!(r["state_hash"], v["state_hash"]);
    assert_eq!(r["records"], 9);
    assert!(
        r["device"].as_str().unwrap().starts_with("cpu"),
        "says which device it used"
    );
    for phase in ["open", "check", "apply", "hash", "write", "total"] {
        assert!(r["timings_ms"][phase].is_number(), "timing {phase}");
    }
    let out = json(&run(dir.path(), &["verify", "--json", "out.ckpt"]));
    assert_eq!(out["ok"], true);
    assert_eq!(out["state_hash"], v["state_hash"]);
}

#[test]
fn replay_to_seq_and_to_epoch_stop_where_asked() {
    let td = testdata();
    let by_seq = json(&run(
        &td,
        &["replay", "small.ckpt", "small.log", "--json", "--to-seq", "4"],
    ));
    let by_epoch = json(&run(
        &td,
        &["replay", "small.ckpt", "small.log", "--json", "--to-epoch", "4"],
    ));
    assert_eq!(by_seq["records"], 4);
    assert_eq!(by_seq["state_hash"], by_epoch["state_hash"]);
    assert_eq!(
        code(&run(
            &td,
            &["replay", "small.ckpt", "small.log", "--to-seq", "1", "--to-epoch", "1"]
        )),
        2
    );
}

#[test]
fn replay_on_cuda_without_a_driver_is_refused_with_one_line_and_exit_2() {
    if matches!(mmsb::gpu::device_count(), Ok(n) if n > 0) {
        eprintln!("skipped: a CUDA device is present (the GPU suite covers replay there)");
        return;
    }
    for device in ["cuda:0", "cuda:0,cuda:1"] {
        // With a log too: it is opened and planned while CUDA starts, and the start's failure
        // is still the one line.
        for args in [&["small.ckpt"][..], &["small.ckpt", "small.log"]] {
            let o = run(&testdata(), &[&["replay"], args, &["--device", device]].concat());
            assert_eq!(code(&o), 2, "{device} {args:?}");
            assert_eq!(stderr(&o).lines().count(), 1, "{device} {args:?}: {}", stderr(&o));
        }
    }
    let o = run(&testdata(), &["replay", "small.ckpt", "--device", "cuda:0,gpu1"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("expected cuda:N,cuda:M"), "{}", stderr(&o));
}

#[test]
fn replay_with_a_torn_tail_warns_and_uses_the_whole_records() {
    let o = run(&testdata(), &["replay", "small.ckpt", "torn.log", "--json"]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("torn tail"), "{}", stderr(&o));
    assert_eq!(json(&o)["records"], 8);
}

#[test]
fn inspect_json_describes_checkpoints_logs_and_selected_records() {
    let td = testdata();
    let v = json(&run(&td, &["inspect", "--json", "small.ckpt", "small.log"]));
    let (c, l) = (&v[0], &v[1]);
    assert_eq!(c["kind"], "checkpoint");
    assert_eq!(c["page_count"], 3);
    assert_eq!(c["pages"][1]["name"], "weights");
    assert_eq!(c["pages"][1]["dtype"], "F32");
    assert_eq!(c["pages"][1]["shape"], serde_json::json!([5, 5]));
    assert_eq!(c["pages"][1]["residency"], "device");
    assert_eq!(c["metadata"]["format"], "pt");
    assert_eq!(l["kind"], "log");
    assert_eq!(l["records"], 9);
    assert_eq!(l["records_by_type"]["sparse"], 4);
    assert_eq!(l["first_seq"], 1);
    assert_eq!(l["last_seq"], 9);
    assert!(l["compression_ratio"].as_f64().unwrap() > 1.0);
    assert_eq!(l["base_state_hash"], c["state_hash"]);

    let v = json(&run(
        &td,
        &["inspect", "--json", "small.log", "--records", "--page", "7"],
    ));
    let recs = v[0]["records"].as_array().unwrap();
    assert_eq!(
        recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![4, 5, 8]
    );
    let v = json(&run(
        &td,
        &[
            "inspect",
            "--json",
            "small.log",
            "--records",
            "--from-seq",
            "2",
            "--to-seq",
            "3",
        ],
    ));
    assert_eq!(v[0]["records"].as_array().unwrap().len(), 2);
    // Human output is a table on stdout.
    let o = run(&td, &["inspect", "small.ckpt"]);
    assert!(stdout(&o).contains("weights") && stdout(&o).contains("state hash"));
}

#[test]
fn gen_is_deterministic_and_its_output_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &str| {
        vec![
            "gen".to_string(),
            "-o".into(),
            out.into(),
            "--total-size".into(),
            "200KiB".into(),
            "--pages".into(),
            "7".into(),
            "--deltas".into(),
            "150".into(),
            "--mix".into(),
            "full=1,sparse=3,masked=2,create=1,resize=1,delete=1".into(),
            "--seed".into(),
            "42".into(),
            "--json".into(),
        ]
    };
    let a: Vec<String> = args("a.ckpt");
    let o = common::mmsb(dir.path()).args(&a).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let g = json(&o);
    assert_eq!(g["records"], 150);
    common::mmsb(dir.path()).args(args("b.ckpt")).output().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("a.ckpt")).unwrap(),
        std::fs::read(dir.path().join("b.ckpt")).unwrap()
    );
    let v = json(&run(dir.path(), &["verify", "--json", "a.ckpt", "a.log"]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checkpoints"][0]["state_hash"], g["checkpoint_state_hash"]);
    assert_eq!(v["log"]["applied"], 150);
}

#[test]
fn verify_repair_cuts_a_torn_tail_and_keeps_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_testdata("small.ckpt", dir.path());
    let torn = common::copy_testdata("torn.log", dir.path());
    let seg = torn.join("00000001.mmsblog");
    let before = std::fs::read(&seg).unwrap();
    let o = ok(dir.path(), &["verify", "--repair", "--json", "small.ckpt", "torn.log"]);
    let v = json(&o);
    let offset = v["repaired"]["offset"].as_u64().unwrap() as usize;
    let backup = dir.path().join(v["repaired"]["backup"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        &before[offset..],
        "the backup holds exactly the cut bytes"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        &before[..offset],
        "only the torn tail was cut"
    );
    assert_eq!(code(&run(dir.path(), &["verify", "small.ckpt", "torn.log"])), 0);
    // Nothing to repair on a clean log; a corrupt one is left alone with exit 1.
    assert_eq!(code(&run(dir.path(), &["recover", "torn.log"])), 0);
    common::copy_testdata("midcorrupt.log", dir.path());
    let o = run(dir.path(), &["verify", "--repair", "small.ckpt", "midcorrupt.log"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn outputs_are_not_left_behind_when_a_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_testdata("small.ckpt", dir.path());
    common::copy_testdata("midcorrupt.log", dir.path());
    let o = run(
        dir.path(),
        &["replay", "small.ckpt", "midcorrupt.log", "-o", "out.ckpt"],
    );
    assert_eq!(code(&o), 1);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("out.ckpt")), "{names:?}");
    // export of a page without a name fails (exit 2) and writes nothing.
    let o = run(dir.path(), &["export", "small.ckpt", "-o", "x.safetensors"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("page 2 has no name"), "{}", stderr(&o));
    assert!(!dir.path().join("x.safetensors").exists());
}

#[test]
fn man_pages_in_man_are_current() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["man-pages", "--out", "man"]);
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut fresh: Vec<_> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    fresh.sort();
    assert!(fresh.len() > SUBCOMMANDS.len());
    for name in fresh {
        let new = std::fs::read(dir.path().join("man").join(&name)).unwrap();
        let old = std::fs::read(committed.join(&name)).unwrap_or_default();
        assert!(
            new == old,
            "man/{} is stale: run `cargo run -- man-pages --out man`",
            name.to_string_lossy()
        );
    }
    let root = std::fs::read_to_string(committed.join("mmsb.1")).unwrap();
    assert!(
        root.contains("EXIT STATUS"),
        "exit codes are documented in the man page"
    );
}

/// The completion scripts a release ships (completions/) are what the binary writes now.
#[test]
fn completion_scripts_in_completions_are_current() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &["man-pages", "--out", "man", "--completions-out", "completions"],
    );
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("completions"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["_mmsb", "_mmsb.ps1", "mmsb.bash", "mmsb.elv", "mmsb.fish"]);
    for name in names {
        let new = std::fs::read(dir.path().join("completions").join(&name)).unwrap();
        let old = std::fs::read(committed.join(&name)).unwrap_or_default();
        assert!(
            new == old,
            "completions/{} is stale: run `cargo run -- man-pages --out man --completions-out completions`",
            name.to_string_lossy()
        );
    }
}

/// Every page's synopsis names the command as it is typed, no page has clap_mangen's "EXTRA"
/// heading, every `mmsb-*(1)` page a page refers to exists, and no committed page is left from
/// a command that is gone.
#[test]
fn man_pages_name_commands_as_typed_and_every_reference_resolves() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["man-pages", "--out", "man"]);
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let names = |d: &std::path::Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let pages = names(&dir.path().join("man"));
    assert_eq!(names(&committed), pages, "man/ holds exactly the generated pages");
    for sub in SUBCOMMANDS {
        assert!(pages.contains(&format!("mmsb-{sub}.1")), "a page for {sub}");
    }
    for page in &pages {
        let text = std::fs::read_to_string(committed.join(page))
            .unwrap()
            .replace("\\-", "-");
        assert!(!text.contains(".SH EXTRA"), "{page} has an EXTRA heading");
        if let Some(cmd) = page.strip_suffix(".1").and_then(|p| p.strip_prefix("mmsb-")) {
            let typed = format!("\\fBmmsb {}\\fR", cmd.replace('-', " "));
            assert!(text.contains(&typed), "{page}'s synopsis says {typed}");
        }
        for (at, _) in text.match_indices("(1)") {
            let start = text[..at].rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
            let target = &text[start..at];
            if target.starts_with("mmsb") {
                assert!(
                    pages.contains(&format!("{target}.1")),
                    "{page} refers to {target}(1), which does not exist"
                );
            }
        }
    }
}

/// `mmsb completions SHELL` prints a script for each shell clap_complete knows; the bash one
/// parses and completes every subcommand.
#[test]
fn completions_are_printed_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let o = ok(dir.path(), &["completions", shell]);
        assert!(o.stdout.len() > 1000, "{shell}: {} bytes", o.stdout.len());
        assert!(stdout(&o).contains("verify"), "{shell} completes subcommands");
    }
    let script = dir.path().join("mmsb.bash");
    std::fs::write(&script, ok(dir.path(), &["completions", "bash"]).stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for sub in SUBCOMMANDS {
        assert!(
            std::fs::read_to_string(&script).unwrap().contains(sub),
            "bash completes {sub}"
        );
    }
    assert_eq!(code(&run(dir.path(), &["completions", "tcsh"])), 2);
}

/// Every file under `dir` with its bytes, to show a command left its inputs alone.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn compact_folds_a_log_into_a_checkpoint_with_replays_state_and_leaves_inputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "a.ckpt",
            "--total-size",
            "2MiB",
            "--pages",
            "8",
            "--deltas",
            "400",
        ],
    );
    let before = snapshot(d);
    let want = replay_hash(d, &["a.ckpt", "a.log"]);

    let o = ok(d, &["compact", "a.ckpt", "a.log", "-o", "b.ckpt", "--json"]);
    let r = json(&o);
    assert_eq!(r["state_hash"], want.as_str());
    assert_eq!(r["records_folded"], 400);
    assert_eq!(r["input"]["records"], 400);
    assert!(r["output"]["file_bytes"].as_u64().unwrap() < r["input"]["file_bytes"].as_u64().unwrap());
    assert_eq!(replay_hash(d, &["b.ckpt"]), want);

    // A prefix into the checkpoint, the rest as a log against it.
    let o = ok(
        d,
        &[
            "compact",
            "a.ckpt",
            "a.log",
            "--to-seq",
            "150",
            "-o",
            "c.ckpt",
            "--rest-log",
            "c.log",
            "--json",
        ],
    );
    assert_eq!(
        (json(&o)["records_folded"].as_u64(), json(&o)["records_kept"].as_u64()),
        (Some(150), Some(250))
    );
    assert_eq!(replay_hash(d, &["c.ckpt", "c.log"]), want);
    assert_eq!(
        replay_hash(d, &["c.ckpt"]),
        replay_hash(d, &["a.ckpt", "a.log", "--to-seq", "150"])
    );

    // Log-only: fewer records, the same state.
    let o = ok(d, &["compact", "--log-only", "a.log", "-o", "m.log"]);
    assert!(stdout(&o).contains("size ratio"), "{}", stdout(&o));
    assert_eq!(replay_hash(d, &["a.ckpt", "m.log"]), want);

    // An existing output log is never replaced, and a failed run leaves nothing behind.
    let o = run(d, &["compact", "--log-only", "a.log", "-o", "m.log"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("m.log: exists and is not empty"), "{}", stderr(&o));
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} changed", path.display());
    }
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "temporary files left: {names:?}"
    );
}

#[test]
fn compact_refuses_a_corrupt_log_with_exit_1_and_writes_nothing() {
    let td = testdata();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.ckpt");
    let o = run(
        &td,
        &["compact", "small.ckpt", "midcorrupt.log", "-o", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("at byte offset 72"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn diff_exit_codes_are_those_of_cmp() {
    let td = testdata();
    let o = ok(&td, &["diff", "small.ckpt", "small.ckpt"]);
    assert!(o.stdout.is_empty(), "identical: nothing printed");
    let o = run(&td, &["diff", "small.ckpt", "small.ckpt", "--b-log", "small.log"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).contains("pages differ"), "{}", stdout(&o));
    let o = run(&td, &["diff", "-q", "small.ckpt", "small.ckpt", "--b-log", "small.log"]);
    assert_eq!((code(&o), o.stdout.is_empty()), (1, true));
    // Errors, bad data included, are 2: 1 already means "different".
    assert_eq!(
        code(&run(
            &td,
            &["diff", "small.ckpt", "small.ckpt", "--b-log", "midcorrupt.log"]
        )),
        2
    );
    assert_eq!(code(&run(&td, &["diff", "small.ckpt", "future-major.ckpt"])), 2);
    assert_eq!(code(&run(&td, &["diff", "small.ckpt", "no-such.ckpt"])), 2);
}

#[test]
fn diff_json_lists_changed_pages_and_emit_log_turns_a_into_b() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "a.ckpt",
            "--total-size",
            "2MiB",
            "--pages",
            "8",
            "--deltas",
            "300",
            "--mix",
            "full=1,sparse=8,masked=2,create=1,resize=1,delete=1",
        ],
    );
    ok(d, &["replay", "--device", "cpu", "a.ckpt", "a.log", "-o", "b.ckpt"]);

    let o = run(d, &["diff", "--json", "a.ckpt", "b.ckpt"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["identical"], false);
    let pages = r["pages"].as_array().unwrap();
    assert!(!pages.is_empty());
    for p in pages {
        assert!(
            ["added", "removed", "changed"].contains(&p["change"].as_str().unwrap()),
            "{p}"
        );
        assert!(p["first_ranges"].as_array().unwrap().len() <= 3);
    }
    assert_eq!(
        r["pages"].as_array().unwrap().len() as u64,
        r["added"].as_u64().unwrap() + r["removed"].as_u64().unwrap() + r["changed"].as_u64().unwrap()
    );

    let o = ok(d, &["diff", "a.ckpt", "b.ckpt", "--emit-log", "ab.log", "--json"]);
    assert!(json(&o)["records"].as_u64().unwrap() > 0);
    assert_eq!(replay_hash(d, &["a.ckpt", "ab.log"]), replay_hash(d, &["b.ckpt"]));
    ok(d, &["replay", "--device", "cpu", "a.ckpt", "ab.log", "-o", "c.ckpt"]);
    assert_eq!(code(&run(d, &["diff", "-q", "b.ckpt", "c.ckpt"])), 0);
    let o = run(d, &["diff", "--stat", "a.ckpt", "b.ckpt"]);
    assert!(stdout(&o).lines().count() as u64 > 1, "{}", stdout(&o));
}

#[test]
fn a_series_of_snapshots_becomes_one_checkpoint_and_one_log_with_append() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "s0.ckpt",
            "--total-size",
            "1MiB",
            "--pages",
            "6",
            "--deltas",
            "90",
        ],
    );
    // Three snapshots: the state after 30, 60 and 90 records.
    for (i, seq) in ["30", "60", "90"].iter().enumerate() {
        let out = format!("s{}.ckpt", i + 1);
        ok(
            d,
            &[
                "replay", "--device", "cpu", "s0.ckpt", "s0.log", "--to-seq", seq, "-o", &out,
            ],
        );
    }
    ok(d, &["diff", "s0.ckpt", "s1.ckpt", "--emit-log", "series.log"]);
    for i in 2..=3 {
        let b = format!("s{i}.ckpt");
        ok(
            d,
            &[
                "diff",
                "s0.ckpt",
                "--a-log",
                "series.log",
                &b,
                "--emit-log",
                "series.log",
                "--append",
            ],
        );
        let o = run(d, &["diff", "-q", "s0.ckpt", "--a-log", "series.log", &b]);
        assert_eq!(code(&o), 0, "after appending, base + series.log is snapshot {i}");
    }
    assert_eq!(replay_hash(d, &["s0.ckpt", "series.log"]), replay_hash(d, &["s3.ckpt"]));
    // Appending from a state that is not the log's end is refused.
    let o = run(
        d,
        &["diff", "s1.ckpt", "s3.ckpt", "--emit-log", "series.log", "--append"],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("to append"), "{}", stderr(&o));
}

/// `bench propagation` reports the engine, the naive engine and the full sweep on the same
/// updates; with a small graph every baseline sees every update (and the run refuses to report
/// when one ends elsewhere than the engine).
#[test]
fn bench_propagation_reports_the_engine_and_both_baselines_in_json() {
    let dir = tempfile::tempdir().unwrap();
    for shape in ["chain", "tree", "layered", "random"] {
        let o = ok(
            dir.path(),
            &[
                "bench",
                "propagation",
                "--pages",
                "600",
                "--shape",
                shape,
                "--updates",
                "120",
                "--batch",
                "30",
                "--page-size",
                "32",
                "--json",
            ],
        );
        let j = json(&o);
        assert_eq!(j["updates"], 120, "{shape}");
        assert_eq!(j["batches"], 4, "{shape}");
        assert_eq!(j["naive"]["updates"], 120, "{shape}");
        assert_eq!(j["full_sweep"]["updates"], 120, "{shape}");
        assert!(j["recomputations"].as_u64().unwrap() > 0, "{shape}");
        for key in [
            "recomputations_per_s",
            "updates_per_s",
            "speedup_vs_naive",
            "peak_rss_bytes",
        ] {
            assert!(j[key].as_f64().is_some(), "{shape}: {key}");
        }
        for key in ["p50", "p99", "max"] {
            assert!(j["latency_ms"][key].as_f64().is_some(), "{shape}: latency {key}");
        }
        let per_batch = &j["recomputed_per_batch"];
        let (p50, max) = (per_batch["p50"].as_u64().unwrap(), per_batch["max"].as_u64().unwrap());
        assert!(
            p50 <= max && max <= j["recomputations"].as_u64().unwrap(),
            "{shape}: {per_batch}"
        );
    }
    let o = run(dir.path(), &["bench", "propagation", "--pages", "1"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
