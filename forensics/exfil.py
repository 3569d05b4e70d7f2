"""What left the network: bytes out per host, destination and hour; files sent out; DNS tunnelling.

Three kinds of rows go to the ``exfil`` table:

- ``bytes``: payload bytes internal hosts sent to external addresses (the
  originator's ``orig_bytes`` of each session), per internal host, destination
  and hour, with the channel (``tls``, ``ssh``, ``http``, ``ftp``, ``smtp``,
  ``dns`` or ``unknown``) and whether it was encrypted, clear text or unknown.
  The channel comes from the ``tls``/``ssh``/``http`` tables when they describe
  the session, else from the session's detected service, else from its port.
  When ``http`` has request bodies for the sessions, their total is given in
  ``detail`` (the payload without headers).
- ``file``: files seen leaving (``files`` rows whose sender is internal and
  receiver external).
- ``dns_tunnel``: domains queried with long, high-entropy labels: the decoded
  payload is estimated from the label text (hex 4 bits, base32 5 bits, other 6
  bits per character), each distinct query once.

Internal ranges default to RFC 1918 and RFC 4193 and are configurable.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import _lateral_rules as R
from forensics._lateral_sql import has_rows, log_row_key, query, replace_rows, row_key
from forensics.hostmap import build_host_map, is_internal

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["CLEAR_PORTS", "COLUMNS", "TLS_PORTS", "dns_tunnels", "exfil", "exfil_bytes", "files_out",
           "label_payload_bytes"]

COLUMNS = ["kind", "src", "src_addr", "dst", "dst_name", "hour", "channel", "encryption", "bytes", "sessions",
           "first", "last", "score", "detail", "rows"]
TLS_PORTS = {443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 5061, 8443, 9443}
CLEAR_PORTS = {21: "ftp", 23: "telnet", 25: "smtp", 53: "dns", 80: "http", 110: "pop3", 143: "imap",
               8080: "http", 3128: "http", 69: "tftp"}
_SERVICE = {"ssl": "tls", "tls": "tls", "ssh": "ssh", "http": "http", "ftp": "ftp", "smtp": "smtp",
            "dns": "dns"}
_ENCRYPTION = {"tls": "encrypted", "ssh": "encrypted", "unknown": "unknown"}
_MAX_ROWS = 200


def _channel(service: Any, port: Any, uid: str, tls: set[str], ssh: set[str], http: set[str]) -> str:
    if uid in tls:
        return "tls"
    if uid in ssh:
        return "ssh"
    if uid in http:
        return "http"
    if isinstance(service, str):
        for part in service.lower().split(","):
            if part in _SERVICE:
                return _SERVICE[part]
    p = int(port) if port is not None and not pd.isna(port) else -1
    if p in TLS_PORTS:
        return "tls"
    if p == 22:
        return "ssh"
    return CLEAR_PORTS.get(p, "unknown")


def _uids(case: Case, table: str) -> set[str]:
    if not has_rows(case, table):
        return set()
    return set(case.sql(f"SELECT DISTINCT uid FROM {table} WHERE uid IS NOT NULL")["uid"])


def _names(case: Case) -> dict[str, str]:
    """Address -> name from DNS answers (the last name that resolved to it)."""
    df = query(case, "SELECT query, unnest(answers) AS a FROM dns WHERE answers IS NOT NULL", ["query", "a"],
               ("dns",))
    return {str(a): str(q) for q, a in zip(df["query"], df["a"], strict=True)}


def exfil_bytes(case: Case, *, internal: Iterable[str] | None = None) -> pd.DataFrame:
    """Bytes sent from internal hosts to external addresses, per host, destination, hour and channel.

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193).

    Returns:
        ``kind="bytes"`` rows (columns :data:`COLUMNS`).
    """
    hm = build_host_map(case, internal)
    df = query(case, """
        SELECT uid, ts, orig_h, resp_h, resp_p, proto, service, coalesce(orig_bytes, 0) AS ob
        FROM sessions WHERE coalesce(orig_bytes, 0) > 0""", [], ("sessions",))
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    df = df[[is_internal(o, hm.internal_nets) and not is_internal(r, hm.internal_nets)
             for o, r in zip(df["orig_h"], df["resp_h"], strict=True)]]
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    tls, ssh, http = _uids(case, "tls"), _uids(case, "ssh"), _uids(case, "http")
    df = df.assign(channel=[_channel(s, p, u, tls, ssh, http) for s, p, u in
                            zip(df["service"], df["resp_p"], df["uid"], strict=True)],
                   hour=pd.to_datetime(df["ts"], utc=True).dt.floor("h"))
    sni = query(case, "SELECT uid, server_name FROM tls WHERE server_name IS NOT NULL",
                ["uid", "server_name"], ("tls",))
    hhost = query(case, "SELECT uid, host, sum(request_body_len) AS body FROM http "
                        "WHERE uid IS NOT NULL GROUP BY ALL", ["uid", "host", "body"], ("http",))
    name_by_uid = {**dict(zip(hhost["uid"], hhost["host"], strict=True)),
                   **dict(zip(sni["uid"], sni["server_name"], strict=True))}
    body = dict(zip(hhost["uid"], hhost["body"], strict=True))
    dns = _names(case)
    rows = []
    for (o, r, hour, ch), g in df.groupby(["orig_h", "resp_h", "hour", "channel"], sort=True):
        names = [name_by_uid[u] for u in g["uid"] if isinstance(name_by_uid.get(u), str)]
        bodies = [body[u] for u in g["uid"] if u in body and not pd.isna(body[u])]
        ports = sorted({int(p) for p in g["resp_p"].dropna()})
        detail = f"ports {','.join(map(str, ports[:8]))}"
        if bodies:
            detail += f"; HTTP request bodies {int(sum(bodies))} B"
        rows.append({"kind": "bytes", "src": hm.resolve(o, g["ts"].min()), "src_addr": o, "dst": r,
                     "dst_name": Counter(names).most_common(1)[0][0] if names else dns.get(r),
                     "hour": hour, "channel": ch,
                     "encryption": _ENCRYPTION.get(ch, "clear"),
                     "bytes": int(g["ob"].sum()), "sessions": len(g), "first": g["ts"].min(),
                     "last": g["ts"].max(),
                     "score": None, "detail": detail,
                     "rows": json.dumps([json.loads(row_key("sessions",
                                                            uid=u)) for u in g["uid"][:_MAX_ROWS]],
                                        separators=(",", ":"))})
    return pd.DataFrame(rows, columns=COLUMNS)


def files_out(case: Case, *, internal: Iterable[str] | None = None) -> pd.DataFrame:
    """Files sent from an internal host to an external one (from the ``files`` table).

    Args:
        case: the case.
        internal: internal networks as CIDRs.

    Returns:
        ``kind="file"`` rows (columns :data:`COLUMNS`); none while ``files`` is empty.
    """
    hm = build_host_map(case, internal)
    df = query(case, """
        SELECT ts, fuid, uid, orig_h, resp_h, is_orig, file_source, filename, mime_type, seen_bytes,
               total_bytes, sha256, evidence_id, member, record_offset FROM files""", [], ("files",))
    rows = []
    for r in df.itertuples(index=False):
        sender, receiver = (r.orig_h, r.resp_h) if r.is_orig is not False else (r.resp_h, r.orig_h)
        if not (is_internal(sender, hm.internal_nets) and isinstance(receiver, str)
                and not is_internal(receiver, hm.internal_nets)):
            continue
        size = r.total_bytes if r.total_bytes is not None and not pd.isna(r.total_bytes) else r.seen_bytes
        rows.append({"kind": "file", "src": hm.resolve(sender, r.ts), "src_addr": sender, "dst": receiver,
                     "dst_name": None, "hour": pd.Timestamp(r.ts).floor("h"),
                     "channel": str(r.file_source or "unknown").lower(), "encryption": "clear",
                     "bytes": None if size is None or pd.isna(size) else int(size), "sessions": 1,
                     "first": r.ts,
                     "last": r.ts, "score": 1.0,
                     "detail": f"{r.filename or '(no name)'} {r.mime_type or ''} sha256 {r.sha256 or '?'}",
                     "rows": "[" + log_row_key("files", r) + "]"})
    return pd.DataFrame(rows, columns=COLUMNS)


def label_payload_bytes(labels: Iterable[str], min_len: int = 8) -> float:
    """Payload bytes a query's data labels can carry (labels shorter than ``min_len`` are counters).

    Hex text carries 4 bits a character, base32 5, anything else (base64-like) 6.
    """
    total = 0.0
    for lab in labels:
        if len(lab) < min_len:
            continue
        low = lab.lower()
        bits = 4 if re.fullmatch(r"[0-9a-f]+", low) else 5 if re.fullmatch(r"[a-z2-7]+=*", low) else 6
        total += len(lab) * bits / 8
    return total


def _split(query: str) -> tuple[list[str], str] | None:
    """(data labels, tunnel domain) of a query, or None when no label looks like data."""
    labels = query.rstrip(".").split(".")
    if len(labels) < 3:
        return None
    data_idx = [i for i,
                lab in enumerate(labels[:-2]) if len(lab) >= 16 or (len(lab) >= 8 and R.entropy(lab) >= 3.0)]
    if not data_idx:
        return None
    last = max(data_idx)
    return labels[: last + 1], ".".join(labels[last + 1:])


def dns_tunnels(case: Case, *, internal: Iterable[str] | None = None, min_queries: int = 5,
                min_score: float = 0.5) -> pd.DataFrame:
    """Domains that look like DNS tunnels: long, high-entropy labels in many distinct queries.

    The tunnel domain is what follows the last data-like label (16+ characters,
    or 8+ with entropy of 3 bits or more): ``0001.<hex>.t.example.info`` ->
    ``t.example.info``. The source is the client that asked most, not a resolver
    that forwarded the queries.

    Args:
        case: the case.
        internal: internal networks as CIDRs.
        min_queries: fewest distinct queries for a domain to be considered.
        min_score: lowest score reported (0.4 label length, 0.3 entropy, 0.3 volume).

    Returns:
        ``kind="dns_tunnel"`` rows (columns :data:`COLUMNS`); none while ``dns`` is empty.
    """
    hm = build_host_map(case, internal)
    df = query(case, "SELECT ts, uid, orig_h, resp_h, query, evidence_id, member, record_offset FROM dns "
                     "WHERE query IS NOT NULL", [], ("dns",))
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    resolvers = {r for o, r in zip(df["orig_h"], df["resp_h"], strict=True)
                 if is_internal(o, hm.internal_nets) and is_internal(r, hm.internal_nets)}
    parts = [_split(str(q)) for q in df["query"]]
    df = df.assign(domain=[p[1] if p else None for p in parts], labels=[p[0] if p else None for p in parts])
    rows = []
    for dom, g in df[df["domain"].notna()].groupby("domain"):
        uniq = g.drop_duplicates("query")
        if len(uniq) < min_queries:
            continue
        data = [lab for labs in uniq["labels"] for lab in labs if len(lab) >= 8]
        ent = sum(R.entropy(x) for x in data) / len(data) if data else 0.0
        maxlen = max((len(x) for x in data), default=0)
        score = round(0.4 * min(1.0, maxlen / 50) + 0.3 * min(1.0, ent / 4.0) + 0.3 * min(1.0,
                                                                                          len(uniq) / 50), 3)
        if score < min_score:
            continue
        clients = [o for o in g["orig_h"] if o not in resolvers] or list(g["orig_h"])
        src_addr = Counter(clients).most_common(1)[0][0]
        payload = sum(label_payload_bytes(labs) for labs in uniq["labels"])
        rows.append({"kind": "dns_tunnel", "src": hm.resolve(src_addr, g["ts"].min()), "src_addr": src_addr,
                     "dst": dom, "dst_name": dom, "hour": pd.Timestamp(g["ts"].min()).floor("h"),
                     "channel": "dns",
                     "encryption": "clear", "bytes": round(payload), "sessions": len(uniq),
                     "first": g["ts"].min(),
                     "last": g["ts"].max(), "score": score,
                     "detail": f"{len(uniq)} distinct queries, longest data label {maxlen} chars, mean "
                               f"entropy {ent:.2f} bits/char, {int(uniq['query'].str.len().sum())} "
                               "query characters",
                     "rows": "[" + ",".join(log_row_key("dns", r) for r in uniq.head(_MAX_ROWS).itertuples())
                             + "]"})
    return pd.DataFrame(rows, columns=COLUMNS)


def exfil(case: Case, *, internal: Iterable[str] | None = None, persist: bool = True) -> pd.DataFrame:
    """All exfiltration rows (bytes out, files out, DNS tunnels), written to the ``exfil`` table.

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193).
        persist: replace the ``exfil`` table's rows.

    Returns:
        The rows, largest first within each kind.
    """
    parts = [exfil_bytes(case, internal=internal), files_out(case, internal=internal),
             dns_tunnels(case, internal=internal)]
    df = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
        pd.DataFrame(columns=COLUMNS)
    if len(df):
        df = df.sort_values(["kind", "bytes"], ascending=[True, False]).reset_index(drop=True)
    if persist and not case.read_only:
        replace_rows(case, {"exfil": df})
    return df
