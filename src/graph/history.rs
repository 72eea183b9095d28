//! The graph through a log: a checkpoint's graph with the log's graph records applied, what
//! changed since the last propagation, and why a page was last recomputed.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::{Graph, Rule};
use crate::error::Result;
use crate::format::checkpoint::CheckpointHead;
use crate::format::graph::GraphRecord;
use crate::format::log::{FLAG_GROUP_CONTINUES, Log, LogRecord};
use crate::format::record::{TYPE_CREATE, TYPE_DELETE};

/// Something wrong with the graph a log builds: an edge to a page that does not exist, a rule
/// that would close a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphProblem {
    /// The record at fault.
    pub seq: u64,
    /// What is wrong.
    pub message: String,
}

/// The graph after a checkpoint and a log (or a prefix of it).
#[derive(Debug, Clone)]
pub struct GraphHistory {
    /// The graph (pages deleted since stay in it, as roots with no edges).
    pub graph: Graph,
    /// Sequence number of the last PROPAGATED record read.
    pub last_propagation: Option<u64>,
    /// Pages written by delta records after the last propagation (or since the checkpoint).
    pub changed_since: BTreeSet<u64>,
    /// Pages whose rule or parents were set after the last propagation.
    pub rules_since: BTreeSet<u64>,
    /// Graph records read.
    pub graph_records: u64,
    /// The last sequence number read.
    pub last_seq: Option<u64>,
    /// The checkpoint's page ids (sorted), and the pages the log created and deleted since:
    /// which pages exist, for [`GraphHistory::exists`].
    checkpoint_pages: Vec<u64>,
    created: HashSet<u64>,
    deleted: HashSet<u64>,
    /// What is wrong with it (records that were refused are not applied).
    pub problems: Vec<GraphProblem>,
}

impl GraphHistory {
    /// True when page `id` exists after the records read.
    pub fn exists(&self, id: u64) -> bool {
        self.created.contains(&id) || (!self.deleted.contains(&id) && self.checkpoint_pages.binary_search(&id).is_ok())
    }

    /// The derived pages a propagation must recompute (and what they reach): the children of
    /// pages changed since the last propagation, and pages whose rule was set since. Graph
    /// indices, in increasing order.
    pub fn dirty(&self) -> Vec<u32> {
        let g = &self.graph;
        let mut out: BTreeSet<u32> = BTreeSet::new();
        for id in &self.changed_since {
            if let Some(i) = g.index_of(*id) {
                out.extend(g.children(i).iter().copied());
            }
        }
        for id in &self.rules_since {
            if let Some(i) = g.index_of(*id)
                && g.rule(i).is_some()
            {
                out.insert(i);
            }
        }
        out.into_iter().collect()
    }
}

/// True when the state of `head` after `log` may have a dependency graph: the checkpoint has a
/// graph section or the log a graph record (frame headers only, nothing decoded). Callers that
/// only report or keep a graph skip [`read_history`] when there is none.
pub fn has_graph(head: &CheckpointHead, log: Option<&Log>) -> bool {
    !head.graph.is_empty()
        || log.is_some_and(|l| {
            l.segments()
                .iter()
                .any(|s| s.frames().iter().any(|f| crate::format::graph::is_graph_type(f.kind)))
        })
}

impl GraphHistory {
    /// Per graph index, true for a stale page: one [`GraphHistory::dirty`] lists, and every
    /// page it reaches (what a propagation now may recompute; cutoffs can only make it less).
    pub fn stale(&self) -> Vec<bool> {
        let g = &self.graph;
        let mut stale = vec![false; g.len()];
        let mut stack = self.dirty();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut stale[i as usize], true) {
                stack.extend(g.children(i).iter().copied());
            }
        }
        stale
    }
}

/// The page id a delta record names (its payload's first 8 bytes).
fn record_page(rec: &LogRecord<'_>) -> Result<u64> {
    let p = rec.payload()?;
    Ok(p.get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
}

/// Reads the graph of `head` and the graph records of `log` through `to_seq` (all of it when
/// `None`), checking each: its pages exist, it closes no cycle, no page is deleted while pages
/// derive from it.
pub fn read_history(head: &CheckpointHead, log: Option<&Log>, to_seq: Option<u64>) -> Result<GraphHistory> {
    let mut h = GraphHistory {
        graph: Graph::from_section(&head.graph),
        last_propagation: None,
        changed_since: BTreeSet::new(),
        rules_since: BTreeSet::new(),
        graph_records: 0,
        last_seq: None,
        checkpoint_pages: head.pages.iter().map(|p| p.id).collect(),
        created: HashSet::new(),
        deleted: HashSet::new(),
        problems: Vec::new(),
    };
    let Some(log) = log else { return Ok(h) };
    for rec in log.records() {
        let seq = rec.frame.seq;
        if to_seq.is_some_and(|n| seq > n) {
            break;
        }
        h.last_seq = Some(seq);
        let problem = |message: String| GraphProblem { seq, message };
        match super::decode_record(&rec)? {
            Some(GraphRecord::Derive(d)) => {
                h.graph_records += 1;
                if let Some(missing) = std::iter::once(&d.page).chain(&d.parents).find(|p| !h.exists(**p)) {
                    h.problems.push(problem(format!(
                        "page {} would derive from or be page {missing}, which does not exist",
                        d.page
                    )));
                    continue;
                }
                match h.graph.set_rule(d.page, Rule::from_stored(&d.rule), &d.parents) {
                    Ok(()) => {
                        h.rules_since.insert(d.page);
                    }
                    Err(e) => h.problems.push(problem(e.to_string())),
                }
            }
            Some(GraphRecord::Underive { page }) => {
                h.graph_records += 1;
                h.graph.clear_rule(page);
                h.rules_since.remove(&page);
            }
            Some(GraphRecord::Propagated { .. }) => {
                h.graph_records += 1;
                h.last_propagation = Some(seq);
                h.changed_since.clear();
                h.rules_since.clear();
            }
            None => {
                let page = record_page(&rec)?;
                match rec.frame.kind {
                    TYPE_CREATE => {
                        h.deleted.remove(&page);
                        h.created.insert(page);
                    }
                    TYPE_DELETE => {
                        h.created.remove(&page);
                        h.deleted.insert(page);
                        if let Some(i) = h.graph.index_of(page) {
                            if let Some(&c) = h.graph.children(i).first() {
                                h.problems.push(problem(format!(
                                    "page {page} is deleted while page {} derives from it",
                                    h.graph.id(c)
                                )));
                            }
                            h.graph.clear_rule(page);
                        }
                    }
                    _ => {}
                }
                h.changed_since.insert(page);
            }
        }
    }
    Ok(h)
}

/// How a page came to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A delta record from outside any propagation (a root written, say).
    Delta,
    /// The output of a propagation.
    Output,
    /// Its rule or parents were set.
    RuleSet,
}

