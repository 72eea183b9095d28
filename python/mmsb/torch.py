"""torch tensors from mmsb checkpoints and logs. torch is imported when this module is."""

from __future__ import annotations

import ctypes
import os
from typing import Dict, Iterable, Optional, Sequence, Union

import torch

try:
    # The CPU load hands the mapped checkpoint's pages to torch through numpy's array
    # interface (torch.from_numpy); without numpy every page is copied.
    import numpy as _np
except ImportError:
    _np = None

from . import Applied, Delta, Error, _applied, _load_pages, _mmsb, _paths, _same_keys, _sync_delta, _tensor_key

__all__ = ["apply", "delta", "load", "save"]


def _dtypes():
    names = {
        "BOOL": "bool",
        "U8": "uint8",
        "I8": "int8",
        "I16": "int16",
        "U16": "uint16",
        "F16": "float16",
        "BF16": "bfloat16",
        "I32": "int32",
        "U32": "uint32",
        "F32": "float32",
        "I64": "int64",
        "U64": "uint64",
        "F64": "float64",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
    }
    # Older torch builds lack some of these (uint16/32/64 came in 2.3).
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


_DTYPES = _dtypes()
# torch dtype -> safetensors name, built once: the sync calls look up every tensor's each step.
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def load(
    path: Union[str, "os.PathLike[str]"],
    logs: Iterable[Union[str, "os.PathLike[str]"]] = (),
    device: Union[str, "torch.device"] = "cpu",
    pages: Optional[Sequence[str]] = None,
    to_seq: Optional[int] = None,
    verify: bool = False,
) -> Dict[str, "torch.Tensor"]:
    """Replays ``path`` plus ``logs`` (up to sequence number ``to_seq``) onto ``device`` and
    returns its tensors by name, like ``safetensors.torch.load_file``. ``pages`` selects pages
    as ``mmsb replay --pages`` does. A page with no dtype comes back as its bytes
    (``torch.uint8``).

    On ``cuda:N`` the load is ``mmsb replay --device cuda:N``'s, in this process: the tensors
    alias mmsb's device memory (DLPack, no copy after the load), which is freed when the last of
    them is; ``verify=True`` checks every page's CRC32C on the device. On the CPU every page's
    CRC32C and every log record are always checked; a page no log record changed is not copied
    (where numpy is installed): its tensor aliases a private, copy-on-write mapping of the
    checkpoint, writable, and a write to it changes this process's copy, never the file. Pages a
    record changed are copies."""
    dev = torch.device(device)
    selection = None if pages is None else [str(p) for p in pages]
    logs = [os.fspath(p) for p in ([logs] if isinstance(logs, (str, os.PathLike)) else logs)]
    out = {}
    if dev.type == "cuda":
        ordinal = dev.index if dev.index is not None else torch.cuda.current_device()
        _report, loaded = _mmsb.load_cuda(os.fspath(path), logs, ordinal, to_seq, selection, verify)
        for page_id, name, dtype, shape, nbytes, tensor in loaded:
            key = _tensor_key(page_id, name)
            t_dtype = torch.uint8 if dtype is None else _DTYPES.get(dtype)
            if t_dtype is None:
                raise Error(f"{key}: dtype {dtype} has no torch equivalent in torch {torch.__version__}")
            if nbytes == 0:
                out[key] = torch.empty(shape, dtype=t_dtype, device=dev)
            else:
                out[key] = torch.from_dlpack(tensor)
        return out
    if dev.type != "cpu":
        raise Error(f"mmsb.torch.load: device {device!r}: mmsb loads onto the CPU or a CUDA device")
    for page_id, name, dtype, shape, data in _load_pages(path, logs, to_seq, pages, alias=_np is not None):
        key = _tensor_key(page_id, name)
        t_dtype = torch.uint8 if dtype is None else _DTYPES.get(dtype)
        if t_dtype is None:
            raise Error(f"{key}: dtype {dtype} has no torch equivalent in torch {torch.__version__}")
        if len(data) == 0:
            out[key] = torch.empty(shape if dtype is not None else 0, dtype=t_dtype)
            continue
        if isinstance(data, bytearray):
            raw = torch.frombuffer(data, dtype=torch.uint8)
        else:
            raw = torch.from_numpy(_np.asarray(data))
        out[key] = raw if dtype is None else raw.view(t_dtype).reshape(shape)
    return out


