//! Log record payloads: page create, delete, resize, and the three write deltas (full-page,
//! sparse ranges, masked). See docs/FORMAT.md, "Record payloads".

use std::borrow::Cow;

use super::checkpoint::{PageEntry, decode_entry, encode_entry};
use super::{Cursor, ParseError, PutLe, bad_field};
use crate::error::{Corruption, Error, Rejection, Result};
use crate::page::PageMeta;

/// Record type: create a zero-filled page.
pub const TYPE_CREATE: u8 = 1;
/// Record type: delete a page.
pub const TYPE_DELETE: u8 = 2;
/// Record type: truncate or zero-extend a page.
pub const TYPE_RESIZE: u8 = 3;
/// Record type: replace all of a page's bytes.
pub const TYPE_FULL: u8 = 4;
/// Record type: write byte ranges.
pub const TYPE_SPARSE: u8 = 5;
/// Record type: write the bytes of a range whose mask bit is set.
pub const TYPE_MASKED: u8 = 6;
/// Record type: set a range of bytes to one value.
pub const TYPE_FILL: u8 = 7;
/// Record types from this value up are optional: readers that do not know one skip it.
pub const OPTIONAL_TYPE_MIN: u8 = 0x80;
/// Largest page length a CREATE or RESIZE record may ask for (1 TiB).
pub const MAX_PAGE_LEN: u64 = 1 << 40;
/// Longest source tag, in bytes.
pub const MAX_SOURCE_LEN: usize = 255;

/// The name of a record type, as `inspect` prints it.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        TYPE_CREATE => "create",
        TYPE_DELETE => "delete",
        TYPE_RESIZE => "resize",
        TYPE_FULL => "full",
        TYPE_SPARSE => "sparse",
        TYPE_MASKED => "masked",
        TYPE_FILL => "fill",
        super::graph::TYPE_DERIVE => "derive",
        super::graph::TYPE_UNDERIVE => "underive",
        super::graph::TYPE_PROPAGATED => "propagated",
        super::base::TYPE_BASE => "base",
        k if k >= OPTIONAL_TYPE_MIN => "optional",
        _ => "unknown",
    }
}

/// True for the optional record types this build knows that change no page: the graph records
/// and BASE. A replay passes over them (they are not "unknown").
pub fn changes_no_page(kind: u8) -> bool {
    super::graph::is_graph_type(kind) || kind == super::base::TYPE_BASE
}

/// What a reader knows of the page a record targets, to bound the record's payload before it is
/// decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPage {
    /// Nothing (a reader of the log alone).
    Unknown,
    /// There is no such page.
    Missing,
    /// The page exists with this length.
    Len(u64),
}

/// What a reader of a log alone knows of its pages' lengths: those its CREATE, RESIZE and
/// DELETE records set. Enough to bound the payloads of records for pages the log created.
#[derive(Debug, Default)]
pub struct LogPageLens {
    /// `None`: deleted by the log.
    lens: std::collections::HashMap<u64, Option<u64>>,
}

impl LogPageLens {
    /// What is known of page `id` after the records noted so far.
    pub fn target(&self, id: u64) -> TargetPage {
        match self.lens.get(&id) {
            Some(Some(len)) => TargetPage::Len(*len),
            Some(None) => TargetPage::Missing,
            None => TargetPage::Unknown,
        }
    }

    /// Notes the effect of one more record on its page's length.
    pub fn note(&mut self, d: &Delta<'_>) {
        match d.op {
            Op::Create { len, .. } | Op::Resize { len } => {
                self.lens.insert(d.page_id, Some(len));
            }
            Op::Delete => {
                self.lens.insert(d.page_id, None);
            }
            _ => {}
        }
    }
}

