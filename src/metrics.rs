//! What one run of a command did, as monitoring reads it: a struct every embedder can read,
//! and the Prometheus text format (version 0.0.4) node_exporter's textfile collector reads,
//! written atomically.
//!
//! Every metric of a run is named `mmsb_<command>_...` (`mmsb_replay_duration_seconds`), so
//! that the files of several commands can sit in one collector directory without clashing;
//! labels are few and bounded (a phase, a problem kind), except the state hash, which is a label
//! of the run's info metric only (`mmsb_<command>_run_info`), as Prometheus' conventions have it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How a run ended, as the exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit 0.
    #[default]
    Ok,
    /// Exit 1: the data is bad (a corrupt file, a failed check), or `diff` found differences.
    DataBad,
    /// Exit 2: the request failed.
    Failed,
}

impl Outcome {
    /// How a run that failed with `e` ended: [`Outcome::DataBad`] when the data is bad
    /// ([`crate::Error::is_data_error`]), else [`Outcome::Failed`].
    pub fn of_error(e: &crate::Error) -> Outcome {
        if e.is_data_error() {
            Outcome::DataBad
        } else {
            Outcome::Failed
        }
    }

    /// The label value: `ok`, `data_bad` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::DataBad => "data_bad",
            Outcome::Failed => "failed",
        }
    }
}

/// The figures of one run of a command. Reports fill what they know through [`Measured`]; the
/// caller names the command, the inputs it read and how it ended. Read back from its JSON
/// (`Deserialize`) by embedders that carry it across a language boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The command (`replay`, `verify`, `derive_set`, ...): the metrics' name prefix after
    /// `mmsb_`, so letters, digits and underscores only.
    pub command: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the whole run, seconds.
    pub duration_seconds: f64,
    /// Bytes of the input files (checkpoints, log segments, tensor files) the run was given.
    pub read_bytes: u64,
    /// Bytes the run wrote: output files, or records appended to a log.
    pub written_bytes: u64,
    /// Log records applied, written or checked.
    pub records: u64,
    /// Pages the result holds, or pages written, compared or recomputed.
    pub pages: u64,
    /// Phase wall times, seconds, by phase name.
    pub phase_seconds: BTreeMap<String, f64>,
    /// The device the work ran on (`cpu`, `cuda:0`), where there is a choice.
    pub device: Option<String>,
    /// The state hash of the result, hex.
    pub state_hash: Option<String>,
    /// For `verify`: problems found, by kind (every kind, zeros included, so that a query over
    /// them never finds a series missing).
    pub problems: BTreeMap<String, u64>,
    /// Seconds since the Unix epoch when the run ended (the collector's staleness check).
    pub end_time_seconds: f64,
    /// The files the run was given, and when it started, for [`RunMetrics::end`].
    #[serde(skip)]
    run: Option<(RunFiles, u64, std::time::Instant)>,
}

/// The files a run was given, as its metrics count them.
#[derive(Debug, Clone, Default)]
pub struct RunFiles {
    /// Inputs it reads.
    pub read: Vec<PathBuf>,
    /// Outputs it writes whole (counted when the run succeeds).
    pub written: Vec<PathBuf>,
    /// Logs it appends to (their growth counts as written, whatever the outcome).
    pub appended: Vec<PathBuf>,
}

/// A report that knows some of a run's figures.
pub trait Measured {
    /// Adds this report's figures to `m`.
    fn measure(&self, m: &mut RunMetrics);
}

impl RunMetrics {
    /// Metrics for a run of `command` (letters, digits and `_`; anything else becomes `_`).
    pub fn new(command: &str) -> RunMetrics {
        let command = command
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        RunMetrics {
            command,
            ..RunMetrics::default()
        }
    }

    /// Metrics for a run of `command` over `files`, starting now: counts the inputs' bytes and
    /// notes the logs' sizes before any append.
    pub fn start(command: &str, files: RunFiles) -> RunMetrics {
        let mut m = RunMetrics::new(command);
        m.read_files(&files.read);
        let appended_before = files.appended.iter().map(|p| bytes_of(p)).sum();
        m.run = Some((files, appended_before, std::time::Instant::now()));
        m
    }

    /// Refuses a metrics file that names one of the run's inputs (before anything runs).
    pub fn refuse_output_naming_input(&self, out: &Path) -> Result<()> {
        let inputs: Vec<&Path> = self
            .run
            .iter()
            .flat_map(|(f, _, _)| f.read.iter().map(PathBuf::as_path))
            .collect();
        crate::fsutil::refuse_output_naming_input(out, &inputs)
    }

    /// Ends a run begun with [`start`](Self::start): the outputs' bytes (when it succeeded),
    /// the logs' growth, the outcome and the wall time since the start.
    pub fn end(&mut self, outcome: Outcome) {
        let Some((files, appended_before, started)) = self.run.take() else {
            return self.finish(outcome, 0.0);
        };
        if outcome == Outcome::Ok {
            self.wrote_files(&files.written);
        }
        let appended_after: u64 = files.appended.iter().map(|p| bytes_of(p)).sum();
        self.written_bytes += appended_after.saturating_sub(appended_before);
        self.finish(outcome, started.elapsed().as_secs_f64());
    }

    /// Adds a report's figures.
    pub fn add(&mut self, report: &impl Measured) -> &mut RunMetrics {
        report.measure(self);
        self
    }

    /// Adds the bytes of input files: a file's length, or for a directory (a log) the lengths
    /// of the files directly in it. Paths that cannot be read count nothing (the run itself
    /// reports them).
    pub fn read_files<P: AsRef<Path>>(&mut self, paths: &[P]) -> &mut RunMetrics {
        self.read_bytes += paths.iter().map(|p| bytes_of(p.as_ref())).sum::<u64>();
        self
    }

