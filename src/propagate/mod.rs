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
//! [`naive_propagate`] and [`full_sweep`] are the two baselines the engine is tested and
//! benchmarked against; [`log_flush`] appends a flush's outputs to a log as one group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

pub use crate::error::PropagateError;
use crate::error::Result;
use crate::format::graph::GraphRecord;
use crate::format::log::LogWriter;
use crate::format::record::{Delta, Op};
use crate::graph::{DeriveFn, Graph, Rule, changed_range};

/// Pages of one level recomputed by one task: enough to amortize a task, few enough to spread
/// a level over the threads.
const LEVEL_CHUNK: usize = 2048;

/// A level whose dirty pages are at least this share of it (1 in N) is walked by its dirty
/// flags, which come in order for free, rather than by sorting its list.
const SCAN_SHARE: usize = 8;

/// How many pages ahead of the one being derived its parents are fetched.
const PREFETCH_AHEAD: usize = 8;

/// Asks the processor to start loading the cache line that holds `bytes[at]`, so that a read
/// of it a few pages later finds it in cache. Parents are anywhere in the levels below, and a
/// plain load of them ahead of time would hold up the instructions behind it until it came
/// back; a prefetch does not, so several pages' misses are in flight at once. A no-op where
/// there is no such instruction or `at` is past the end.
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = bytes.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: the pointer is to a byte of `bytes`, and a prefetch is a hint: it changes no
        // memory and no register the program sees, and cannot fault. SSE, which the
        // instruction belongs to, is part of every x86-64 processor.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(byte).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// Bytes whose first one starts a cache line, so that a page of 64 bytes at a multiple of 64 is
/// one line to fetch, not two (the allocator aligns a large buffer to 16 bytes only).
struct LineAligned {
    buf: Vec<u8>,
    from: usize,
    len: usize,
}

/// The cache line size of the processors the engine is tuned for.
const LINE: usize = 64;

impl LineAligned {
    fn new(len: usize) -> LineAligned {
        let buf = vec![0u8; len + LINE];
        let from = buf.as_ptr().align_offset(LINE).min(LINE);
        LineAligned { buf, from, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.from..self.from + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.from..self.from + self.len]
    }
}

/// Named derivations written in Rust, registered by a program for the pages whose rule is
/// [`Rule::Named`].
#[derive(Clone, Default)]
pub struct Derivations {
    by_name: HashMap<String, Arc<DeriveFn>>,
}

impl Derivations {
    /// No named derivation: built-in rules only.
    pub fn new() -> Derivations {
        Derivations::default()
    }

    /// Registers `derive` under `name` (replacing one of that name).
    pub fn register(
        &mut self,
        name: impl Into<String>,
        derive: impl Fn(&[&[u8]], &mut Vec<u8>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.by_name.insert(name.into(), Arc::new(derive));
        self
    }
}

/// How one derived page is computed: a built-in rule, or a registered closure.
#[derive(Clone)]
enum Derivation {
    BuiltIn(Rule),
    Closure(Arc<DeriveFn>),
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

/// A page a flush changed, and the bytes of it that changed (`lo..hi`): what a log record of
/// the output must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The page's index in the graph.
    pub index: u32,
    /// First changed byte.
    pub lo: u64,
    /// One past the last changed byte.
    pub hi: u64,
}

/// Adjacency lists as one array and offsets (`items[off[i]..off[i + 1]]` are slot i's).
struct Lists {
    off: Vec<u32>,
    items: Vec<u32>,
}

impl Lists {
    fn get(&self, i: u32) -> &[u32] {
        &self.items[self.off[i as usize] as usize..self.off[i as usize + 1] as usize]
    }

