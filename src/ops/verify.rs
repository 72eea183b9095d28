//! `verify`: every check the format allows, collecting every problem rather than the first.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::log::Log;
use crate::format::record::LogPageLens;
use crate::graph::{GraphHistory, Rule, has_graph, read_history};
use crate::page::StateHash;
use crate::replay::{PageCheck, ReplayLimit, State};

/// What kind of mmsb file a path holds, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A checkpoint (`MMSBCKPT`).
    Checkpoint,
    /// A log segment (`MMSBLOG\0`), or a directory of them.
    Log,
    /// Neither.
    Unknown,
}

/// Tells a checkpoint from a log segment by its first eight bytes (a directory is a log).
pub fn file_kind(path: &Path) -> Result<FileKind> {
    use std::io::Read;
    let kind = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.file_type();
    if kind.is_dir() {
        return Ok(FileKind::Log);
    }
    if !kind.is_file() {
        // Opening a FIFO would block until a writer comes.
        return Err(Error::Invalid(format!(
            "{}: not a regular file (a FIFO, device or socket): mmsb reads files it can map",
            path.display()
        )));
    }
    let mut magic = [0u8; 64];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if let Some((what, todo)) = crate::format::sniff_foreign(&magic[..n], "")
        .filter(|_| !magic[..n].starts_with(&crate::format::log::MAGIC))
        .filter(|_| !magic[..n].starts_with(&crate::format::checkpoint::MAGIC))
    {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: 0,
            problem: crate::error::Corruption::NotMmsb {
                expected: "an mmsb checkpoint or log segment",
                what,
                todo,
            },
        });
    }
    Ok(match &magic[..n.min(8)] {
        m if m == crate::format::checkpoint::MAGIC => FileKind::Checkpoint,
        m if m == crate::format::log::MAGIC => FileKind::Log,
        _ => FileKind::Unknown,
    })
}

/// Splits paths into checkpoints and log segments by content; unknown files are errors.
pub fn classify(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut ckpts, mut logs) = (Vec::new(), Vec::new());
    for p in paths {
        match file_kind(p)? {
            FileKind::Checkpoint => ckpts.push(p.clone()),
            FileKind::Log => logs.push(p.clone()),
            FileKind::Unknown => {
                return Err(Error::Corrupt {
                    path: p.clone(),
                    offset: 0,
                    problem: crate::error::Corruption::BadMagic {
                        found: "neither MMSBCKPT nor MMSBLOG".into(),
                        expected: "an mmsb checkpoint or log segment",
                    },
                });
            }
        }
    }
    Ok((ckpts, logs))
}

/// One problem `verify` found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub file: PathBuf,
    /// Byte offset in the file, where one applies.
    pub offset: Option<u64>,
    /// `corrupt`, `torn_tail`, `delta_rejected`, `wrong_base`, `io`, `locked`, `out_of_memory` or `invalid`.
    pub kind: &'static str,
    /// Human-readable description (the whole error line).
    pub message: String,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Problem {
        let (file, offset, kind) = match e {
            Error::Corrupt { path, offset, .. } => (path.clone(), Some(*offset), "corrupt"),
            Error::DeltaRejected { path, offset, .. } => (path.clone(), Some(*offset), "delta_rejected"),
            Error::WrongBase { path, .. } => (path.clone(), Some(32), "wrong_base"),
            Error::HeldPagesNotBase { path, .. } => (path.clone(), None, "wrong_base"),
            Error::Io { path, .. } => (path.clone(), None, "io"),
            Error::Locked { path, .. } => (path.clone(), None, "locked"),
            Error::OutOfMemory(_) => (PathBuf::new(), None, "out_of_memory"),
            Error::OutputRefused { path, .. } => (path.clone(), None, "invalid"),
            Error::Graph(_) => (PathBuf::new(), None, "graph"),
            Error::Invalid(_) | Error::Gpu(_) | Error::LogWriter(_) | Error::Propagate(_) => {
                (PathBuf::new(), None, "invalid")
            }
        };
        Problem {
            file,
            offset,
            kind,
            message: e.to_string(),
        }
    }
}

/// A checkpoint as verify saw it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Path.
    pub path: PathBuf,
    /// Format version, `major.minor`.
    pub version: String,
    /// Pages.
    pub pages: u64,
    /// Page bytes.
    pub data_bytes: u64,
    /// The file's length.
    pub file_bytes: u64,
    /// State hash from the index.
    pub state_hash: StateHash,
}

/// A log as verify saw it.
#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    /// Segment files.
    pub segments: u64,
    /// Whole records.
    pub records: u64,
    /// First sequence number.
    pub first_seq: Option<u64>,
    /// Last whole record's sequence number.
    pub last_seq: Option<u64>,
    /// The base state the log names.
    pub base_state_hash: Option<StateHash>,
    /// Records applied to the checkpoint (when one was given).
    pub applied: u64,
}

