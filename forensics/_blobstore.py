"""Content-addressed blobs: bytes streamed to ``<store>/ab/<sha256>``, hashed on the way.

The low half of :mod:`forensics.filestore`, and pure: no case, no database,
so the parse stage of ingest can write carved content while it runs. The
path is made of the SHA-256 the writer computed itself and nothing else; the
bytes are streamed (memory is one chunk plus an 8 KiB head) and capped.

The store fans out over one level of 256 folders named by the first two hex
digits, as git's object store does: a million files make 4,000 entries a
folder, which the file system indexes, and a carver writing thousands of small
files does not pay a folder creation for nearly every one of them (stores made
before kept ``ab/cd/<sha256>``; their rows name their paths, which still resolve).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from forensics._magic import HEAD_SIZE, FileType, sniff
from forensics.errors import CaseError

__all__ = ["DEFAULT_MAX_SIZE", "Blob", "BlobStore", "blob_path", "write_blob"]

DEFAULT_MAX_SIZE = 4 << 30  # bytes kept per file; more is cut and flagged ``truncated``


def blob_path(store_root: Path, sha256: str) -> Path:
    """Where content with this SHA-256 lives under a store root (``<root>/ab/<sha256>``).

    Args:
        store_root: the store folder (``<case>/carved``).
        sha256: 64 hex digits.

    Raises:
        ValueError: ``sha256`` is not 64 hex digits (so it can never act as a path).
    """
    sha = sha256.lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return Path(store_root) / sha[:2] / sha


_Data = bytes | bytearray | memoryview | Iterable[bytes | memoryview]


def _chunks(data: _Data) -> Iterable[bytes | memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (memoryview(data),)
    return data


@njit(cache=True, nogil=True)
def _byte_counts(buf: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - compiled
    """Add each byte value's count in ``buf`` to ``counts``.

    Four tables, so that a run of one byte value does not wait on one counter.
    """
    c = np.zeros((4, 256), np.int64)
    n = buf.shape[0]
    i = 0
    while i + 4 <= n:
        c[0, buf[i]] += 1
        c[1, buf[i + 1]] += 1
        c[2, buf[i + 2]] += 1
        c[3, buf[i + 3]] += 1
        i += 4
    while i < n:
        c[0, buf[i]] += 1
        i += 1
    for j in range(256):
        counts[j] += c[0, j] + c[1, j] + c[2, j] + c[3, j]


def _write_content(tmpdir: Path, data: Any, max_size: int) -> dict[str, Any]:
    """Stream ``data`` into a temporary file in ``tmpdir``, hashing as it goes."""
    fd, tmp_name = tempfile.mkstemp(dir=tmpdir, prefix="part-")
    hashes = [hashlib.sha256(), hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)]
    counts = np.zeros(256, dtype=np.int64)
    head = bytearray()
    size = 0
    truncated = False
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in _chunks(data):
                view = memoryview(chunk).cast("B")
                if size + len(view) > max_size:
                    view = view[:max_size - size]
                    truncated = True
                if len(view):
                    for h in hashes:
                        h.update(view)
                    _byte_counts(np.frombuffer(view, dtype=np.uint8), counts)
                    if len(head) < HEAD_SIZE:
                        head += view[:HEAD_SIZE - len(head)]
                    fh.write(view)
                    size += len(view)
                if truncated:
                    break
            os.fchmod(fh.fileno(), 0o444)  # carved content is evidence: read-only, never executable
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp_name).unlink()
        raise
    entropy = 0.0
    if size:
        p = counts[counts > 0] / size
        entropy = float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no negative zero
    return {"tmp": Path(tmp_name), "sha256": hashes[0].hexdigest(), "md5": hashes[1].hexdigest(),
            "sha1": hashes[2].hexdigest(), "size": size, "truncated": truncated,
            "entropy": round(entropy, 6) if math.isfinite(entropy) else None, "head": bytes(head)}


@dataclass(frozen=True)
class Blob:
    """Content written to a store by :func:`write_blob` (no database involved).

    Attributes:
        sha256: SHA-256 of the stored bytes; also the store key.
        md5: MD5 of the stored bytes.
        sha1: SHA-1 of the stored bytes.
        size: bytes stored.
        path: absolute path of the content (``<store_root>/ab/<sha256>``).
        relpath: path relative to the case directory (``carved/ab/<sha256>``).
        truncated: the ``max_size`` cap cut the content.
        entropy: Shannon entropy, bits per byte.
        filetype: what the magic number says.
        new_content: the bytes were not in the store before.
    """

    sha256: str
    md5: str
    sha1: str
    size: int
    path: Path
    relpath: str
    truncated: bool
    entropy: float | None
    filetype: FileType
    new_content: bool


class BlobStore:
    """A store folder that many blobs are written to in a row.

    The folder checks (no symlink leads out of the store) are made once per
    folder for the life of the object, not once per blob: a carver writing
    thousands of small files would otherwise spend its time resolving paths.

    Args:
        store_root: the store folder (``<case>/carved``); created when missing.
    """

    def __init__(self, store_root: str | Path):
        self.root = Path(store_root)
        self._resolved: Path | None = None
        self._dirs: set[Path] = set()

    def _tmpdir(self) -> Path:
        # One folder per process: processes creating files side by side in one folder
        # queue on its lock (measured: 2-7x slower for two carving processes).
        tmp = self.root / ".tmp" / str(os.getpid())
        if tmp not in self._dirs:
            tmp.mkdir(parents=True, exist_ok=True)
            self._dirs.add(tmp)
        return tmp

    def _folder(self, folder: Path, tmp: Path) -> None:
        """Create a content folder (``ab`` under the root), making sure it stays inside the store.

        The path is made of hex digits only; this guards against a store whose
        folders were replaced by symlinks: the folder must be a real one.
        """
        if folder in self._dirs:
            return
        if self._resolved is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._resolved = self.root.resolve()
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        if not stat.S_ISDIR(folder.lstat().st_mode):
            tmp.unlink()
            raise CaseError(f"the file store {self._resolved} has been tampered with: {folder} is not "
                            "a folder of it")
        self._dirs.add(folder)

    def write(self, data: _Data, *, max_size: int = DEFAULT_MAX_SIZE) -> Blob:
        """Write content under its SHA-256 (see :func:`write_blob`)."""
        w = _write_content(self._tmpdir(), data, max(0, int(max_size)))
        tmp, sha, size = w["tmp"], w["sha256"], w["size"]
        final = blob_path(self.root, sha)
        self._folder(final.parent, tmp)
        try:
            st = final.lstat()
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size:
            tmp.unlink()
            new = False
        else:
            tmp.replace(final)
            new = True
        return Blob(sha256=sha, md5=w["md5"], sha1=w["sha1"], size=size, path=final,
                    relpath=f"carved/{sha[:2]}/{sha}", truncated=w["truncated"],
                    entropy=w["entropy"], filetype=sniff(w["head"]), new_content=new)


def write_blob(store_root: str | Path, data: _Data, *, max_size: int = DEFAULT_MAX_SIZE) -> Blob:
    """Write content to a store folder under its SHA-256, streamed and capped (pure: no case).

    The parse stage of ingest writes carved content this way while no database
    is open; the same bytes always land on the same path, so writing them twice
    (two workers, a re-run) is harmless. Many blobs in a row: use a
    :class:`BlobStore`.

    Args:
        store_root: the store folder (``<case>/carved``); created when missing.
        data: the bytes, or an iterable of chunks (streamed, never joined).
        max_size: bytes kept at most; the rest is dropped and ``truncated`` set.

    Returns:
        The :class:`Blob`.

    Raises:
        CaseError: the store's folders lead outside it (tampered with).
    """
    return BlobStore(store_root).write(data, max_size=max_size)
