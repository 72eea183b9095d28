//! The log lock (docs/FORMAT.md, "The log lock"), two advisory `flock(2)` locks:
//!
//! - the **writer lock**, on the log directory itself: every writer of the log holds it
//!   exclusively for as long as it may append or cut (and keeps its pid in the file `mmsb.lock`
//!   inside, so that a refused writer can name the holder);
//! - the **segment read lock**, on each segment file: a reader holds it shared while the segment
//!   is mapped, and a writer that cuts a segment (`recover`, an aborted group) takes it
//!   exclusively, so no reader ever has bytes cut from under its mapping (SIGBUS).
//!
//! Appending takes no segment lock, so readers and a long-lived writer never wait for each
//! other: a reader sees whole records and closed groups only (format 1.1), whatever the writer
//! is doing. A reader creates nothing.
//!
//! `flock` conflicts between two open files even in one process, so this module keeps a
//! per-process table of the locks held: taking a lock the process already holds only counts one
//! more holder.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The file inside a log directory that holds the pid of the writer holding the lock (removed
/// when it lets go; one left by a killed writer names a process that no longer holds anything).
pub const LOCK_FILE: &str = "mmsb.lock";

/// What a writer does when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once, naming the holder's pid.
    Fail,
    /// Block until the holder lets go.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

struct Held {
    mode: Mode,
    holders: usize,
    /// The pid file an exclusive holder wrote, removed before the lock is let go.
    pid_file: Option<PathBuf>,
    _dir: Arc<File>,
}

fn table() -> &'static Mutex<HashMap<PathBuf, Held>> {
    static TABLE: std::sync::OnceLock<Mutex<HashMap<PathBuf, Held>>> = std::sync::OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// A held log lock; dropping the last holder in the process releases it.
#[derive(Debug)]
pub struct LogLock {
    key: Option<PathBuf>,
}

impl Drop for LogLock {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = t.get_mut(&key) {
            h.holders -= 1;
            if h.holders == 0 {
                if let Some(p) = &h.pid_file {
                    let _ = std::fs::remove_file(p);
                }
                // Closing the directory releases the flock.
                t.remove(&key);
            }
        }
    }
}