/// Everything verify found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// True when no problem was found.
    pub ok: bool,
    /// Checkpoints checked.
    pub checkpoints: Vec<CheckpointReport>,
    /// The log, when segments were given.
    pub log: Option<LogReport>,
    /// The state hash after the log (or of the one checkpoint when no log was given).
    pub state_hash: Option<StateHash>,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
    /// Bytes of page data checksummed.
    pub bytes_checked: u64,
    /// Temporary outputs of interrupted mmsb writes found beside or inside the files given
    /// (safe to delete when no mmsb write is running there).
    pub stale_temp_outputs: Vec<PathBuf>,
    /// The dependency graph, when the state has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphCheck>,
}

/// What verify found of the dependency graph.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphCheck {
    /// Derived pages.
    pub derived_pages: u64,
    /// Edges (parent links).
    pub edges: u64,
    /// Derived pages whose inputs changed after the last propagation (not yet recomputed).
    pub stale_pages: u64,
    /// Sequence number of the last propagation.
    pub last_propagation: Option<u64>,
    /// With `--rederive`: derived pages whose bytes were checked against their rule.
    pub rederived: u64,
    /// With `--rederive`: derived pages skipped because their rule is a named derivation
    /// (only the program that registered it can run it).
    pub named_skipped: u64,
}

impl VerifyReport {
    /// The report of a verification that could not read its input at all: not ok, with that
    /// one problem (so that a caller asking for a report always gets one).
    pub fn unreadable(e: &Error) -> VerifyReport {
        VerifyReport {
            ok: false,
            checkpoints: Vec::new(),
            log: None,
            state_hash: None,
            problems: vec![Problem::from(e)],
            bytes_checked: 0,
            stale_temp_outputs: Vec::new(),
            graph: None,
        }
    }

    /// True when every problem is one of the data's (corruption, a torn tail, a rejected
    /// delta, a log for another state), none the environment's (I/O, a lock, memory): the
    /// command-line tool's exit status 1 rather than 2.
    pub fn only_data_problems(&self) -> bool {
        self.problems.iter().all(|p| {
            matches!(
                p.kind,
                "corrupt" | "torn_tail" | "delta_rejected" | "wrong_base" | "graph"
            )
        })
    }
}

