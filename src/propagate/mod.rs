//! Propagation: when pages change, every page derived from them is recomputed, in height order,
//! each at most once per flush, never before all of its changed parents, and no further than
//! needed (a recomputed page whose bytes did not change stops the propagation there).
//!
//! The engine keeps one list of dirty pages per height (the frontier) and a dirty flag per
//! page, so a flush walks only the pages a change reaches: no recursion (a chain a million
//! deep is a million list entries), no queue that can fill and spin. Changes submitted between
//! flushes are batched and deduplicated; [`Engine::submit`] says when the pending work reaches
//! the bound the caller set, and [`Engine::flush_budget`] runs a flush in steps. The pages of
//! one height are recomputed in parallel and applied in a fixed order, so the result does not
//! depend on the thread count.
//!
//! [`naive_propagate`] and [`full_sweep`] are the two baselines the engine is tested (and will
//! be benchmarked) against. Logging the outputs as delta records, the graph's format and the
//! command line are the rest of issue "Derived pages", not built yet.

use rayon::prelude::*;

use crate::graph::{Graph, Rule};

/// Pages of one level recomputed by one task: enough to amortize a task, few enough to spread
/// a level over the threads.
const LEVEL_CHUNK: usize = 2048;

/// What one task of a level computed: how many pages, and the outputs that changed, as
/// `(page, offset, length)` into `packed`.
struct ChunkOutputs {
    recomputed: usize,
    changed: Vec<(u32, usize, usize)>,
    packed: Vec<u8>,
}

/// Where a submitted change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Taken; the pending work is below the bound.
    Queued,
    /// Taken, and the pending work has reached the bound: flush before submitting more.
    Full,
}

/// What a flush (or a step of one) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Derived pages recomputed.
    pub recomputed: u64,
    /// Of those, pages whose bytes came out unchanged (the propagation stopped there).
    pub cut_off: u64,
    /// True when no dirty page is left.
    pub settled: bool,
}

/// The pages' bytes: one flat buffer while every page has one size (the common case, and the
/// fast one), a buffer per page once sizes differ.
enum Pages {
    Fixed { size: usize, bytes: Vec<u8> },
    Varied(Vec<Vec<u8>>),
}

impl Pages {
    fn new(pages: Vec<Vec<u8>>) -> Pages {
        match pages.first().map(Vec::len) {
            Some(size) if size > 0 && pages.iter().all(|p| p.len() == size) => Pages::Fixed {
                size,
                bytes: pages.concat(),
            },
            _ => Pages::Varied(pages),
        }
    }

    fn get(&self, i: u32) -> &[u8] {
        match self {
            Pages::Fixed { size, bytes } => &bytes[i as usize * size..(i as usize + 1) * size],
            Pages::Varied(v) => &v[i as usize],
        }
    }

    fn set(&mut self, i: u32, b: &[u8]) {
        if let Pages::Fixed { size, bytes } = self {
            if b.len() == *size {
                bytes[i as usize * *size..(i as usize + 1) * *size].copy_from_slice(b);
                return;
            }
            let size = *size;
            *self = Pages::Varied(bytes.chunks(size).map(<[u8]>::to_vec).collect());
        }
        if let Pages::Varied(v) = self {
            v[i as usize].clear();
            v[i as usize].extend_from_slice(b);
        }
    }

    fn into_vecs(self) -> Vec<Vec<u8>> {
        match self {
            Pages::Fixed { size, bytes } => bytes.chunks(size).map(<[u8]>::to_vec).collect(),
            Pages::Varied(v) => v,
        }
    }
}

/// Adjacency lists as one array and offsets (`items[off[i]..off[i + 1]]` are page i's).
struct Lists {
    off: Vec<usize>,
    items: Vec<u32>,
}

impl Lists {
    fn of(n: u32, list: impl Fn(u32) -> Vec<u32>) -> Lists {
        let mut off = Vec::with_capacity(n as usize + 1);
        let mut items = Vec::new();
        off.push(0);
        for i in 0..n {
            items.extend(list(i));
            off.push(items.len());
        }
        Lists { off, items }
    }

