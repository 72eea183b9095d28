//! Derived pages: which pages derive from which, by what rule. The edges form a DAG; every
//! derived page has a height above all of its parents', kept as edges change (heights only
//! rise, which keeps the order valid without recomputing it from scratch), so that a
//! propagation can recompute pages in height order, each once.
//!
//! This is the in-memory graph. Its section in the checkpoint and its log records are the
//! format work of issue "Derived pages" still to come (docs/FORMAT.md does not describe them
//! yet).

use std::collections::HashMap;

pub use crate::error::GraphError;

mod history;
mod stored;

pub use history::*;
pub use stored::*;

/// A built-in derivation: how a derived page's bytes follow from its parents' bytes, in order.
/// Every rule is deterministic and total (any parent lengths give an output).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The first parent's bytes.
    Copy,
    /// The first parent's bytes, XORed with each other parent's over the bytes they share.
    Xor,
    /// Little-endian u32 words of the first parent, each wrapping-added to the other parents'
    /// words at the same place (a trailing part-word is copied from the first parent).
    AddU32,
    /// Like [`Rule::AddU32`] with the minimum of the words.
    MinU32,
    /// Like [`Rule::AddU32`] with the maximum of the words.
    MaxU32,
    /// The parents' bytes, one after another.
    Concat,
    /// `len` bytes of the first parent from `offset` (fewer where it ends sooner).
    Slice {
        /// The first byte taken.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// The CRC32C of the parents' bytes one after another, as 4 little-endian bytes.
    Crc32c,
    /// A derivation the program registers under this name ([`crate::propagate::Derivations`]):
    /// the graph stores the name, and only a program that registered it can run it.
    Named(String),
}

/// A derivation written in Rust: the parents' bytes, in order, to the derived bytes (into the
/// buffer, cleared first). It must be deterministic, and give as many bytes as the page has.
pub type DeriveFn = dyn Fn(&[&[u8]], &mut Vec<u8>) + Send + Sync;

impl Rule {
    /// Every built-in rule's name, as the command line spells it.
    pub const BUILT_IN: [&'static str; 8] = [
        "copy", "xor", "add-u32", "min-u32", "max-u32", "concat", "slice", "crc32c",
    ];

    /// The rule's name as the command line spells it (`slice` without its parameters).
    pub fn name(&self) -> &str {
        match self {
            Rule::Copy => "copy",
            Rule::Xor => "xor",
            Rule::AddU32 => "add-u32",
            Rule::MinU32 => "min-u32",
            Rule::MaxU32 => "max-u32",
            Rule::Concat => "concat",
            Rule::Slice { .. } => "slice",
            Rule::Crc32c => "crc32c",
            Rule::Named(n) => n,
        }
    }

    /// The rule named `name` (a built-in name, or else a named derivation), with `params` for
    /// `slice` (offset and length; the others take none).
    pub fn parse(name: &str, params: &[u64]) -> Result<Rule, String> {
        let rule = match name {
            "copy" => Rule::Copy,
            "xor" => Rule::Xor,
            "add-u32" => Rule::AddU32,
            "min-u32" => Rule::MinU32,
            "max-u32" => Rule::MaxU32,
            "concat" => Rule::Concat,
            "crc32c" => Rule::Crc32c,
            "slice" => match params {
                [offset, len] => {
                    return Ok(Rule::Slice {
                        offset: *offset,
                        len: *len,
                    });
                }
                _ => return Err("rule slice takes two parameters: offset,len".into()),
            },
            "" => return Err("a rule needs a name".into()),
            n if n.len() > 255 => return Err("a rule name is at most 255 bytes".into()),
            n => Rule::Named(n.to_string()),
        };
        if !params.is_empty() {
            return Err(format!("rule {name} takes no parameters"));
        }
        Ok(rule)
    }

    /// The length of the derived bytes, from the parents' lengths (`None` for a named rule,
    /// whose output only running it tells).
    pub fn output_len(&self, parents: &[u64]) -> Option<u64> {
        let first = parents.first().copied().unwrap_or(0);
        Some(match self {
            Rule::Copy | Rule::Xor | Rule::AddU32 | Rule::MinU32 | Rule::MaxU32 => first,
            Rule::Concat => parents.iter().sum(),
            Rule::Slice { offset, len } => first.saturating_sub(*offset).min(*len),
            Rule::Crc32c => 4,
            Rule::Named(_) => return None,
        })
    }

