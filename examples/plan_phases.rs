//! Times what the GPU delta path does on the CPU: opening a log (frame headers only) and planning
//! its writes for the `apply_tiles` kernel, both with the records decoded during the frame scan
//! (as `mmsb replay --device` does) and in a pass of their own. No GPU needed.
//!
//! cargo run --release --example plan_phases -- CHECKPOINT LOG [RUNS]

use std::path::PathBuf;
use std::time::Instant;

use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::Log;
use mmsb::gpu::plan::{self, Planner};
use mmsb::replay::ReplayLimit;

fn main() -> mmsb::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (ckpt, log) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let runs: usize = args.get(3).map_or(5, |r| r.parse().expect("RUNS is a number"));
    let ckpt = Checkpoint::open(&ckpt)?;
    for _ in 0..runs {
        for decode_in_scan in [true, false] {
            let t = Instant::now();
            let planner = Planner::new(ckpt.head(), &|_| true);
            let (log, decoded) = if decode_in_scan {
                let (log, decoded) = planner.open_log(&[&log])?;
                (log, Some(decoded))
            } else {
                (Log::open_deferred(&[&log])?, None)
            };
            let open_ms = t.elapsed().as_secs_f64() * 1e3;
            let bases = plan::segment_bases(&log);
            let p = planner.plan(&log, decoded, &bases, ReplayLimit::default(), &|_, _| true)?;
            let total_ms = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "{}: open {open_ms:.1} parse {:.1} check {:.1} tiles {:.1} total {total_ms:.1} ms; {} records",
                if decode_in_scan {
                    "decoded in the scan"
                } else {
                    "decoded after it"
                },
                p.parse_ms,
                p.check_ms,
                p.tiles_ms,
                p.summary.records
            );
            // Unmapping is not part of the plan (the replay does it on another thread).
            drop(log);
        }
    }
    Ok(())
}