class _Bytes:
    """A tensor's bytes, copied to the host only when the writer asks for them."""

    def __init__(self, tensor: "torch.Tensor"):
        self.tensor = tensor

    def tobytes(self) -> bytes:
        t = self.tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        n = t.numel() * t.element_size()
        # A contiguous tensor's bytes start at data_ptr() (its storage offset included).
        return ctypes.string_at(t.data_ptr(), n) if n else b""


def save(
    tensors: Dict[str, "torch.Tensor"],
    path: Union[str, "os.PathLike[str]"],
    metadata: Optional[Dict[str, str]] = None,
) -> str:
    """Writes ``tensors`` as a checkpoint at ``path`` (atomically), one page per tensor in the
    dict's order, with ``metadata`` as the file's metadata; like ``safetensors.torch.save_file``.
    Returns the state hash. Tensors on a GPU are copied to the host one at a time. A tensor
    that is not contiguous is refused, naming it, as ``save_file`` refuses it: pass
    ``t.contiguous()``."""
    items = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise Error(f"{name}: {type(t).__name__} is not a torch tensor")
        if t.layout != torch.strided:
            raise Error(f"{name}: a {t.layout} tensor cannot be a page; pass a dense tensor")
        if not t.is_contiguous():
            raise Error(f"{name}: the tensor is not contiguous; pass {name}.contiguous()")
        items.append((name, _dtype_name(name, t), list(t.shape), _nbytes(t), _Bytes(t)))
    return _mmsb.save(os.fspath(path), items, metadata)


def _dtype_name(name: str, t: "torch.Tensor") -> str:
    dtype = _DTYPE_NAMES.get(t.dtype)
    if dtype is None:
        raise Error(f"{name}: torch dtype {t.dtype} has no safetensors equivalent")
    return dtype


def _nbytes(t: "torch.Tensor") -> int:
    return t.numel() * t.element_size()


def _one_device(tensors: Dict[str, "torch.Tensor"]) -> "torch.device":
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise Error(f"the tensors are on several devices ({sorted(map(str, devices))}): give one device's at a time")
    dev = next(iter(devices), torch.device("cpu"))
    if dev.type not in ("cpu", "cuda"):
        raise Error(f"device {dev}: mmsb works on the CPU or a CUDA device")
    return dev


def apply(
    log: Union[str, "os.PathLike[str]"],
    tensors: Dict[str, "torch.Tensor"],
    from_seq: Optional[int] = None,
    to_seq: Optional[int] = None,
) -> Applied:
    """Applies the records of the sync log ``log`` (written by ``delta``) from ``from_seq`` to
    ``to_seq`` onto ``tensors`` in place, by name: the RL weight-sync loop's inference side.

    Every tensor of the log's base must be given, with its dtype and shape, all on one device
    (the CPU or one CUDA device), each contiguous (a view that is not is refused, naming it: it
    cannot be written in place as one run of bytes). Without ``from_seq`` the tensors must hold
    the log's base, which is checked (CRC32C of each, on the device for CUDA tensors; the first
    that differs is named, kind ``wrong_base``); with it, they must hold the state after record
    ``from_seq - 1`` (``Applied.last_seq`` of the previous call). Nothing is written unless
    every record applies. On CUDA the log's records travel to the device and mmsb's replay
    kernels write them (only the changed bytes cross PCIe); the call returns once they are
    written, after waiting for the work already queued on the tensors' device."""
    items = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise Error(f"{name}: {type(t).__name__} is not a torch tensor")
        if t.layout != torch.strided or not t.is_contiguous():
            raise Error(f"{name}: the tensor is not contiguous, so it cannot be updated in place")
        items.append((name, _dtype_name(name, t), list(t.shape), (t.data_ptr(), _nbytes(t))))
    dev = _one_device(tensors)
    if dev.type == "cpu":
        return _applied(_mmsb.sync_apply_host(_paths(log), items, from_seq, to_seq))
    ordinal = dev.index if dev.index is not None else torch.cuda.current_device()
    # mmsb's stream must see what torch has queued on the tensors.
    torch.cuda.synchronize(ordinal)
    return _applied(_mmsb.sync_apply_cuda(_paths(log), items, ordinal, from_seq, to_seq))


