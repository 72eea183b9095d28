//! Helpers shared by the integration tests: the built binary, temporary copies of testdata.
#![allow(dead_code)]

pub mod golden_files;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's testdata folder.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A command running the built `mmsb` binary in `dir`.
pub fn mmsb(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmsb"));
    c.current_dir(dir);
    c
}

/// Runs `mmsb ARGS` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    mmsb(dir).args(args).output().expect("mmsb runs")
}

/// Runs `mmsb ARGS` in `dir` and asserts that it succeeded (showing its stderr if not).
pub fn ok(dir: &Path, args: &[&str]) -> Output {
    let o = run(dir, args);
    assert_eq!(code(&o), 0, "mmsb {args:?}: {}", stderr(&o));
    o
}

/// The state hash `mmsb replay --device cpu ARGS` prints.
pub fn replay_hash(dir: &Path, args: &[&str]) -> String {
    let mut a = vec!["replay", "--device", "cpu", "--json"];
    a.extend_from_slice(args);
    json(&ok(dir, &a))["state_hash"]
        .as_str()
        .expect("a state hash")
        .to_string()
}

/// Runs `tests/py/SCRIPT ARGS` in `dir` with the Python that has the peers installed
/// (`MMSB_PYTHON`, which scripts/test.sh sets), and returns its stdout.
pub fn python(script: &str, dir: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    let py = std::env::var("MMSB_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(&py)
        .arg(&script)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("No module named"),
        "the Python peer is missing ({err}); install it with `pip install -r tests/py/requirements.txt` (scripts/test.sh does)"
    );
    assert!(o.status.success(), "python {script:?} {args:?} failed: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit code, stdout and stderr of a run.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses stdout as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

/// Copies a file or directory of testdata into `dir`, returning the copy's path.
pub fn copy_testdata(name: &str, dir: &Path) -> PathBuf {
    let from = testdata().join(name);
    let to = dir.join(name);
    if from.is_dir() {
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    } else {
        std::fs::copy(&from, &to).unwrap();
    }
    to
}

/// Temporary outputs of mmsb writes in `dir` (none once every write has finished or been
/// stopped by a signal).
pub fn stale(dir: &Path) -> Vec<PathBuf> {
    mmsb::fsutil::stale_temp_outputs(dir)
}
