"""Helpers the Python tests share: the `mmsb` binary (MMSB_BIN, else target/debug/mmsb) that
writes the checkpoints and logs the package reads."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
MMSB = os.environ.get("MMSB_BIN", str(ROOT / "target" / "debug" / "mmsb"))


def cli(*args):
    """Runs `mmsb ARGS...`, failing the test on a non-zero exit; returns its stdout."""
    return subprocess.run([MMSB, *map(str, args)], check=True, capture_output=True, text=True).stdout


def import_with_log(directory):
    """Imports DIR/a.safetensors and DIR/b.safetensors as a.ckpt and b.ckpt, and writes a.log,
    the log that turns a.ckpt into b.ckpt (`mmsb diff --emit-log`)."""
    cli("import", directory / "a.safetensors", "--output", directory / "a.ckpt")
    cli("import", directory / "b.safetensors", "--output", directory / "b.ckpt")
    cli("diff", directory / "a.ckpt", directory / "b.ckpt", "--emit-log", directory / "a.log", "-q")
    assert (directory / "a.log").is_dir()
