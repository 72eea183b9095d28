//! Printing: JSON on stdout, or comfy-table tables.

use std::io::Write;

use anyhow::Result;
use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use mmsb::ops::compact::CompactReport;
use mmsb::ops::diff::{Change, DiffReport};
use mmsb::ops::inspect::{CheckpointInfo, LogInfo, RecordInfo};
use mmsb::ops::verify::VerifyReport;

/// Standard output, where a reader that went away (`| head`) ends the printing quietly: the
/// command still finishes and exits with its own status (for `diff`, the comparison's).
pub fn stdout() -> ClosedPipeIsFine<std::io::StdoutLock<'static>> {
    ClosedPipeIsFine(std::io::stdout().lock())
}

/// A writer that treats a closed pipe as the end of its output rather than an error.
pub struct ClosedPipeIsFine<W>(W);

impl<W: Write> Write for ClosedPipeIsFine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    // Buffered: standard output flushes at every newline, and pretty JSON has many.
    let mut out = std::io::BufWriter::new(stdout());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// One compact JSON document on a line, flushed; a closed pipe is an error here (a stream of
/// them stops when its reader goes away).
pub fn json_line<T: serde::Serialize>(v: &T) -> Result<()> {
    // Serialized first, then written: a closed pipe is then an io::Error the caller can tell
    // (serde_json's error for a failed write does not lead back to it).
    let line = serde_json::to_string(v)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// What `inspect --json` prints for one file.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum InspectDoc {
    /// A checkpoint.
    Checkpoint(CheckpointInfo),
    /// A log, with its records when they were asked for.
    Log {
        #[serde(flatten)]
        info: LogInfo,
        #[serde(skip_serializing_if = "Option::is_none")]
        records: Option<Vec<RecordInfo>>,
    },
    /// The dependency graph of a checkpoint after its log.
    Graph {
        /// Always "graph".
        kind: &'static str,
        #[serde(flatten)]
        stats: mmsb::graph::GraphStats,
    },
}

/// The dependency graph's shape, as a table.
pub fn graph_stats(s: &mmsb::graph::GraphStats) -> Result<()> {
    println!("dependency graph");
    table_kv(&[
        ("derived pages", s.derived_pages.to_string()),
        ("edges", s.edges.to_string()),
        ("roots", s.roots.to_string()),
        ("leaves", s.leaves.to_string()),
        ("depth", s.depth.to_string()),
        (
            "widest level",
            format!("height {}: {} pages", s.widest_level.0, s.widest_level.1),
        ),
        ("graph hash", s.graph_hash.clone()),
    ])
}

fn emit(t: &Table) -> Result<()> {
    writeln!(stdout(), "{t}")?;
    Ok(())
}

/// The width tables must fit: `COLUMNS` when set (as `ls` reads it), else the terminal's when
/// standard output is one; `None` when printing into a pipe or a file (no limit).
fn terminal_width() -> Option<usize> {
    if let Some(w) = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()) {
        return Some(w.max(20));
    }
    Table::new().width().map(usize::from)
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    if let Some(w) = terminal_width() {
        t.set_width(w.min(usize::from(u16::MAX)) as u16);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    t
}

