"""mmsb from Python: checkpoints of page-structured state plus checksummed delta logs.

``mmsb.open`` reads a checkpoint's page table without loading pages, ``mmsb.verify`` runs every
check ``mmsb verify`` runs, and ``mmsb.numpy.load`` / ``mmsb.torch.load`` replay a checkpoint
plus logs into arrays or tensors keyed by tensor name, like ``safetensors``' loaders. Errors are
``mmsb.Error`` (``mmsb.CorruptionError`` when the data is bad), with ``path``, ``offset``,
``kind`` and ``exit_code`` attributes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._mmsb import CorruptionError, Error, __version__
from . import _mmsb

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "Checkpoint",
    "CorruptionError",
    "Error",
    "PageInfo",
    "__version__",
    "open",
    "verify",
]


@dataclass(frozen=True)
class PageInfo:
    """One page of a checkpoint's table: its id, length, epoch, CRC32C (8 hex digits), the offset
    of its bytes in the file and, for a tensor, its name, dtype (a safetensors dtype name such as
    ``"F32"``) and shape."""

    id: int
    len: int
    epoch: int
    crc32c: str
    offset: int
    name: Optional[str] = None
    dtype: Optional[str] = None
    shape: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's header and page table, as ``mmsb inspect --json`` reports them."""

    path: str
    version: str
    state_hash: str
    page_count: int
    data_bytes: int
    metadata: Dict[str, str]
    pages: List[PageInfo] = field(repr=False)


def _paths(paths: Iterable[PathLike]) -> List[str]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    return [os.fspath(p) for p in paths]


def open(path: PathLike) -> Checkpoint:  # noqa: A001 - the name the issue asks for
    """Reads a checkpoint's header and page table (no page bytes are read)."""
    doc = json.loads(_mmsb.inspect_checkpoint(os.fspath(path)))
    pages = []
    for p in doc["pages"]:
        shape = p.get("shape")
        pages.append(
            PageInfo(
                id=p["id"],
                len=p["len"],
                epoch=p["epoch"],
                crc32c=p["crc32c"],
                offset=p["offset"],
                name=p.get("name"),
                dtype=p.get("dtype"),
                shape=tuple(shape) if shape is not None else None,
            )
        )
    return Checkpoint(
        path=doc["path"],
        version=doc["version"],
        state_hash=doc["state_hash"],
        page_count=doc["page_count"],
        data_bytes=doc["data_bytes"],
        metadata=dict(doc["metadata"]),
        pages=pages,
    )


def verify(paths: Union[PathLike, Sequence[PathLike]], rederive: bool = False) -> dict:
    """Runs every check of ``mmsb verify`` on checkpoints and log segments or directories and
    returns its report (the ``--json`` document): ``report["ok"]`` is False when a problem was
    found, and ``report["problems"]`` lists each. Raises ``mmsb.Error`` only when the request
    cannot be run (a missing file, say)."""
    return json.loads(_mmsb.verify(_paths(paths), rederive))


def _load_pages(path, logs, to_seq, pages):
    """The replayed pages, as ``(id, name, dtype, shape, bytearray)``."""
    selection = None if pages is None else [str(p) for p in _paths(pages)]
    _report, loaded = _mmsb.load_cpu(os.fspath(path), _paths(logs), to_seq, selection)
    return loaded


def _tensor_key(page_id, name):
    if name is None:
        raise Error(f"page {page_id} has no name, so it cannot be a named tensor (pages=... selects others)")
    return name
