//! A soak test of the whole tool: rounds of generate, append, replay, verify, compact, diff,
//! torn-tail recovery and corruption detection on small random states, each round checking
//! that every path agrees on the state hash. `mmsb stress` runs it for a given time; CI runs a
//! short one. A failure names the round and its seed, which reproduce it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::log::{Compression, Log, recover};
use crate::ops::compact::{compact_checkpoint, compact_log};
use crate::ops::diff::{DiffSide, EmitTarget, diff, emit_log};
use crate::ops::verify::verify;
use crate::page::StateHash;
use crate::replay::{PageCheck, ReplayLimit, State};
use crate::testing::generate::{GenOptions, Mix, SizeDist, generate};

/// What a stress run does.
#[derive(Debug, Clone)]
pub struct StressOptions {
    /// Stop starting rounds after this long.
    pub duration: Duration,
    /// Seed of round 0 (round `r` uses `seed + r`).
    pub seed: u64,
    /// Where the rounds' files go (each round removes its own).
    pub dir: PathBuf,
}

/// Counts of what a stress run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StressReport {
    /// First seed.
    pub seed: u64,
    /// Rounds completed.
    pub rounds: u64,
    /// Records appended.
    pub records: u64,
    /// Page bytes generated.
    pub page_bytes: u64,
    /// Replays (full and to a prefix).
    pub replays: u64,
    /// `verify` runs.
    pub verifies: u64,
    /// Compactions (into a checkpoint and log-only).
    pub compactions: u64,
    /// Diffs and emitted logs.
    pub diffs: u64,
    /// Torn tails made, seen by verify and recovered.
    pub torn_tails: u64,
    /// Flipped bytes that verify caught.
    pub corruptions_caught: u64,
    /// Seconds run.
    pub seconds: f64,
    /// The first failure: what disagreed, in which round, with which seed.
    pub failure: Option<String>,
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Invalid(what())) }
}