    fn bytes(&self) -> usize {
        4 * (self.off.len() + self.items.len())
    }
}

/// A propagation engine over a graph and the pages' bytes. The graph's pages are laid out by
/// height (slots), so the pages of one height are one run of the byte buffer: a level's tasks
/// each take a disjoint part of it to write in place, and read parents from the part below,
/// with no lock and no copy. Public indices are the graph's.
pub struct Engine {
    /// Graph index to slot, and back.
    slot_of: Vec<u32>,
    index_of: Vec<u32>,
    ids: Vec<u64>,
    /// Slots of height `h` are `level_start[h]..level_start[h + 1]`.
    level_start: Vec<u32>,
    parents: Lists,
    children: Lists,
    /// Per slot, an index into `derivations` (`u32::MAX` for a root).
    derivation_of: Vec<u32>,
    derivations: Vec<Derivation>,
    /// Slot `s`'s bytes are `bytes[start[s]..start[s + 1]]`.
    start: Vec<u64>,
    /// The one length every page has, where they all have one: offsets are then a product,
    /// not a look-up (one cache miss less per parent).
    fixed_len: Option<u64>,
    bytes: LineAligned,
    dirty: Vec<AtomicBool>,
    frontier: Vec<Vec<u32>>,
    pending: usize,
    max_pending: usize,
    level: usize,
    /// The changes since the last [`Engine::take_changes`], while the caller wants them.
    changes: Option<Vec<(u32, u64, u64)>>,
}

/// Marks a task buffers before it appends them to its list.
const MARKS: usize = 256;

/// A task's marks not yet in its list.
struct Marks {
    buf: [u32; MARKS],
    len: usize,
}

/// What one task of a level did.
#[derive(Default)]
struct ChunkOutputs {
    recomputed: usize,
    changed_count: usize,
    changed: Vec<(u32, u64, u64)>,
    marked: Vec<u32>,
    /// The lowest and highest slot marked: all of them one height up is one copy to merge.
    marked_within: (u32, u32),
}

impl Engine {
    /// An engine over `graph`, with `pages[i]` the bytes of the graph's page `i`, built-in rules
    /// only, and at most `max_pending` dirty pages before [`Engine::submit`] answers
    /// [`Submitted::Full`].
    ///
    /// # Panics
    /// When `pages` does not hold one buffer per page of the graph (a caller's bug).
    pub fn new(graph: &Graph, pages: Vec<Vec<u8>>, max_pending: usize) -> Result<Engine, PropagateError> {
        Engine::with_derivations(graph, pages, max_pending, &Derivations::new())
    }

