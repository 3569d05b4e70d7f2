"""What the protocol carvers share: the limits, the sink that stores files, and stream reads.

A carver (HTTP, SMB, SMTP, FTP) works on one reassembled session at a time
and hands each file to :class:`Sink.store` as an iterable of chunks; the sink
writes the bytes to the content-addressed store (:func:`forensics.filestore.write_blob`,
no database) and keeps the ``files``/``carved_files`` rows. Bytes are read
from the evidence a window at a time (:func:`read_ranges`), never a whole
stream at once; bytes nobody captured are written as zeros and reported as
missing ranges of the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forensics import filestore

if TYPE_CHECKING:
    from forensics.ingest import IngestContext
    from forensics.reassembly.stream import Direction

__all__ = ["WINDOW", "Limits", "Missing", "Sink", "dt", "read_ranges"]

WINDOW = 1 << 20  # evidence bytes read at a time
_MAX_WARN_PER_SESSION = 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what one capture can make the carver do.

    Attributes:
        max_file: bytes stored per file (more is cut and flagged ``truncated``).
        max_decoded: bytes one compressed HTTP body may decode to.
        max_ratio: decoded bytes per compressed byte allowed past the first MiB
            (more is a decompression bomb: decoding stops and the file is flagged).
        mime_depth: nested multipart levels followed.
        mime_parts: MIME parts carved per message or body.
        max_message: bytes of one SMTP message kept.
        max_fill: zero bytes written for the holes of one file (never-seen
            ranges between pieces); a file needing more is cut where the budget ends.
        smb_versions: versions kept of one SMB file rewritten while open.
        max_pieces: reads/writes (or range pieces) assembled into one file.
        files_per_session: files carved from one session.
    """

    max_file: int = filestore.DEFAULT_MAX_SIZE
    max_decoded: int = 512 << 20
    max_ratio: int = 1000
    mime_depth: int = 8
    mime_parts: int = 1000
    max_message: int = 256 << 20
    max_fill: int = 256 << 20
    smb_versions: int = 16
    max_pieces: int = 1 << 20
    files_per_session: int = 10_000


def dt(ns: int | None) -> datetime | None:
    """Nanoseconds since the epoch as an aware UTC datetime (microseconds), None for unknown."""
    if ns is None or ns == np.iinfo(np.int64).min:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


