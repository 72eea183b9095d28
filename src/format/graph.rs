//! The dependency graph on disk: the checkpoint's graph section (kind 3) and the log's graph
//! records (DERIVE, UNDERIVE, PROPAGATED). See docs/FORMAT.md, "Dependency graph (1.2)".
//!
//! Graph records are optional record types (128 and up), so a reader that does not know them
//! skips them and still reaches the same pages: the outputs of a propagation are ordinary delta
//! records. This module reads and writes the bytes; the derived-pages layer above gives them
//! meaning.

use super::{Cursor, ParseError, PutLe, bad_field};
use crate::error::{Corruption, Error, Result};

/// Record type: set a page's rule and parents.
pub const TYPE_DERIVE: u8 = 0x80;
/// Record type: make a page a root again (no rule, no parents).
pub const TYPE_UNDERIVE: u8 = 0x81;
/// Record type: a propagation ended here; it closes the group of its outputs.
pub const TYPE_PROPAGATED: u8 = 0x82;

/// True for a graph record type: known to this build, and changing no page.
pub fn is_graph_type(kind: u8) -> bool {
    (TYPE_DERIVE..=TYPE_PROPAGATED).contains(&kind)
}

/// Rule code: the first parent's bytes.
pub const RULE_COPY: u8 = 1;
/// Rule code: bytewise XOR of the parents.
pub const RULE_XOR: u8 = 2;
/// Rule code: wrapping sum of little-endian u32 words.
pub const RULE_ADD_U32: u8 = 3;
/// Rule code: minimum of u32 words.
pub const RULE_MIN_U32: u8 = 4;
/// Rule code: maximum of u32 words.
pub const RULE_MAX_U32: u8 = 5;
/// Rule code: the parents one after another.
pub const RULE_CONCAT: u8 = 6;
/// Rule code: `param1` bytes of the first parent from `param0`.
pub const RULE_SLICE: u8 = 7;
/// Rule code: CRC32C of the parents one after another.
pub const RULE_CRC32C: u8 = 8;
/// Rule code: a derivation registered by a program under the entry's name.
pub const RULE_NAMED: u8 = 255;

/// Most parents a derived page may have.
pub const MAX_PARENTS: u32 = 65_536;
/// Fixed bytes of a derivation body before its name and parents.
pub const BODY_FIXED_LEN: usize = 24;
/// Fixed bytes of a graph section entry before its body.
pub const ENTRY_PREFIX_LEN: usize = 16;

/// A rule as stored: its code, two parameters (for slice: offset and length; zero otherwise)
/// and a name (for a named derivation only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// `RULE_*`.
    pub code: u8,
    /// Parameters.
    pub params: [u64; 2],
    /// The name of a named derivation (empty otherwise).
    pub name: String,
}

/// A derived page as stored: its rule and ordered parents (and, in a checkpoint, its height).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// The derived page.
    pub page: u64,
    /// Its height (above every parent's; roots, which have no entry, are 0). Zero in records.
    pub height: u32,
    /// How it is derived.
    pub rule: StoredRule,
    /// Its parents, in order.
    pub parents: Vec<u64>,
}

/// A graph record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphRecord {
    /// Sets `derivation.page`'s rule and parents (replacing any).
    Derive(Derivation),
    /// Makes the page a root again.
    Underive {
        /// The page.
        page: u64,
    },
    /// A propagation saw the log through `through_seq` and wrote its outputs just before this
    /// record, in the same group.
    Propagated {
        /// The last sequence number the propagation took into account.
        through_seq: u64,
        /// Derived pages it recomputed.
        recomputed: u64,
        /// Of those, pages whose bytes changed (each has an output record in the group).
        changed: u64,
    },
}

impl GraphRecord {
    /// The record type byte.
    pub fn kind(&self) -> u8 {
        match self {
            GraphRecord::Derive(_) => TYPE_DERIVE,
            GraphRecord::Underive { .. } => TYPE_UNDERIVE,
            GraphRecord::Propagated { .. } => TYPE_PROPAGATED,
        }
    }

