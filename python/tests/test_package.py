"""The Python package against the command line and the safetensors package, on real files.

The `mmsb` binary writes the checkpoints and logs (conftest.py); the package reads them. torch
tests run where torch is installed and are skipped, visibly, elsewhere.
"""

import gc
import json
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mmsb
import mmsb.numpy
from conftest import MMSB, cli, import_with_log


def tensors(seed):
    rng = np.random.default_rng(seed)
    return {
        "emb.weight": rng.standard_normal((7, 5), dtype=np.float32),
        "ln.bias": rng.standard_normal(3).astype(np.float16),  # 6 bytes: not a multiple of 4
        "steps": np.arange(4, dtype=np.int64),
        "mask": rng.integers(0, 2, 9).astype(bool),
        "codes": rng.integers(-128, 127, 11, dtype=np.int8),
        "raw": rng.integers(0, 255, 13, dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float64),
    }


@pytest.fixture
def model(tmp_path):
    """A safetensors file imported as a checkpoint, and a log that turns it into a second one."""
    first, second = tensors(1), tensors(1)
    second["emb.weight"][2] += 1.0
    second["codes"][5] = 99
    save_file(first, tmp_path / "a.safetensors")
    save_file(second, tmp_path / "b.safetensors")
    import_with_log(tmp_path)
    return tmp_path, first, second


