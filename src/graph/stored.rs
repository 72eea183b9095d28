//! The graph as the format stores it: rules to and from their codes, a graph from a
//! checkpoint's section and back, and graph records read off a log.

use super::{Graph, Rule};
use crate::error::Result;
use crate::format::graph::*;
use crate::format::log::LogRecord;

impl Rule {
    /// The rule as stored.
    pub fn to_stored(&self) -> StoredRule {
        let (code, params, name) = match self {
            Rule::Copy => (RULE_COPY, [0, 0], ""),
            Rule::Xor => (RULE_XOR, [0, 0], ""),
            Rule::AddU32 => (RULE_ADD_U32, [0, 0], ""),
            Rule::MinU32 => (RULE_MIN_U32, [0, 0], ""),
            Rule::MaxU32 => (RULE_MAX_U32, [0, 0], ""),
            Rule::Concat => (RULE_CONCAT, [0, 0], ""),
            Rule::Slice { offset, len } => (RULE_SLICE, [*offset, *len], ""),
            Rule::Crc32c => (RULE_CRC32C, [0, 0], ""),
            Rule::Named(n) => (RULE_NAMED, [0, 0], n.as_str()),
        };
        StoredRule {
            code,
            params,
            name: name.to_string(),
        }
    }

    /// The rule a stored one names (its code checked by the reader that decoded it).
    pub fn from_stored(s: &StoredRule) -> Rule {
        match s.code {
            RULE_COPY => Rule::Copy,
            RULE_XOR => Rule::Xor,
            RULE_ADD_U32 => Rule::AddU32,
            RULE_MIN_U32 => Rule::MinU32,
            RULE_MAX_U32 => Rule::MaxU32,
            RULE_CONCAT => Rule::Concat,
            RULE_SLICE => Rule::Slice {
                offset: s.params[0],
                len: s.params[1],
            },
            RULE_CRC32C => Rule::Crc32c,
            _ => Rule::Named(s.name.clone()),
        }
    }

    /// The rule as `inspect` and `explain` print it (`slice(2,8)` with its parameters).
    pub fn display(&self) -> String {
        match self {
            Rule::Slice { offset, len } => format!("slice({offset},{len})"),
            r => r.name().to_string(),
        }
    }
}

/// The graph record a log record carries (`None` for any other record).
pub fn decode_record(rec: &LogRecord<'_>) -> Result<Option<GraphRecord>> {
    if !is_graph_type(rec.frame.kind) {
        return Ok(None);
    }
    GraphRecord::decode(rec.frame.kind, rec.payload()?, rec.frame.payload_offset())
        .map_err(|e| e.at(rec.segment.path()))
}

impl Graph {
    /// The graph of a checkpoint's section: its derived pages at their stored heights (the
    /// reader checked that each is above its parents, so no cycle check is needed) and their
    /// parents. Pages with no edge are not in it (a state of a million pages and no graph
    /// costs nothing here).
    pub fn from_section(derivations: &[Derivation]) -> Graph {
        let mut g = Graph::new();
        for d in derivations {
            g.set_rule_at_height(d.page, Rule::from_stored(&d.rule), &d.parents, d.height);
        }
        g
    }

    /// The derived pages as a checkpoint section stores them: increasing id, heights set.
    pub fn to_derivations(&self) -> Vec<Derivation> {
        let mut out: Vec<Derivation> = (0..self.len() as u32)
            .filter_map(|i| {
                let rule = self.rule(i)?;
                Some(Derivation {
                    page: self.id(i),
                    height: self.height(i),
                    rule: rule.to_stored(),
                    parents: self.parents(i).iter().map(|&p| self.id(p)).collect(),
                })
            })
            .collect();
        out.sort_unstable_by_key(|d| d.page);
        out
    }

    /// A hash naming the graph: BLAKE3 over its derived pages (id, rule, parents, in increasing
    /// id; heights, which follow from the edges, left out). Equal graphs have equal hashes,
    /// whatever order their edges were set in.
    pub fn hash(&self) -> [u8; 32] {
        let mut derivations = self.to_derivations();
        for d in &mut derivations {
            d.height = 0;
        }
        let bytes = encode_section(&derivations).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

/// The shape of a graph, as `inspect` reports it (over the pages that have an edge).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GraphStats {
    /// Derived pages.
    pub derived_pages: u64,
    /// Edges (parent links).
    pub edges: u64,
    /// Pages with children and no parents.
    pub roots: u64,
    /// Derived pages with no children.
    pub leaves: u64,
    /// The greatest height of a derived page (the longest chain of derivations).
    pub depth: u32,
    /// The height with the most derived pages, and how many.
    pub widest_level: (u32, u64),
    /// [`Graph::hash`], in hex.
    pub graph_hash: String,
}

impl Graph {
    /// The graph's shape.
    pub fn stats(&self) -> GraphStats {
        let n = self.len() as u32;
        let derived: Vec<u32> = (0..n).filter(|&i| self.rule(i).is_some()).collect();
        let mut per_level: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for &i in &derived {
            *per_level.entry(self.height(i)).or_default() += 1;
        }
        let widest_level = per_level
            .iter()
            .max_by_key(|(h, c)| (**c, std::cmp::Reverse(**h)))
            .map_or((0, 0), |(h, c)| (*h, *c));
        GraphStats {
            derived_pages: derived.len() as u64,
            edges: derived.iter().map(|&i| self.parents(i).len() as u64).sum(),
            roots: (0..n)
                .filter(|&i| self.rule(i).is_none() && !self.children(i).is_empty())
                .count() as u64,
            leaves: derived.iter().filter(|&&i| self.children(i).is_empty()).count() as u64,
            depth: derived.iter().map(|&i| self.height(i)).max().unwrap_or(0),
            widest_level,
            graph_hash: self.hash().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The graph in Graphviz's dot language: an edge per parent link (parent -> derived page),
    /// each derived page labelled with its id and rule, pages without edges left out.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph mmsb {\n  rankdir=LR;\n");
        for i in 0..self.len() as u32 {
            if let Some(rule) = self.rule(i) {
                s.push_str(&format!(
                    "  \"{}\" [label=\"{}\\n{}\"];\n",
                    self.id(i),
                    self.id(i),
                    rule.display()
                ));
                for &p in self.parents(i) {
                    s.push_str(&format!("  \"{}\" -> \"{}\";\n", self.id(p), self.id(i)));
                }
            }
        }
        s.push_str("}\n");
        s
    }
}