    /// Encodes the payload: the common prefix (page id, epoch 0, `timestamp_ns`, `source`), then
    /// the record's fields.
    pub fn encode(&self, timestamp_ns: u64, source: &str) -> Result<Vec<u8>> {
        let page = match self {
            GraphRecord::Derive(d) => d.page,
            GraphRecord::Underive { page } => *page,
            GraphRecord::Propagated { .. } => 0,
        };
        let mut b = Vec::new();
        super::record::encode_prefix(&mut b, page, 0, timestamp_ns, source)?;
        match self {
            GraphRecord::Derive(d) => encode_body(d, &mut b)?,
            GraphRecord::Underive { .. } => {}
            GraphRecord::Propagated {
                through_seq,
                recomputed,
                changed,
            } => {
                b.put_u64(*through_seq);
                b.put_u64(*recomputed);
                b.put_u64(*changed);
            }
        }
        Ok(b)
    }

    /// Decodes a payload of graph record type `kind` (`None` for another type); `base` is the
    /// payload's offset in its file.
    pub fn decode(kind: u8, payload: &[u8], base: u64) -> Result<Option<GraphRecord>, ParseError> {
        if !is_graph_type(kind) {
            return Ok(None);
        }
        let mut c = Cursor::new(payload, base);
        let (page, epoch, _, _) = super::record::decode_prefix(&mut c)?;
        if epoch != 0 {
            return Err(bad_field(
                base + 8,
                "epoch",
                epoch,
                "graph records do not change an epoch: zero",
            ));
        }
        let record = match kind {
            TYPE_DERIVE => GraphRecord::Derive(decode_body(&mut c, page, 0)?),
            TYPE_UNDERIVE => GraphRecord::Underive { page },
            _ => {
                if page != 0 {
                    return Err(bad_field(
                        base,
                        "page_id",
                        page,
                        "a PROPAGATED record names no page: zero",
                    ));
                }
                GraphRecord::Propagated {
                    through_seq: c.u64()?,
                    recomputed: c.u64()?,
                    changed: c.u64()?,
                }
            }
        };
        if !c.is_empty() {
            return Err(bad_field(
                c.offset(),
                "payload_len",
                payload.len() as u64,
                "bytes after the record's last field",
            ));
        }
        Ok(Some(record))
    }
}

/// The body shared by a section entry and a DERIVE record: `rule u8, name_len u8, reserved u16,
/// parent_count u32, param0 u64, param1 u64, name, parents (u64 each)`.
fn encode_body(d: &Derivation, b: &mut Vec<u8>) -> Result<()> {
    let invalid = |why: String| Err(Error::Invalid(format!("page {}: {why}", d.page)));
    if d.parents.is_empty() || d.parents.len() > MAX_PARENTS as usize {
        return invalid(format!("a derived page has 1 to {MAX_PARENTS} parents"));
    }
    if d.rule.name.len() > 255 || (d.rule.code == RULE_NAMED) == d.rule.name.is_empty() {
        return invalid("a named rule has a name of 1 to 255 bytes, and only it has one".into());
    }
    b.put_u8(d.rule.code);
    b.put_u8(d.rule.name.len() as u8);
    b.put_u16(0);
    b.put_u32(d.parents.len() as u32);
    b.put_u64(d.rule.params[0]);
    b.put_u64(d.rule.params[1]);
    b.extend_from_slice(d.rule.name.as_bytes());
    for p in &d.parents {
        b.put_u64(*p);
    }
    Ok(())
}

