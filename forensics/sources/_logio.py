"""Shared plumbing of the log sources: streaming input, batching, times, hostile lines.

* :func:`open_members` opens a plain, ``.gz`` or ``.zip`` file and yields its
  (member, binary stream) pairs, so every line-oriented source reads
  compressed evidence directly; :func:`peek` does the same on the first bytes
  a sniffer sees.
* :func:`iter_lines` walks a stream line by line with bounded memory: a line
  longer than :data:`MAX_LINE` bytes is skipped (with a warning) without ever
  being held whole, and binary junk is reported rather than parsed.
* :class:`Batches` gathers row dicts per table and hands out Arrow tables of
  :data:`BATCH_ROWS` rows, which is what a source yields to the engine.
* Time helpers return microseconds since the epoch (UTC) or ``None``, never 0.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

BATCH_ROWS = 50_000
MAX_LINE = 1 << 20  # the limit: longer lines are junk, not records
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NULLS = frozenset({"", "-", "(empty)"})


# ---- input ------------------------------------------------------------------------------


def peek(head: bytes, limit: int = 4096) -> bytes:
    """The first decompressed bytes of a file whose first bytes are ``head``.

    Plain files are returned as they are; for gzip the stream is inflated, for
    a zip archive the first member (stored or deflated, per APPNOTE 4.3.7).
    Whatever cannot be inflated from ``head`` alone gives ``b""``.
    """
    try:
        if head.startswith(GZIP_MAGIC):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, limit)
        if head.startswith(ZIP_MAGIC) and len(head) >= 30:
            method = int.from_bytes(head[8:10], "little")
            name_len = int.from_bytes(head[26:28], "little")
            extra_len = int.from_bytes(head[28:30], "little")
            data = head[30 + name_len + extra_len:]
            if method == 0:
                return data[:limit]
            if method == 8:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, limit)
            return b""
    except zlib.error:
        return b""
    return head


def first_lines(head: bytes, n: int = 5) -> list[bytes]:
    """Up to ``n`` complete non-empty lines of ``head`` (the last, partial one dropped)."""
    if b"\n" in head:
        head = head[: head.rfind(b"\n")]
    lines = [ln.strip(b"\r") for ln in head.split(b"\n")]
    return [ln for ln in lines if ln.strip()][:n]


def open_members(path: Path) -> Iterator[tuple[str | None, IO[bytes]]]:
    """Yield ``(member name or None, binary stream)`` for a plain, gzip or zip file."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic.startswith(GZIP_MAGIC):
        with gzip.open(path, "rb") as gz:
            yield None, gz  # type: ignore[misc]
    elif magic == ZIP_MAGIC:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                with zf.open(info) as member:
                    yield info.filename, member
    else:
        with path.open("rb") as fh:
            yield None, fh


def is_compressed(path: Path) -> bool:
    """True for gzip and zip files (whose decompressed offsets exceed the file size)."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    return magic.startswith(GZIP_MAGIC) or magic == ZIP_MAGIC


_CTRL = bytes(b for b in range(32) if b not in (9,)) + b"\x7f"
_ESCAPES = {b: f"\\x{b:02x}" for b in _CTRL}


def _control_share(line: bytes) -> float:
    """Share of control bytes (NUL, C0 except TAB, DEL) in the line."""
    return (len(line) - len(line.translate(None, _CTRL))) / max(len(line), 1)


def _escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


def iter_lines(
    stream: IO[bytes], ctx: IngestContext, *, max_line: int = MAX_LINE,
) -> Iterator[tuple[int, int, str]]:
    r"""Yield ``(line number, byte offset, text)`` for each usable line of ``stream``.

    Memory stays bounded by ``max_line``: an over-long line is skipped in pieces
    and reported (``line_too_long``); a line more than 30% control bytes is
    junk, reported as ``binary_data`` and skipped; a line with a few control
    bytes (attack payloads in access logs) is kept with them escaped as
    ``\xNN`` (``control_bytes``); a line that is not UTF-8 is kept with the bad
    bytes escaped (``bad_encoding``). Empty lines are skipped silently. The
    trailing ``\r\n`` is removed.
    """
    offset = 0
    lineno = 0
    while True:
        raw = stream.readline(max_line + 1)
        if not raw:
            return
        lineno += 1
        start = offset
        offset += len(raw)
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1 << 16)
                offset += len(raw)
            ctx.warn(lineno, "line_too_long",
                     f"line of {offset - start} bytes at byte {start} is longer than {max_line}; "
                     "skipped", unit="line")
            continue
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        share = _control_share(raw)
        if share > 0.3:
            ctx.warn(lineno, "binary_data", f"binary data at byte {start} ({len(raw)} bytes); skipped",
                     unit="line")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "backslashreplace")
            ctx.warn(lineno, "bad_encoding", f"line at byte {start} is not UTF-8; invalid bytes "
                     "kept as \\xNN escapes", unit="line")
        if share:
            # Attack traffic (a TLS hello sent to an HTTP port) lands in logs as control bytes:
            # evidence, so the line is kept with the bytes escaped as Apache does (\xNN).
            text = _escape_controls(text)
            ctx.warn(lineno, "control_bytes", f"line at byte {start} holds control bytes; kept with "
                     "them escaped as \\xNN", unit="line")
        yield lineno, start, text


# ---- output -----------------------------------------------------------------------------


class Batches:
    """Row dicts per table, handed out as Arrow tables of ``size`` rows.

    Example::

        out = Batches(ctx)
        for ...:
            out.add("events", row)
            yield from out.ready()
        yield from out.flush()
    """

    def __init__(self, ctx: IngestContext | None = None, size: int = BATCH_ROWS):
        self.ctx = ctx
        self.size = size
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.counts: dict[str, int] = {}
        self.progress = 0

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row for ``table``.

        Raises:
            KeyError: the first row of a table names a column the table does not declare.
        """
        rows = self.rows.get(table)
        if rows is None:
            extra = set(row) - set(TABLES[table].names)
            if extra:
                raise KeyError(f"{table}: undeclared columns {sorted(extra)}")
            rows = self.rows[table] = []
        rows.append(row)

    def _table(self, name: str) -> pa.Table:
        rows = self.rows.pop(name)
        self.counts[name] = self.counts.get(name, 0) + len(rows)
        return pa.Table.from_pylist(rows, schema=TABLES[name].arrow_schema())

    def ready(self) -> Iterator[tuple[str, pa.Table]]:
        """Yield the tables that have reached the batch size."""
        for name in [n for n, r in self.rows.items() if len(r) >= self.size]:
            yield name, self._table(name)
            if self.ctx is not None and self.ctx.progress and self.progress:
                self.ctx.progress(self.progress)

    def flush(self) -> Iterator[tuple[str, pa.Table]]:
        """Yield everything still queued."""
        for name in list(self.rows):
            if self.rows[name]:
                yield name, self._table(name)
        if self.ctx is not None and self.ctx.progress and self.progress:
            self.ctx.progress(self.progress)


