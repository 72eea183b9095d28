//! Man pages and shell completions, generated from the clap definitions.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

/// Writes `mmsb.1` and one page per visible subcommand, nested ones included
/// (`mmsb-bench-load.1`), into `dir`. A page's synopsis names the command as it is typed
/// (`mmsb verify`); its `after_help` blocks (`EXAMPLES:`, `EXIT STATUS:`) become sections of
/// those names.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building gives every subcommand its bin name (`mmsb verify`) and display name
    // (`mmsb-verify`).
    cmd.build();
    write_page(&cmd, dir)
}

fn write_page(cmd: &clap::Command, dir: &Path) -> Result<()> {
    let man = Man::new(cmd.clone()).source(format!("mmsb {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(after) = cmd.get_after_help() {
        after_help_sections(&after.to_string()).to_writer(&mut buf)?;
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    mmsb::fsutil::write_atomic(&dir.join(format!("{name}.1")), &once_preamble(&buf))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, dir)?;
    }
    Ok(())
}

/// The page with roff's two preamble lines (which each rendered section repeats) kept once.
fn once_preamble(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let mut lines = text.lines();
    let preamble: Vec<&str> = lines.by_ref().take(2).collect();
    let mut out = preamble.join("\n");
    out.push('\n');
    for line in lines.filter(|l| !preamble.contains(l)) {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// `after_help` text as man sections: a line such as `EXAMPLES:` starts a section of that
/// name, and the lines under it are kept as they are (no filling).
fn after_help_sections(text: &str) -> Roff {
    let mut roff = Roff::default();
    let mut open = false;
    for line in text.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_uppercase() || c == ' '));
        if let Some(h) = heading {
            if open {
                roff.control("fi", []);
            }
            roff.control("SH", [h]);
            roff.control("nf", []);
            open = true;
        } else {
            if !open {
                roff.control("SH", ["NOTES"]);
                roff.control("nf", []);
                open = true;
            }
            roff.text([roman(line)]);
        }
    }
    if open {
        roff.control("fi", []);
    }
    roff
}

/// Writes the completion script for `shell` to standard output.
/// Every shell's completion script, as files named as each shell looks for them (`mmsb.bash`,
/// `_mmsb` for zsh, `mmsb.fish`, `_mmsb.ps1`, `mmsb.elv`), into `dir`.
pub fn write_completion_files(cmd: &mut clap::Command, dir: &Path) -> Result<()> {
    use clap::ValueEnum;
    for shell in clap_complete::Shell::value_variants() {
        clap_complete::generate_to(*shell, cmd, "mmsb", dir)
            .with_context(|| format!("{shell} completions into {}", dir.display()))?;
    }
    Ok(())
}

pub fn write_completions(cmd: &mut clap::Command, shell: clap_complete::Shell) -> Result<()> {
    let mut out = crate::print::stdout();
    clap_complete::generate(shell, cmd, "mmsb", &mut out);
    out.flush()?;
    Ok(())
}