    /// The derived bytes from the parents' bytes, in the parents' order, into `out`
    /// (cleared first).
    pub fn derive(&self, parents: &[&[u8]], out: &mut Vec<u8>) {
        self.derive_from(parents.len(), |k| parents[k], out)
    }

    /// [`Rule::derive`] with the `count` parents handed out by `parent(k)`, so that a caller
    /// holding them elsewhere (the pages of a state, by index) gathers nothing first.
    ///
    /// # Panics
    /// For [`Rule::Named`]: a named derivation runs through [`crate::propagate::Derivations`],
    /// which the engine consults before any page is derived.
    pub fn derive_from<'p>(&self, count: usize, parent: impl Fn(usize) -> &'p [u8], out: &mut Vec<u8>) {
        out.clear();
        let first = if count > 0 { parent(0) } else { &[] };
        // Generic over the word operation, so that it is inlined into a loop the compiler can
        // vectorize (through a function pointer it costs a call per word).
        fn words<'p>(out: &mut Vec<u8>, count: usize, parent: impl Fn(usize) -> &'p [u8], f: impl Fn(u32, u32) -> u32) {
            out.extend_from_slice(parent(0));
            for k in 1..count {
                let p = parent(k);
                let n = out.len().min(p.len()) / 4 * 4;
                for (o, q) in out[..n].chunks_exact_mut(4).zip(p[..n].chunks_exact(4)) {
                    let a = u32::from_le_bytes([o[0], o[1], o[2], o[3]]);
                    let b = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
                    o.copy_from_slice(&f(a, b).to_le_bytes());
                }
            }
        }
        match self {
            Rule::Copy => out.extend_from_slice(first),
            Rule::Xor => {
                out.extend_from_slice(first);
                for k in 1..count {
                    for (o, b) in out.iter_mut().zip(parent(k).iter()) {
                        *o ^= b;
                    }
                }
            }
            Rule::AddU32 if count > 0 => words(out, count, parent, u32::wrapping_add),
            Rule::MinU32 if count > 0 => words(out, count, parent, u32::min),
            Rule::MaxU32 if count > 0 => words(out, count, parent, u32::max),
            Rule::AddU32 | Rule::MinU32 | Rule::MaxU32 => {}
            Rule::Concat => (0..count).for_each(|k| out.extend_from_slice(parent(k))),
            Rule::Slice { offset, len } => {
                let start = (*offset).min(first.len() as u64) as usize;
                let end = offset.saturating_add(*len).min(first.len() as u64) as usize;
                out.extend_from_slice(&first[start..end]);
            }
            Rule::Crc32c => {
                let crc = (0..count).fold(0u32, |c, k| crc32c::crc32c_append(c, parent(k)));
                out.extend_from_slice(&crc.to_le_bytes());
            }
            Rule::Named(name) => {
                panic!("rule {name} is a named derivation: run it through the program that registered it")
            }
        }
    }
}

impl Rule {
    /// Derives the page's new bytes from its parents' straight over `page` (whose length is the
    /// rule's output length: [`Rule::output_len`]), and returns the range of bytes that changed
    /// (`None`: none did, so the propagation stops here). The word rules, copy and xor are
    /// computed, compared and written in one pass; the others go through `scratch`.
    ///
    /// # Panics
    /// For [`Rule::Named`] (see [`Rule::derive_from`]), and when `page` is not the rule's
    /// output length.
    pub fn derive_over(&self, parents: &[&[u8]], page: &mut [u8], scratch: &mut Vec<u8>) -> Option<(u64, u64)> {
        match (self, parents) {
            (Rule::AddU32, [a, b]) => over_words(page, a, b, u32::wrapping_add),
            // XOR is bytewise: words only where the two cover the same whole words.
            (Rule::Xor, [a, b]) if a.len() == b.len() && a.len() % 4 == 0 => over_words(page, a, b, |x, y| x ^ y),
            (Rule::MaxU32, [a, b]) => over_words(page, a, b, u32::max),
            (Rule::MinU32, [a, b]) => over_words(page, a, b, u32::min),
            (Rule::Copy, [a, ..]) => over_words(page, a, &[], |x, _| x),
            _ => {
                self.derive(parents, scratch);
                assert_eq!(scratch.len(), page.len(), "a derived page has its rule's output length");
                let (lo, hi) = changed_range(page, scratch)?;
                page[lo as usize..hi as usize].copy_from_slice(&scratch[lo as usize..hi as usize]);
                Some((lo, hi))
            }
        }
    }
}

