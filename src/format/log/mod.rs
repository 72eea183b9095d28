//! Log segments: a header naming the state the log applies to, then framed records.
//! See docs/FORMAT.md, "Log segment" and "Torn tail and corruption". This module reads a
//! log (a chain of segments); `frame` holds the bytes of one frame, `segment` scans one
//! segment, `pieces` walks a segment piece by piece for a GPU upload, `writer` appends.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, Error, Result};
use crate::format::record::{Delta, OPTIONAL_TYPE_MIN, TargetPage};
use crate::page::StateHash;
use rayon::prelude::*;

mod frame;
mod pieces;
mod segment;
mod writer;

pub use frame::*;
pub use pieces::*;
pub use segment::*;
pub use writer::*;

/// Magic bytes at offset 0 of a log segment.
pub const MAGIC: [u8; 8] = *b"MMSBLOG\0";
/// Length of a version-1.0 segment header.
pub const SEGMENT_HEADER_LEN: usize = 72;
/// Length of a record frame's header.
pub const FRAME_HEADER_LEN: usize = 32;
/// Frame flag: the payload is one zstd frame with its content size recorded.
pub const FLAG_ZSTD: u8 = 1;
/// Frame flag (format 1.1): the record is not the last of its atomic group. A group is a run of
/// records with this bit set closed by one without it; a log that ends inside a group ends in a
/// torn tail from the group's first record.
pub const FLAG_GROUP_CONTINUES: u8 = 2;
/// Largest decompressed payload a reader accepts (4 GiB); larger payloads are stored raw.
pub const MAX_DECOMPRESSED: u64 = 4 << 30;
/// File-name extension of segment files.
pub const SEGMENT_EXT: &str = "mmsblog";

/// The bytes of the segment files named by `paths` (as [`expand_paths`] lists them), for a
/// progress total: a path that cannot be listed or read counts 0.
pub fn segment_bytes<P: AsRef<Path>>(paths: &[P]) -> u64 {
    paths
        .iter()
        .filter_map(|p| expand_paths(&[p.as_ref()]).ok())
        .flatten()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Lists the segment files named by `paths`: files as given, directories expanded to the
/// `*.mmsblog` files in them.
pub fn expand_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|q| q.extension().is_some_and(|x| x == SEGMENT_EXT))
                .collect();
            inner.sort();
            if inner.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: directory holds no .{SEGMENT_EXT} segment files",
                    p.display()
                )));
            }
            out.extend(inner);
        } else {
            out.push(p.to_owned());
        }
    }
    Ok(out)
}

/// The header of the segment file at `path`, read alone.
pub fn read_segment_header(path: &Path) -> Result<SegmentHeader> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(SEGMENT_HEADER_LEN);
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    SegmentHeader::parse(&bytes).map_err(|e| e.at(path))
}

/// The torn last record of a log, as a crash in the middle of an append leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the torn record starts; everything before it is whole.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub len: u64,
}

/// A log: its segments in order, every problem found in them, and the torn tail if any.
pub struct Log {
    segments: Vec<Segment>,
    problems: Vec<Error>,
    torn_tail: Option<TornTail>,
}

/// One record read from a log, with where it came from. Its payload is decompressed when first
/// asked for.
pub struct LogRecord<'a> {
    /// The segment.
    pub segment: &'a Segment,
    /// The frame.
    pub frame: FrameRef,
    payload: std::cell::OnceCell<Cow<'a, [u8]>>,
}

impl<'a> LogRecord<'a> {
    /// The payload, decompressed (up to the format's 4 GiB limit).
    pub fn payload(&self) -> Result<&[u8]> {
        self.payload_for_page(|_| TargetPage::Unknown)
    }

    /// The payload, decompressed only when its declared size fits the page it targets;
    /// `page_len(page_id)` says what the reader knows of that page (see
    /// [`frame_payload_for_page`]).
    pub fn payload_for_page(&self, page_len: impl FnOnce(u64) -> TargetPage) -> Result<&[u8]> {
        if let Some(p) = self.payload.get() {
            return Ok(p);
        }
        let p = self.segment.payload_for_page(&self.frame, page_len)?;
        Ok(self.payload.get_or_init(|| p))
    }

    /// Decodes the payload. `None` for an optional record type this build does not know.
    pub fn delta(&self) -> Result<Option<Delta<'_>>> {
        self.delta_for_page(|_| TargetPage::Unknown)
    }

    /// [`LogRecord::delta`], decompressing only a payload that fits its page (see
    /// [`LogRecord::payload_for_page`]): what a reader that knows the pages calls.
    pub fn delta_for_page(&self, page_len: impl FnOnce(u64) -> TargetPage) -> Result<Option<Delta<'_>>> {
        if self.frame.kind >= OPTIONAL_TYPE_MIN {
            return Ok(None);
        }
        let payload = self.payload_for_page(page_len)?;
        Delta::decode(self.frame.kind, payload, self.frame.payload_offset())
            .map(Some)
            .map_err(|e| e.at(self.segment.path()))
    }
}

