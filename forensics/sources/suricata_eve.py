"""Suricata ``eve.json`` into alerts, sessions, http, dns, tls, files, logons and events.

Field names are those of Suricata's EVE format documentation ("EVE JSON
Format"): a common header (``timestamp``, ``flow_id``, ``src_ip``,
``dest_port``, ``proto``, ``app_proto``, ``pcap_cnt``) and one object named
after ``event_type``. Mapping:

* ``alert`` -> ``alerts`` (Suricata's own names: signature id, severity, category).
* ``flow`` -> ``sessions`` with ``source = 'suricata'``: ``uid`` is the flow id
  as text, times from ``flow.start``/``flow.end``, packet counts from
  ``pkts_toserver``/``pkts_toclient``. Byte counts are not stored: Suricata's
  ``bytes_toserver`` counts whole packets including the link-layer header, so
  it is neither Zeek's ``orig_bytes`` (payload) nor ``orig_ip_bytes`` (IP);
  ``conn_state``/``history`` stay NULL for the same reason (no Zeek meaning).
* ``http``, ``dns`` (eve versions 1, 2 and 3), ``tls`` -> the app tables with
  Zeek's names; ``fileinfo`` -> ``files``.
* ``krb5`` and ``smb`` NTLMSSP session setups -> ``logons`` too.
* everything else but ``stats`` -> ``events`` (``type`` = the event type).

App-layer records are put in client -> server order (``orig_h`` the client):
records marked ``direction: to_client``, and unmarked records whose source
port is a low (server) port and destination port a high one, are flipped.
Every row keeps the eve line number and byte offset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from forensics.sources import register
from forensics.sources._logio import (
    Batches,
    clean,
    dumps,
    first_lines,
    is_compressed,
    iso_us,
    iter_lines,
    open_members,
    peek,
    strip_mapped,
    to_bool,
    to_int,
)
from forensics.sources._winevents import split_account

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "gre": 47}
_TLS_VERSIONS = {"SSLv2": "SSLv2", "SSLv3": "SSLv3", "TLSv1": "TLSv10", "TLS 1.0": "TLSv10",
                 "TLS 1.1": "TLSv11", "TLS 1.2": "TLSv12", "TLS 1.3": "TLSv13"}


def _uid(rec: dict[str, Any]) -> str | None:
    fid = rec.get("flow_id")
    return None if fid is None else str(fid)


def _conn(rec: dict[str, Any]) -> dict[str, Any]:
    """``uid``/``orig_h``/... in client -> server order (see the module docstring)."""
    src, sp = strip_mapped(rec.get("src_ip")), to_int(rec.get("src_port"))
    dst, dp = strip_mapped(rec.get("dest_ip")), to_int(rec.get("dest_port"))
    direction = rec.get("direction")
    flip = direction == "to_client" or (direction is None and sp is not None and dp is not None
                                        and sp < 1024 <= dp)
    if flip:
        src, sp, dst, dp = dst, dp, src, sp
    return {"ts": iso_us(rec.get("timestamp")), "uid": _uid(rec), "orig_h": src, "orig_p": sp,
            "resp_h": dst, "resp_p": dp}


def _alert(rec: dict[str, Any]) -> dict[str, Any]:
    a = rec.get("alert") or {}
    return {
        "ts": iso_us(rec.get("timestamp")), "uid": _uid(rec),
        "src_ip": strip_mapped(rec.get("src_ip")), "src_port": to_int(rec.get("src_port")),
        "dest_ip": strip_mapped(rec.get("dest_ip")), "dest_port": to_int(rec.get("dest_port")),
        "proto": (rec.get("proto") or "").lower() or None, "app_proto": rec.get("app_proto"),
        "direction": rec.get("direction"), "action": a.get("action"), "gid": to_int(a.get("gid")),
        "signature_id": to_int(a.get("signature_id")), "rev": to_int(a.get("rev")),
        "signature": a.get("signature"), "category": a.get("category"),
        "severity": to_int(a.get("severity")), "sensor": rec.get("host") or rec.get("in_iface"),
        "pcap_cnt": to_int(rec.get("pcap_cnt")),
        "metadata": dumps(a["metadata"]) if a.get("metadata") is not None else None,
    }


def _flow(rec: dict[str, Any]) -> dict[str, Any]:
    f = rec.get("flow") or {}
    start, end = iso_us(f.get("start")), iso_us(f.get("end"))
    proto = (rec.get("proto") or "").lower() or None
    vlan = rec.get("vlan") or []
    app = rec.get("app_proto")
    return {
        "uid": _uid(rec), "ts": start, "ts_end": end,
        "duration": (end - start) / 1e6 if start is not None and end is not None else None,
        "proto": proto, "ip_proto": IP_PROTO.get(proto or "", to_int(rec.get("proto"))),
        "orig_h": strip_mapped(rec.get("src_ip")), "orig_p": to_int(rec.get("src_port")),
        "resp_h": strip_mapped(rec.get("dest_ip")), "resp_p": to_int(rec.get("dest_port")),
        "service": app if app and app != "failed" else None,
        "orig_pkts": to_int(f.get("pkts_toserver")), "resp_pkts": to_int(f.get("pkts_toclient")),
        "vlan": vlan[0] if len(vlan) > 0 else None, "inner_vlan": vlan[1] if len(vlan) > 1 else None,
        "source": "suricata",
    }


def _http(rec: dict[str, Any]) -> dict[str, Any]:
    h = rec.get("http") or {}
    proto = h.get("protocol") or ""
    tx = to_int(rec.get("tx_id"))
    return _conn(rec) | {
        "trans_depth": tx + 1 if tx is not None else None, "method": h.get("http_method"),
        "host": h.get("hostname"), "uri": h.get("url"), "referrer": h.get("http_refer"),
        "version": proto.removeprefix("HTTP/") or None, "user_agent": h.get("http_user_agent"),
        "status_code": to_int(h.get("status")), "response_body_len": to_int(h.get("length")),
        "content_type": h.get("http_content_type"),
    }


def _dns(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec.get("dns") or {}
    q = (d.get("queries") or [{}])[0] if "queries" in d else d
    answers = d.get("answers")
    if answers is None and d.get("type") == "answer" and "rdata" in d:  # eve dns version 1
        answers = [d]
    answers = answers or []
    row = _conn(rec) | {
        "proto": (rec.get("proto") or "").lower() or None, "trans_id": to_int(d.get("id")),
        "query": q.get("rrname"), "qtype_name": q.get("rrtype"), "rcode_name": d.get("rcode"),
        "aa": to_bool(d.get("aa")), "tc": to_bool(d.get("tc")), "rd": to_bool(d.get("rd")),
        "ra": to_bool(d.get("ra")), "z": to_int(d.get("z")) if d.get("z") is not None else None,
        "opcode": to_int(d.get("opcode")),
        "answers": [str(a.get("rdata", a.get("rrname"))) for a in answers] or None,
        "ttls": [str(a["ttl"]) for a in answers if a.get("ttl") is not None] or None,
    }
    if row["resp_p"] not in (53, 5353, 5355) and row["orig_p"] in (53, 5353, 5355):
        row.update(orig_h=row["resp_h"], orig_p=row["resp_p"], resp_h=row["orig_h"],
                   resp_p=row["orig_p"])
    return row


def _tls(rec: dict[str, Any]) -> dict[str, Any]:
    t = rec.get("tls") or {}
    ver = t.get("version")
    return _conn(rec) | {
        "version": _TLS_VERSIONS.get(str(ver), ver), "server_name": t.get("sni"),
        "subject": t.get("subject"), "issuer": t.get("issuerdn"), "serial": t.get("serial"),
        "not_valid_before": iso_us(t.get("notbefore")), "not_valid_after": iso_us(t.get("notafter")),
        "resumed": to_bool(t.get("session_resumed")),
        "ja3": (t.get("ja3") or {}).get("hash"), "ja3s": (t.get("ja3s") or {}).get("hash"),
        "ja4": t.get("ja4"),
    }


def _fileinfo(rec: dict[str, Any]) -> dict[str, Any]:
    f = rec.get("fileinfo") or {}
    c = _conn(rec)
    fid = f.get("file_id", f.get("fileid"))
    return {
        "ts": c["ts"], "uid": c["uid"], "orig_h": c["orig_h"], "orig_p": c["orig_p"],
        "resp_h": c["resp_h"], "resp_p": c["resp_p"],
        "fuid": f"{c['uid']}:{fid}" if c["uid"] is not None and fid is not None else None,
        "file_source": (rec.get("app_proto") or "").upper() or None, "filename": f.get("filename"),
        "seen_bytes": to_int(f.get("size")), "md5": f.get("md5"), "sha1": f.get("sha1"),
        "sha256": f.get("sha256"), "magic": f.get("magic"), "mime_type": f.get("mimetype"),
        "stored": to_bool(f.get("stored")), "state": f.get("state"),
        "timedout": f.get("state") == "TRUNCATED" if f.get("state") else None,
    }


def _logon(rec: dict[str, Any]) -> dict[str, Any] | None:
    c = _conn(rec)
    base = {"ts": c["ts"], "src_ip": c["orig_h"], "src_port": c["orig_p"], "dst_ip": c["resp_h"]}
    et = rec.get("event_type")
    if et == "krb5":
        k = rec.get("krb5") or {}
        kind = str(k.get("msg_type") or "")
        user, realm = split_account(k.get("cname"), k.get("realm"))
        err = clean(k.get("error_code"))
        return base | {
            "action": "kerberos_tgt" if "AS" in kind else "kerberos_service_ticket", "user": user,
            "domain": realm, "service": k.get("sname"), "auth_package": "Kerberos",
            "success": False if err or k.get("failed_request") else None, "status": err}
    if et == "smb":
        s = rec.get("smb") or {}
        n = s.get("ntlmssp")
        if not isinstance(n, dict):
            return None
        st = s.get("status")
        return base | {
            "action": "ntlm", "user": clean(n.get("user")), "domain": clean(n.get("domain")),
            "src_host": clean(n.get("host")), "auth_package": "NTLM", "service": "smb",
            "success": None if st is None else st == "STATUS_SUCCESS", "status": st}
    return None


def _event(rec: dict[str, Any], et: str) -> dict[str, Any]:
    body = rec.get(et)
    msg = None
    if isinstance(body, dict):
        msg = body.get("event") or body.get("msg") or body.get("type")
    return {
        "ts": iso_us(rec.get("timestamp")), "host": rec.get("host"), "channel": "suricata",
        "provider": "suricata", "type": et, "src_ip": strip_mapped(rec.get("src_ip")),
        "src_port": to_int(rec.get("src_port")), "dst": strip_mapped(rec.get("dest_ip")),
        "dst_port": to_int(rec.get("dest_port")), "message": None if msg is None else str(msg),
    }


_TABLES = {"alert": ("alerts", _alert), "flow": ("sessions", _flow), "http": ("http", _http),
           "dns": ("dns", _dns), "tls": ("tls", _tls), "fileinfo": ("files", _fileinfo)}


@register
class SuricataEveSource:
    """Suricata EVE JSON lines (``eve.json``), plain or gz."""

    name: ClassVar[str] = "suricata_eve"

    def sniff(self, head: bytes) -> bool:
        """True when the first line is a JSON object with ``timestamp`` and ``event_type``."""
        lines = first_lines(peek(head), 1) or [peek(head)]
        line = lines[0].lstrip()
        return line.startswith(b"{") and b'"event_type":' in line and b'"timestamp":' in line

    def read(self, path: Path, ctx: IngestContext) -> Iterator[tuple[str, pa.Table]]:
        """Yield batches per table; non-JSON lines and unknown records are warnings."""
        out = Batches(ctx)
        plain = not is_compressed(path)
        skipped_stats = 0
        for member, stream in open_members(path):
            for lineno, offset, text in iter_lines(stream, ctx):
                try:
                    rec = json.loads(text)
                except ValueError as exc:
                    ctx.warn(lineno, "not_json", f"line at byte {offset} is not JSON: {exc}",
                             unit="line")
                    continue
                et = rec.get("event_type") if isinstance(rec, dict) else None
                if not isinstance(et, str):
                    ctx.warn(lineno, "not_eve", "JSON line without an event_type", unit="line")
                    continue
                lineage = {"line": lineno, "record_offset": offset, "member": member}
                if et == "stats":
                    skipped_stats += 1
                    continue
                try:
                    if et in _TABLES:
                        table, fn = _TABLES[et]
                        row = fn(rec)
                        row |= lineage
                        if table != "sessions":
                            row |= {"source": "suricata"}
                        if table == "alerts":
                            row["raw"] = text
                        out.add(table, row)
                    else:
                        out.add("events", _event(rec, et) | lineage
                                | {"source": "suricata", "raw": text})
                    logon = _logon(rec)
                    if logon is not None:
                        out.add("logons", logon | lineage | {"source": "suricata",
                                                             "host": rec.get("host")})
                except (AttributeError, TypeError, IndexError) as exc:
                    ctx.warn(lineno, "bad_eve", f"{et} record with unexpected structure: {exc!r}",
                             unit="line")
                    continue
                if _ts_missing(rec):
                    ctx.warn(lineno, "bad_time", f"timestamp {str(rec.get('timestamp'))[:40]!r} "
                             "is not a time; stored as NULL", unit="line")
                if plain:
                    out.progress = offset
                yield from out.ready()
        if skipped_stats:
            ctx.warn(None, "eve_stats_skipped", f"{skipped_stats} stats records not stored "
                     "(engine counters, not evidence)", severity="info")
        yield from out.flush()


def _ts_missing(rec: dict[str, Any]) -> bool:
    """True when a record's ``timestamp`` is absent or not a time."""
    return iso_us(rec.get("timestamp")) is None
