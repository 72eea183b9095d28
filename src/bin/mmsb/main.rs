//! The `mmsb` command: argument parsing, printing and exit codes. All logic is in the library.

mod args;
mod bench;
mod derive;
mod man;
mod print;
mod progress;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser};
use mmsb::format::checkpoint::Checkpoint;
use mmsb::metrics::{Outcome, RunMetrics};
use mmsb::testing::generate::{GenOptions, SizeDist};

use args::*;
use print::human_bytes;

fn main() -> ExitCode {
    let cli = Cli::parse();
    mmsb::fsutil::remove_temp_outputs_on_signal();
    let metrics_file = cli.metrics_file.clone();
    // The inputs' sizes are read only where the figures are asked for.
    let mut metrics = match metrics_file {
        Some(_) => RunMetrics::start(cli.command.metrics_name(), cli.command.files()),
        None => RunMetrics::new(cli.command.metrics_name()),
    };
    // diff answers "do they differ" with 1, so every error, bad data included, is 2 there.
    let errors_are_2 = matches!(cli.command, Command::Diff(_));
    // A metrics file that names an input is refused before anything runs, and not written.
    if let Some(Err(e)) = metrics_file
        .as_deref()
        .map(|out| metrics.refuse_output_naming_input(out))
    {
        eprintln!("mmsb: --metrics-file: {e}");
        return ExitCode::from(2);
    }
    let result = run(cli, &mut metrics);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                Outcome::Ok
            } else {
                eprintln!("mmsb: {e:#}");
                let data_bad = e
                    .chain()
                    .any(|c| c.downcast_ref::<mmsb::Error>().is_some_and(mmsb::Error::is_data_error));
                if data_bad && !errors_are_2 {
                    Outcome::DataBad
                } else {
                    Outcome::Failed
                }
            }
        }
    };
    let mut code = match outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::DataBad => ExitCode::from(1),
        Outcome::Failed => ExitCode::from(2),
    };
    if let Some(out) = metrics_file {
        metrics.end(outcome);
        if let Err(e) = metrics.write_prometheus(&out) {
            eprintln!("mmsb: --metrics-file: {e}");
            code = ExitCode::from(2);
        }
    }
    code
}

fn run(cli: Cli, m: &mut RunMetrics) -> Result<Outcome> {
    let wait = cli.lock_wait();
    match cli.command {
        Command::Gen(a) => gen_cmd(a, m),
        Command::Import(a) => {
            let total = std::fs::metadata(&a.input).map(|m| m.len()).unwrap_or(0);
            let bar = progress::Bar::start(total, "import");
            let s = mmsb::ops::safetensors_io::import(&a.input, &a.output, a.epoch, Some(bar.shared()));
            bar.finish();
            let s = s.with_context(|| format!("import {}", a.input.display()))?;
            m.add(&s);
            tensor_file_summary(a.json, &s)
        }
        Command::Export(a) => {
            let total = std::fs::metadata(&a.checkpoint).map(|m| m.len()).unwrap_or(0);
            let bar = progress::Bar::start(total, "export");
            let s = mmsb::ops::safetensors_io::export(
                &a.checkpoint,
                &a.logs,
                a.limit.limit(),
                &a.output,
                Some(bar.shared()),
            );
            bar.finish();
            let s = s.with_context(|| format!("export {}", a.checkpoint.display()))?;
            m.add(&s);
            tensor_file_summary(a.json, &s)
        }
        Command::Inspect(a) => inspect_cmd(a),
        Command::Verify(a) => verify_cmd(a, wait, m),
        Command::Recover(a) => recover_cmd(a, wait),
        Command::Replay(a) => replay_cmd(a, m),
        Command::Compact(a) => compact_cmd(a, m),
        Command::Diff(a) => diff_cmd(a, wait, m),
        Command::Derive(c) => derive::derive_cmd(c, wait, m).map(|()| Outcome::Ok),
        Command::Propagate(a) => derive::propagate_cmd(a, wait, m).map(|()| Outcome::Ok),
        Command::Explain(a) => derive::explain_cmd(a).map(|()| Outcome::Ok),
        Command::Watch(a) => watch::watch_cmd(a).map(|()| Outcome::Ok),
        Command::Stress(a) => stress_cmd(a, m),
        Command::Bench(b) => bench::bench_cmd(b),
        Command::ManPages { out, completions_out } => {
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            man::write_man_pages(Cli::command(), &out)?;
            if let Some(dir) = completions_out {
                std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                man::write_completion_files(&mut Cli::command(), &dir)?;
            }
            Ok(Outcome::Ok)
        }
        Command::Completions { shell } => {
            man::write_completions(&mut Cli::command(), shell)?;
            Ok(Outcome::Ok)
        }
    }
}

