//! Atomic file creation: write to a temporary file in the target's directory, fsync it, rename it
//! over the target, fsync the directory. A crash at any point leaves either the old file or the
//! new one, never a mix; an error or a drop before `commit` removes the temporary file.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written that appears at its path only when committed.
pub struct AtomicFile {
    target: PathBuf,
    file: File,
    temp: tempfile::TempPath,
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl AtomicFile {
    /// Creates a temporary file beside `target`.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (file, temp) = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(target, e))?
            .into_parts();
        Ok(AtomicFile {
            target: target.to_owned(),
            file,
            temp,
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temporary file's path (for writers that open the file by name themselves).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flushes the file to disk and renames it into place, then makes the rename durable.
    /// The new file takes the old one's permissions, or 0644 when there was none (temporary
    /// files are created 0600).
    pub fn commit(self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e| Error::io(&self.target, e);
        let mode = std::fs::metadata(&self.target)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
        self.file.sync_all().map_err(io)?;
        drop(self.file);
        self.temp
            .persist(&self.target)
            .map_err(|e| Error::io(&self.target, e.error))?;
        sync_dir(parent_dir(&self.target))
    }
}

/// fsyncs a directory, so that a rename or file creation in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(path)?;
    f.file().write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.commit()
}

/// A directory being filled that appears at its path only when committed (for log outputs:
/// a reader never sees a log whose last segments are still missing).
pub struct AtomicDir {
    target: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl AtomicDir {
    /// Creates an empty temporary directory beside `target`, which must not exist yet (or be an
    /// empty directory): an output log never replaces a log the user has.
    pub fn create(target: &Path) -> Result<AtomicDir> {
        if let Ok(mut entries) = std::fs::read_dir(target)
            && entries.next().is_some()
        {
            return Err(Error::Invalid(format!(
                "{}: exists and is not empty; choose a new output directory",
                target.display()
            )));
        }
        if target.exists() && !target.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: exists and is not a directory",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempdir_in(parent_dir(target))
            .map_err(|e| Error::io(target, e))?;
        Ok(AtomicDir {
            target: target.to_owned(),
            temp: Some(temp),
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.temp.as_ref().expect("present until commit").path()
    }

    /// fsyncs the directory, renames it into place and makes the rename durable. The files in it
    /// must already be synced (a [`crate::format::log::LogWriter`] syncs on `finish`).
    pub fn commit(mut self) -> Result<()> {
        let temp = self.temp.take().expect("present until commit");
        sync_dir(temp.path())?;
        let kept = temp.keep();
        if self.target.is_dir() {
            // An empty directory is in the way: rename(2) replaces it atomically.
            std::fs::remove_dir(&self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        std::fs::rename(&kept, &self.target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            Error::io(&self.target, e)
        })?;
        sync_dir(parent_dir(&self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_appears_until_commit_and_nothing_stays_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            std::io::Write::write_all(f.file(), b"new").unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"old");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_directory_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.log");
        {
            let d = AtomicDir::create(&target).unwrap();
            std::fs::write(d.path().join("a"), b"1").unwrap();
            assert!(!target.exists());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "dropped: nothing left"
        );
        let d = AtomicDir::create(&target).unwrap();
        std::fs::write(d.path().join("a"), b"1").unwrap();
        d.commit().unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = AtomicDir::create(&target).err().expect("a non-empty target is refused");
        assert!(e.to_string().contains("not empty"), "{e}");
    }
}