/// Prints a sentence, wrapped at spaces to the terminal's width.
fn prose(text: &str) -> Result<()> {
    let mut out = stdout();
    let Some(limit) = terminal_width() else {
        writeln!(out, "{text}")?;
        return Ok(());
    };
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > limit {
            writeln!(out, "{line}")?;
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// A byte count as people read it (`1.50 GiB`); `--json` gives the exact count.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// How a column of a [`list`] is laid out.
#[derive(Clone, Copy)]
struct Col {
    name: &'static str,
    /// Right-aligned (numbers).
    right: bool,
    /// May be cut (ending in `…`) when the list is wider than the terminal.
    cut: bool,
    /// May be left out when the list is still wider than the terminal.
    optional: bool,
}

impl Col {
    const fn num(name: &'static str) -> Col {
        Col {
            name,
            right: true,
            cut: false,
            optional: false,
        }
    }
    const fn text(name: &'static str) -> Col {
        Col {
            name,
            right: false,
            cut: false,
            optional: false,
        }
    }
    const fn wide(name: &'static str) -> Col {
        Col {
            name,
            right: false,
            cut: true,
            optional: false,
        }
    }
    const fn optional(self) -> Col {
        Col { optional: true, ..self }
    }
}

/// Prints rows as aligned columns under their names, as they are made: `rows` is called twice,
/// to measure the columns and then to print them, so a list of a million pages costs no more
/// memory than one row. Wider than the terminal, the cuttable columns are cut, widest first, and
/// then optional columns left out, last first.
fn list<I: Iterator<Item = Vec<String>>>(cols: &[Col], rows: impl Fn() -> I) -> Result<()> {
    const MIN_CUT: usize = 6;
    let chars = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = cols.iter().map(|c| chars(c.name)).collect();
    for row in rows() {
        for (w, cell) in widths.iter_mut().zip(&row) {
            *w = (*w).max(chars(cell));
        }
    }
    let natural = widths.clone();
    let mut shown = vec![true; cols.len()];
    if let Some(limit) = terminal_width() {
        let total = |widths: &[usize], shown: &[bool]| {
            let n = shown.iter().filter(|s| **s).count();
            (0..widths.len())
                .filter(|&i| shown[i])
                .map(|i| widths[i])
                .sum::<usize>()
                + 2 * n.saturating_sub(1)
        };
        // Cut the widest cuttable column a character at a time; when all are as narrow as they
        // go, leave out one more optional column and start again from the natural widths.
        loop {
            widths.clone_from(&natural);
            while total(&widths, &shown) > limit {
                let widest = (0..cols.len())
                    .filter(|&i| shown[i] && cols[i].cut && widths[i] > MIN_CUT)
                    .max_by_key(|&i| widths[i]);
                let Some(i) = widest else { break };
                widths[i] -= 1;
            }
            if total(&widths, &shown) <= limit {
                break;
            }
            let Some(i) = (0..cols.len()).rev().find(|&i| shown[i] && cols[i].optional) else {
                break;
            };
            shown[i] = false;
        }
    }
    let mut out = std::io::BufWriter::new(stdout());
    let mut line = String::new();
    let mut put = |cells: &mut dyn Iterator<Item = &str>, out: &mut dyn Write| -> Result<()> {
        line.clear();
        let (first, last) = (
            shown.iter().position(|s| *s).unwrap_or(0),
            shown.iter().rposition(|s| *s).unwrap_or(0),
        );
        for (i, cell) in cells.enumerate().filter(|(i, _)| shown[*i]) {
            let w = widths[i];
            if i > first {
                line.push_str("  ");
            }
            let n = chars(cell);
            if n > w {
                line.extend(cell.chars().take(w.saturating_sub(1)));
                line.push('…');
            } else if cols[i].right {
                line.extend(std::iter::repeat_n(' ', w - n));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i < last {
                    line.extend(std::iter::repeat_n(' ', w - n));
                }
            }
        }
        writeln!(out, "{}", line.trim_end())?;
        Ok(())
    };
    put(&mut cols.iter().map(|c| c.name), &mut out)?;
    let rules: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    put(&mut rules.iter().map(String::as_str), &mut out)?;
    for row in rows() {
        put(&mut row.iter().map(String::as_str), &mut out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn table_kv(rows: &[(&str, String)]) -> Result<()> {
    let mut t = table(&[]);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v.clone()]);
    }
    emit(&t)
}

/// A command's summary: JSON of `value`, or the rows as a two-column table.
pub fn summary<T: serde::Serialize>(as_json: bool, value: &T, rows: &[(&str, String)]) -> Result<()> {
    if as_json { json(value) } else { table_kv(rows) }
}

pub fn checkpoint_info(c: &CheckpointInfo) -> Result<()> {
    table_kv(&[
        ("file", c.path.display().to_string()),
        ("kind", format!("checkpoint, format {}", c.version)),
        ("file size", human_bytes(c.file_bytes)),
        ("pages", c.page_count.to_string()),
        ("page bytes", human_bytes(c.data_bytes)),
        ("data offset", c.data_offset.to_string()),
        (
            "sections",
            c.sections
                .iter()
                .map(|s| format!("{} ({})", s.name, human_bytes(s.len)))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "metadata",
            if c.metadata.is_empty() {
                "-".into()
            } else {
                serde_json::to_string(&c.metadata)?
            },
        ),
        ("state hash", c.state_hash.to_hex()),
        (
            "checked",
            "header and index; page bytes not read (`mmsb verify` checks them)".into(),
        ),
    ])?;
    if c.page_count == 0 {
        return Ok(());
    }
    list(
        &[
            Col::num("id"),
            Col::wide("name"),
            Col::text("dtype"),
            Col::wide("shape"),
            Col::num("size"),
            Col::num("epoch").optional(),
            Col::text("crc32c").optional(),
            Col::text("residency").optional(),
        ],
        || {
            c.pages.iter().map(|p| {
                vec![
                    p.id.to_string(),
                    p.name.unwrap_or_default().to_string(),
                    p.dtype.unwrap_or_default().to_string(),
                    p.shape.map(|s| format!("{s:?}")).unwrap_or_default(),
                    human_bytes(p.len),
                    p.epoch.to_string(),
                    p.crc32c,
                    p.residency.name().to_string(),
                ]
            })
        },
    )
}

/// A device copy's state on one line (`watch --device`).
pub fn device_status(d: &mmsb::ops::watch::DeviceStatus) -> String {
    format!(
        "{} {}: {} pages ({}) resident, through seq {}, last apply {:.1} ms; memory {} of {} in use",
        d.device,
        d.name,
        d.pages_resident,
        human_bytes(d.bytes_resident),
        d.applied_through_seq.map_or("-".into(), |q| q.to_string()),
        d.last_apply_ms,
        human_bytes(d.memory_used_bytes),
        human_bytes(d.memory_total_bytes),
    )
}

/// `watch --once`: the log as `inspect` shows it, then the tail and the pages written most.
pub fn watch_snapshot(s: &mmsb::ops::watch::WatchSnapshot) -> Result<()> {
    log_info(&s.info, None)?;
    let t = &s.tail;
    table_kv(&[
        ("last epoch", s.last_epoch.map_or("-".into(), |e| e.to_string())),
        (
            "checked through",
            t.checked_through.as_ref().map_or("-".into(), |c| {
                format!(
                    "seq {} (byte {} of {}), record crc32c {}",
                    c.seq,
                    c.end_offset,
                    c.segment.display(),
                    c.record_crc32c.map_or("-".into(), |crc| format!("{crc:08x}"))
                )
            }),
        ),
        (
            "torn tail",
            t.torn_tail.as_ref().map_or("none".into(), |x| {
                format!("{} bytes at {} of {}", x.len, x.offset, x.segment.display())
            }),
        ),
        (
            "writer",
            match &t.writer {
                Some(w) if w.running => format!("pid {}", w.pid),
                Some(w) => format!("none (pid file names pid {}, not running)", w.pid),
                None => "none".into(),
            },
        ),
        (
            "base is the checkpoint's",
            s.base_matches_checkpoint
                .map_or("-".into(), |b| if b { "yes" } else { "NO" }.into()),
        ),
        ("device copy", s.device.as_ref().map_or("-".into(), device_status)),
    ])?;
    list(
        &[
            Col::num("page"),
            Col::wide("name").optional(),
            Col::num("records"),
            Col::num("stored"),
        ],
        || {
            s.top_pages.iter().map(|p| {
                vec![
                    p.page_id.to_string(),
                    p.name.clone().unwrap_or_default(),
                    p.records.to_string(),
                    human_bytes(p.stored_bytes),
                ]
            })
        },
    )
}

pub fn log_info(l: &LogInfo, records: Option<&[RecordInfo]>) -> Result<()> {
    table_kv(&[
        ("kind", "log".into()),
        ("base state hash", l.base_state_hash.map_or("-".into(), |h| h.to_hex())),
        ("segments", l.segments.len().to_string()),
        ("records", l.records.to_string()),
        (
            "by type",
            l.records_by_type
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "sequence",
            match (l.first_seq, l.last_seq) {
                (Some(a), Some(b)) => format!("{a}..={b}"),
                _ => "-".into(),
            },
        ),
        ("file size", human_bytes(l.file_bytes)),
        (
            "payload (stored / decoded)",
            format!(
                "{} / {}",
                human_bytes(l.stored_payload_bytes),
                human_bytes(l.payload_bytes)
            ),
        ),
        (
            "compression ratio",
            format!(
                "{:.2} ({} records compressed)",
                l.compression_ratio, l.compressed_records
            ),
        ),
        (
            "problems",
            if l.problems.is_empty() {
                "none".into()
            } else {
                l.problems.join("\n")
            },
        ),
    ])?;
    list(
        &[
            Col::num("segment"),
            Col::wide("file"),
            Col::text("version").optional(),
            Col::num("first seq"),
            Col::num("records"),
            Col::num("size"),
            Col::text("end"),
        ],
        || {
            l.segments.iter().map(|s| {
                vec![
                    s.segment_no.to_string(),
                    s.path.display().to_string(),
                    s.version.clone(),
                    s.first_seq.to_string(),
                    s.records.to_string(),
                    human_bytes(s.file_bytes),
                    s.end.to_string(),
                ]
            })
        },
    )?;
    if let Some(recs) = records {
        writeln!(stdout())?;
        list(
            &[
                Col::num("seq"),
                Col::num("seg").optional(),
                Col::num("offset").optional(),
                Col::text("type"),
                Col::num("page"),
                Col::num("epoch"),
                Col::wide("source").optional(),
                Col::num("stored").optional(),
                Col::text("zstd").optional(),
                Col::num("written"),
                Col::wide("detail"),
            ],
            || {
                recs.iter().map(|r| {
                    vec![
                        r.seq.to_string(),
                        r.segment_no.to_string(),
                        r.offset.to_string(),
                        r.kind.to_string(),
                        r.page_id.map_or("-".into(), |v| v.to_string()),
                        r.epoch.map_or("-".into(), |v| v.to_string()),
                        r.source.clone().unwrap_or_default(),
                        human_bytes(r.stored_bytes),
                        if r.compressed { "yes" } else { "" }.into(),
                        human_bytes(r.written_bytes),
                        r.detail.clone(),
                    ]
                })
            },
        )?;
    }
    Ok(())
}

pub fn verify_report(r: &VerifyReport) -> Result<()> {
    let mut rows = vec![(
        "result",
        if r.ok {
            "ok".to_string()
        } else {
            format!("{} problem(s)", r.problems.len())
        },
    )];
    for c in &r.checkpoints {
        rows.push((
            "checkpoint",
            format!(
                "{} ({} pages, {})",
                c.path.display(),
                c.pages,
                human_bytes(c.data_bytes)
            ),
        ));
    }
    if let Some(l) = &r.log {
        rows.push((
            "log",
            format!("{} segments, {} records, {} applied", l.segments, l.records, l.applied),
        ));
    }
    rows.push((
        "state hash",
        match (r.state_hash, r.ok) {
            (Some(h), _) => h.to_hex(),
            (None, false) => "- (not computed: problems found)".into(),
            (None, true) => "- (not computed: give the checkpoint the log applies to)".into(),
        },
    ));
    table_kv(&rows)
}

pub fn compact_report(r: &CompactReport) -> Result<()> {
    let mut t = table(&["", "before", "after"]);
    let sizes: [(&str, u64, u64); 5] = [
        ("file size", r.input.file_bytes, r.output.file_bytes),
        ("checkpoint size", r.input.checkpoint_bytes, r.output.checkpoint_bytes),
        ("log size", r.input.log_bytes, r.output.log_bytes),
        ("payload", r.input.payload_bytes, r.output.payload_bytes),
        (
            "stored payload",
            r.input.stored_payload_bytes,
            r.output.stored_payload_bytes,
        ),
    ];
    for (k, a, b) in sizes {
        t.add_row(vec![k.to_string(), human_bytes(a), human_bytes(b)]);
    }
    t.add_row(vec![
        "records".to_string(),
        r.input.records.to_string(),
        r.output.records.to_string(),
    ]);
    emit(&t)?;
    let mut rows = vec![
        ("size ratio", format!("{:.2}x smaller", r.size_ratio)),
        (
            "records folded / kept",
            format!("{} / {}", r.records_folded, r.records_kept),
        ),
    ];
    if let Some(h) = r.state_hash {
        rows.push(("state hash", h.to_hex()));
    }
    if let Some(c) = &r.checkpoint {
        rows.push(("checkpoint", c.display().to_string()));
    }
    if let Some(l) = &r.log {
        rows.push(("log", l.display().to_string()));
    }
    table_kv(&rows)
}

fn change_name(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Changed => "changed",
    }
}

fn len_change(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a == b => human_bytes(a),
        (a, b) => format!(
            "{} -> {}",
            a.map_or("-".into(), human_bytes),
            b.map_or("-".into(), human_bytes)
        ),
    }
}

