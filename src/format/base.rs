//! The BASE record (1.3, optional type 131): the head of a checkpoint that holds the state a log
//! applies to (header block, page index, metadata; no page bytes). With it, a process that holds
//! the pages in memory by name (tensors) can check them against the log's base and map names to
//! page ids without the checkpoint file. See docs/FORMAT.md, "The BASE record".

use super::checkpoint::CheckpointHead;
use super::{Cursor, ParseError, bad_field};
use crate::error::{Corruption, Result};
use crate::page::StateHash;

/// Record type: the log's base state, as a checkpoint head.
pub const TYPE_BASE: u8 = 0x83;

/// Encodes a BASE payload: the common prefix (page id 0, epoch 0, `timestamp_ns`, `source`),
/// then `head`, as [`crate::format::checkpoint::head_of`] makes it.
pub fn encode(head: &[u8], timestamp_ns: u64, source: &str) -> Result<Vec<u8>> {
    let mut b = Vec::with_capacity(head.len() + 64);
    super::record::encode_prefix(&mut b, 0, 0, timestamp_ns, source)?;
    b.extend_from_slice(head);
    Ok(b)
}

/// Decodes a BASE payload found at file offset `base`: the checkpoint head it carries, parsed as
/// a checkpoint's is, whose bytes must end exactly at its `data_offset`.
pub fn decode(payload: &[u8], base: u64) -> Result<CheckpointHead, ParseError> {
    let mut c = Cursor::new(payload, base);
    let (page, epoch, _, _) = super::record::decode_prefix(&mut c)?;
    if page != 0 || epoch != 0 {
        let (at, field, value) = if page != 0 {
            (base, "page_id", page)
        } else {
            (base + 8, "epoch", epoch)
        };
        return Err(bad_field(
            at,
            field,
            value,
            "a BASE record names no page and no epoch: zero",
        ));
    }
    let at = c.offset();
    let head = &payload[(at - base) as usize..];
    // The head records the length of the file it heads; the file was never written, so that
    // field is taken as it is (the parse checks every page against it).
    let file_len = match head.get(16..24) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => {
            return Err(ParseError::new(
                at,
                Corruption::Truncated {
                    needed: 24,
                    available: head.len() as u64,
                },
            ));
        }
    };
    let parsed = CheckpointHead::parse(head, file_len).map_err(|e| ParseError::new(at + e.offset, e.problem))?;
    if head.len() as u64 != parsed.data_offset {
        return Err(bad_field(
            base,
            "payload_len",
            payload.len() as u64,
            format!(
                "a BASE record ends where its head's data would start ({} bytes of head)",
                parsed.data_offset
            ),
        ));
    }
    Ok(parsed)
}

/// The corruption of a BASE record whose pages do not hash to `log_base`, or `None` when they do.
pub fn check_hash(head: &CheckpointHead, log_base: StateHash) -> Option<Corruption> {
    let record = head.state_hash();
    (record != log_base).then(|| Corruption::BaseMismatch {
        record: record.to_hex(),
        log: log_base.to_hex(),
    })
}