    /// [`Engine::new`] with named derivations. Refused when a derived page's rule is not known
    /// or gives another length than the page has.
    pub fn with_derivations(
        graph: &Graph,
        pages: Vec<Vec<u8>>,
        max_pending: usize,
        named: &Derivations,
    ) -> Result<Engine, PropagateError> {
        assert_eq!(graph.len(), pages.len(), "one byte buffer per page of the graph");
        let n = graph.len();
        let levels = graph.max_height() as usize + 1;
        let mut count = vec![0u32; levels + 1];
        for i in 0..n as u32 {
            count[graph.height(i) as usize + 1] += 1;
        }
        for h in 0..levels {
            count[h + 1] += count[h];
        }
        let level_start = count.clone();
        let (mut slot_of, mut index_of) = (vec![0u32; n], vec![0u32; n]);
        let mut by_level: Vec<Vec<u32>> = vec![Vec::new(); levels];
        for i in 0..n as u32 {
            by_level[graph.height(i) as usize].push(i);
        }
        // Within a level, pages sit in the order of their lowest parent's slot: the pages of a
        // level are then recomputed reading that parent in increasing order, and a page's
        // children sit near each other (fewer cache lines missed on either side).
        for (h, mut pages) in by_level.into_iter().enumerate() {
            if h > 0 {
                pages.sort_by_cached_key(|&i| {
                    let lowest = graph.parents(i).iter().map(|&p| slot_of[p as usize]).min();
                    (lowest.unwrap_or(0), i)
                });
            }
            for i in pages {
                slot_of[i as usize] = count[h];
                index_of[count[h] as usize] = i;
                count[h] += 1;
            }
        }
        let lists = |parents: bool| {
            let mut off = Vec::with_capacity(n + 1);
            let mut items = Vec::new();
            off.push(0u32);
            for &i in &index_of {
                let list = if parents { graph.parents(i) } else { graph.children(i) };
                items.extend(list.iter().map(|&p| slot_of[p as usize]));
                off.push(u32::try_from(items.len()).expect("fewer than 2^32 edges"));
            }
            Lists { off, items }
        };
        let (parents, children) = (lists(true), lists(false));
        let mut start = Vec::with_capacity(n + 1);
        let mut total = 0u64;
        for &i in &index_of {
            start.push(total);
            total += pages[i as usize].len() as u64;
        }
        start.push(total);
        let fixed_len = pages
            .first()
            .map(|p| p.len() as u64)
            .filter(|&l| pages.iter().all(|p| p.len() as u64 == l));
        let mut bytes = LineAligned::new(total as usize);
        let mut pages = pages;
        for (&i, s) in index_of.iter().zip(start.windows(2)) {
            bytes.bytes_mut()[s[0] as usize..s[1] as usize].copy_from_slice(&std::mem::take(&mut pages[i as usize]));
        }
        drop(pages);
        let page_len = |s: u32| start[s as usize + 1] - start[s as usize];
        let mut table: HashMap<Rule, u32> = HashMap::new();
        let mut derivations = Vec::new();
        let mut derivation_of = vec![u32::MAX; n];
        for (s, &i) in index_of.iter().enumerate() {
            let Some(rule) = graph.rule(i) else { continue };
            let id = graph.id(i);
            let lens: Vec<u64> = parents.get(s as u32).iter().map(|&p| page_len(p)).collect();
            if let Some(out) = rule.output_len(&lens)
                && out != page_len(s as u32)
            {
                return Err(PropagateError::OutputLength {
                    page: id,
                    rule: rule.name().to_string(),
                    output_len: out,
                    page_len: page_len(s as u32),
                });
            }
            let d = match table.get(rule) {
                Some(&d) => d,
                None => {
                    let derivation = match rule {
                        Rule::Named(name) => match named.by_name.get(name) {
                            Some(f) => Derivation::Closure(f.clone()),
                            None => {
                                return Err(PropagateError::UnknownRule {
                                    page: id,
                                    rule: name.clone(),
                                });
                            }
                        },
                        r => Derivation::BuiltIn(r.clone()),
                    };
                    derivations.push(derivation);
                    let d = (derivations.len() - 1) as u32;
                    table.insert(rule.clone(), d);
                    d
                }
            };
            derivation_of[s] = d;
        }
        Ok(Engine {
            ids: index_of.iter().map(|&i| graph.id(i)).collect(),
            slot_of,
            index_of,
            level_start,
            parents,
            children,
            derivation_of,
            derivations,
            start,
            fixed_len,
            bytes,
            dirty: (0..n).map(|_| AtomicBool::new(false)).collect(),
            frontier: vec![Vec::new(); levels],
            pending: 0,
            max_pending,
            level: levels,
            changes: None,
        })
    }

    fn slot_bytes(&self, s: u32) -> &[u8] {
        &self.bytes.bytes()[self.start[s as usize] as usize..self.start[s as usize + 1] as usize]
    }

    /// The bytes of the page at `index`.
    pub fn page(&self, index: u32) -> &[u8] {
        self.slot_bytes(self.slot_of[index as usize])
    }

    /// The id of the page at `index`.
    pub fn id(&self, index: u32) -> u64 {
        self.ids[self.slot_of[index as usize] as usize]
    }

    /// The bytes the engine holds for its own structures and the pages, as it counts them.
    pub fn memory_bytes(&self) -> u64 {
        let per_page = 4 * 3 + 8 + 8 + 1; // slot_of, index_of, derivation_of; ids; start; dirty
        (self.bytes.buf.capacity()
            + self.slot_of.len() * per_page
            + self.parents.bytes()
            + self.children.bytes()
            + self.frontier.iter().map(|f| f.capacity() * 4).sum::<usize>()) as u64
    }

