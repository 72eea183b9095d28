"""numpy arrays from mmsb checkpoints and logs (CPU only; numpy is the one dependency)."""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from . import Error, _load_pages, _mmsb, _tensor_key

__all__ = ["load", "save"]

# safetensors dtype names numpy has (little-endian, as the bytes are stored).
_DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}


def load(
    path: Union[str, "os.PathLike[str]"],
    logs: Iterable[Union[str, "os.PathLike[str]"]] = (),
    to_seq: Optional[int] = None,
    pages: Optional[Sequence[str]] = None,
) -> Dict[str, np.ndarray]:
    """Replays ``path`` plus ``logs`` (segments or log directories; up to sequence number
    ``to_seq``) on the CPU, every checksum checked, and returns its tensors by name, like
    ``safetensors.numpy.load_file``. ``pages`` selects pages as ``mmsb replay --pages`` does
    (ids, ranges, name globs). A page with no dtype comes back as its bytes (``uint8``); a
    dtype numpy lacks (``BF16``, the ``F8`` kinds) is refused, naming the tensor."""
    out = {}
    for page_id, name, dtype, shape, data in _load_pages(path, logs, to_seq, pages):
        key = _tensor_key(page_id, name)
        if dtype is None:
            out[key] = np.frombuffer(data, dtype=np.uint8)
            continue
        np_dtype = _DTYPES.get(dtype)
        if np_dtype is None:
            raise Error(f"{key}: dtype {dtype} has no numpy equivalent; mmsb.torch.load reads it")
        out[key] = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    return out


def save(
    tensors: Dict[str, np.ndarray],
    path: Union[str, "os.PathLike[str]"],
    metadata: Optional[Dict[str, str]] = None,
) -> str:
    """Writes ``tensors`` as a checkpoint at ``path`` (atomically: the old file, if any, stays
    until the new one is whole), one page per tensor in the dict's order, with ``metadata`` as
    the file's metadata; like ``safetensors.numpy.save_file``. Returns the state hash. Arrays
    that are not C-contiguous are written in C order; a dtype safetensors lacks is refused."""
    items = []
    for name, array in tensors.items():
        if not isinstance(array, np.ndarray):
            raise Error(f"{name}: {type(array).__name__} is not a numpy array")
        little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        dtype = next((k for k, v in _DTYPES.items() if v == little), None)
        if dtype is None:
            raise Error(f"{name}: numpy dtype {array.dtype} has no safetensors equivalent")
        if little != array.dtype:
            array = array.astype(little)
        items.append((name, dtype, list(array.shape), array.nbytes, array))
    return _mmsb.save(os.fspath(path), items, metadata)
