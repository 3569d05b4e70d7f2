"""Windows XML event log files (``.evtx``) into ``events`` and ``logons``.

Parsing is done by the ``evtx`` package (Python bindings of the Rust ``evtx``
crate, the reference parser of the EVTX test corpus): it is maintained, runs
its chunks on several threads, and on damaged files (bad chunk magic, missing
CRC, VSS leftovers) yields every record it can recover and an error for each
one it cannot. python-evtx, the pure-Python alternative, is roughly two orders
of magnitude slower (see ``tests/bench/bench_logs.py``) and stops or silently
loses records on some damaged chunks.

Each error the parser reports becomes one warning row, located by record or
chunk number when the message names one. Lineage: ``record_id`` is the
EventRecordID and ``record_offset`` the byte offset of the record header,
found by walking chunk and record headers beside the parser (EVTX layout per
libevtx's "Windows XML Event Log format" §2-§4: 4096-byte file header, 64 KiB
chunks with a 512-byte header, records starting with ``2a 2a 00 00``).
"""

from __future__ import annotations

import io
import json
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from forensics.errors import SourceError
from forensics.sources import register
from forensics.sources._logio import Batches, iso_us, to_int
from forensics.sources._winevents import WinEvent, flatten_evtx_json, to_rows

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
RECORD_MAGIC = b"\x2a\x2a\x00\x00"
FILE_HEADER = 4096
CHUNK_SIZE = 65536
_WHERE = re.compile(r"(record|chunk) number (\d+)")


class _RecordOffsets:
    """Record headers by EventRecordID over a sliding window of chunks; an audit of the parser.

    The parser yields records in file order, so only a few chunks are held at a
    time and memory does not grow with the file. A record header found here that
    the parser neither returned nor reported as an error was lost silently: it
    is counted when its chunk leaves the window (:attr:`lost`). Record headers
    past the point where a chunk's walk breaks (slack space, damaged records)
    are counted as :attr:`carved`.
    """

    def __init__(self, path: Path, window: int = 8):
        self.fh = path.open("rb")
        self.size = path.stat().st_size
        self.next_chunk = 0
        self.max_window = window
        self.window: deque[tuple[int, dict[int, int]]] = deque()
        self.position = 0
        self.lost: list[tuple[int, int]] = []  # (chunk offset, records)
        self.carved = 0
        self.skip_audit: set[int] = set()
        self.partial: tuple[int, int] | None = None  # (offset, records cut) of a short last chunk

    def close(self) -> None:
        self.fh.close()

    def _load(self) -> bool:
        off = FILE_HEADER + self.next_chunk * CHUNK_SIZE
        if off >= self.size:
            return False
        self.fh.seek(off)
        buf = self.fh.read(CHUNK_SIZE)
        self.next_chunk += 1
        self.position = off + len(buf)
        ids: dict[int, int] = {}
        if buf[:8] == CHUNK_MAGIC:
            pos, cut = 512, 0
            while pos + 24 <= len(buf) and buf[pos:pos + 4] == RECORD_MAGIC:
                size = int.from_bytes(buf[pos + 4:pos + 8], "little")
                if size < 24 or pos + size > len(buf):
                    cut = int(size >= 24)
                    break
                ids.setdefault(int.from_bytes(buf[pos + 8:pos + 16], "little"), off + pos)
                pos += size
            if len(buf) < CHUNK_SIZE:
                self.partial = (off, cut)
            self.carved += _carve(buf, pos)
        self.window.append((off, ids))
        while len(self.window) > self.max_window:
            self._audit(*self.window.popleft())
        return True

    def _audit(self, off: int, ids: dict[int, int]) -> None:
        chunk = (off - FILE_HEADER) // CHUNK_SIZE
        if ids and chunk not in self.skip_audit:
            self.lost.append((off, len(ids)))

    def lookup(self, record_id: int | None) -> int | None:
        """The offset of the next unclaimed record with this id (claiming it), or None."""
        if record_id is None:
            return None
        ahead = 0
        while ahead < 4:  # look ahead a few chunks that hold records (empty ones are free)
            for _off, ids in self.window:
                found = ids.pop(record_id, None)
                if found is not None:
                    return found
            if not self._load():
                return None
            ahead += bool(self.window[-1][1])
        return None

    def finish(self) -> dict[int, int]:
        """Walk the chunks not looked at yet and audit every chunk still held.

        Returns:
            The unclaimed records (id -> offset) of a cut-short last chunk, which
            the caller recovers instead of counting them lost.
        """
        self.max_window = 1 << 30
        while self._load():
            pass
        partial: dict[int, int] = {}
        while self.window:
            off, ids = self.window.popleft()
            if self.partial is not None and off == self.partial[0]:
                partial = ids
            else:
                self._audit(off, ids)
        return partial


def _carve(buf: bytes, start: int) -> int:
    """Record headers (magic, plausible size, size copy at the end) from ``start`` on."""
    found = 0
    i = buf.find(RECORD_MAGIC, start + 1)
    while i != -1 and i + 8 <= len(buf):
        size = int.from_bytes(buf[i + 4:i + 8], "little")
        if size >= 28 and i + size <= len(buf) and \
                int.from_bytes(buf[i + size - 4:i + size], "little") == size:
            found += 1
        i = buf.find(RECORD_MAGIC, i + 1)
    return found


