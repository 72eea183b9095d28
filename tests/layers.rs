//! The library's layers (docs/ARCHITECTURE.md): a module may use its own layer and those below
//! it, never one above. This test reads every `crate::MODULE` path in `src/` (the binary
//! excepted) and fails on a path that climbs.

use std::path::Path;

/// Layers, lowest first. An entry is a module path: a file belongs to the longest entry its
/// path starts with (`src/replay/state.rs` is `replay::state`, the CPU engine, below `gpu`;
/// the rest of `replay`, the front door, is above it).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "error", "page", "progress", "timing", "mmap", "fsutil", "select", "metrics",
        ],
    ),
    ("format", &["format"]),
    ("derived pages", &["graph", "propagate"]),
    ("cpu replay engine", &["replay::state"]),
    ("gpu", &["gpu"]),
    ("replay front door", &["replay"]),
    ("operations", &["ops"]),
    ("test tools", &["testing"]),
];

/// The layer of a module path (`["replay", "state", "State"]`): the longest entry it starts with.
fn layer_of(path: &[&str]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (layer, (_, entries)) in LAYERS.iter().enumerate() {
        for entry in *entries {
            let parts: Vec<&str> = entry.split("::").collect();
            if path.len() >= parts.len()
                && path[..parts.len()] == parts[..]
                && best.is_none_or(|(len, _)| parts.len() > len)
            {
                best = Some((parts.len(), layer));
            }
        }
    }
    best.map(|(_, layer)| layer)
}

/// The module path of a source file (`src/gpu/plan.rs` is `gpu::plan`).
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().map(|s| s.trim_end_matches(".rs").to_string()))
        .collect::<Option<_>>()?;
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        if module[0] == "bin" || module[0] == "lib" {
            continue;
        }
        let module_parts: Vec<&str> = module.iter().map(String::as_str).collect();
        let module = module.join("::");
        let own = layer_of(&module_parts).unwrap_or_else(|| {
            panic!(
                "{}: module `{module}` is in no layer: add it to LAYERS and docs/ARCHITECTURE.md",
                file.display()
            )
        });
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let used_parts: Vec<&str> = used.split("::").filter(|p| !p.is_empty()).collect();
                let Some(theirs) = layer_of(&used_parts) else { continue };
                checked += 1;
                if theirs > own {
                    climbs.push(format!(
                        "{}:{}: `{module}` ({}) uses `{used}` ({})",
                        file.display(),
                        n + 1,
                        LAYERS[own].0,
                        LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "the scan found the crate's paths ({checked})");
    assert!(
        climbs.is_empty(),
        "a lower layer uses a higher one:\n{}",
        climbs.join("\n")
    );
}

/// The check itself: a format module that used the CPU replay would be caught.
#[test]
fn a_climbing_path_is_recognised() {
    assert!(layer_of(&["replay", "state", "State"]) > layer_of(&["format", "log"]));
    assert!(layer_of(&["gpu", "plan"]) > layer_of(&["replay", "state"]));
    assert!(layer_of(&["replay", "gpu", "replay"]) > layer_of(&["gpu", "store"]));
    assert!(layer_of(&["replay", "run"]) > layer_of(&["gpu"]));
    assert!(layer_of(&["ops", "compact"]) > layer_of(&["replay"]));
    assert_eq!(layer_of(&["bin"]), None);
}

/// The binary stays thin: its main file holds one short function per command (docs/
/// ARCHITECTURE.md), and no engine (no replay, scan or writer of its own).
#[test]
fn the_binary_main_stays_thin() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/mmsb/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    let lines = text.lines().count();
    assert!(
        lines < 500,
        "src/bin/mmsb/main.rs has {lines} lines: move logic into the library"
    );
    for engine in [
        "State::from_checkpoint",
        "Log::open(",
        "LogWriter::",
        "CheckpointWriter",
        ".replay(",
    ] {
        assert!(
            !text.contains(engine),
            "src/bin/mmsb/main.rs uses {engine}: call the library's front door"
        );
    }
}
