//! Appending to a log: the writer (under the log's lock, in groups, with segment rotation and a
//! durability policy), payload compression, and the cut of a torn tail.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, WriterRefusal};
use crate::format::lock::{LockWait, LogLock, SegmentCutLock};
use crate::format::record::Delta;
use crate::format::{FORMAT_MAJOR, FORMAT_MINOR};
use crate::page::StateHash;

use super::*;

/// When appended records are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync after every record: an acknowledged record survives a crash.
    EveryRecord,
    /// fdatasync once `records` records or `bytes` bytes are unsynced, whichever comes first.
    Every {
        /// Records between syncs.
        records: u64,
        /// Bytes between syncs.
        bytes: u64,
    },
    /// Only at rotation and [`LogWriter::finish`].
    Never,
    /// Never: what is written is left to the OS. An acknowledged record survives the writer's
    /// death at any instant (the kernel holds its bytes, and groups stay whole), not the
    /// machine's: after a power loss or an OS crash the latest records may be gone or torn, and
    /// a new segment may lack its header. For a log that only carries records to another
    /// process and is made again if lost.
    NoSync,
}

/// How records are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored raw.
    None,
    /// zstd at this level, always.
    Zstd(i32),
    /// zstd (level 3) when it saves at least 1/32 of a payload of 256 bytes or more: a masked
    /// record of changed floats (a regular mask, random values) saves about 1/16, and a
    /// decompression costs about a microsecond per record.
    Auto,
}

/// Options for a [`LogWriter`].
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A new segment is started before a record would take the current one past this size.
    pub segment_size: u64,
    /// When records reach the disk.
    pub durability: Durability,
    /// Payload compression.
    pub compression: Compression,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
            durability: Durability::EveryRecord,
            compression: Compression::None,
        }
    }
}

/// Appends records to a log directory, rotating segments and syncing per the durability policy.
///
/// A writer holds the log's exclusive lock ([`LogLock`]) from its creation to its drop. Records
/// appended between [`LogWriter::begin_group`] and [`LogWriter::commit_group`] form one atomic
/// group: a reader sees all of them or none.
pub struct LogWriter {
    pub(super) dir: PathBuf,
    pub(super) options: LogOptions,
    pub(super) base: StateHash,
    pub(super) segment_no: u64,
    pub(super) file: File,
    pub(super) file_path: PathBuf,
    pub(super) segment_len: u64,
    pub(super) segment_records: u64,
    pub(super) next_seq: u64,
    pub(super) unsynced_records: u64,
    pub(super) unsynced_bytes: u64,
    /// Bytes this writer has added to the log: frames, and the headers of segments it started.
    pub(super) appended: u64,
    /// The last segment is of an older minor version: the next record starts a new segment.
    pub(super) rotate_first: bool,
    pub(super) group: Option<OpenGroup>,
    /// A group was left open (it could not be cut back): nothing more may be appended.
    pub(super) poisoned: bool,
    pub(super) _lock: LogLock,
}

/// Where an open group started, and its frames not yet written.
pub(super) struct OpenGroup {
    pub(super) start_segment: u64,
    pub(super) start_len: u64,
    pub(super) start_records: u64,
    pub(super) start_seq: u64,
    pub(super) started: bool,
    /// Frames of the group not yet written, and how many: written in one call when the
    /// buffer fills or the group commits (a group of a million small records is a few writes,
    /// not a million). Each is encoded with GROUP_CONTINUES set; the last one stays here until
    /// the next record or the commit, which clears its flag (and fixes its checksums).
    pub(super) pending: Vec<u8>,
    pub(super) pending_frames: u64,
    /// Where the last frame starts in `pending`.
    pub(super) last_at: usize,
}

/// Bytes of a group's frames buffered before they are written.
const GROUP_BUFFER: usize = 8 << 20;

/// The path of segment `n` in a log directory.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.{SEGMENT_EXT}"))
}

impl LogWriter {
    /// Starts a new log in `dir` (created if missing; it must hold no segments) against the
    /// state `base`, with first sequence number `first_seq`. Takes the log's lock, failing when
    /// another process holds it.
    pub fn create(dir: &Path, base: StateHash, first_seq: u64, options: LogOptions) -> Result<LogWriter> {
        let lock = LogLock::exclusive(dir, LockWait::Fail)?;
        if expand_paths(&[dir]).is_ok() {
            return Err(Error::LogWriter(WriterRefusal::HoldsSegments { dir: dir.to_owned() }));
        }
        let (file, file_path) = new_segment(dir, 0, first_seq, base, true)?;
        Ok(LogWriter {
            dir: dir.to_owned(),
            options,
            base,
            segment_no: 0,
            file,
            file_path,
            segment_len: SEGMENT_HEADER_LEN as u64,
            segment_records: 0,
            next_seq: first_seq,
            unsynced_records: 0,
            unsynced_bytes: 0,
            appended: 0,
            rotate_first: false,
            group: None,
            poisoned: false,
            _lock: lock,
        })
    }