/// One step of an explanation: a page changed at `seq`, and the parent changes (since the
/// propagation before) that caused it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainStep {
    /// The page.
    pub page: u64,
    /// The record that changed it.
    pub seq: u64,
    /// How.
    pub kind: ChangeKind,
    /// Its rule, for a derived page.
    pub rule: Option<String>,
    /// The parents (or the page's own rule) whose change caused it: `(page, seq, kind)`.
    pub causes: Vec<(u64, u64, ChangeKind)>,
}

/// Why `page` was last recomputed by a propagation through `to_seq`: a chain of steps from
/// the page back to the change outside any propagation that started it (following, at each
/// step, the first parent that changed). `None` when no propagation wrote the page.
pub fn explain(head: &CheckpointHead, log: &Log, page: u64, to_seq: Option<u64>) -> Result<Option<Vec<ExplainStep>>> {
    // Pass 1: the propagations (markers and their outputs), and the last one that wrote `page`.
    let mut outputs: HashSet<u64> = HashSet::new();
    let mut group: Vec<(u64, u64)> = Vec::new();
    let mut markers: Vec<u64> = Vec::new();
    let mut target = None;
    for rec in log.records() {
        let seq = rec.frame.seq;
        if to_seq.is_some_and(|n| seq > n) {
            break;
        }
        let continues = rec.frame.flags & FLAG_GROUP_CONTINUES != 0;
        match super::decode_record(&rec)? {
            Some(GraphRecord::Propagated { .. }) => {
                for &(p, s) in &group {
                    outputs.insert(s);
                    if p == page {
                        target = Some((s, seq, markers.last().copied().unwrap_or(0)));
                    }
                }
                markers.push(seq);
                group.clear();
            }
            Some(_) => group.clear(),
            None if continues => group.push((record_page(&rec)?, seq)),
            None => group.clear(),
        }
    }
    let Some((_, marker, before)) = target else {
        return Ok(None);
    };
    // Pass 2: the graph and each page's last change, through that propagation.
    let mut graph = Graph::from_section(&head.graph);
    let mut last: HashMap<u64, (u64, ChangeKind)> = HashMap::new();
    let mut rule_set: HashMap<u64, u64> = HashMap::new();
    for rec in log.records() {
        let seq = rec.frame.seq;
        if seq > marker {
            break;
        }
        match super::decode_record(&rec)? {
            Some(GraphRecord::Derive(d)) => {
                if graph.set_rule(d.page, Rule::from_stored(&d.rule), &d.parents).is_ok() {
                    rule_set.insert(d.page, seq);
                }
            }
            Some(GraphRecord::Underive { page }) => graph.clear_rule(page),
            Some(GraphRecord::Propagated { .. }) => {}
            None => {
                let kind = if outputs.contains(&seq) {
                    ChangeKind::Output
                } else {
                    ChangeKind::Delta
                };
                last.insert(record_page(&rec)?, (seq, kind));
            }
        }
    }
    let mut steps = Vec::new();
    let mut at = page;
    let mut seen = HashSet::new();
    while seen.insert(at) {
        let Some(&(seq, kind)) = last.get(&at) else { break };
        let i = graph.index_of(at);
        let rule = i.and_then(|i| graph.rule(i)).map(Rule::display);
        let mut causes: Vec<(u64, u64, ChangeKind)> = Vec::new();
        if kind == ChangeKind::Output
            && let Some(i) = i
        {
            if let Some(&s) = rule_set.get(&at)
                && s > before
            {
                causes.push((at, s, ChangeKind::RuleSet));
            }
            for &p in graph.parents(i) {
                let pid = graph.id(p);
                if let Some(&(s, k)) = last.get(&pid)
                    && s > before
                    && s < seq.max(marker)
                {
                    causes.push((pid, s, k));
                }
            }
        }
        let next = causes
            .iter()
            .find(|c| c.2 == ChangeKind::Output)
            .or(causes.iter().find(|c| c.2 == ChangeKind::Delta))
            .map(|c| c.0);
        steps.push(ExplainStep {
            page: at,
            seq,
            kind,
            rule,
            causes,
        });
        match next {
            Some(n) if kind == ChangeKind::Output => at = n,
            _ => break,
        }
    }
    Ok(Some(steps))
}