    /// Sets the bytes of the page at `index` (a root, or a derived page overridden until its
    /// parents next change) and marks the pages derived from it for the next flush. The bytes
    /// must be as many as the page has.
    pub fn submit(&mut self, index: u32, bytes: &[u8]) -> Result<Submitted, PropagateError> {
        let s = self.slot_of[index as usize];
        let (from, to) = (self.start[s as usize] as usize, self.start[s as usize + 1] as usize);
        if bytes.len() != to - from {
            return Err(PropagateError::SubmitLength {
                page: self.ids[s as usize],
                bytes: bytes.len() as u64,
                page_len: (to - from) as u64,
            });
        }
        if let Some((lo, hi)) = changed_range(&self.bytes.bytes()[from..to], bytes) {
            self.bytes.bytes_mut()[from..to].copy_from_slice(bytes);
            if let Some(changes) = &mut self.changes {
                changes.push((s, lo, hi));
            }
            for k in self.children.off[s as usize]..self.children.off[s as usize + 1] {
                let c = self.children.items[k as usize];
                if !self.dirty[c as usize].swap(true, Ordering::Relaxed) {
                    self.queue(c);
                }
            }
        }
        Ok(if self.pending >= self.max_pending {
            Submitted::Full
        } else {
            Submitted::Queued
        })
    }

    /// Marks the derived page at `index` for recomputation at the next flush, whatever its
    /// parents did (a page whose rule or parents were just set). A root is left alone.
    pub fn mark(&mut self, index: u32) {
        let s = self.slot_of[index as usize];
        if self.derivation_of[s as usize] != u32::MAX && !self.dirty[s as usize].swap(true, Ordering::Relaxed) {
            self.queue(s);
        }
    }

    /// The height of slot `s`. Slots are laid out by height: the level is found among the few
    /// level starts (which stay in cache) rather than in a per-page array (a miss per page).
    fn level_of(&self, s: u32) -> usize {
        self.level_start.partition_point(|&start| start <= s) - 1
    }

    fn queue(&mut self, s: u32) {
        let h = self.level_of(s);
        self.level = self.level.min(h);
        self.frontier[h].push(s);
        self.pending += 1;
    }

    /// Recomputes every dirty page and what it reaches, until settled.
    pub fn flush(&mut self) -> FlushReport {
        self.flush_budget(u64::MAX)
    }

    /// Recomputes dirty pages in height order until `budget` pages have been recomputed or none
    /// is left (a level is finished once started, so a step may go past the budget by up to
    /// one level's pages).
    pub fn flush_budget(&mut self, budget: u64) -> FlushReport {
        // On a thread of the pool, so that each level's parallel part starts from a worker
        // (which the others steal from) rather than being handed over from outside and waited
        // for, a sleep and a wake-up per level.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.flush_levels(budget));
        }
        self.flush_levels(budget)
    }

    fn flush_levels(&mut self, budget: u64) -> FlushReport {
        let mut report = FlushReport::default();
        while self.level < self.frontier.len() && report.recomputed < budget {
            let h = self.level;
            let mut level = std::mem::take(&mut self.frontier[h]);
            if level.is_empty() {
                self.level += 1;
                continue;
            }
            let (first, last) = (self.level_start[h], self.level_start[h + 1]);
            // Every mark of this level was counted as pending when it was made, including the
            // rare page two tasks both marked (listed twice, recomputed once: see below).
            self.pending -= level.len();
            // In slot order, so that each task's pages are one run of bytes and the outputs
            // come in an order that does not depend on the marking or the threads; each page
            // once.
            if level.len() * SCAN_SHARE >= (last - first) as usize {
                level.clear();
                level.extend((first..last).filter(|&s| self.dirty[s as usize].load(Ordering::Relaxed)));
            } else {
                level.sort_unstable();
                level.dedup();
            }
            let outputs = self.recompute_level(h, &level);
            let next_from = last;
            let next_to = self.level_start.get(h + 2).copied().unwrap_or(last);
            for out in outputs {
                report.recomputed += out.recomputed as u64;
                report.cut_off += (out.recomputed - out.changed_count) as u64;
                if let Some(changes) = &mut self.changes {
                    changes.extend(out.changed);
                }
                // The tasks set the children's flags; here each mark only goes to its level's
                // list, in task order (most children are one height up: no search for those).
                self.pending += out.marked.len();
                if out.marked.is_empty() {
                    continue;
                }
                if out.marked_within.0 >= next_from && out.marked_within.1 < next_to {
                    self.frontier[h + 1].extend_from_slice(&out.marked);
                    continue;
                }
                for c in out.marked {
                    if (next_from..next_to).contains(&c) {
                        self.frontier[h + 1].push(c);
                    } else {
                        let ch = self.level_of(c);
                        self.frontier[ch].push(c);
                    }
                }
            }
            level.clear();
            self.frontier[h] = level;
            self.level += 1;
        }
        report.settled = self.pending == 0;
        if report.settled {
            self.level = self.frontier.len();
        }
        report
    }