/// The most payload bytes (after decompression, `head_len` of them the common head) a record
/// of type `kind` can carry and still apply to `page`. `None` where the format sets no bound
/// below its own: a CREATE (its page does not exist yet), a SPARSE record (its ranges may
/// overlap), optional types, and a page of unknown length.
pub fn max_payload_len(kind: u8, head_len: u64, page: TargetPage) -> Option<u64> {
    let body = match (kind, page) {
        (TYPE_CREATE | TYPE_SPARSE, _) | (_, TargetPage::Unknown) => return None,
        (k, _) if k >= OPTIONAL_TYPE_MIN => return None,
        // A record for a page that does not exist is refused anyway: the largest fixed body.
        (_, TargetPage::Missing) => 17,
        (TYPE_DELETE, _) => 0,
        (TYPE_RESIZE, _) => 8,
        (TYPE_FILL, _) => 17,
        (TYPE_FULL, TargetPage::Len(len)) => len,
        (TYPE_MASKED, TargetPage::Len(len)) => 16u64.saturating_add(len.div_ceil(8)).saturating_add(len),
        _ => return None,
    };
    Some(head_len.saturating_add(body))
}

/// Appends the prefix every record payload starts with: page id, epoch, timestamp, source tag.
pub(crate) fn encode_prefix(b: &mut Vec<u8>, page_id: u64, epoch: u64, timestamp_ns: u64, source: &str) -> Result<()> {
    if source.len() > MAX_SOURCE_LEN {
        return Err(Error::Invalid(format!("source tag longer than {MAX_SOURCE_LEN} bytes")));
    }
    b.put_u64(page_id);
    b.put_u64(epoch);
    b.put_u64(timestamp_ns);
    b.put_u8(source.len() as u8);
    b.extend_from_slice(source.as_bytes());
    Ok(())
}

/// Reads the prefix every record payload starts with: page id, epoch, timestamp, source tag.
pub(crate) fn decode_prefix<'a>(c: &mut Cursor<'a>) -> Result<(u64, u64, u64, &'a str), ParseError> {
    let page_id = c.u64()?;
    let epoch = c.u64()?;
    let timestamp_ns = c.u64()?;
    let source_len = c.u8()?;
    let at = c.offset();
    let source = std::str::from_utf8(c.take(source_len.into())?).map_err(|e| {
        ParseError::new(
            at,
            Corruption::BadText {
                what: "source tag",
                why: e.to_string(),
            },
        )
    })?;
    Ok((page_id, epoch, timestamp_ns, source))
}

/// What a delta does to its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// Create a page of `len` zero bytes.
    Create {
        /// Length in bytes.
        len: u64,
        /// Name, tensor info, residency.
        meta: PageMeta,
    },
    /// Delete the page.
    Delete,
    /// Truncate or zero-extend the page to `len` bytes.
    Resize {
        /// New length.
        len: u64,
    },
    /// Replace all bytes (`data.len()` equals the page length).
    Full(&'a [u8]),
    /// Write each `(offset, bytes)` in order; later ranges win where they overlap.
    Sparse(Vec<(u64, &'a [u8])>),
    /// For `i` in `0..len`, if bit `i % 8` of `mask[i / 8]` is set, byte `offset + i` takes the
    /// next byte of `values` (so `values.len()` is the number of set bits).
    Masked {
        /// First byte of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// `ceil(len / 8)` bytes, least significant bit first.
        mask: &'a [u8],
        /// The replacement bytes, in order.
        values: &'a [u8],
    },
    /// Set `len` bytes from `offset` to `value` (run-length form).
    Fill {
        /// First byte of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The byte they all take.
        value: u8,
    },
}

/// One log record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta<'a> {
    /// The page it applies to.
    pub page_id: u64,
    /// The epoch the page has after it.
    pub epoch: u64,
    /// Nanoseconds since the Unix epoch, as the writer stamped it.
    pub timestamp_ns: u64,
    /// Who wrote it (free text, at most 255 bytes of UTF-8).
    pub source: Cow<'a, str>,
    /// What it does.
    pub op: Op<'a>,
}

/// The shape of a page a delta is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageShape {
    /// Length in bytes.
    pub len: u64,
    /// Current epoch.
    pub epoch: u64,
}

