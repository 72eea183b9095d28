//! The propagation workload of `mmsb bench propagation` (a layered graph, 64-byte pages, the sum
//! of two parents one level down, batches of root updates) run by the smallest engine that
//! does it: a list of dirty pages per height, a dirty flag per page, one thread, a compare
//! against the old bytes. It measures what such an engine reaches on the hardware at hand, to
//! set the library engine's figures against; nothing in the library uses it.
//!
//! Two variants: each level's list in the order pages were marked, and each level in page order
//! (its list sorted, or its flags walked where at least 1 in 8 pages is dirty), which is how the
//! library walks a level.
//!
//! The library's engine runs first on the same graph and updates, for comparison (alone, with
//! `ENGINE_ONLY=1`: what `perf record` of the engine wants).
//!
//! cargo run --release --example frontier_probe -- [PAGES] [BATCHES]

use std::time::Instant;

use mmsb::graph::Rule;
use mmsb::propagate::{Engine, full_sweep};
use mmsb::testing::propagation::{GraphShape, build_graph};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

const PAGE: usize = 64;
const BATCH: usize = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(1_000_000, |a| a.parse().expect("PAGES is a number"));
    let batches: usize = args.get(2).map_or(5, |a| a.parse().expect("BATCHES is a number"));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let g = build_graph(n, &GraphShape::default(), &mut rng)?;
    let len = g.len();
    let mut pages: Vec<Vec<u8>> = vec![vec![0u8; PAGE]; len];
    let roots: Vec<u32> = (0..len as u32).filter(|&i| g.rule(i).is_none()).collect();
    for &r in &roots {
        rng.fill_bytes(&mut pages[r as usize]);
    }
    full_sweep(&g, &mut pages);
    // Flat arrays: the pages one buffer, parents and children one list each.
    let start: Vec<u8> = pages.concat();
    let parents = Lists::new(len, |i| g.parents(i));
    let children = Lists::new(len, |i| g.children(i));
    let height: Vec<u32> = (0..len as u32).map(|i| g.height(i)).collect();
    let levels = g.max_height() as usize + 1;
    let mut by_level: Vec<Vec<u32>> = vec![Vec::new(); levels];
    for (i, &h) in height.iter().enumerate() {
        by_level[h as usize].push(i as u32);
    }
    assert!(
        (0..len as u32).all(|i| g.rule(i).is_none_or(|r| *r == Rule::AddU32 && g.parents(i).len() <= 2)),
        "the bench's graph: sums of at most two parents"
    );
    let updates: Vec<(u32, [u8; PAGE])> = (0..batches * BATCH)
        .map(|_| {
            let mut b = [0u8; PAGE];
            rng.fill_bytes(&mut b);
            (roots[(rng.next_u64() % roots.len() as u64) as usize], b)
        })
        .collect();
    {
        let mut engine = Engine::new(
            &g,
            (0..len).map(|i| start[i * PAGE..][..PAGE].to_vec()).collect(),
            usize::MAX,
        )?;
        let mut recomputed = 0u64;
        let t = Instant::now();
        for batch in updates.chunks(BATCH) {
            for (r, b) in batch {
                engine.submit(*r, b)?;
            }
            recomputed += engine.flush().recomputed;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "the library's engine ({} threads): {recomputed} recomputations, {:.1} M/s, {:.1} ms a batch",
            rayon::current_num_threads(),
            recomputed as f64 / s / 1e6,
            s * 1e3 / batches as f64
        );
    }
    if std::env::var_os("ENGINE_ONLY").is_some() {
        return Ok(());
    }
    for in_page_order in [false, true] {
        let mut bytes = start.clone();
        let mut dirty = vec![false; len];
        let mut frontier: Vec<Vec<u32>> = vec![Vec::new(); levels];
        let mut recomputed = 0u64;
        let t = Instant::now();
        for batch in updates.chunks(BATCH) {
            for (r, b) in batch {
                bytes[*r as usize * PAGE..][..PAGE].copy_from_slice(b);
                mark(children.get(*r), &height, &mut dirty, &mut frontier);
            }
            for h in 1..levels {
                let mut list = std::mem::take(&mut frontier[h]);
                if in_page_order {
                    if list.len() * 8 >= by_level[h].len() {
                        list = by_level[h].iter().copied().filter(|&i| dirty[i as usize]).collect();
                    } else {
                        list.sort_unstable();
                    }
                }
                for &i in &list {
                    dirty[i as usize] = false;
                    recomputed += 1;
                    let mut out = [0u8; PAGE];
                    for &p in parents.get(i) {
                        let parent = &bytes[p as usize * PAGE..][..PAGE];
                        for (o, w) in out.chunks_exact_mut(4).zip(parent.chunks_exact(4)) {
                            let sum = u32::from_le_bytes((&*o).try_into().expect("a word"))
                                .wrapping_add(u32::from_le_bytes(w.try_into().expect("a word")));
                            o.copy_from_slice(&sum.to_le_bytes());
                        }
                    }
                    let page = &mut bytes[i as usize * PAGE..][..PAGE];
                    if page != out {
                        page.copy_from_slice(&out);
                        mark(children.get(i), &height, &mut dirty, &mut frontier);
                    }
                }
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{}: {recomputed} recomputations, {:.1} M/s, {:.1} ms a batch",
            if in_page_order {
                "in page order"
            } else {
                "in marking order"
            },
            recomputed as f64 / s / 1e6,
            s * 1e3 / batches as f64
        );
    }
    Ok(())
}

/// Adjacency lists as one array and offsets.
struct Lists {
    off: Vec<usize>,
    items: Vec<u32>,
}

impl Lists {
    fn new<'a>(len: usize, list: impl Fn(u32) -> &'a [u32]) -> Lists {
        let mut off = vec![0];
        let mut items = Vec::new();
        for i in 0..len as u32 {
            items.extend_from_slice(list(i));
            off.push(items.len());
        }
        Lists { off, items }
    }

    fn get(&self, i: u32) -> &[u32] {
        &self.items[self.off[i as usize]..self.off[i as usize + 1]]
    }
}

fn mark(children: &[u32], height: &[u32], dirty: &mut [bool], frontier: &mut [Vec<u32>]) {
    for &c in children {
        if !std::mem::replace(&mut dirty[c as usize], true) {
            frontier[height[c as usize] as usize].push(c);
        }
    }
}
