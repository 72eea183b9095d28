//! `mmsb bench propagation`: a graph of derived pages from a seed, a stream of updates to its
//! root pages in batches, and the propagation engine measured against the naive engine (each
//! change on its own, depth first) and a full sweep (every derived page once per batch), on
//! the same graph and the same updates, in the same run; then the engine again with every
//! output logged to a file, and the `incremental` crate (feature `bench-peers`).

use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::graph::{Graph, Rule};
use crate::propagate::{Engine, full_sweep, log_flush, naive_propagate};
use crate::timing::ms;

/// The shape of the generated graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Page i derives from page i - 1.
    Chain,
    /// Page i derives from page (i - 1) / fanout.
    Tree,
    /// `levels` levels of equal size; each page below the first derives from `parents` random
    /// pages of the level above.
    Layered,
    /// Each page derives from up to `parents` random pages with lower ids (page 0 a root).
    Random,
}

/// A generated graph: its shape and the rule of every derived page.
#[derive(Debug, Clone)]
pub struct GraphShape {
    /// The shape.
    pub shape: Shape,
    /// Children per page, for `tree`.
    pub fanout: u64,
    /// Levels, for `layered`.
    pub levels: u64,
    /// Parents per derived page, for `layered` and `random`.
    pub parents: u64,
    /// The derivation of every derived page.
    pub rule: Rule,
}

impl Default for GraphShape {
    fn default() -> Self {
        GraphShape {
            shape: Shape::Layered,
            fanout: 4,
            levels: 16,
            parents: 2,
            rule: Rule::AddU32,
        }
    }
}

/// What to build and stream.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Pages in the graph.
    pub pages: u64,
    /// The graph.
    pub graph: GraphShape,
    /// Root updates in all.
    pub updates: u64,
    /// Updates per flush.
    pub batch: u64,
    /// Bytes per page.
    pub page_size: u64,
    /// Share of updates that go to a hot set of 1% of the roots (the rest to any root): more
    /// duplicates in a batch, and more overlap between the updates' cones.
    pub locality: f64,
    /// Seed of the graph and the updates.
    pub seed: u64,
    /// The most seconds a baseline runs (on a prefix of the updates, whole batches, at least
    /// one).
    pub baseline_seconds: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            pages: 100_000,
            graph: GraphShape::default(),
            updates: 10_000,
            batch: 1000,
            page_size: 64,
            locality: 0.0,
            seed: 0,
            baseline_seconds: 30.0,
        }
    }
}

/// Latency from a batch's first change to its settled state, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Pages one batch's flush recomputed (for single updates: the cone an update reaches, which
/// the latency follows).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchPages {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// One baseline's run on a prefix of the updates.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    /// Updates it was given.
    pub updates: u64,
    /// Recomputations it made.
    pub recomputations: u64,
    /// Updates a second.
    pub updates_per_s: f64,
}

/// The `incremental` crate (a port of Jane Street's Incremental) on a prefix of the updates:
/// a variable per root page, a node per derived page computing the same rule (with a cutoff on
/// equal bytes), every derived page observed.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalRun {
    /// Updates, recomputations and updates a second, as for the other baselines.
    #[serde(flatten)]
    pub run: BaselineRun,
    /// Resident memory the process grew by while building and running it, bytes.
    pub rss_growth_bytes: u64,
}

