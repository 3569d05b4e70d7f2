"""Windows events as JSON lines: NXLog, Winlogbeat/ECS and ``evtx_dump`` shapes.

Plain, ``.gz`` and ``.zip`` files are read directly (every member of a zip, in
archive order), one JSON object per line, into ``events`` and ``logons`` through
the same mapping as EVTX (:mod:`forensics.sources._winevents`).

Times:

* Winlogbeat ``@timestamp`` and evtx_dump ``SystemTime`` are UTC.
* Azure Log Analytics exports (``TimeGenerated``, ``EventData`` as a JSON
  string) are read like NXLog records; ``TimeGenerated`` is UTC.
* NXLog's ``EventTime`` is the collector's *local* time without a zone (its
  default format). When the record also has NXLog's ``EventReceivedTime``
  (same local clock) and Logstash's ``@timestamp`` (UTC) of the same moment,
  the zone offset is their difference rounded to 15 minutes, and that is
  applied (the Security-Datasets/Mordor collections are EDT, UTC-4). A ``tz``
  ingest option overrides the inference; failing both the time is taken as
  UTC and an ``assumed_utc`` info row says so once per file.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import pyarrow as pa

from forensics.sources import register
from forensics.sources._logio import (
    Batches,
    clean,
    first_lines,
    is_compressed,
    iso_us,
    iter_lines,
    open_members,
    option,
    peek,
    to_int,
)
from forensics.sources._winevents import WinEvent, flatten_evtx_json, to_rows

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

_NXLOG = re.compile(rb'"EventID"\s*:')
_NXLOG_SYS = re.compile(rb'"(SourceName|Channel|EventTime|Hostname|Computer)"\s*:')
_WINLOG = re.compile(rb'"winlog"\s*:\s*\{')
_EVTX_DUMP = re.compile(rb'^\s*\{\s*"Event"\s*:\s*\{')
_TRANSPORT = frozenset({
    "@timestamp", "@version", "host", "port", "tags", "SourceModuleName", "SourceModuleType",
    "EventReceivedTime", "EventTime", "Hostname", "EventID", "Channel", "SourceName",
    "RecordNumber", "Message", "Keywords", "Severity", "SeverityValue", "ProviderGuid",
    "Version", "Task", "OpcodeValue", "Opcode", "ThreadID", "ExecutionProcessID", "Category",
    "TenantId", "SourceSystem", "TimeGenerated", "Computer", "Provider", "MG", "ManagementGroupName",
    "_ResourceId", "Type",
})
_QUARTER_HOUR_US = 900_000_000
_MAX_OFFSET_US = 14 * 3600 * 1_000_000


def _looks_like(line: bytes) -> bool:
    if _WINLOG.search(line) or _EVTX_DUMP.search(line):
        return True
    return bool(_NXLOG.search(line) and _NXLOG_SYS.search(line))


class _Clock:
    """NXLog time handling for one file (see the module docstring)."""

    def __init__(self, ctx: IngestContext):
        self.ctx = ctx
        tz = option(ctx, "tz")
        self.tz: tzinfo | None = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.warned = False

    def nxlog(self, d: dict[str, Any], lineno: int) -> int | None:
        et = d.get("EventTime")
        us = iso_us(et, default_tz=None)
        if us is not None or et is None:
            return us
        if self.tz is not None:
            return iso_us(et, default_tz=self.tz)
        naive = iso_us(et, default_tz=UTC)
        if naive is None:
            self.ctx.warn(lineno, "bad_time", f"EventTime {str(et)[:40]!r} is not a time", unit="line")
            return None
        recv = iso_us(d.get("EventReceivedTime"), default_tz=UTC)
        stamp = iso_us(d.get("@timestamp"), default_tz=None)
        if recv is not None and stamp is not None:
            off = round((stamp - recv) / _QUARTER_HOUR_US) * _QUARTER_HOUR_US
            if abs(off) <= _MAX_OFFSET_US:
                return naive + off
        if not self.warned:
            self.warned = True
            self.ctx.warn(lineno, "assumed_utc", "NXLog EventTime has no zone and none could be "
                          "inferred; times taken as UTC (pass the tz option to correct)",
                          unit="line", severity="info")
        return naive


def _nxlog(d: dict[str, Any], clock: _Clock, lineno: int) -> WinEvent:
    """NXLog ``im_msvistalog`` records; Azure Log Analytics exports share the shape."""
    data = {k: v for k, v in d.items() if k not in _TRANSPORT}
    inner = d.get("EventData")
    if isinstance(inner, str) and inner.startswith("{"):
        # Log Analytics (Sentinel) keeps the event data as a JSON string.
        data.pop("EventData")
        with contextlib.suppress(ValueError):
            data.update(json.loads(inner))
    ts = clock.nxlog(d, lineno) if "EventTime" in d else iso_us(d.get("TimeGenerated"))
    return WinEvent(
        ts=ts, computer=clean(d.get("Hostname") or d.get("Computer")),
        channel=clean(d.get("Channel")),
        provider=clean(d.get("SourceName") or d.get("Provider")), event_id=to_int(d.get("EventID")),
        record_id=to_int(d.get("RecordNumber")), user_sid=clean(d.get("UserID")),
        level=clean(d.get("Severity")),
        keywords=None if d.get("Keywords") is None else str(d.get("Keywords")),
        message=clean(d.get("Message")), data=data,
    )


def _winlogbeat(d: dict[str, Any]) -> WinEvent:
    w = d.get("winlog") or {}
    data: dict[str, Any] = {}
    for part in ("event_data", "user_data"):
        if isinstance(w.get(part), dict):
            data.update(w[part])
    kw = [str(k).lower() for k in (w.get("keywords") or [])]
    outcome = ((d.get("event") or {}).get("outcome") or "").lower()
    if "audit success" in kw or outcome == "success":
        data.setdefault("EventType", "AUDIT_SUCCESS")
    elif "audit failure" in kw or outcome == "failure":
        data.setdefault("EventType", "AUDIT_FAILURE")
    eid = w.get("event_id", (d.get("event") or {}).get("code"))
    return WinEvent(
        ts=iso_us(d.get("@timestamp")),
        computer=clean(w.get("computer_name") or (d.get("host") or {}).get("name")),
        channel=clean(w.get("channel")), provider=clean(w.get("provider_name")),
        event_id=to_int(eid), record_id=to_int(w.get("record_id")),
        user_sid=clean((w.get("user") or {}).get("identifier")),
        level=clean((d.get("log") or {}).get("level")), message=clean(d.get("message")), data=data,
    )


@register
class WinEventJsonSource:
    """Windows events as JSON lines (NXLog, Winlogbeat/ECS, evtx_dump), plain, gz or zip."""

    name: ClassVar[str] = "winevent_json"

    def sniff(self, head: bytes) -> bool:
        """True when the first line (inflated for gz/zip) is a Windows event JSON object."""
        lines = first_lines(peek(head), 1) or [peek(head)]
        return bool(lines) and lines[0].lstrip().startswith(b"{") and _looks_like(lines[0])

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield ``events`` and ``logons`` batches; a line that is not an event is a warning."""
        out = Batches(ctx)
        clock = _Clock(ctx)
        plain = not is_compressed(path)
        for member, stream in open_members(path):
            for lineno, offset, text in iter_lines(stream, ctx):
                try:
                    d = json.loads(text)
                except ValueError as exc:
                    ctx.warn(lineno, "not_json", f"line at byte {offset} is not JSON: {exc}",
                             unit="line")
                    continue
                if not isinstance(d, dict):
                    ctx.warn(lineno, "not_event", "JSON value is not an object", unit="line")
                    continue
                try:
                    if "winlog" in d:
                        ev = _winlogbeat(d)
                    elif "Event" in d:
                        ev = flatten_evtx_json(d)
                    elif "EventID" in d:
                        ev = _nxlog(d, clock, lineno)
                    else:
                        ctx.warn(lineno, "not_event", "JSON object is not a Windows event",
                                 unit="line")
                        continue
                except (KeyError, TypeError, AttributeError) as exc:
                    ctx.warn(lineno, "bad_event", f"unexpected event structure: {exc!r}", unit="line")
                    continue
                event, logon = to_rows(ev)
                lineage = {"record_offset": offset, "line": lineno, "member": member,
                           "source": "winevent_json"}
                event.update(lineage, raw=text)
                out.add("events", event)
                if logon is not None:
                    logon.update(lineage)
                    out.add("logons", logon)
                if plain:
                    out.progress = offset
                yield from out.ready()
        yield from out.flush()