fn decode_body(c: &mut Cursor<'_>, page: u64, height: u32) -> Result<Derivation, ParseError> {
    let at = c.offset();
    let code = c.u8()?;
    let name_len = c.u8()?;
    c.zeros(2, "derivation reserved bytes")?;
    let count_at = c.offset();
    let parent_count = c.u32()?;
    let params = [c.u64()?, c.u64()?];
    let known = matches!(code, RULE_COPY..=RULE_CRC32C | RULE_NAMED);
    if !known {
        return Err(bad_field(at, "rule", code.into(), "not a rule code of this version"));
    }
    if code != RULE_SLICE && params != [0, 0] {
        return Err(bad_field(
            at + 8,
            "param0",
            params[0],
            "only the slice rule has parameters: zero",
        ));
    }
    if (code == RULE_NAMED) == (name_len == 0) {
        return Err(bad_field(
            at + 1,
            "name_len",
            name_len.into(),
            "a named rule (255) has a name, and no other rule has one",
        ));
    }
    let name_at = c.offset();
    let name = std::str::from_utf8(c.take(name_len.into())?)
        .map_err(|e| {
            ParseError::new(
                name_at,
                Corruption::BadText {
                    what: "rule name",
                    why: e.to_string(),
                },
            )
        })?
        .to_string();
    // Each parent takes 8 bytes: a count the bytes cannot hold is refused before anything is
    // allocated for it.
    if parent_count == 0 || parent_count > MAX_PARENTS || u64::from(parent_count) * 8 > c.remaining() as u64 {
        return Err(bad_field(
            count_at,
            "parent_count",
            parent_count.into(),
            format!("1 to {MAX_PARENTS}, and no more than the bytes left hold"),
        ));
    }
    let mut parents = Vec::with_capacity(parent_count as usize);
    for _ in 0..parent_count {
        let at = c.offset();
        let p = c.u64()?;
        if p == page {
            return Err(bad_field(at, "parent", p, "a page cannot derive from itself"));
        }
        parents.push(p);
    }
    Ok(Derivation {
        page,
        height,
        rule: StoredRule { code, params, name },
        parents,
    })
}

/// The derivations whose page and parents all exist (`exists`): what a checkpoint of a state
/// that lacks some pages (a replay of selected pages, say) can hold.
pub fn retain_present(graph: &[Derivation], exists: impl Fn(u64) -> bool) -> Vec<Derivation> {
    graph
        .iter()
        .filter(|d| std::iter::once(&d.page).chain(&d.parents).all(|&p| exists(p)))
        .cloned()
        .collect()
}

/// Encodes a graph section: `entry_count u64`, then per derived page (increasing id)
/// `page_id u64, height u32, reserved u32, body`.
pub fn encode_section(derivations: &[Derivation]) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    b.put_u64(derivations.len() as u64);
    for d in derivations {
        b.put_u64(d.page);
        b.put_u32(d.height);
        b.put_u32(0);
        encode_body(d, &mut b)?;
    }
    Ok(b)
}

