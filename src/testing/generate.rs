//! Synthetic checkpoints and logs from a seed, for tests, benchmarks and demos. The same options
//! give the same bytes on every machine and thread count.

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::checkpoint::{CheckpointWriter, PageSpec};
use crate::format::log::{Compression, Durability, LogOptions, LogWriter};
use crate::format::record::{Delta, Op};
use crate::graph::{Graph, Rule};
use crate::page::{PageMeta, StateHash};
use crate::propagate::full_sweep;
use crate::testing::propagation::{GraphShape, build_graph};

/// How page sizes are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeDist {
    /// Every page the same size (the last takes the remainder).
    Equal,
    /// Sizes spread log-uniformly over four orders of magnitude, scaled to the total.
    LogUniform,
}

/// Relative weights of the record kinds in the generated log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Full-page replacements (only pages up to `full_max` bytes; others get a sparse write).
    pub full: u32,
    /// Sparse range writes.
    pub sparse: u32,
    /// Masked writes.
    pub masked: u32,
    /// Page creations.
    pub create: u32,
    /// Page resizes.
    pub resize: u32,
    /// Page deletions (the last page is never deleted).
    pub delete: u32,
    /// Fills of a range with one byte value.
    pub fill: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            full: 1,
            sparse: 8,
            masked: 1,
            create: 0,
            resize: 0,
            delete: 0,
            fill: 0,
        }
    }
}

/// Everything that shapes a generated checkpoint and log.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// RNG seed.
    pub seed: u64,
    /// Number of pages in the checkpoint.
    pub pages: u64,
    /// Total bytes of page data in the checkpoint.
    pub total_size: u64,
    /// Page-size distribution.
    pub size_dist: SizeDist,
    /// Records in the log (0: no log).
    pub deltas: u64,
    /// Record kinds' weights.
    pub mix: Mix,
    /// Smallest and largest bytes per sparse range, masked span and created page.
    pub delta_bytes: (u64, u64),
    /// Most ranges in one sparse record.
    pub max_ranges: u32,
    /// Largest page a full-page write goes to.
    pub full_max: u64,
    /// Fraction of pages that are hot.
    pub hot_fraction: f64,
    /// Fraction of writes that go to hot pages.
    pub hot_weight: f64,
    /// Log segment size.
    pub segment_size: u64,
    /// Log payload compression.
    pub compression: Compression,
    /// Make the pages a graph of derived pages of this shape (every page the same size, the
    /// derived pages' bytes derived, the graph in the checkpoint); the log then writes root
    /// pages only, with write records (no create, resize or delete).
    pub graph: Option<GraphShape>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 0,
            pages: 64,
            total_size: 64 << 20,
            size_dist: SizeDist::LogUniform,
            deltas: 1000,
            mix: Mix::default(),
            delta_bytes: (4, 4096),
            max_ranges: 4,
            full_max: 1 << 20,
            hot_fraction: 0.1,
            hot_weight: 0.9,
            segment_size: 64 << 20,
            compression: Compression::None,
            graph: None,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Serialize)]
pub struct GenSummary {
    /// Pages in the checkpoint.
    pub pages: u64,
    /// Page bytes in the checkpoint.
    pub data_bytes: u64,
    /// The checkpoint's state hash.
    pub checkpoint_state_hash: StateHash,
    /// Records in the log.
    pub records: u64,
    /// Bytes the log's deltas write.
    pub delta_bytes: u64,
}

fn page_sizes(o: &GenOptions, rng: &mut ChaCha8Rng) -> Result<Vec<u64>> {
    if o.pages == 0 {
        return Ok(Vec::new());
    }
    if o.total_size < o.pages {
        return Err(Error::Invalid(format!(
            "total size {} is less than one byte per page for {} pages",
            o.total_size, o.pages
        )));
    }
    let mut sizes = match o.size_dist {
        SizeDist::Equal => vec![o.total_size / o.pages; o.pages as usize],
        SizeDist::LogUniform => {
            let w: Vec<f64> = (0..o.pages)
                .map(|_| (unit(rng) * 4.0 * std::f64::consts::LN_10).exp())
                .collect();
            let sum: f64 = w.iter().sum();
            w.iter()
                .map(|x| ((x / sum) * o.total_size as f64).floor().max(1.0) as u64)
                .collect()
        }
    };
    // Fix rounding so the sizes add up to the total exactly: take from or give to the largest.
    let sum: u64 = sizes.iter().sum();
    let largest = (0..sizes.len()).max_by_key(|&i| sizes[i]).expect("at least one page");
    if sum <= o.total_size {
        sizes[largest] += o.total_size - sum;
    } else {
        let excess = sum - o.total_size;
        sizes[largest] = sizes[largest]
            .checked_sub(excess)
            .filter(|&s| s > 0)
            .ok_or_else(|| Error::Invalid("too many pages for the total size".into()))?;
    }
    Ok(sizes)
}

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn between(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        lo + rng.next_u64() % (hi - lo + 1)
    }
}

