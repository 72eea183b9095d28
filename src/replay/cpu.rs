//! A whole replay on the CPU, with the time of each phase: every page's CRC32C checked, the
//! log applied in memory, the state hashed, the output written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::ReplayOptions;
use super::state::{PageCheck, ReplaySummary, State};
use crate::error::Result;
use crate::format::checkpoint::Checkpoint;
use crate::format::log::{Log, segment_bytes};
use crate::page::StateHash;
use crate::timing::ms;

/// What a CPU replay did.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReplayReport {
    /// `cpu`, or why `auto` chose the CPU.
    pub device: String,
    /// The hash of the replayed (and selected) pages.
    pub state_hash: StateHash,
    /// Pages in the result.
    pub pages: u64,
    /// Their bytes.
    pub page_bytes: u64,
    /// The records applied.
    #[serde(flatten)]
    pub summary: ReplaySummary,
    /// Whether a torn last record was left unread.
    pub torn_tail_ignored: bool,
    /// Where the result was written.
    pub output: Option<PathBuf>,
    /// Phase times.
    pub timings_ms: CpuTimings,
    /// The checkpoint's page bytes over the whole time, GB/s.
    pub throughput_gb_per_s: f64,
}

/// Phase times of a CPU replay, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuTimings {
    /// Opening the checkpoint (headers, index) and the log (every frame checked).
    pub open: f64,
    /// Checking every page's CRC32C.
    pub check: f64,
    /// Applying the log.
    pub apply: f64,
    /// Hashing the state.
    pub hash: f64,
    /// Writing the output.
    pub write: f64,
    /// The whole call.
    pub total: f64,
}

pub(super) fn run(
    checkpoint: &Path,
    logs: &[PathBuf],
    o: &ReplayOptions,
    device: String,
    visit: Option<&mut super::StateVisitor<'_>>,
) -> Result<CpuReplayReport> {
    let start = Instant::now();
    let mut t = CpuTimings::default();
    let ckpt = Checkpoint::open(checkpoint)?;
    let log = if logs.is_empty() { None } else { Some(Log::open(logs)?) };
    t.open = ms(start);
    let phase = Instant::now();
    // One count for the whole replay: the pages checked, the log applied, the output written.
    if let Some(p) = &o.progress {
        p.add_total(ckpt.head().data_bytes() + segment_bytes(logs));
    }
    let bad = ckpt.check_pages(o.progress.as_ref().map(|p| p.counter()));
    if let Some(e) = bad.into_iter().next() {
        return Err(e);
    }
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Trust)?;
    if let Some(p) = &o.progress {
        state.count_progress(p.shared_counter());
    }
    t.check = ms(phase);
    let phase = Instant::now();
    let summary = match &log {
        Some(l) => state.replay(l, o.limit)?,
        None => Default::default(),
    };
    state.retain(|id, page| o.pages.matches(id, &page.meta));
    t.apply = ms(phase);
    let phase = Instant::now();
    let state_hash = state.state_hash();
    t.hash = ms(phase);
    if let Some(visit) = visit {
        visit(&state)?;
    }
    let phase = Instant::now();
    let page_bytes: u64 = state.pages().map(|(_, p)| p.data().len() as u64).sum();
    if let Some(out) = &o.output {
        if let Some(p) = &o.progress {
            p.add_total(page_bytes);
        }
        let counter = o.progress.as_ref().map(|p| p.shared_counter());
        let graph = super::graph_at_stop(ckpt.head(), log.as_ref(), o.limit, summary.last_seq)?;
        state.write_checkpoint(out, ckpt.head().metadata.clone(), &graph, counter)?;
    }
    t.write = ms(phase);
    t.total = ms(start);
    Ok(CpuReplayReport {
        device,
        state_hash,
        pages: state.pages().len() as u64,
        page_bytes,
        torn_tail_ignored: summary.torn_tail.is_some(),
        summary,
        output: o.output.clone(),
        throughput_gb_per_s: crate::timing::gb_per_s(ckpt.head().data_bytes(), t.total),
        timings_ms: t,
    })
}
