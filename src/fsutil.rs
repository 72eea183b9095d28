//! Atomic file creation: write to a temporary file in the target's directory, fsync it, rename it
//! over the target, fsync the directory. A crash at any point leaves either the old file or the
//! new one, never a mix; an error or a drop before `commit` removes the temporary file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, OutputRefusal, Result};

/// Every temporary output ends with this: `.NAME.RANDOM.mmsb-tmp` beside its target.
pub const TEMP_SUFFIX: &str = ".mmsb-tmp";

/// Temporary outputs this process is writing: what a signal handler removes before the process
/// dies ([`remove_live_temp_outputs`]), since no destructor runs then.
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A registered temporary output; dropping it takes it off the list (the file itself is removed
/// by its owner).
struct LiveTemp(PathBuf);

impl LiveTemp {
    /// Creates a temporary output with `make` (which returns it and its path) and registers
    /// it, both under the registry's lock: a signal handler removing the registered outputs
    /// waits for the two, so no output exists unregistered (a signal right after the file
    /// appears would otherwise leave it).
    fn create<T>(make: impl FnOnce() -> Result<(T, PathBuf)>) -> Result<(T, LiveTemp)> {
        let mut live = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        let (made, path) = make()?;
        live.push(path.clone());
        Ok((made, LiveTemp(path)))
    }
}

impl Drop for LiveTemp {
    fn drop(&mut self) {
        let mut live = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = live.iter().position(|p| *p == self.0) {
            live.swap_remove(i);
        }
    }
}

/// Removes every temporary output this process has not committed yet. For a handler of SIGINT
/// or SIGTERM that ends the process right after: the outputs were never published.
pub fn remove_live_temp_outputs() {
    let live = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    for p in live.iter() {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP end the process (exit status 128 + the signal) after
/// removing the temporary outputs it was writing. For a program, such as the `mmsb` command,
/// whose only response to these signals is to stop.
pub fn remove_temp_outputs_on_signal() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            remove_live_temp_outputs();
            std::process::exit(128 + sig);
        }
    });
}

/// Temporary outputs that an mmsb write left in `dir` (a `kill -9`, a power cut): any such file
/// or directory there is one, unless an mmsb write into `dir` is running right now.
pub fn stale_temp_outputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with('.') && n.ends_with(TEMP_SUFFIX)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// [`stale_temp_outputs`] beside and inside the given files and log directories (where an
/// interrupted write of any of them would have left its temporary output).
pub fn stale_temp_outputs_near<P: AsRef<Path>>(paths: &[P]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let p = p.as_ref();
        dirs.push(parent_dir(p).to_owned());
        if p.is_dir() {
            dirs.push(p.to_owned());
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut out: Vec<PathBuf> = dirs.iter().flat_map(|d| stale_temp_outputs(d)).collect();
    out.sort();
    out.dedup();
    out
}

/// The file an output path should be written to: the path itself, or, for a symbolic link, the
/// file it points to (written through, as `cp` does, never replaced by a regular file). A FIFO,
/// device, socket or directory is refused: an output replaces a regular file or creates one.
pub fn resolve_output(path: &Path) -> Result<PathBuf> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(t) => t,
            // A dangling link: its target is created, as `cp` would.
            Err(_) => {
                let link = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
                parent_dir(path).join(link)
            }
        },
        _ => path.to_owned(),
    };
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => Err(Error::OutputRefused {
            path: path.to_owned(),
            refusal: OutputRefusal::IsDirectory,
        }),
        Ok(m) if !m.is_file() => Err(Error::OutputRefused {
            path: path.to_owned(),
            refusal: OutputRefusal::NotRegularFile,
        }),
        _ => Ok(target),
    }
}

/// Refuses an output that names one of the inputs: the same file (by device and inode, so
/// through a symbolic or a hard link too), or a file inside an input log directory. Checked
/// before anything is written.
pub fn refuse_output_naming_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let out_id = id(output);
    let out_dir = std::fs::canonicalize(parent_dir(output)).ok();
    for input in inputs {
        let same_file = out_id.is_some() && id(input) == out_id;
        let in_dir = input.is_dir() && out_dir.is_some() && std::fs::canonicalize(input).ok() == out_dir;
        if same_file || in_dir {
            return Err(Error::OutputRefused {
                path: output.to_owned(),
                refusal: OutputRefusal::NamesInput {
                    input: input.to_path_buf(),
                },
            });
        }
    }
    Ok(())
}

/// A file being written that appears at its path only when committed.
pub struct AtomicFile {
    target: PathBuf,
    file: File,
    temp: tempfile::TempPath,
    _live: LiveTemp,
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl AtomicFile {
    /// Creates a temporary file beside `target` (beside the file it links to, for a symbolic
    /// link; see [`resolve_output`], which also refuses outputs that are not regular files).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let target = &resolve_output(target)?;
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ((file, temp), live) = LiveTemp::create(|| {
            let (file, temp) = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(TEMP_SUFFIX)
                .tempfile_in(dir)
                .map_err(|e| Error::io(target, e))?
                .into_parts();
            let path = temp.to_path_buf();
            Ok(((file, temp), path))
        })?;
        Ok(AtomicFile {
            target: target.to_owned(),
            file,
            temp,
            _live: live,
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
        let target = self.target.clone();
        self.rename_into_place(true)?;
        sync_dir(parent_dir(&target))
    }

    /// [`AtomicFile::commit`] without either sync: the file appears whole or not at all to any
    /// process (a rename is atomic), but a power loss may leave it empty or absent.
    pub fn commit_unsynced(self) -> Result<()> {
        self.rename_into_place(false)
    }

    fn rename_into_place(self, synced: bool) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e| Error::io(&self.target, e);
        let mode = std::fs::metadata(&self.target)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
        if synced {
            self.file.sync_all().map_err(io)?;
        }
        drop(self.file);
        self.temp
            .persist(&self.target)
            .map_err(|e| Error::io(&self.target, e.error))?;
        Ok(())
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
    _live: LiveTemp,
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
        let (temp, live) = LiveTemp::create(|| {
            let temp = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(TEMP_SUFFIX)
                .tempdir_in(parent_dir(target))
                .map_err(|e| Error::io(target, e))?;
            let path = temp.path().to_owned();
            Ok((temp, path))
        })?;
        Ok(AtomicDir {
            target: target.to_owned(),
            temp: Some(temp),
            _live: live,
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.temp.as_ref().expect("present until commit").path()
    }

    /// fsyncs the directory, renames it into place and makes the rename durable. The files in it
    /// must already be synced (a log writer syncs on `finish`).
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
    fn outputs_that_name_an_input_or_are_not_files_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ckpt");
        std::fs::write(&input, b"x").unwrap();
        let link = dir.path().join("link.ckpt");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        match refuse_output_naming_input(&link, &[&input]) {
            Err(Error::OutputRefused {
                path,
                refusal: OutputRefusal::NamesInput { input: named },
            }) => assert_eq!((path, named), (link.clone(), input.clone())),
            other => panic!("{other:?}"),
        }
        assert!(refuse_output_naming_input(&dir.path().join("new.ckpt"), &[&input]).is_ok());
        let e = resolve_output(dir.path()).unwrap_err();
        assert!(matches!(
            e,
            Error::OutputRefused {
                refusal: OutputRefusal::IsDirectory,
                ..
            }
        ));
        assert!(e.to_string().ends_with(": output is a directory; name a file"), "{e}");
    }

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