/// Fills `out` with the bytes of page `id`, chunk by chunk, so that pages can be made in
/// parallel and still come out the same.
fn fill_page(seed: u64, id: u64, chunk: u64, out: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    rng.fill_bytes(out);
}

const CHUNK: usize = 8 << 20;

/// Writes a checkpoint to `ckpt_path` and, when `o.deltas > 0`, a log to `log_dir`.
pub fn generate(ckpt_path: &Path, log_dir: Option<&Path>, o: &GenOptions) -> Result<GenSummary> {
    generate_with_progress(ckpt_path, log_dir, o, None)
}

/// [`generate`], counting checkpoint bytes written into `progress`.
pub fn generate_with_progress(
    ckpt_path: &Path,
    log_dir: Option<&Path>,
    o: &GenOptions,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<GenSummary> {
    // Every output is checked before anything is written: a refused log directory must not
    // cost the user an existing checkpoint.
    crate::fsutil::resolve_output(ckpt_path)?;
    let log_out = match log_dir {
        Some(d) if o.deltas > 0 => Some(crate::fsutil::AtomicDir::create(d)?),
        _ => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let (sizes, graph) = match &o.graph {
        Some(shape) => {
            if o.mix.create + o.mix.resize + o.mix.delete > 0 {
                return Err(Error::Invalid(
                    "with --graph the log writes root pages only: give a --mix of full, sparse, masked and fill".into(),
                ));
            }
            if o.pages < 2 || o.total_size < o.pages {
                return Err(Error::Invalid(
                    "--graph needs at least 2 pages of 1 byte or more".into(),
                ));
            }
            let size = o.total_size / o.pages;
            let g = build_graph(o.pages, shape, &mut rng)?;
            if let Rule::Named(name) = &shape.rule {
                return Err(Error::Invalid(format!("rule {name} is not a built-in rule")));
            }
            let misfit = (0..g.len() as u32)
                .filter_map(|i| Some(g.rule(i)?.output_len(&vec![size; g.parents(i).len()])))
                .find(|out| *out != Some(size));
            if let Some(out) = misfit {
                return Err(rule_does_not_fit(&shape.rule, out, size));
            }
            (vec![size; o.pages as usize], Some(g))
        }
        None => (page_sizes(o, &mut rng)?, None),
    };
    let specs: Vec<PageSpec> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| PageSpec {
            id: i as u64,
            len,
            epoch: 0,
            meta: PageMeta {
                name: Some(format!("page.{i}")),
                ..Default::default()
            },
        })
        .collect();
    let base = match &graph {
        Some(g) => write_graph_checkpoint(ckpt_path, specs, g, o, progress)?,
        None => write_pages(ckpt_path, specs, &sizes, o, progress)?,
    };
    let mut summary = GenSummary {
        pages: o.pages,
        data_bytes: sizes.iter().sum(),
        checkpoint_state_hash: base,
        records: 0,
        delta_bytes: 0,
    };
    let Some(log_out) = log_out else {
        return Ok(summary);
    };
    let options = LogOptions {
        segment_size: o.segment_size,
        durability: Durability::Never,
        compression: o.compression,
    };
    let mut log = LogWriter::create(log_out.path(), base, 1, options)?;
    // With a graph, only roots are written: derived pages follow by `mmsb propagate`.
    let mut alive: Vec<(u64, u64)> = sizes
        .iter()
        .enumerate()
        .filter(|(i, _)| graph.as_ref().is_none_or(|g| g.rule(*i as u32).is_none()))
        .map(|(i, &l)| (i as u64, l))
        .collect();
    let mut next_id = sizes.len() as u64;
    let weights = [
        o.mix.full,
        o.mix.sparse,
        o.mix.masked,
        o.mix.create,
        o.mix.resize,
        o.mix.delete,
        o.mix.fill,
    ];
    let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total_weight == 0 {
        return Err(Error::Invalid("the delta mix has no positive weight".into()));
    }
    let (lo, hi) = (o.delta_bytes.0.max(1), o.delta_bytes.1.max(o.delta_bytes.0.max(1)));
    for seq in 1..=o.deltas {
        let mut pick = rng.next_u64() % total_weight;
        let kind = weights
            .iter()
            .position(|&w| {
                if pick < u64::from(w) {
                    true
                } else {
                    pick -= u64::from(w);
                    false
                }
            })
            .expect("pick is below the total weight");
        let epoch = seq;
        let timestamp_ns = 1_700_000_000_000_000_000 + seq * 1_000;
        let source = "mmsb-gen";
        if alive.is_empty() {
            // Nothing to write to: create a page whatever the mix says.
            let len = between(&mut rng, lo, hi);
            log.append(&Delta {
                page_id: next_id,
                epoch,
                timestamp_ns,
                source: source.into(),
                op: Op::Create {
                    len,
                    meta: PageMeta::default(),
                },
            })?;
            alive.push((next_id, len));
            next_id += 1;
            continue;
        }
        let hot = ((alive.len() as f64 * o.hot_fraction).ceil() as usize).clamp(1, alive.len());
        let slot = if unit(&mut rng) < o.hot_weight {
            rng.next_u64() as usize % hot
        } else {
            rng.next_u64() as usize % alive.len()
        };
        let (id, len) = alive[slot];
        let bytes: Vec<u8>;
        let op_kind = if kind == 0 && len > o.full_max { 1 } else { kind };
        let op = match op_kind {
            0 => {
                bytes = random_bytes(&mut rng, len as usize);
                Op::Full(&bytes)
            }
            1 => {
                let n = between(&mut rng, 1, u64::from(o.max_ranges.max(1)));
                let mut spans = Vec::new();
                for _ in 0..n {
                    let l = between(&mut rng, lo, hi).min(len);
                    spans.push((between(&mut rng, 0, len - l), l));
                }
                bytes = random_bytes(&mut rng, spans.iter().map(|s| s.1 as usize).sum());
                let mut rest = &bytes[..];
                Op::Sparse(
                    spans
                        .into_iter()
                        .map(|(off, l)| {
                            let (now, next) = rest.split_at(l as usize);
                            rest = next;
                            (off, now)
                        })
                        .collect(),
                )
            }
            2 => {
                let l = between(&mut rng, lo, hi).min(len);
                let off = between(&mut rng, 0, len - l);
                let mut mask = random_bytes(&mut rng, l.div_ceil(8) as usize);
                if l % 8 != 0 {
                    *mask.last_mut().expect("l > 0") &= (1u8 << (l % 8)) - 1;
                }
                let set: u64 = mask.iter().map(|b| u64::from(b.count_ones())).sum();
                bytes = [mask, random_bytes(&mut rng, set as usize)].concat();
                let (mask, values) = bytes.split_at(l.div_ceil(8) as usize);
                Op::Masked {
                    offset: off,
                    len: l,
                    mask,
                    values,
                }
            }
            3 => {
                let l = between(&mut rng, lo, hi);
                alive.push((next_id, l));
                next_id += 1;
                let d = Delta {
                    page_id: next_id - 1,
                    epoch,
                    timestamp_ns,
                    source: source.into(),
                    op: Op::Create {
                        len: l,
                        meta: PageMeta::default(),
                    },
                };
                log.append(&d)?;
                continue;
            }
            4 => {
                let l = between(&mut rng, 1, (len * 2).max(lo).min(len + hi));
                alive[slot].1 = l;
                Op::Resize { len: l }
            }
            6 => {
                let l = between(&mut rng, lo, hi).min(len);
                Op::Fill {
                    offset: between(&mut rng, 0, len - l),
                    len: l,
                    value: rng.next_u64() as u8,
                }
            }
            _ if alive.len() > 1 => {
                alive.swap_remove(slot);
                Op::Delete
            }
            _ => Op::Resize { len: len.max(1) },
        };
        let d = Delta {
            page_id: id,
            epoch,
            timestamp_ns,
            source: source.into(),
            op,
        };
        summary.delta_bytes += d.written_bytes();
        log.append(&d)?;
    }
    summary.records = o.deltas;
    log.finish()?;
    log_out.commit()?;
    Ok(summary)
}

fn rule_does_not_fit(rule: &Rule, out: Option<u64>, size: u64) -> Error {
    Error::Invalid(format!(
        "rule {} gives {} bytes from parents of {size}: with --graph every page has the same size, so use a rule that keeps it",
        rule.display(),
        out.map_or("an unknown number of".into(), |o| o.to_string())
    ))
}

/// Writes the checkpoint of a generated graph: roots filled from the seed, derived pages
/// derived from them, and the graph section.
fn write_graph_checkpoint(
    ckpt_path: &Path,
    specs: Vec<PageSpec>,
    g: &Graph,
    o: &GenOptions,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<StateHash> {
    let mut pages: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let mut b = vec![0u8; s.len as usize];
            if g.rule(s.id as u32).is_none() {
                fill_page(o.seed, s.id, 0, &mut b);
            }
            b
        })
        .collect();
    full_sweep(g, &mut pages);
    let mut w = CheckpointWriter::create_with_graph(ckpt_path, specs, BTreeMap::new(), &g.to_derivations())?
        .with_progress(progress);
    for p in &pages {
        w.write(p)?;
    }
    w.finish()
}