/// What `bench propagation` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The graph's shape.
    pub shape: Shape,
    /// Pages.
    pub pages: u64,
    /// Edges (parent links).
    pub edges: u64,
    /// Greatest height.
    pub max_height: u32,
    /// Root updates streamed.
    pub updates: u64,
    /// Flushes.
    pub batches: u64,
    /// Recomputations by the engine.
    pub recomputations: u64,
    /// Recomputations a second, the engine alone (outputs kept in memory).
    pub recomputations_per_s: f64,
    /// Recomputations a second with every output logged: each flush's changed bytes appended to
    /// a log file as delta records and a PROPAGATED record, one group, synced.
    pub logged_recomputations_per_s: f64,
    /// Log bytes the logged run wrote.
    pub logged_bytes: u64,
    /// Root updates a second, the engine alone.
    pub updates_per_s: f64,
    /// Of the recomputations, the share whose bytes came out unchanged.
    pub cutoff_ratio: f64,
    /// Submitted updates over distinct root pages changed per batch (1: no duplicates).
    pub dedup_ratio: f64,
    /// Batch latency.
    pub latency_ms: Latency,
    /// Pages recomputed per batch.
    pub recomputed_per_batch: BatchPages,
    /// The naive engine on a prefix of the updates.
    pub naive: BaselineRun,
    /// The full sweep on a prefix of the updates.
    pub full_sweep: BaselineRun,
    /// The engine's updates a second over the naive engine's.
    pub speedup_vs_naive: f64,
    /// The engine's updates a second over the full sweep's.
    pub speedup_vs_full_sweep: f64,
    /// The `incremental` crate on a prefix of the updates (`None` in a build without the
    /// `bench-peers` feature, or for a graph deeper than [`INCREMENTAL_MAX_HEIGHT`]).
    pub incremental: Option<IncrementalRun>,
    /// The engine's updates a second over `incremental`'s.
    pub speedup_vs_incremental: Option<f64>,
    /// The engine's own memory (page bytes, graph arrays, flags), bytes.
    pub engine_bytes: u64,
    /// The memory target: the page bytes plus 32 bytes per edge.
    pub engine_bytes_target: u64,
    /// The process's peak resident memory, bytes (Linux; 0 elsewhere): the engine, the graph it
    /// was made from and the baselines' copies of the pages.
    pub peak_rss_bytes: u64,
}

/// The deepest graph the `incremental` peer is run on.
pub const INCREMENTAL_MAX_HEIGHT: u32 = 10_000;

/// A root page (by index) and its new bytes.
type Update = (u32, Vec<u8>);

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// A graph of `n` pages (ids 0..n, in an order where every parent comes before its page: page
/// i derives from page i - 1 in a chain) shaped as `o` says.
pub fn build_graph(n: u64, o: &GraphShape, rng: &mut ChaCha8Rng) -> Result<Graph> {
    let mut g = Graph::new();
    for i in 0..n {
        g.add_page(i);
    }
    let per_level = n.div_ceil(o.levels.max(1)).max(1);
    for i in 1..n {
        let parents: Vec<u64> = match o.shape {
            Shape::Chain => vec![i - 1],
            Shape::Tree => vec![(i - 1) / o.fanout.max(1)],
            Shape::Layered if i < per_level => continue,
            Shape::Layered => {
                let level_start = i / per_level * per_level;
                let above = level_start - per_level;
                let mut p: Vec<u64> = (0..o.parents.max(1)).map(|_| above + below(rng, per_level)).collect();
                p.sort_unstable();
                p.dedup();
                p
            }
            Shape::Random => {
                let mut p: Vec<u64> = (0..o.parents.max(1)).map(|_| below(rng, i)).collect();
                p.sort_unstable();
                p.dedup();
                p
            }
        };
        g.set_rule(i, o.rule.clone(), &parents)
            .map_err(|e| Error::Invalid(e.to_string()))?;
    }
    Ok(g)
}

/// A line of `/proc/self/status` (`VmHWM:`, `VmRSS:`), bytes; 0 where there is none.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The engine again from the start pages, every flush's outputs appended to a log in a
/// temporary directory (removed after): each changed page one SPARSE record of its changed
/// bytes, then a PROPAGATED record, one group, synced at the commit. Returns the
/// recomputations, the seconds and the log bytes.
fn logged_run(g: &Graph, start: Vec<Vec<u8>>, stream: &[Update], batch: usize) -> Result<(u64, f64, u64)> {
    use crate::format::graph::GraphRecord;
    use crate::format::log::{LogOptions, LogWriter, segment_bytes};
    let dir = tempfile::Builder::new()
        .prefix("mmsb-bench-propagation")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let log = dir.path().join("bench.log");
    let mut w = LogWriter::create(&log, crate::page::StateHash([0; 32]), 1, LogOptions::default())?;
    let mut engine = Engine::new(g, start, usize::MAX).map_err(|e| Error::Invalid(e.to_string()))?;
    engine.keep_changes(true);
    let mut epoch = vec![0u64; g.len()];
    let mut recomputations = 0;
    let t = Instant::now();
    for b in stream.chunks(batch) {
        for (r, bytes) in b {
            engine.submit(*r, bytes).map_err(|e| Error::Invalid(e.to_string()))?;
        }
        let f = engine.flush();
        recomputations += f.recomputed;
        let changes = engine.take_changes();
        let marker = GraphRecord::Propagated {
            through_seq: 0,
            recomputed: f.recomputed,
            changed: changes.len() as u64,
        };
        let epoch = |i: u32| {
            epoch[i as usize] += 1;
            epoch[i as usize]
        };
        log_flush(&mut w, &engine, &changes, epoch, &marker, 0, "bench")?;
    }
    w.finish()?;
    let seconds = t.elapsed().as_secs_f64();
    Ok((recomputations, seconds, segment_bytes(&[&log])))
}

