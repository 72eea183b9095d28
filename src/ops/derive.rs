//! `derive set|clear` and `propagate`: changing a log's dependency graph, and bringing its
//! derived pages up to date. Both append to the log under its writer lock; a propagation's
//! outputs (ordinary delta records, only the changed bytes) and its PROPAGATED record are one
//! atomic group, so a reader sees the whole flush or none of it.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, GraphError, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::graph::{Derivation, GraphRecord};
use crate::format::lock::LockWait;
use crate::format::log::{Log, LogOptions, LogWriter};
use crate::graph::{GraphHistory, Rule, read_history};
use crate::propagate::{Derivations, Engine, log_flush};
use crate::replay::{PageCheck, ReplayLimit, State};

/// The source tag of the records `mmsb` writes here.
const SOURCE: &str = "mmsb propagate";

/// Opens the log in `dir` for appending, holding its writer lock (waiting for it when `wait`
/// says so).
fn open_writer(dir: &Path, wait: LockWait) -> Result<(Option<crate::format::lock::LogLock>, LogWriter)> {
    let held = match wait {
        LockWait::Wait => Some(crate::format::lock::LogLock::exclusive(dir, LockWait::Wait)?),
        LockWait::Fail => None,
    };
    Ok((held, LogWriter::open(dir, LogOptions::default())?))
}

fn history(ckpt: &Checkpoint, log: &Log) -> Result<GraphHistory> {
    log.check()?;
    log.check_base(ckpt.state_hash())?;
    let h = read_history(ckpt.head(), Some(log), None)?;
    if let Some(p) = h.problems.first() {
        return Err(Error::Invalid(format!(
            "the log's graph is broken at seq {}: {} (`mmsb verify` lists every problem)",
            p.seq, p.message
        )));
    }
    Ok(h)
}

/// Appends a DERIVE record making `page` derive from `parents` by `rule`, after checking it
/// against the graph the checkpoint and log build: the pages exist and no cycle closes (the
/// error names the cycle). Returns the record's sequence number.
pub fn derive_set(ckpt_path: &Path, dir: &Path, page: u64, rule: Rule, parents: &[u64], wait: LockWait) -> Result<u64> {
    let (_held, mut w) = open_writer(dir, wait)?;
    let ckpt = Checkpoint::open(ckpt_path)?;
    let log = Log::open(&[dir])?;
    let mut h = history(&ckpt, &log)?;
    if let Some(missing) = std::iter::once(&page).chain(parents).find(|p| !h.exists(**p)) {
        return Err(Error::Invalid(format!("page {missing} does not exist")));
    }
    h.graph.set_rule(page, rule.clone(), parents)?;
    // The rule's output must fit the page as the pages are now (a named rule's length only
    // running it tells: the propagation checks it).
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Trust)?;
    state.replay(&log, ReplayLimit::default())?;
    let len = |id: u64| state.page(id).map_or(0, |p| p.data().len() as u64);
    let lens: Vec<u64> = parents.iter().map(|&p| len(p)).collect();
    if let Some(output_len) = rule.output_len(&lens)
        && output_len != len(page)
    {
        return Err(Error::Propagate(crate::error::PropagateError::OutputLength {
            page,
            rule: rule.display(),
            output_len,
            page_len: len(page),
        }));
    }
    let record = GraphRecord::Derive(Derivation {
        page,
        height: 0,
        rule: rule.to_stored(),
        parents: parents.to_vec(),
    });
    let seq = w.append_graph(&record, crate::timing::now_ns(), "mmsb derive")?;
    w.finish()?;
    Ok(seq)
}

/// Appends an UNDERIVE record making `page` a root again. Returns its sequence number.
pub fn derive_clear(ckpt_path: &Path, dir: &Path, page: u64, wait: LockWait) -> Result<u64> {
    let (_held, mut w) = open_writer(dir, wait)?;
    let ckpt = Checkpoint::open(ckpt_path)?;
    let log = Log::open(&[dir])?;
    let h = history(&ckpt, &log)?;
    if h.graph.index_of(page).is_none_or(|i| h.graph.rule(i).is_none()) {
        return Err(Error::Graph(GraphError::NotDerived { page }));
    }
    let seq = w.append_graph(&GraphRecord::Underive { page }, crate::timing::now_ns(), "mmsb derive")?;
    w.finish()?;
    Ok(seq)
}

