//! Derived pages from the shell: `gen --graph`, `derive set|clear`, `propagate`, `explain`,
//! `inspect` and `verify --rederive`, and what a kill in the middle of a propagation leaves.

mod common;

use std::path::Path;

use common::{code, json, ok, replay_hash, run, stderr, stdout};
use mmsb::format::log::{Log, segment_path};

/// A layered graph of 400 pages of 64 bytes (100 roots, 4 levels) and a log of 40 writes to its
/// roots, in `dir`: `g.ckpt` and `g.log`.
fn graph_files(dir: &Path) {
    ok(
        dir,
        &words(
            "gen -o g.ckpt --pages 400 --total-size 25600 --graph layered --levels 4 --deltas 40 --mix sparse=3,full=1 --delta-bytes 1..8",
        ),
    );
}

/// The graph document `inspect --json CKPT` prints.
fn graph_doc(dir: &Path, ckpt: &str) -> serde_json::Value {
    let docs = json(&ok(dir, &["inspect", "--json", ckpt]));
    let graph = docs.as_array().unwrap().iter().find(|x| x["kind"] == "graph");
    graph.expect("a graph document").clone()
}

/// A command line's words.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The pages' bytes after replaying `args`, by id.
fn pages_after(dir: &Path, ckpt: &str, log: &str) -> Vec<Vec<u8>> {
    let c = mmsb::format::checkpoint::Checkpoint::open(&dir.join(ckpt)).unwrap();
    let l = Log::open(&[dir.join(log)]).unwrap();
    let mut s = mmsb::replay::State::from_checkpoint(&c, mmsb::replay::PageCheck::Check).unwrap();
    s.replay(&l, Default::default()).unwrap();
    s.pages().map(|(_, p)| p.data().to_vec()).collect()
}

#[test]
fn propagate_brings_derived_pages_to_what_their_rules_give_and_replay_needs_no_rule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    graph_files(d);
    // Roots were written after the checkpoint: the derived pages are stale, which verify says
    // (not a problem) and a dry run lists without writing.
    let v = json(&ok(d, &["verify", "--json", "--rederive", "g.ckpt", "g.log"]));
    assert!(v["graph"]["stale_pages"].as_u64().unwrap() > 0, "{v}");
    let before = std::fs::read(segment_path(&d.join("g.log"), 0)).unwrap();
    let dry = json(&ok(d, &["propagate", "--dry-run", "--json", "g.ckpt", "g.log"]));
    assert!(!dry["dirty"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read(segment_path(&d.join("g.log"), 0)).unwrap(),
        before,
        "a dry run writes nothing"
    );

    let r = json(&ok(d, &["propagate", "--json", "g.ckpt", "g.log"]));
    let recomputed = r["recomputed"].as_u64().unwrap();
    assert!(
        recomputed > 0 && recomputed <= 300,
        "each derived page at most once: {r}"
    );
    assert_eq!(
        r["may_recompute"].as_array().unwrap().len() as u64,
        recomputed,
        "add-u32 of random bytes never cuts off here, so every reachable page was recomputed"
    );
    // Every derived page now equals its rule over its parents, checked by re-running the rules.
    let v = json(&ok(d, &["verify", "--json", "--rederive", "g.ckpt", "g.log"]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["graph"]["stale_pages"], 0);
    assert_eq!(v["graph"]["rederived"], 300);
    // Nothing changed since: a second propagation writes nothing.
    let segment = std::fs::read(segment_path(&d.join("g.log"), 0)).unwrap();
    let again = json(&ok(d, &["propagate", "--json", "g.ckpt", "g.log"]));
    assert_eq!(again["seqs"], serde_json::Value::Null);
    assert_eq!(std::fs::read(segment_path(&d.join("g.log"), 0)).unwrap(), segment);
    // The state a replay reaches is the one the engine computed; a checkpoint folded from it
    // keeps the graph and replays to the same hash.
    let hash = replay_hash(d, &["g.ckpt", "g.log"]);
    ok(d, &["compact", "g.ckpt", "g.log", "--output", "folded.ckpt"]);
    assert_eq!(replay_hash(d, &["folded.ckpt"]), hash);
    ok(d, &["verify", "--rederive", "folded.ckpt"]);
    let graph = graph_doc(d, "folded.ckpt");
    assert_eq!(
        (graph["derived_pages"].as_u64(), graph["depth"].as_u64()),
        (Some(300), Some(3))
    );
    // A replay's output keeps the graph too (the same graph hash).
    ok(d, &words("replay --device cpu g.ckpt g.log --output replayed.ckpt"));
    let same = graph_doc(d, "replayed.ckpt");
    assert_eq!(same["graph_hash"], graph["graph_hash"]);
    ok(d, &["verify", "--rederive", "replayed.ckpt"]);
}

#[test]
fn a_rule_that_closes_a_cycle_is_refused_with_its_pages_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &words("gen -o c.ckpt --pages 10 --total-size 640 --graph chain --deltas 1"),
    );
    let segment = std::fs::read(segment_path(&d.join("c.log"), 0)).unwrap();
    let refused = |line: &str, why: &str| {
        let o = run(d, &words(line));
        assert_eq!(code(&o), 2, "mmsb {line}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "mmsb {line}: {}", stderr(&o));
    };
    // A chain: page i derives from page i - 1. Page 2 deriving from page 7 closes 2 -> ... -> 7 -> 2.
    refused(
        "derive set c.ckpt c.log --page 2 --rule copy --parents 7",
        "would close the cycle 2 -> 3 -> 4 -> 5 -> 6 -> 7 -> 2",
    );
    refused(
        "derive set c.ckpt c.log --page 2 --rule copy --parents 99",
        "page 99 does not exist",
    );
    refused("derive clear c.ckpt c.log --page 0", "page 0 is not a derived page");
    // Pages of 64 bytes: a concat of two would be 128.
    refused(
        "derive set c.ckpt c.log --page 9 --rule concat --parents 0,1",
        "page 9: rule concat gives 128 bytes from its parents, the page has 64",
    );
    assert_eq!(std::fs::read(segment_path(&d.join("c.log"), 0)).unwrap(), segment);
}