/// `page = f(a, b)` word by word (little-endian u32; where `b` is shorter than a word or ends,
/// `a`'s bytes), compared and written in the same pass. Returns the changed range (aligned to
/// the 16-byte blocks it is computed in).
fn over_words(page: &mut [u8], a: &[u8], b: &[u8], f: impl Fn(u32, u32) -> u32) -> Option<(u64, u64)> {
    /// Bytes computed, compared and written at once: four words, which the compiler keeps in
    /// one vector register.
    const BLOCK: usize = 16;
    assert_eq!(a.len(), page.len(), "a derived page has its rule's output length");
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (mut lo, mut hi) = (usize::MAX, 0);
    let blocks = page.len().min(b.len()) / BLOCK;
    for (k, ((o, x), y)) in page
        .chunks_exact_mut(BLOCK)
        .zip(a.chunks_exact(BLOCK))
        .zip(b.chunks_exact(BLOCK))
        .take(blocks)
        .enumerate()
    {
        // As arrays, the lengths are known: no bounds checks, one vector operation.
        let o: &mut [u8; BLOCK] = o.try_into().expect("a block");
        let (x, y): (&[u8; BLOCK], &[u8; BLOCK]) = (x.try_into().expect("a block"), y.try_into().expect("a block"));
        let mut v = [0u8; BLOCK];
        for w in 0..BLOCK / 4 {
            let xw = u32::from_le_bytes([x[4 * w], x[4 * w + 1], x[4 * w + 2], x[4 * w + 3]]);
            let yw = u32::from_le_bytes([y[4 * w], y[4 * w + 1], y[4 * w + 2], y[4 * w + 3]]);
            v[4 * w..4 * w + 4].copy_from_slice(&f(xw, yw).to_le_bytes());
        }
        if *o != v {
            *o = v;
            lo = lo.min(k * BLOCK);
            hi = k * BLOCK + BLOCK;
        }
    }
    // The words after the last whole block, then the bytes after the last word `b` covers.
    let words_end = page.len().min(b.len()) / 4 * 4;
    for i in (blocks * BLOCK..words_end).step_by(4) {
        let v = f(word(a, i), word(b, i)).to_le_bytes();
        if page[i..i + 4] != v {
            page[i..i + 4].copy_from_slice(&v);
            lo = lo.min(i);
            hi = i + 4;
        }
    }
    let rest = words_end;
    // (Most pages are whole words: no call for an empty tail.)
    if rest < page.len()
        && let Some((l, h)) = changed_range(&page[rest..], &a[rest..])
    {
        page[rest + l as usize..rest + h as usize].copy_from_slice(&a[rest + l as usize..rest + h as usize]);
        lo = lo.min(rest + l as usize);
        hi = rest + h as usize;
    }
    (lo != usize::MAX).then_some((lo as u64, hi as u64))
}

/// The first and one-past-last bytes where `old` and `new` (of one length) differ.
pub(crate) fn changed_range(old: &[u8], new: &[u8]) -> Option<(u64, u64)> {
    if old == new {
        return None;
    }
    let lo = old.iter().zip(new).position(|(a, b)| a != b)?;
    let hi = old.len() - old.iter().rev().zip(new.iter().rev()).position(|(a, b)| a != b)?;
    Some((lo as u64, hi as u64))
}

/// One page in the graph.
#[derive(Debug, Clone)]
struct Node {
    id: u64,
    rule: Option<Rule>,
    parents: Vec<u32>,
    children: Vec<u32>,
    height: u32,
}