fn tensor_file_summary(json: bool, s: &mmsb::ops::safetensors_io::TensorFileSummary) -> Result<Outcome> {
    let rows = [
        ("tensors", s.tensors.to_string()),
        ("size", human_bytes(s.bytes)),
        ("state hash", s.state_hash.to_hex()),
    ];
    print::summary(json, s, &rows)?;
    Ok(Outcome::Ok)
}

fn gen_cmd(a: GenArgs, m: &mut RunMetrics) -> Result<Outcome> {
    let log = a.log.clone().unwrap_or_else(|| a.output.with_extension("log"));
    let o = GenOptions {
        seed: a.seed,
        pages: a.pages,
        total_size: a.total_size,
        size_dist: match a.page_sizes {
            SizeDistArg::Equal => SizeDist::Equal,
            SizeDistArg::LogUniform => SizeDist::LogUniform,
        },
        deltas: a.deltas,
        mix: a.mix,
        delta_bytes: a.delta_bytes,
        max_ranges: a.max_ranges,
        full_max: a.full_max,
        hot_fraction: a.hot_fraction,
        hot_weight: a.hot_weight,
        segment_size: a.segment_size,
        compression: a.compress,
        graph: a.graph.map(|shape| mmsb::testing::propagation::GraphShape {
            shape: shape.shape(),
            fanout: a.fanout,
            levels: a.levels,
            parents: a.parents,
            rule: a.rule.clone(),
        }),
    };
    let bar = progress::Bar::start(o.total_size, "gen");
    let s = mmsb::testing::generate::generate_with_progress(&a.output, Some(&log), &o, Some(bar.shared()));
    bar.finish();
    let s = s.context("gen")?;
    m.add(&s);
    let log_shown = if a.deltas > 0 {
        log.display().to_string()
    } else {
        "(none)".into()
    };
    print::summary(
        a.json,
        &s,
        &[
            ("checkpoint", a.output.display().to_string()),
            ("log", log_shown),
            ("pages", s.pages.to_string()),
            ("page bytes", human_bytes(s.data_bytes)),
            ("records", s.records.to_string()),
            ("delta bytes", human_bytes(s.delta_bytes)),
            ("checkpoint state hash", s.checkpoint_state_hash.to_hex()),
        ],
    )?;
    Ok(Outcome::Ok)
}

/// Names temporary outputs that interrupted writes left behind (stderr; `--json` lists them).
fn warn_stale_temp_outputs(paths: &[PathBuf]) {
    for p in paths {
        eprintln!(
            "mmsb: warning: {}: temporary output of an interrupted mmsb write (safe to delete unless an mmsb write there is running)",
            p.display()
        );
    }
}

fn inspect_cmd(a: InspectArgs) -> Result<Outcome> {
    warn_stale_temp_outputs(&mmsb::fsutil::stale_temp_outputs_near(&a.files));
    let (ckpts, logs) = mmsb::ops::verify::classify(&a.files)?;
    if a.graph.is_some() {
        return derive::graph_dot(&ckpts, &logs).map(|()| Outcome::Ok);
    }
    let selector = mmsb::select::PageSelector::parse(&a.pages)?;
    // With --json, one array of every file's document, serialized as it is written (a
    // checkpoint's page list is read from its index as it goes, never collected).
    let mut docs = Vec::new();
    let mut filter = mmsb::ops::inspect::RecordFilter {
        from_seq: a.from_seq,
        to_seq: a.to_seq,
        pages: selector.clone(),
        names: Default::default(),
    };
    let mut graph = None;
    for c in &ckpts {
        let info = mmsb::ops::inspect::inspect_checkpoint(c, selector.clone())?;
        if ckpts.len() == 1 {
            graph = info.graph(&logs)?;
        }
        if a.records {
            filter.learn_names(&info);
        }
        if a.json {
            docs.push(print::InspectDoc::Checkpoint(info));
        } else {
            print::checkpoint_info(&info)?;
        }
    }
    if !logs.is_empty() {
        let filter = a.records.then_some(&filter);
        let (info, records) = mmsb::ops::inspect::inspect_log(&logs, filter)?;
        if a.json {
            docs.push(print::InspectDoc::Log {
                info,
                records: a.records.then_some(records),
            });
        } else {
            print::log_info(&info, a.records.then_some(&records[..]))?;
        }
    }
    if let Some((stats, _)) = graph {
        if a.json {
            docs.push(print::InspectDoc::Graph { kind: "graph", stats });
        } else {
            print::graph_stats(&stats)?;
        }
    }
    if a.json {
        print::json(&docs)?;
    }
    Ok(Outcome::Ok)
}

