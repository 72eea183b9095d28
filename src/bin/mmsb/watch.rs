//! `mmsb watch`: snapshots of a live log (the library's `ops::watch`), shown in a terminal view,
//! printed once, or streamed as JSON lines.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmsb::format::checkpoint::Checkpoint;
use mmsb::ops::watch::{DeviceMirror, LogFollower, WatchSnapshot};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use crate::args::WatchArgs;
use crate::print::{self, human_bytes};

pub fn watch_cmd(a: WatchArgs) -> Result<()> {
    let logs = [a.log.clone()];
    // Opened once: it only names pages and is checked against the log's base.
    let ckpt = a
        .checkpoint
        .as_deref()
        .map(Checkpoint::open)
        .transpose()
        .with_context(|| format!("watch {}", a.log.display()))?;
    // Segments that no longer change are read once: a refresh reads the last and any new ones.
    let mut follower = LogFollower::new(&logs, a.top);
    let mut mirror = match (a.device, &a.checkpoint) {
        (Some(ordinal), Some(ckpt)) => Some(
            DeviceMirror::start(ckpt, &logs, ordinal, None)
                .with_context(|| format!("watch {}: a copy on cuda:{ordinal}", a.log.display()))?,
        ),
        _ => None,
    };
    let mut take = |prev: Option<&WatchSnapshot>| -> Result<WatchSnapshot> {
        let mut s = follower
            .snapshot(ckpt.as_ref())
            .with_context(|| format!("watch {}", a.log.display()))?;
        if let Some(m) = &mut mirror {
            s.device = Some(
                m.follow()
                    .with_context(|| format!("watch {}: the copy on the device", a.log.display()))?,
            );
        }
        Ok(match prev {
            Some(p) => s.with_rates_since(p),
            None => s,
        })
    };
    if a.once {
        let s = take(None)?;
        return if a.json {
            print::json(&s)
        } else {
            print::watch_snapshot(&s)
        };
    }
    if a.json {
        // JSON lines until interrupted (or the reader of the pipe goes away).
        let mut prev: Option<WatchSnapshot> = None;
        loop {
            let s = take(prev.as_ref())?;
            print::json_line(&s)?;
            prev = Some(s);
            std::thread::sleep(a.interval);
        }
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("stdout is not a terminal: use --once, or --json for a document per refresh");
    }
    let first = take(None)?;
    let mut terminal = ratatui::init();
    let result = follow(&mut terminal, first, a.interval, &mut take, &a.log);
    ratatui::restore();
    result
}