#[test]
fn explain_follows_a_recomputation_back_to_the_write_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &words("gen -o c.ckpt --pages 6 --total-size 384 --graph chain --deltas 0"),
    );
    // A log of its own: page 0 written, then a propagation down the chain.
    let c = mmsb::format::checkpoint::Checkpoint::open(&d.join("c.ckpt")).unwrap();
    let mut w = mmsb::format::log::LogWriter::create(&d.join("c.log"), c.state_hash(), 1, Default::default()).unwrap();
    w.append(&mmsb::format::record::Delta {
        page_id: 0,
        epoch: 1,
        timestamp_ns: 0,
        source: "test".into(),
        op: mmsb::format::record::Op::Fill {
            offset: 0,
            len: 8,
            value: 7,
        },
    })
    .unwrap();
    w.finish().unwrap();
    ok(d, &["propagate", "c.ckpt", "c.log"]);
    // A rule set on page 3 makes it (and what follows) recompute again, for a new reason.
    ok(
        d,
        &[
            "derive",
            "set",
            "c.ckpt",
            "c.log",
            "--page",
            "3",
            "--rule",
            "xor",
            "--parents",
            "1,2",
        ],
    );
    ok(d, &["propagate", "c.ckpt", "c.log"]);
    let steps = json(&ok(d, &["explain", "--json", "c.ckpt", "c.log", "5", "--seq", "7"]));
    let chain: Vec<u64> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["page"].as_u64().unwrap())
        .collect();
    assert_eq!(chain, [5, 4, 3, 2, 1, 0], "{steps}");
    assert_eq!(steps[5]["kind"], "delta");
    assert_eq!(steps[5]["seq"], 1);
    let text = stdout(&ok(d, &["explain", "c.ckpt", "c.log", "4"]));
    assert!(text.contains("page 4 recomputed by add-u32"), "{text}");
    assert!(text.contains("page 3 recomputed by xor"), "{text}");
    assert!(text.contains("because its rule was set at record"), "{text}");
    let none = stdout(&ok(d, &["explain", "c.ckpt", "c.log", "0"]));
    assert!(none.contains("was not recomputed by any propagation"), "{none}");
}

