//! Times what the GPU delta path does on the CPU, without a GPU: the log read in pieces (as the
//! upload's copy threads read it, with `pread` into buffers), each piece walked and its records
//! decoded right after its read, the log opened from the pieces, and its writes planned for the
//! `apply_tiles` kernel; against opening the log from a mapping and decoding the records after.
//!
//! cargo run --release --example plan_phases -- CHECKPOINT LOG [RUNS]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::{Log, expand_paths};
use mmsb::gpu::plan::{self, DecodedPiece, Planner};
use mmsb::replay::ReplayLimit;
use rayon::prelude::*;

/// Bytes per piece (the copy threads' staging slot on a 16-core machine).
const PIECE: u64 = 3 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (ckpt, log) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let runs: usize = args.get(3).map_or(5, |r| r.parse().expect("RUNS is a number"));
    let ckpt = Checkpoint::open(&ckpt)?;
    let paths = expand_paths(&[&log])?;
    for _ in 0..runs {
        for in_pieces in [true, false] {
            let t = Instant::now();
            let planner = Planner::new(ckpt.head(), &|_| true);
            let (log, decoded) = if in_pieces {
                let walked = read_and_walk(&planner, &paths)?;
                let tj = Instant::now();
                let take = |i: usize| std::mem::take(&mut *walked[i].lock().expect("not poisoned"));
                let (log, decoded) = planner.open_log_from_pieces(&paths, &take)?;
                print!("join {:.1} ms; ", tj.elapsed().as_secs_f64() * 1e3);
                (log, Some(decoded))
            } else {
                (Log::open_deferred(&[&log])?, None)
            };
            let open_ms = t.elapsed().as_secs_f64() * 1e3;
            let bases = plan::segment_bases(&log);
            let p = planner.plan(&log, decoded, &bases, ReplayLimit::default(), &|_, _| true)?;
            let total_ms = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "{}: open {open_ms:.1} parse {:.1} check {:.1} tiles {:.1} total {total_ms:.1} ms; {} records, {} decoded as read",
                if in_pieces {
                    "read in pieces"
                } else {
                    "mapped, decoded after"
                },
                p.parse_ms,
                p.check_ms,
                p.tiles_ms,
                p.summary.records,
                p.decoded_in_scan
            );
            // Unmapping is not part of the plan (the replay does it on another thread).
            drop(log);
        }
    }
    Ok(())
}

/// Reads every file in pieces on rayon's threads, walking each piece after its read.
fn read_and_walk(planner: &Planner, paths: &[PathBuf]) -> std::io::Result<Vec<Mutex<Vec<DecodedPiece>>>> {
    let walked: Vec<Mutex<Vec<DecodedPiece>>> = paths.iter().map(|_| Mutex::new(Vec::new())).collect();
    let mut jobs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let len = std::fs::metadata(p)?.len();
        jobs.extend((0..len.div_ceil(PIECE)).map(|k| (i, k * PIECE)));
    }
    let files = paths
        .iter()
        .map(std::fs::File::open)
        .collect::<std::io::Result<Vec<_>>>()?;
    jobs.par_iter().try_for_each_init(
        || vec![0u8; PIECE as usize],
        |buf, &(i, off)| -> std::io::Result<()> {
            let n = files[i].read_at(buf, off)?;
            let piece = planner.walk_piece(&buf[..n], off);
            walked[i].lock().expect("not poisoned").push(piece);
            Ok(())
        },
    )?;
    Ok(walked)
}