    /// Adds the bytes of output files the run wrote whole (a file, or a directory's files).
    pub fn wrote_files<P: AsRef<Path>>(&mut self, paths: &[P]) -> &mut RunMetrics {
        self.written_bytes += paths.iter().map(|p| bytes_of(p.as_ref())).sum::<u64>();
        self
    }

    /// Adds every number in `timings_ms` (a report's `timings_ms` struct, fields in
    /// milliseconds, nested structs' fields joined with `_`) as a phase, in seconds.
    pub fn phases_ms(&mut self, timings_ms: &impl Serialize) -> &mut RunMetrics {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
            match v {
                serde_json::Value::Number(n) => {
                    if let Some(ms) = n.as_f64() {
                        out.insert(prefix.to_owned(), ms / 1e3);
                    }
                }
                serde_json::Value::Object(fields) => {
                    for (k, v) in fields {
                        let name = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}_{k}")
                        };
                        walk(&name, v, out);
                    }
                }
                _ => {}
            }
        }
        if let Ok(v) = serde_json::to_value(timings_ms) {
            walk("", &v, &mut self.phase_seconds);
        }
        self
    }

    /// Records how the run ended and how long it took.
    pub fn finish(&mut self, outcome: Outcome, duration_seconds: f64) {
        self.outcome = outcome;
        self.duration_seconds = duration_seconds;
        self.end_time_seconds = crate::timing::now_ns() as f64 / 1e9;
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn to_prometheus_text(&self) -> String {
        let mut r = Registry::with_prefix(format!("mmsb_{}", self.command));
        let gauge = |v: f64| {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(v);
            g
        };
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        let mut info = vec![
            ("outcome".to_owned(), self.outcome.as_str().to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ];
        if let Some(d) = &self.device {
            info.push(("device".to_owned(), d.clone()));
        }
        if let Some(h) = &self.state_hash {
            info.push(("state_hash".to_owned(), h.clone()));
        }
        r.register(
            "run",
            "How the last run ended, the device it used and the state hash of its result",
            Info::new(info),
        );
        r.register("success", "1 when the last run exited 0, else 0", {
            let g = Gauge::<i64>::default();
            g.set(i64::from(self.outcome == Outcome::Ok));
            g
        });
        r.register(
            "duration_seconds",
            "Wall time of the last run",
            gauge(self.duration_seconds),
        );
        r.register(
            "last_run_timestamp_seconds",
            "When the last run ended, seconds since the Unix epoch",
            gauge(self.end_time_seconds),
        );
        r.register(
            "read_bytes",
            "Bytes of the input files the last run was given",
            counter(self.read_bytes),
        );
        r.register("written_bytes", "Bytes the last run wrote", counter(self.written_bytes));
        r.register(
            "records",
            "Log records the last run applied, wrote or checked",
            counter(self.records),
        );
        r.register(
            "pages",
            "Pages the last run's result holds, or pages it wrote or compared",
            counter(self.pages),
        );
        if !self.phase_seconds.is_empty() {
            let phases = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
            for (name, s) in &self.phase_seconds {
                phases.get_or_create(&vec![("phase".to_owned(), name.clone())]).set(*s);
            }
            r.register(
                "phase_duration_seconds",
                "Wall time of each phase of the last run",
                phases,
            );
        }
        if !self.problems.is_empty() {
            let problems = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
            for (kind, n) in &self.problems {
                problems
                    .get_or_create(&vec![("kind".to_owned(), kind.clone())])
                    .set(*n as f64);
            }
            r.register("problems", "Problems the last run found, by kind", problems);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &r);
        text
    }

    /// Writes [`to_prometheus_text`](Self::to_prometheus_text) to `path` atomically (a
    /// temporary file beside it, synced, renamed over it): a collector reading the directory
    /// sees the old file or the new, never half of one.
    pub fn write_prometheus(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_prometheus_text().as_bytes())
    }
}

/// Bytes of a file, or of the files directly in a directory (a log); 0 when it cannot be read.
pub fn bytes_of(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_metric_after_the_command_and_labels_the_state_hash() {
        let mut m = RunMetrics::new("derive-set");
        m.state_hash = Some("ab12".into());
        m.device = Some("cpu".into());
        m.records = 3;
        m.phases_ms(&serde_json::json!({"open": 1500.0, "load": {"alloc": 2.0}}));
        m.finish(Outcome::DataBad, 0.25);
        let t = m.to_prometheus_text();
        assert!(t.contains("mmsb_derive_set_records_total 3\n"), "{t}");
        assert!(t.contains("mmsb_derive_set_duration_seconds 0.25\n"), "{t}");
        assert!(t.contains("mmsb_derive_set_success 0\n"), "{t}");
        assert!(
            t.contains(r#"mmsb_derive_set_phase_duration_seconds{phase="open"} 1.5"#),
            "{t}"
        );
        assert!(
            t.contains(r#"mmsb_derive_set_phase_duration_seconds{phase="load_alloc"} 0.002"#),
            "{t}"
        );
        assert!(
            t.contains(r#"outcome="data_bad""#) && t.contains(r#"state_hash="ab12""#),
            "{t}"
        );
        assert!(t.contains("# TYPE mmsb_derive_set_run_info gauge\n"), "{t}");
    }

    #[test]
    fn a_directory_counts_the_files_in_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 10]).unwrap();
        std::fs::write(d.path().join("b"), [0u8; 5]).unwrap();
        let mut m = RunMetrics::new("x");
        m.read_files(&[d.path().to_path_buf(), d.path().join("a"), d.path().join("missing")]);
        assert_eq!(m.read_bytes, 25);
    }
}