impl<'a> Delta<'a> {
    /// The record type byte of this delta.
    pub fn kind(&self) -> u8 {
        match self.op {
            Op::Create { .. } => TYPE_CREATE,
            Op::Delete => TYPE_DELETE,
            Op::Resize { .. } => TYPE_RESIZE,
            Op::Full(_) => TYPE_FULL,
            Op::Sparse(_) => TYPE_SPARSE,
            Op::Masked { .. } => TYPE_MASKED,
            Op::Fill { .. } => TYPE_FILL,
        }
    }

    /// Bytes this delta writes into pages (0 for create, delete and resize).
    pub fn written_bytes(&self) -> u64 {
        match &self.op {
            Op::Full(d) => d.len() as u64,
            Op::Sparse(r) => r.iter().map(|(_, d)| d.len() as u64).sum(),
            Op::Masked { values, .. } => values.len() as u64,
            Op::Fill { len, .. } => *len,
            _ => 0,
        }
    }

    /// Checks that the delta applies to a page of this shape (`None`: no such page), and
    /// returns the shape the page has afterwards (`None`: deleted).
    pub fn check(&self, page: Option<PageShape>) -> Result<Option<PageShape>, Rejection> {
        let id = self.page_id;
        let Some(p) = page else {
            return match &self.op {
                Op::Create { len, .. } => Ok(Some(PageShape {
                    len: *len,
                    epoch: self.epoch,
                })),
                _ => Err(Rejection::NoPage { page: id }),
            };
        };
        if let Op::Create { .. } = self.op {
            return Err(Rejection::PageExists { page: id });
        }
        if self.epoch <= p.epoch {
            return Err(Rejection::EpochNotAdvanced {
                page: id,
                epoch: self.epoch,
                page_epoch: p.epoch,
            });
        }
        let in_bounds = |off: u64, n: u64| off.checked_add(n).is_some_and(|e| e <= p.len);
        let out_of_page = |range, offset, len| Rejection::OutOfPage {
            range,
            page: id,
            offset,
            len,
            page_len: Some(p.len),
        };
        let len = match &self.op {
            Op::Create { .. } => unreachable!("handled above"),
            Op::Delete => return Ok(None),
            Op::Resize { len } => *len,
            Op::Full(d) if d.len() as u64 != p.len => {
                return Err(Rejection::FullLength {
                    page: id,
                    bytes: d.len() as u64,
                    page_len: p.len,
                });
            }
            Op::Sparse(ranges) => {
                if let Some((off, d)) = ranges.iter().find(|(off, d)| !in_bounds(*off, d.len() as u64)) {
                    return Err(out_of_page("range", *off, d.len() as u64));
                }
                p.len
            }
            Op::Masked { offset, len, .. } if !in_bounds(*offset, *len) => {
                return Err(out_of_page("masked range", *offset, *len));
            }
            Op::Fill { offset, len, .. } if !in_bounds(*offset, *len) => {
                return Err(out_of_page("fill range", *offset, *len));
            }
            _ => p.len,
        };
        Ok(Some(PageShape { len, epoch: self.epoch }))
    }

