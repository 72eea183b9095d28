//! Property tests: what mmsb writes it reads back unchanged; replaying a checkpoint plus a log
//! gives exactly the pages that a naive in-memory model of the same deltas gives; and what
//! `compact` and `diff --emit-log` write replays to that same state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mmsb::format::checkpoint::{Checkpoint, PageSpec, write_checkpoint};
use mmsb::format::log::{Compression, Durability, Log, LogOptions, LogWriter};
use mmsb::format::record::{Delta, Op};
use mmsb::ops::compact::{compact_checkpoint, compact_log};
use mmsb::ops::diff::{DiffSide, EmitTarget, diff, emit_log};
use mmsb::page::{PageMeta, Residency, StateHash, TensorInfo};
use mmsb::replay::{PageCheck, ReplayLimit, State};
use proptest::prelude::*;

/// A delta described independently of any page, made concrete against the model's pages.
#[derive(Debug, Clone)]
enum RawOp {
    Full(usize, u8),
    Sparse(usize, Vec<(u16, Vec<u8>)>),
    Masked(usize, u16, Vec<u8>, u8),
    Create(u16),
    Resize(usize, u16),
    Delete(usize),
    Fill(usize, u16, u16, u8),
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(s, b)| RawOp::Full(s, b)),
        (
            any::<usize>(),
            prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)), 0..5)
        )
            .prop_map(|(s, r)| RawOp::Sparse(s, r)),
        (
            any::<usize>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..12),
            any::<u8>()
        )
            .prop_map(|(s, o, m, v)| RawOp::Masked(s, o, m, v)),
        (0u16..700).prop_map(RawOp::Create),
        (any::<usize>(), 0u16..700).prop_map(|(s, l)| RawOp::Resize(s, l)),
        any::<usize>().prop_map(RawOp::Delete),
        (any::<usize>(), any::<u16>(), 0u16..700, any::<u8>()).prop_map(|(s, o, l, v)| RawOp::Fill(s, o, l, v)),
    ]
}

/// The model: page id -> (bytes, epoch). Each op is applied with plain loops.
type Model = BTreeMap<u64, (Vec<u8>, u64)>;

/// Makes `raw` concrete against `model`, applies it to the model, and returns the owned parts of
/// the delta (kind-specific bytes) so a `Delta` can borrow them.
fn concretize(raw: &RawOp, model: &mut Model, epoch: u64, next_id: &mut u64) -> Option<(u64, OwnedOp)> {
    let ids: Vec<u64> = model.keys().copied().collect();
    let pick = |s: usize| ids.get(s % ids.len().max(1)).copied();
    match raw {
        RawOp::Create(len) => {
            let id = *next_id;
            *next_id += 1;
            model.insert(id, (vec![0; *len as usize], epoch));
            Some((id, OwnedOp::Create(*len as u64)))
        }
        RawOp::Full(s, b) => {
            let id = pick(*s)?;
            let page = model.get_mut(&id).unwrap();
            let data: Vec<u8> = (0..page.0.len()).map(|i| b.wrapping_add(i as u8)).collect();
            *page = (data.clone(), epoch);
            Some((id, OwnedOp::Full(data)))
        }
        RawOp::Sparse(s, ranges) => {
            let id = pick(*s)?;
            let page = model.get_mut(&id).unwrap();
            let len = page.0.len();
            let mut out = Vec::new();
            for (off, bytes) in ranges {
                let off = if len == 0 { 0 } else { *off as usize % (len + 1) };
                let n = bytes.len().min(len - off);
                page.0[off..off + n].copy_from_slice(&bytes[..n]);
                out.push((off as u64, bytes[..n].to_vec()));
            }
            page.1 = epoch;
            Some((id, OwnedOp::Sparse(out)))
        }
        RawOp::Masked(s, off, mask, seed) => {
            let id = pick(*s)?;
            let page = model.get_mut(&id).unwrap();
            let plen = page.0.len();
            let off = if plen == 0 { 0 } else { *off as usize % (plen + 1) };
            let span = (mask.len() * 8).min(plen - off);
            let mut mask = mask[..span.div_ceil(8)].to_vec();
            if span % 8 != 0 {
                *mask.last_mut().unwrap() &= (1u8 << (span % 8)) - 1;
            }
            let mut values = Vec::new();
            for i in 0..span {
                if mask[i / 8] >> (i % 8) & 1 == 1 {
                    let v = seed.wrapping_mul(31).wrapping_add(i as u8);
                    page.0[off + i] = v;
                    values.push(v);
                }
            }
            page.1 = epoch;
            Some((id, OwnedOp::Masked(off as u64, span as u64, mask, values)))
        }
        RawOp::Resize(s, len) => {
            let id = pick(*s)?;
            let page = model.get_mut(&id).unwrap();
            page.0.resize(*len as usize, 0);
            page.1 = epoch;
            Some((id, OwnedOp::Resize(*len as u64)))
        }
        RawOp::Delete(s) => {
            let id = pick(*s)?;
            model.remove(&id);
            Some((id, OwnedOp::Delete))
        }
        RawOp::Fill(s, off, l, value) => {
            let id = pick(*s)?;
            let page = model.get_mut(&id).unwrap();
            let len = page.0.len();
            let off = if len == 0 { 0 } else { *off as usize % (len + 1) };
            let n = (*l as usize).min(len - off);
            page.0[off..off + n].fill(*value);
            page.1 = epoch;
            Some((id, OwnedOp::Fill(off as u64, n as u64, *value)))
        }
    }
}