/// What a propagation did (or, dry, would start from).
#[derive(Debug, Clone, Serialize)]
pub struct PropagateReport {
    /// The last sequence number the propagation took into account.
    pub through_seq: Option<u64>,
    /// Derived pages marked at the start: children of changed pages, pages with a new rule.
    pub dirty: Vec<u64>,
    /// Every page the propagation may reach from them (a dry run's answer: cutoffs can only
    /// make the real set smaller).
    pub may_recompute: Vec<u64>,
    /// Pages recomputed.
    pub recomputed: u64,
    /// Of those, pages whose bytes came out the same.
    pub cut_off: u64,
    /// Pages whose bytes changed: one output record each.
    pub changed: u64,
    /// Output bytes written (the changed ranges).
    pub changed_bytes: u64,
    /// Sequence numbers of the group written (`None` on a dry run or with nothing to do).
    pub seqs: Option<(u64, u64)>,
}

/// Recomputes every derived page whose inputs changed since the last propagation recorded in
/// the log in `dir`, and appends the outputs and a PROPAGATED record as one group. `named`
/// supplies any named derivations the graph uses. With `dry_run`, writes nothing and takes no
/// lock: the report lists the pages it would start from and may reach.
pub fn propagate(
    ckpt_path: &Path,
    dir: &Path,
    dry_run: bool,
    named: &Derivations,
    wait: LockWait,
) -> Result<PropagateReport> {
    let mut writer = if dry_run { None } else { Some(open_writer(dir, wait)?) };
    let ckpt = Checkpoint::open(ckpt_path)?;
    let log = Log::open(&[dir])?;
    let h = history(&ckpt, &log)?;
    let g = &h.graph;
    let dirty = h.dirty();
    let stale = h.stale();
    let mut may_recompute: Vec<u64> = (0..g.len() as u32)
        .filter(|&i| stale[i as usize])
        .map(|i| g.id(i))
        .collect();
    may_recompute.sort_unstable();
    let mut report = PropagateReport {
        through_seq: h.last_seq,
        dirty: {
            let mut d: Vec<u64> = dirty.iter().map(|&i| g.id(i)).collect();
            d.sort_unstable();
            d
        },
        may_recompute,
        recomputed: 0,
        cut_off: 0,
        changed: 0,
        changed_bytes: 0,
        seqs: None,
    };
    let Some((_held, w)) = writer.as_mut() else {
        return Ok(report);
    };
    if dirty.is_empty() {
        return Ok(report);
    }
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Check)?;
    state.replay(&log, ReplayLimit::default())?;
    let pages: Vec<Vec<u8>> = (0..g.len() as u32)
        .map(|i| state.page(g.id(i)).map_or_else(Vec::new, |p| p.data().to_vec()))
        .collect();
    let mut engine = Engine::with_derivations(g, pages, usize::MAX, named)?;
    engine.keep_changes(true);
    for &i in &dirty {
        engine.mark(i);
    }
    let flushed = engine.flush();
    let changes = engine.take_changes();
    let marker = GraphRecord::Propagated {
        through_seq: h.last_seq.unwrap_or(0),
        recomputed: flushed.recomputed,
        changed: changes.len() as u64,
    };
    let epoch = |i: u32| state.page(g.id(i)).map_or(0, |p| p.epoch) + 1;
    let logged = log_flush(w, &engine, &changes, epoch, &marker, crate::timing::now_ns(), SOURCE)?;
    if let Some((_, w)) = writer.take() {
        w.finish()?;
    }
    report.recomputed = flushed.recomputed;
    report.cut_off = flushed.cut_off;
    report.changed = changes.len() as u64;
    report.changed_bytes = logged.output_bytes;
    report.seqs = Some((logged.first_seq, logged.last_seq));
    Ok(report)
}