    /// Encodes the payload (before any compression).
    pub fn encode(&self) -> Result<Vec<u8>> {
        // Sized by the bytes the payload carries: a FILL writes `len` bytes but carries 17.
        let carried = match &self.op {
            Op::Full(d) => d.len(),
            Op::Sparse(r) => r.iter().map(|(_, d)| 16 + d.len()).sum(),
            Op::Masked { mask, values, .. } => mask.len() + values.len(),
            _ => 0,
        };
        let mut b = Vec::with_capacity(64 + self.source.len() + carried);
        encode_prefix(&mut b, self.page_id, self.epoch, self.timestamp_ns, &self.source)?;
        match &self.op {
            Op::Create { len, meta } => {
                if *len > MAX_PAGE_LEN {
                    return Err(Error::Invalid(format!("page length {len} above the 1 TiB limit")));
                }
                let entry = PageEntry {
                    id: self.page_id,
                    offset: 0,
                    len: *len,
                    epoch: self.epoch,
                    crc32c: 0,
                    meta: meta.clone(),
                };
                let (mut e, mut heap) = (Vec::new(), Vec::new());
                encode_entry(&entry, &mut e, &mut heap)?;
                b.put_u64(heap.len() as u64);
                b.extend_from_slice(&e);
                b.extend_from_slice(&heap);
            }
            Op::Delete => {}
            Op::Resize { len } => {
                if *len > MAX_PAGE_LEN {
                    return Err(Error::Invalid(format!("page length {len} above the 1 TiB limit")));
                }
                b.put_u64(*len)
            }
            Op::Full(d) => b.extend_from_slice(d),
            Op::Sparse(ranges) => {
                b.put_u32(u32::try_from(ranges.len()).map_err(|_| Error::Invalid("too many ranges".into()))?);
                for (off, d) in ranges {
                    b.put_u64(*off);
                    b.put_u64(d.len() as u64);
                }
                for (_, d) in ranges {
                    b.extend_from_slice(d);
                }
            }
            Op::Masked {
                offset,
                len,
                mask,
                values,
            } => {
                let set = popcount(mask);
                if mask.len() as u64 != len.div_ceil(8) || set != values.len() as u64 || trailing_bits(mask, *len) != 0
                {
                    return Err(Error::Invalid("masked delta: mask and values disagree".into()));
                }
                b.put_u64(*offset);
                b.put_u64(*len);
                b.extend_from_slice(mask);
                b.extend_from_slice(values);
            }
            Op::Fill { offset, len, value } => {
                b.put_u64(*offset);
                b.put_u64(*len);
                b.put_u8(*value);
            }
        }
        Ok(b)
    }

    /// Decodes a payload of record type `kind`; `base` is the payload's offset in its file
    /// (for error offsets; for a compressed payload, the offset of the compressed bytes).
    pub fn decode(kind: u8, payload: &'a [u8], base: u64) -> Result<Delta<'a>, ParseError> {
        let mut c = Cursor::new(payload, base);
        let (page_id, epoch, timestamp_ns, source) = decode_prefix(&mut c)?;
        let op = match kind {
            TYPE_CREATE => {
                let heap_len = c.u64()?;
                let mut entry_c = c.clone();
                c.take(super::checkpoint::INDEX_ENTRY_LEN as u64)?;
                let heap_base = c.offset();
                let heap = c.take(heap_len)?;
                let e = decode_entry(&mut entry_c, heap, heap_base, false)?;
                if e.id != page_id || e.epoch != epoch {
                    return Err(bad_field(
                        heap_base - 64,
                        "entry id/epoch",
                        e.id,
                        "must equal the record's page id and epoch",
                    ));
                }
                if e.len > MAX_PAGE_LEN {
                    return Err(bad_field(heap_base - 48, "len", e.len, "above the 1 TiB page limit"));
                }
                Op::Create {
                    len: e.len,
                    meta: e.meta,
                }
            }
            TYPE_DELETE => Op::Delete,
            TYPE_RESIZE => {
                let at = c.offset();
                let len = c.u64()?;
                if len > MAX_PAGE_LEN {
                    return Err(bad_field(at, "len", len, "above the 1 TiB page limit"));
                }
                Op::Resize { len }
            }
            TYPE_FULL => Op::Full(c.take(c.remaining() as u64)?),
            TYPE_SPARSE => {
                let at = c.offset();
                let n = c.u32()?;
                // Each range takes 16 bytes of table: a count the payload cannot hold is refused
                // before anything is allocated for it.
                if u64::from(n) * 16 > c.remaining() as u64 {
                    return Err(bad_field(
                        at,
                        "range_count",
                        n.into(),
                        "the payload is too short for that many ranges",
                    ));
                }
                // The table is read through a second cursor while `c` takes the data after
                // it: one allocation per record, not two (records are decoded by the million).
                let mut table = c.clone();
                c.take(u64::from(n) * 16)?;
                let mut ranges = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (off, len) = (table.u64()?, table.u64()?);
                    ranges.push((off, c.take(len)?));
                }
                Op::Sparse(ranges)
            }
            TYPE_MASKED => {
                let offset = c.u64()?;
                let at = c.offset();
                let len = c.u64()?;
                let mask = c.take(len.div_ceil(8))?;
                if trailing_bits(mask, len) != 0 {
                    return Err(bad_field(
                        at,
                        "mask",
                        len,
                        "mask bits past the range's length must be zero",
                    ));
                }
                let values = c.take(popcount(mask))?;
                Op::Masked {
                    offset,
                    len,
                    mask,
                    values,
                }
            }
            TYPE_FILL => {
                let offset = c.u64()?;
                let len = c.u64()?;
                let value = c.u8()?;
                Op::Fill { offset, len, value }
            }
            other => return Err(ParseError::new(base, Corruption::UnknownRecordType { kind: other })),
        };
        if !c.is_empty() {
            return Err(bad_field(
                c.offset(),
                "payload length",
                payload.len() as u64,
                format!("{} bytes left over after the record's fields", c.remaining()),
            ));
        }
        Ok(Delta {
            page_id,
            epoch,
            timestamp_ns,
            source: Cow::Borrowed(source),
            op,
        })
    }
}