#[test]
fn inspect_graph_dot_draws_every_edge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &words("gen -o t.ckpt --pages 7 --total-size 448 --graph tree --fanout 2 --deltas 0"),
    );
    let dot = stdout(&ok(d, &["inspect", "--graph", "dot", "t.ckpt"]));
    assert!(dot.starts_with("digraph mmsb {"), "{dot}");
    for (parent, child) in [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6)] {
        assert!(dot.contains(&format!("\"{parent}\" -> \"{child}\";")), "{dot}");
    }
    assert_eq!(dot.matches("->").count(), 6);
}

/// A kill in the middle of a propagation's append leaves its group open: whatever prefix of
/// the group reached the file, the log reads as the state before the propagation (a torn
/// tail), `recover` cuts it, and propagating again reaches the state of the whole flush.
#[test]
fn a_propagation_cut_anywhere_leaves_whole_flushes_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    graph_files(d);
    let seg = segment_path(&d.join("g.log"), 0);
    let before = std::fs::read(&seg).unwrap();
    let state_before = pages_after(d, "g.ckpt", "g.log");
    ok(d, &["propagate", "g.ckpt", "g.log"]);
    let after = std::fs::read(&seg).unwrap();
    let state_after = pages_after(d, "g.ckpt", "g.log");
    assert_ne!(state_before, state_after);
    // Every cut point inside the group (a SIGKILL leaves a prefix of what was written).
    let step = ((after.len() - before.len()) / 40).max(1);
    for cut in (before.len() + 1..after.len()).step_by(step) {
        std::fs::write(&seg, &after[..cut]).unwrap();
        let log = Log::open(&[d.join("g.log")]).unwrap();
        assert!(log.torn_tail().is_some(), "cut at {cut}: the open group is a torn tail");
        assert_eq!(
            pages_after(d, "g.ckpt", "g.log"),
            state_before,
            "cut at {cut}: no part of the flush"
        );
        drop(log);
        if cut == before.len() + 1 + 3 * step {
            ok(d, &["recover", "g.log"]);
            assert_eq!(std::fs::read(&seg).unwrap(), before, "recover cuts the whole group");
            ok(d, &["propagate", "g.ckpt", "g.log"]);
            assert_eq!(pages_after(d, "g.ckpt", "g.log"), state_after);
        }
    }
}

/// The same with a real SIGKILL of `mmsb propagate` on a graph large enough to take a while:
/// after the kill the log holds the whole flush or none of it.
#[test]
fn a_killed_propagate_leaves_the_whole_flush_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &words("gen -o big.ckpt --pages 200000 --total-size 12800000 --graph layered --deltas 2000 --mix full=1"),
    );
    let before = pages_after(d, "big.ckpt", "big.log");
    // How long a whole propagation takes here; the kills land from half way to just past it.
    copy_dir(&d.join("big.log"), &d.join("timed.log"));
    let t = std::time::Instant::now();
    ok(d, &["propagate", "big.ckpt", "timed.log"]);
    let whole = t.elapsed().as_millis() as u64;
    let (mut before_flush, mut after_flush) = (0, 0);
    for delay_ms in [whole / 2, whole * 3 / 4, whole * 9 / 10, whole, whole * 11 / 10] {
        let log_copy = d.join(format!("k{delay_ms}.log"));
        copy_dir(&d.join("big.log"), &log_copy);
        let mut child = common::mmsb(d)
            .args(["propagate", "big.ckpt", log_copy.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let log = Log::open(&[&log_copy]).unwrap();
        let name = log_copy.file_name().unwrap().to_str().unwrap().to_string();
        let h = mmsb::graph::read_history(
            mmsb::format::checkpoint::Checkpoint::open(&d.join("big.ckpt"))
                .unwrap()
                .head(),
            Some(&log),
            None,
        )
        .unwrap();
        if h.last_propagation.is_none() {
            // Killed before the group closed: the pages are as they were.
            assert!(!status.success());
            assert_eq!(pages_after(d, "big.ckpt", &name), before, "killed after {delay_ms} ms");
            before_flush += 1;
        } else {
            ok(d, &["verify", "--rederive", "big.ckpt", &name]);
            after_flush += 1;
        }
    }
    eprintln!("a propagation takes {whole} ms: {before_flush} kills before the flush was whole, {after_flush} after");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
