//! Writes the golden files of `testdata/` (see testdata/README.md). Deterministic: running it
//! again gives the same bytes, which `tests/golden.rs` checks.
//!
//! cargo run --example make_testdata -- testdata

#[path = "../tests/common/golden_files.rs"]
mod golden_files;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "testdata".into()));
    golden_files::write_all(&out)
}
