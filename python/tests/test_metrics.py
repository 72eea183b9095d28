"""`mmsb.last_metrics()`: each call's figures, as `mmsb --metrics-file` writes a command's, for
whoever monitors the process that holds the weights."""

import os
import threading

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import mmsb
import mmsb.numpy


def weights(seed):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((16, 8), dtype=np.float32), "b": rng.standard_normal(5).astype(np.float16)}


def samples(text):
    """Each sample by name: (labels, value)."""
    return {s.name: (s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if not s.labels.get("phase")}


def log_bytes(log):
    return sum(os.path.getsize(os.path.join(log, f)) for f in os.listdir(log))


def test_save_and_load_report_the_files_bytes_and_the_state_hash(tmp_path):
    ckpt = tmp_path / "w.ckpt"
    state = mmsb.numpy.save(weights(1), ckpt)
    m = mmsb.last_metrics()
    assert (m.command, m.outcome, m.pages) == ("save", "ok", 2)
    assert m.written_bytes == ckpt.stat().st_size
    assert m.state_hash == state == mmsb.open(ckpt).state_hash
    mmsb.numpy.load(ckpt)
    m = mmsb.last_metrics()
    assert (m.command, m.outcome, m.device, m.pages, m.records) == ("load", "ok", "cpu", 2, 0)
    assert m.read_bytes == ckpt.stat().st_size and m.written_bytes == 0
    assert m.state_hash == mmsb.open(ckpt).state_hash and m.duration_seconds > 0
    # The text format, read back by Prometheus' own parser: the same figures.
    got = samples(m.to_prometheus())
    assert got["mmsb_load_read_bytes_total"][1] == m.read_bytes
    assert got["mmsb_load_pages_total"][1] == 2
    labels, value = got["mmsb_load_run_info"]
    assert value == 1 and (labels["outcome"], labels["state_hash"], labels["device"]) == ("ok", m.state_hash, "cpu")


def test_a_call_that_raises_leaves_its_metrics_with_the_outcome_the_exit_code_gives(tmp_path):
    ckpt = tmp_path / "w.ckpt"
    mmsb.numpy.save(weights(2), ckpt)
    data = bytearray(ckpt.read_bytes())
    data[-40] ^= 1  # a byte of the last page
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(mmsb.CorruptionError):
        mmsb.numpy.load(bad)
    assert (mmsb.last_metrics().command, mmsb.last_metrics().outcome) == ("load", "data_bad")
    with pytest.raises(mmsb.Error):
        mmsb.numpy.load(tmp_path / "missing.ckpt")
    assert mmsb.last_metrics().outcome == "failed"
    # verify returns its report; bad data still ends the run as exit code 1 does.
    report = mmsb.verify(bad)
    m = mmsb.last_metrics()
    assert not report["ok"] and (m.command, m.outcome) == ("verify", "data_bad")
    assert sum(m.problems.values()) == len(report["problems"]) == 1


def test_delta_and_apply_count_the_log_bytes_they_wrote_and_read(tmp_path):
    log = tmp_path / "sync.log"
    old = weights(3)
    new = {k: v.copy() for k, v in old.items()}
    new["w"][3] += 1
    mmsb.numpy.delta(old, new, log)  # creates the log, then appends
    before = log_bytes(log)
    newer = {k: v.copy() for k, v in new.items()}
    newer["b"][1] += 1
    d = mmsb.numpy.delta(new, newer, log, durable=False)
    m = mmsb.last_metrics()
    assert (m.command, m.outcome, m.records) == ("delta", "ok", d.records)
    assert m.written_bytes == log_bytes(log) - before
    server = {k: v.copy() for k, v in old.items()}
    a = mmsb.numpy.apply(log, server)
    m = mmsb.last_metrics()
    assert (m.command, m.records, m.pages) == ("apply", a.records, 2)
    assert m.read_bytes == log_bytes(log), "from the start, every segment is opened"
    # Written for node_exporter's textfile collector: one whole file, parsed back.
    out = tmp_path / "apply.prom"
    m.write_prometheus(out)
    assert samples(out.read_text())["mmsb_apply_records_total"][1] == a.records
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("apply.prom")] == ["apply.prom"]


def test_each_thread_sees_its_own_last_call(tmp_path):
    ckpt = tmp_path / "w.ckpt"
    mmsb.numpy.save(weights(4), ckpt)
    seen = {}

    def other():
        seen["before"] = mmsb.last_metrics()
        mmsb.verify(ckpt)
        seen["after"] = mmsb.last_metrics().command

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"before": None, "after": "verify"}
    assert mmsb.last_metrics().command == "save"
