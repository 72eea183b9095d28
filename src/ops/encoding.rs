//! Choosing the smallest record for a page's new bytes: one full-page write, sparse ranges, or a
//! masked span. `compact` (merged writes) and `diff --emit-log` (differences) both choose here,
//! so the two never disagree about what "smallest" means.

use crate::format::record::Op;

/// Table bytes a sparse record spends per range (offset and length).
pub(crate) const SPARSE_RANGE_COST: u64 = 16;
/// Payload bytes of a fill (offset, length, value).
const FILL_COST: u64 = 17;

/// A page write that owns its bytes; [`WriteOp::op`] borrows it as a record operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// All of the page's bytes.
    Full(Vec<u8>),
    /// Byte ranges, ascending and disjoint.
    Sparse(Vec<(u64, Vec<u8>)>),
    /// A span with a bit per byte.
    Masked {
        /// First byte of the span.
        offset: u64,
        /// Length of the span.
        len: u64,
        /// One bit per byte of the span, least significant first.
        mask: Vec<u8>,
        /// The bytes whose bit is set, in order.
        values: Vec<u8>,
    },
    /// A run of one byte value.
    Fill {
        /// First byte.
        offset: u64,
        /// Length.
        len: u64,
        /// The value.
        value: u8,
    },
}

impl WriteOp {
    /// The record operation, borrowing this write's bytes.
    pub fn op(&self) -> Op<'_> {
        match self {
            WriteOp::Full(d) => Op::Full(d),
            WriteOp::Sparse(r) => Op::Sparse(r.iter().map(|(o, d)| (*o, &d[..])).collect()),
            WriteOp::Masked {
                offset,
                len,
                mask,
                values,
            } => Op::Masked {
                offset: *offset,
                len: *len,
                mask,
                values,
            },
            WriteOp::Fill { offset, len, value } => Op::Fill {
                offset: *offset,
                len: *len,
                value: *value,
            },
        }
    }
}

/// What is known about a page's new bytes.
#[derive(Debug, Clone, Copy)]
pub struct PageWrites<'a> {
    /// The bytes to write: disjoint ranges in ascending offset order.
    pub ranges: &'a [(u64, &'a [u8])],
    /// The page's length when it is known.
    pub page_len: Option<u64>,
    /// All of the page's new bytes, when known (`diff`): bytes between ranges are then unchanged
    /// and may be written too, which lets nearby ranges share one table entry.
    pub target: Option<&'a [u8]>,
}

/// The payload bytes each form would take (before compression), for reports and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingCosts {
    /// A full-page write, when it can express the change.
    pub full: Option<u64>,
    /// Sparse ranges (after merging ranges whose gap costs less than a table entry).
    pub sparse: u64,
    /// One masked span from the first changed byte to the last.
    pub masked: u64,
}

/// Merges ranges whose gaps are cheaper to write than a new table entry; needs the target bytes.
fn merge_gaps(ranges: &[(u64, &[u8])], target: &[u8]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (off, d) in ranges {
        let end = off + d.len() as u64;
        match out.last_mut() {
            Some((s, e)) if off - *e < SPARSE_RANGE_COST => *e = end,
            _ => out.push((*off, end)),
        }
        debug_assert!(end as usize <= target.len());
    }
    out.into_iter().map(|(s, e)| (s, e - s)).collect()
}

fn costs(w: &PageWrites<'_>, merged: Option<&[(u64, u64)]>) -> EncodingCosts {
    let changed: u64 = w.ranges.iter().map(|(_, d)| d.len() as u64).sum();
    let sparse = 4 + match merged {
        Some(m) => m.iter().map(|(_, l)| SPARSE_RANGE_COST + l).sum::<u64>(),
        None => w.ranges.len() as u64 * SPARSE_RANGE_COST + changed,
    };
    let (first, last) = match (w.ranges.first(), w.ranges.last()) {
        (Some(f), Some(l)) => (f.0, l.0 + l.1.len() as u64),
        _ => (0, 0),
    };
    let masked = 16 + (last - first).div_ceil(8) + changed;
    let covers_all = w
        .page_len
        .is_some_and(|n| w.ranges.len() == 1 && w.ranges[0].0 == 0 && w.ranges[0].1.len() as u64 == n);
    let full = match (w.page_len, w.target) {
        (Some(n), Some(_)) => Some(n),
        (Some(n), None) if covers_all => Some(n),
        _ => None,
    };
    EncodingCosts { full, sparse, masked }
}

/// The payload sizes of each form for these writes.
pub fn encoding_costs(w: &PageWrites<'_>) -> EncodingCosts {
    let merged = w.target.map(|t| merge_gaps(w.ranges, t));
    costs(w, merged.as_deref())
}