/// The directory a log path stands for: itself when it is a directory, else the segment file's
/// directory.
pub fn log_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_owned();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Takes the write lock of every log directory among `paths` (segments or directories), in
/// one order, so that two processes locking the same logs cannot deadlock.
pub fn lock_logs<P: AsRef<Path>>(paths: &[P], wait: LockWait) -> Result<Vec<LogLock>> {
    let mut dirs: Vec<PathBuf> = paths.iter().map(|p| log_dir(p.as_ref())).collect();
    dirs.sort();
    dirs.dedup();
    dirs.iter().map(|d| LogLock::exclusive(d, wait)).collect()
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pid in the writer lock's pid file of the log directory `dir`, read without touching the
/// lock: the writer holding it, or (left by a killed writer) a process that no longer runs.
pub fn writer_pid(dir: &Path) -> Option<u32> {
    holder_pid(&dir.join(LOCK_FILE))
}

fn holder_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl LogLock {
    /// Takes the exclusive lock of the log directory `dir` (created if missing), as every writer
    /// must before it reads the log it is about to extend or cut. With [`LockWait::Fail`], a lock
    /// held by another process fails at once with an error naming its pid.
    pub fn exclusive(dir: &Path, wait: LockWait) -> Result<LogLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let key = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = t.get_mut(&key) {
            h.holders += 1;
            return Ok(LogLock { key: Some(key) });
        }
        let dir_file = File::open(dir).map_err(|e| Error::io(dir, e))?;
        match flock(&dir_file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && wait == LockWait::Wait => {
                drop(t);
                flock(&dir_file, libc::LOCK_EX).map_err(|e| Error::io(dir, e))?;
                t = table().lock().unwrap_or_else(|p| p.into_inner());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let holder = holder_pid(&path).map_or("another writer".into(), |p| format!("another writer, pid {p}"));
                return Err(Error::Locked {
                    path: dir.to_owned(),
                    holder,
                });
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        // Informational only (the flock is the lock), so written in place, not atomically.
        let pid = format!("{}\n", std::process::id());
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        t.insert(
            key.clone(),
            Held {
                mode: Mode::Exclusive,
                holders: 1,
                pid_file: Some(path),
                _dir: Arc::new(dir_file),
            },
        );
        Ok(LogLock { key: Some(key) })
    }

    /// Takes the read lock of a segment file, for as long as it is mapped, waiting while a
    /// writer cuts it. Not taken (nor needed) where this process holds the log's writer lock:
    /// then only this process can cut the segment, and it cuts only bytes appended after its own
    /// readers mapped it. Where the file cannot be opened nothing is locked (the read fails on
    /// its own).
    pub fn segment_shared(segment: &Path) -> Result<LogLock> {
        let (Ok(key), Ok(dir)) = (std::fs::canonicalize(segment), std::fs::canonicalize(log_dir(segment))) else {
            return Ok(LogLock { key: None });
        };
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        if t.get(&dir).is_some_and(|h| h.mode == Mode::Exclusive) {
            return Ok(LogLock { key: None });
        }
        if let Some(h) = t.get_mut(&key) {
            h.holders += 1;
            return Ok(LogLock { key: Some(key) });
        }
        let Ok(file) = File::open(segment) else {
            return Ok(LogLock { key: None });
        };
        if flock(&file, libc::LOCK_SH | libc::LOCK_NB).is_err() {
            // A segment is being cut: wait without holding the table, so that this process's
            // other threads can go on.
            drop(t);
            flock(&file, libc::LOCK_SH).map_err(|e| Error::io(segment, e))?;
            t = table().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = t.get_mut(&key) {
                h.holders += 1;
                return Ok(LogLock { key: Some(key) });
            }
        }
        t.insert(
            key.clone(),
            Held {
                mode: Mode::Shared,
                holders: 1,
                pid_file: None,
                _dir: Arc::new(file),
            },
        );
        Ok(LogLock { key: Some(key) })
    }
}

/// A segment file locked exclusively for a cut: no reader has it mapped while this is held.
#[derive(Debug)]
pub struct SegmentCutLock {
    _file: File,
}

impl SegmentCutLock {
    /// Takes the segment's read lock exclusively. With [`LockWait::Fail`], a segment that
    /// readers have open fails at once (with [`Error::Locked`]).
    pub fn take(segment: &Path, wait: LockWait) -> Result<SegmentCutLock> {
        let file = File::open(segment).map_err(|e| Error::io(segment, e))?;
        let op = match wait {
            LockWait::Fail => libc::LOCK_EX | libc::LOCK_NB,
            LockWait::Wait => libc::LOCK_EX,
        };
        match flock(&file, op) {
            Ok(()) => Ok(SegmentCutLock { _file: file }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Locked {
                path: segment.to_owned(),
                holder: "a reader that has the segment open".into(),
            }),
            Err(e) => Err(Error::io(segment, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_reenters_its_writer_lock_and_the_pid_file_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let a = LogLock::exclusive(&log, LockWait::Fail).unwrap();
        let b = LogLock::exclusive(&log, LockWait::Fail).unwrap();
        assert_eq!(
            std::fs::read_to_string(log.join(LOCK_FILE)).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(a);
        assert!(log.join(LOCK_FILE).exists(), "still held once");
        drop(b);
        assert!(!log.join(LOCK_FILE).exists(), "the pid file goes with the lock");
    }

    #[test]
    fn a_mapped_segment_cannot_be_cut_and_a_writer_needs_no_read_lock() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("00000000.mmsblog");
        std::fs::write(&seg, b"x").unwrap();
        let reading = LogLock::segment_shared(&seg).unwrap();
        let e = SegmentCutLock::take(&seg, LockWait::Fail).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        drop(reading);
        drop(SegmentCutLock::take(&seg, LockWait::Fail).unwrap());
        // Under the writer lock, this process's reads take no segment lock: its own cuts stay
        // possible.
        let _w = LogLock::exclusive(dir.path(), LockWait::Fail).unwrap();
        let _r = LogLock::segment_shared(&seg).unwrap();
        SegmentCutLock::take(&seg, LockWait::Fail).unwrap();
    }

    #[test]
    fn a_held_lock_conflicts_with_another_open_description_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _mine = LogLock::exclusive(dir.path(), LockWait::Fail).unwrap();
        // Another open file description conflicts as another process's would.
        let other = File::open(dir.path()).unwrap();
        let e = flock(&other, libc::LOCK_SH | libc::LOCK_NB).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
}
