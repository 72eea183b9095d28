//! `--metrics-file`: every command that does work leaves its figures in the Prometheus text
//! format, read back here by the reference parser (Python's prometheus_client, installed by
//! scripts/test.sh), whatever the outcome.

mod common;

use std::path::Path;

use common::{code, copy_testdata, json, ok, run, stderr};
use serde_json::Value;

/// The samples of a metrics file, as the reference parser reads them.
fn samples(path: &Path) -> Vec<Value> {
    let out = common::python("parse_metrics.py", path.parent().unwrap(), &[path.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(s: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Value> = s
        .iter()
        .filter(|v| v["name"] == name && labels.iter().all(|(k, l)| v["labels"][k] == *l))
        .collect();
    assert_eq!(found.len(), 1, "one sample {name} {labels:?} in {s:#?}");
    found[0]["value"].as_f64().unwrap()
}

fn label<'a>(s: &'a [Value], name: &str, key: &str) -> &'a str {
    s.iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["labels"][key].as_str())
        .unwrap_or("")
}

fn file_len(p: &Path) -> f64 {
    std::fs::metadata(p).unwrap().len() as f64
}

#[test]
fn a_replay_leaves_its_records_pages_bytes_phases_and_state_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "m.ckpt",
            "--pages",
            "8",
            "--total-size",
            "64KiB",
            "--deltas",
            "40",
        ],
    );
    let o = ok(
        d,
        &[
            "replay",
            "m.ckpt",
            "m.log",
            "--device",
            "cpu",
            "--json",
            "--metrics-file",
            "replay.prom",
        ],
    );
    let report = json(&o);
    let s = samples(&d.join("replay.prom"));
    assert_eq!(
        value(&s, "mmsb_replay_records_total", &[]),
        report["records"].as_f64().unwrap()
    );
    assert_eq!(value(&s, "mmsb_replay_pages_total", &[]), 8.0);
    let log_bytes: f64 = std::fs::read_dir(d.join("m.log"))
        .unwrap()
        .map(|e| file_len(&e.unwrap().path()))
        .sum();
    assert_eq!(
        value(&s, "mmsb_replay_read_bytes_total", &[]),
        file_len(&d.join("m.ckpt")) + log_bytes
    );
    assert_eq!(value(&s, "mmsb_replay_written_bytes_total", &[]), 0.0);
    assert_eq!(value(&s, "mmsb_replay_success", &[]), 1.0);
    assert_eq!(
        label(&s, "mmsb_replay_run_info", "state_hash"),
        report["state_hash"].as_str().unwrap()
    );
    assert_eq!(label(&s, "mmsb_replay_run_info", "outcome"), "ok");
    assert_eq!(label(&s, "mmsb_replay_run_info", "device"), "cpu");
    let apply_ms = report["timings_ms"]["apply"].as_f64().unwrap();
    let apply_s = value(&s, "mmsb_replay_phase_duration_seconds", &[("phase", "apply")]);
    assert!(
        (apply_s - apply_ms / 1e3).abs() < 1e-9,
        "{apply_s} s against {apply_ms} ms"
    );
    let total = value(&s, "mmsb_replay_duration_seconds", &[]);
    assert!(total > 0.0 && total >= report["timings_ms"]["total"].as_f64().unwrap() / 1e3);
    // The output, when there is one, is what was written.
    ok(
        d,
        &[
            "replay",
            "m.ckpt",
            "m.log",
            "--device",
            "cpu",
            "-o",
            "out.ckpt",
            "--metrics-file",
            "replay.prom",
        ],
    );
    let s = samples(&d.join("replay.prom"));
    assert_eq!(
        value(&s, "mmsb_replay_written_bytes_total", &[]),
        file_len(&d.join("out.ckpt"))
    );
}