    /// Opens an existing log in `dir` to append to it, taking its lock (held already by a caller
    /// that took it with [`LockWait::Wait`], or failing when another process holds it). A log
    /// with corruption in its last segment ([`Log::open_for_append`]: the others are not read,
    /// and a full last one only to its frame headers) or a torn tail is refused (`mmsb recover`
    /// cuts a torn tail), and so is one whose last segment has a newer minor version than this
    /// build writes. A last segment of an older minor version is left as it is: appends go to a
    /// new segment.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogWriter> {
        let lock = LogLock::exclusive(dir, LockWait::Fail)?;
        let log = Log::open_for_append(&[dir], options.segment_size)?;
        log.check()?;
        log.refuse_torn_tail("run `mmsb recover` before appending")?;
        let last = log
            .segments()
            .last()
            .ok_or_else(|| Error::LogWriter(WriterRefusal::NoSegments { dir: dir.to_owned() }))?;
        if last.header().minor > FORMAT_MINOR {
            return Err(Error::LogWriter(WriterRefusal::NewerMinor {
                segment: last.path().to_owned(),
                major: FORMAT_MAJOR,
                minor: last.header().minor,
                writes: FORMAT_MINOR,
            }));
        }
        let file_path = last.path().to_owned();
        let file = OpenOptions::new()
            .append(true)
            .open(&file_path)
            .map_err(|e| Error::io(&file_path, e))?;
        Ok(LogWriter {
            dir: dir.to_owned(),
            options,
            base: last.header().base,
            segment_no: last.header().segment_no,
            file,
            file_path,
            segment_len: last.file_len(),
            segment_records: last.frames().len() as u64,
            next_seq: log.last_seq().map_or(last.header().first_seq, |s| s + 1),
            unsynced_records: 0,
            unsynced_bytes: 0,
            appended: 0,
            rotate_first: last.header().minor < FORMAT_MINOR,
            group: None,
            poisoned: false,
            _lock: lock,
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The path of the segment being appended to.
    pub fn current_segment(&self) -> &Path {
        &self.file_path
    }

    /// Starts an atomic group: the records appended until [`LogWriter::commit_group`] reach
    /// readers all together or not at all. A group is never split across segments (the segment
    /// size is exceeded instead), and nothing of it is synced before the commit.
    pub fn begin_group(&mut self) -> Result<()> {
        if self.group.is_some() {
            return Err(Error::LogWriter(WriterRefusal::GroupAlreadyOpen));
        }
        self.group = Some(OpenGroup {
            start_segment: self.segment_no,
            start_len: self.segment_len,
            start_records: self.segment_records,
            start_seq: self.next_seq,
            started: false,
            pending: Vec::new(),
            pending_frames: 0,
            last_at: 0,
        });
        Ok(())
    }

    /// Closes the open group: its last record is written without the continues flag, and the
    /// group is synced as the durability policy asks for one record.
    pub fn commit_group(&mut self) -> Result<()> {
        let Some(mut g) = self.group.take() else {
            return Err(Error::LogWriter(WriterRefusal::NoGroupOpen));
        };
        if g.pending_frames > 0 {
            close_group_frame(&mut g.pending[g.last_at..]);
            if let Err(e) = self.write_pending(&mut g) {
                self.group = Some(g);
                let _ = self.abort_group();
                return Err(e);
            }
            self.after_write()?;
        }
        Ok(())
    }

    /// Writes the group's buffered frames (the first write of a group may rotate the segment).
    fn write_pending(&mut self, g: &mut OpenGroup) -> Result<()> {
        if g.pending_frames == 0 {
            return Ok(());
        }
        let first = !std::mem::replace(&mut g.started, true);
        self.write_frames(&g.pending, g.pending_frames, first)?;
        g.pending.clear();
        g.pending_frames = 0;
        Ok(())
    }

    /// Drops the open group: the segment is cut back to where the group started (nothing of it
    /// was acknowledged), and its sequence numbers are given out again.
    pub fn abort_group(&mut self) -> Result<()> {
        let Some(g) = self.group.take() else { return Ok(()) };
        if g.started {
            // The group may have rotated into a new segment at its first record: then it
            // started right after that segment's header.
            let (start_len, start_records) = if self.segment_no != g.start_segment {
                (SEGMENT_HEADER_LEN as u64, 0)
            } else {
                (g.start_len, g.start_records)
            };
            // A reader in another process that mapped the segment while the group was being
            // written would fault on cut bytes: then the group is left open, which every reader
            // skips as a torn tail, and `recover` cuts later.
            if let Err(e) = self.cut_to(start_len) {
                self.poisoned = true;
                return Err(e);
            }
            self.segment_records = start_records;
        }
        self.next_seq = g.start_seq;
        self.unsynced_records = 0;
        self.unsynced_bytes = 0;
        Ok(())
    }

    /// Cuts the current segment back to `len` bytes (taking back an unacknowledged write), under
    /// the segment's cut lock; fails, leaving the bytes, when a reader has the segment open.
    pub(super) fn cut_to(&mut self, len: u64) -> Result<()> {
        let _cut = SegmentCutLock::take(&self.file_path, LockWait::Fail).map_err(|_| {
            Error::LogWriter(WriterRefusal::ReaderHoldsSegment {
                segment: self.file_path.clone(),
            })
        })?;
        self.file.set_len(len).map_err(|e| Error::io(&self.file_path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.file_path, e))?;
        self.appended = self.appended.saturating_sub(self.segment_len.saturating_sub(len));
        self.segment_len = len;
        Ok(())
    }

    /// Appends a delta; returns its sequence number once the durability policy is satisfied
    /// (inside a group: once it is written, to be synced with the group).
    pub fn append(&mut self, delta: &Delta<'_>) -> Result<u64> {
        self.append_payload(delta.kind(), &delta.encode()?)
    }

    /// Appends a graph record (DERIVE, UNDERIVE, PROPAGATED) stamped `timestamp_ns` and
    /// `source`, as [`LogWriter::append`] does a delta.
    pub fn append_graph(
        &mut self,
        record: &crate::format::graph::GraphRecord,
        timestamp_ns: u64,
        source: &str,
    ) -> Result<u64> {
        let payload = record.encode(timestamp_ns, source)?;
        self.append_payload(record.kind(), &payload)
    }

    /// Appends an encoded payload of record type `kind`: a delta's or a graph record's, or one
    /// copied unchanged from another log.
    pub(crate) fn append_payload(&mut self, kind: u8, payload: &[u8]) -> Result<u64> {
        let (flags, stored) = compress(payload, self.options.compression);
        let seq = self.next_seq;
        if let Some(mut g) = self.group.take() {
            // The frames before this one are final (the group continues after them): write
            // them out once the buffer is full, keeping this one back.
            let written = if g.pending.len() >= GROUP_BUFFER {
                self.write_pending(&mut g)
            } else {
                Ok(())
            };
            if written.is_ok() {
                g.last_at = g.pending.len();
                encode_frame_into(&mut g.pending, seq, kind, flags | FLAG_GROUP_CONTINUES, &stored);
                g.pending_frames += 1;
                self.next_seq += 1;
            }
            self.group = Some(g);
            written?;
            return Ok(seq);
        }
        let frame = encode_frame(seq, kind, flags, &stored);
        self.write_frame(&frame, true)?;
        self.next_seq += 1;
        self.after_write()?;
        Ok(seq)
    }

    /// Appends `count` records to the open group as [`LogWriter::append`] would one by
    /// one, with their encoding, compression, framing and checksums done in parallel:
    /// `record(i)` gives the `i`-th record's type and payload. Returns the first record's
    /// sequence number (the next one when `count` is 0). Memory stays bounded: the records are
    /// framed a wave of chunks at a time.
    pub fn append_many_in_group(
        &mut self,
        count: usize,
        record: impl Fn(usize) -> Result<(u8, Vec<u8>)> + Sync,
    ) -> Result<u64> {
        use rayon::prelude::*;
        let first_seq = self.next_seq;
        let Some(mut g) = self.group.take() else {
            return Err(Error::LogWriter(WriterRefusal::NoGroupOpen));
        };
        let compression = self.options.compression;
        // A few tasks per thread however few the records (a sync step has a few hundred large
        // ones), at most 1,024 records a task (a propagation flush has a million small ones).
        let wave = 4 * rayon::current_num_threads().max(1);
        let chunk = count.div_ceil(wave).clamp(1, 1024);
        let chunks: Vec<std::ops::Range<usize>> = (0..count)
            .step_by(chunk)
            .map(|from| from..(from + chunk).min(count))
            .collect();
        let mut result = Ok(());
        'waves: for wave in chunks.chunks(wave) {
            let framed: Vec<Result<(Vec<u8>, usize)>> = wave
                .par_iter()
                .map(|range| {
                    let mut buf = Vec::new();
                    let mut last_at = 0;
                    for i in range.clone() {
                        let (kind, payload) = record(i)?;
                        let (flags, stored) = compress(&payload, compression);
                        last_at = buf.len();
                        let seq = first_seq + i as u64;
                        encode_frame_into(&mut buf, seq, kind, flags | FLAG_GROUP_CONTINUES, &stored);
                    }
                    Ok((buf, last_at))
                })
                .collect();
            for (range, chunk) in wave.iter().zip(framed) {
                let (buf, last_at) = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        result = Err(e);
                        break 'waves;
                    }
                };
                // The frames before these are final (the group continues after them): written
                // out, and these kept back in their place, uncopied.
                if let Err(e) = self.write_pending(&mut g) {
                    result = Err(e);
                    break 'waves;
                }
                g.pending = buf;
                g.last_at = last_at;
                g.pending_frames = range.len() as u64;
                self.next_seq += range.len() as u64;
            }
        }
        self.group = Some(g);
        result.map(|()| first_seq)
    }

    #[cfg(test)]
    pub(super) fn append_frame(&mut self, frame: &[u8]) -> Result<u64> {
        self.write_frame(frame, true)?;
        self.after_write()?;
        self.next_seq += 1;
        Ok(self.next_seq - 1)
    }

    /// Writes one frame, first rotating to a new segment when `may_rotate` (the first record of
    /// a group, or one outside any) and the frame would take the segment past its size.
    pub(super) fn write_frame(&mut self, frame: &[u8], may_rotate: bool) -> Result<()> {
        self.write_frames(frame, 1, may_rotate)
    }

    /// [`LogWriter::write_frame`] for `count` whole frames one after another in `frames`.
    fn write_frames(&mut self, frame: &[u8], count: u64, may_rotate: bool) -> Result<()> {
        if self.poisoned {
            return Err(Error::LogWriter(WriterRefusal::UnfinishedGroup {
                segment: self.file_path.clone(),
            }));
        }
        let full = self.segment_records > 0 && self.segment_len + frame.len() as u64 > self.options.segment_size;
        if may_rotate && (full || self.rotate_first) {
            let seq = u64::from_le_bytes(frame[8..16].try_into().expect("a frame header"));
            self.rotate(seq)?;
        }
        // One write per frame: a crash leaves a prefix of it, never an interleaving.
        if let Err(e) = self.file.write_all(frame) {
            // A full disk leaves part of the frame: cut it, or no later append may follow it.
            if self.cut_to(self.segment_len).is_err() {
                self.poisoned = true;
            }
            return Err(Error::io(&self.file_path, e));
        }
        self.segment_len += frame.len() as u64;
        self.appended += frame.len() as u64;
        self.segment_records += count;
        self.unsynced_records += count;
        self.unsynced_bytes += frame.len() as u64;
        Ok(())
    }

    /// Syncs when the durability policy asks for it after a record (or a group) is complete.
    pub(super) fn after_write(&mut self) -> Result<()> {
        let due = match self.options.durability {
            Durability::EveryRecord => true,
            Durability::Every { records, bytes } => self.unsynced_records >= records || self.unsynced_bytes >= bytes,
            Durability::Never | Durability::NoSync => false,
        };
        if due { self.sync() } else { Ok(()) }
    }

    /// Starts the next segment, whose first record will be `first_seq`.
    pub(super) fn rotate(&mut self, first_seq: u64) -> Result<()> {
        self.sync()?;
        let n = self.segment_no + 1;
        let synced = self.options.durability != Durability::NoSync;
        let (file, path) = new_segment(&self.dir, n, first_seq, self.base, synced)?;
        self.segment_no = n;
        self.file = file;
        self.file_path = path;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.appended += SEGMENT_HEADER_LEN as u64;
        self.segment_records = 0;
        self.rotate_first = false;
        Ok(())
    }

    /// Bytes this writer has added to the log so far: the frames it wrote (a group's, once
    /// committed or written out) and the headers of the segments it started.
    pub fn bytes_appended(&self) -> u64 {
        self.appended
    }

    /// Flushes every appended record to disk (unless the policy is [`Durability::NoSync`]).
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced_records > 0 && self.options.durability != Durability::NoSync {
            self.file.sync_data().map_err(|e| Error::io(&self.file_path, e))?;
        }
        self.unsynced_records = 0;
        self.unsynced_bytes = 0;
        Ok(())
    }

    /// Syncs (unless the policy is [`Durability::NoSync`]) and closes the log. An open group is
    /// committed first.
    pub fn finish(mut self) -> Result<()> {
        if self.group.is_some() {
            self.commit_group()?;
        }
        self.sync()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // A group neither committed nor finished was never acknowledged: take it back out.
        let _ = self.abort_group();
    }
}