fn popcount(mask: &[u8]) -> u64 {
    mask.iter().map(|b| u64::from(b.count_ones())).sum()
}

/// The mask bits at positions `len..` of the last mask byte.
fn trailing_bits(mask: &[u8], len: u64) -> u8 {
    let used = (len % 8) as u32;
    match (mask.last(), used) {
        (Some(&last), 1..=7) => last & !((1u8 << used) - 1),
        _ => 0,
    }
}

/// Applies a delta's writes to a page's bytes (the delta must have passed [`Delta::check`]).
/// Create, delete and resize change the page itself and are applied by the replay.
pub fn apply_writes(op: &Op<'_>, page: &mut [u8]) {
    match op {
        Op::Full(d) => page.copy_from_slice(d),
        Op::Sparse(ranges) => {
            for (off, d) in ranges {
                page[*off as usize..*off as usize + d.len()].copy_from_slice(d);
            }
        }
        Op::Masked {
            offset,
            len,
            mask,
            values,
        } => {
            let target = &mut page[*offset as usize..(*offset + *len) as usize];
            let mut v = values.iter();
            for (i, &m) in mask.iter().enumerate() {
                let mut bits = m;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    target[i * 8 + b] = *v.next().expect("checked: one value per set bit");
                    bits &= bits - 1;
                }
            }
        }
        Op::Fill { offset, len, value } => page[*offset as usize..(*offset + *len) as usize].fill(*value),
        Op::Create { .. } | Op::Delete | Op::Resize { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{Residency, TensorInfo};

    fn delta(op: Op<'_>) -> Delta<'_> {
        Delta {
            page_id: 7,
            epoch: 3,
            timestamp_ns: 99,
            source: "trainer".into(),
            op,
        }
    }

    #[test]
    fn every_op_round_trips() {
        let meta = PageMeta {
            name: Some("emb".into()),
            tensor: Some(TensorInfo {
                dtype: "BF16".into(),
                shape: vec![4, 2],
            }),
            residency: Residency::Unified,
        };
        let data = [1u8, 2, 3, 4, 5];
        for op in [
            Op::Create { len: 16, meta },
            Op::Delete,
            Op::Resize { len: 1 << 20 },
            Op::Full(&data),
            Op::Sparse(vec![(0, &data[..2]), (10, &data[2..])]),
            Op::Masked {
                offset: 2,
                len: 10,
                mask: &[0b1000_0101, 0b10],
                values: &data[..4],
            },
            Op::Fill {
                offset: 3,
                len: 1 << 30,
                value: 0xAB,
            },
        ] {
            let d = delta(op);
            let bytes = d.encode().unwrap();
            assert_eq!(Delta::decode(d.kind(), &bytes, 0).unwrap(), d);
        }
    }

    #[test]
    fn a_fill_record_is_seventeen_bytes_after_the_common_fields() {
        let d = delta(Op::Fill {
            offset: 2,
            len: 3,
            value: 9,
        });
        let b = d.encode().unwrap();
        let common = 8 + 8 + 8 + 1 + "trainer".len();
        assert_eq!(&b[common..], &[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9]);
        let mut page = *b"abcdefg";
        apply_writes(&d.op, &mut page);
        assert_eq!(&page, b"ab\t\t\tfg");
        assert!(
            d.check(Some(PageShape { len: 4, epoch: 0 })).is_err(),
            "2+3 is past a 4-byte page"
        );
        assert!(Delta::decode(TYPE_FILL, &b[..b.len() - 1], 0).is_err(), "value missing");
    }

    #[test]
    fn sparse_count_larger_than_the_payload_is_refused_before_allocating() {
        let mut b = delta(Op::Delete).encode().unwrap();
        b.put_u32(u32::MAX);
        let e = Delta::decode(TYPE_SPARSE, &b, 1000).unwrap_err();
        assert_eq!(e.offset, 1000 + 25 + 7);
        assert!(matches!(
            e.problem,
            Corruption::BadField {
                field: "range_count",
                ..
            }
        ));
    }

    #[test]
    fn masked_trailing_bits_and_leftover_bytes_are_refused() {
        let mut b = delta(Op::Delete).encode().unwrap();
        b.put_u64(0);
        b.put_u64(3);
        b.put_u8(0b1000); // bit 3 of a 3-byte range
        assert!(matches!(
            Delta::decode(TYPE_MASKED, &b, 0).unwrap_err().problem,
            Corruption::BadField { field: "mask", .. }
        ));
        let mut b = delta(Op::Resize { len: 5 }).encode().unwrap();
        b.push(0);
        assert!(matches!(
            Delta::decode(TYPE_RESIZE, &b, 0).unwrap_err().problem,
            Corruption::BadField {
                field: "payload length",
                ..
            }
        ));
    }

    #[test]
    fn resize_beyond_one_tib_is_refused() {
        let mut b = delta(Op::Delete).encode().unwrap();
        b.put_u64(MAX_PAGE_LEN + 1);
        assert!(Delta::decode(TYPE_RESIZE, &b, 0).is_err());
    }

    #[test]
    fn check_enforces_existence_bounds_and_epochs() {
        let p = Some(PageShape { len: 8, epoch: 2 });
        assert!(delta(Op::Full(&[0; 8])).check(p).is_ok());
        let full = delta(Op::Full(&[0; 7])).check(p).unwrap_err();
        assert_eq!(
            full,
            Rejection::FullLength {
                page: 7,
                bytes: 7,
                page_len: 8
            }
        );
        assert_eq!(full.to_string(), "full write of 7 bytes to page 7 of 8 bytes");
        let range = delta(Op::Sparse(vec![(7, &[1, 2])])).check(p).unwrap_err();
        assert_eq!(range.to_string(), "range 7+2 past the end of page 7 (8 bytes)");
        assert!(matches!(
            delta(Op::Sparse(vec![(u64::MAX, &[1])])).check(p),
            Err(Rejection::OutOfPage { .. })
        ));
        assert_eq!(delta(Op::Delete).check(None), Err(Rejection::NoPage { page: 7 }));
        assert_eq!(
            delta(Op::Create {
                len: 1,
                meta: PageMeta::default()
            })
            .check(p),
            Err(Rejection::PageExists { page: 7 })
        );
        let old = Delta {
            epoch: 2,
            ..delta(Op::Delete)
        };
        assert_eq!(
            old.check(p).unwrap_err().to_string(),
            "epoch 2 does not advance page 7 past its epoch 2"
        );
        assert_eq!(
            delta(Op::Resize { len: 3 }).check(p).unwrap(),
            Some(PageShape { len: 3, epoch: 3 })
        );
        assert_eq!(delta(Op::Delete).check(p).unwrap(), None);
    }

    #[test]
    fn masked_write_replaces_exactly_the_set_bits() {
        let mut page = [0u8; 12];
        apply_writes(
            &Op::Masked {
                offset: 2,
                len: 10,
                mask: &[0b1000_0101, 0b10],
                values: &[1, 2, 3, 4],
            },
            &mut page,
        );
        assert_eq!(page, [0, 0, 1, 0, 2, 0, 0, 0, 0, 3, 0, 4]);
    }
}