impl crate::metrics::Measured for PropagateReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.pages += self.recomputed;
        m.records += self.seqs.map_or(0, |(first, last)| last - first + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::{CheckpointWriter, PageSpec};
    use crate::format::record::{Delta, Op};
    use crate::graph::Graph;
    use crate::page::PageMeta;
    use crate::propagate::full_sweep;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// A random DAG in a checkpoint, random writes to its roots in a log, then `propagate`:
        /// the replayed pages equal a full recompute of the graph over the final roots, and
        /// `verify --rederive` agrees; a second propagation has nothing to do.
        #[test]
        fn replaying_the_logged_outputs_reaches_the_live_graph(
            n in 3usize..24,
            edges in proptest::collection::vec((0usize..24, 0usize..24), 1..60),
            writes in proptest::collection::vec((0usize..24, 0u64..16, any::<u8>()), 1..20),
            rule in 0u8..4,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rule = [Rule::Xor, Rule::AddU32, Rule::MaxU32, Rule::Copy][rule as usize].clone();
            let mut g = Graph::new();
            for i in 0..n as u64 {
                g.add_page(i);
            }
            for i in 1..n {
                let mut parents: Vec<u64> = edges.iter().filter(|(c, p)| c % n == i && p % n < i).map(|(_, p)| (p % n) as u64).collect();
                parents.sort_unstable();
                parents.dedup();
                if !parents.is_empty() {
                    g.set_rule(i as u64, rule.clone(), &parents).unwrap();
                }
            }
            let mut pages: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 16]).collect();
            full_sweep(&g, &mut pages);
            let ckpt = dir.path().join("g.ckpt");
            let specs = (0..n as u64).map(|id| PageSpec { id, len: 16, epoch: 0, meta: PageMeta::default() }).collect();
            let mut w = CheckpointWriter::create_with_graph(&ckpt, specs, Default::default(), &g.to_derivations()).unwrap();
            for p in &pages {
                w.write(p).unwrap();
            }
            let base = w.finish().unwrap();
            let roots: Vec<usize> = (0..n).filter(|&i| g.rule(i as u32).is_none()).collect();
            let log = dir.path().join("g.log");
            let mut lw = LogWriter::create(&log, base, 1, LogOptions::default()).unwrap();
            let mut epochs = vec![0u64; n];
            for (k, &(page, offset, value)) in writes.iter().enumerate() {
                let r = roots[page % roots.len()];
                epochs[r] += 1;
                pages[r][offset as usize] = value;
                lw.append(&Delta { page_id: r as u64, epoch: epochs[r], timestamp_ns: k as u64, source: "t".into(), op: Op::Fill { offset, len: 1, value } }).unwrap();
                // Half way, a propagation: the second one starts from what changed after it.
                if k == writes.len() / 2 {
                    lw.finish().unwrap();
                    propagate(&ckpt, &log, false, &Derivations::new(), LockWait::Fail).unwrap();
                    lw = LogWriter::open(&log, LogOptions::default()).unwrap();
                }
            }
            lw.finish().unwrap();
            propagate(&ckpt, &log, false, &Derivations::new(), LockWait::Fail).unwrap();
            full_sweep(&g, &mut pages);
            let c = Checkpoint::open(&ckpt).unwrap();
            let l = Log::open(&[&log]).unwrap();
            let mut state = State::from_checkpoint(&c, PageCheck::Check).unwrap();
            state.replay(&l, ReplayLimit::default()).unwrap();
            let replayed: Vec<Vec<u8>> = state.pages().map(|(_, p)| p.data().to_vec()).collect();
            prop_assert_eq!(replayed, pages);
            let v = crate::ops::verify::verify(&[ckpt.clone(), log.clone()], None, true).unwrap();
            prop_assert!(v.ok, "{:?}", v.problems);
            let again = propagate(&ckpt, &log, false, &Derivations::new(), LockWait::Fail).unwrap();
            prop_assert!(again.dirty.is_empty() && again.seqs.is_none());
        }
    }
}