/// Creates segment `n` with its header in place before it appears under its name (written to a
/// temporary file, fsynced, renamed, directory fsynced): a crash during rotation leaves no
/// segment without a whole header, which a reader would have to call corrupt. Not `synced`
/// ([`Durability::NoSync`]), only the writer's death is covered: the rename is not synced.
pub(super) fn new_segment(
    dir: &Path,
    n: u64,
    first_seq: u64,
    base: StateHash,
    synced: bool,
) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, n);
    if path.exists() {
        return Err(Error::LogWriter(WriterRefusal::SegmentExists { segment: path }));
    }
    let header = SegmentHeader {
        major: FORMAT_MAJOR,
        minor: FORMAT_MINOR,
        header_len: SEGMENT_HEADER_LEN as u32,
        segment_no: n,
        first_seq,
        base,
    };
    let mut tmp = crate::fsutil::AtomicFile::create(&path)?;
    tmp.file()
        .write_all(&header.encode())
        .map_err(|e| Error::io(&path, e))?;
    if synced {
        tmp.commit()?;
    } else {
        tmp.commit_unsynced()?;
    }
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((file, path))
}

/// Compresses a payload per the policy: `(frame flags, stored bytes)`.
pub fn compress(payload: &[u8], policy: Compression) -> (u8, Cow<'_, [u8]>) {
    let level = match policy {
        Compression::None => return (0, Cow::Borrowed(payload)),
        _ if payload.len() as u64 > MAX_DECOMPRESSED => return (0, Cow::Borrowed(payload)),
        Compression::Zstd(l) => l,
        Compression::Auto if payload.len() < 256 => return (0, Cow::Borrowed(payload)),
        Compression::Auto => 3,
    };
    match zstd::bulk::compress(payload, level) {
        Ok(z) if policy != Compression::Auto || z.len() <= payload.len() - payload.len() / 32 => {
            (FLAG_ZSTD, Cow::Owned(z))
        }
        _ => (0, Cow::Borrowed(payload)),
    }
}