fn diff_summary(r: &DiffReport) -> String {
    format!(
        "{} pages differ ({} added, {} removed, {} changed; {} unchanged); {} of {} bytes differ",
        r.pages.len(),
        r.added,
        r.removed,
        r.changed,
        r.unchanged,
        r.bytes_differ,
        r.bytes_compared
    )
}

pub fn diff_report(r: &DiffReport) -> Result<()> {
    if r.identical {
        return Ok(());
    }
    if r.bytes_identical {
        return prose(&epoch_only_summary(r));
    }
    list(
        &[
            Col::num("id"),
            Col::wide("name"),
            Col::text("change"),
            Col::text("size (A -> B)"),
            Col::num("ranges"),
            Col::num("differ"),
            Col::wide("first ranges").optional(),
        ],
        || {
            r.pages.iter().map(|p| {
                let mut change = change_name(p.change).to_string();
                if p.meta_changed {
                    change.push_str(" (metadata)");
                }
                vec![
                    p.id.to_string(),
                    p.name.clone().unwrap_or_default(),
                    change,
                    len_change(p.len_a, p.len_b),
                    p.ranges.to_string(),
                    human_bytes(p.bytes),
                    p.first_ranges
                        .iter()
                        .map(|g| format!("{}+{}", g.offset, g.len))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
        },
    )?;
    prose(&diff_summary(r))
}

pub fn diff_stat(r: &DiffReport) -> Result<()> {
    let mut out = stdout();
    for p in &r.pages {
        let name = p.name.clone().unwrap_or_else(|| format!("page {}", p.id));
        match p.change {
            Change::Changed => writeln!(
                out,
                "{} {name}: {} bytes in {} ranges{}",
                p.id,
                p.bytes,
                p.ranges,
                if p.meta_changed { ", metadata changed" } else { "" }
            )?,
            c => writeln!(out, "{} {name}: {} ({} bytes)", p.id, change_name(c), p.bytes)?,
        }
    }
    if r.bytes_identical && !r.identical {
        prose(&epoch_only_summary(r))?;
    } else if !r.identical {
        prose(&diff_summary(r))?;
    }
    Ok(())
}

fn epoch_only_summary(r: &DiffReport) -> String {
    format!(
        "same bytes, but {} page(s) differ in epoch, so the state hashes differ ({} and {}); --bytes-only compares bytes alone",
        r.epoch_only, r.state_hash_a, r.state_hash_b
    )
}

/// The table of a replay, by the engine that ran it.
pub fn replay_report(r: &mmsb::replay::ReplayReport) -> Result<()> {
    use mmsb::replay::ReplayReport;
    match r {
        ReplayReport::Cpu(r) => cpu_replay(r),
        ReplayReport::Gpu(r) => gpu_replay(r),
        ReplayReport::Several(r) => multi_replay(r),
    }
}

fn cpu_replay(r: &mmsb::replay::CpuReplayReport) -> Result<()> {
    let t = &r.timings_ms;
    table_kv(&[
        ("device", r.device.clone()),
        ("state hash", r.state_hash.to_hex()),
        ("pages", r.pages.to_string()),
        ("page bytes", human_bytes(r.page_bytes)),
        ("records applied", r.summary.records.to_string()),
        ("delta bytes", human_bytes(r.summary.bytes_written)),
        ("last seq", r.summary.last_seq.map_or("-".into(), |s| s.to_string())),
        (
            "open / check / apply / hash / write ms",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                t.open, t.check, t.apply, t.hash, t.write
            ),
        ),
        ("total ms", format!("{:.1}", t.total)),
        ("throughput", format!("{:.2} GB/s", r.throughput_gb_per_s)),
    ])
}

fn gpu_replay(r: &mmsb::replay::gpu::GpuReplayReport) -> Result<()> {
    let t = &r.timings_ms;
    let mut rows = vec![
        (
            "device",
            format!("{} ({}), memory {}", r.device, r.device_name, r.memory),
        ),
        (
            "state hash",
            r.state_hash.map_or("- (computed with --verify)".into(), |h| h.to_hex()),
        ),
        (
            "checked",
            if r.state_hash.is_some() {
                "headers, index, every log record, every page's CRC32C on the device".into()
            } else {
                "headers, index, every log record; page CRCs skipped (pass --verify)".to_string()
            },
        ),
        ("pages", r.pages.to_string()),
        ("page bytes loaded", human_bytes(r.load.page_bytes)),
        (
            "read mode",
            r.load.read_mode.map_or("host-mapped copy".into(), |m| {
                format!("{m:?} ({:.0}% cached)", r.load.cached_fraction * 100.0)
            }),
        ),
        ("records applied", r.summary.records.to_string()),
        ("delta bytes", human_bytes(r.summary.bytes_written)),
    ];
    if let Some(ap) = &r.apply {
        rows.push((
            "delta kernels",
            format!(
                "{} copies, {} masked, {} tile(s) in {} batch(es)",
                ap.copies, ap.masked, ap.tiles, ap.batches
            ),
        ));
    }
    rows.extend([
        (
            "cuda start / nvrtc ms (in parallel)",
            match &r.kernels {
                Some(k) => format!("{:.1} / {:.1} ({k})", t.cuda_start, t.nvrtc_compile),
                None => format!("{:.1} / - (no kernel needed)", t.cuda_start),
            },
        ),
        (
            "open / log plan / wait for cuda ms",
            format!("{:.1} / {:.1} / {:.1}", t.open, t.log_plan, t.wait_for_cuda),
        ),
        ("alloc / read+h2d ms", format!("{:.2} / {:.2}", t.alloc, t.read_h2d)),
        (
            "verify / delta apply / hash / write ms",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.1}",
                t.verify, t.delta_apply, t.hash, t.write
            ),
        ),
        (
            "open to resident",
            format!("{:.2} ms, {:.2} GB/s", t.open_to_resident, r.load_gb_per_s),
        ),
        ("total ms", format!("{:.1}", t.total)),
    ]);
    table_kv(&rows)
}