fn verify_cmd(a: VerifyArgs, wait: mmsb::format::lock::LockWait, m: &mut RunMetrics) -> Result<Outcome> {
    let total: u64 = a
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress::Bar::start(total, "verify");
    let report = mmsb::ops::verify::verify(&a.files, Some(bar.counter()), a.rederive);
    bar.finish();
    let report = match report {
        Ok(r) => r,
        // With --json every outcome is one JSON document on stdout, a file that cannot be
        // read at all included.
        Err(e) if a.json => mmsb::ops::verify::VerifyReport::unreadable(&e),
        Err(e) => return Err(e.into()),
    };
    m.add(&report);
    let mut repaired = None;
    if a.repair && !report.ok && report.problems.iter().all(|p| p.kind == "torn_tail") {
        let (_, logs) = mmsb::ops::verify::classify(&a.files)?;
        repaired = mmsb::format::log::recover(&logs, None, wait)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if a.repair {
            v["repaired"] = serde_json::to_value(&repaired)?;
        }
        print::json(&v)?;
    } else {
        for p in &report.problems {
            eprintln!("mmsb: {}", p.message);
        }
        warn_stale_temp_outputs(&report.stale_temp_outputs);
        if a.verbose {
            print::verify_report(&report)?;
        }
        if let Some(r) = &repaired {
            eprintln!(
                "mmsb: repaired: cut {} bytes at offset {} of {}, backup in {}",
                r.len,
                r.offset,
                r.segment.display(),
                r.backup.display()
            );
        }
    }
    Ok(if report.ok || repaired.is_some() {
        Outcome::Ok
    } else if report.only_data_problems() {
        Outcome::DataBad
    } else {
        Outcome::Failed
    })
}

fn recover_cmd(a: RecoverArgs, wait: mmsb::format::lock::LockWait) -> Result<Outcome> {
    let r = mmsb::format::log::recover(&a.logs, a.backup.as_deref(), wait)?;
    if a.json {
        print::json(&serde_json::json!({ "repaired": r }))?;
    } else {
        match &r {
            Some(r) => writeln!(
                print::stdout(),
                "cut {} bytes of a torn last record at offset {} of {}; backup in {}",
                r.len,
                r.offset,
                r.segment.display(),
                r.backup.display()
            ),
            None => writeln!(print::stdout(), "no torn tail: nothing to do"),
        }?;
    }
    Ok(Outcome::Ok)
}
fn warn_torn_tail(summary: &mmsb::replay::ReplaySummary) {
    if let Some(torn) = &summary.torn_tail {
        eprintln!(
            "mmsb: warning: {}: torn tail of {} bytes at offset {} ignored (run `mmsb recover`)",
            torn.path.display(),
            torn.len,
            torn.offset
        );
    }
}

fn replay_cmd(a: ReplayArgs, m: &mut RunMetrics) -> Result<Outcome> {
    let bar = progress::Bar::start(0, "replay");
    let opts = mmsb::replay::ReplayOptions {
        device: a.device.clone(),
        placement: a.placement.placement(),
        memory: a.memory.kind(),
        read_mode: a.read.map(ReadArg::mode),
        verify: a.verify,
        pages: mmsb::select::PageSelector::parse(&a.pages)?,
        limit: a.limit.limit(),
        output: a.output.clone(),
        progress: bar.progress(),
        opened: None,
    };
    let replayed = mmsb::replay::run(&a.checkpoint, &a.logs, &opts);
    bar.finish();
    // The process ends after the report: the driver reclaims the device memory faster.
    let report = replayed?.into_report_leaving_device_memory_to_exit();
    m.add(&report);
    warn_torn_tail(report.summary());
    if a.json {
        print::json(&report)?;
    } else {
        print::replay_report(&report)?;
    }
    if let mmsb::replay::ReplayReport::Several(r) = &report
        && r.replicas_agree == Some(false)
    {
        bail!("the replicas' state hashes differ");
    }
    Ok(Outcome::Ok)
}