    /// Recomputes the dirty pages `level` (in slot order) of height `h`, in parallel: each task
    /// writes its own run of the level's bytes and reads parents from the levels below.
    fn recompute_level(&mut self, h: usize, level: &[u32]) -> Vec<ChunkOutputs> {
        let level_from = self.start[self.level_start[h] as usize];
        let (below, mut rest) = self.bytes.bytes_mut().split_at_mut(level_from as usize);
        let below: &[u8] = below;
        let mut tasks = Vec::with_capacity(level.len().div_ceil(LEVEL_CHUNK));
        let mut at = level_from;
        for chunk in level.chunks(LEVEL_CHUNK) {
            let end = self.start[*chunk.last().expect("chunks are not empty") as usize + 1];
            let (mine, after) = rest.split_at_mut((end - at) as usize);
            tasks.push((chunk, mine, at));
            rest = after;
            at = end;
        }
        let (start, parents, children, dirty) = (&self.start, &self.parents, &self.children, &self.dirty);
        let (derivation_of, derivations, fixed_len) = (&self.derivation_of, &self.derivations, self.fixed_len);
        let keep = self.changes.is_some();
        let range = |s: u32| match fixed_len {
            Some(l) => (s as u64 * l) as usize..(s as u64 * l + l) as usize,
            None => start[s as usize] as usize..start[s as usize + 1] as usize,
        };
        let page_from = |s: u32| match fixed_len {
            Some(l) => (s as u64 * l) as usize,
            None => start[s as usize] as usize,
        };
        let recompute = |(chunk, mine, base): (&[u32], &mut [u8], u64)| {
            let mut o = ChunkOutputs {
                recomputed: chunk.len(),
                ..Default::default()
            };
            let mut out = Vec::new();
            let mut gathered: Vec<&[u8]> = Vec::new();
            let mut marks = Marks {
                buf: [0; MARKS],
                len: 0,
            };
            let parent = |p: u32| &below[range(p)];
            for (k, &s) in chunk.iter().enumerate() {
                // The parents of the page PREFETCH_AHEAD places on are fetched while this one
                // is derived: their cache misses overlap instead of being waited for in turn.
                if let Some(&ahead) = chunk.get(k + PREFETCH_AHEAD) {
                    for &p in parents.get(ahead) {
                        prefetch(below, page_from(p));
                    }
                    // And its own bytes, which the derivation compares with: a level's dirty
                    // pages are in order but far enough apart to defeat the hardware's
                    // sequential prefetch.
                    prefetch(mine, page_from(ahead) - base as usize);
                }
                dirty[s as usize].store(false, Ordering::Relaxed);
                let r = range(s);
                let page = &mut mine[r.start - base as usize..r.end - base as usize];
                let changed = match (&derivations[derivation_of[s as usize] as usize], parents.get(s)) {
                    // Two parents, the common case, from the stack rather than a list.
                    (Derivation::BuiltIn(rule), &[p, q]) => rule.derive_over(&[parent(p), parent(q)], page, &mut out),
                    (Derivation::BuiltIn(rule), ps) => {
                        gathered.clear();
                        gathered.extend(ps.iter().map(|&p| parent(p)));
                        rule.derive_over(&gathered, page, &mut out)
                    }
                    (Derivation::Closure(f), ps) => {
                        gathered.clear();
                        gathered.extend(ps.iter().map(|&p| parent(p)));
                        out.clear();
                        f(&gathered, &mut out);
                        // A closure's output of the wrong length is a bug in the
                        // program that registered it; the page keeps its length.
                        out.resize(page.len(), 0);
                        let changed = changed_range(page, &out);
                        if let Some((lo, hi)) = changed {
                            page[lo as usize..hi as usize].copy_from_slice(&out[lo as usize..hi as usize]);
                        }
                        changed
                    }
                };
                if let Some((lo, hi)) = changed {
                    o.changed_count += 1;
                    if keep {
                        o.changed.push((s, lo, hi));
                    }
                    // The task sets the children's flags itself, so that no serial pass
                    // over the marks touches the flags again. Two tasks may both find a flag
                    // clear and both list the page: a level is walked by its flags or by its
                    // sorted list without repeats, so the page is still recomputed once.
                    // There is no branch on the flag (whether a child is marked already is a
                    // coin toss in a dense wave, and a mispredicted branch costs more than the
                    // store): every child goes into the buffer, which keeps it only when its
                    // flag was clear.
                    for &c in children.get(s) {
                        let flag = &dirty[c as usize];
                        let clear = !flag.load(Ordering::Relaxed);
                        flag.store(true, Ordering::Relaxed);
                        marks.buf[marks.len] = c;
                        marks.len += usize::from(clear);
                        if marks.len == MARKS {
                            o.marked.extend_from_slice(&marks.buf);
                            marks.len = 0;
                        }
                    }
                }
            }
            o.marked.extend_from_slice(&marks.buf[..marks.len]);
            o.marked_within = o
                .marked
                .iter()
                .fold((u32::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
            o
        };
        if tasks.len() == 1 {
            return tasks.into_iter().map(recompute).collect();
        }
        tasks.into_par_iter().map(recompute).collect()
    }

    /// Starts (or stops) keeping the changes for [`Engine::take_changes`]: what a caller that
    /// logs the outputs needs, and no other (kept, they cost memory until taken).
    pub fn keep_changes(&mut self, keep: bool) {
        self.changes = keep.then(Vec::new);
    }

    /// The pages changed since the last call (by [`Engine::submit`] or a flush, while
    /// [`Engine::keep_changes`] is on), by index, each once, with the range of its bytes that
    /// changed.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let Some(changes) = &mut self.changes else {
            return Vec::new();
        };
        let mut changes = std::mem::take(changes);
        changes.sort_unstable_by_key(|c| c.0);
        let mut merged: Vec<Change> = Vec::with_capacity(changes.len());
        for (s, lo, hi) in changes {
            let index = self.index_of[s as usize];
            match merged.last_mut() {
                Some(m) if m.index == index => {
                    m.lo = m.lo.min(lo);
                    m.hi = m.hi.max(hi);
                }
                _ => merged.push(Change { index, lo, hi }),
            }
        }
        merged.sort_unstable_by_key(|c| c.index);
        merged
    }

