"""syslog and auth.log files (RFC 3164, RFC 5424, rsyslog ISO) into ``events`` and ``logons``.

Three line layouts are read, each optionally behind a ``<PRI>``:

* RFC 3164 / BSD (``Dec 10 06:55:46 host sshd[24200]: msg``), as written by
  syslogd and rsyslog's traditional file format. The year is not in the line:
  it is the ``year`` ingest option when given; otherwise the file is pre-scanned
  for year wraps (a month going back by six or more, Dec -> Jan) and the last
  line is placed in the year of the file's modification time (the year before
  when its month lies after the mtime's). The choice is recorded in the case
  as an ``info`` row of ``ingest_warnings`` (code ``syslog_year``).
* RFC 5424 (``<34>1 2003-10-11T22:14:15.003Z host app procid msgid [sd] msg``,
  §6), structured data kept in ``raw``.
* rsyslog's high-precision file format (``2024-03-01T10:00:00.123+01:00 host
  tag: msg``).

Times without a zone (RFC 3164) are taken in the ``tz`` ingest option (an IANA
name), else in UTC, recorded once as ``syslog_timezone``. sshd accepted/failed
/invalid-user lines, sudo and su become ``logons`` rows as well as ``events``
(:mod:`forensics.sources._authlines`). A line in none of the layouts is kept
with a NULL time and reported (``unparsed_line``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import pyarrow as pa

from forensics.sources import register
from forensics.sources._authlines import auth_rows
from forensics.sources._logio import (
    Batches,
    dt_us,
    dumps,
    first_lines,
    is_compressed,
    iso_us,
    iter_lines,
    open_members,
    option,
    peek,
)

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MON = "|".join(MONTHS)
RFC3164 = re.compile(
    rf"^(?:<(?P<pri>\d{{1,3}})>)?(?P<mon>{_MON})\s+(?P<day>\d{{1,2}})\s+"
    r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:\.(?P<frac>\d{1,9}))?(?:\s+(?P<year>\d{4}))?"
    r"\s+(?P<rest>.*)$")
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<ver>\d{1,2})\s+(?P<ts>\S+)\s+(?P<host>\S+)\s+(?P<app>\S+)\s+"
    r"(?P<procid>\S+)\s+(?P<msgid>\S+)(?:\s+(?P<rest>.*))?$")
ISO_FILE = re.compile(
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))"
    r"\s+(?P<rest>.*)$")
TAG = re.compile(r"^(?P<app>[^\s\[\]:]{1,64})(?:\[(?P<pid>[^\]]{0,32})\])?:(?:\s|$)(?P<msg>.*)$")
_MONTH_HEAD = re.compile(rb"^(?:<\d{1,3}>)?(" + _MON.encode() + rb")\s")

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
              "authpriv", "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1",
              "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _host_tag(rest: str) -> tuple[str | None, str | None, str | None, str]:
    """(host, app, pid, message) from what follows the timestamp."""
    host, sep, after = rest.partition(" ")
    if TAG.match(rest) and (not sep or host.endswith(":") or "[" in host):
        host, after = "", rest  # no HOSTNAME field: the first token is the tag
    m = TAG.match(after)
    if m:
        return host or None, m["app"], m["pid"], m["msg"].rstrip()
    return host or None, None, None, after.rstrip()


def _structured(rest: str | None) -> str:
    """The MSG part of an RFC 5424 line after its STRUCTURED-DATA (§6.3)."""
    if not rest:
        return ""
    if rest.startswith("-"):
        return rest[2:]
    i, n, quoted = 0, len(rest), False
    while i < n:
        c = rest[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "]" and not quoted and (i + 1 >= n or rest[i + 1] != "["):
            return rest[i + 2:].removeprefix("\ufeff")
        i += 1
    return ""


def _scan_wraps(path: Path) -> tuple[int, int | None]:
    """(year wraps, month of the last dated line) over the whole file, reading line heads only."""
    wraps, last = 0, None
    for _member, stream in open_members(path):
        while raw := stream.readline(1 << 16):
            m = _MONTH_HEAD.match(raw[:12])
            if not m:
                continue
            mon = MONTHS[m.group(1).decode()]
            if last is not None and last - mon >= 6:
                wraps += 1
            last = mon
    return wraps, last


class _Years:
    """The year of each year-less line: a start year, bumped at every wrap."""

    def __init__(self, path: Path, ctx: IngestContext):
        year = option(ctx, "year")
        wraps, last = _scan_wraps(path)
        if year is not None:
            self.year = int(year)
            how = "given by the year option"
        else:
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            end = mtime.year - (1 if last is not None and last > mtime.month else 0)
            self.year = end - wraps
            how = (f"inferred: last line in {end} (file modified {mtime:%Y-%m-%d}), "
                   f"{wraps} year wrap(s) in the file")
        ctx.warn(0, "syslog_year", f"year-less timestamps start in {self.year} ({how})",
                 unit="line", severity="info")
        self.last: int | None = None

    def of(self, month: int) -> int:
        if self.last is not None and self.last - month >= 6:
            self.year += 1
        self.last = month
        return self.year


@register
class SyslogSource:
    """syslog / auth.log text files (RFC 3164, RFC 5424, rsyslog ISO), plain or gz."""

    name: ClassVar[str] = "syslog"

    def sniff(self, head: bytes) -> bool:
        """True when the first complete line is in one of the three syslog layouts."""
        lines = first_lines(peek(head), 1)
        if not lines:
            return False
        try:
            text = lines[0].decode("utf-8")
        except UnicodeDecodeError:
            return False
        m = RFC3164.match(text) or ISO_FILE.match(text)
        if m:
            _host, app, _pid, _msg = _host_tag(m["rest"])
            return app is not None
        return bool(RFC5424.match(text))

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield ``events`` (and ``logons`` for sshd/sudo/su) batches, line by line."""
        tzname = option(ctx, "tz")
        tz: tzinfo = ZoneInfo(tzname) if isinstance(tzname, str) else (tzname or UTC)
        years: _Years | None = None
        tz_noted = False
        plain = not is_compressed(path)
        out = Batches(ctx)
        for member, stream in open_members(path):
            for lineno, offset, text in iter_lines(stream, ctx):
                pri = host = app = pid = None
                ts: int | None = None
                m = RFC3164.match(text)
                if m:
                    if m["year"]:
                        year = int(m["year"])
                    else:
                        if years is None:
                            years = _Years(path, ctx)
                        year = years.of(MONTHS[m["mon"]])
                    if not tz_noted:
                        tz_noted = True
                        ctx.warn(lineno, "syslog_timezone", f"zone-less times read in {tz}",
                                 unit="line", severity="info")
                    try:
                        dt = datetime(year, MONTHS[m["mon"]], int(m["day"]), int(m["h"]),
                                      int(m["m"]), int(m["s"]),
                                      int((m["frac"] or "0")[:6].ljust(6, "0")), tzinfo=tz)
                        ts = dt_us(dt)
                    except ValueError:
                        ctx.warn(lineno, "bad_time", "impossible date (e.g. Feb 30)", unit="line")
                    pri = m["pri"]
                    host, app, pid, msg = _host_tag(m["rest"])
                elif (m := RFC5424.match(text)) is not None:
                    pri, host, app, pid = m["pri"], m["host"], m["app"], m["procid"]
                    host, app, pid = (None if v == "-" else v for v in (host, app, pid))
                    ts = iso_us(m["ts"], default_tz=tz) if m["ts"] != "-" else None
                    msg = _structured(m["rest"]).rstrip()
                elif (m := ISO_FILE.match(text)) is not None:
                    pri = m["pri"]
                    ts = iso_us(m["ts"])
                    host, app, pid, msg = _host_tag(m["rest"])
                else:
                    ctx.warn(lineno, "unparsed_line", f"line at byte {offset} is in no syslog "
                             "layout (unknown time format); kept with NULL time", unit="line")
                    msg = text
                event: dict[str, Any] = {
                    "ts": ts, "host": host, "provider": app, "pid": _pid(pid), "message": msg,
                    "raw": dumps(text), "source": "syslog", "line": lineno,
                    "record_offset": offset, "member": member,
                }
                if pri is not None and int(pri) < 192:
                    event["channel"] = FACILITIES[int(pri) >> 3]
                    event["severity"] = SEVERITIES[int(pri) & 7]
                logon = auth_rows(app, msg, event)
                out.add("events", event)
                if logon is not None:
                    out.add("logons", logon)
                if plain:
                    out.progress = offset
                yield from out.ready()
        yield from out.flush()


def _pid(v: str | None) -> int | None:
    return int(v) if v and v.isdigit() else None