/// The smallest single write that puts these bytes in place (ties go to the simpler form), or
/// `None` when there is nothing to write.
pub fn smallest_write(w: &PageWrites<'_>) -> Option<WriteOp> {
    if w.ranges.iter().all(|(_, d)| d.is_empty()) {
        return None;
    }
    let ranges: Vec<(u64, &[u8])> = w.ranges.iter().filter(|(_, d)| !d.is_empty()).copied().collect();
    let w = PageWrites { ranges: &ranges, ..*w };
    // One run of a single byte value: run-length form (a zeroed tensor in 17 bytes).
    if let [(offset, d)] = ranges[..]
        && d.len() as u64 > FILL_COST
        && d.iter().all(|b| *b == d[0])
    {
        return Some(WriteOp::Fill {
            offset,
            len: d.len() as u64,
            value: d[0],
        });
    }
    let merged = w.target.map(|t| merge_gaps(&ranges, t));
    let c = costs(&w, merged.as_deref());
    if let Some(full) = c.full
        && full <= c.sparse
        && full <= c.masked
    {
        return Some(WriteOp::Full(match w.target {
            Some(t) => t.to_vec(),
            None => ranges[0].1.to_vec(),
        }));
    }
    if c.sparse <= c.masked {
        return Some(WriteOp::Sparse(match (&merged, w.target) {
            (Some(m), Some(t)) => m
                .iter()
                .map(|(o, l)| (*o, t[*o as usize..(o + l) as usize].to_vec()))
                .collect(),
            _ => ranges.iter().map(|(o, d)| (*o, d.to_vec())).collect(),
        }));
    }
    let offset = ranges[0].0;
    let last = ranges.last().expect("not empty");
    let len = last.0 + last.1.len() as u64 - offset;
    let mut mask = vec![0u8; len.div_ceil(8) as usize];
    let mut values = Vec::with_capacity(ranges.iter().map(|(_, d)| d.len()).sum());
    for (o, d) in &ranges {
        let rel = (o - offset) as usize;
        set_bits(&mut mask, rel, rel + d.len());
        values.extend_from_slice(d);
    }
    Some(WriteOp::Masked {
        offset,
        len,
        mask,
        values,
    })
}

/// Sets bits `from..to` of `mask` (least significant first): whole bytes at once.
fn set_bits(mask: &mut [u8], from: usize, to: usize) {
    let mut i = from;
    while i < to && !i.is_multiple_of(8) {
        mask[i / 8] |= 1 << (i % 8);
        i += 1;
    }
    let whole = (to - i) / 8;
    mask[i / 8..i / 8 + whole].fill(0xff);
    i += whole * 8;
    while i < to {
        mask[i / 8] |= 1 << (i % 8);
        i += 1;
    }
}

/// Bytes a record spends besides its writes: the frame (32), the payload's page id, epoch,
/// timestamp and source length (25), and a short source tag.
pub const RECORD_OVERHEAD: u64 = 32 + 25 + 10;

impl WriteOp {
    /// Payload bytes of this write (the part after the record's common fields).
    pub fn payload_len(&self) -> u64 {
        match self {
            WriteOp::Full(d) => d.len() as u64,
            WriteOp::Sparse(r) => 4 + r.iter().map(|(_, d)| SPARSE_RANGE_COST + d.len() as u64).sum::<u64>(),
            WriteOp::Masked { mask, values, .. } => 16 + (mask.len() + values.len()) as u64,
            WriteOp::Fill { .. } => FILL_COST,
        }
    }
}