    /// The pages' bytes, by index.
    pub fn into_pages(self) -> Vec<Vec<u8>> {
        (0..self.slot_of.len() as u32).map(|i| self.page(i).to_vec()).collect()
    }
}

/// What [`log_flush`] appended: the group's first and last sequence numbers, and the output
/// bytes (the changed ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedFlush {
    /// The first record of the group.
    pub first_seq: u64,
    /// Its PROPAGATED record.
    pub last_seq: u64,
    /// Bytes of the changed ranges.
    pub output_bytes: u64,
}

/// Appends a flush's outputs to `w` as one atomic group: each change one SPARSE record of the
/// page's changed bytes at the epoch `epoch(index)` gives, then the PROPAGATED record `marker`;
/// the group is synced as the writer's durability policy says for one record.
pub fn log_flush(
    w: &mut LogWriter,
    engine: &Engine,
    changes: &[Change],
    mut epoch: impl FnMut(u32) -> u64,
    marker: &GraphRecord,
    timestamp_ns: u64,
    source: &str,
) -> Result<LoggedFlush> {
    w.begin_group()?;
    let epochs: Vec<u64> = changes.iter().map(|c| epoch(c.index)).collect();
    let output_bytes = changes.iter().map(|c| c.hi - c.lo).sum();
    // A flush may change most of a million pages: their records are framed in parallel.
    let first = w.append_many_in_group(changes.len(), |i| {
        let c = &changes[i];
        let delta = Delta {
            page_id: engine.id(c.index),
            epoch: epochs[i],
            timestamp_ns,
            source: source.into(),
            op: Op::Sparse(vec![(c.lo, &engine.page(c.index)[c.lo as usize..c.hi as usize])]),
        };
        Ok((delta.kind(), delta.encode()?))
    })?;
    let first = (!changes.is_empty()).then_some(first);
    let last_seq = w.append_graph(marker, timestamp_ns, source)?;
    w.commit_group()?;
    Ok(LoggedFlush {
        first_seq: first.unwrap_or(last_seq),
        last_seq,
        output_bytes,
    })
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
            let mut engine = Engine::new(&g, start.clone(), usize::MAX).unwrap();
            let mut naive = start.clone();
            let mut naive_count = 0;
            let roots: Vec<u32> = (0..n as u32).filter(|&i| g.rule(i).is_none()).collect();
            for batch in &updates {
                for &(page, v) in batch {
                    let i = roots[page % roots.len()];
                    engine.submit(i, &[v; 8]).unwrap();
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
    fn levels_wider_than_one_task_end_where_a_full_sweep_ends() {
        // 6 levels of 10,000 pages, each derived page the sum of two pages one level down:
        // levels split into several parallel tasks, and marks from different tasks meet.
        let (levels, width) = (6u64, 10_000u64);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut g = Graph::new();
        for id in 0..levels * width {
            g.add_page(id);
        }
        for id in width..levels * width {
            let below = (id / width - 1) * width;
            let mut parents = vec![below + next(width), below + next(width)];
            parents.sort_unstable();
            parents.dedup();
            g.set_rule(id, Rule::AddU32, &parents).unwrap();
        }
        let mut pages: Vec<Vec<u8>> = (0..g.len() as u64)
            .map(|i| (i as u32).to_le_bytes().repeat(4))
            .collect();
        full_sweep(&g, &mut pages);
        let mut engine = Engine::new(&g, pages.clone(), usize::MAX).unwrap();
        engine.keep_changes(true);
        let roots: Vec<u32> = (0..g.len() as u32).filter(|&i| g.rule(i).is_none()).collect();
        // A sparse batch (lists sorted) and a dense one (levels walked by their flags).
        for batch in [10, 5000] {
            let before = (0..g.len() as u32).map(|i| engine.page(i).to_vec()).collect::<Vec<_>>();
            for _ in 0..batch {
                let r = roots[next(roots.len() as u64) as usize];
                let bytes = (next(u32::MAX as u64) as u32).to_le_bytes().repeat(4);
                pages[r as usize] = bytes.clone();
                engine.submit(r, &bytes).unwrap();
            }
            let report = engine.flush();
            assert!(report.settled);
            full_sweep(&g, &mut pages);
            let now: Vec<Vec<u8>> = (0..g.len() as u32).map(|i| engine.page(i).to_vec()).collect();
            assert!(
                now == pages,
                "batch of {batch}: the engine ends where a full sweep ends"
            );
            let changed: Vec<u32> = (0..g.len() as u32)
                .filter(|&i| now[i as usize] != before[i as usize])
                .collect();
            let listed: Vec<u32> = engine.take_changes().iter().map(|c| c.index).collect();
            assert_eq!(listed, changed, "batch of {batch}: every changed page listed once");
            assert!(report.recomputed <= (levels - 1) * width);
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
        let mut e = Engine::new(&g, pages.clone(), usize::MAX).unwrap();
        let root = g.index_of(0).unwrap();
        // Only the second byte changes: 5 comes out the same, so 6 is never recomputed.
        e.submit(root, &[1, 9]).unwrap();
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
        let mut e = Engine::new(&g, pages, 1).unwrap();
        assert_eq!(e.submit(g.index_of(0).unwrap(), &[1, 0, 0, 0]), Ok(Submitted::Full));
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
