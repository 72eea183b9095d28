//! `derive`, `propagate` and `explain`: derived pages from the command line.

use anyhow::{Context, Result, bail};
use mmsb::format::lock::LockWait;
use mmsb::graph::{ChangeKind, Rule};
use mmsb::metrics::RunMetrics;

use crate::args::{DeriveCommand, ExplainArgs, PropagateArgs};
use crate::print;

pub fn derive_cmd(c: DeriveCommand, wait: LockWait, m: &mut RunMetrics) -> Result<()> {
    match c {
        DeriveCommand::Set {
            checkpoint,
            log,
            page,
            rule,
            parents,
            params,
            json,
        } => {
            let rule = match (&rule, params.is_empty()) {
                (_, false) => Rule::parse(rule.name(), &params).map_err(anyhow::Error::msg)?,
                (Rule::Slice { offset: 0, len: 0 }, true) => bail!("rule slice takes --params OFFSET,LEN"),
                _ => rule,
            };
            let seq = mmsb::ops::derive::derive_set(&checkpoint, &log, page, rule.clone(), &parents, wait)
                .with_context(|| format!("derive set page {page}"))?;
            m.records += 1;
            if json {
                print::json(
                    &serde_json::json!({"seq": seq, "page": page, "rule": rule.display(), "parents": parents}),
                )?;
            } else {
                println!("page {page} = {}({}) (record {seq})", rule.display(), join(&parents));
            }
        }
        DeriveCommand::Clear {
            checkpoint,
            log,
            page,
            json,
        } => {
            let seq = mmsb::ops::derive::derive_clear(&checkpoint, &log, page, wait)
                .with_context(|| format!("derive clear page {page}"))?;
            m.records += 1;
            if json {
                print::json(&serde_json::json!({"seq": seq, "page": page}))?;
            } else {
                println!("page {page} is a root again (record {seq})");
            }
        }
    }
    Ok(())
}

/// `inspect --graph dot`: the graph of one checkpoint after its log, in Graphviz.
pub fn graph_dot(ckpts: &[std::path::PathBuf], logs: &[std::path::PathBuf]) -> Result<()> {
    let [ckpt] = ckpts else {
        bail!("inspect --graph: give one checkpoint (and its log)")
    };
    match mmsb::ops::inspect::inspect_graph(ckpt, logs)? {
        Some((_, graph)) => print!("{}", graph.to_dot()),
        None => bail!("{}: no derived pages", ckpt.display()),
    }
    Ok(())
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// At most this many page ids listed on a line before "... and N more".
const LIST_MAX: usize = 20;

fn list(ids: &[u64]) -> String {
    let shown = join(&ids[..ids.len().min(LIST_MAX)]);
    match ids.len().checked_sub(LIST_MAX) {
        Some(more) if more > 0 => format!("{shown} ... and {more} more"),
        _ => shown,
    }
}

pub fn propagate_cmd(a: PropagateArgs, wait: LockWait, m: &mut RunMetrics) -> Result<()> {
    let named = mmsb::propagate::Derivations::new();
    let r = mmsb::ops::derive::propagate(&a.checkpoint, &a.log, a.dry_run, &named, wait).context("propagate")?;
    m.add(&r);
    if a.json {
        return print::json(&r);
    }
    if r.dirty.is_empty() {
        println!("nothing to propagate: no derived page's inputs changed since the last propagation");
    } else if a.dry_run {
        println!("would start from {} page(s): {}", r.dirty.len(), list(&r.dirty));
        println!(
            "may recompute {} page(s): {}",
            r.may_recompute.len(),
            list(&r.may_recompute)
        );
    } else {
        let (first, last) = r.seqs.unwrap_or_default();
        println!(
            "recomputed {} page(s), {} unchanged (cut off), {} changed ({}); records {first}..={last}",
            r.recomputed,
            r.cut_off,
            r.changed,
            print::human_bytes(r.changed_bytes)
        );
    }
    Ok(())
}

pub fn explain_cmd(a: ExplainArgs) -> Result<()> {
    let ckpt = mmsb::format::checkpoint::Checkpoint::open(&a.checkpoint)?;
    let log = mmsb::format::log::Log::open(std::slice::from_ref(&a.log))?;
    let steps = mmsb::graph::explain(ckpt.head(), &log, a.page, a.seq).context("explain")?;
    if a.json {
        return print::json(&steps);
    }
    let Some(steps) = steps else {
        println!(
            "page {} was not recomputed by any propagation{}",
            a.page,
            a.seq.map_or(String::new(), |s| format!(" up to record {s}"))
        );
        return Ok(());
    };
    let kind = |k: ChangeKind| match k {
        ChangeKind::Delta => "written",
        ChangeKind::Output => "recomputed",
        ChangeKind::RuleSet => "given its rule",
    };
    for (n, s) in steps.iter().enumerate() {
        let indent = "  ".repeat(n);
        let rule = s.rule.as_deref().map_or(String::new(), |r| format!(" by {r}"));
        println!("{indent}page {} {}{rule} at record {}", s.page, kind(s.kind), s.seq);
        for (p, seq, k) in &s.causes {
            if *p == s.page {
                println!("{indent}  because its rule was set at record {seq}");
            } else {
                println!("{indent}  because parent {p} was {} at record {seq}", kind(*k));
            }
        }
    }
    Ok(())
}
