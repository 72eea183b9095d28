//! The library's layers (docs/ARCHITECTURE.md): a module may use its own layer and those below
//! it, never one above. This test reads every `crate::MODULE` path in `src/` (the binary
//! excepted) and fails on a path that climbs.

use std::path::Path;

/// Layers, lowest first; each top-level module of the library is in exactly one.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["error", "page", "timing", "mmap", "fsutil", "select"]),
    ("format", &["format"]),
    ("cpu replay and encoding", &["replay", "encoding"]),
    ("gpu", &["gpu"]),
    (
        "operations",
        &["compact", "diff", "verify", "inspect", "safetensors_io"],
    ),
    ("test tools", &["generate", "stress"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// The top-level module a source file belongs to (`src/gpu/plan.rs` is in `gpu`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
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
        if module == "bin" || module == "lib" {
            continue;
        }
        let own = layer_of(&module).unwrap_or_else(|| {
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
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let Some(theirs) = layer_of(&used) else { continue };
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
    assert!(layer_of("replay") > layer_of("format"));
    assert!(layer_of("gpu") > layer_of("replay"));
    assert!(layer_of("compact") > layer_of("gpu"));
    assert_eq!(layer_of("bin"), None);
}
