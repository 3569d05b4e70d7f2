"""What a protocol parser sees: one session's bytes, and where its rows and warnings go.

A parser is a function ``parse(s: Session) -> None`` registered with a content
detector (:func:`forensics.protocols.register`). It reads the reassembled
directions through :class:`Reader` (windowed, gap-aware reads: a whole stream
is never copied into memory at once), emits rows with :meth:`Session.emit`
(connection columns, lineage and provenance are filled in) and reports bad
input with :meth:`Session.warn` (bounded per session, never raised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forensics.reassembly.stream import Direction, SessionData

__all__ = ["Emitter", "Reader", "Session"]

MAX_WARNINGS_PER_SESSION = 20


class Emitter:
    """Rows per table and warnings of one reconstruction run.

    Timestamp columns hold integer nanoseconds until :func:`forensics.apps.reconstruct`
    turns the rows into Arrow tables.
    """

    def __init__(self, evidence_id: str, path: str):
        self.evidence_id = evidence_id
        self.path = path
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.warnings: list[dict[str, Any]] = []
        self.linker: Any = None  # forensics.apps.Linker: cross-session lookups (FTP data channels)
        self._segments: dict[str, list[Any]] = {}  # rows that came before an Arrow table, and the tables
        self._key: Any = ()
        self._done: list[tuple[Any, dict[str, list[Any]], list[dict[str, Any]]]] = []

    def add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """Append a row (returned, so a parser can still fill it in)."""
        self.rows.setdefault(table, []).append(row)
        return row

    def add_table(self, table: str, tbl: Any) -> None:
        """Append rows already in Arrow form (from a bulk parser), after the rows so far."""
        seg = self._segments.setdefault(table, [])
        rows = self.rows.pop(table, None)
        if rows:
            seg.append(rows)
        seg.append(tbl)

    def segments(self) -> dict[str, list[Any]]:
        """Rows per table in the order they came: lists of row dicts and Arrow tables."""
        out = {t: list(seg) for t, seg in self._segments.items()}
        for t, rows in self.rows.items():
            if rows:
                out.setdefault(t, []).append(rows)
        return out

    def segment(self, key: Any) -> None:
        """File the rows and warnings from here on under ``key`` (see :meth:`done_segments`)."""
        self._flush()
        self._key = key

    def done_segments(self) -> list[tuple[Any, dict[str, list[Any]], list[dict[str, Any]]]]:
        """Every segment so far: (key, :meth:`segments`, warnings), in the order they were filed."""
        self._flush()
        out, self._done = self._done, []
        return out

    def _flush(self) -> None:
        tables = self.segments()
        if tables or self.warnings:
            self._done.append((self._key, tables, self.warnings))
        self.rows, self._segments, self.warnings = {}, {}, []

    def warn(self, offset: int | None, code: str, message: str, severity: str = "warning") -> None:
        """Record a warning row for ``ingest_warnings``."""
        self.warnings.append(
            {
                "evidence_id": self.evidence_id,
                "path": self.path,
                "offset": offset,
                "unit": "byte",
                "severity": severity,
                "code": code,
                "message": message,
                "count": 1,
            }
        )


@dataclass
class Session:
    """One session handed to protocol parsers.

    Attributes:
        sid: index of the session in the sessions table of the run.
        info: the session's connection fields (uid, orig_h, orig_p, resp_h, resp_p, proto, ts_ns).
        data: reassembled directions (TCP) or datagrams (UDP).
        out: where rows and warnings go.
        services: service names detected (Zeek's names: http, ssl, dns, ...).
        state: scratch space for parsers that hand over to another (STARTTLS).
    """

    sid: int
    info: dict[str, Any]
    data: SessionData
    out: Emitter
    services: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    _nwarn: int = 0

    @property
    def uid(self) -> str:
        """The session uid."""
        return str(self.info["uid"])

    @property
    def orig(self) -> Direction:
        """The originator's reassembled bytes."""
        return self.data.orig

    @property
    def resp(self) -> Direction:
        """The responder's reassembled bytes."""
        return self.data.resp

    def direction(self, is_orig: bool) -> Direction:
        """The originator's (True) or responder's (False) bytes."""
        return self.data.orig if is_orig else self.data.resp

    def emit(
        self,
        table: str,
        *,
        ts: int | None = None,
        frame: int | None = None,
        file_offset: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Emit a row with the connection columns, lineage and provenance filled in.

        Args:
            table: table name.
            ts: time of the row in ns (default: the session start).
            frame: frame that carried the row's first byte (``record_id``).
            file_offset: evidence offset of that byte (``record_offset``).
            **fields: the protocol's columns.
        """
        i = self.info
        row = {
            "ts": ts if ts is not None else i["ts_ns"],
            "uid": i["uid"],
            "orig_h": i["orig_h"],
            "orig_p": i["orig_p"],
            "resp_h": i["resp_h"],
            "resp_p": i["resp_p"],
            "source": "pcap",
            "evidence_id": self.out.evidence_id,
            "record_offset": file_offset,
            "record_id": frame,
        }
        row.update(fields)
        return self.out.add(table, row)

    def emit_at(self, table: str, is_orig: bool, offset: int, /, **fields: Any) -> dict[str, Any]:
        """Emit a row whose time and lineage are those of a stream byte."""
        d = self.direction(is_orig)
        i = d.locate(offset)  # what ts_at, frame_at and file_offset_at would each look up
        if i < 0:
            return self.emit(table, ts=None, frame=None, file_offset=None, **fields)
        return self.emit(
            table,
            ts=int(d.ts[i]),
            frame=int(d.frame[i]),
            file_offset=int(d.file_offset[i] + max(offset - int(d.start[i]), 0)),
            **fields,
        )

    def warn(
        self,
        code: str,
        message: str,
        *,
        is_orig: bool | None = None,
        offset: int | None = None,
        file_offset: int | None = None,
        severity: str = "warning",
    ) -> None:
        """Record bad input in this session (at most a few warnings per session).

        Args:
            code: short kind, e.g. ``http_bad_chunk``.
            message: what happened; the session uid is added.
            is_orig: direction the offset is in.
            offset: stream offset in that direction (mapped to an evidence offset).
            file_offset: evidence offset, when known directly.
            severity: ``info``, ``warning`` or ``error``.
        """
        self._nwarn += 1
        if self._nwarn > MAX_WARNINGS_PER_SESSION:
            return
        if file_offset is None and is_orig is not None and offset is not None:
            file_offset = self.direction(is_orig).file_offset_at(offset)
        where = (
            ""
            if offset is None or is_orig is None
            else (f" ({'orig' if is_orig else 'resp'} stream offset {offset})")
        )
        self.out.warn(file_offset, code, f"session {self.uid}{where}: {message}", severity)


class Reader:
    """Windowed reads of one reassembled direction, with stream offsets kept exact.

    Gaps read as zero bytes (so offsets never shift); :meth:`has_gap` tells a
    parser when a range it relies on was not captured.

    Args:
        d: the direction.
        window: bytes fetched from the evidence at a time.
    """

    def __init__(self, d: Direction, window: int = 1 << 16):
        self.d = d
        self.window = window
        self.end = int(d.end[-1]) if d.end.size else 0
        self._base = 0
        self._buf = b""

    def get(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``pos`` (fewer at the end of the captured stream)."""
        if pos >= self.end or n <= 0:
            return b""
        stop = min(pos + n, self.end)
        if not (self._base <= pos and stop <= self._base + len(self._buf)):
            size = max(stop - pos, self.window)
            self._base = pos
            self._buf = self.d.read(pos, min(pos + size, self.end), fill=b"\0")
        return self._buf[pos - self._base : stop - self._base]

    def find(self, needle: bytes, pos: int, limit: int) -> int:
        """Offset of ``needle`` in ``[pos, pos + limit)``, or -1."""
        data = self.get(pos, limit)
        i = data.find(needle)
        return pos + i if i >= 0 else -1

    def line(self, pos: int, limit: int = 8192) -> tuple[bytes, int] | None:
        """The line at ``pos`` without its end (CRLF or LF) and the offset after it."""
        data = self.get(pos, limit)
        i = data.find(b"\n")
        if i < 0:
            return None
        return data[:i].rstrip(b"\r"), pos + i + 1

    def next_captured(self, pos: int) -> int:
        """``pos`` when that byte was captured, else the first captured offset after it (or the end)."""
        i = self.d.locate(pos)
        return self.end if i < 0 else max(pos, int(self.d.start[i]))

    def has_gap(self, start: int, end: int) -> bool:
        """True when some byte of ``[start, end)`` was never captured."""
        g = self.d.gaps
        return bool(g.size and ((g[:, 0] < end) & (g[:, 1] > start)).any())

    def missing(self, start: int, end: int) -> int:
        """Bytes of ``[start, end)`` never captured (end may be past the captured stream)."""
        lost = 0
        for s, e in self.d.gaps.tolist():
            lost += max(0, min(e, end) - max(s, start))
        return lost + max(0, end - max(self.d.extent, self.end, start))
