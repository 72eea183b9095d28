//! Printing: JSON on stdout, or comfy-table tables.

use std::io::Write;

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use mmsb::compact::CompactReport;
use mmsb::diff::{Change, DiffReport};
use mmsb::inspect::{CheckpointInfo, LogInfo, RecordInfo};
use mmsb::verify::VerifyReport;

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
    let mut out = stdout();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn emit(t: &Table) -> Result<()> {
    writeln!(stdout(), "{t}")?;
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    t
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
        ("file bytes", c.file_bytes.to_string()),
        ("pages", c.page_count.to_string()),
        ("page bytes", c.data_bytes.to_string()),
        ("data offset", c.data_offset.to_string()),
        (
            "sections",
            c.sections
                .iter()
                .map(|s| format!("{} ({} bytes)", s.name, s.len))
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
    ])?;
    let mut t = table(&["id", "name", "dtype", "shape", "bytes", "epoch", "crc32c", "residency"]);
    for p in &c.pages {
        t.add_row(vec![
            p.id.to_string(),
            p.name.clone().unwrap_or_default(),
            p.dtype.clone().unwrap_or_default(),
            p.shape.as_ref().map(|s| format!("{s:?}")).unwrap_or_default(),
            p.len.to_string(),
            p.epoch.to_string(),
            p.crc32c.clone(),
            p.residency.name().to_string(),
        ]);
    }
    emit(&t)
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
        ("file bytes", l.file_bytes.to_string()),
        (
            "payload bytes (stored / decoded)",
            format!("{} / {}", l.stored_payload_bytes, l.payload_bytes),
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
    let mut t = table(&["segment", "file", "version", "first seq", "records", "bytes", "end"]);
    for s in &l.segments {
        t.add_row(vec![
            s.segment_no.to_string(),
            s.path.display().to_string(),
            s.version.clone(),
            s.first_seq.to_string(),
            s.records.to_string(),
            s.file_bytes.to_string(),
            s.end.to_string(),
        ]);
    }
    emit(&t)?;
    if let Some(recs) = records {
        let mut t = table(&[
            "seq", "seg", "offset", "type", "page", "epoch", "source", "stored", "zstd", "written", "detail",
        ]);
        for r in recs {
            t.add_row(vec![
                r.seq.to_string(),
                r.segment_no.to_string(),
                r.offset.to_string(),
                r.kind.to_string(),
                r.page_id.map_or("-".into(), |v| v.to_string()),
                r.epoch.map_or("-".into(), |v| v.to_string()),
                r.source.clone().unwrap_or_default(),
                r.stored_bytes.to_string(),
                if r.compressed { "yes" } else { "" }.into(),
                r.written_bytes.to_string(),
                r.detail.clone(),
            ]);
        }
        emit(&t)?;
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
            format!("{} ({} pages, {} bytes)", c.path.display(), c.pages, c.data_bytes),
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
    let rows: [(&str, u64, u64); 6] = [
        ("file bytes", r.input.file_bytes, r.output.file_bytes),
        ("checkpoint bytes", r.input.checkpoint_bytes, r.output.checkpoint_bytes),
        ("log bytes", r.input.log_bytes, r.output.log_bytes),
        ("records", r.input.records, r.output.records),
        ("payload bytes", r.input.payload_bytes, r.output.payload_bytes),
        (
            "stored payload bytes",
            r.input.stored_payload_bytes,
            r.output.stored_payload_bytes,
        ),
    ];
    for (k, a, b) in rows {
        t.add_row(vec![k.to_string(), a.to_string(), b.to_string()]);
    }
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
        (Some(a), Some(b)) if a == b => a.to_string(),
        (a, b) => format!(
            "{} -> {}",
            a.map_or("-".into(), |v| v.to_string()),
            b.map_or("-".into(), |v| v.to_string())
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
        writeln!(stdout(), "{}", epoch_only_summary(r))?;
        return Ok(());
    }
    let mut t = table(&[
        "id",
        "name",
        "change",
        "bytes (A -> B)",
        "ranges",
        "bytes differ",
        "first ranges",
    ]);
    for p in &r.pages {
        let mut change = change_name(p.change).to_string();
        if p.meta_changed {
            change.push_str(" (metadata)");
        }
        t.add_row(vec![
            p.id.to_string(),
            p.name.clone().unwrap_or_default(),
            change,
            len_change(p.len_a, p.len_b),
            p.ranges.to_string(),
            p.bytes.to_string(),
            p.first_ranges
                .iter()
                .map(|g| format!("{}+{}", g.offset, g.len))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    emit(&t)?;
    writeln!(stdout(), "{}", diff_summary(r))?;
    Ok(())
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
        writeln!(out, "{}", epoch_only_summary(r))?;
    } else if !r.identical {
        writeln!(out, "{}", diff_summary(r))?;
    }
    Ok(())
}

fn epoch_only_summary(r: &DiffReport) -> String {
    format!(
        "same bytes, but {} page(s) differ in epoch, so the state hashes differ ({} and {}); --bytes-only compares bytes alone",
        r.epoch_only, r.state_hash_a, r.state_hash_b
    )
}

pub fn multi_replay(r: &mmsb::gpu::multi::MultiReplayReport) -> Result<()> {
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
        "bytes",
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
            d.page_bytes.to_string(),
            format!("{:.2}", tm.load),
            format!("{:.2}", tm.fanout),
            format!("{:.2}", tm.apply),
            format!("{:.2}", tm.hash),
            d.state_hash.map_or("-".into(), |h| h.to_hex()[..16].to_string()),
        ]);
    }
    emit(&tab)
}