# ---- values -----------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """``None`` for the empty markers logs use (``""``, ``-``, ``(empty)``), else ``value``."""
    if isinstance(value, str):
        v = value.strip()
        return None if v in NULLS else v
    return value


def to_int(value: Any) -> int | None:
    """An integer from a decimal or ``0x`` hex value; ``None`` when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value else None
    v = str(value).strip()
    try:
        return int(v, 16) if v[:2].lower() == "0x" else int(v)
    except ValueError:
        return None


def to_bool(value: Any) -> bool | None:
    """A boolean from ``T``/``F``, ``true``/``false``, 1/0; ``None`` otherwise."""
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("t", "true", "1", "yes"):
        return True
    if v in ("f", "false", "0", "no"):
        return False
    return None


def strip_mapped(addr: Any) -> str | None:
    """An address without the IPv4-mapped prefix (``::ffff:1.2.3.4`` -> ``1.2.3.4``)."""
    a = clean(addr)
    if a is None:
        return None
    a = str(a)
    return a[7:] if a.lower().startswith("::ffff:") and "." in a else a


def dt_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_us(value: Any) -> int | None:
    """Microseconds from epoch seconds given as a number or decimal text (exact for text)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return round(value * 1_000_000) if value == value else None
    s = str(value).strip()
    whole, _, frac = s.partition(".")
    if not whole.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        return None
    us = int(whole) * 1_000_000
    return us + (int(frac[:6].ljust(6, "0")) if frac else 0) * (-1 if whole.startswith("-") else 1)


def iso_us(value: Any, default_tz: tzinfo | None = UTC) -> int | None:
    """Microseconds from an ISO 8601 time (``Z``, ``+0000``, 7-digit fractions accepted).

    A time without a zone is taken in ``default_tz``; with ``default_tz=None``
    such a time gives ``None``.
    """
    if value is None:
        return None
    s = str(value).strip()
    if not s or s[0] not in "0123456789":
        return None
    # Python reads at most 6 fraction digits: cut EVTX's 7 (100 ns ticks) down.
    dot = s.find(".", 10)
    if dot != -1:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        if end - dot > 7:
            s = s[: dot + 7] + s[end:]
    named_utc = s.endswith(" UTC")
    if named_utc:
        s = s[:-4]
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        if named_utc:
            dt = dt.replace(tzinfo=UTC)
        elif default_tz is None:
            return None
        else:
            dt = dt.replace(tzinfo=default_tz)
    return dt_us(dt)


def us_to_dt(us: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


def dumps(obj: Any) -> str:
    """Compact JSON text for the ``raw`` columns (non-JSON values as strings)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def option(ctx: IngestContext, name: str, default: Any = None) -> Any:
    """An ingest option for a source (``ctx.options[name]`` when the engine passes options)."""
    opts = getattr(ctx, "options", None) or {}
    return opts.get(name, default)