enum OwnedOp {
    Create(u64),
    Full(Vec<u8>),
    Sparse(Vec<(u64, Vec<u8>)>),
    Masked(u64, u64, Vec<u8>, Vec<u8>),
    Resize(u64),
    Delete,
    Fill(u64, u64, u8),
}

impl OwnedOp {
    fn op(&self) -> Op<'_> {
        match self {
            OwnedOp::Create(len) => Op::Create {
                len: *len,
                meta: PageMeta::default(),
            },
            OwnedOp::Full(d) => Op::Full(d),
            OwnedOp::Sparse(r) => Op::Sparse(r.iter().map(|(o, d)| (*o, &d[..])).collect()),
            OwnedOp::Masked(off, len, mask, values) => Op::Masked {
                offset: *off,
                len: *len,
                mask,
                values,
            },
            OwnedOp::Resize(len) => Op::Resize { len: *len },
            OwnedOp::Delete => Op::Delete,
            OwnedOp::Fill(offset, len, value) => Op::Fill {
                offset: *offset,
                len: *len,
                value: *value,
            },
        }
    }
}

fn model_hash(model: &Model) -> StateHash {
    StateHash::compute(
        model
            .iter()
            .map(|(id, (d, e))| (*id, d.len() as u64, *e, crc32c::crc32c(d)))
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Auto),
        (1i32..6).prop_map(Compression::Zstd)
    ]
}