#[test]
fn verify_of_a_corrupt_log_counts_problems_by_kind_and_says_the_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_testdata("small.ckpt", d);
    copy_testdata("midcorrupt.log", d);
    let o = run(
        d,
        &[
            "verify",
            "small.ckpt",
            "midcorrupt.log",
            "--metrics-file",
            "verify.prom",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let s = samples(&d.join("verify.prom"));
    assert_eq!(value(&s, "mmsb_verify_success", &[]), 0.0);
    assert_eq!(label(&s, "mmsb_verify_run_info", "outcome"), "data_bad");
    assert!(value(&s, "mmsb_verify_problems", &[("kind", "corrupt")]) >= 1.0);
    // Every kind has a sample, zeros included, so that an alert's query never finds none.
    for kind in mmsb::ops::verify::PROBLEM_KINDS {
        value(&s, "mmsb_verify_problems", &[("kind", kind)]);
    }
    assert_eq!(value(&s, "mmsb_verify_problems", &[("kind", "torn_tail")]), 0.0);
}

#[test]
fn a_request_that_fails_still_leaves_metrics_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run(
        d,
        &["replay", "missing.ckpt", "--device", "cpu", "--metrics-file", "m.prom"],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let s = samples(&d.join("m.prom"));
    assert_eq!(value(&s, "mmsb_replay_success", &[]), 0.0);
    assert_eq!(label(&s, "mmsb_replay_run_info", "outcome"), "failed");
}

#[test]
fn a_metrics_file_naming_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = copy_testdata("small.ckpt", d);
    let before = std::fs::read(&ckpt).unwrap();
    let o = run(d, &["verify", "small.ckpt", "--metrics-file", "small.ckpt"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--metrics-file"), "{}", stderr(&o));
    assert!(std::fs::read(&ckpt).unwrap() == before, "the input was changed");
}

#[test]
fn an_append_counts_the_bytes_the_log_grew_by() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "gen",
            "-o",
            "a.ckpt",
            "--pages",
            "4",
            "--total-size",
            "16KiB",
            "--deltas",
            "0",
            "--seed",
            "1",
        ],
    );
    ok(
        d,
        &[
            "gen",
            "-o",
            "b.ckpt",
            "--pages",
            "4",
            "--total-size",
            "16KiB",
            "--deltas",
            "0",
            "--seed",
            "2",
        ],
    );
    ok(d, &["diff", "a.ckpt", "a.ckpt", "--emit-log", "a.log"]);
    let log_bytes = |d: &Path| -> f64 {
        std::fs::read_dir(d.join("a.log"))
            .unwrap()
            .map(|e| file_len(&e.unwrap().path()))
            .sum()
    };
    let before = log_bytes(d);
    let o = ok(
        d,
        &[
            "diff",
            "a.ckpt",
            "--a-log",
            "a.log",
            "b.ckpt",
            "--emit-log",
            "a.log",
            "--append",
            "--json",
            "--metrics-file",
            "diff.prom",
        ],
    );
    let s = samples(&d.join("diff.prom"));
    assert_eq!(value(&s, "mmsb_diff_written_bytes_total", &[]), log_bytes(d) - before);
    assert_eq!(
        value(&s, "mmsb_diff_records_total", &[]),
        json(&o)["records"].as_f64().unwrap()
    );
}

#[test]
fn every_command_that_does_work_writes_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_testdata("graph.ckpt", d);
    copy_testdata("graph.log", d);
    common::python("interop.py", d, &["write", "t.safetensors"]);
    let runs: &[(&str, &[&str])] = &[
        (
            "gen",
            &[
                "gen",
                "-o",
                "g.ckpt",
                "--pages",
                "4",
                "--total-size",
                "16KiB",
                "--deltas",
                "5",
            ],
        ),
        ("import", &["import", "t.safetensors", "-o", "i.ckpt"]),
        ("export", &["export", "i.ckpt", "-o", "e.safetensors"]),
        ("inspect", &["inspect", "g.ckpt", "g.log"]),
        ("verify", &["verify", "g.ckpt", "g.log"]),
        ("replay", &["replay", "g.ckpt", "g.log", "--device", "cpu"]),
        ("compact", &["compact", "g.ckpt", "g.log", "-o", "c.ckpt"]),
        (
            "diff",
            &[
                "diff",
                "g.ckpt",
                "--a-log",
                "g.log",
                "c.ckpt",
                "--quiet",
                "--bytes-only",
            ],
        ),
        ("recover", &["recover", "g.log"]),
        (
            "derive_set",
            &[
                "derive",
                "set",
                "graph.ckpt",
                "graph.log",
                "--page",
                "2",
                "--rule",
                "copy",
                "--parents",
                "1",
            ],
        ),
        ("propagate", &["propagate", "graph.ckpt", "graph.log"]),
        ("explain", &["explain", "graph.ckpt", "graph.log", "4"]),
        (
            "derive_clear",
            &["derive", "clear", "graph.ckpt", "graph.log", "--page", "2"],
        ),
    ];
    for (name, args) in runs {
        let file = format!("{name}.prom");
        let mut a = args.to_vec();
        a.extend(["--metrics-file", &file]);
        let o = run(d, &a);
        let s = samples(&d.join(&file));
        let success = value(&s, &format!("mmsb_{name}_success"), &[]);
        assert_eq!(success, f64::from(u8::from(code(&o) == 0)), "{name}: {}", stderr(&o));
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(
            s.iter()
                .all(|v| v["name"].as_str().unwrap().starts_with(&format!("mmsb_{name}_"))),
            "{name}: {s:#?}"
        );
        value(&s, &format!("mmsb_{name}_duration_seconds"), &[]);
    }
}