/// Writes a checkpoint of pages filled from the seed.
fn write_pages(
    ckpt_path: &Path,
    specs: Vec<PageSpec>,
    sizes: &[u64],
    o: &GenOptions,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<StateHash> {
    use rayon::prelude::*;
    let mut w = CheckpointWriter::create(ckpt_path, specs, BTreeMap::new())?.with_progress(progress);
    // Chunks of all pages, generated a batch at a time in parallel and written in order.
    let chunks: Vec<(u64, u64, usize)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(id, &len)| {
            (0..len.div_ceil(CHUNK as u64))
                .map(move |c| (id as u64, c, (len - c * CHUNK as u64).min(CHUNK as u64) as usize))
        })
        .collect();
    for batch in chunks.chunks(rayon::current_num_threads().max(2) * 2) {
        let bufs: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|&(id, c, n)| {
                let mut b = vec![0u8; n];
                fill_page(o.seed, id, c, &mut b);
                b
            })
            .collect();
        for b in &bufs {
            w.write(b)?;
        }
    }
    w.finish()
}

fn random_bytes(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

impl crate::metrics::Measured for GenSummary {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.pages += self.pages;
        m.records += self.records;
        m.state_hash = Some(self.checkpoint_state_hash.to_hex());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::Checkpoint;
    use crate::format::log::Log;
    use crate::replay::{PageCheck, ReplayLimit, State};

    #[test]
    fn same_seed_same_bytes_and_the_log_replays() {
        let dir = tempfile::tempdir().unwrap();
        let o = GenOptions {
            pages: 9,
            total_size: 300_000,
            deltas: 300,
            mix: Mix {
                full: 1,
                sparse: 4,
                masked: 2,
                create: 1,
                resize: 1,
                delete: 1,
                fill: 0,
            },
            ..Default::default()
        };
        let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
        let sa = generate(&a, Some(&dir.path().join("a.log")), &o).unwrap();
        generate(&b, Some(&dir.path().join("b.log")), &o).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("a.log/00000000.mmsblog")).unwrap(),
            std::fs::read(dir.path().join("b.log/00000000.mmsblog")).unwrap()
        );
        let ckpt = Checkpoint::open(&a).unwrap();
        assert_eq!(ckpt.state_hash(), sa.checkpoint_state_hash);
        assert_eq!(ckpt.head().data_bytes(), 300_000);
        let log = Log::open(&[dir.path().join("a.log")]).unwrap();
        let mut s = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        let r = s.replay(&log, ReplayLimit::default()).unwrap();
        assert_eq!(r.records, 300);
        assert_eq!(r.bytes_written, sa.delta_bytes);
    }
}