/// Redraws at every refresh and on resize; returns when a quit key is pressed.
fn follow(
    terminal: &mut ratatui::DefaultTerminal,
    first: WatchSnapshot,
    interval: Duration,
    take: &mut dyn FnMut(Option<&WatchSnapshot>) -> Result<WatchSnapshot>,
    log: &Path,
) -> Result<()> {
    let mut shown = first;
    let mut error: Option<String> = None;
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|f| draw(f, &shown, error.as_deref(), log))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
                && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                    || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
            {
                return Ok(());
            }
            continue;
        }
        next = Instant::now() + interval;
        // A snapshot that fails (the log moved away, a segment being cut) is shown as an error
        // line over the last good one; the next refresh tries again.
        match take(Some(&shown)) {
            Ok(s) => {
                shown = s;
                error = None;
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
}

fn draw(f: &mut Frame, s: &WatchSnapshot, error: Option<&str>, log: &Path) {
    let [head, middle, bottom] = Layout::vertical([
        Constraint::Length(9 + u16::from(s.device.is_some())),
        Constraint::Min(6),
        Constraint::Length(8),
    ])
    .areas(f.area());
    let [types, segments] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    let [pages, tail] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let rate = |v: Option<f64>| v.map_or("-".into(), |r| format!("{r:.1}"));
    let info = &s.info;
    let mut summary = vec![
        Line::from(format!("log          {}", log.display())),
        Line::from(format!(
            "base state   {}{}",
            info.base_state_hash.map_or("-".into(), |h| h.to_hex()),
            match s.base_matches_checkpoint {
                Some(true) => "  (the checkpoint's)",
                Some(false) => "  (NOT the checkpoint's)",
                None => "",
            }
        )),
        Line::from(format!(
            "records      {}  (seq {})   last epoch {}",
            info.records,
            match (info.first_seq, info.last_seq) {
                (Some(a), Some(b)) => format!("{a}..={b}"),
                _ => "-".into(),
            },
            s.last_epoch.map_or("-".into(), |e| e.to_string())
        )),
        Line::from(format!(
            "rate         {} records/s, {}/s",
            rate(s.rates.as_ref().map(|r| r.records_per_s)),
            s.rates
                .as_ref()
                .map_or("-".into(), |r| human_bytes(r.bytes_per_s as u64))
        )),
        Line::from(format!(
            "size         {} in {} segment(s); payload {} stored, {} decoded (ratio {:.2})",
            human_bytes(info.file_bytes),
            info.segments.len(),
            human_bytes(info.stored_payload_bytes),
            human_bytes(info.payload_bytes),
            info.compression_ratio
        )),
        Line::from(match error {
            Some(e) => format!("refresh failed: {e}").red(),
            None => "q quits".dim(),
        }),
    ];
    if let Some(d) = &s.device {
        summary.insert(
            summary.len() - 1,
            Line::from(format!("device       {}", print::device_status(d))),
        );
    }
    f.render_widget(
        Paragraph::new(summary).block(Block::bordered().title(" mmsb watch ")),
        head,
    );

    let by_type = info.records_by_type.iter().map(|(kind, n)| {
        let r = s.rates.as_ref().and_then(|r| r.by_type.get(kind));
        Row::new(vec![
            kind.to_string(),
            n.to_string(),
            human_bytes(s.bytes_by_type.get(kind).copied().unwrap_or(0)),
            rate(r.map(|r| r.records_per_s)),
            r.map_or("-".into(), |r| format!("{}/s", human_bytes(r.bytes_per_s as u64))),
        ])
    });
    f.render_widget(
        titled_table(
            by_type,
            &[
                Constraint::Min(7),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Length(11),
            ],
            &["type", "records", "bytes", "rec/s", "bytes/s"],
            " by record type ",
        ),
        types,
    );
    let segs = info.segments.iter().rev().map(|g| {
        Row::new(vec![
            g.segment_no.to_string(),
            g.first_seq.to_string(),
            g.records.to_string(),
            human_bytes(g.file_bytes),
            g.end.to_string(),
        ])
    });
    f.render_widget(
        titled_table(
            segs,
            &[
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Min(5),
            ],
            &["segment", "first seq", "records", "size", "end"],
            " segments (newest first) ",
        ),
        segments,
    );
    let top = s.top_pages.iter().map(|p| {
        Row::new(vec![
            p.page_id.to_string(),
            p.name.clone().unwrap_or_default(),
            p.records.to_string(),
            human_bytes(p.stored_bytes),
        ])
    });
    f.render_widget(
        titled_table(
            top,
            &[
                Constraint::Length(10),
                Constraint::Min(6),
                Constraint::Length(8),
                Constraint::Length(10),
            ],
            &["page", "name", "records", "stored"],
            " pages written most ",
        ),
        pages,
    );
    f.render_widget(
        Paragraph::new(tail_lines(s))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" tail ")),
        tail,
    );
}

/// A table with a bold header row, in a bordered block titled `title`.
fn titled_table<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    widths: &[Constraint],
    header: &[&'static str],
    title: &'static str,
) -> Table<'a> {
    Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(Style::new().bold()))
        .block(Block::bordered().title(title))
}

fn tail_lines(s: &WatchSnapshot) -> Vec<Line<'static>> {
    let t = &s.tail;
    let mut lines = vec![
        Line::from(match &t.checked_through {
            Some(c) => format!(
                "checked through seq {} (byte {} of {}), record crc32c {}",
                c.seq,
                c.end_offset,
                c.segment.display(),
                c.record_crc32c.map_or("-".into(), |crc| format!("{crc:08x}"))
            ),
            None => "no record yet".into(),
        }),
        Line::from(match &t.torn_tail {
            Some(torn) => format!("torn tail: {} bytes at {}", torn.len, torn.offset).yellow(),
            None => "no torn tail".into(),
        }),
        Line::from(match &t.writer {
            Some(w) if w.running => format!("writer: pid {}", w.pid),
            Some(w) => format!("writer: none (pid file names pid {}, not running)", w.pid),
            None => "writer: none".into(),
        }),
    ];
    for p in &s.info.problems {
        lines.push(Line::from(p.clone().red()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    #[test]
    fn the_view_shows_the_figures_of_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let mut w = mmsb::format::log::LogWriter::create(
            &log,
            mmsb::page::StateHash([1; 32]),
            1,
            mmsb::format::log::LogOptions::default(),
        )
        .unwrap();
        for epoch in 1..=3 {
            w.append(&mmsb::format::record::Delta {
                page_id: 42,
                epoch,
                timestamp_ns: 0,
                source: "t".into(),
                op: mmsb::format::record::Op::Sparse(vec![(0, &b"x"[..])]),
            })
            .unwrap();
        }
        w.finish().unwrap();
        let s = mmsb::ops::watch::snapshot(std::slice::from_ref(&log), None, 5).unwrap();
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, &s, None, &log)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect::<Vec<_>>()
            .join("");
        for expected in [
            "records      3  (seq 1..=3)   last epoch 3",
            "sparse",
            "writer: none",
            "42",
        ] {
            assert!(screen.contains(expected), "{expected:?} not on the screen:\n{screen}");
        }
    }
}
