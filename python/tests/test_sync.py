"""Weight sync on the CPU: `delta` on the trainer's side appends each step's changes to a log,
`apply` on the inference side brings its own copy of the tensors along, in place. The same
loop on a CUDA device is in test_gpu.py."""

import numpy as np
import pytest

import mmsb
import mmsb.numpy
from conftest import cli


def weights(seed):
    rng = np.random.default_rng(seed)
    return {
        "embed": rng.standard_normal((64, 32), dtype=np.float32),
        "q": rng.standard_normal((32, 32)).astype(np.float16),
        "bias": rng.standard_normal(3).astype(np.float16),  # 6 bytes: not a multiple of 4
        "codes": rng.integers(-128, 127, 333, dtype=np.int8),
        "mask": rng.integers(0, 2, 17, dtype=np.uint8),
    }


def train_step(w, rng):
    """A step that changes 1 row in 16 of each matrix and a few scattered bytes elsewhere."""
    new = {k: v.copy() for k, v in w.items()}
    for k in ("embed", "q"):
        rows = rng.choice(new[k].shape[0], max(1, new[k].shape[0] // 16), replace=False)
        new[k][rows] += 1
    new["codes"][rng.integers(0, 333)] ^= 5
    return new


def copy(w):
    return {k: v.copy() for k, v in w.items()}


# durable=False: each step's new segment and records are left to the OS, not synced.
@pytest.mark.parametrize("durable", [True, False])
def test_steps_sent_by_delta_and_applied_in_place_match_the_trainer_bit_for_bit(tmp_path, durable):
    log = tmp_path / "sync.log"
    rng = np.random.default_rng(7)
    trainer = weights(1)
    base = copy(trainer)
    server = copy(trainer)
    next_seq = None
    for step in range(4):
        new = train_step(trainer, rng)
        d = mmsb.numpy.delta(trainer, new, log, durable=durable)
        assert d.created == (step == 0)
        assert d.records == 3 and d.bytes_changed > 0
        trainer = new
        a = mmsb.numpy.apply(log, server, from_seq=next_seq)
        assert a.base_checked == (step == 0)
        assert a.records == 3 and a.last_seq == d.last_seq
        next_seq = a.last_seq + 1
        for k in trainer:
            assert server[k].tobytes() == trainer[k].tobytes(), (step, k)
    # Nothing new: nothing applied, and the position stays.
    a = mmsb.numpy.apply(log, server, from_seq=next_seq)
    assert (a.records, a.last_seq) == (0, next_seq - 1)
    # The base saved as a checkpoint is the log's base: every reader replays the log onto it.
    mmsb.numpy.save(base, tmp_path / "base.ckpt")
    assert mmsb.verify([tmp_path / "base.ckpt", log])["ok"]
    replayed = mmsb.numpy.load(tmp_path / "base.ckpt", logs=[log])
    for k in trainer:
        assert replayed[k].tobytes() == trainer[k].tobytes()
    # A second apply from the base reaches the same state in one call.
    fresh = copy(base)
    assert mmsb.numpy.apply(log, fresh).records == 12
    assert all(fresh[k].tobytes() == trainer[k].tobytes() for k in trainer)


def test_the_log_is_small_next_to_what_changed(tmp_path):
    log = tmp_path / "sync.log"
    rng = np.random.default_rng(3)
    old = {"w": rng.standard_normal((256, 256), dtype=np.float32)}
    new = copy(old)
    rows = [5, 77, 200]  # 3 rows of 1 KiB, rewritten as an optimizer step rewrites them
    new["w"][rows] = rng.standard_normal((3, 256), dtype=np.float32)
    d = mmsb.numpy.delta(old, new, log)
    assert 0.9 * 3 * 1024 <= d.bytes_changed <= 3 * 1024
    assert d.payload_bytes <= 1.2 * 3 * 1024


def test_tensors_that_are_not_the_base_are_refused_by_name_and_left_alone(tmp_path):
    log = tmp_path / "sync.log"
    base = weights(1)
    new = copy(base)
    new["embed"][0, 0] = 5
    mmsb.numpy.delta(base, new, log)
    server = copy(base)
    server["codes"][0] ^= 1
    before = copy(server)
    with pytest.raises(mmsb.CorruptionError, match='"codes" does not hold the log') as e:
        mmsb.numpy.apply(log, server)
    assert e.value.kind == "wrong_base" and e.value.exit_code == 1
    assert all(server[k].tobytes() == before[k].tobytes() for k in server)
    wrong = copy(base)
    wrong["embed"] = wrong["embed"].astype(np.float64)
    with pytest.raises(mmsb.CorruptionError, match='"embed" is F64'):
        mmsb.numpy.apply(log, wrong)
    missing = copy(base)
    del missing["mask"]
    with pytest.raises(mmsb.CorruptionError, match='"mask" of the log'):
        mmsb.numpy.apply(log, missing)


def test_views_append_and_logs_of_another_kind(tmp_path):
    log = tmp_path / "sync.log"
    base = {"m": np.arange(64, dtype=np.int32).reshape(8, 8)}
    new = {"m": base["m"].copy()}
    new["m"][:, 3] = -1
    # A view that is not contiguous is read through a copy...
    d = mmsb.numpy.delta({"m": base["m"].T.copy().T}, {"m": np.asfortranarray(new["m"])}, log)
    assert d.records == 1
    # ...and refused where it would be written.
    with pytest.raises(mmsb.Error, match="not C-contiguous"):
        mmsb.numpy.apply(log, {"m": np.asfortranarray(base["m"])})
    with pytest.raises(mmsb.Error, match="append=False"):
        mmsb.numpy.delta(base, new, log, append=False)
    # A log written by `mmsb diff` has no BASE record: apply says what to do instead.
    cli("gen", "-o", tmp_path / "a.ckpt", "--pages", 4, "--total-size", 256, "--log", tmp_path / "a.log", "--deltas", 3)
    with pytest.raises(mmsb.Error, match="no BASE record"):
        mmsb.numpy.apply(tmp_path / "a.log", {"m": base["m"].copy()})


def test_torch_cpu_tensors_sync_bf16_and_odd_sizes(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    import mmsb.torch

    g = torch.Generator().manual_seed(0)
    trainer = {
        "w": torch.randn(40, 24, generator=g).to(torch.bfloat16),
        "b": torch.randn(5, generator=g).to(torch.float16),
        "u": torch.randint(0, 255, (13,), generator=g, dtype=torch.uint8),
    }
    server = {k: v.clone() for k, v in trainer.items()}
    log = tmp_path / "sync.log"
    seq = None
    for step in range(3):
        new = {k: v.clone() for k, v in trainer.items()}
        new["w"][step * 3 : step * 3 + 2] += 1
        new["u"][step] += 1
        mmsb.torch.delta(trainer, new, log)
        trainer = new
        seq = mmsb.torch.apply(log, server, from_seq=seq).last_seq + 1
    assert all(torch.equal(server[k], trainer[k]) for k in trainer)
    with pytest.raises(mmsb.Error, match="not contiguous"):
        mmsb.torch.apply(log, {**server, "w": server["w"].t()})


def test_weights_loaded_from_a_checkpoint_take_sync_steps_in_place_and_the_file_stays(tmp_path):
    # The inference side loads its weights without a copy (views of a private mapping of the
    # checkpoint), then follows the trainer's log in place: the writes land in this process's
    # copy of the mapped pages, never in the checkpoint.
    trainer = weights(3)
    mmsb.numpy.save(trainer, tmp_path / "w.ckpt")
    before = (tmp_path / "w.ckpt").read_bytes()
    server = mmsb.numpy.load(tmp_path / "w.ckpt")
    rng = np.random.default_rng(11)
    log = tmp_path / "sync.log"
    next_seq = None
    for _ in range(2):
        new = train_step(trainer, rng)
        mmsb.numpy.delta(trainer, new, log)
        trainer = new
        next_seq = mmsb.numpy.apply(log, server, from_seq=next_seq).last_seq + 1
    for k in trainer:
        assert server[k].tobytes() == trainer[k].tobytes(), k
    assert (tmp_path / "w.ckpt").read_bytes() == before
    assert mmsb.numpy.load(tmp_path / "w.ckpt")["embed"].tobytes() == weights(3)["embed"].tobytes()