fn compact_cmd(a: CompactArgs, m: &mut RunMetrics) -> Result<Outcome> {
    let report = if a.log_only {
        let total = mmsb::format::log::segment_bytes(&a.inputs);
        let bar = progress::Bar::start(total, "compact");
        let r = mmsb::ops::compact::compact_log(&a.inputs, a.to_seq, &a.output, a.compress, Some(bar.counter()));
        bar.finish();
        r.with_context(|| format!("compact {}", a.inputs[0].display()))?
    } else {
        let (ckpt, logs) = a.inputs.split_first().expect("required");
        let ckpt_bytes = Checkpoint::open(ckpt).map(|c| c.head().data_bytes()).unwrap_or(0);
        let bar = progress::Bar::start(ckpt_bytes, "compact");
        let rest = a.rest_log.clone().unwrap_or_else(|| a.output.with_extension("log"));
        let r = mmsb::ops::compact::compact_checkpoint(
            ckpt,
            logs,
            a.to_seq,
            &a.output,
            Some(&rest),
            a.compress,
            Some(bar.shared()),
        );
        bar.finish();
        r.with_context(|| format!("compact {}", ckpt.display()))?
    };
    m.add(&report);
    if report.torn_tail_ignored {
        eprintln!("mmsb: warning: the log ends in a torn tail, left out (run `mmsb recover` to cut it)");
    }
    if a.json {
        print::json(&report)?;
    } else {
        print::compact_report(&report)?;
    }
    Ok(Outcome::Ok)
}

fn diff_cmd(a: DiffArgs, wait: mmsb::format::lock::LockWait, m: &mut RunMetrics) -> Result<Outcome> {
    use mmsb::ops::diff::{DiffSide, EmitTarget, OpenedSide, emit_log};
    // An append extends A's log: lock it before A is read, so that no other append slips in
    // between and the records are computed against the log they extend.
    let _lock = match (&a.emit_log, a.append) {
        (Some(out), true) => Some(mmsb::format::lock::lock_logs(std::slice::from_ref(out), wait)?),
        _ => None,
    };
    let files_a = OpenedSide::open(&a.a, &a.a_logs, a.a_to_seq)?;
    let files_b = OpenedSide::open(&a.b, &a.b_logs, a.b_to_seq)?;
    let side_a = files_a.side().with_context(|| format!("A: {}", a.a.display()))?;
    let side_b = files_b.side().with_context(|| format!("B: {}", a.b.display()))?;
    if let Some(out) = &a.emit_log {
        let target = if a.append {
            EmitTarget::Append(out)
        } else {
            EmitTarget::New(out)
        };
        let r =
            emit_log(&side_a, &side_b, target, a.compress).with_context(|| format!("emit log {}", out.display()))?;
        m.add(&r);
        if a.json {
            print::json(&r)?;
        } else if !a.quiet {
            print::emit_report(&r)?;
        }
        return Ok(Outcome::Ok);
    }
    let side_bytes = |s: &DiffSide<'_>| s.state().pages().map(|(_, p)| p.data().len() as u64).sum::<u64>();
    let bar = progress::Bar::start(side_bytes(&side_a) + side_bytes(&side_b), "diff");
    let report = mmsb::ops::diff::diff_counting(&side_a, &side_b, a.ranges, Some(bar.counter()));
    bar.finish();
    let report = report?;
    m.add(&report);
    if a.json {
        print::json(&report)?;
    } else if a.stat {
        print::diff_stat(&report)?;
    } else if !a.quiet {
        print::diff_report(&report)?;
    }
    Ok(if report.identical || (a.bytes_only && report.bytes_identical) {
        Outcome::Ok
    } else {
        Outcome::DataBad
    })
}

fn stress_cmd(a: StressArgs, m: &mut RunMetrics) -> Result<Outcome> {
    let seed = a.seed.unwrap_or_else(mmsb::timing::now_ns);
    let o = mmsb::testing::stress::StressOptions {
        duration: a.duration,
        seed,
        dir: a.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let r = mmsb::testing::stress::stress(&o)?;
    m.add(&r);
    if a.json {
        print::json(&r)?;
    } else {
        print::stress_report(&r)?;
    }
    if let Some(f) = &r.failure {
        eprintln!("mmsb: stress: {f}");
        return Ok(Outcome::DataBad);
    }
    Ok(Outcome::Ok)
}