fn multi_replay(r: &mmsb::replay::multi::MultiReplayReport) -> Result<()> {
    let t = &r.timings_ms;
    table_kv(&[
        ("placement", format!("{:?}", r.placement).to_lowercase()),
        (
            "state hash",
            r.state_hash.map_or("- (computed with --verify)".into(), |h| h.to_hex()),
        ),
        ("records applied", r.summary.records.to_string()),
        (
            "cuda start / open / log plan / open to resident / apply / hash ms",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                t.cuda_start, t.open, t.log_plan, t.open_to_resident, t.apply, t.hash
            ),
        ),
        ("total ms", format!("{:.1}", t.total)),
    ])?;
    let mut tab = table(&[
        "device",
        "pages",
        "size",
        "load ms",
        "fan-out ms",
        "apply ms",
        "hash ms",
        "state hash",
    ]);
    for d in &r.devices {
        let tm = &d.timings_ms;
        tab.add_row(vec![
            format!("{} ({})", d.device, d.device_name),
            d.pages.to_string(),
            human_bytes(d.page_bytes),
            format!("{:.2}", tm.load),
            format!("{:.2}", tm.fanout),
            format!("{:.2}", tm.apply),
            format!("{:.2}", tm.hash),
            d.state_hash.map_or("-".into(), |h| h.to_hex()[..16].to_string()),
        ]);
    }
    emit(&tab)
}

