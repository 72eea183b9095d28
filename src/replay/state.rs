//! CPU replay: a checkpoint's pages in memory (zero-copy until written), log deltas applied in
//! sequence order, and the state hash of the result.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, Rejection, Result};
use crate::format::checkpoint::{Checkpoint, CheckpointWriter, PageSpec};
use crate::format::graph::Derivation;
use crate::format::log::{Log, TornTail};
use crate::format::record::{Delta, Op, PageShape, TargetPage, apply_writes};
use crate::mmap::ZeroedBytes;
use crate::page::{PageMeta, StateHash};

/// One page of an in-memory state.
pub struct Page<'a> {
    /// The page's epoch.
    pub epoch: u64,
    /// Name, tensor info, residency.
    pub meta: PageMeta,
    data: PageData<'a>,
    /// CRC32C of `data` when known (pages not written since they were loaded or created).
    known_crc: Option<u32>,
}

/// A page's bytes: the checkpoint's, until the first write copies them.
enum PageData<'a> {
    Mapped(&'a [u8]),
    Owned(ZeroedBytes),
}

impl PageData<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            PageData::Mapped(b) => b,
            PageData::Owned(b) => b,
        }
    }

    /// The bytes, writable: mapped bytes are copied first (which may fail for want of memory).
    fn to_mut(&mut self) -> Result<&mut [u8], String> {
        if let PageData::Mapped(b) = self {
            let mut owned = ZeroedBytes::new(b.len() as u64)?;
            owned.copy_from_slice(b);
            *self = PageData::Owned(owned);
        }
        match self {
            PageData::Owned(b) => Ok(b),
            PageData::Mapped(_) => unreachable!("copied above"),
        }
    }
}

impl Page<'_> {
    /// The page's bytes.
    pub fn data(&self) -> &[u8] {
        self.data.bytes()
    }
    /// Whether the page's bytes are still the checkpoint's, read in place from its mapping (no
    /// delta has written to the page): [`State::mapping`] holds them.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, PageData::Mapped(_))
    }

    /// The CRC32C from the checkpoint's index, while the page still holds the bytes it was
    /// loaded with (`None` once a delta has written to it).
    pub fn stored_crc(&self) -> Option<u32> {
        self.known_crc
    }
    fn shape(&self) -> PageShape {
        PageShape {
            len: self.data().len() as u64,
            epoch: self.epoch,
        }
    }
}

/// A set of pages in memory, keyed by id.
pub struct State<'a> {
    pages: BTreeMap<u64, Page<'a>>,
    base: StateHash,
    /// The mapping of the checkpoint the pages were loaded from.
    mapping: Option<Arc<crate::mmap::ReadOnlyMap>>,
    /// Counts the log bytes replayed, for a progress bar.
    progress: Option<Arc<AtomicU64>>,
}

/// Whether loading a checkpoint's pages first checks their checksums and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCheck {
    /// Check every page before anything uses it.
    Check,
    /// The caller has checked the pages, or checks each as it reads it.
    Trust,
}

/// Why a delta was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The delta does not apply to the state (the data is bad).
    Rejected(Rejection),
    /// The delta is valid, but the memory its page needs cannot be had.
    OutOfMemory(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Rejected(why) => write!(f, "{why}"),
            ApplyError::OutOfMemory(why) => write!(f, "out of memory: {why}"),
        }
    }
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayLimit {
    /// Apply records with sequence numbers up to and including this one.
    pub to_seq: Option<u64>,
    /// Stop before the first record whose epoch is above this one.
    pub to_epoch: Option<u64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Records applied.
    pub records: u64,
    /// Records of optional types this build does not know, skipped.
    pub skipped_unknown: u64,
    /// Payload bytes written into pages.
    pub bytes_written: u64,
    /// Sequence number of the last record applied.
    pub last_seq: Option<u64>,
    /// Offset and segment of a torn tail that was ignored.
    #[serde(skip)]
    pub torn_tail: Option<TornTail>,
}