def delta(
    old: Dict[str, "torch.Tensor"],
    new: Dict[str, "torch.Tensor"],
    path: Union[str, "os.PathLike[str]"],
    append: bool = True,
    compress: bool = False,
    durable: bool = True,
) -> Delta:
    """Appends what changed from ``old`` to ``new`` (same names, dtypes and shapes, all on
    one device) to the sync log ``path`` as one atomic group: the RL weight-sync loop's trainer
    side. Per changed tensor the smallest of a full, sparse or masked write; with
    ``compress=True``, zstd for each record it shrinks by a 32nd or more (changed weights are
    close to random: it saves a few percent, for a core's time per step).

    All tensors must be on one device (the CPU or one CUDA device). On CUDA one kernel compares
    every pair at once, and only the 256-byte windows that differ travel to the host (old and
    new); the exact byte ranges are found there. A log that does not exist
    is created first with ``old`` as its base state (its BASE record names every tensor, with
    its CRC32C, computed on the tensor's device);
    ``append=False`` refuses an existing log. ``mmsb.torch.save(old, CKPT)`` writes the
    checkpoint the log applies to. Views that are not contiguous are read through a contiguous
    copy.
    ``durable=False`` leaves the step to the OS instead of syncing it to disk before returning:
    it survives this process being killed at any instant (the group stays whole), not a power
    loss; for a log that only carries steps to another process on the same host (on tmpfs, such
    as ``/dev/shm``, syncs cost nothing anyway)."""
    _same_keys(old, new)
    pairs = {}
    for name, a in old.items():
        b = new[name]
        for t in (a, b):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                raise Error(f"{name}: not a dense torch tensor")
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            raise Error(f"{name}: old is {a.dtype} {tuple(a.shape)} on {a.device}, new is {b.dtype} {tuple(b.shape)} on {b.device}")
        _dtype_name(name, a)
        pairs[name] = (a.detach().contiguous(), b.detach().contiguous())

    def base():
        crcs = {}
        by_device = {}
        for n, (a, _) in pairs.items():
            if a.device.type == "cpu":
                crcs[n] = _mmsb.crc32c_host((a.data_ptr(), _nbytes(a)))
            else:
                by_device.setdefault(a.device, []).append(n)
        for dev, names in by_device.items():
            torch.cuda.synchronize(dev)
            ordinal = dev.index if dev.index is not None else torch.cuda.current_device()
            buffers = [(pairs[n][0].data_ptr(), _nbytes(pairs[n][0])) for n in names]
            crcs.update(zip(names, _mmsb.crc32c_cuda(buffers, ordinal)))
        return [(n, _dtype_name(n, a), list(a.shape), _nbytes(a), crcs[n]) for n, (a, _) in pairs.items()]

    dev = _one_device({n: a for n, (a, _) in pairs.items()})
    if dev.type == "cpu":
        changed = [
            (n, [0], [_nbytes(a)], (a.data_ptr(), _nbytes(a)), (b.data_ptr(), _nbytes(b))) for n, (a, b) in pairs.items()
        ]
        return _sync_delta(path, append, base, lambda p: _mmsb.sync_delta(p, changed, compress, durable))
    ordinal = dev.index if dev.index is not None else torch.cuda.current_device()
    items = [(n, (a.data_ptr(), _nbytes(a)), (b.data_ptr(), _nbytes(b))) for n, (a, b) in pairs.items()]
    # mmsb's stream must see what torch has queued on the tensors.
    torch.cuda.synchronize(dev)
    return _sync_delta(path, append, base, lambda p: _mmsb.sync_delta_cuda(p, items, ordinal, compress, durable))