def assert_same(loaded, expected):
    assert sorted(loaded) == sorted(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert np.array_equal(got, want), name


def test_numpy_load_reads_what_safetensors_reads(model):
    d, first, _ = model
    loaded = mmsb.numpy.load(d / "a.ckpt")
    assert_same(loaded, load_file(d / "a.safetensors"))
    assert_same(loaded, first)


def test_numpy_load_replays_a_log_and_stops_where_asked(model):
    d, first, second = model
    assert_same(mmsb.numpy.load(d / "a.ckpt", logs=[d / "a.log"]), second)
    assert_same(mmsb.numpy.load(d / "a.ckpt", logs=[d / "a.log"], to_seq=0), first)


def memory_owner(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def test_numpy_load_aliases_the_file_for_pages_no_record_changed(model):
    d, _, second = model
    before = (d / "a.ckpt").read_bytes()
    loaded = mmsb.numpy.load(d / "a.ckpt", logs=[d / "a.log"])
    # The log changed emb.weight and codes: those are copies; the rest view the mapped file.
    changed = {"emb.weight", "codes"}
    for name, a in loaded.items():
        assert (type(memory_owner(a)).__name__ == "MappedBytes") == (name not in changed), name
        assert a.flags.writeable, name
    # A write changes this process's copy only: the file, and a second load, keep the bytes.
    loaded["raw"][0] ^= 0xFF
    assert loaded["raw"][0] != second["raw"][0]
    assert (d / "a.ckpt").read_bytes() == before
    assert np.array_equal(mmsb.numpy.load(d / "a.ckpt")["raw"], second["raw"])
    # A view outlives everything else that referred to the mapping, and reads the same bytes.
    loaded["raw"][0] ^= 0xFF
    raw = loaded.pop("raw")
    del loaded
    gc.collect()
    assert np.array_equal(raw, second["raw"])
    assert np.array_equal(raw.copy(), second["raw"])


def test_diff_reports_what_the_command_line_reports(model):
    d, _, _ = model
    got = mmsb.diff(d / "a.ckpt", d / "b.ckpt")
    # `mmsb diff` exits 1 when the states differ, as diff(1) does.
    run = subprocess.run([MMSB, "diff", d / "a.ckpt", d / "b.ckpt", "--json"], capture_output=True, text=True)
    assert run.returncode == 1
    want = json.loads(run.stdout)
    assert got == want
    assert not got["identical"] and got["changed"] == 2
    # A plus its log is B.
    assert mmsb.diff(d / "a.ckpt", d / "b.ckpt", a_logs=[d / "a.log"])["bytes_identical"]


def test_pages_selects_tensors_by_name(model):
    d, first, _ = model
    loaded = mmsb.numpy.load(d / "a.ckpt", pages=["emb.*", "steps"])
    assert sorted(loaded) == ["emb.weight", "steps"]
    assert np.array_equal(loaded["steps"], first["steps"])


def test_open_reports_the_page_table_and_hash_inspect_reports(model):
    d, first, _ = model
    ckpt = mmsb.open(d / "a.ckpt")
    (doc,) = json.loads(cli("inspect", d / "a.ckpt", "--json"))
    assert ckpt.state_hash == doc["state_hash"]
    assert ckpt.page_count == len(first) == len(ckpt.pages)
    by_name = {p.name: p for p in ckpt.pages}
    assert by_name["emb.weight"].dtype == "F32"
    assert by_name["emb.weight"].shape == (7, 5)
    assert by_name["ln.bias"].len == 6
    assert by_name["scalar"].shape == ()


def test_verify_returns_the_report_and_finds_a_flipped_byte(model):
    d, _, _ = model
    report = mmsb.verify([d / "a.ckpt", d / "a.log"])
    assert report["ok"] and report["problems"] == []
    bad = d / "bad.ckpt"
    shutil.copy(d / "a.ckpt", bad)
    page = next(p for p in mmsb.open(bad).pages if p.name == "emb.weight")
    data = bytearray(bad.read_bytes())
    data[page.offset + 3] ^= 0x40
    bad.write_bytes(bytes(data))
    report = mmsb.verify(bad)
    assert not report["ok"]
    assert len(report["problems"]) == 1


def test_a_corrupt_page_raises_with_the_file_and_offset(model):
    d, _, _ = model
    bad = d / "bad.ckpt"
    shutil.copy(d / "a.ckpt", bad)
    page = next(p for p in mmsb.open(bad).pages if p.name == "codes")
    data = bytearray(bad.read_bytes())
    data[page.offset] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(mmsb.CorruptionError) as caught:
        mmsb.numpy.load(bad)
    e = caught.value
    assert e.path == str(bad)
    assert e.kind == "corrupt"
    assert e.exit_code == 1
    assert e.offset is not None and e.offset <= page.offset
    assert str(bad) in str(e)


def test_a_missing_file_raises_a_request_error(tmp_path):
    with pytest.raises(mmsb.Error) as caught:
        mmsb.open(tmp_path / "nope.ckpt")
    assert not isinstance(caught.value, mmsb.CorruptionError)
    assert caught.value.kind == "io"
    assert caught.value.exit_code == 2
    assert caught.value.path == str(tmp_path / "nope.ckpt")


def test_a_log_of_another_state_is_refused(model):
    d, _, _ = model
    with pytest.raises(mmsb.CorruptionError) as caught:
        mmsb.numpy.load(d / "b.ckpt", logs=[d / "a.log"])
    assert caught.value.kind == "wrong_base"


def test_a_dtype_numpy_lacks_is_refused_by_name(tmp_path):
    # A BF16 tensor, written by hand (numpy has no bfloat16 to hand to safetensors).
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x80\x3f\x00\x40")
    cli("import", path, "--output", tmp_path / "bf16.ckpt")
    with pytest.raises(mmsb.Error, match="w: dtype BF16 has no numpy equivalent"):
        mmsb.numpy.load(tmp_path / "bf16.ckpt")


torch = None
try:
    import torch  # noqa: F811
except ImportError:
    pass

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


@needs_torch
def test_torch_load_reads_what_safetensors_torch_reads(tmp_path):
    import mmsb.torch
    from safetensors.torch import load_file as torch_load_file
    from safetensors.torch import save_file as torch_save_file

    g = torch.Generator().manual_seed(3)
    want = {
        "w.bf16": torch.randn(5, 3, generator=g).to(torch.bfloat16),
        "w.f16": torch.randn(3, generator=g).to(torch.float16),
        "w.f32": torch.randn(2, 2, generator=g),
        "i8": torch.tensor([-3, 4, 5], dtype=torch.int8),
        "u8": torch.tensor([1, 2, 3, 250], dtype=torch.uint8),
    }
    torch_save_file(want, tmp_path / "t.safetensors")
    cli("import", tmp_path / "t.safetensors", "--output", tmp_path / "t.ckpt")
    got = mmsb.torch.load(tmp_path / "t.ckpt")
    peer = torch_load_file(tmp_path / "t.safetensors")
    assert sorted(got) == sorted(peer)
    for name in want:
        assert got[name].dtype == peer[name].dtype, name
        assert torch.equal(got[name], peer[name]), name
    with pytest.raises(mmsb.Error, match="w.bf16"):
        mmsb.numpy.load(tmp_path / "t.ckpt")
    if not torch.cuda.is_available():
        with pytest.raises(mmsb.Error) as caught:
            mmsb.torch.load(tmp_path / "t.ckpt", device="cuda:0")
        assert caught.value.kind == "gpu" and caught.value.exit_code == 2


@needs_torch
def test_torch_load_on_the_cpu_aliases_unchanged_pages_and_never_writes_the_file(model):
    import mmsb.torch

    d, _, second = model
    before = (d / "a.ckpt").read_bytes()
    loaded = mmsb.torch.load(d / "a.ckpt", logs=[d / "a.log"])
    for name, want in second.items():
        assert torch.equal(loaded[name], torch.from_numpy(want)), name
    # An unchanged page's tensor is the mapping's bytes: pages lie as far apart as in the file.
    offset = {p.name: p.offset for p in mmsb.open(d / "a.ckpt").pages}
    for name in ("ln.bias", "steps", "mask", "raw"):
        assert loaded[name].data_ptr() - loaded["raw"].data_ptr() == offset[name] - offset["raw"], name
    # Two loads give two private copies of one file; a write to one shows in neither the other
    # nor the file.
    again = mmsb.torch.load(d / "a.ckpt")
    loaded["raw"][0] ^= 0xFF
    loaded["ln.bias"].mul_(2)
    assert int(again["raw"][0]) == int(second["raw"][0]) != int(loaded["raw"][0])
    assert torch.equal(again["ln.bias"], torch.from_numpy(second["ln.bias"]))
    assert (d / "a.ckpt").read_bytes() == before
    # The mapping outlives the dict and the load that made it.
    bias = loaded.pop("ln.bias")
    del loaded, again
    gc.collect()
    assert torch.equal(bias, torch.from_numpy(second["ln.bias"]) * 2)


def test_numpy_save_writes_what_load_and_the_command_line_read(tmp_path):
    want = tensors(4)
    want["view"] = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]  # not C-contiguous
    want["big_endian"] = np.arange(5, dtype=">u4")
    path = tmp_path / "s.ckpt"
    state_hash = mmsb.numpy.save(want, path, metadata={"step": "7"})
    ckpt = mmsb.open(path)
    assert ckpt.state_hash == state_hash
    assert ckpt.metadata == {"step": "7"}
    assert [p.name for p in ckpt.pages] == list(want)
    loaded = mmsb.numpy.load(path)
    for name, array in want.items():
        assert np.array_equal(loaded[name], array), name
    assert loaded["big_endian"].dtype == np.dtype("<u4")
    assert mmsb.verify(path)["ok"]
    cli("export", path, "--output", tmp_path / "s.safetensors")
    peer = load_file(tmp_path / "s.safetensors")
    for name, array in want.items():
        assert np.array_equal(peer[name], array), name


def test_save_refuses_what_cannot_be_a_tensor_page(tmp_path):
    with pytest.raises(mmsb.Error, match="z: numpy dtype complex64"):
        mmsb.numpy.save({"z": np.zeros(2, dtype=np.complex64)}, tmp_path / "z.ckpt")
    with pytest.raises(mmsb.Error, match="__metadata__"):
        mmsb.numpy.save({"__metadata__": np.zeros(2, dtype=np.uint8)}, tmp_path / "m.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "s.ckpt"
    old_hash = mmsb.numpy.save({"a": np.arange(3, dtype=np.uint8)}, path)
    old_bytes = path.read_bytes()

    class Broken:
        def tobytes(self):
            raise RuntimeError("the tensor went away")

    items = [("a", "U8", [3], 3, np.arange(3, dtype=np.uint8)), ("b", "U8", [2], 2, Broken())]
    with pytest.raises(RuntimeError, match="went away"):
        mmsb._mmsb.save(str(path), items, None)
    assert path.read_bytes() == old_bytes
    assert mmsb.open(path).state_hash == old_hash
    assert [p.name for p in tmp_path.iterdir()] == ["s.ckpt"]


@needs_torch
def test_torch_save_writes_what_torch_load_reads_and_refuses_a_strided_view(tmp_path):
    import mmsb.torch

    g = torch.Generator().manual_seed(5)
    want = {
        "w.bf16": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "w.f16": torch.randn(5, generator=g).to(torch.float16),
        "offset": torch.arange(10, dtype=torch.int64)[3:7],  # contiguous, with a storage offset
        "u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "scalar": torch.tensor(1.5),
    }
    path = tmp_path / "t.ckpt"
    state_hash = mmsb.torch.save(want, path)
    assert mmsb.open(path).state_hash == state_hash
    got = mmsb.torch.load(path)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    with pytest.raises(mmsb.Error, match="w: the tensor is not contiguous"):
        mmsb.torch.save({"w": torch.zeros(4, 4).t()}, tmp_path / "v.ckpt")
