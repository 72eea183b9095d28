//! `bench load`, `bench deltas` and `bench propagation`: the library's benchmarks, printed.

use anyhow::{Context, Result};
use mmsb::metrics::Outcome;

use crate::args::{BenchCommand, ReadArg};
use crate::print;

pub fn bench_cmd(b: BenchCommand) -> Result<Outcome> {
    let ordinal = |d: &str| mmsb::gpu::parse_device(d).with_context(|| format!("--device {d}: expected cuda:N"));
    match b {
        BenchCommand::Load {
            checkpoint,
            device,
            runs,
            cold,
            read,
            threads,
            slot,
        } => {
            let pipeline = threads.zip(slot).map(|(threads, slot)| mmsb::gpu::loader::Pipeline {
                threads,
                slot: slot as usize,
            });
            let mode = read.map(ReadArg::mode);
            print::json(&mmsb::replay::gpu::bench_load(
                ordinal(&device)?,
                &checkpoint,
                runs,
                cold,
                mode,
                pipeline,
            )?)?;
        }
        BenchCommand::Deltas {
            checkpoint,
            logs,
            device,
            runs,
        } => print::json(&mmsb::replay::gpu::bench_deltas(
            ordinal(&device)?,
            &checkpoint,
            &logs,
            runs,
        )?)?,
        BenchCommand::Propagation(a) => {
            let r = mmsb::testing::propagation::run(&a.options())?;
            if a.json {
                print::json(&r)?;
            } else {
                print::propagation_report(&r)?;
            }
        }
    }
    Ok(Outcome::Ok)
}