impl<'a> State<'a> {
    /// Loads every page of a checkpoint, zero-copy. With [`PageCheck::Check`], every page's
    /// checksum and padding is verified first (in parallel) and the first bad page fails the
    /// call.
    pub fn from_checkpoint(ckpt: &'a Checkpoint, check: PageCheck) -> Result<State<'a>> {
        if check == PageCheck::Check
            && let Some(e) = ckpt.check_pages(None).into_iter().next()
        {
            return Err(e);
        }
        let pages = ckpt
            .pages()
            .iter()
            .map(|p| {
                (
                    p.id,
                    Page {
                        epoch: p.epoch,
                        meta: p.meta.clone(),
                        data: PageData::Mapped(ckpt.page_bytes(p)),
                        known_crc: Some(p.crc32c),
                    },
                )
            })
            .collect();
        Ok(State {
            pages,
            base: ckpt.state_hash(),
            mapping: Some(ckpt.mapping().clone()),
            progress: None,
        })
    }

    /// An empty state (for building one page by page).
    pub fn empty() -> State<'static> {
        State {
            pages: BTreeMap::new(),
            base: StateHash::compute(std::iter::empty()),
            mapping: None,
            progress: None,
        }
    }

    /// The mapping of the checkpoint the state was loaded from: the bytes of every page that
    /// [`Page::is_mapped`] lie in it. A caller that keeps this `Arc` may keep using them after
    /// the state is gone (they alias the file read-only).
    pub fn mapping(&self) -> Option<&Arc<crate::mmap::ReadOnlyMap>> {
        self.mapping.as_ref()
    }

    /// The pages, in id order.
    pub fn pages(&self) -> impl ExactSizeIterator<Item = (u64, &Page<'a>)> {
        self.pages.iter().map(|(id, p)| (*id, p))
    }

    /// Counts the bytes of every log record replayed from now on in `counter`.
    pub fn count_progress(&mut self, counter: Arc<AtomicU64>) {
        self.progress = Some(counter);
    }