/// Verifies checkpoints and (at most one chain of) log segments: every checksum, the layout
/// and its zero padding, sequence continuity, that the log belongs to the checkpoint, that
/// every delta applies, and the dependency graph (no cycle, no edge to a missing page). With
/// `rederive`, every derived page that is not stale is also derived again from its parents by
/// its built-in rule and compared with its bytes. With a log, exactly one checkpoint may be
/// given.
pub fn verify(paths: &[PathBuf], progress: Option<&AtomicU64>, rederive: bool) -> Result<VerifyReport> {
    let (ckpt_paths, log_paths) = classify(paths)?;
    if !log_paths.is_empty() && ckpt_paths.len() > 1 {
        return Err(Error::Invalid(
            "verify: with log segments, give exactly one checkpoint (the one the log applies to)".into(),
        ));
    }
    let mut problems: Vec<Error> = Vec::new();
    let mut checkpoints = Vec::new();
    let mut opened = Vec::new();
    let mut bytes_checked = 0;
    for p in &ckpt_paths {
        match Checkpoint::open(p) {
            Ok(c) => {
                let bad = c.check_pages(progress);
                bytes_checked += c.head().data_bytes();
                let h = c.head();
                checkpoints.push(CheckpointReport {
                    path: p.clone(),
                    version: format!("{}.{}", h.major, h.minor),
                    pages: h.pages.len() as u64,
                    data_bytes: h.data_bytes(),
                    file_bytes: h.file_len,
                    state_hash: h.state_hash(),
                });
                let clean = bad.is_empty();
                problems.extend(bad);
                opened.push((c, clean));
            }
            Err(e) if e.is_data_error() => problems.push(e),
            Err(e) => return Err(e),
        }
    }
    let mut state_hash = match &opened[..] {
        [(c, true)] => Some(c.state_hash()),
        _ => None,
    };
    let mut log_report = None;
    let mut torn = None;
    let mut graph = None;
    let mut graph_problems = Vec::new();
    if let ([(c, true)], true) = (&opened[..], log_paths.is_empty())
        && has_graph(c.head(), None)
    {
        let state = State::from_checkpoint(c, PageCheck::Trust)?;
        let h = read_history(c.head(), None, None)?;
        graph = check_graph(&h, &state, rederive, &mut graph_problems, c.path());
    }
    if !log_paths.is_empty() {
        let log = Log::open(&log_paths)?;
        problems.extend(log.problems().iter().map(clone_error));
        match crate::format::base::read(&log) {
            Err(e) if e.is_data_error() => problems.push(e),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        torn = log.torn_tail().cloned();
        let mut applied = 0;
        if let [(c, _)] = &opened[..] {
            let mut state = State::from_checkpoint(c, PageCheck::Trust)?;
            let mut found = Vec::new();
            match state.replay_collecting(&log, ReplayLimit::default(), &mut |e| {
                found.push(e);
                Ok(())
            }) {
                Ok(s) => applied = s.records,
                Err(e) => found.push(e),
            }
            let hash_ok = found.is_empty() && log.problems().is_empty() && state_hash.is_some();
            if found.is_empty() && log.problems().is_empty() && has_graph(c.head(), Some(&log)) {
                let h = read_history(c.head(), Some(&log), None)?;
                let at = log
                    .segments()
                    .first()
                    .map_or_else(|| c.path().to_owned(), |s| s.path().to_owned());
                for p in &h.problems {
                    graph_problems.push(Problem {
                        file: at.clone(),
                        offset: None,
                        kind: "graph",
                        message: format!("record {}: {}", p.seq, p.message),
                    });
                }
                graph = check_graph(&h, &state, rederive, &mut graph_problems, &at);
            }
            problems.extend(found);
            state_hash = hash_ok.then(|| state.state_hash());
        } else {
            state_hash = None;
            let mut lens = LogPageLens::default();
            for rec in log.records() {
                match rec.delta_for_page(|id| lens.target(id)) {
                    Ok(Some(d)) => lens.note(&d),
                    Ok(None) => {}
                    Err(e) => problems.push(e),
                }
            }
        }
        let segs = log.segments();
        log_report = Some(LogReport {
            segments: segs.len() as u64,
            records: segs.iter().map(|s| s.frames().len() as u64).sum(),
            first_seq: segs.first().map(|s| s.header().first_seq),
            last_seq: log.last_seq(),
            base_state_hash: log.base(),
            applied,
        });
    }
    let mut problems: Vec<Problem> = problems.iter().map(Problem::from).collect();
    problems.extend(graph_problems);
    if let Some(t) = torn {
        problems.push(Problem {
            file: t.path.clone(),
            offset: Some(t.offset),
            kind: "torn_tail",
            message: format!(
                "{}: at byte offset {}: torn tail of {} bytes (an incomplete last record; `mmsb recover` cuts it)",
                t.path.display(),
                t.offset,
                t.len
            ),
        });
    }
    Ok(VerifyReport {
        ok: problems.is_empty(),
        checkpoints,
        log: log_report,
        state_hash,
        problems,
        bytes_checked,
        stale_temp_outputs: crate::fsutil::stale_temp_outputs_near(paths),
        graph,
    })
}

/// The graph's summary (`None` without a graph) and, with `rederive`, every derived page that
/// is not stale derived again and compared with its bytes in `state`.
fn check_graph(
    h: &GraphHistory,
    state: &State<'_>,
    rederive: bool,
    problems: &mut Vec<Problem>,
    file: &Path,
) -> Option<GraphCheck> {
    let g = &h.graph;
    let derived: Vec<u32> = (0..g.len() as u32).filter(|&i| g.rule(i).is_some()).collect();
    if derived.is_empty() && h.graph_records == 0 {
        return None;
    }
    let stale = h.stale();
    let mut check = GraphCheck {
        derived_pages: derived.len() as u64,
        edges: derived.iter().map(|&i| g.parents(i).len() as u64).sum(),
        stale_pages: stale.iter().filter(|&&s| s).count() as u64,
        last_propagation: h.last_propagation,
        ..Default::default()
    };
    if !rederive {
        return Some(check);
    }
    let mut out = Vec::new();
    for &i in &derived {
        let rule = g.rule(i).expect("derived");
        if stale[i as usize] {
            continue;
        }
        if let Rule::Named(_) = rule {
            check.named_skipped += 1;
            continue;
        }
        let id = g.id(i);
        let bytes = |p: u32| state.page(g.id(p)).map_or(&[][..], |p| p.data());
        let parents = g.parents(i);
        rule.derive_from(parents.len(), |k| bytes(parents[k]), &mut out);
        check.rederived += 1;
        let have = bytes(i);
        if have != &out[..] {
            let at = have
                .iter()
                .zip(&out)
                .position(|(a, b)| a != b)
                .unwrap_or(have.len().min(out.len()));
            problems.push(Problem {
                file: file.to_owned(),
                offset: None,
                kind: "graph",
                message: format!(
                    "page {id}: its bytes are not what rule {} gives from its parents (first difference at byte {at}; {} bytes, the rule gives {})",
                    rule.display(),
                    have.len(),
                    out.len()
                ),
            });
        }
    }
    Some(check)
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Corrupt { path, offset, problem } => Error::Corrupt {
            path: path.clone(),
            offset: *offset,
            problem: problem.clone(),
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Every [`Problem::kind`] verify reports.
pub const PROBLEM_KINDS: [&str; 9] = [
    "corrupt",
    "torn_tail",
    "delta_rejected",
    "wrong_base",
    "io",
    "locked",
    "out_of_memory",
    "invalid",
    "graph",
];

impl crate::metrics::Measured for VerifyReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.log.as_ref().map_or(0, |l| l.records);
        m.pages += self.checkpoints.iter().map(|c| c.pages).sum::<u64>();
        m.state_hash = self.state_hash.map(|h| h.to_hex());
        for kind in PROBLEM_KINDS {
            m.problems.entry(kind.to_owned()).or_insert(0);
        }
        for p in &self.problems {
            *m.problems.entry(p.kind.to_owned()).or_insert(0) += 1;
        }
    }
}
