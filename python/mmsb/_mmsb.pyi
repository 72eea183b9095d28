"""The native module: thin calls into the mmsb library. Use the ``mmsb`` package's functions."""

from typing import Any, Dict, List, Optional, Tuple, Union

__version__: str

class Error(Exception):
    """An mmsb call failed."""

    kind: str
    """What failed: ``io``, ``corrupt``, ``delta_rejected``, ``wrong_base``, ``locked``,
    ``output_refused`` or ``invalid``."""
    path: Optional[str]
    """The file, where one is named."""
    offset: Optional[int]
    """The byte offset in that file, where known."""
    seq: Optional[int]
    """The log record's sequence number, for a record that does not apply."""
    exit_code: int
    """The command line's exit code for the same failure: 1 the data is bad, 2 the request is."""

class CorruptionError(Error):
    """The data is bad (``kind`` is ``corrupt``, ``delta_rejected`` or ``wrong_base``)."""

def inspect_checkpoint(path: str) -> str: ...
def diff(
    a: str,
    b: str,
    a_logs: List[str] = ...,
    b_logs: List[str] = ...,
    a_to_seq: Optional[int] = None,
    b_to_seq: Optional[int] = None,
    ranges: int = 10,
) -> str: ...
def verify(paths_given: List[str], rederive: bool = False) -> str: ...
class MappedBytes:
    """A page's bytes in a private, copy-on-write mapping of the checkpoint (numpy's array
    interface; writable, and a write never reaches the file)."""

    @property
    def __array_interface__(self) -> Dict[str, Any]: ...
    def __len__(self) -> int: ...

def load_cpu(
    checkpoint: str,
    logs: List[str],
    to_seq: Optional[int] = None,
    pages: Optional[List[str]] = None,
    alias: bool = False,
) -> Tuple[str, List[Tuple[int, Optional[str], Optional[str], Optional[List[int]], Union[bytearray, MappedBytes]]]]: ...
def save(
    path: str, tensors: List[Tuple[str, str, List[int], int, Any]], metadata: Optional[Dict[str, str]] = None
) -> str: ...
def crc32c_host(buffer: Tuple[int, int]) -> int: ...
def crc32c_cuda(buffers: List[Tuple[int, int]], ordinal: int) -> List[int]: ...
def sync_create(log: str, tensors: List[Tuple[str, Optional[str], List[int], int, int]]) -> str: ...
def sync_delta(
    log: str,
    tensors: List[Tuple[str, List[int], List[int], Tuple[int, int], Tuple[int, int]]],
    compress: bool = False,
    durable: bool = True,
) -> str: ...
def sync_delta_cuda(
    log: str,
    pairs: List[Tuple[str, Tuple[int, int], Tuple[int, int]]],
    ordinal: int,
    compress: bool = False,
    durable: bool = True,
) -> str: ...
def sync_apply_host(
    log: List[str],
    tensors: List[Tuple[str, Optional[str], List[int], Tuple[int, int]]],
    from_seq: Optional[int] = None,
    to_seq: Optional[int] = None,
) -> str: ...
def sync_apply_cuda(
    log: List[str],
    tensors: List[Tuple[str, Optional[str], List[int], Tuple[int, int]]],
    ordinal: int,
    from_seq: Optional[int] = None,
    to_seq: Optional[int] = None,
) -> str: ...
def load_cuda(
    checkpoint: str,
    logs: List[str],
    ordinal: int,
    to_seq: Optional[int] = None,
    pages: Optional[List[str]] = None,
    verify: bool = False,
) -> Tuple[str, List[Tuple[int, Optional[str], Optional[str], List[int], int, Any]]]: ...
def last_metrics() -> Optional[str]: ...
def metrics_text(json: str) -> str: ...
def write_metrics(path: str, json: str) -> None: ...