/// Like [`smallest_write`], but may use up to `max_records` records: the ranges are split at
/// the widest gaps that cost more to bridge (at least a bit per byte, in a masked span) than a
/// record of their own. Scattered clusters (a few changed rows of a large embedding table) then
/// each get a tight masked or sparse record instead of one span over all of them.
pub fn smallest_writes(w: &PageWrites<'_>, max_records: usize) -> Vec<WriteOp> {
    let Some(single) = smallest_write(w) else {
        return Vec::new();
    };
    let ranges: Vec<(u64, &[u8])> = w.ranges.iter().filter(|(_, d)| !d.is_empty()).copied().collect();
    let mut splits: Vec<(u64, usize)> = (1..ranges.len())
        .map(|i| (ranges[i].0 - (ranges[i - 1].0 + ranges[i - 1].1.len() as u64), i))
        .filter(|(gap, _)| gap / 8 > RECORD_OVERHEAD)
        .collect();
    if max_records <= 1 || splits.is_empty() {
        return vec![single];
    }
    splits.sort_by_key(|s| std::cmp::Reverse(s.0));
    splits.truncate(max_records - 1);
    let mut cuts: Vec<usize> = splits.into_iter().map(|(_, i)| i).collect();
    cuts.sort_unstable();
    let mut groups = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for end in cuts.into_iter().chain([ranges.len()]) {
        let part = PageWrites {
            ranges: &ranges[start..end],
            page_len: None,
            target: w.target,
        };
        groups.extend(smallest_write(&part));
        start = end;
    }
    let split_cost: u64 = groups.iter().map(|g| g.payload_len() + RECORD_OVERHEAD).sum();
    if split_cost < single.payload_len() + RECORD_OVERHEAD {
        groups
    } else {
        vec![single]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::apply_writes;

    fn apply(w: &WriteOp, page: &mut [u8]) {
        apply_writes(&w.op(), page)
    }

    #[test]
    fn bits_set_a_byte_at_a_time_are_those_set_one_by_one() {
        for from in 0..20 {
            for to in from..40 {
                let mut fast = vec![0u8; 5];
                set_bits(&mut fast, from, to);
                let mut slow = vec![0u8; 5];
                for i in from..to {
                    slow[i / 8] |= 1 << (i % 8);
                }
                assert_eq!(fast, slow, "bits {from}..{to}");
            }
        }
    }

    #[test]
    fn scattered_single_bytes_become_a_masked_span() {
        let ranges: Vec<(u64, &[u8])> = (0..50).map(|i| (i * 3, &b"x"[..])).collect();
        let w = smallest_write(&PageWrites {
            ranges: &ranges,
            page_len: None,
            target: None,
        })
        .unwrap();
        assert!(
            matches!(
                w,
                WriteOp::Masked {
                    offset: 0,
                    len: 148,
                    ..
                }
            ),
            "{w:?}"
        );
        let mut page = vec![0u8; 200];
        apply(&w, &mut page);
        for (i, b) in page.iter().enumerate() {
            assert_eq!(*b, if i % 3 == 0 && i < 150 { b'x' } else { 0 }, "byte {i}");
        }
    }

    #[test]
    fn few_long_ranges_stay_sparse_and_a_whole_page_is_a_full_write() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let ranges: Vec<(u64, &[u8])> = vec![(0, &a[..]), (100_000, &a[..])];
        let w = smallest_write(&PageWrites {
            ranges: &ranges,
            page_len: None,
            target: None,
        });
        assert!(matches!(w, Some(WriteOp::Sparse(ref r)) if r.len() == 2));
        let whole: Vec<(u64, &[u8])> = vec![(0, &a[..])];
        let w = smallest_write(&PageWrites {
            ranges: &whole,
            page_len: Some(1000),
            target: None,
        });
        assert_eq!(w, Some(WriteOp::Full(a.clone())));
        // The same range on a longer page of unknown other bytes cannot be a full write.
        let w = smallest_write(&PageWrites {
            ranges: &whole,
            page_len: Some(1001),
            target: None,
        });
        assert!(matches!(w, Some(WriteOp::Sparse(_))));
    }

    #[test]
    fn a_run_of_one_value_becomes_a_fill() {
        let zeros = vec![0u8; 4096];
        let ranges: Vec<(u64, &[u8])> = vec![(0, &zeros[..])];
        let w = PageWrites {
            ranges: &ranges,
            page_len: Some(4096),
            target: None,
        };
        assert_eq!(
            smallest_write(&w),
            Some(WriteOp::Fill {
                offset: 0,
                len: 4096,
                value: 0
            })
        );
        // Short runs stay literal: a fill costs 17 bytes.
        let short: Vec<(u64, &[u8])> = vec![(5, &zeros[..10])];
        assert!(matches!(
            smallest_write(&PageWrites {
                ranges: &short,
                page_len: None,
                target: None
            }),
            Some(WriteOp::Masked { .. })
        ));
    }

    #[test]
    fn far_apart_clusters_get_a_record_each_when_allowed() {
        let target = vec![1u8; 1 << 20];
        // Three "rows" of every other byte changed, far apart.
        let mut ranges: Vec<(u64, &[u8])> = Vec::new();
        for row in [1000u64, 300_000, 900_000] {
            for i in 0..500 {
                ranges.push((row + 2 * i, &target[..1]));
            }
        }
        let w = PageWrites {
            ranges: &ranges,
            page_len: Some(target.len() as u64),
            target: Some(&target),
        };
        let split = smallest_writes(&w, 10);
        assert_eq!(split.len(), 3);
        assert!(
            split.iter().all(|g| matches!(g, WriteOp::Masked { len: 999, .. })),
            "{split:?}"
        );
        assert_eq!(smallest_writes(&w, 1), vec![smallest_write(&w).unwrap()]);
        let mut page = vec![0u8; target.len()];
        for g in &split {
            apply(g, &mut page);
        }
        let mut want = vec![0u8; target.len()];
        for (o, d) in &ranges {
            want[*o as usize] = d[0];
        }
        assert_eq!(page, want);
    }

    #[test]
    fn with_the_target_known_close_ranges_share_an_entry() {
        let target: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let ranges: Vec<(u64, &[u8])> = vec![
            (10, &target[10..12]),
            (20, &target[20..22]),
            (1500, &target[1500..1502]),
        ];
        let w = smallest_write(&PageWrites {
            ranges: &ranges,
            page_len: Some(2000),
            target: Some(&target),
        })
        .unwrap();
        // 8 unchanged bytes cost less than a second table entry; the far range gets its own.
        assert_eq!(
            w,
            WriteOp::Sparse(vec![(10, target[10..22].to_vec()), (1500, target[1500..1502].to_vec())])
        );
        assert!(
            smallest_write(&PageWrites {
                ranges: &[],
                page_len: Some(3),
                target: None
            })
            .is_none()
        );
    }
}