class Missing:
    """Collects never-captured ranges, in file offsets, while a file's chunks are produced."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.cut_at: int | None = None  # the output stopped here: too many bytes never captured

    def add(self, start: int, end: int) -> None:
        """A missing ``[start, end)`` (merged with the previous one when they touch; sorted later)."""
        if end <= start:
            return
        if self.ranges and self.ranges[-1][0] <= start <= self.ranges[-1][1]:
            self.ranges[-1] = (self.ranges[-1][0], max(end, self.ranges[-1][1]))
        else:
            self.ranges.append((start, end))

    @property
    def total(self) -> int:
        """Bytes missing."""
        return sum(b - a for a, b in self.ranges)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        k = min(n, WINDOW)
        yield bytes(k)
        n -= k


def read_ranges(d: Direction, ranges: Iterable[tuple[int, int]], missing: Missing | None = None,
                base: int = 0, max_fill: int = Limits.max_fill) -> Iterator[bytes]:
    """Bytes of stream ranges ``(start, length)`` in order, gaps as zeros, a window at a time.

    Never-captured bytes (stream gaps, and anything past the captured end) are
    written as zeros, at most ``max_fill`` of them: a sequence-number jump of
    gigabytes must not become gigabytes of zeros. Past that budget the output
    stops; the rest is noted as missing and ``missing.cut_at`` says where.

    Args:
        d: the direction.
        ranges: ``(stream offset, length)`` pieces, concatenated in the output.
        missing: where to note never-captured bytes, in output offsets (plus ``base``).
        base: output offset of the first byte.
        max_fill: zero bytes written at most.
    """
    out = base
    gaps = d.gaps.tolist() if d.gaps.size else []
    cap_end = int(d.end[-1]) if d.end.size else 0
    fill = 0
    todo = [(int(a), int(n)) for a, n in ranges]
    for i, (start, n) in enumerate(todo):
        pos, stop = start, start + n
        holes: list[tuple[int, int]] = []
        for hs, he in sorted([(max(gs, pos), min(ge, stop)) for gs, ge in gaps if gs < stop and ge > pos]
                             + ([(max(cap_end, pos), stop)] if stop > cap_end else [])):
            if holes and hs <= holes[-1][1]:
                holes[-1] = (holes[-1][0], max(he, holes[-1][1]))
            else:
                holes.append((hs, he))
        for hs, he in [*holes, (stop, stop)]:
            while pos < hs:  # captured bytes up to the hole
                k = min(WINDOW, hs - pos)
                yield d.read(pos, pos + k, fill=b"\0")
                pos += k
                out += k
            if he <= hs:
                continue
            if fill + (he - hs) > max_fill:
                if missing is not None:
                    missing.add(out, out + stop - pos + sum(m for _a, m in todo[i + 1:]))
                    missing.cut_at = out
                return
            fill += he - hs
            if missing is not None:
                missing.add(out, out + he - hs)
            yield from _zeros(he - hs)
            out += he - hs
            pos = he


@dataclass
class _SessionNotes:
    warned: int = 0
    files: int = 0


@dataclass
class Sink:
    """Stores carved files of one evidence file and keeps their rows (no database).

    Args:
        store_root: the case's store folder (``<case>/carved``).
        evidence_id: the evidence the bytes come from.
        ctx: the ingest context (warnings).
        conn: per session uid, its ``orig_h``, ``orig_p``, ``resp_h``, ``resp_p``.
        limits: the bounds.
    """

    store_root: Path
    evidence_id: str
    ctx: IngestContext
    conn: Mapping[str, Mapping[str, Any]]
    limits: Limits = field(default_factory=Limits)
    rows: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    notes: dict[str, _SessionNotes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blobs = filestore.BlobStore(self.store_root)

    def _note(self, uid: str | None) -> _SessionNotes:
        return self.notes.setdefault(uid or "", _SessionNotes())

    def warn(self, uid: str | None, code: str, message: str, *, d: Direction | None = None,
             offset: int | None = None, severity: str = "warning") -> None:
        """A bounded warning naming the session and the stream offset (evidence offset as the row's)."""
        note = self._note(uid)
        note.warned += 1
        if note.warned > _MAX_WARN_PER_SESSION:
            return
        where = ""
        foff = None
        if d is not None and offset is not None:
            where = f" ({'orig' if d.is_orig else 'resp'} stream offset {offset})"
            foff = d.file_offset_at(offset)
        self.ctx.warn(foff, code, f"session {uid}{where}: {message}", severity=severity)

    def full(self, uid: str | None) -> bool:
        """True once a session has given as many files as it may (warned once)."""
        note = self._note(uid)
        if note.files < self.limits.files_per_session:
            return False
        if note.files == self.limits.files_per_session:
            note.files += 1
            self.warn(uid, "carve_file_cap", f"more than {self.limits.files_per_session} files in one "
                      "session; the rest are not carved")
        return True

    def store(self, chunks: Iterable[bytes | memoryview], *, uid: str | None, protocol: str,
              key: tuple = (), fuid: str | None = None, ts_ns: int | None = None,
              end_ns: int | None = None, missing: Missing | None = None, placed: bool = True,
              **meta: Any) -> filestore.FileRecord:
        """Write one file and keep its rows.

        Args:
            chunks: the file's bytes in order.
            uid: session uid.
            protocol: what it came over.
            key: what places the transfer in its session (deterministic file id when
                ``fuid`` is None: protocol, evidence, uid and this key).
            fuid: file id to use (a protocol table's, so rows join); made unique if taken.
            ts_ns: time of the first byte (ns).
            end_ns: time of the last byte (ns), for the duration.
            missing: never-seen ranges noted while ``chunks`` ran (read after writing).
            placed: the ``missing`` ranges are file offsets; False when they are not
                (a compressed body: only their byte count is known).
            **meta: further :func:`forensics.filestore.file_rows` arguments.
        """
        self._note(uid).files += 1
        blob = self.blobs.write(chunks, max_size=self.limits.max_file)
        if fuid is None or fuid in self.rows:
            ident = repr((protocol, self.evidence_id, uid, key, fuid)).encode()
            fuid = "F" + hashlib.sha256(ident).hexdigest()[:17]
            n = 1
            while fuid in self.rows:  # the same key twice (should not happen): still unique, still stable
                n += 1
                fuid = "F" + hashlib.sha256(ident + b"#%d" % n).hexdigest()[:17]
        if missing is not None:
            if missing.cut_at is not None:
                self.warn(uid, "carve_fill_cap", f"{protocol} file cut at byte {missing.cut_at}: more than "
                          f"{self.limits.max_fill} bytes of it were never captured")
            if placed:
                meta["missing_ranges"] = [*meta.get("missing_ranges", ()), *missing.ranges]
            else:
                meta["unplaced_missing"] = missing.total
        duration = None
        if ts_ns is not None and end_ns is not None and end_ns >= ts_ns:
            duration = round((end_ns - ts_ns) / 1e9, 6)
        rec, frow, crow = filestore.file_rows(
            blob, protocol=protocol, uid=uid, conn=self.conn.get(uid or ""), fuid=fuid, ts=dt(ts_ns),
            duration=duration, evidence_id=self.evidence_id, **meta)
        self.rows[rec.fuid] = (frow, crow)
        if rec.truncated:
            self.warn(uid, "carve_size_cap", f"{protocol} file {rec.fuid} cut at {rec.size} bytes "
                      "(the store's size cap)")
        return rec