/// The `incremental` crate on whole batches of the stream, until `seconds` are spent; returns
/// its run and the pages where it ended.
#[cfg(feature = "bench-peers")]
fn incremental_run(
    g: &Graph,
    start: &[Vec<u8>],
    stream: &[Update],
    batch: usize,
    seconds: f64,
) -> Result<(IncrementalRun, Vec<Vec<u8>>)> {
    use incremental::{Incr, IncrState, Observer, Var};
    let rss_before = status_bytes("VmRSS:");
    // Its recompute heap has a bucket per height, 128 unless told.
    let state = IncrState::new_with_height(g.max_height() as usize + 2);
    let mut vars: Vec<Option<Var<Vec<u8>>>> = vec![None; g.len()];
    let mut nodes: Vec<Option<Incr<Vec<u8>>>> = vec![None; g.len()];
    let mut observers: Vec<Option<Observer<Vec<u8>>>> = vec![None; g.len()];
    // Parents before their pages: build in height order.
    let mut order: Vec<u32> = (0..g.len() as u32).collect();
    order.sort_by_key(|&i| g.height(i));
    for &i in &order {
        let Some(rule) = g.rule(i).cloned() else {
            let v = state.var(start[i as usize].clone());
            nodes[i as usize] = Some(v.watch());
            vars[i as usize] = Some(v);
            continue;
        };
        let ps: Vec<Incr<Vec<u8>>> = g
            .parents(i)
            .iter()
            .map(|&p| nodes[p as usize].clone().expect("built"))
            .collect();
        let node = match &ps[..] {
            [a] => a.map(move |x: &Vec<u8>| {
                let mut out = Vec::new();
                rule.derive(&[x], &mut out);
                out
            }),
            [a, b] => a.map2(b, move |x: &Vec<u8>, y: &Vec<u8>| {
                let mut out = Vec::new();
                rule.derive(&[x, y], &mut out);
                out
            }),
            _ => {
                if !matches!(rule, Rule::Xor | Rule::AddU32 | Rule::MinU32 | Rule::MaxU32) {
                    return Err(Error::Invalid(format!(
                        "the incremental peer folds only word rules over 3 or more parents, not {}",
                        rule.name()
                    )));
                }
                // The word rules and xor are left folds over the parents.
                state
                    .fold(ps.clone(), None::<Vec<u8>>, move |acc, p: &Vec<u8>| {
                        Some(match acc {
                            None => p.clone(),
                            Some(a) => {
                                let mut out = Vec::new();
                                rule.derive(&[&a, p], &mut out);
                                out
                            }
                        })
                    })
                    .map(|v: &Option<Vec<u8>>| v.clone().unwrap_or_default())
            }
        };
        node.set_cutoff_fn(|a, b| a == b);
        observers[i as usize] = Some(node.observe());
        nodes[i as usize] = Some(node);
    }
    state.stabilise();
    let recomputed_before = state.stats().recomputed;
    let t = Instant::now();
    let mut updates = 0u64;
    for b in stream.chunks(batch) {
        for (r, bytes) in b {
            vars[*r as usize].as_ref().expect("a root").set(bytes.clone());
        }
        state.stabilise();
        updates += b.len() as u64;
        if t.elapsed().as_secs_f64() > seconds {
            break;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let pages = (0..g.len())
        .map(|i| match (&observers[i], &vars[i]) {
            (Some(o), _) => o.value(),
            (None, Some(v)) => v.get(),
            (None, None) => Vec::new(),
        })
        .collect();
    let run = IncrementalRun {
        run: BaselineRun {
            updates,
            recomputations: (state.stats().recomputed - recomputed_before) as u64,
            updates_per_s: updates as f64 / elapsed,
        },
        rss_growth_bytes: status_bytes("VmRSS:").saturating_sub(rss_before),
    };
    Ok((run, pages))
}

/// Builds the graph, streams the updates through the engine, then the baselines on a prefix.
pub fn run(o: &BenchOptions) -> Result<BenchReport> {
    if o.pages < 2 || o.batch == 0 || o.page_size == 0 {
        return Err(Error::Invalid(
            "bench propagation needs at least 2 pages, a batch of 1 or more and pages of 1 byte or more".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let g = build_graph(o.pages, &o.graph, &mut rng)?;
    let roots: Vec<u32> = (0..g.len() as u32).filter(|&i| g.rule(i).is_none()).collect();
    let mut pages: Vec<Vec<u8>> = (0..g.len()).map(|_| vec![0u8; o.page_size as usize]).collect();
    for &r in &roots {
        rng.fill_bytes(&mut pages[r as usize]);
    }
    full_sweep(&g, &mut pages);
    let start_pages = pages.clone();
    // The update stream: (root, new bytes), the same for the engine and the baselines.
    // A hot set of 1% of the roots (at least one) takes the `locality` share of the updates.
    let hot = (roots.len() / 100).max(1) as u64;
    let stream: Vec<Update> = (0..o.updates)
        .map(|_| {
            let local = o.locality > 0.0 && ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < o.locality;
            let r = roots[below(&mut rng, if local { hot } else { roots.len() as u64 }) as usize];
            let mut b = vec![0u8; o.page_size as usize];
            rng.fill_bytes(&mut b);
            (r, b)
        })
        .collect();

    let edges: u64 = (0..g.len() as u32).map(|i| g.parents(i).len() as u64).sum();
    let page_bytes: u64 = pages.iter().map(|p| p.len() as u64).sum();
    let mut engine = Engine::new(&g, pages, usize::MAX).map_err(|e| Error::Invalid(e.to_string()))?;
    let engine_bytes = engine.memory_bytes();
    let (mut recomputations, mut cut, mut distinct) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut per_batch = Vec::new();
    let t = Instant::now();
    for batch in stream.chunks(o.batch as usize) {
        let tb = Instant::now();
        let mut seen: Vec<u32> = batch.iter().map(|(r, _)| *r).collect();
        seen.sort_unstable();
        seen.dedup();
        distinct += seen.len() as u64;
        for (r, b) in batch {
            engine.submit(*r, b).map_err(|e| Error::Invalid(e.to_string()))?;
        }
        let f = engine.flush();
        recomputations += f.recomputed;
        per_batch.push(f.recomputed);
        cut += f.cut_off;
        latencies.push(ms(tb));
    }
    let engine_ms = ms(t);
    let final_pages = engine.into_pages();
    let (logged_recomputations, logged_seconds, logged_bytes) =
        logged_run(&g, start_pages.clone(), &stream, o.batch as usize)?;

    // Baselines: whole batches of the same stream, until the time allowed is spent.
    let baseline = |run_batch: &mut dyn FnMut(&[Update]) -> u64| -> BaselineRun {
        let t = Instant::now();
        let (mut updates, mut recomputed) = (0u64, 0u64);
        for batch in stream.chunks(o.batch as usize) {
            recomputed += run_batch(batch);
            updates += batch.len() as u64;
            if t.elapsed().as_secs_f64() > o.baseline_seconds {
                break;
            }
        }
        BaselineRun {
            updates,
            recomputations: recomputed,
            updates_per_s: updates as f64 / t.elapsed().as_secs_f64(),
        }
    };
    let mut naive_pages = start_pages.clone();
    let naive = baseline(&mut |batch| {
        batch
            .iter()
            .map(|(r, b)| naive_propagate(&g, &mut naive_pages, *r, b.clone()))
            .sum()
    });
    if naive.updates == o.updates && naive_pages != final_pages {
        return Err(Error::Invalid(
            "the naive engine ended elsewhere than the engine".into(),
        ));
    }
    let derived = (g.len() - roots.len()) as u64;
    let mut sweep_pages = start_pages.clone();
    let sweep = baseline(&mut |batch| {
        for (r, b) in batch {
            sweep_pages[*r as usize] = b.clone();
        }
        full_sweep(&g, &mut sweep_pages);
        derived
    });
    if sweep.updates == o.updates && sweep_pages != final_pages {
        return Err(Error::Invalid("the full sweep ended elsewhere than the engine".into()));
    }
    // Deeper graphs are left out: the crate makes a node necessary by recursion over its
    // parents, which a chain of a million pages takes past the stack.
    #[cfg(feature = "bench-peers")]
    let incremental = if g.max_height() > INCREMENTAL_MAX_HEIGHT {
        None
    } else {
        let (run, pages) = incremental_run(&g, &start_pages, &stream, o.batch as usize, o.baseline_seconds)?;
        if run.run.updates == o.updates && pages != final_pages {
            return Err(Error::Invalid(
                "the incremental crate ended elsewhere than the engine".into(),
            ));
        }
        Some(run)
    };
    #[cfg(not(feature = "bench-peers"))]
    let incremental: Option<IncrementalRun> = None;
    latencies.sort_by(f64::total_cmp);
    per_batch.sort_unstable();
    let rank = |p: f64| ((latencies.len() - 1) as f64 * p).round() as usize;
    let pct = |p: f64| latencies[rank(p)];
    let updates_per_s = o.updates as f64 / (engine_ms / 1e3);
    Ok(BenchReport {
        shape: o.graph.shape,
        pages: o.pages,
        edges,
        max_height: g.max_height(),
        updates: o.updates,
        batches: latencies.len() as u64,
        recomputations,
        recomputations_per_s: recomputations as f64 / (engine_ms / 1e3),
        logged_recomputations_per_s: logged_recomputations as f64 / logged_seconds,
        logged_bytes,
        updates_per_s,
        cutoff_ratio: if recomputations == 0 {
            0.0
        } else {
            cut as f64 / recomputations as f64
        },
        dedup_ratio: if distinct == 0 {
            1.0
        } else {
            o.updates as f64 / distinct as f64
        },
        latency_ms: Latency {
            p50: pct(0.5),
            p99: pct(0.99),
            max: *latencies.last().unwrap_or(&0.0),
        },
        recomputed_per_batch: BatchPages {
            p50: per_batch[rank(0.5)],
            p99: per_batch[rank(0.99)],
            max: *per_batch.last().unwrap_or(&0),
        },
        speedup_vs_naive: updates_per_s / naive.updates_per_s,
        speedup_vs_full_sweep: updates_per_s / sweep.updates_per_s,
        speedup_vs_incremental: incremental.as_ref().map(|i| updates_per_s / i.run.updates_per_s),
        incremental,
        naive,
        full_sweep: sweep,
        engine_bytes,
        engine_bytes_target: page_bytes + 32 * edges,
        peak_rss_bytes: status_bytes("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_builds_a_dag_and_the_engine_agrees_with_both_baselines() {
        for shape in [Shape::Chain, Shape::Tree, Shape::Layered, Shape::Random] {
            let o = BenchOptions {
                pages: 1000,
                graph: GraphShape {
                    shape,
                    ..Default::default()
                },
                updates: 200,
                batch: 50,
                page_size: 16,
                ..Default::default()
            };
            // `run` refuses to report when a baseline that saw every update ends elsewhere.
            let r = run(&o).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
            assert_eq!((r.naive.updates, r.full_sweep.updates), (200, 200), "{shape:?}");
            assert_eq!(r.batches, 4);
            assert!(r.recomputations > 0 && r.recomputations <= 4 * 1000, "{shape:?}");
            assert!(r.naive.recomputations >= r.recomputations, "{shape:?}");
            assert!(r.max_height >= 1);
            if shape == Shape::Chain {
                assert_eq!(r.max_height, 999);
            }
        }
    }

    #[test]
    fn locality_sends_updates_to_a_hot_set_that_batching_deduplicates() {
        let run_with = |locality| {
            let o = BenchOptions {
                pages: 2000,
                updates: 400,
                batch: 100,
                page_size: 16,
                locality,
                ..Default::default()
            };
            run(&o).unwrap()
        };
        let (spread, local) = (run_with(0.0), run_with(0.95));
        // 250 roots: a batch of 100 to any root repeats few; to a hot set of 2, nearly all.
        assert!(spread.dedup_ratio < 1.5, "{}", spread.dedup_ratio);
        assert!(local.dedup_ratio > 10.0, "{}", local.dedup_ratio);
        assert!(local.recomputations < spread.recomputations);
    }
}