/// Cuts a torn tail (a torn last record, or the records of a group never closed) off the last
/// segment of a log, under the log's exclusive lock (a reader never has the cut bytes mapped):
/// the cut bytes are first written to `backup` (fsynced), then the segment is truncated and
/// fsynced. `backup` defaults to `SEGMENT.torn-OFFSET` beside the segment. Refuses a log with
/// corruption, and does nothing to a log without a torn tail. Returns what was cut.
pub fn recover<P: AsRef<Path>>(paths: &[P], backup: Option<&Path>, wait: LockWait) -> Result<Option<Recovered>> {
    let _locks = crate::format::lock::lock_logs(paths, wait)?;
    let log = Log::open(paths)?;
    log.check()?;
    let Some(torn) = log.torn_tail().cloned() else {
        return Ok(None);
    };
    let seg = log
        .segments()
        .iter()
        .find(|s| s.path() == torn.path)
        .expect("the torn tail is in one of the segments");
    let cut = seg.map.bytes()[torn.offset as usize..].to_vec();
    drop(log);
    let backup = backup
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(format!("{}.torn-{}", torn.path.display(), torn.offset)));
    crate::fsutil::write_atomic(&backup, &cut)?;
    let _cut = SegmentCutLock::take(&torn.path, wait)?;
    let f = OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(|e| Error::io(&torn.path, e))?;
    f.set_len(torn.offset).map_err(|e| Error::io(&torn.path, e))?;
    f.sync_all().map_err(|e| Error::io(&torn.path, e))?;
    Ok(Some(Recovered {
        segment: torn.path,
        offset: torn.offset,
        len: torn.len,
        backup,
    }))
}

/// What [`recover`] cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovered {
    /// The segment cut.
    pub segment: PathBuf,
    /// Where the cut began (the segment's new length).
    pub offset: u64,
    /// The bytes cut.
    pub len: u64,
    /// Where they were saved.
    pub backup: PathBuf,
}