/// Parses a graph section at file offset `base`, and checks it against the checkpoint's pages
/// (`page_len(id)`: `Some(len)` for a page of the index): ids strictly increasing, every page
/// and parent in the index, and every height above its parents' (roots are 0), which also
/// proves that the graph has no cycle.
pub fn parse_section(bytes: &[u8], base: u64, has_page: impl Fn(u64) -> bool) -> Result<Vec<Derivation>, ParseError> {
    let mut c = Cursor::new(bytes, base);
    let count = c.u64()?;
    let least_entry = (ENTRY_PREFIX_LEN + BODY_FIXED_LEN + 8) as u64;
    if count.saturating_mul(least_entry) > c.remaining() as u64 {
        return Err(bad_field(
            base,
            "entry_count",
            count,
            "the section is too short for that many entries",
        ));
    }
    let mut out: Vec<Derivation> = Vec::with_capacity(count as usize);
    let mut entry_at = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = c.offset();
        let page = c.u64()?;
        let height = c.u32()?;
        c.zeros(4, "graph entry reserved bytes")?;
        if let Some(prev) = out.last()
            && prev.page >= page
        {
            return Err(bad_field(
                at,
                "page_id",
                page,
                format!("entries in increasing page id: follows {}", prev.page),
            ));
        }
        if !has_page(page) {
            return Err(bad_field(at, "page_id", page, "no such page in the checkpoint"));
        }
        if height == 0 {
            return Err(bad_field(
                at + 8,
                "height",
                0,
                "a derived page is above its parents: at least 1",
            ));
        }
        out.push(decode_body(&mut c, page, height)?);
        entry_at.push(at);
    }
    if !c.is_empty() {
        return Err(bad_field(
            c.offset(),
            "section length",
            bytes.len() as u64,
            "bytes after the last entry",
        ));
    }
    let height_of = |id: u64| out.binary_search_by_key(&id, |d| d.page).map_or(0, |i| out[i].height);
    for (d, &at) in out.iter().zip(&entry_at) {
        for &p in &d.parents {
            if !has_page(p) {
                return Err(bad_field(
                    at,
                    "parent",
                    p,
                    format!("page {} derives from a page the checkpoint lacks", d.page),
                ));
            }
            if height_of(p) >= d.height {
                return Err(bad_field(
                    at + 8,
                    "height",
                    d.height.into(),
                    format!("page {} must be above its parent {p} (height {})", d.page, height_of(p)),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_of_7() -> Derivation {
        Derivation {
            page: 9,
            height: 1,
            rule: StoredRule {
                code: RULE_SLICE,
                params: [2, 3],
                name: String::new(),
            },
            parents: vec![7],
        }
    }

    #[test]
    fn a_derive_record_is_these_bytes() {
        let mut d = slice_of_7();
        d.height = 0;
        let payload = GraphRecord::Derive(d.clone()).encode(5, "t").unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[9, 0, 0, 0, 0, 0, 0, 0][..],  // page_id
            &[0; 8],                        // epoch: zero
            &[5, 0, 0, 0, 0, 0, 0, 0],      // timestamp_ns
            &[1, b't'],                     // source
            &[RULE_SLICE, 0, 0, 0],         // rule, name_len, reserved
            &[1, 0, 0, 0],                  // parent_count
            &[2, 0, 0, 0, 0, 0, 0, 0],      // param0: offset
            &[3, 0, 0, 0, 0, 0, 0, 0],      // param1: len
            &[7, 0, 0, 0, 0, 0, 0, 0],      // parent
        ]
        .concat();
        assert_eq!(payload, expected);
        assert_eq!(
            GraphRecord::decode(TYPE_DERIVE, &payload, 0),
            Ok(Some(GraphRecord::Derive(d)))
        );
        let marker = GraphRecord::Propagated {
            through_seq: 4,
            recomputed: 2,
            changed: 1,
        };
        let bytes = marker.encode(0, "").unwrap();
        assert_eq!(bytes.len(), 25 + 24);
        assert_eq!(GraphRecord::decode(TYPE_PROPAGATED, &bytes, 0), Ok(Some(marker)));
    }

    #[test]
    fn each_broken_field_is_named_with_its_offset() {
        let mut d = slice_of_7();
        d.height = 0;
        let good = GraphRecord::Derive(d).encode(0, "").unwrap();
        let field = |bytes: &[u8]| match GraphRecord::decode(TYPE_DERIVE, bytes, 100) {
            Err(ParseError {
                offset,
                problem: Corruption::BadField { field, .. },
            }) => (field, offset),
            other => panic!("{other:?}"),
        };
        let mut b = good.clone();
        b[25] = 9; // rule code
        assert_eq!(field(&b), ("rule", 125));
        let mut b = good.clone();
        b[29] = 2; // parent_count 2, the bytes hold 1
        assert_eq!(field(&b), ("parent_count", 129));
        let mut b = good.clone();
        b[25] = RULE_COPY; // copy with slice parameters
        assert_eq!(field(&b), ("param0", 133));
        let mut b = good.clone();
        b[49] = 9; // parent 9 = the page itself
        assert_eq!(field(&b), ("parent", 149));
        let mut b = good;
        b[8] = 1; // an epoch
        assert_eq!(field(&b), ("epoch", 108));
    }

    #[test]
    fn a_section_checks_order_pages_and_heights() {
        let d = slice_of_7();
        let bytes = encode_section(std::slice::from_ref(&d)).unwrap();
        assert_eq!(bytes.len(), 8 + ENTRY_PREFIX_LEN + BODY_FIXED_LEN + 8);
        assert_eq!(parse_section(&bytes, 0, |_| true).unwrap(), vec![d.clone()]);
        let err = parse_section(&bytes, 4096, |id| id != 7).unwrap_err();
        assert!(
            matches!(
                err.problem,
                Corruption::BadField {
                    field: "parent",
                    value: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        // Page 7 derived at height 1 too: 9 is not above it (nor could a cycle be).
        let mut e = d.clone();
        e.page = 7;
        e.parents = vec![9];
        let bytes = encode_section(&[e, d]).unwrap();
        let err = parse_section(&bytes, 0, |_| true).unwrap_err();
        assert!(
            matches!(err.problem, Corruption::BadField { field: "height", .. }),
            "{err:?}"
        );
        let err = parse_section(&[0xFF; 8], 0, |_| true).unwrap_err();
        assert!(
            matches!(
                err.problem,
                Corruption::BadField {
                    field: "entry_count",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
