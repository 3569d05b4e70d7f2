"""Read-only access to payload bytes by offset: the evidence file, memory-mapped.

The packet index stores where each payload sits in the evidence file; this
class reads those bytes back. The file is mapped read-only (the OS pages it in
and out, so memory does not grow with the file). Payloads that are not
contiguous in the file (IP datagrams rebuilt from fragments) are kept in a
small side store and addressed past the end of the file, so every payload has
one integer offset. A session that spans rotated capture files reads from
several files: the extra files are addressed one after the other past the
first (:meth:`Evidence.base`).
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
from pathlib import Path

import numpy as np

__all__ = ["Evidence"]


class Evidence:
    """Bytes of one evidence file (plus rebuilt datagrams, plus other files) by offset.

    Args:
        path: the evidence file; opened read-only.
        extra: further files of the same stream, addressed after the first.
    """

    def __init__(self, path: str | Path, extra: tuple[str | Path, ...] = ()):
        self.path = Path(path)
        self._maps: list[tuple[int, int, mmap.mmap | None, object]] = []
        base = 0
        for p in (self.path, *map(Path, extra)):
            fh = p.open("rb")
            size = p.stat().st_size
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            self._maps.append((base, size, mm, fh))
            base += size
        self.size = self._maps[0][1]
        self._fd = self._maps[0][3].fileno()  # type: ignore[attr-defined]
        self._mm = self._maps[0][2]
        self.array = np.frombuffer(self._mm, np.uint8) if self._mm is not None else np.zeros(0, np.uint8)
        self.view: memoryview | None = memoryview(self._mm) if self._mm is not None else None
        self._bases = [m[0] for m in self._maps]
        self._side: list[bytes] = []
        self._side_start: list[int] = []
        self._side_end = self._files_end = base

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the OS page cache).

        Pages touched through the mapping count in the process's resident size;
        reading a capture front to back would otherwise make it look like the
        whole file is held in memory. A later read just maps the page again.
        """
        for _b, _s, mm, _fh in self._maps:
            if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)

    def base(self, i: int) -> int:
        """Offset at which file ``i`` (0: the main file) starts."""
        return self._maps[i][0]

    def close(self) -> None:
        """Unmap and close the files."""
        self.array = np.zeros(0, np.uint8)
        if self.view is not None:
            with contextlib.suppress(BufferError):  # a slice still in use: the GC releases it later
                self.view.release()
            self.view = None
        for _b, _s, mm, fh in self._maps:
            if mm is not None:
                with contextlib.suppress(BufferError):  # a caller still holds a view; the GC unmaps it later
                    mm.close()
            fh.close()  # type: ignore[attr-defined]
        self._maps = []
        self._mm = None

    def __enter__(self) -> Evidence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, data: bytes) -> int:
        """Keep bytes that are not contiguous in the file; returns their virtual offset."""
        off = self._side_end
        self._side.append(bytes(data))
        self._side_start.append(off)
        self._side_end += len(data)
        return off

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (file or side store); short at the end."""
        if length <= 0 or offset < 0:
            return b""
        # pread, not the mapping: bytes read this way do not stay in the resident set
        if offset < self.size:
            return os.pread(self._fd, min(length, self.size - offset), offset)
        if offset < self._files_end:
            k = bisect.bisect_right(self._bases, offset) - 1
            b, size, _mm, fh = self._maps[k]
            if offset >= b + size:
                return b""
            return os.pread(fh.fileno(), min(length, b + size - offset), offset - b)  # type: ignore[attr-defined]
        i = bisect.bisect_right(self._side_start, offset) - 1
        if i < 0:
            return b""
        rel = offset - self._side_start[i]
        return self._side[i][rel : rel + length]

    def gather(self, offsets: np.ndarray, lengths: np.ndarray) -> bytes:
        """Concatenation of the byte ranges ``(offsets[i], lengths[i])``."""
        if offsets.size == 0:
            return b""
        read = self.read
        return b"".join([read(o, n) for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)])