/// The dependency graph of a state's pages. Pages are numbered densely in the order they are
/// first named (their index); ids are the pages' own.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    index: HashMap<u64, u32>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The index of page `id`, adding it as a root (no rule, height 0) if it is new.
    pub fn add_page(&mut self, id: u64) -> u32 {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let i = u32::try_from(self.nodes.len()).expect("fewer than 2^32 pages");
        self.nodes.push(Node {
            id,
            rule: None,
            parents: Vec::new(),
            children: Vec::new(),
            height: 0,
        });
        self.index.insert(id, i);
        i
    }

    /// The index of page `id`, if the graph has it.
    pub fn index_of(&self, id: u64) -> Option<u32> {
        self.index.get(&id).copied()
    }

    /// The number of pages.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the graph has no page.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of the page at `index`.
    pub fn id(&self, index: u32) -> u64 {
        self.nodes[index as usize].id
    }

    /// The rule of the page at `index` (`None` for a root).
    pub fn rule(&self, index: u32) -> Option<&Rule> {
        self.nodes[index as usize].rule.as_ref()
    }

    /// The parents of the page at `index`, in order.
    pub fn parents(&self, index: u32) -> &[u32] {
        &self.nodes[index as usize].parents
    }

    /// The pages deriving from the page at `index`.
    pub fn children(&self, index: u32) -> &[u32] {
        &self.nodes[index as usize].children
    }

    /// The height of the page at `index`: 0 for a root, above every parent's for a derived
    /// page.
    pub fn height(&self, index: u32) -> u32 {
        self.nodes[index as usize].height
    }

    /// The greatest height in the graph.
    pub fn max_height(&self) -> u32 {
        self.nodes.iter().map(|n| n.height).max().unwrap_or(0)
    }

    /// Makes page `id` derive from `parents` (ids, in order) by `rule`, replacing any rule and
    /// parents it had; parents not yet in the graph are added as roots. Refused, with the graph
    /// unchanged, when it would close a cycle.
    pub fn set_rule(&mut self, id: u64, rule: Rule, parents: &[u64]) -> Result<(), GraphError> {
        if parents.is_empty() {
            return Err(GraphError::NoParents { page: id });
        }
        if parents.contains(&id) {
            return Err(GraphError::SelfParent { page: id });
        }
        if let Some(page) = self.index_of(id) {
            let known: Vec<u32> = parents.iter().filter_map(|p| self.index_of(*p)).collect();
            if let Some(path) = self.path_down(page, &known) {
                let mut cycle: Vec<u64> = path.iter().map(|&i| self.id(i)).collect();
                cycle.push(id);
                return Err(GraphError::Cycle { page: id, cycle });
            }
        }
        let page = self.add_page(id);
        let parents: Vec<u32> = parents.iter().map(|&p| self.add_page(p)).collect();
        self.link(page, parents);
        self.nodes[page as usize].rule = Some(rule);
        self.raise_from(page);
        Ok(())
    }

    /// Sets page `id`'s rule and parents at a known `height` (above every parent's), without the
    /// cycle check: for a graph whose heights were checked when read.
    pub(crate) fn set_rule_at_height(&mut self, id: u64, rule: Rule, parents: &[u64], height: u32) {
        let page = self.add_page(id);
        let parents: Vec<u32> = parents.iter().map(|&p| self.add_page(p)).collect();
        self.link(page, parents);
        let n = &mut self.nodes[page as usize];
        n.rule = Some(rule);
        n.height = n.height.max(height);
    }

    /// Makes page `id` a root again (no rule, no parents). Its height stays: heights only
    /// rise, and an order that was valid stays valid when edges go.
    pub fn clear_rule(&mut self, id: u64) {
        if let Some(page) = self.index_of(id) {
            self.unlink(page);
            let n = &mut self.nodes[page as usize];
            n.parents.clear();
            n.rule = None;
        }
    }

    /// Makes `parents` (in order, a parent named twice kept twice) the page's parents, and the
    /// page a child of each, once. No search of a parent's children: after `unlink` the page
    /// is in none of them, so a root with a million children is built in linear time.
    fn link(&mut self, page: u32, parents: Vec<u32>) {
        self.unlink(page);
        let mut distinct = parents.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for p in distinct {
            self.nodes[p as usize].children.push(page);
        }
        self.nodes[page as usize].parents = parents;
    }

    fn unlink(&mut self, page: u32) {
        let old = std::mem::take(&mut self.nodes[page as usize].parents);
        for p in old {
            self.nodes[p as usize].children.retain(|&c| c != page);
        }
    }

    /// A path from `from` down to any of `targets` following child edges (`from` first), if
    /// one exists. Iterative, so a chain a million pages deep is no deeper on the stack.
    fn path_down(&self, from: u32, targets: &[u32]) -> Option<Vec<u32>> {
        if targets.is_empty() {
            return None;
        }
        let mut came_from: HashMap<u32, u32> = HashMap::new();
        let mut stack = vec![from];
        came_from.insert(from, from);
        while let Some(i) = stack.pop() {
            if targets.contains(&i) {
                let mut path = vec![i];
                let mut at = i;
                while at != from {
                    at = came_from[&at];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            for &c in &self.nodes[i as usize].children {
                if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(c) {
                    e.insert(i);
                    stack.push(c);
                }
            }
        }
        None
    }

    /// Raises `page`'s height above its parents', then its descendants' above theirs, as far as
    /// the rise reaches (a worklist, not recursion).
    fn raise_from(&mut self, page: u32) {
        let mut work = vec![page];
        while let Some(i) = work.pop() {
            let need = self.nodes[i as usize]
                .parents
                .iter()
                .map(|&p| self.nodes[p as usize].height + 1)
                .max()
                .unwrap_or(0);
            if need > self.nodes[i as usize].height || i == page {
                self.nodes[i as usize].height = need.max(self.nodes[i as usize].height);
                work.extend(self.nodes[i as usize].children.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_rise_above_every_parent_and_a_cycle_is_refused_with_its_pages() {
        let mut g = Graph::new();
        g.set_rule(2, Rule::Copy, &[1]).unwrap();
        g.set_rule(3, Rule::Xor, &[1, 2]).unwrap();
        g.set_rule(4, Rule::Copy, &[3]).unwrap();
        let h = |g: &Graph, id| g.height(g.index_of(id).unwrap());
        assert_eq!([h(&g, 1), h(&g, 2), h(&g, 3), h(&g, 4)], [0, 1, 2, 3]);
        // Page 1 deriving from page 4 closes 1 -> 2 -> 3 -> 4 -> 1 (or through 3 directly).
        let e = g.set_rule(1, Rule::Copy, &[4]).unwrap_err();
        match &e {
            GraphError::Cycle { page: 1, cycle } => {
                assert_eq!((cycle.first(), cycle.last()), (Some(&1), Some(&1)));
                assert!(cycle.contains(&4) && cycle.contains(&3), "{cycle:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("page 1: these parents would close the cycle 1 -> "),
            "{e}"
        );
        assert_eq!(h(&g, 1), 0, "a refused change leaves the graph as it was");
        assert!(g.rule(g.index_of(1).unwrap()).is_none());
        assert_eq!(g.set_rule(5, Rule::Copy, &[5]), Err(GraphError::SelfParent { page: 5 }));
        // A new parent raises the page and everything below it.
        g.set_rule(0, Rule::Copy, &[]).unwrap_err();
        g.set_rule(1, Rule::Copy, &[9]).unwrap();
        assert_eq!([h(&g, 1), h(&g, 2), h(&g, 3), h(&g, 4)], [1, 2, 3, 4]);
        g.clear_rule(1);
        assert!(g.parents(g.index_of(1).unwrap()).is_empty());
        assert!(g.children(g.index_of(9).unwrap()).is_empty());
    }

    #[test]
    fn a_chain_a_million_pages_deep_is_built_and_checked_without_recursion() {
        let mut g = Graph::new();
        let n = 1_000_000u64;
        for i in 1..n {
            g.set_rule(i, Rule::Copy, &[i - 1]).unwrap();
        }
        assert_eq!(g.max_height(), (n - 1) as u32);
        assert!(matches!(
            g.set_rule(0, Rule::Copy, &[n - 1]),
            Err(GraphError::Cycle { .. })
        ));
    }

    proptest::proptest! {
        /// Deriving over the old page (the engine's one-pass path) gives what deriving afresh
        /// gives, and the range it reports covers every byte that changed and no byte outside.
        #[test]
        fn deriving_over_a_page_equals_deriving_afresh(
            rule in 0u8..8,
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            old_seed in proptest::prelude::any::<u8>(),
        ) {
            let rule = match rule {
                0 => Rule::Copy, 1 => Rule::Xor, 2 => Rule::AddU32, 3 => Rule::MinU32, 4 => Rule::MaxU32,
                5 => Rule::Concat, 6 => Rule::Slice { offset: 3, len: 9 }, _ => Rule::Crc32c,
            };
            let parents: [&[u8]; 2] = [&a, &b];
            let mut fresh = Vec::new();
            rule.derive(&parents, &mut fresh);
            let old: Vec<u8> = (0..fresh.len()).map(|i| (i as u8).wrapping_mul(old_seed)).collect();
            let mut page = old.clone();
            let changed = rule.derive_over(&parents, &mut page, &mut Vec::new());
            proptest::prop_assert_eq!(&page, &fresh);
            match changed {
                None => proptest::prop_assert_eq!(&old, &fresh),
                Some((lo, hi)) => {
                    proptest::prop_assert!(lo < hi && hi as usize <= page.len());
                    proptest::prop_assert_eq!(&old[..lo as usize], &page[..lo as usize]);
                    proptest::prop_assert_eq!(&old[hi as usize..], &page[hi as usize..]);
                }
            }
        }
    }

    proptest::proptest! {
        /// An edge from a page back to one of its ancestors is always refused, naming a cycle
        /// that runs through real edges, and leaves the graph as it was.
        #[test]
        fn a_cycle_is_always_refused_and_the_graph_left_as_it_was(
            n in 3u64..30,
            edges in proptest::collection::vec((0u64..30, 0u64..30), 1..80),
            pick in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut g = Graph::new();
            for (c, p) in &edges {
                let (c, p) = (c % n, p % n);
                if p < c {
                    let mut parents: Vec<u64> = g.index_of(c).map(|i| g.parents(i).iter().map(|&q| g.id(q)).collect()).unwrap_or_default();
                    parents.push(p);
                    g.set_rule(c, Rule::Xor, &parents).unwrap();
                }
            }
            // A derived page and one of its ancestors: making the ancestor derive from it
            // closes a cycle.
            let derived: Vec<u32> = (0..g.len() as u32).filter(|&i| g.rule(i).is_some()).collect();
            proptest::prop_assume!(!derived.is_empty());
            let page = derived[pick.index(derived.len())];
            let ancestor = g.parents(page)[0];
            let before = (g.to_derivations(), g.hash());
            let err = g.set_rule(g.id(ancestor), Rule::Copy, &[g.id(page)]).unwrap_err();
            let GraphError::Cycle { cycle, .. } = err else { panic!("{err:?}") };
            // From the ancestor down existing edges to the page, then the edge asked for.
            proptest::prop_assert_eq!(cycle.first(), Some(&g.id(ancestor)));
            proptest::prop_assert_eq!(cycle.last(), Some(&g.id(ancestor)));
            proptest::prop_assert_eq!(cycle[cycle.len() - 2], g.id(page));
            for w in cycle[..cycle.len() - 1].windows(2) {
                let (from, to) = (g.index_of(w[0]).unwrap(), g.index_of(w[1]).unwrap());
                proptest::prop_assert!(g.children(from).contains(&to), "{:?} is not an edge", w);
            }
            proptest::prop_assert_eq!((g.to_derivations(), g.hash()), before);
        }
    }

    #[test]
    fn a_root_with_a_hundred_thousand_children_and_a_chain_as_deep_propagate_in_linear_time() {
        let n = 100_000u64;
        let mut wide = Graph::new();
        for i in 1..=n {
            wide.set_rule(i, Rule::Copy, &[0]).unwrap();
        }
        let mut deep = Graph::new();
        for i in 1..=n {
            deep.set_rule(i, Rule::AddU32, &[i - 1]).unwrap();
        }
        for g in [wide, deep] {
            let pages = vec![vec![0u8; 4]; g.len()];
            let mut e = crate::propagate::Engine::new(&g, pages, usize::MAX).unwrap();
            e.submit(g.index_of(0).unwrap(), &[1, 0, 0, 0]).unwrap();
            let r = e.flush();
            assert_eq!((r.recomputed, r.settled), (n, true));
            assert_eq!(e.page(g.index_of(n).unwrap()), &[1, 0, 0, 0]);
        }
    }

    #[test]
    fn rules_derive_what_they_say() {
        let mut out = Vec::new();
        let a = [1u8, 0, 0, 0, 7];
        let b = [2u8, 0, 0, 0];
        Rule::Xor.derive(&[&a, &b], &mut out);
        assert_eq!(out, [3, 0, 0, 0, 7]);
        Rule::AddU32.derive(&[&[0xFF, 0xFF, 0xFF, 0xFF], &b], &mut out);
        assert_eq!(out, [1, 0, 0, 0], "wrapping");
        Rule::MaxU32.derive(&[&a, &b], &mut out);
        assert_eq!(out, [2, 0, 0, 0, 7]);
        Rule::MinU32.derive(&[&a, &b], &mut out);
        assert_eq!(out, [1, 0, 0, 0, 7]);
        Rule::Concat.derive(&[&a, &b], &mut out);
        assert_eq!(out.len(), 9);
        Rule::Slice { offset: 3, len: 10 }.derive(&[&a], &mut out);
        assert_eq!(out, [0, 7]);
        Rule::Crc32c.derive(&[&a, &b], &mut out);
        assert_eq!(out, crc32c::crc32c(&[&a[..], &b[..]].concat()).to_le_bytes());
        Rule::Copy.derive(&[&b], &mut out);
        assert_eq!(out, b);
    }
}
