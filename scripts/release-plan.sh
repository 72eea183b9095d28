#!/usr/bin/env bash
# The release dry run: `dist plan` (cargo-dist) lists what a release of this checkout builds:
# the archives for each target with the binary, man pages and completions, their checksums and
# the source archive. Installs the cargo-dist version dist-workspace.toml names, into
# target/dist-tool, where no such `dist` is on PATH (a build of several minutes, once).
# Usage: scripts/release-plan.sh [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^cargo-dist-version = "\(.*\)"/\1/p' dist-workspace.toml)
export PATH=$PWD/target/dist-tool/bin:$PATH
if ! dist --version 2>/dev/null | grep -qx "cargo-dist $version"; then
  cargo install cargo-dist --locked --version "$version" --root target/dist-tool --quiet
fi
if [ "${1:-}" = "--json" ]; then
  dist plan --output-format=json
else
  dist plan
fi
