//! The one place where files (and zero-filled memory from the OS) are memory-mapped.
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
    file: FileIdentity,
}

/// Which file a mapping was made of: its device, inode and length when mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }
    }
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
        let identity = FileIdentity::of(&file.metadata().map_err(|e| Error::io(path, e))?);
        if identity.len == 0 {
            return Ok(ReadOnlyMap {
                map: None,
                file: identity,
            });
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
        Ok(ReadOnlyMap {
            map: Some(map),
            file: identity,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True for an empty file (nothing is mapped).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }
}

/// A private, copy-on-write mapping of a whole file: the bytes read are the file's, and a write
/// changes this process's copy of the OS page it falls in, never the file. Handed to code that
/// writes to what it is given (a Python array or tensor) while the file stays as it was.
pub struct PrivateMap {
    map: memmap2::MmapMut,
}

impl PrivateMap {
    /// Maps `path` copy-on-write, where `path` is still the file `read` was mapped from (same
    /// device, inode and length), so that an offset found in `read` names the same bytes here.
    /// Refused when the file was replaced or has changed length since, or is empty.
    pub fn of_same_file(path: &Path, read: &ReadOnlyMap) -> Result<PrivateMap> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let identity = FileIdentity::of(&file.metadata().map_err(|e| Error::io(path, e))?);
        if identity != read.file || identity.len == 0 {
            return Err(Error::Invalid(format!(
                "{}: not the file that was read (replaced, or its length changed)",
                path.display()
            )));
        }
        // SAFETY: the mapping is private, so no write through it reaches the file or another
        // process; per the module contract the file is not truncated or modified in place while
        // mapped, so the bytes behind it stay valid for the mapping's lifetime.
        let map = unsafe { memmap2::MmapOptions::new().map_copy(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(PrivateMap { map })
    }

    /// The address of the first mapped byte. Only an address: the holder of the mapping writes
    /// through it (no Rust reference to the bytes is handed out, so none can see them change).
    pub fn address(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: an empty file is not mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Pages of at least this many bytes are zero-filled memory from the OS; smaller ones are heap
/// vectors.
const ZEROED_MAP_MIN: usize = 1 << 20;

/// Writable, zero-filled bytes. Large buffers come from an anonymous mapping, so the bytes that
/// are never written cost no resident memory (a created 8 GiB page that receives one write costs
/// one OS page); small ones from the heap.
pub enum ZeroedBytes {
    /// A heap buffer.
    Heap(Vec<u8>),
    /// An anonymous private mapping.
    Map(memmap2::MmapMut),
}

impl ZeroedBytes {
    /// `len` zero bytes, or the reason they cannot be had (the allocation is fallible: a length
    /// read off disk may be more than the machine has).
    pub fn new(len: u64) -> std::result::Result<ZeroedBytes, String> {
        let n = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit this machine's address space"))?;
        if n < ZEROED_MAP_MIN {
            let mut v = Vec::new();
            v.try_reserve_exact(n)
                .map_err(|e| format!("cannot allocate {len} bytes: {e}"))?;
            v.resize(n, 0);
            return Ok(ZeroedBytes::Heap(v));
        }
        // Without MAP_NORESERVE: the kernel refuses a mapping it could never back, which gives a
        // clear error here instead of the OOM killer later.
        memmap2::MmapMut::map_anon(n)
            .map(ZeroedBytes::Map)
            .map_err(|e| format!("cannot allocate {len} bytes: {e}"))
    }
}

impl std::ops::Deref for ZeroedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ZeroedBytes::Heap(v) => v,
            ZeroedBytes::Map(m) => m,
        }
    }
}

impl std::ops::DerefMut for ZeroedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ZeroedBytes::Heap(v) => v,
            ZeroedBytes::Map(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_mapping_is_made_of_the_file_that_was_read_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"the bytes read").unwrap();
        let read = ReadOnlyMap::open(&path).unwrap();
        let private = PrivateMap::of_same_file(&path, &read).unwrap();
        assert_eq!(private.len(), read.len());
        // A file renamed over the path (what every mmsb output does) is another file.
        let other = dir.path().join("g");
        std::fs::write(&other, b"the bytes read").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let e = PrivateMap::of_same_file(&path, &read).err().unwrap().to_string();
        assert!(e.contains("not the file that was read"), "{e}");
        // An empty file is not mapped at all.
        std::fs::write(&path, b"").unwrap();
        let empty = ReadOnlyMap::open(&path).unwrap();
        assert!(PrivateMap::of_same_file(&path, &empty).is_err());
    }
}