    /// Keeps the pages for which `keep(id, page)` holds and drops the others.
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &Page<'a>) -> bool) {
        self.pages.retain(|id, p| keep(*id, p));
    }

    /// One page.
    pub fn page(&self, id: u64) -> Option<&Page<'a>> {
        self.pages.get(&id)
    }

    /// Applies one delta, or explains why it does not apply (leaving the state unchanged).
    pub fn apply(&mut self, d: &Delta<'_>) -> Result<(), ApplyError> {
        let shape = self.pages.get(&d.page_id).map(Page::shape);
        d.check(shape).map_err(ApplyError::Rejected)?;
        let alloc =
            |len: u64| ZeroedBytes::new(len).map_err(|e| ApplyError::OutOfMemory(format!("page {}: {e}", d.page_id)));
        match &d.op {
            Op::Create { len, meta } => {
                let data = alloc(*len)?;
                self.pages.insert(
                    d.page_id,
                    Page {
                        epoch: d.epoch,
                        meta: meta.clone(),
                        data: PageData::Owned(data),
                        known_crc: Some(crate::format::crc32c_of_zeros(*len)),
                    },
                );
                return Ok(());
            }
            Op::Delete => {
                self.pages.remove(&d.page_id);
                return Ok(());
            }
            _ => {}
        }
        let page = self.pages.get_mut(&d.page_id).expect("checked: the page exists");
        match &d.op {
            Op::Full(bytes) => match &mut page.data {
                PageData::Owned(b) => b.copy_from_slice(bytes),
                PageData::Mapped(_) => {
                    let mut b = alloc(bytes.len() as u64)?;
                    b.copy_from_slice(bytes);
                    page.data = PageData::Owned(b);
                }
            },
            Op::Resize { len } => {
                let mut b = alloc(*len)?;
                let old = page.data();
                let keep = old.len().min(b.len());
                b[..keep].copy_from_slice(&old[..keep]);
                page.data = PageData::Owned(b);
            }
            op => apply_writes(
                op,
                page.data
                    .to_mut()
                    .map_err(|e| ApplyError::OutOfMemory(format!("page {}: {e}", d.page_id)))?,
            ),
        }
        page.epoch = d.epoch;
        page.known_crc = None;
        Ok(())
    }

    /// Applies a log's records in sequence order, up to `limit`. The log must belong to this
    /// state (its base state hash equals the checkpoint's) and hold no corruption; a torn tail
    /// is ignored and reported in the summary.
    pub fn replay(&mut self, log: &Log, limit: ReplayLimit) -> Result<ReplaySummary> {
        log.check()?;
        self.replay_collecting(log, limit, &mut |e| Err(e))
    }

    /// Like [`State::replay`], but each record that cannot be read or applied is passed to
    /// `problem`, which decides whether to go on (`Ok`) or stop (`Err`). Corruption already
    /// found by [`Log::open`] is the caller's to report.
    pub fn replay_collecting(
        &mut self,
        log: &Log,
        limit: ReplayLimit,
        problem: &mut dyn FnMut(Error) -> Result<()>,
    ) -> Result<ReplaySummary> {
        log.check_base(self.base)?;
        let mut s = ReplaySummary {
            torn_tail: log.torn_tail().cloned(),
            ..Default::default()
        };
        for rec in log.records() {
            if limit.to_seq.is_some_and(|n| rec.frame.seq > n) {
                break;
            }
            if let Some(p) = &self.progress {
                p.fetch_add(rec.frame.frame_len(), std::sync::atomic::Ordering::Relaxed);
            }
            let target = |id| {
                self.pages
                    .get(&id)
                    .map_or(TargetPage::Missing, |p| TargetPage::Len(p.data().len() as u64))
            };
            let delta = match rec.delta_for_page(target) {
                Ok(Some(d)) => d,
                // Graph and BASE records change no page: known, and nothing to apply here.
                Ok(None) if crate::format::record::changes_no_page(rec.frame.kind) => continue,
                Ok(None) => {
                    s.skipped_unknown += 1;
                    continue;
                }
                Err(e) => {
                    problem(e)?;
                    continue;
                }
            };
            if limit.to_epoch.is_some_and(|n| delta.epoch > n) {
                break;
            }
            match self.apply(&delta) {
                Ok(()) => {
                    s.records += 1;
                    s.bytes_written += delta.written_bytes();
                    s.last_seq = Some(rec.frame.seq);
                }
                Err(ApplyError::Rejected(reason)) => problem(Error::DeltaRejected {
                    path: rec.segment.path().to_owned(),
                    offset: rec.frame.offset,
                    seq: rec.frame.seq,
                    reason,
                })?,
                // Not the data's fault, and nothing after it can be replayed: stop.
                Err(ApplyError::OutOfMemory(why)) => {
                    return Err(Error::OutOfMemory(format!(
                        "{}: record seq {}: {why}",
                        rec.segment.path().display(),
                        rec.frame.seq
                    )));
                }
            }
        }
        Ok(s)
    }

    /// Every page's `(id, len, epoch, crc32c)`, computing the CRCs not yet known in parallel.
    pub fn page_checksums(&self) -> Vec<(u64, u64, u64, u32)> {
        use rayon::prelude::*;
        let pages: Vec<(&u64, &Page<'_>)> = self.pages.iter().collect();
        pages
            .par_iter()
            .map(|(id, p)| {
                (
                    **id,
                    p.data().len() as u64,
                    p.epoch,
                    p.known_crc.unwrap_or_else(|| crate::format::crc32c_parallel(p.data())),
                )
            })
            .collect()
    }

    /// The state hash.
    pub fn state_hash(&self) -> StateHash {
        StateHash::compute(self.page_checksums().into_iter())
    }

    /// Writes the state as a checkpoint (atomically) and returns its state hash; `graph` is its
    /// dependency graph (derived pages whose page or a parent the state lacks are left out);
    /// `progress` counts the page bytes written.
    pub fn write_checkpoint(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
        graph: &[Derivation],
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<StateHash> {
        let (hash, file) = self.stage_checkpoint(path, metadata, graph, progress)?;
        file.commit()?;
        Ok(hash)
    }

    /// [`State::write_checkpoint`] up to the publication: the checkpoint is written and synced
    /// under a temporary name, which committing the returned file renames to `path`.
    pub fn stage_checkpoint(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
        graph: &[Derivation],
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<(StateHash, crate::fsutil::AtomicFile)> {
        let graph = crate::format::graph::retain_present(graph, |id| self.pages.contains_key(&id));
        let specs = self
            .pages
            .iter()
            .map(|(id, p)| PageSpec {
                id: *id,
                len: p.data().len() as u64,
                epoch: p.epoch,
                meta: p.meta.clone(),
            })
            .collect();
        let mut w = CheckpointWriter::create_with_graph(path, specs, metadata, &graph)?.with_progress(progress);
        for p in self.pages.values() {
            w.write(p.data())?;
        }
        w.finish_staged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::write_checkpoint;
    use crate::format::log::{LogOptions, LogWriter};

    fn d(page_id: u64, epoch: u64, op: Op<'_>) -> Delta<'_> {
        Delta {
            page_id,
            epoch,
            timestamp_ns: 0,
            source: "".into(),
            op,
        }
    }

    #[test]
    fn replay_applies_in_order_and_stops_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("a.ckpt");
        let spec = PageSpec {
            id: 1,
            len: 4,
            epoch: 0,
            meta: PageMeta::default(),
        };
        write_checkpoint(&ck, BTreeMap::new(), [(spec, &[0u8, 0, 0, 0][..])]).unwrap();
        let ckpt = Checkpoint::open(&ck).unwrap();
        let logdir = dir.path().join("a.log");
        let mut w = LogWriter::create(&logdir, ckpt.state_hash(), 1, LogOptions::default()).unwrap();
        w.append(&d(1, 1, Op::Sparse(vec![(0, &[1, 1])]))).unwrap();
        w.append(&d(1, 2, Op::Sparse(vec![(1, &[2, 2])]))).unwrap();
        w.append(&d(
            2,
            3,
            Op::Create {
                len: 2,
                meta: PageMeta::default(),
            },
        ))
        .unwrap();
        w.append(&d(1, 4, Op::Resize { len: 6 })).unwrap();
        w.finish().unwrap();
        let log = Log::open(&[logdir]).unwrap();

        let mut all = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        let s = all.replay(&log, ReplayLimit::default()).unwrap();
        assert_eq!((s.records, s.bytes_written, s.last_seq), (4, 4, Some(4)));
        assert_eq!(all.page(1).unwrap().data(), &[1, 2, 2, 0, 0, 0]);
        assert_eq!(all.page(2).unwrap().data(), &[0, 0]);

        let mut two = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        two.replay(
            &log,
            ReplayLimit {
                to_seq: Some(2),
                to_epoch: None,
            },
        )
        .unwrap();
        assert_eq!(two.page(1).unwrap().data(), &[1, 2, 2, 0]);
        assert!(two.page(2).is_none());
        let mut by_epoch = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
        by_epoch
            .replay(
                &log,
                ReplayLimit {
                    to_seq: None,
                    to_epoch: Some(3),
                },
            )
            .unwrap();
        assert_eq!(by_epoch.state_hash(), {
            let mut three = State::from_checkpoint(&ckpt, PageCheck::Check).unwrap();
            three
                .replay(
                    &log,
                    ReplayLimit {
                        to_seq: Some(3),
                        to_epoch: None,
                    },
                )
                .unwrap();
            three.state_hash()
        });
        assert_ne!(all.state_hash(), ckpt.state_hash());
        // The written checkpoint has the replayed state's hash.
        let out = dir.path().join("b.ckpt");
        all.write_checkpoint(&out, BTreeMap::new(), &[], None).unwrap();
        assert_eq!(Checkpoint::open(&out).unwrap().state_hash(), all.state_hash());
    }

    #[test]
    fn log_for_another_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("a.ckpt");
        write_checkpoint(
            &ck,
            BTreeMap::new(),
            [(
                PageSpec {
                    id: 1,
                    len: 1,
                    epoch: 0,
                    meta: PageMeta::default(),
                },
                &[0u8][..],
            )],
        )
        .unwrap();
        let ckpt = Checkpoint::open(&ck).unwrap();
        let logdir = dir.path().join("a.log");
        LogWriter::create(&logdir, StateHash([9; 32]), 1, LogOptions::default())
            .unwrap()
            .finish()
            .unwrap();
        let log = Log::open(&[logdir]).unwrap();
        let err = State::from_checkpoint(&ckpt, PageCheck::Trust)
            .unwrap()
            .replay(&log, ReplayLimit::default())
            .unwrap_err();
        assert!(matches!(err, Error::WrongBase { .. }));
        assert!(err.is_data_error());
    }

    #[test]
    fn rejected_delta_leaves_the_state_unchanged() {
        let mut s = State::empty();
        s.apply(&d(
            1,
            1,
            Op::Create {
                len: 3,
                meta: PageMeta::default(),
            },
        ))
        .unwrap();
        let before = s.state_hash();
        assert!(s.apply(&d(1, 2, Op::Sparse(vec![(2, &[1, 1])]))).is_err());
        assert!(s.apply(&d(1, 1, Op::Sparse(vec![(0, &[1])]))).is_err());
        assert_eq!(s.state_hash(), before);
    }
}