pub fn emit_report(r: &mmsb::ops::diff::EmitReport) -> Result<()> {
    table_kv(&[
        ("log", r.log.display().to_string()),
        ("base state hash", r.base_state_hash.to_hex()),
        ("records", r.records.to_string()),
        ("bytes changed", human_bytes(r.bytes_changed)),
        ("payload", human_bytes(r.payload_bytes)),
        ("file size", human_bytes(r.file_bytes)),
    ])
}

pub fn stress_report(r: &mmsb::testing::stress::StressReport) -> Result<()> {
    table_kv(&[
        ("seed", r.seed.to_string()),
        ("rounds", r.rounds.to_string()),
        ("records appended", r.records.to_string()),
        ("page bytes generated", human_bytes(r.page_bytes)),
        ("replays / verifies", format!("{} / {}", r.replays, r.verifies)),
        ("compactions / diffs", format!("{} / {}", r.compactions, r.diffs)),
        ("torn tails recovered", r.torn_tails.to_string()),
        ("corruptions caught", r.corruptions_caught.to_string()),
        ("seconds", format!("{:.1}", r.seconds)),
        ("result", r.failure.clone().unwrap_or_else(|| "ok".into())),
    ])
}

pub fn propagation_report(r: &mmsb::testing::propagation::BenchReport) -> Result<()> {
    table_kv(&[
        (
            "graph",
            format!(
                "{:?}: {} pages, {} edges, height {}",
                r.shape, r.pages, r.edges, r.max_height
            )
            .to_lowercase(),
        ),
        ("updates / batches", format!("{} / {}", r.updates, r.batches)),
        ("recomputations", r.recomputations.to_string()),
        ("recomputations/s", format!("{:.3e}", r.recomputations_per_s)),
        ("updates/s", format!("{:.0}", r.updates_per_s)),
        (
            "cutoff / dedup",
            format!("{:.3} / {:.3}", r.cutoff_ratio, r.dedup_ratio),
        ),
        (
            "latency p50 / p99 / max ms",
            format!(
                "{:.3} / {:.3} / {:.3}",
                r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
            ),
        ),
        (
            "recomputed per batch p50 / p99 / max",
            format!(
                "{} / {} / {}",
                r.recomputed_per_batch.p50, r.recomputed_per_batch.p99, r.recomputed_per_batch.max
            ),
        ),
        (
            "naive: updates, updates/s, speedup",
            format!(
                "{}, {:.1}, {:.1}x",
                r.naive.updates, r.naive.updates_per_s, r.speedup_vs_naive
            ),
        ),
        (
            "full sweep: updates, updates/s, speedup",
            format!(
                "{}, {:.1}, {:.1}x",
                r.full_sweep.updates, r.full_sweep.updates_per_s, r.speedup_vs_full_sweep
            ),
        ),
        ("peak RSS", human_bytes(r.peak_rss_bytes)),
    ])
}
