"""mmsb.torch.load onto a CUDA device, against safetensors' loader on the same file.

Runs where torch sees a CUDA device (scripts/gpu-python.sh); skipped, with
the reason shown, everywhere else.
"""

import gc

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import mmsb  # noqa: E402
import mmsb.torch  # noqa: E402
from conftest import import_with_log  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def model(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(1000, 256, generator=g).to(torch.bfloat16),
        "layers.0.attn.q.weight": torch.randn(256, 256, generator=g).to(torch.float16),
        "layers.0.mlp.up.weight": torch.randn(512, 256, generator=g),
        "layers.0.norm.bias": torch.randn(3, generator=g).to(torch.float16),  # 6 bytes
        "codes": torch.randint(-128, 127, (333,), generator=g, dtype=torch.int8),
        "mask": torch.randint(0, 2, (17,), generator=g, dtype=torch.uint8),
        "step": torch.tensor(3, dtype=torch.int64),
    }


@pytest.fixture
def files(tmp_path):
    first = model(1)
    second = {k: v.clone() for k, v in first.items()}
    second["embed.weight"][10:20] += 1
    second["codes"][7] = 42
    save_file(first, tmp_path / "a.safetensors")
    save_file(second, tmp_path / "b.safetensors")
    import_with_log(tmp_path)
    return tmp_path


def assert_equal_on_device(got, want):
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert got[name].device == t.device, name
        assert got[name].dtype == t.dtype, name
        assert got[name].shape == t.shape, name
        assert torch.equal(got[name], t), name


def test_load_onto_cuda_equals_safetensors_load_file(files):
    got = mmsb.torch.load(files / "a.ckpt", device="cuda:0", verify=True)
    assert_equal_on_device(got, load_file(files / "a.safetensors", device="cuda:0"))


def test_load_onto_cuda_applies_a_log_and_stops_where_asked(files):
    got = mmsb.torch.load(files / "a.ckpt", logs=[files / "a.log"], device="cuda:0")
    assert_equal_on_device(got, load_file(files / "b.safetensors", device="cuda:0"))
    got = mmsb.torch.load(files / "a.ckpt", logs=[files / "a.log"], device="cuda:0", to_seq=0)
    assert_equal_on_device(got, load_file(files / "a.safetensors", device="cuda:0"))


def test_tensors_alias_the_device_pages_and_free_them_with_the_last_tensor(files):
    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    got = mmsb.torch.load(files / "a.ckpt", device="cuda:0")
    page_bytes = sum(t.numel() * t.element_size() for t in got.values())
    free_loaded, _ = torch.cuda.mem_get_info()
    assert free_before - free_loaded >= page_bytes
    # Writable, and in place: a write through one tensor is seen by the next read.
    got["codes"][0] = 5
    assert int(got["codes"][0]) == 5
    keep = got.pop("embed.weight")
    got.clear()
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.mem_get_info()[0] < free_before, "one tensor still holds the pages"
    assert keep.float().abs().sum() > 0
    del keep
    gc.collect()
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    # The driver frees in its own granularity: within 2 MiB of where it started.
    assert free_after >= free_before - (2 << 20)


def test_a_corrupt_page_is_refused_on_the_device_with_its_file(files):
    bad = files / "bad.ckpt"
    data = bytearray((files / "a.ckpt").read_bytes())
    page = next(p for p in mmsb.open(files / "a.ckpt").pages if p.name == "codes")
    data[page.offset + 1] ^= 0x10
    bad.write_bytes(bytes(data))
    with pytest.raises(mmsb.CorruptionError) as caught:
        mmsb.torch.load(bad, device="cuda:0", verify=True)
    assert caught.value.path == str(bad)


