//! Test tools: synthetic states and logs from a seed, and the soak test that runs every
//! command against them.

pub mod generate;
pub mod propagation;
pub mod stress;

/// Replaces the log directory `dir` with a copy of its files renamed into place: the same bytes
/// in new files, as `compact` or a restore from a backup leaves a log. For tests of readers that
/// must notice that the log they follow is no longer the same files.
pub fn replace_log_with_copy(dir: &std::path::Path) -> std::io::Result<()> {
    let copy = dir.with_extension("copy");
    std::fs::create_dir(&copy)?;
    for f in std::fs::read_dir(dir)? {
        let f = f?.path();
        if let Some(name) = f.file_name() {
            std::fs::copy(&f, copy.join(name))?;
        }
    }
    std::fs::remove_dir_all(dir)?;
    std::fs::rename(&copy, dir)
}
