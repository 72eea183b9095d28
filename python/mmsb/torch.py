"""torch tensors from mmsb checkpoints and logs. torch is imported when this module is."""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence, Union

import torch

from . import Error, _load_pages, _tensor_key

__all__ = ["load"]


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
    verify: bool = True,
) -> Dict[str, "torch.Tensor"]:
    """Replays ``path`` plus ``logs`` (up to sequence number ``to_seq``) and returns its tensors
    by name, like ``safetensors.torch.load_file``. ``pages`` selects pages as ``mmsb replay
    --pages`` does. A page with no dtype comes back as its bytes (``torch.uint8``).

    Only ``device="cpu"`` is built: every page's CRC32C and every log record are checked
    (``verify`` is always on there). Loading straight into GPU memory is not built yet and is
    refused rather than done through a slow copy."""
    if torch.device(device).type != "cpu":
        raise Error(
            f"mmsb.torch.load: device {device!r}: loading onto a GPU from Python is not built yet; "
            "load on the CPU, or use `mmsb replay --device cuda:N` from the command line"
        )
    out = {}
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