/// Writes `initial` as a checkpoint `m.ckpt` (pages 0, 3, 6, ... at epoch 0) and `ops`, made
/// concrete, as a log `m.log` in `dir`. Returns the checkpoint's path, the log's, and the model
/// after each record written (index 0: the checkpoint itself).
fn write_workload(dir: &Path, initial: &[Vec<u8>], ops: &[RawOp], opts: LogOptions) -> (PathBuf, PathBuf, Vec<Model>) {
    let ckpt_path = dir.join("m.ckpt");
    let pages: Vec<(PageSpec, &[u8])> = initial
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let spec = PageSpec {
                id: i as u64 * 3,
                len: d.len() as u64,
                epoch: 0,
                meta: PageMeta::default(),
            };
            (spec, &d[..])
        })
        .collect();
    write_checkpoint(&ckpt_path, BTreeMap::new(), pages).unwrap();
    let base = Checkpoint::open(&ckpt_path).unwrap().state_hash();
    let mut model: Model = initial
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64 * 3, (d.clone(), 0)))
        .collect();
    let log_dir = dir.join("m.log");
    let mut w = LogWriter::create(&log_dir, base, 1, opts).unwrap();
    let mut next_id = 1000;
    let mut models_after = vec![model.clone()];
    for raw in ops {
        let epoch = w.next_seq();
        if let Some((id, owned)) = concretize(raw, &mut model, epoch, &mut next_id) {
            let d = Delta {
                page_id: id,
                epoch,
                timestamp_ns: epoch,
                source: "prop".into(),
                op: owned.op(),
            };
            w.append(&d).unwrap();
            models_after.push(model.clone());
        }
    }
    w.finish().unwrap();
    (ckpt_path, log_dir, models_after)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_the_model(
        initial in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..6),
        ops in prop::collection::vec(raw_op(), 0..40),
        comp in compression(),
        segment_size in 100u64..3000,
        stop in any::<u16>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_size, durability: Durability::Never, compression: comp };
        let (ckpt_path, log_dir, models_after) = write_workload(dir.path(), &initial, &ops, opts);
        let ckpt = Checkpoint::open(&ckpt_path).unwrap();
        prop_assert_eq!(ckpt.state_hash(), model_hash(&models_after[0]));
        let log = Log::open(&[log_dir]).unwrap();
        prop_assert!(log.problems().is_empty());

        // Replay everything, and replay a prefix.
        let n = models_after.len() - 1;
        let k = stop as usize % (n + 1);
        for (limit, expect) in [(ReplayLimit::default(), &models_after[n]), (ReplayLimit { to_seq: Some(k as u64), to_epoch: None }, &models_after[k])] {
            let mut state = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
            state.replay(&log, limit).unwrap();
            let got: Model = state.pages().map(|(id, p)| (id, (p.data().to_vec(), p.epoch))).collect();
            prop_assert_eq!(&got, expect);
            prop_assert_eq!(state.state_hash(), model_hash(expect));
        }
    }

    #[test]
    fn compacted_logs_and_checkpoints_and_emitted_logs_replay_to_the_model(
        initial in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..6),
        ops in prop::collection::vec(raw_op(), 0..60),
        comp in compression(),
        stop in any::<u16>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_size: 1 << 20, durability: Durability::Never, compression: Compression::None };
        let (ckpt_path, log_dir, models_after) = write_workload(dir.path(), &initial, &ops, opts);
        let ckpt = Checkpoint::open(&ckpt_path).unwrap();
        let n = models_after.len() - 1;
        let k = stop as u64 % (n as u64 + 1);
        let replayed = |ck: &Checkpoint, logs: &[PathBuf]| -> Model {
            let mut state = State::from_checkpoint(ck, PageCheck::Check).unwrap();
            if !logs.is_empty() {
                state.replay(&Log::open(logs).unwrap(), ReplayLimit::default()).unwrap();
            }
            state.pages().map(|(id, p)| (id, (p.data().to_vec(), p.epoch))).collect()
        };

        // --log-only, whole and up to a prefix: the same final state, and never more records.
        for (i, to_seq) in [None, Some(k)].into_iter().enumerate() {
            let merged = dir.path().join(format!("merged{i}.log"));
            let r = compact_log(std::slice::from_ref(&log_dir), to_seq, &merged, comp, None).unwrap();
            prop_assert!(r.output.records <= r.input.records);
            prop_assert_eq!(&replayed(&ckpt, &[merged]), &models_after[n]);
        }

        // Into a checkpoint up to a prefix, the rest as a log against it.
        let out = dir.path().join("c.ckpt");
        let rest = dir.path().join("c.log");
        let r = compact_checkpoint(&ckpt_path, std::slice::from_ref(&log_dir), Some(k), &out, Some(&rest), comp, None).unwrap();
        let folded = Checkpoint::open(&out).unwrap();
        prop_assert_eq!(Some(folded.state_hash()), r.state_hash);
        prop_assert_eq!(folded.state_hash(), model_hash(&models_after[k as usize]));
        let rest_logs: Vec<_> = if r.records_kept > 0 { vec![rest] } else { vec![] };
        prop_assert_eq!(&replayed(&folded, &rest_logs), &models_after[n]);

        // diff of the start and the end, and the log it emits.
        let log = Log::open(std::slice::from_ref(&log_dir)).unwrap();
        let a = DiffSide::open(&ckpt, None, ReplayLimit::default()).unwrap();
        let b = DiffSide::open(&ckpt, Some(&log), ReplayLimit::default()).unwrap();
        let report = diff(&a, &b, 4).unwrap();
        let pages_equal = models_after[0].iter().map(|(id, (d, _))| (id, d)).eq(models_after[n].iter().map(|(id, (d, _))| (id, d)));
        prop_assert_eq!(report.bytes_identical, pages_equal);
        let emitted = dir.path().join("e.log");
        emit_log(&a, &b, EmitTarget::New(&emitted), comp).unwrap();
        // The log's epochs always advance, so the emitted log reaches the model exactly.
        prop_assert_eq!(&replayed(&ckpt, &[emitted]), &models_after[n]);
    }

    #[test]
    fn checkpoints_read_back_as_written(
        pages in prop::collection::btree_map(any::<u64>(), (prop::collection::vec(any::<u8>(), 0..5000), any::<u64>(), prop::option::of("[a-z./]{1,20}"), prop::option::of(("[A-Z0-9]{1,6}", prop::collection::vec(any::<u64>(), 0..4))), 0u8..3), 0..8),
        metadata in prop::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ckpt");
        let input: Vec<(PageSpec, &[u8])> = pages.iter().map(|(id, (d, epoch, name, tensor, res))| (PageSpec {
            id: *id, len: d.len() as u64, epoch: *epoch,
            meta: PageMeta { name: name.clone(), tensor: tensor.clone().map(|(dtype, shape)| TensorInfo { dtype, shape }), residency: Residency::from_byte(*res).unwrap() },
        }, &d[..])).collect();
        write_checkpoint(&path, metadata.clone(), input.clone()).unwrap();
        let c = Checkpoint::open(&path).unwrap();
        prop_assert!(c.check_pages(None).is_empty());
        prop_assert_eq!(&c.head().metadata, &metadata);
        prop_assert_eq!(c.pages().len(), input.len());
        for (entry, (spec, data)) in c.pages().iter().zip(&input) {
            prop_assert_eq!(entry.id, spec.id);
            prop_assert_eq!(entry.epoch, spec.epoch);
            prop_assert_eq!(&entry.meta, &spec.meta);
            prop_assert_eq!(c.page_bytes(entry), *data);
            prop_assert_eq!(entry.offset % 4096, 0);
        }
    }
}