    fn get(&self, i: u32) -> &[u32] {
        &self.items[self.off[i as usize]..self.off[i as usize + 1]]
    }
}

/// A propagation engine over a graph and the pages' bytes (indexed as the graph numbers them).
/// It flattens the graph when made (parents and children as arrays, heights, rules), so a
/// flush follows no pointer per page.
pub struct Engine {
    parents: Lists,
    children: Lists,
    height: Vec<u32>,
    rule: Vec<Option<Rule>>,
    pages: Pages,
    dirty: Vec<bool>,
    frontier: Vec<Vec<u32>>,
    pending: usize,
    max_pending: usize,
    level: usize,
}

impl Engine {
    /// An engine over `graph`, with `pages[i]` the bytes of the graph's page `i`, and at most
    /// `max_pending` dirty pages before [`Engine::submit`] answers [`Submitted::Full`].
    ///
    /// # Panics
    /// When `pages` does not hold one buffer per page of the graph (a caller's bug).
    pub fn new(graph: &Graph, pages: Vec<Vec<u8>>, max_pending: usize) -> Engine {
        assert_eq!(graph.len(), pages.len(), "one byte buffer per page of the graph");
        let n = graph.len() as u32;
        let levels = graph.max_height() as usize + 1;
        Engine {
            parents: Lists::of(n, |i| graph.parents(i).to_vec()),
            children: Lists::of(n, |i| graph.children(i).to_vec()),
            height: (0..n).map(|i| graph.height(i)).collect(),
            rule: (0..n).map(|i| graph.rule(i).cloned()).collect(),
            pages: Pages::new(pages),
            dirty: vec![false; n as usize],
            frontier: vec![Vec::new(); levels],
            pending: 0,
            max_pending,
            level: levels,
        }
    }

    /// The bytes of the page at `index`.
    pub fn page(&self, index: u32) -> &[u8] {
        self.pages.get(index)
    }

    /// Sets the bytes of the page at `index` (a root, or a derived page overridden until its
    /// parents next change) and marks the pages derived from it for the next flush.
    pub fn submit(&mut self, index: u32, bytes: &[u8]) -> Submitted {
        if self.pages.get(index) != bytes {
            self.pages.set(index, bytes);
            self.mark_children(index);
        }
        if self.pending >= self.max_pending {
            Submitted::Full
        } else {
            Submitted::Queued
        }
    }

    fn mark_children(&mut self, index: u32) {
        let (from, to) = (self.children.off[index as usize], self.children.off[index as usize + 1]);
        for k in from..to {
            let c = self.children.items[k];
            if !std::mem::replace(&mut self.dirty[c as usize], true) {
                let h = self.height[c as usize] as usize;
                self.level = self.level.min(h);
                self.frontier[h].push(c);
                self.pending += 1;
            }
        }
    }

    /// Recomputes every dirty page and what it reaches, until settled.
    pub fn flush(&mut self) -> FlushReport {
        self.flush_budget(u64::MAX)
    }

    /// Recomputes dirty pages in height order until `budget` pages have been recomputed or none
    /// is left (a level is finished once started, so a step may go past the budget by up to
    /// one level's pages).
    pub fn flush_budget(&mut self, budget: u64) -> FlushReport {
        let mut report = FlushReport::default();
        while self.level < self.frontier.len() && report.recomputed < budget {
            let mut level = std::mem::take(&mut self.frontier[self.level]);
            if level.is_empty() {
                self.level += 1;
                continue;
            }
            // A fixed order whatever the order of marking: the outputs, and so the log they
            // will become, do not depend on thread timing.
            level.sort_unstable();
            let (parents_of, rules, pages) = (&self.parents, &self.rule, &self.pages);
            // Chunks of the level in parallel; each keeps only the outputs that changed, packed
            // in one buffer, so an unchanged page costs no allocation.
            let chunks: Vec<ChunkOutputs> = level
                .par_chunks(LEVEL_CHUNK)
                .map(|chunk| {
                    let (mut out, mut parents, mut changed, mut packed) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for &i in chunk {
                        parents.clear();
                        parents.extend(parents_of.get(i).iter().map(|&p| pages.get(p)));
                        let rule = rules[i as usize].as_ref().expect("only derived pages are marked");
                        rule.derive(&parents, &mut out);
                        if pages.get(i) != &out[..] {
                            changed.push((i, packed.len(), out.len()));
                            packed.extend_from_slice(&out);
                        }
                    }
                    ChunkOutputs {
                        recomputed: chunk.len(),
                        changed,
                        packed,
                    }
                })
                .collect();
            for ChunkOutputs {
                recomputed: n,
                changed,
                packed,
            } in chunks
            {
                report.recomputed += n as u64;
                report.cut_off += (n - changed.len()) as u64;
                self.pending -= n;
                for (i, at, len) in changed {
                    self.pages.set(i, &packed[at..at + len]);
                    self.mark_children(i);
                }
            }
            for &i in &level {
                self.dirty[i as usize] = false;
            }
            level.clear();
            self.frontier[self.level] = level;
            self.level += 1;
        }
        report.settled = self.pending == 0;
        if report.settled {
            self.level = self.frontier.len();
        }
        report
    }

