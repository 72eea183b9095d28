//! Times what the GPU delta path does on the CPU: opening a log (frame headers only) and planning
//! its writes for the `apply_tiles` kernel. No GPU needed.
//!
//! cargo run --release --example plan_phases -- CHECKPOINT LOG [RUNS]

use std::path::PathBuf;
use std::time::Instant;

use mmsb::format::checkpoint::Checkpoint;
use mmsb::format::log::Log;
use mmsb::gpu::plan;
use mmsb::replay::ReplayLimit;

fn main() -> mmsb::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (ckpt, log) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let runs: usize = args.get(3).map_or(5, |r| r.parse().expect("RUNS is a number"));
    let ckpt = Checkpoint::open(&ckpt)?;
    for _ in 0..runs {
        let t = Instant::now();
        let log = Log::open_deferred(&[&log])?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        let bases = plan::segment_bases(&log);
        let p = plan::plan(&log, &bases, ckpt.head(), &|_| true, ReplayLimit::default(), &|_, _| {
            true
        })?;
        let total_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "open {open_ms:.1} parse {:.1} check {:.1} tiles {:.1} total {total_ms:.1} ms; {} records",
            p.parse_ms, p.check_ms, p.tiles_ms, p.summary.records
        );
        let t = Instant::now();
        drop(log);
        drop(p);
        println!("  drop {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