def train_step(weights, step):
    """Changes about 1 row in 32 of each matrix (at least one), and one element of each vector,
    on the device."""
    g = torch.Generator(device="cuda").manual_seed(step)
    for t in weights.values():
        if t.dim() == 2:
            rows = torch.randperm(t.shape[0], generator=g, device="cuda")[: max(1, t.shape[0] // 32)]
            t[rows] = torch.randint(0, 100, (rows.numel(), t.shape[1]), generator=g, device="cuda").to(t.dtype)
        elif t.dim() == 1:
            t[step % t.shape[0]] = t[step % t.shape[0]] + 1


def test_sync_loop_on_cuda_matches_the_trainer_bit_for_bit(tmp_path):
    log = tmp_path / "sync.log"
    trainer = {k: v.cuda() for k, v in model(2).items()}
    old = {k: v.clone() for k, v in trainer.items()}
    server = {k: v.clone() for k, v in trainer.items()}
    seq = None
    for step in range(5):
        train_step(trainer, step)
        d = mmsb.torch.delta(old, trainer, log)
        assert d.records >= 5, d
        for k in trainer:
            old[k].copy_(trainer[k])
        a = mmsb.torch.apply(log, server, from_seq=seq)
        assert a.records == d.records and a.last_seq == d.last_seq
        assert a.base_checked == (seq is None)
        seq = a.last_seq + 1
        for k in trainer:
            assert torch.equal(server[k], trainer[k]), (step, k)
    # The same log brings CPU tensors from the base to the same bytes.
    cpu = {k: v.cpu() for k, v in model(2).items()}
    mmsb.torch.apply(log, cpu)
    for k in trainer:
        assert torch.equal(cpu[k], trainer[k].cpu()), k


def test_delta_of_views_at_odd_device_addresses_finds_every_changed_byte(tmp_path):
    """Tensors that start at odd addresses (views into larger buffers), old and new at different
    offsets from an 8-byte boundary, with changes at their first and last bytes and across
    the device compare's 256-byte windows."""
    g = torch.Generator().manual_seed(7)
    old_buf = torch.randint(0, 256, (12_000,), generator=g, dtype=torch.uint8).cuda()
    new_buf = torch.zeros(12_001, dtype=torch.uint8, device="cuda")
    spans = {"a": (3, 4099), "b": (5003, 1001), "c": (7001, 5)}
    old = {k: old_buf[o : o + n] for k, (o, n) in spans.items()}
    new = {k: new_buf[o + 1 : o + 1 + n] for k, (o, n) in spans.items()}
    for k in old:
        new[k].copy_(old[k])
    for k, at in {"a": [0, 255, 256, 257, 1000, 4098], "b": [511, 512, 1000], "c": [4]}.items():
        for i in at:
            new[k][i] ^= 0x5A
    log = tmp_path / "sync.log"
    d = mmsb.torch.delta(old, new, log)
    assert d.bytes_changed == 10 and d.records == 3, d
    server = {k: v.clone() for k, v in old.items()}
    mmsb.torch.apply(log, server)
    for k in new:
        assert torch.equal(server[k], new[k]), k


def test_cuda_tensors_that_are_not_the_base_are_refused_by_name_and_left_alone(tmp_path):
    log = tmp_path / "sync.log"
    base = {k: v.cuda() for k, v in model(3).items()}
    new = {k: v.clone() for k, v in base.items()}
    train_step(new, 0)
    mmsb.torch.delta(base, new, log)
    server = {k: v.clone() for k, v in base.items()}
    server["mask"][3] ^= 1
    before = {k: v.clone() for k, v in server.items()}
    with pytest.raises(mmsb.CorruptionError, match='"mask" does not hold the log') as e:
        mmsb.torch.apply(log, server)
    assert e.value.kind == "wrong_base"
    for k in server:
        assert torch.equal(server[k], before[k]), k
    with pytest.raises(mmsb.Error, match="several devices"):
        mmsb.torch.apply(log, {**base, "mask": base["mask"].cpu()})
    # A step is one group from one device: tensors on several are refused before anything is
    # written.
    size = sum(p.stat().st_size for p in log.iterdir())
    with pytest.raises(mmsb.Error, match="several devices"):
        mmsb.torch.delta({**base, "mask": base["mask"].cpu()}, {**new, "mask": new["mask"].cpu()}, log)
    assert sum(p.stat().st_size for p in log.iterdir()) == size