/// The base state of `log` as its BASE record gives it, checked: the record decodes, its pages
/// hash to the log's `base_state`, and it is the log's first record (a BASE record anywhere else
/// is corruption). `None` for a log without one.
pub fn read(log: &super::log::Log) -> Result<Option<CheckpointHead>> {
    let first = log.segments().first().map(|s| s.header().first_seq);
    let mut found = None;
    for rec in log.records().filter(|r| r.frame.kind == TYPE_BASE) {
        let corrupt = |offset: u64, problem: Corruption| crate::Error::Corrupt {
            path: rec.segment.path().to_owned(),
            offset,
            problem,
        };
        if Some(rec.frame.seq) != first {
            return Err(corrupt(
                rec.frame.offset + 16,
                Corruption::BadField {
                    field: "type",
                    value: TYPE_BASE.into(),
                    why: "a BASE record may only be the log's first record".into(),
                },
            ));
        }
        let head = decode(rec.payload()?, rec.frame.payload_offset()).map_err(|e| corrupt(e.offset, e.problem))?;
        if let Some(problem) = check_hash(&head, rec.segment.header().base) {
            return Err(corrupt(rec.frame.offset, problem));
        }
        found = Some(head);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::format::checkpoint::{PageEntry, head_of};
    use crate::format::log::{LogOptions, LogWriter};
    use crate::page::PageMeta;

    fn entries() -> Vec<PageEntry> {
        vec![PageEntry {
            id: 0,
            offset: 0,
            len: 3,
            epoch: 0,
            crc32c: crate::format::crc32c(b"abc"),
            meta: PageMeta {
                name: Some("w".into()),
                ..Default::default()
            },
        }]
    }

    #[test]
    fn a_base_payload_is_the_prefix_then_a_checkpoint_head_and_decodes_to_its_pages() {
        let head = head_of(entries(), &BTreeMap::new()).unwrap();
        let p = encode(&head, 5, "t").unwrap();
        // page_id 0, epoch 0, timestamp 5, source "t", then the head's magic.
        assert_eq!(&p[..8], &[0; 8]);
        assert_eq!(&p[8..16], &[0; 8]);
        assert_eq!(&p[16..24], &5u64.to_le_bytes());
        assert_eq!(&p[24..26], b"\x01t");
        assert_eq!(&p[26..34], b"MMSBCKPT");
        assert_eq!(p.len(), 26 + 4096 * 2, "header block, then the index padded to 4096");
        let parsed = decode(&p, 1000).unwrap();
        assert_eq!(parsed.pages[0].len, 3);
        assert_eq!(parsed.pages[0].meta.name.as_deref(), Some("w"));
        assert_eq!(parsed.pages[0].offset, 8192);
        assert!(check_hash(&parsed, parsed.state_hash()).is_none());
    }

    #[test]
    fn a_damaged_base_payload_is_an_error_at_its_offset() {
        let head = head_of(entries(), &BTreeMap::new()).unwrap();
        let p = encode(&head, 5, "t").unwrap();
        let mut epoch = p.clone();
        epoch[8] = 1;
        let e = decode(&epoch, 1000).unwrap_err();
        assert_eq!(e.offset, 1008);
        assert!(matches!(e.problem, Corruption::BadField { field: "epoch", .. }));
        let e = decode(&p[..40], 1000).unwrap_err();
        assert!(matches!(e.problem, Corruption::Truncated { .. }), "{:?}", e.problem);
        let mut long = p.clone();
        long.push(0);
        let e = decode(&long, 1000).unwrap_err();
        assert!(matches!(
            e.problem,
            Corruption::BadField {
                field: "payload_len",
                ..
            }
        ));
        // A flipped byte in the index: the section's checksum, at the byte's place in the file.
        let mut flipped = p.clone();
        flipped[26 + 4096 + 20] ^= 1;
        let e = decode(&flipped, 1000).unwrap_err();
        assert!(
            matches!(e.problem, Corruption::ChecksumMismatch { .. }),
            "{:?}",
            e.problem
        );
    }

    #[test]
    fn a_base_record_must_come_first_and_hash_to_the_log_base() {
        let dir = tempfile::tempdir().unwrap();
        let head = head_of(entries(), &BTreeMap::new()).unwrap();
        let payload = encode(&head, 5, "t").unwrap();
        let right = decode(&payload, 0).unwrap().state_hash();
        let write = |name: &str, base: StateHash, before: bool| {
            let path = dir.path().join(name);
            let mut w = LogWriter::create(&path, base, 1, LogOptions::default()).unwrap();
            if before {
                w.append_payload(crate::format::graph::TYPE_PROPAGATED, &{
                    let r = crate::format::graph::GraphRecord::Propagated {
                        through_seq: 0,
                        recomputed: 0,
                        changed: 0,
                    };
                    r.encode(0, "t").unwrap()
                })
                .unwrap();
            }
            w.append_payload(TYPE_BASE, &payload).unwrap();
            w.finish().unwrap();
            crate::format::log::Log::open(&[path]).unwrap()
        };
        assert_eq!(read(&write("ok", right, false)).unwrap().unwrap().state_hash(), right);
        let other = StateHash::compute(std::iter::empty());
        let e = read(&write("other", other, false)).unwrap_err();
        assert!(
            matches!(
                &e,
                crate::Error::Corrupt {
                    problem: Corruption::BaseMismatch { .. },
                    ..
                }
            ),
            "{e}"
        );
        let e = read(&write("second", right, true)).unwrap_err();
        assert!(e.to_string().contains("only be the log's first record"), "{e}");
    }
}
