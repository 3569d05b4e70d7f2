"""Evidence hashing, and hashing started before the engine is loaded (no engine imports).

``breachbook ingest`` knows its evidence files as soon as its arguments are
parsed, a third of a second before the engine's modules (DuckDB, Arrow, numba)
are imported and the case is opened. :func:`start` begins the SHA-256 of those
files on a background thread right then (hashlib releases the GIL, so it runs
on another core beside the imports); :func:`take` hands the ingest the hash
already under way for a file, or None when there is none, or it has not begun
(it is then withdrawn and the caller hashes the file itself: never twice).

:func:`hash_file` is the one file hasher of the engine (also
``forensics.case.hash_file``); it lives here so that this module stays light.

A file is matched by device, inode, size and modification time, so a file
changed or replaced between the two calls is not taken. Only for ingests
that parse in this process: a worker process hashes its own files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from forensics.sources import iter_files

__all__ = ["hash_file", "start", "take"]

_lock = threading.Lock()
_pending: dict[tuple[int, int, int, int], Future[tuple[str, int]]] = {}
_pool: ThreadPoolExecutor | None = None


def _key(path: str | os.PathLike[str]) -> tuple[int, int, int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> tuple[str, int]:
    """Hex digest and size of a file, read in 8 MiB blocks (hashlib releases the GIL)."""
    h = hashlib.new(algorithm)
    size = 0
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with Path(path).open("rb") as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def start(paths: Iterable[str | Path]) -> int:
    """Begin hashing these files (folders: the files in them) one after another, in the background.

    Args:
        paths: evidence files or folders, as given to the ingest.

    Returns:
        How many files were queued.
    """
    global _pool
    n = 0
    with _lock:
        for f in iter_files(list(paths)):  # the files the ingest will read, in its order
            key = _key(f)
            if key is None or key in _pending:
                continue
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prehash")
            _pending[key] = _pool.submit(hash_file, f)
            n += 1
    return n


def take(path: str | os.PathLike[str]) -> Future[tuple[str, int]] | None:
    """The SHA-256 (hex digest, size) under way for ``path``, or None.

    None when the file was not queued, was changed since, or its hashing had
    not begun (it is withdrawn, so the caller's own hashing is the only one).
    """
    key = _key(path)
    with _lock:
        fut = _pending.pop(key, None) if key is not None else None
    if fut is None or fut.cancel():
        return None
    return fut