fn replay_hash(ckpt: &Path, logs: &[PathBuf], limit: ReplayLimit) -> Result<StateHash> {
    let c = Checkpoint::open(ckpt)?;
    let mut s = State::from_checkpoint(&c, PageCheck::Check)?;
    if !logs.is_empty() {
        s.replay(&Log::open(logs)?, limit)?;
    }
    Ok(s.state_hash())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let p = e.map_err(|e| Error::io(from, e))?.path();
        let dst = to.join(p.file_name().expect("a file"));
        std::fs::copy(&p, &dst).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// One round in `dir` (created empty); counts go into `r`.
fn round(dir: &Path, seed: u64, r: &mut StressReport) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pick = |n: u64| rng.next_u64() % n.max(1);
    let compression = [Compression::None, Compression::Auto, Compression::Zstd(1)][pick(3) as usize];
    let o = GenOptions {
        seed,
        pages: 1 + pick(24),
        total_size: 4096 + pick(2 << 20),
        size_dist: if pick(2) == 0 {
            SizeDist::Equal
        } else {
            SizeDist::LogUniform
        },
        deltas: 1 + pick(600),
        mix: Mix {
            full: pick(3) as u32,
            sparse: 1 + pick(8) as u32,
            masked: pick(4) as u32,
            create: pick(2) as u32,
            resize: pick(2) as u32,
            delete: pick(2) as u32,
            fill: pick(2) as u32,
        },
        delta_bytes: (1, 1 + pick(8192)),
        max_ranges: 1 + pick(8) as u32,
        full_max: 1 << 20,
        hot_fraction: 0.2,
        hot_weight: 0.8,
        segment_size: 4096 + pick(256 << 10),
        compression,
        graph: None,
    };
    let ckpt = dir.join("a.ckpt");
    let log = dir.join("a.log");
    let g = generate(&ckpt, Some(&log), &o)?;
    r.records += g.records;
    r.page_bytes += g.data_bytes;
    let logs = vec![log.clone()];

    let full = replay_hash(&ckpt, &logs, ReplayLimit::default())?;
    let k = pick(g.records + 1);
    let prefix = replay_hash(
        &ckpt,
        &logs,
        ReplayLimit {
            to_seq: Some(k),
            to_epoch: None,
        },
    )?;
    r.replays += 2;

    let v = verify(&[ckpt.clone(), log.clone()], None, true)?;
    r.verifies += 1;
    check(v.ok && v.state_hash == Some(full), || {
        format!("verify: ok {} hash {:?}, replay {full}", v.ok, v.state_hash)
    })?;

    let merged = dir.join("merged.log");
    compact_log(&logs, None, &merged, compression, None)?;
    let m = replay_hash(&ckpt, &[merged], ReplayLimit::default())?;
    check(m == full, || {
        format!("compact --log-only replays to {m}, the log to {full}")
    })?;
    let folded = dir.join("b.ckpt");
    let rest = dir.join("b.log");
    let c = compact_checkpoint(&ckpt, &logs, Some(k), &folded, Some(&rest), compression, None)?;
    check(c.state_hash == Some(prefix), || {
        format!("compact --to-seq {k}: {:?}, replay {prefix}", c.state_hash)
    })?;
    let rest_logs: Vec<PathBuf> = if c.records_kept > 0 { vec![rest] } else { vec![] };
    let b = replay_hash(&folded, &rest_logs, ReplayLimit::default())?;
    check(b == full, || {
        format!("compacted checkpoint + rest replays to {b}, the log to {full}")
    })?;
    r.compactions += 2;
    r.replays += 2;

    let ca = Checkpoint::open(&ckpt)?;
    let opened = Log::open(&logs)?;
    let sa = DiffSide::open(&ca, None, ReplayLimit::default())?;
    let sb = DiffSide::open(&ca, Some(&opened), ReplayLimit::default())?;
    let d = diff(&sa, &sb, 1)?;
    check(diff(&sb, &sb, 1)?.identical, || "a state differs from itself".into())?;
    check(d.bytes_identical || full != ca.state_hash(), || {
        "diff found changes the state hash missed".into()
    })?;
    let emitted = dir.join("e.log");
    emit_log(&sa, &sb, EmitTarget::New(&emitted), compression)?;
    let e = replay_hash(&ckpt, &[emitted], ReplayLimit::default())?;
    check(e == full, || {
        format!("diff --emit-log replays to {e}, the log to {full}")
    })?;
    r.diffs += 2;
    r.replays += 1;

    // A torn tail: the last record cut short. verify reports it, recover cuts it, and the
    // replay is that of every record before it.
    if g.records > 0 {
        let torn = dir.join("torn.log");
        copy_dir(&log, &torn)?;
        let opened = Log::open(std::slice::from_ref(&torn))?;
        let last = opened.segments().iter().rev().find(|s| !s.frames().is_empty());
        if let Some(seg) = last {
            let f = *seg.frames().last().expect("not empty");
            let cut = f.offset + 1 + pick(f.frame_len() - 1);
            let path = seg.path().to_owned();
            drop(opened);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.set_len(cut).map_err(|e| Error::io(&path, e))?;
            let v = verify(&[ckpt.clone(), torn.clone()], None, false)?;
            check(!v.ok && v.problems.iter().any(|p| p.kind == "torn_tail"), || {
                "verify missed a torn tail".into()
            })?;
            recover(
                std::slice::from_ref(&torn),
                Some(&dir.join("torn.bin")),
                crate::format::lock::LockWait::Fail,
            )?;
            let t = replay_hash(&ckpt, std::slice::from_ref(&torn), ReplayLimit::default())?;
            let want = replay_hash(
                &ckpt,
                &logs,
                ReplayLimit {
                    to_seq: Some(f.seq - 1),
                    to_epoch: None,
                },
            )?;
            check(t == want, || {
                format!("after recover: {t}, the prefix to seq {}: {want}", f.seq - 1)
            })?;
            r.torn_tails += 1;
            r.verifies += 1;
            r.replays += 2;
        }
    }

    // A flipped byte anywhere in the checkpoint is caught by verify.
    let mut bytes = std::fs::read(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
    let at = pick(bytes.len() as u64) as usize;
    bytes[at] ^= 1 << pick(8);
    let bad = dir.join("bad.ckpt");
    std::fs::write(&bad, &bytes).map_err(|e| Error::io(&bad, e))?;
    let caught = match verify(&[bad], None, false) {
        Ok(v) => !v.ok,
        Err(e) => e.is_data_error(),
    };
    check(caught, || {
        format!("verify missed a flipped bit at byte {at} of the checkpoint")
    })?;
    r.corruptions_caught += 1;
    r.verifies += 1;
    Ok(())
}

/// Runs rounds until `duration` has passed; stops at the first failure and reports it.
pub fn stress(o: &StressOptions) -> Result<StressReport> {
    let start = Instant::now();
    let mut r = StressReport {
        seed: o.seed,
        ..Default::default()
    };
    while start.elapsed() < o.duration {
        let seed = o.seed.wrapping_add(r.rounds);
        let dir = tempfile::Builder::new()
            .prefix("mmsb-stress.")
            .tempdir_in(&o.dir)
            .map_err(|e| Error::io(&o.dir, e))?;
        if let Err(e) = round(dir.path(), seed, &mut r) {
            r.failure = Some(format!("round {} (seed {seed}): {e}", r.rounds));
            break;
        }
        r.rounds += 1;
    }
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

impl crate::metrics::Measured for StressReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.records;
    }
}
