"""Content-addressed blobs: bytes streamed to ``<store>/ab/cd/<sha256>``, hashed on the way.

The low half of :mod:`forensics.filestore`, and pure: no case, no database,
so the parse stage of ingest can write carved content while it runs. The
path is made of the SHA-256 the writer computed itself and nothing else; the
bytes are streamed (memory is one chunk plus an 8 KiB head) and capped.
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

from forensics._magic import HEAD_SIZE, FileType, sniff
from forensics.errors import CaseError

__all__ = ["DEFAULT_MAX_SIZE", "Blob", "BlobStore", "blob_path", "write_blob"]

DEFAULT_MAX_SIZE = 4 << 30  # bytes kept per file; more is cut and flagged ``truncated``
_HIST_BLOCK = 1 << 20


def blob_path(store_root: Path, sha256: str) -> Path:
    """Where content with this SHA-256 lives under a store root (``<root>/ab/cd/<sha256>``).

    Args:
        store_root: the store folder (``<case>/carved``).
        sha256: 64 hex digits.

    Raises:
        ValueError: ``sha256`` is not 64 hex digits (so it can never act as a path).
    """
    sha = sha256.lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return Path(store_root) / sha[:2] / sha[2:4] / sha


_Data = bytes | bytearray | memoryview | Iterable[bytes | memoryview]


def _chunks(data: _Data) -> Iterable[bytes | memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (memoryview(data),)
    return data


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
                    arr = np.frombuffer(view, dtype=np.uint8)
                    for i in range(0, len(arr), _HIST_BLOCK):  # cache-sized blocks: ~10x faster
                        counts += np.bincount(arr[i:i + _HIST_BLOCK], minlength=256)
                    if len(head) < HEAD_SIZE:
                        head += view[:HEAD_SIZE - len(head)]
                    fh.write(view)
                    size += len(view)
                if truncated:
                    break
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
        path: absolute path of the content (``<store_root>/ab/cd/<sha256>``).
        relpath: path relative to the case directory (``carved/ab/cd/<sha256>``).
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
        tmp = self.root / ".tmp"
        if tmp not in self._dirs:
            tmp.mkdir(parents=True, exist_ok=True)
            self._dirs.add(tmp)
        return tmp

    def _folder(self, folder: Path, tmp: Path) -> None:
        """Create a content folder (``ab/cd`` under the root), making sure it stays inside the store.

        The path is made of hex digits only; this guards against a store whose
        folders were replaced by symlinks: each level must be a real folder.
        """
        if folder in self._dirs:
            return
        if self._resolved is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._resolved = self.root.resolve()
        for level in (folder.parent, folder):
            if level in self._dirs:
                continue
            with contextlib.suppress(FileExistsError):
                level.mkdir()
            if not stat.S_ISDIR(level.lstat().st_mode):
                tmp.unlink()
                raise CaseError(f"the file store {self._resolved} has been tampered with: {level} is not "
                                "a folder of it")
            self._dirs.add(level)

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
            tmp.chmod(0o444)  # carved content is evidence: read-only, never executable
            tmp.replace(final)
            new = True
        return Blob(sha256=sha, md5=w["md5"], sha1=w["sha1"], size=size, path=final,
                    relpath=f"carved/{sha[:2]}/{sha[2:4]}/{sha}", truncated=w["truncated"],
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
