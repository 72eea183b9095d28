//! The one place where files are memory-mapped.
//!
//! Contract: mmsb maps checkpoints, which are immutable once renamed into place, and log
//! segments, which only grow by appends beyond the mapped length. A file truncated or rewritten
//! in place by another program while mapped can make reads fault (SIGBUS); `mmsb recover` is the
//! only mmsb command that shortens a file, and it must not run beside a reader of the same log.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// A read-only mapping of a whole file (or an empty slice for an empty file).
pub struct ReadOnlyMap {
    map: Option<memmap2::Mmap>,
}

impl ReadOnlyMap {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<ReadOnlyMap> {
        Self::open_with(path, false)
    }

    /// Maps `path` read-only; with `populate`, the kernel maps every page up front (one call
    /// instead of a page fault per 4 KiB, for files that will be read whole).
    pub fn open_with(path: &Path, populate: bool) -> Result<ReadOnlyMap> {
        // Checked before the open: opening a FIFO blocks until a writer comes, forever.
        let kind = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.file_type();
        if kind.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: is a directory, not a file",
                path.display()
            )));
        }
        if !kind.is_file() {
            return Err(Error::Invalid(format!(
                "{}: not a regular file (a FIFO, device or socket): mmsb reads files it can map",
                path.display()
            )));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(ReadOnlyMap { map: None });
        }
        let mut options = memmap2::MmapOptions::new();
        if populate {
            options.populate();
        }
        // SAFETY: the mapping is read-only; per the module contract the file is not truncated or
        // modified in place while mapped, so the bytes behind the slice stay valid and unchanged
        // for the mapping's lifetime.
        let map = unsafe { options.map(&file) }.map_err(|e| Error::io(path, e))?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(ReadOnlyMap { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }
}