def _where(message: str) -> tuple[int | None, str]:
    m = _WHERE.search(message)
    if not m:
        return None, "record"
    n = int(m.group(2))
    if m.group(1) == "chunk":
        return FILE_HEADER + n * CHUNK_SIZE, "byte"
    return n, "record"


@register
class EvtxSource:
    """Windows ``.evtx`` event logs (needs the ``evtx`` package: ``breachbook[logs]``)."""

    name: ClassVar[str] = "evtx"

    def sniff(self, head: bytes) -> bool:
        r"""True for the EVTX file header signature ``ElfFile\0``."""
        return head[:8] == MAGIC

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield ``events`` and ``logons`` batches; each unreadable record is a warning.

        Raises:
            SourceError: the ``evtx`` package is not installed.
        """
        try:
            from evtx import PyEvtxParser
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise SourceError("reading EVTX needs the evtx package: pip install 'breachbook[logs]'",
                              str(path)) from exc
        try:
            parser = PyEvtxParser(str(path))
        except (RuntimeError, OSError) as exc:
            ctx.warn(0, "evtx_header", f"EVTX file header unreadable: {exc}")
            return
        offsets = _RecordOffsets(path)
        out = Batches(ctx)
        records = parser.records_json()
        try:
            while True:
                try:
                    rec = next(records)
                except StopIteration:
                    break
                except RuntimeError as exc:
                    where, unit = _where(str(exc))
                    ctx.warn(where, "evtx_record", str(exc), unit=unit)
                    if unit == "record":
                        offsets.lookup(where)  # reported: not lost silently
                    elif where is not None:
                        offsets.skip_audit.add((where - FILE_HEADER) // CHUNK_SIZE)
                    continue
                if not isinstance(rec, dict):
                    continue
                rid = to_int(rec.get("event_record_id"))
                self._record(rec, rid, offsets.lookup(rid), out, ctx)
                out.progress = offsets.position
                yield from out.ready()
            partial_ids = offsets.finish()
            if offsets.partial is not None:
                self._recover(path, offsets.partial, partial_ids, out, ctx)
        finally:
            offsets.close()
        for off, n in offsets.lost:
            ctx.warn(off, "evtx_record_lost", f"{n} record(s) of the chunk at byte {off} were neither "
                     "returned nor reported by the parser", count=n)
        if offsets.carved:
            ctx.warn(None, "evtx_carved_headers", f"{offsets.carved} further record header(s) in chunk "
                     "slack or after damaged records were not loaded", severity="info",
                     count=offsets.carved)
        yield from out.flush()

    def _recover(self, path: Path, partial: tuple[int, int], ids: dict[int, int], out: Batches,
                 ctx: IngestContext) -> None:
        """Load the complete records of a cut-short last chunk (the parser skips such chunks).

        The chunk is zero-padded to its full size behind the file header and parsed
        on its own; only records whose headers the walk found complete are kept.
        """
        from evtx import PyEvtxParser

        off, cut = partial
        recovered = 0
        if ids:
            with path.open("rb") as fh:
                head = fh.read(FILE_HEADER)
                fh.seek(off)
                chunk = fh.read(CHUNK_SIZE)
            padded = head + chunk + b"\0" * (CHUNK_SIZE - len(chunk))
            records = PyEvtxParser(io.BytesIO(padded)).records_json()
            while True:
                try:
                    rec = next(records)
                except StopIteration:
                    break
                except RuntimeError:
                    continue
                if not isinstance(rec, dict):
                    continue
                rid = to_int(rec.get("event_record_id"))
                if rid in ids:
                    self._record(rec, rid, ids.pop(rid), out, ctx)
                    recovered += 1
        size = path.stat().st_size - off
        ctx.warn(off, "evtx_truncated_chunk", f"the last chunk (byte {off}) is cut short at {size} of "
                 f"{CHUNK_SIZE} bytes: {recovered} complete record(s) recovered, {cut} cut record(s) "
                 f"and {len(ids)} unreadable one(s) lost", count=max(cut + len(ids), 1))

    @staticmethod
    def _record(rec: dict[str, Any], rid: int | None, offset: int | None, out: Batches,
                ctx: IngestContext) -> None:
        raw = rec.get("data") or "{}"
        try:
            ev = flatten_evtx_json(json.loads(raw))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # Tier 3: keep the record with what the record header tells.
            ctx.warn(offset if offset is not None else rid, "evtx_schema",
                     f"record {rid}: unexpected structure ({exc!r}); kept with NULL fields",
                     unit="byte" if offset is not None else "record")
            ev = WinEvent(ts=None, computer=None, channel=None, provider=None, event_id=None)
        if ev.record_id is None:
            ev.record_id = rid
        if ev.ts is None:
            ev.ts = iso_us(rec.get("timestamp"))
        event, logon = to_rows(ev)
        lineage = {"record_offset": offset, "source": "evtx"}
        event.update(lineage, raw=raw)
        out.add("events", event)
        if logon is not None:
            logon.update(lineage)
            out.add("logons", logon)
