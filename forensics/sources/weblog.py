r"""Web server logs: Apache/Nginx access (common, combined), IIS W3C extended, error logs.

Access-log lines go to the ``http`` table with ``source = 'weblog'``, not to
``events``: a line *is* one HTTP request/response, and DESIGN §3 puts one
concept in one table whoever produced it, so a web server's view of a request
sits beside Zeek's and Suricata's view of the same request (same columns:
``orig_h``, ``method``, ``uri``, ``status_code``, ``user_agent``...) and the
two can be joined or compared directly. Error-log lines are not transactions;
they go to ``events`` with ``type = 'http_error'``.

Formats:

* NCSA common / combined (Apache ``LogFormat "%h %l %u %t \"%r\" %>s %b
  \"%{Referer}i\" \"%{User-agent}i\""``, Nginx's default ``combined``), with
  an optional ``vhost:port`` prefix (``vhost_combined``); fields after the user
  agent are ignored. Times carry their zone.
* IIS / W3C extended (``#Fields:`` directive, re-read whenever it repeats);
  W3C times are UTC. ``time-taken`` is milliseconds; ``sc-bytes``/``cs-bytes``
  count whole messages, headers included.
* Apache error log 2.2 (``[Sun Dec 04 04:47:44 2005] [error] msg``) and 2.4
  (``[... .123456 2019] [core:error] [pid 1:tid 2] [client ip:port] msg``), and
  Nginx error log (``2019/06/27 06:10:32 [error] 1#2: msg``). These times have
  no zone: the ``tz`` ingest option, else UTC (recorded once as ``weblog_timezone``).
  The message is everything after the level, as logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import pyarrow as pa

from forensics.sources import register
from forensics.sources._logio import (
    Batches,
    clean,
    dt_us,
    dumps,
    first_lines,
    is_compressed,
    iter_lines,
    open_members,
    option,
    peek,
    strip_mapped,
    to_int,
)
from forensics.sources.syslog import MONTHS

if TYPE_CHECKING:
    from forensics.ingest import IngestContext



def _q(name: str) -> str:
    return rf'"(?P<{name}>(?:[^"\\]|\\.)*)"'


_HEAD = (r"^(?:(?P<vhost>[^\s:]+):(?P<vport>\d+) )?(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) "
         r"\[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d(?:\.\d+)? [+-]\d{4})\] ")
_TAIL = rf"(?P<status>\d{{3}}|-) (?P<bytes>\d+|-)(?: {_q('referer')} {_q('agent')})?(?P<extra>.*)$"
ACCESS = re.compile(_HEAD + _q("request") + " " + _TAIL)
# Some servers (Tomcat) log the request line unescaped, quotes and all: a greedy retry.
ACCESS_LENIENT = re.compile(_HEAD + r'"(?P<request>.*)" ' + _TAIL)
APACHE_ERROR = re.compile(
    r"^\[(?:\w{3} )?(?P<mon>\w{3}) (?P<day>\d\d) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:\.(?P<frac>\d+))? "
    r"(?P<year>\d{4})\] \[(?:(?P<module>[\w-]+):)?(?P<level>\w+)\] (?P<msg>.*)$")
NGINX_ERROR = re.compile(
    r"^(?P<date>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>\w+)\] (?P<pid>\d+)#\d+: (?P<msg>.*)$")
PID = re.compile(r"\[pid (?P<pid>\d+)")
CLIENT = re.compile(r"\[client (?P<ip>[^\]\s]+?)(?::(?P<port>\d+))?\]|client: (?P<ip2>[^,\s]+)")
REQUEST = re.compile(r"^(?P<method>[A-Z][A-Z_-]{0,19}) (?P<uri>\S+)(?: HTTP/(?P<version>[\d.]+))?$")
W3C_SIGNS = (b"#Software: Microsoft Internet Information Services", b"#Version:", b"#Fields:")


def _access_ts(s: str) -> int | None:
    """``10/Oct/2000:13:55:36 -0700`` (Apache ``%t``) as microseconds UTC."""
    try:
        main, zone = s.split(" ")
        frac = ""
        if "." in main:
            main, frac = main.split(".")
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
        dt = datetime(int(main[7:11]), MONTHS[main[3:6]], int(main[0:2]), int(main[12:14]),
                      int(main[15:17]), int(main[18:20]), int(frac[:6].ljust(6, "0") or 0), tzinfo=tz)
    except (ValueError, KeyError, IndexError):
        return None
    return dt_us(dt)


def _unescape(v: str | None) -> str | None:
    if v is None or v == "-":
        return None
    return v.replace('\\"', '"').replace("\\\\", "\\")


def _access_row(m: re.Match[str]) -> dict[str, Any]:
    req = _unescape(m["request"]) or ""
    r = REQUEST.match(req)
    row = {
        "ts": _access_ts(m["time"]), "orig_h": strip_mapped(m["client"]),
        "username": clean(m["user"]), "status_code": to_int(clean(m["status"])),
        "response_body_len": to_int(clean(m["bytes"])), "referrer": _unescape(m["referer"]),
        "user_agent": _unescape(m["agent"]), "host": m["vhost"],
        "resp_p": to_int(m["vport"]),
    }
    if r:
        row.update(method=r["method"], uri=r["uri"], version=r["version"])
    else:
        row["uri"] = req or None  # not a request line (scanner junk): kept as logged
    return row


def _w3c_row(fields: list[str], values: list[str]) -> dict[str, Any]:
    v = {f: (None if x == "-" else x) for f, x in zip(fields, values, strict=True)}
    ts = None
    if v.get("date") and v.get("time"):
        try:
            ts = dt_us(datetime.fromisoformat(f"{v['date']}T{v['time']}").replace(tzinfo=UTC))
        except ValueError:
            ts = None
    stem, query = v.get("cs-uri-stem"), v.get("cs-uri-query")
    taken = to_int(v.get("time-taken"))
    ua = v.get("cs(User-Agent)")
    ver = v.get("cs-version")
    return {
        "ts": ts, "orig_h": strip_mapped(v.get("c-ip")), "orig_p": to_int(v.get("c-port")),
        "resp_h": strip_mapped(v.get("s-ip")), "resp_p": to_int(v.get("s-port")),
        "method": v.get("cs-method"), "uri": (stem or "") + (f"?{query}" if query else "") or None,
        "username": v.get("cs-username"), "user_agent": ua.replace("+", " ") if ua else None,
        "referrer": v.get("cs(Referer)"), "host": v.get("cs-host"),
        "status_code": to_int(v.get("sc-status")), "response_body_len": to_int(v.get("sc-bytes")),
        "request_body_len": to_int(v.get("cs-bytes")),
        "time_taken": taken / 1000 if taken is not None else None,
        "version": ver.removeprefix("HTTP/") if ver else None,
    }


class _ErrorClock:
    def __init__(self, ctx: IngestContext):
        tzname = option(ctx, "tz")
        self.tz: tzinfo = ZoneInfo(tzname) if isinstance(tzname, str) else (tzname or UTC)
        self.ctx = ctx
        self.noted = False

    def at(self, lineno: int, y: int, mo: int, d: int, h: int, mi: int, s: int,
           us: int = 0) -> int | None:
        if not self.noted:
            self.noted = True
            self.ctx.warn(lineno, "weblog_timezone", f"error-log times read in {self.tz}",
                          unit="line", severity="info")
        try:
            return dt_us(datetime(y, mo, d, h, mi, s, us, tzinfo=self.tz))
        except ValueError:
            self.ctx.warn(lineno, "bad_time", "impossible date", unit="line")
            return None


def _error_row(text: str, lineno: int, clock: _ErrorClock) -> dict[str, Any] | None:
    m = APACHE_ERROR.match(text)
    if m:
        ts = clock.at(lineno, int(m["year"]), MONTHS.get(m["mon"], 0), int(m["day"]), int(m["h"]),
                      int(m["m"]), int(m["s"]), int((m["frac"] or "0")[:6].ljust(6, "0")))
        msg, level, provider = m["msg"], m["level"], m["module"] or "apache"
        pid = PID.search(msg)
        pid_v = int(pid["pid"]) if pid else None
    else:
        m = NGINX_ERROR.match(text)
        if not m:
            return None
        d = m["date"]
        ts = clock.at(lineno, int(d[0:4]), int(d[5:7]), int(d[8:10]), int(d[11:13]),
                      int(d[14:16]), int(d[17:19]))
        msg, level, provider, pid_v = m["msg"], m["level"], "nginx", int(m["pid"])
    c = CLIENT.search(msg)
    return {
        "ts": ts, "severity": level, "provider": provider, "pid": pid_v, "message": msg,
        "type": "http_error", "src_ip": strip_mapped(c["ip"] or c["ip2"]) if c else None,
        "src_port": to_int(c["port"]) if c else None,
    }


@register
class WebLogSource:
    """Apache/Nginx access and error logs, IIS W3C extended logs (plain or gz)."""

    name: ClassVar[str] = "weblog"

    def sniff(self, head: bytes) -> bool:
        """True for an access-log, error-log or W3C first line."""
        lines = first_lines(peek(head), 3)
        if not lines:
            return False
        if lines[0].startswith(W3C_SIGNS):
            return any(ln.startswith(b"#Fields:") for ln in lines) or lines[0].startswith(W3C_SIGNS[0])
        text = lines[0].decode("utf-8", "replace")
        return bool(ACCESS.match(text) or APACHE_ERROR.match(text) or NGINX_ERROR.match(text))

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield ``http`` (access lines) and ``events`` (error lines) batches."""
        out = Batches(ctx)
        clock = _ErrorClock(ctx)
        plain = not is_compressed(path)
        for member, stream in open_members(path):
            fields: list[str] | None = None
            for lineno, offset, text in iter_lines(stream, ctx):
                lineage = {"source": "weblog", "line": lineno, "record_offset": offset,
                           "member": member}
                if text.startswith("#"):
                    if text.startswith("#Fields:"):
                        fields = text[8:].split()
                    continue
                if fields is not None:
                    values = text.split(" ")
                    if len(values) != len(fields):
                        ctx.warn(lineno, "bad_field_count", f"{len(values)} fields where #Fields "
                                 f"names {len(fields)}; line skipped", unit="line")
                        continue
                    row = _w3c_row(fields, values)
                    table = "http"
                elif (m := ACCESS.match(text) or ACCESS_LENIENT.match(text)) is not None:
                    row = _access_row(m)
                    table = "http"
                    if row["ts"] is None:
                        ctx.warn(lineno, "bad_time", f"unknown time {m['time']!r}", unit="line")
                elif (err := _error_row(text, lineno, clock)) is not None:
                    row = err | {"raw": dumps(text)}
                    table = "events"
                else:
                    ctx.warn(lineno, "unparsed_line", f"line at byte {offset} is in no known web "
                             "log format; skipped", unit="line")
                    continue
                row.update(lineage)
                out.add(table, row)
                if plain:
                    out.progress = offset
                yield from out.ready()
        yield from out.flush()
