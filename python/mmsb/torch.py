"""torch tensors from mmsb checkpoints and logs. torch is imported when this module is."""

from __future__ import annotations

import ctypes
import os
from typing import Dict, Iterable, Optional, Sequence, Union

import torch

from . import Error, _load_pages, _mmsb, _tensor_key

__all__ = ["load", "save"]


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
    CRC32C and every log record are always checked, and each tensor is one copy."""
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
    for page_id, name, dtype, shape, data in _load_pages(path, logs, to_seq, pages):
        key = _tensor_key(page_id, name)
        if dtype is None:
            out[key] = torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.empty(0, dtype=torch.uint8)
            continue
        t_dtype = _DTYPES.get(dtype)
        if t_dtype is None:
            raise Error(f"{key}: dtype {dtype} has no torch equivalent in torch {torch.__version__}")
        if len(data) == 0:
            out[key] = torch.empty(shape, dtype=t_dtype)
        else:
            out[key] = torch.frombuffer(data, dtype=t_dtype).reshape(shape)
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
    names = {v: k for k, v in _DTYPES.items()}
    items = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise Error(f"{name}: {type(t).__name__} is not a torch tensor")
        if t.layout != torch.strided:
            raise Error(f"{name}: a {t.layout} tensor cannot be a page; pass a dense tensor")
        if not t.is_contiguous():
            raise Error(f"{name}: the tensor is not contiguous; pass {name}.contiguous()")
        dtype = names.get(t.dtype)
        if dtype is None:
            raise Error(f"{name}: torch dtype {t.dtype} has no safetensors equivalent")
        items.append((name, dtype, list(t.shape), t.numel() * t.element_size(), _Bytes(t)))
    return _mmsb.save(os.fspath(path), items, metadata)
