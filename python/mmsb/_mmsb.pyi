"""The native module: thin calls into the mmsb library. Use the ``mmsb`` package's functions."""

from typing import Any, Dict, List, Optional, Tuple

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
def verify(paths_given: List[str], rederive: bool = False) -> str: ...
def load_cpu(
    checkpoint: str, logs: List[str], to_seq: Optional[int] = None, pages: Optional[List[str]] = None
) -> Tuple[str, List[Tuple[int, Optional[str], Optional[str], Optional[List[int]], bytearray]]]: ...
def save(
    path: str, tensors: List[Tuple[str, str, List[int], int, Any]], metadata: Optional[Dict[str, str]] = None
) -> str: ...