impl Log {
    /// Opens the segments named by `paths` (files or directories) and checks that they form one
    /// log: the same base state, segment numbers 0, 1, 2, ... and gapless sequence numbers.
    /// Problems in the bytes are collected in [`Log::problems`]; only I/O errors fail the call.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Log> {
        Ok(Log::open_with(paths, 0, |_, p| Ok((Segment::open(p)?, ())))?.0)
    }

    /// Opens a log reading only its frame headers: the record checksums over the payloads are
    /// not checked ([`Log::payloads_checked`] is false), which saves reading every payload byte
    /// on the CPU. For a reader that checks them elsewhere before using any record (the GPU
    /// apply checks them on the device), and that calls [`Log::reopen_checked`] when one fails.
    /// Everything else (headers, chaining, sequence numbers, damage) is checked as by
    /// [`Log::open`].
    pub fn open_deferred<P: AsRef<Path>>(paths: &[P]) -> Result<Log> {
        Ok(Log::open_with(paths, 0, |_, p| Ok((Segment::open_deferred(p)?, ())))?.0)
    }

    /// Opens a log to append to it: its last segment file (in name order, which is segment
    /// order for the files a writer names). The others are not read: their payloads were
    /// checked while each was the last one a writer opened, and an append so costs at most the
    /// last segment's bytes, not the whole log's (a sync log of a thousand steps, a segment
    /// each, appends as fast as one of ten). Damage in them is `mmsb verify`'s to find. The
    /// last segment's checksums are checked when records may still go into it (it is shorter
    /// than `segment_size`); one the next record will not join has only its frame headers read
    /// ([`Log::open_deferred`]).
    pub fn open_for_append<P: AsRef<Path>>(paths: &[P], segment_size: u64) -> Result<Log> {
        Log::open_tail(paths, u64::MAX, |p| {
            let s = Segment::open_deferred(p)?;
            if s.file_len() < segment_size {
                Segment::open(p)
            } else {
                Ok(s)
            }
        })
    }

    /// Opens the segments named by `paths` from walks of their pieces
    /// ([`Segment::open_from_pieces`]); `pieces(i)` gives the walks of the `i`-th segment file as
    /// [`expand_paths`] lists them (each asked for once). The second result has an entry per
    /// segment of [`Log::segments`], in the same order: the runs of its frames that walks of its
    /// pieces decoded, where it has them.
    #[allow(clippy::type_complexity)]
    pub fn open_from_pieces<P: Send>(
        paths: &[PathBuf],
        pieces: &(dyn Fn(usize) -> Vec<PieceWalk<P>> + Sync),
    ) -> Result<(Log, Vec<Option<VisitedPieces<P>>>)> {
        Log::open_with(paths, 0, |i, p| Segment::open_from_pieces(p, pieces(i)))
    }

    /// The same segments opened again with every checksum checked: the exact verdict on a log
    /// opened with [`Log::open_deferred`] whose record checksums did not all match.
    pub fn reopen_checked(&self) -> Result<Log> {
        let paths: Vec<&Path> = self.segments.iter().map(|s| s.path()).collect();
        // A log that left out its first segments (`drop_segments_before`) starts where it did.
        let first = self.segments.first().map_or(0, |s| s.header.segment_no);
        Ok(Log::open_with(&paths, first, |_, p| Ok((Segment::open(p)?, ())))?.0)
    }

    /// Opens, as [`Log::open`] does, the segments named by `paths` from the one that holds
    /// record `from_seq` on (the last whose first record is at most `from_seq`), found by
    /// reading segment headers from the last segment backward: a follower that has applied the
    /// records before `from_seq` reads what it has not, however long the log has grown. The
    /// segments before are not opened, so nothing about them is checked.
    pub fn open_from<P: AsRef<Path>>(paths: &[P], from_seq: u64) -> Result<Log> {
        Log::open_tail(paths, from_seq, Segment::open)
    }

    /// [`Log::open_from`], opening the segments as [`Log::open_deferred`] does.
    pub fn open_deferred_from<P: AsRef<Path>>(paths: &[P], from_seq: u64) -> Result<Log> {
        Log::open_tail(paths, from_seq, Segment::open_deferred)
    }

    fn open_tail<P: AsRef<Path>>(
        paths: &[P],
        from_seq: u64,
        open_segment: impl Fn(&Path) -> Result<Segment> + Sync,
    ) -> Result<Log> {
        let all = expand_paths(paths)?;
        let mut first = (0, 0);
        for (i, p) in all.iter().enumerate().rev() {
            let header = read_segment_header(p)?;
            if header.first_seq <= from_seq {
                first = (i, header.segment_no);
                break;
            }
        }
        Ok(Log::open_with(&all[first.0..], first.1, |_, p| Ok((open_segment(p)?, ())))?.0)
    }

    /// Whether every listed record's checksum has been checked.
    pub fn payloads_checked(&self) -> bool {
        self.segments.iter().all(|s| s.payloads_checked)
    }

    /// Opens each segment file (its index in [`expand_paths`]'s list, its path) with
    /// `open_segment`, which also returns something of its own per segment (returned in the
    /// order of the log's segments).
    fn open_with<P: AsRef<Path>, X: Send>(
        paths: &[P],
        first_segment_no: u64,
        open_segment: impl Fn(usize, &Path) -> Result<(Segment, X)> + Sync,
    ) -> Result<(Log, Vec<X>)> {
        let mut problems = Vec::new();
        let mut opened_ok = Vec::new();
        // Segments are independent until chained: map and scan them in parallel.
        let opened: Vec<Result<(Segment, X)>> = {
            expand_paths(paths)?
                .par_iter()
                .enumerate()
                .map(|(i, p)| open_segment(i, p))
                .collect()
        };
        for s in opened {
            match s {
                Ok(s) => opened_ok.push(s),
                Err(e) if e.is_data_error() => problems.push(e),
                Err(e) => return Err(e),
            }
        }
        opened_ok.sort_by_key(|(s, _)| s.header.segment_no);
        let (segments, extras): (Vec<Segment>, Vec<X>) = opened_ok.into_iter().unzip();
        let chain = |s: &Segment, offset: u64, why: String| Error::Corrupt {
            path: s.path.clone(),
            offset,
            problem: Corruption::SegmentChain(why),
        };
        for (i, s) in segments.iter().enumerate() {
            let expected = i as u64 + first_segment_no;
            if s.header.segment_no != expected {
                problems.push(chain(
                    s,
                    16,
                    format!(
                        "segment number {} where {expected} was expected (is a segment missing or given twice?)",
                        s.header.segment_no
                    ),
                ));
            }
            if s.header.base != segments[0].header.base {
                problems.push(chain(
                    s,
                    32,
                    format!(
                        "base state {} differs from segment 0's {}",
                        s.header.base, segments[0].header.base
                    ),
                ));
            }
            if let Some(prev) = i.checked_sub(1).map(|j| &segments[j]) {
                let next = prev.header.first_seq.checked_add(prev.frames.len() as u64);
                if prev.end == SegmentEnd::Clean && Some(s.header.first_seq) != next {
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: 24,
                        problem: Corruption::SequenceGap {
                            expected: next.unwrap_or(u64::MAX),
                            found: s.header.first_seq,
                        },
                    });
                }
            }
        }
        let mut torn_tail = None;
        let last = segments.len().saturating_sub(1);
        for (i, s) in segments.iter().enumerate() {
            if let SegmentEnd::Damaged {
                offset,
                problem,
                tearable,
            } = &s.end
            {
                if *tearable && i == last {
                    torn_tail = Some(TornTail {
                        path: s.path.clone(),
                        offset: *offset,
                        len: s.file_len() - offset,
                    });
                } else if *tearable {
                    // A crash tears only the record being appended: in a segment that has a
                    // successor, damage is corruption.
                    let why = match problem {
                        Corruption::TornTail { why, .. } => why.clone(),
                        other => other.to_string(),
                    };
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: *offset,
                        problem: Corruption::CorruptRecord {
                            why,
                            context: "in a segment that has a successor",
                        },
                    });
                } else {
                    problems.push(Error::Corrupt {
                        path: s.path.clone(),
                        offset: *offset,
                        problem: problem.clone(),
                    });
                }
            }
        }
        let log = Log {
            segments,
            problems,
            torn_tail,
        };
        Ok((log, extras))
    }

    /// Leaves out the leading segments whose records all come before `seq`, for a reader that
    /// has applied them (the chain was checked when the log was opened; its problems stay).
    pub fn drop_segments_before(&mut self, seq: u64) {
        let keep_from = self
            .segments
            .iter()
            .rposition(|s| s.header.first_seq <= seq)
            .unwrap_or(0);
        self.segments.drain(..keep_from);
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Every corruption found (a torn tail is not one of them: see [`Log::torn_tail`]).
    pub fn problems(&self) -> &[Error] {
        &self.problems
    }
    /// The torn tail of the last segment, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }
    /// The base state the log applies to (`None` for a log with no readable segment).
    pub fn base(&self) -> Option<StateHash> {
        self.segments.first().map(|s| s.header.base)
    }
    /// Fails with the first corruption, if any.
    pub fn check(&self) -> Result<()> {
        match self.problems.first() {
            Some(Error::Corrupt { path, offset, problem }) => Err(Error::Corrupt {
                path: path.clone(),
                offset: *offset,
                problem: problem.clone(),
            }),
            Some(other) => Err(Error::Invalid(other.to_string())),
            None => Ok(()),
        }
    }
    /// Fails with [`Error::WrongBase`] unless the log was written against the state `state`.
    pub fn check_base(&self, state: StateHash) -> Result<()> {
        match self.segments.first() {
            Some(seg) if seg.header.base != state => Err(Error::WrongBase {
                path: seg.path.clone(),
                log_base: seg.header.base.to_hex(),
                checkpoint_state: state.to_hex(),
            }),
            _ => Ok(()),
        }
    }

    /// Fails when the log ends in a torn tail, saying `why` that matters to the caller (for
    /// those that must not silently leave the cut record out).
    pub fn refuse_torn_tail(&self, why: &str) -> Result<()> {
        match &self.torn_tail {
            Some(t) => Err(Error::Corrupt {
                path: t.path.clone(),
                offset: t.offset,
                problem: Corruption::TornTail {
                    len: t.len,
                    why: why.into(),
                },
            }),
            None => Ok(()),
        }
    }

    /// Sequence number of the last whole record.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.frames.last().map(|f| f.seq))
    }
    /// Every whole record, in sequence order (payloads are decompressed when asked for). Stops
    /// after the first damaged segment: records after damage cannot be put in sequence.
    pub fn records(&self) -> impl Iterator<Item = LogRecord<'_>> {
        let usable = self
            .segments
            .iter()
            .position(|s| s.end != SegmentEnd::Clean)
            .map_or(self.segments.len(), |i| i + 1);
        self.segments[..usable].iter().flat_map(|s| {
            s.frames.iter().map(move |f| LogRecord {
                segment: s,
                frame: *f,
                payload: std::cell::OnceCell::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crc32c;
    use crate::format::lock::LockWait;
    use crate::format::record::{Op, TYPE_CREATE};

    fn delta(page_id: u64, epoch: u64, data: &[u8]) -> Delta<'_> {
        Delta {
            page_id,
            epoch,
            timestamp_ns: 1,
            source: "t".into(),
            op: Op::Sparse(vec![(0, data)]),
        }
    }

    fn write_log(dir: &Path, n: u64, options: LogOptions) -> PathBuf {
        let logdir = dir.join("l.log");
        let mut w = LogWriter::create(&logdir, StateHash([7; 32]), 1, options).unwrap();
        for i in 0..n {
            w.append(&delta(i % 3, i + 1, &[i as u8; 100])).unwrap();
        }
        w.finish().unwrap();
        logdir
    }

    #[test]
    fn a_writer_refuses_misuse_by_kind_and_writes_nothing() {
        use crate::error::WriterRefusal;
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 2, LogOptions::default());
        let before = std::fs::read(&expand_paths(&[&logdir]).unwrap()[0]).unwrap();
        assert!(matches!(
            LogWriter::create(&logdir, StateHash([7; 32]), 1, LogOptions::default()),
            Err(Error::LogWriter(WriterRefusal::HoldsSegments { dir })) if dir == logdir
        ));
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        assert!(matches!(
            w.commit_group(),
            Err(Error::LogWriter(WriterRefusal::NoGroupOpen))
        ));
        w.begin_group().unwrap();
        assert!(matches!(
            w.begin_group(),
            Err(Error::LogWriter(WriterRefusal::GroupAlreadyOpen))
        ));
        w.abort_group().unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&expand_paths(&[&logdir]).unwrap()[0]).unwrap(), before);
        let empty = dir.path().join("empty.log");
        std::fs::create_dir(&empty).unwrap();
        assert!(LogWriter::open(&empty, LogOptions::default()).is_err());
    }

    #[test]
    fn records_framed_in_parallel_are_the_bytes_appended_one_by_one() {
        // More than the group buffer (8 MiB) and than one task's chunk, with a record that
        // compresses (Auto), so every path of the group's framing is taken.
        let data: Vec<Vec<u8>> = (0..2500u64)
            .map(|i| {
                if i % 7 == 0 {
                    vec![0; 4000]
                } else {
                    // Bytes that do not compress.
                    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    (0..4000)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        })
                        .collect()
                }
            })
            .collect();
        let opts = LogOptions {
            compression: Compression::Auto,
            ..LogOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (one, many) = (dir.path().join("one.log"), dir.path().join("many.log"));
        let mut w = LogWriter::create(&one, StateHash([7; 32]), 1, opts).unwrap();
        w.begin_group().unwrap();
        for (i, d) in data.iter().enumerate() {
            w.append(&delta(i as u64, i as u64 + 1, d)).unwrap();
        }
        w.commit_group().unwrap();
        w.finish().unwrap();
        let mut w = LogWriter::create(&many, StateHash([7; 32]), 1, opts).unwrap();
        w.begin_group().unwrap();
        let first = w
            .append_many_in_group(data.len(), |i| {
                let d = delta(i as u64, i as u64 + 1, &data[i]);
                Ok((d.kind(), d.encode()?))
            })
            .unwrap();
        w.commit_group().unwrap();
        w.finish().unwrap();
        assert_eq!(first, 1);
        let bytes = |l: &Path| std::fs::read(segment_path(l, 0)).unwrap();
        assert!(bytes(&one).len() > 8 << 20);
        assert!(bytes(&one) == bytes(&many), "the same frames, byte for byte");
        let log = Log::open(&[&many]).unwrap();
        assert!(log.problems().is_empty() && log.torn_tail().is_none());
        assert_eq!(log.last_seq(), Some(2500));
    }

    #[test]
    fn records_read_back_across_rotated_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 1000,
            durability: Durability::Never,
            compression: Compression::Auto,
        };
        let logdir = write_log(dir.path(), 20, opts);
        let log = Log::open(&[logdir]).unwrap();
        assert!(log.segments().len() > 2);
        assert!(log.problems().is_empty());
        assert_eq!(log.torn_tail(), None);
        let seqs: Vec<u64> = log.records().map(|r| r.frame.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        let r = log.records().nth(4).unwrap();
        assert_eq!(r.delta().unwrap().unwrap(), delta(4 % 3, 5, &[4; 100]));
    }

    #[test]
    fn truncated_last_record_is_a_torn_tail_and_recover_cuts_exactly_it() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let full = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &full[..full.len() - 10]).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.problems().is_empty());
        let torn = log.torn_tail().unwrap().clone();
        assert_eq!(log.records().count(), 4);
        drop(log);
        let backup = dir.path().join("cut.bin");
        assert_eq!(
            recover(&[&logdir], Some(&backup), LockWait::Fail).unwrap(),
            Some(Recovered {
                segment: torn.path.clone(),
                offset: torn.offset,
                len: torn.len,
                backup: backup.clone()
            })
        );
        assert_eq!(
            std::fs::read(&backup).unwrap(),
            &full[torn.offset as usize..full.len() - 10]
        );
        let log = Log::open(&[&logdir]).unwrap();
        assert_eq!(log.torn_tail(), None);
        assert_eq!(log.records().count(), 4);
        // Appending continues the sequence.
        drop(log);
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        assert_eq!(w.append(&delta(0, 100, &[1])).unwrap(), 5);
    }

    #[test]
    fn a_torn_last_record_whose_payload_holds_a_valid_frame_is_still_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 3, LogOptions::default());
        // A record whose bytes are themselves a whole frame, numbered as the one after it
        // would be (a log kept inside a page, say).
        let inner = encode_frame(5, 4, 0, &[9; 40]);
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        w.append(&delta(1, 50, &inner)).unwrap();
        drop(w);
        let seg = segment_path(&logdir, 0);
        let full = std::fs::read(&seg).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        let last = *log.segments()[0].frames().last().unwrap();
        drop(log);
        // Cut after the inner frame but before the record's end.
        std::fs::write(&seg, &full[..full.len() - 4]).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.problems().is_empty(), "{:?}", log.problems());
        assert_eq!(log.torn_tail().map(|t| t.offset), Some(last.offset));
        drop(log);
        assert!(
            recover(&[&logdir], Some(&dir.path().join("cut.bin")), LockWait::Fail)
                .unwrap()
                .is_some()
        );
        assert_eq!(Log::open(&[&logdir]).unwrap().last_seq(), Some(3));
    }

    #[test]
    fn a_group_reaches_the_log_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 2, LogOptions::default());
        let before = std::fs::read(segment_path(&logdir, 0)).unwrap();
        // Dropped before its commit (an error half way): the segment is cut back.
        {
            let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
            w.begin_group().unwrap();
            for i in 0..4 {
                w.append(&delta(i, 10 + i, &[1; 64])).unwrap();
            }
        }
        assert_eq!(std::fs::read(segment_path(&logdir, 0)).unwrap(), before);
        // Committed: every record, numbered on from the log, each but the last flagged.
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        w.begin_group().unwrap();
        let seqs: Vec<u64> = (0..4).map(|i| w.append(&delta(i, 10 + i, &[1; 64])).unwrap()).collect();
        w.commit_group().unwrap();
        drop(w);
        assert_eq!(seqs, [3, 4, 5, 6]);
        let log = Log::open(&[&logdir]).unwrap();
        let flags: Vec<u8> = log.segments()[0].frames().iter().map(|f| f.flags).collect();
        let g = FLAG_GROUP_CONTINUES;
        assert_eq!(flags, [0, 0, g, g, g, 0]);
        // Every prefix of the group's bytes reads as the log before it, plus a torn tail.
        let full = std::fs::read(segment_path(&logdir, 0)).unwrap();
        drop(log);
        for cut in (before.len()..full.len()).step_by(37) {
            std::fs::write(segment_path(&logdir, 0), &full[..cut]).unwrap();
            let log = Log::open(&[&logdir]).unwrap();
            assert!(log.problems().is_empty(), "cut at {cut}");
            assert_eq!(log.last_seq(), Some(2), "cut at {cut}");
            assert_eq!(
                log.torn_tail().map(|t| t.offset),
                (cut > before.len()).then_some(before.len() as u64)
            );
        }
    }

    #[test]
    fn a_group_never_spans_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 300,
            ..LogOptions::default()
        };
        let logdir = write_log(dir.path(), 1, opts);
        let mut w = LogWriter::open(&logdir, opts).unwrap();
        w.begin_group().unwrap();
        for i in 0..5 {
            w.append(&delta(i, 10 + i, &[1; 100])).unwrap();
        }
        w.commit_group().unwrap();
        drop(w);
        let log = Log::open(&[&logdir]).unwrap();
        let counts: Vec<usize> = log.segments().iter().map(|s| s.frames().len()).collect();
        assert_eq!(counts, [1, 5], "the group moved whole to a new segment, past its size");
        assert_eq!(log.segments()[1].header().first_seq, 2);
    }

    #[test]
    fn a_group_larger_than_the_write_buffer_is_written_in_pieces_and_taken_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 1, LogOptions::default());
        let before = std::fs::read(segment_path(&logdir, 0)).unwrap();
        let big = vec![3u8; 1 << 20];
        // 12 records of 1 MiB: past the 8 MiB buffer, so part of the group reaches the file
        // before the group ends; dropping the writer takes that part back.
        {
            let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
            w.begin_group().unwrap();
            for i in 0..12 {
                w.append(&delta(0, 10 + i, &big)).unwrap();
            }
            assert!(std::fs::metadata(segment_path(&logdir, 0)).unwrap().len() > before.len() as u64);
        }
        assert_eq!(std::fs::read(segment_path(&logdir, 0)).unwrap(), before);
        let mut w = LogWriter::open(&logdir, LogOptions::default()).unwrap();
        w.begin_group().unwrap();
        for i in 0..12 {
            w.append(&delta(0, 10 + i, &big)).unwrap();
        }
        w.commit_group().unwrap();
        drop(w);
        let log = Log::open(&[&logdir]).unwrap();
        let flags: Vec<u8> = log.segments()[0].frames().iter().map(|f| f.flags).collect();
        assert_eq!(flags.len(), 13);
        assert!(flags[1..12].iter().all(|&f| f == FLAG_GROUP_CONTINUES) && flags[12] == 0);
        assert!(log.problems().is_empty() && log.torn_tail().is_none());
    }

    #[test]
    fn sequence_numbers_never_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("wrap.log");
        std::fs::create_dir(&logdir).unwrap();
        let header = SegmentHeader {
            major: 1,
            minor: 1,
            header_len: 72,
            segment_no: 0,
            first_seq: u64::MAX,
            base: StateHash([7; 32]),
        };
        let mut b = header.encode();
        b.extend(encode_frame(u64::MAX, 5, 0, &[0; 40]));
        let second = b.len() as u64;
        b.extend(encode_frame(0, 5, 0, &[0; 40]));
        std::fs::write(segment_path(&logdir, 0), &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(
            matches!(&log.problems()[0], Error::Corrupt { offset, problem: Corruption::BadField { field: "seq", .. }, .. } if *offset == second + 8),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn the_group_flag_in_a_version_1_0_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("old.log");
        std::fs::create_dir(&logdir).unwrap();
        let header = SegmentHeader {
            major: 1,
            minor: 0,
            header_len: 72,
            segment_no: 0,
            first_seq: 1,
            base: StateHash([7; 32]),
        };
        let mut b = header.encode();
        b.extend(encode_frame(1, 5, FLAG_GROUP_CONTINUES, &[0; 40]));
        b.extend(encode_frame(2, 5, 0, &[0; 40]));
        std::fs::write(segment_path(&logdir, 0), &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert!(log.torn_tail().is_none());
        assert!(
            matches!(
                &log.problems()[0],
                Error::Corrupt {
                    offset: 89,
                    problem: Corruption::BadField {
                        field: "frame flags",
                        ..
                    },
                    ..
                }
            ),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn damaged_record_followed_by_whole_ones_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let mut b = std::fs::read(&seg).unwrap();
        let second = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 100 + 25 + 2 + 4 + 16 + 40;
        b[second] ^= 1;
        std::fs::write(&seg, &b).unwrap();
        let log = Log::open(&[&logdir]).unwrap();
        assert_eq!(log.torn_tail(), None);
        assert_eq!(log.problems().len(), 1);
        assert!(
            log.problems()[0].to_string().contains("with whole records after it"),
            "{}",
            log.problems()[0]
        );
        assert!(recover(&[logdir], Some(&dir.path().join("b")), LockWait::Fail).is_err());
    }

    /// Lists the frames it is shown, piece by piece.
    struct ListFrames;
    impl FrameVisitor for ListFrames {
        type Piece = Vec<FrameRef>;
        fn start_piece(&self) -> Vec<FrameRef> {
            Vec::new()
        }
        fn frame(&self, piece: &mut Vec<FrameRef>, _: &[u8], base: u64, frame: &FrameRef) {
            piece.push(FrameRef {
                offset: base + frame.offset,
                ..*frame
            });
        }
    }

    /// A writer of one segment of up to 64 MiB (no compression, no syncs), and 70 KB of
    /// patterned bytes to take payloads from.
    fn big_segment_writer(logdir: &Path) -> (LogWriter, Vec<u8>) {
        let opts = LogOptions {
            segment_size: 64 << 20,
            durability: Durability::Never,
            compression: Compression::None,
        };
        let w = LogWriter::create(logdir, StateHash([7; 32]), 1, opts).unwrap();
        (w, (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect())
    }

    #[test]
    fn the_parallel_scan_finds_the_in_order_scans_frames_or_declines() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("big.log");
        let (mut w, data) = big_segment_writer(&logdir);
        for i in 0..1500u64 {
            // Sizes from 1 byte to 70 KB, so pieces start inside payloads of every size.
            let n = ((i * 7919) % 70_000 + 1) as usize;
            w.append(&delta(i % 5, i + 1, &data[..n])).unwrap();
        }
        w.finish().unwrap();
        let seg = segment_path(&logdir, 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        // Several pieces, and more than one task's interleaved walks (the last group short).
        assert!(
            bytes.len() as u64 > (INTERLEAVED_WALKS as u64 + 1) * SCAN_PIECE,
            "pieces for more than one group of walks"
        );
        let header = SegmentHeader::parse(&bytes).unwrap();
        let (in_order, end) = scan_in_order(&bytes, &header, true);
        assert_eq!(end, SegmentEnd::Clean);
        assert_eq!(in_order.len(), 1500);
        for check in [true, false] {
            assert_eq!(scan_in_parallel(&bytes, &header, check).as_deref(), Some(&in_order[..]));
        }
        // Damage anywhere: the parallel scan declines, and the in-order scan says what it is.
        let mid = in_order[900].payload_offset() as usize + 3;
        bytes[mid] ^= 1;
        assert_eq!(scan_in_parallel(&bytes, &header, true), None);
        let (frames, end) = scan(&bytes, &header, true);
        assert_eq!(frames.len(), 900);
        assert!(matches!(end, SegmentEnd::Damaged { tearable: false, .. }), "{end:?}");
        // A header flip the deferred scan sees as well.
        bytes[mid] ^= 1;
        bytes[in_order[1200].offset as usize + 9] ^= 1;
        assert_eq!(scan_in_parallel(&bytes, &header, false), None);
        assert_eq!(scan(&bytes, &header, false).0.len(), 1200);
    }

    /// Walks `bytes` in pieces of `piece` bytes (skipping the pieces in `missing`, as if never
    /// read) and stitches the walks, given in reverse order; checks that the visitor saw each
    /// stitched run of a piece exactly as the frames list has it.
    fn stitch_pieces(bytes: &[u8], piece: usize, missing: &[usize]) -> Option<Vec<FrameRef>> {
        let header = SegmentHeader::parse(bytes).unwrap();
        let mut walks: Vec<PieceWalk<Vec<FrameRef>>> = bytes
            .chunks(piece)
            .enumerate()
            .filter(|(k, _)| !missing.contains(k))
            .map(|(k, b)| walk_piece(b, (k * piece) as u64, &ListFrames))
            .collect();
        walks.reverse();
        let (frames, runs) = stitch(bytes, &header, walks)?;
        let mut at = 0;
        for (n, seen) in runs {
            if let Some(seen) = seen {
                assert_eq!(seen, frames[at..at + n], "a piece's visited frames");
            }
            at += n;
        }
        assert_eq!(at, frames.len(), "the runs cover the frames");
        Some(frames)
    }

    #[test]
    fn walks_of_read_pieces_stitch_into_the_in_order_scans_frames_or_decline() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("big.log");
        let (mut w, data) = big_segment_writer(&logdir);
        // Record 300's payload holds a whole valid frame: a piece that starts just before it
        // finds a false first frame, which the chain from the header must step over.
        let hidden = encode_frame(1, TYPE_CREATE, 0, &[0u8; 100]);
        for i in 0..1500u64 {
            let n = ((i * 7919) % 70_000 + 1) as usize;
            if i == 300 {
                let mut payload = vec![0u8; 5000];
                payload[1000..1000 + hidden.len()].copy_from_slice(&hidden);
                w.append(&delta(i % 5, i + 1, &payload)).unwrap();
            } else {
                w.append(&delta(i % 5, i + 1, &data[..n])).unwrap();
            }
        }
        w.finish().unwrap();
        let mut bytes = std::fs::read(segment_path(&logdir, 0)).unwrap();
        let header = SegmentHeader::parse(&bytes).unwrap();
        let (in_order, end) = scan_in_order(&bytes, &header, true);
        assert_eq!((in_order.len(), end), (1500, SegmentEnd::Clean));
        // Frames crossing piece edges, pieces inside one frame, pieces never read.
        for (piece, missing) in [
            (4 << 20, vec![]),
            (1 << 20, vec![3, 4]),
            (40_000, vec![7]),
            (333, vec![]),
        ] {
            assert_eq!(
                stitch_pieces(&bytes, piece, &missing).as_deref(),
                Some(&in_order[..]),
                "pieces of {piece} bytes, {missing:?} missing"
            );
        }
        // A piece that starts inside record 300's payload, right before the hidden frame.
        let record = in_order[300].payload_offset() as usize;
        let false_start = record
            + bytes[record..]
                .windows(hidden.len())
                .position(|w| w == &hidden[..])
                .expect("the hidden frame is in record 300's payload");
        assert!(false_start < in_order[301].offset as usize);
        let walks = vec![
            walk_piece(&bytes[..false_start], 0, &ListFrames),
            walk_piece(&bytes[false_start..], false_start as u64, &ListFrames),
        ];
        assert_eq!(
            walks[1].first,
            Some(false_start as u64),
            "the second piece starts on the false frame"
        );
        let (frames, runs) = stitch(&bytes, &header, walks).unwrap();
        assert_eq!(frames, in_order, "the false start is stepped over");
        assert!(
            matches!(runs.first(), Some((_, Some(_)))),
            "the first piece's walk is used"
        );
        assert!(
            matches!(runs.last(), Some((_, None))),
            "the frames after the false start are read from the file, not taken from its walk"
        );
        // Damage: the stitch declines, and the segment is scanned as usual.
        let mid = in_order[900].offset as usize + 9;
        bytes[mid] ^= 1;
        assert_eq!(stitch_pieces(&bytes, 1 << 20, &[]), None);
        bytes[mid] ^= 1;
        // A torn tail: the stitch declines too.
        let cut = bytes.len() - 10;
        assert_eq!(stitch_pieces(&bytes[..cut], 1 << 20, &[]), None);
    }

    #[test]
    fn a_deferred_open_reads_headers_only_and_reopening_gives_the_full_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = write_log(dir.path(), 5, LogOptions::default());
        let seg = segment_path(&logdir, 0);
        let mut b = std::fs::read(&seg).unwrap();
        let frames = Log::open(&[&logdir]).unwrap().segments()[0].frames().to_vec();
        // A payload byte of the second record: its header still checks.
        b[frames[1].payload_offset() as usize + 40] ^= 1;
        std::fs::write(&seg, &b).unwrap();
        let deferred = Log::open_deferred(&[&logdir]).unwrap();
        assert!(!deferred.payloads_checked());
        assert!(deferred.problems().is_empty());
        assert_eq!(deferred.segments()[0].frames(), &frames[..]);
        let s = &deferred.segments()[0];
        let f = &frames[1];
        let stored = s.record_checksum(f);
        let start = f.offset as usize;
        let header = &s.bytes()[start..start + 28];
        let payload = &s.bytes()[f.payload_offset() as usize..(f.payload_offset() + f.payload_len) as usize];
        assert_ne!(crc32c::crc32c_append(crc32c(header), payload), stored);
        let full = deferred.reopen_checked().unwrap();
        assert!(full.payloads_checked());
        assert_eq!(full.problems().len(), 1);
        assert_eq!(full.segments()[0].frames().len(), 1);
        // A torn header is found by the header scan too, and classified by a full scan.
        b[frames[1].payload_offset() as usize + 40] ^= 1;
        std::fs::write(&seg, &b[..frames[4].offset as usize + 10]).unwrap();
        let deferred = Log::open_deferred(&[&logdir]).unwrap();
        assert!(deferred.segments()[0].payloads_checked());
        assert!(deferred.problems().is_empty());
        assert_eq!(deferred.torn_tail().map(|t| t.offset), Some(frames[4].offset));
    }

    #[test]
    fn sequence_gap_between_segments_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 300,
            durability: Durability::Never,
            compression: Compression::None,
        };
        let logdir = write_log(dir.path(), 6, opts);
        let seg1 = segment_path(&logdir, 1);
        let mut b = std::fs::read(&seg1).unwrap();
        let h = SegmentHeader::parse(&b).unwrap();
        let bumped = SegmentHeader {
            first_seq: h.first_seq + 1,
            ..h
        }
        .encode();
        b[..SEGMENT_HEADER_LEN].copy_from_slice(&bumped);
        std::fs::write(&seg1, &b).unwrap();
        let log = Log::open(&[logdir]).unwrap();
        assert!(
            log.problems().iter().any(|p| matches!(
                p,
                Error::Corrupt {
                    problem: Corruption::SequenceGap { .. },
                    ..
                }
            )),
            "{:?}",
            log.problems()
        );
    }

    #[test]
    fn segment_header_faults_are_named() {
        let h = SegmentHeader {
            major: 1,
            minor: 0,
            header_len: 72,
            segment_no: 0,
            first_seq: 1,
            base: StateHash([1; 32]),
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::parse(&b).unwrap(), h);
        b[8] = 9;
        assert!(matches!(
            SegmentHeader::parse(&b).unwrap_err().problem,
            Corruption::UnsupportedVersion { major: 9, .. }
        ));
        let mut b = h.encode();
        b[40] ^= 1;
        assert!(matches!(
            SegmentHeader::parse(&b).unwrap_err().problem,
            Corruption::ChecksumMismatch { .. }
        ));
        assert!(matches!(
            SegmentHeader::parse(b"MMSBCKPT").unwrap_err().problem,
            Corruption::BadMagic { .. }
        ));
    }

    #[test]
    fn zstd_payloads_that_are_not_frames_or_claim_too_much_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("z.log");
        let mut w = LogWriter::create(&logdir, StateHash([0; 32]), 1, LogOptions::default()).unwrap();
        // A zstd frame header (magic, single-segment, 8-byte content size) claiming 2^40 bytes.
        let mut huge = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        w.append_frame(&encode_frame(1, 4, FLAG_ZSTD, &huge)).unwrap();
        w.append_frame(&encode_frame(2, 4, FLAG_ZSTD, b"not zstd at all"))
            .unwrap();
        w.finish().unwrap();
        let log = Log::open(&[logdir]).unwrap();
        let errs: Vec<String> = log.records().map(|r| r.payload().err().unwrap().to_string()).collect();
        assert!(errs[0].contains("above the 4 GiB limit"), "{}", errs[0]);
        assert!(errs[1].contains("not a zstd frame"), "{}", errs[1]);
    }
}