    /// The pages' bytes, by index.
    pub fn into_pages(self) -> Vec<Vec<u8>> {
        self.pages.into_vecs()
    }
}

/// The naive baseline: a change propagated on its own, depth first, each page recomputed on
/// every arrival, stopping only where bytes did not change. Returns the recomputations.
pub fn naive_propagate(graph: &Graph, pages: &mut [Vec<u8>], index: u32, bytes: Vec<u8>) -> u64 {
    if pages[index as usize] == bytes {
        return 0;
    }
    pages[index as usize] = bytes;
    let mut recomputed = 0;
    let mut stack: Vec<u32> = graph.children(index).iter().rev().copied().collect();
    let mut out = Vec::new();
    while let Some(i) = stack.pop() {
        let ps = graph.parents(i);
        let rule = graph.rule(i).expect("a child is derived");
        rule.derive_from(ps.len(), |k| &pages[ps[k] as usize][..], &mut out);
        recomputed += 1;
        if pages[i as usize] != out {
            pages[i as usize].clear();
            pages[i as usize].extend_from_slice(&out);
            stack.extend(graph.children(i).iter().rev().copied());
        }
    }
    recomputed
}

/// The full sweep: every derived page recomputed once, in height order.
pub fn full_sweep(graph: &Graph, pages: &mut [Vec<u8>]) {
    let mut order: Vec<u32> = (0..graph.len() as u32).filter(|&i| graph.rule(i).is_some()).collect();
    order.sort_by_key(|&i| graph.height(i));
    let mut out = Vec::new();
    for i in order {
        let ps = graph.parents(i);
        let rule = graph.rule(i).expect("derived");
        rule.derive_from(ps.len(), |k| &pages[ps[k] as usize][..], &mut out);
        pages[i as usize].clear();
        pages[i as usize].extend_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Rule;
    use proptest::prelude::*;

    /// A random DAG: page i derives from up to three pages below it (pages with no parent are
    /// roots, page 0 always among them), by a rule picked from the seed.
    fn dag(n: usize, edges: &[(usize, usize)], rules: &[u8]) -> Graph {
        let mut g = Graph::new();
        for i in 0..n {
            g.add_page(i as u64);
        }
        for i in 0..n {
            let parents: Vec<u64> = edges
                .iter()
                .filter(|(c, p)| *c % n == i && *p % n < i)
                .map(|(_, p)| (*p % n) as u64)
                .take(3)
                .collect();
            if !parents.is_empty() {
                let rule = match rules[i % rules.len()] % 5 {
                    0 => Rule::Xor,
                    1 => Rule::AddU32,
                    2 => Rule::MaxU32,
                    3 => Rule::Copy,
                    _ => Rule::Slice { offset: 0, len: 4 },
                };
                g.set_rule(i as u64, rule, &parents).unwrap();
            }
        }
        g
    }

    proptest! {
        /// Batches of changes to root pages: the batched engine ends where the naive engine and
        /// a full sweep end, and recomputes no page twice in a flush.
        #[test]
        fn batched_equals_naive_and_full_sweep(
            n in 2usize..40,
            edges in proptest::collection::vec((0usize..40, 0usize..40), 0..120),
            rules in proptest::collection::vec(any::<u8>(), 1..8),
            updates in proptest::collection::vec(proptest::collection::vec((0usize..40, any::<u8>()), 1..6), 1..6),
        ) {
            let g = dag(n, &edges, &rules);
            let mut start: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 8]).collect();
            full_sweep(&g, &mut start);
            let mut engine = Engine::new(&g, start.clone(), usize::MAX);
            let mut naive = start.clone();
            let mut naive_count = 0;
            let roots: Vec<u32> = (0..n as u32).filter(|&i| g.rule(i).is_none()).collect();
            for batch in &updates {
                for &(page, v) in batch {
                    let i = roots[page % roots.len()];
                    engine.submit(i, &[v; 8]);
                    naive_count += naive_propagate(&g, &mut naive, i, vec![v; 8]);
                }
                let report = engine.flush();
                prop_assert!(report.settled);
                let derived = (0..n as u32).filter(|&i| g.rule(i).is_some()).count() as u64;
                prop_assert!(report.recomputed <= derived, "each page at most once per flush");
                let now: Vec<Vec<u8>> = (0..n as u32).map(|i| engine.page(i).to_vec()).collect();
                let mut sweep = now.clone();
                full_sweep(&g, &mut sweep);
                prop_assert_eq!(&sweep, &now);
                prop_assert_eq!(&naive, &now);
            }
            let _ = naive_count;
        }
    }

    #[test]
    fn a_diamond_recomputes_its_bottom_once_and_a_cutoff_stops_the_wave() {
        // 0 -> 1, 0 -> 2, (1, 2) -> 3, 3 -> 4; 5 = slice of 0's first byte -> 6.
        let mut g = Graph::new();
        g.set_rule(1, Rule::Copy, &[0]).unwrap();
        g.set_rule(2, Rule::Copy, &[0]).unwrap();
        g.set_rule(3, Rule::Xor, &[1, 2]).unwrap();
        g.set_rule(4, Rule::Copy, &[3]).unwrap();
        g.set_rule(5, Rule::Slice { offset: 0, len: 1 }, &[0]).unwrap();
        g.set_rule(6, Rule::Copy, &[5]).unwrap();
        let mut pages = vec![vec![1u8, 2]; 7];
        full_sweep(&g, &mut pages);
        let mut e = Engine::new(&g, pages.clone(), usize::MAX);
        let root = g.index_of(0).unwrap();
        // Only the second byte changes: 5 comes out the same, so 6 is never recomputed.
        e.submit(root, &[1, 9]);
        let r = e.flush();
        // 1, 2 and 5, then 3 once; 5 and 3 (1 XOR 2, zeros again) come out unchanged, so 6 and
        // 4 are never recomputed.
        assert_eq!((r.recomputed, r.cut_off, r.settled), (4, 2, true));
        let mut naive = pages.clone();
        let naive_count = naive_propagate(&g, &mut naive, root, vec![1, 9]);
        assert_eq!(naive, e.into_pages());
        assert!(
            naive_count > 4,
            "the naive engine recomputes the diamond's bottom per parent ({naive_count})"
        );
    }

    #[test]
    fn submit_reports_the_bound_and_a_budgeted_flush_settles_in_steps() {
        let mut g = Graph::new();
        for i in 1..100u64 {
            g.set_rule(i, Rule::AddU32, &[i - 1]).unwrap();
        }
        let mut pages = vec![vec![0u8; 4]; 100];
        full_sweep(&g, &mut pages);
        let mut e = Engine::new(&g, pages, 1);
        assert_eq!(e.submit(g.index_of(0).unwrap(), &[1, 0, 0, 0]), Submitted::Full);
        let mut steps = 0;
        loop {
            steps += 1;
            let r = e.flush_budget(10);
            assert!(r.recomputed <= 10);
            if r.settled {
                break;
            }
        }
        assert_eq!(steps, 10, "99 pages in steps of 10");
        assert!(e.into_pages().iter().all(|p| p == &[1, 0, 0, 0]));
    }
}
