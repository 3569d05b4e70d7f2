"""Zeek logs, TSV and JSON, into the tables pcap-derived data uses (``source = 'zeek'``).

* ``conn`` -> ``sessions``; ``dns`` -> ``dns``; ``http`` -> ``http``;
  ``ssl`` -> ``tls``; ``files`` -> ``files``. Column names are Zeek's without
  ``id.``; Zeek columns a table does not declare (``local_orig``, ...) are
  listed once per file in an ``info`` row (``zeek_columns_not_stored``).
  ``sessions.ts_end`` is ``ts + duration``. Zeek's ``uid`` is kept, so the
  rows join each other as in Zeek.
* A log with a protocol table of the same name (``smb_files``, ``ntlm``,
  ``kerberos``, ``ssh``, ``rdp``, ``ftp``, ``smtp``, ``dce_rpc``, ... declared
  in :mod:`forensics.tables.protocols` for our pcap parsers) fills that table,
  a dot in a field name becoming an underscore.
* ``ntlm``, ``kerberos``, ``ssh`` and ``rdp`` also give ``logons`` rows (the
  network's view of authentication, beside the hosts' own logs).
* Every other log (``weird``, ``notice``, ``x509``, ...) goes to ``events``
  with ``channel``/``type`` = the log path and the row as JSON in ``raw``.

TSV logs are typed from their own ``#types`` header by the vectorised reader in
:mod:`forensics.sources._zeektsv`; JSON logs (``LogAscii::use_json``) from the
JSON values, with ``ts`` as epoch seconds or ISO 8601. The log path comes from
``#path`` or ``_path``, else the file name (``conn.log``,
``conn.00:00:00-01:00:00.log.gz``), else the fields present. ``-`` and
``(empty)`` are NULL. Lineage: ``line`` and ``record_offset`` on every table
(``sessions`` keeps Zeek's ``uid``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensics.sources import register
from forensics.sources._logio import (
    BATCH_ROWS,
    Batches,
    dumps,
    epoch_us,
    first_lines,
    is_compressed,
    iso_us,
    iter_lines,
    open_members,
    peek,
    strip_mapped,
    to_bool,
    us_to_dt,
)
from forensics.sources._winevents import split_account
from forensics.sources._zeektsv import read_blocks
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

CONCEPT = {"conn": "sessions", "dns": "dns", "http": "http", "ssl": "tls", "files": "files"}
LOGON_LOGS = frozenset({"ntlm", "kerberos", "ssh", "rdp"})
RENAME = {"AA": "aa", "TC": "tc", "RD": "rd", "RA": "ra", "Z": "z", "TTLs": "ttls"}
_INFER = (
    ("conn", ("conn_state",)), ("conn", ("orig_ip_bytes",)), ("dns", ("qtype_name",)),
    ("dns", ("query", "trans_id")), ("http", ("method", "uri")), ("http", ("status_code", "host")),
    ("ssl", ("cipher", "established")), ("ssl", ("server_name", "version")),
    ("files", ("fuid", "seen_bytes")), ("ntlm", ("server_nb_computer_name",)),
    ("kerberos", ("request_type", "client")), ("weird", ("name", "notice", "peer")),
)
_USER_KEYS = ("username", "user", "client", "cookie", "mailfrom")
_OBJECT_KEYS = ("name", "path", "service", "filename", "note", "query", "host", "server_name",
                "certificate.subject")
_MESSAGE_KEYS = ("msg", "addl", "sub", "status_msg")


def guess_path(name: str, keys: set[str] | None = None) -> str | None:
    """The Zeek log path from a file name, else from the field names."""
    base = name.lower().removesuffix(".gz")
    if base.endswith((".log", ".json")):
        stem = base.split(".", 1)[0]
        if stem and stem.replace("_", "").isalnum():
            return stem
    for path, need in _INFER:
        if keys is not None and all(k in keys for k in need):
            return path
    return None


def target_table(path: str) -> str | None:
    """The table a Zeek log fills: a concept table, else a protocol table named like the log."""
    if path in CONCEPT:
        return CONCEPT[path]
    spec = TABLES.get(path)
    if spec is not None and {"source", "uid", "line"} <= set(spec.names):
        return path
    return None


def _concept(path: str, name: str, tbl: pa.Table, lines: np.ndarray | None,
             offsets: np.ndarray | None, member: str | None, noted: set[str],
             ctx: IngestContext) -> tuple[str, pa.Table]:
    spec = TABLES[name]
    cols: dict[str, Any] = {}
    dropped = []
    for col_name in tbl.column_names:
        col = tbl.column(col_name)
        target = col_name.removeprefix("id.")
        target = RENAME.get(target, target).replace(".", "_")
        if path == "files" and target == "source":
            target = "file_source"
        if path == "files" and target == "conn_uids" and "uid" not in tbl.column_names:
            cols["uid"] = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(col), 0), col,
                                                     pa.scalar(None, col.type)), 0)
            continue
        if target in spec.names and target not in ("source", "evidence_id"):
            cols[target] = col
        else:
            dropped.append(col_name)
    if dropped and path not in noted:
        noted.add(path)
        ctx.warn(None, "zeek_columns_not_stored", f"{path} log columns with no place in "
                 f"{name}: {', '.join(dropped)}", severity="info")
    n = tbl.num_rows
    if name == "sessions" and "ts" in cols and "duration" in cols:
        dur = pc.round(pc.multiply(cols["duration"].cast(pa.float64()), 1_000_000.0))
        cols["ts_end"] = pc.add(cols["ts"].cast(pa.int64()), dur.cast(pa.int64()))
    if lines is not None:
        cols["line"] = pa.array(lines, pa.int64())
        cols["record_offset"] = pa.array(offsets, pa.int64())
    if member is not None:
        cols["member"] = pa.array([member] * n, pa.string())
    cols["source"] = pa.array(["zeek"] * n, pa.string())
    out = pa.table({k: v if not isinstance(v, pa.ChunkedArray) else v.combine_chunks()
                    for k, v in cols.items()})
    return name, spec.conform(out)


def _first(r: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = r.get(k)
        if v not in (None, "", []):
            return ",".join(map(str, v)) if isinstance(v, list) else v
    return None


def _logon(path: str, r: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    row = dict(base, src_ip=strip_mapped(r.get("id.orig_h")), src_port=r.get("id.orig_p"),
               dst_ip=strip_mapped(r.get("id.resp_h")))
    if path == "ntlm":
        ok = to_bool(r.get("success"))
        row.update(action="ntlm", user=r.get("username"), domain=r.get("domainname"),
                   src_host=r.get("hostname"), auth_package="NTLM", success=ok,
                   dst_host=r.get("server_nb_computer_name") or r.get("server_dns_computer_name"),
                   status=r.get("status"))
    elif path == "kerberos":
        user, realm = split_account(str(r["client"]).replace("/", "@", 1)
                                    if r.get("client") else None)
        kind = (r.get("request_type") or "").upper()
        row.update(action="kerberos_tgt" if kind == "AS" else "kerberos_service_ticket",
                   user=user, domain=realm, service=r.get("service"), auth_package="Kerberos",
                   success=to_bool(r.get("success")), status=r.get("error_msg"))
    elif path == "ssh":
        row.update(action="ssh", success=to_bool(r.get("auth_success")), service="ssh",
                   status=f"{r['auth_attempts']} attempts" if r.get("auth_attempts") else None)
    elif path == "rdp":
        row.update(action="rdp_connect", user=r.get("cookie"), src_host=r.get("client_name"),
                   auth_package="RDP", success=True if r.get("result") == "Success" else None,
                   status=r.get("result"))
    else:
        return None
    return row


def _events(path: str, tbl: pa.Table, lines: np.ndarray | None, offsets: np.ndarray | None,
            member: str | None, raws: list[str] | None, times: set[str], out: Batches,
            *, events: bool = True) -> None:
    """``events`` rows (when ``events``) and ``logons`` rows of a Zeek log, row by row."""
    for i, r in enumerate(tbl.to_pylist()):
        ts = r.get("ts")
        lineage = {"source": "zeek", "line": int(lines[i]) if lines is not None else None,
                   "record_offset": int(offsets[i]) if offsets is not None else None,
                   "member": member, "ts": ts}
        if raws is not None:
            raw = raws[i]
        else:
            raw = dumps({k: (us_to_dt(v).isoformat() if k in times and isinstance(v, int) else v)
                         for k, v in r.items() if v is not None})
        logon = _logon(path, r, lineage)
        if logon is not None:
            out.add("logons", logon)
        if not events:
            continue
        msg = _first(r, _MESSAGE_KEYS)
        out.add("events", dict(
            lineage, channel=path, provider="zeek", type=path, src_ip=strip_mapped(r.get("id.orig_h")),
            src_port=r.get("id.orig_p"), dst=strip_mapped(r.get("id.resp_h")),
            dst_port=r.get("id.resp_p"), user=_first(r, _USER_KEYS),
            object=_first(r, _OBJECT_KEYS), message=str(msg) if msg is not None else None, raw=raw))


def _json_table(rows: list[dict[str, Any]]) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed value types across rows: keep every scalar as text.
        return pa.Table.from_pylist([
            {k: v if v is None or isinstance(v, list | dict) or k == "ts" else str(v)
             for k, v in r.items()} for r in rows])


@register
class ZeekLogSource:
    """Zeek logs: TSV with ``#fields``/``#types`` headers, or JSON lines (plain or gz)."""

    name: ClassVar[str] = "zeek"

    def sniff(self, head: bytes) -> bool:
        """True for a ``#separator`` TSV header or a Zeek JSON first line."""
        text = peek(head)
        if text.startswith(b"#separator "):
            return True
        lines = first_lines(text, 1) or [text]
        line = lines[0].lstrip()
        return (line.startswith(b"{") and b'"ts":' in line and b'"event_type":' not in line
                and any(k in line for k in (b'"uid":', b'"id.orig_h":', b'"fuid":', b'"_path":')))

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield batches for sessions/dns/http/tls/files, logons and events."""
        out = Batches(ctx)
        noted: set[str] = set()
        plain = not is_compressed(path)
        for member, stream in open_members(path):
            head = stream.read(16)
            rewound: Any = _Rewound(head, stream)
            if head.startswith(b"#"):
                for block in read_blocks(rewound, ctx):
                    log = block.header.path or guess_path(member or path.name,
                                                          set(block.header.fields)) or "unknown"
                    times = {f for f, t in zip(block.header.fields, block.header.types,
                                               strict=False) if t == "time"}
                    yield from self._emit(log, block.table, block.lines, block.offsets, member,
                                          None, noted, out, ctx, times)
                    if plain and len(block.offsets):
                        out.progress = int(block.offsets[-1])
            else:
                yield from self._json(path, member, rewound, noted, out, ctx)
        yield from out.flush()

    def _emit(self, log: str, tbl: pa.Table, lines: np.ndarray | None, offsets: np.ndarray | None,
              member: str | None, raws: list[str] | None, noted: set[str], out: Batches,
              ctx: IngestContext, times: frozenset[str] | set[str] = frozenset({"ts"}),
              ) -> Iterator[tuple[str, pa.Table]]:
        table = target_table(log)
        if table is not None:
            try:
                yield _concept(log, table, tbl, lines, offsets, member, noted, ctx)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                ctx.warn(int(lines[0]) if lines is not None and len(lines) else None, "zeek_types",
                         f"{log} rows do not fit the {table} table ({exc}); stored in events",
                         unit="line")
                table = None
        if table is None or log in LOGON_LOGS:
            _events(log, tbl, lines, offsets, member, raws, set(times), out,
                    events=table is None)
            yield from out.ready()

    def _json(self, path: Path, member: str | None, stream: Any, noted: set[str], out: Batches,
              ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        pending: dict[str, tuple[list[dict[str, Any]], list[int], list[int], list[str]]] = {}
        file_log: str | None = None
        for lineno, offset, text in iter_lines(stream, ctx):
            try:
                r = json.loads(text)
            except ValueError as exc:
                ctx.warn(lineno, "not_json", f"line at byte {offset} is not JSON: {exc}", unit="line")
                continue
            if not isinstance(r, dict):
                ctx.warn(lineno, "not_json", "JSON value is not an object", unit="line")
                continue
            log = r.pop("_path", None)
            if log is None:
                if file_log is None:
                    file_log = guess_path(member or path.name, set(r)) or "unknown"
                log = file_log
            ts = r.get("ts")
            r["ts"] = epoch_us(ts) if isinstance(ts, int | float) else iso_us(ts)
            if ts is not None and r["ts"] is None:
                ctx.warn(lineno, "bad_time", f"ts {str(ts)[:40]!r} is not a time", unit="line")
            rows, lines, offs, raws = pending.setdefault(log, ([], [], [], []))
            rows.append(r)
            lines.append(lineno)
            offs.append(offset)
            raws.append(text)
            if len(rows) >= BATCH_ROWS:
                del pending[log]
                yield from self._emit(log, _json_table(rows), np.array(lines), np.array(offs),
                                      member, raws, noted, out, ctx)
        for log, (rows, lines, offs, raws) in pending.items():
            yield from self._emit(log, _json_table(rows), np.array(lines), np.array(offs), member,
                                  raws, noted, out, ctx)


class _Rewound:
    """A stream with its first bytes (already read to sniff) put back in front."""

    def __init__(self, head: bytes, stream: Any):
        self.head = head
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            if n < 0:
                return data + self.stream.read()
            return data + self.stream.read(max(n - len(data), 0))
        return self.stream.read(n)

    def readline(self, limit: int = -1) -> bytes:
        if self.head:
            nl = self.head.find(b"\n")
            if nl != -1 and (limit < 0 or nl < limit):
                line, self.head = self.head[:nl + 1], self.head[nl + 1:]
                return line
            data, self.head = self.head, b""
            rest = self.stream.readline(-1 if limit < 0 else max(limit - len(data), 0))
            return data + rest
        return self.stream.readline(limit)
