"""numpy arrays from mmsb checkpoints and logs (CPU only; numpy is the one dependency)."""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from . import Applied, Delta, Error, _applied, _load_pages, _mmsb, _paths, _same_keys, _sync_delta, _tensor_key

__all__ = ["apply", "delta", "load", "save"]

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
    dtype numpy lacks (``BF16``, the ``F8`` kinds) is refused, naming the tensor.

    A page that no log record changed is not copied: its array is a view of a private,
    copy-on-write mapping of the checkpoint, kept mapped while the array lives; it is writable,
    and a write changes this process's copy of the bytes, never the file. Pages a record changed
    are copies."""
    out = {}
    for page_id, name, dtype, shape, data in _load_pages(path, logs, to_seq, pages, alias=True):
        key = _tensor_key(page_id, name)
        raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytearray) else np.asarray(data)
        if dtype is None:
            out[key] = raw
            continue
        np_dtype = _DTYPES.get(dtype)
        if np_dtype is None:
            raise Error(f"{key}: dtype {dtype} has no numpy equivalent; mmsb.torch.load reads it")
        out[key] = raw.view(np_dtype).reshape(shape)
    return out


def _dtype_name(name: str, array: np.ndarray) -> str:
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    dtype = next((k for k, v in _DTYPES.items() if v == little), None)
    if dtype is None or little != array.dtype:
        raise Error(f"{name}: numpy dtype {array.dtype} has no safetensors equivalent (little-endian)")
    return dtype


def _array(name: str, array, writable: bool) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise Error(f"{name}: {type(array).__name__} is not a numpy array")
    if not writable:
        return np.ascontiguousarray(array)
    if not array.flags.c_contiguous:
        raise Error(f"{name}: the array is not C-contiguous, so it cannot be updated in place")
    if not array.flags.writeable:
        raise Error(f"{name}: the array is read-only, so it cannot be updated in place")
    return array


def apply(
    log: Union[str, "os.PathLike[str]"],
    tensors: Dict[str, np.ndarray],
    from_seq: Optional[int] = None,
    to_seq: Optional[int] = None,
) -> Applied:
    """Applies the records of the sync log ``log`` (written by ``delta``) from ``from_seq`` to
    ``to_seq`` onto ``tensors`` in place, by name. Every tensor of the log's base must be given,
    with its dtype and shape, C-contiguous and writable. Without ``from_seq`` the arrays must
    hold the log's base, which is checked (CRC32C of each; the first that differs is named in a
    ``CorruptionError`` of kind ``wrong_base``); with it, they must hold the state after record
    ``from_seq - 1`` (``Applied.last_seq`` of the previous call). Nothing is written unless every
    record applies. Returns what was applied."""
    items = []
    for name, array in tensors.items():
        array = _array(name, array, writable=True)
        items.append((name, _dtype_name(name, array), list(array.shape), (array.ctypes.data, array.nbytes)))
    return _applied(_mmsb.sync_apply_host(_paths(log), items, from_seq, to_seq))


def delta(
    old: Dict[str, np.ndarray],
    new: Dict[str, np.ndarray],
    path: Union[str, "os.PathLike[str]"],
    append: bool = True,
    compress: bool = False,
    durable: bool = True,
) -> Delta:
    """Appends what changed from ``old`` to ``new`` (same names, dtypes and shapes) to the sync
    log ``path`` as one atomic group: per changed tensor the smallest of a full, sparse or masked
    write; with ``compress=True``, zstd for each record it shrinks by a 32nd or more (changed
    weights are close to random: it saves a few percent, for a core's time per step). Arrays that are not C-contiguous are read through a contiguous
    copy. A log that does not exist is created first, with ``old`` as its
    base state (its BASE record names every tensor); ``append=False`` refuses an existing log.
    ``mmsb.numpy.save(old, CKPT)`` writes the checkpoint the log applies to.
    ``durable=False`` leaves the step to the OS instead of syncing it to disk before returning:
    it survives this process being killed at any instant (the group stays whole), not a power
    loss; for a log that only carries steps to another process on the same host (on tmpfs, such
    as ``/dev/shm``, syncs cost nothing anyway)."""
    _same_keys(old, new)
    arrays = {}
    for name, a in old.items():
        a = _array(name, a, writable=False)
        b = _array(name, new[name], writable=False)
        if a.dtype != b.dtype or a.shape != b.shape:
            raise Error(f"{name}: old is {a.dtype} {a.shape}, new is {b.dtype} {b.shape}")
        arrays[name] = (a, b)

    def base():
        return [
            (n, _dtype_name(n, a), list(a.shape), a.nbytes, _mmsb.crc32c_host((a.ctypes.data, a.nbytes)))
            for n, (a, _) in arrays.items()
        ]

    changed = [
        (n, [0], [a.nbytes], (a.ctypes.data, a.nbytes), (b.ctypes.data, b.nbytes)) for n, (a, b) in arrays.items()
    ]
    return _sync_delta(path, append, base, lambda p: _mmsb.sync_delta(p, changed, compress, durable))


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
