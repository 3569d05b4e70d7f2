"""SQL the lateral-movement, scope and exfiltration modules share (private).

Every query tolerates tables that are missing or empty (sources and parsers
land at different times): it returns an empty frame with the expected columns.
Raw Windows records are stored flat by the NXLog reader and as
``{"Event": {"System": ..., "EventData": ...}}`` by the EVTX reader; :func:`jf`
reads a field from either shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics.errors import QueryError

if TYPE_CHECKING:
    from forensics.case import Case

LOG_KEY = ("evidence_id", "member", "record_offset")


def jf(field: str, col: str = "raw") -> str:
    """SQL text reading a Windows event field from a raw record of either shape."""
    return (f"coalesce(json_extract_string({col}, '$.{field}'), "
            f"json_extract_string({col}, '$.Event.EventData.{field}'))")


def table_columns(case: Case, table: str) -> list[str]:
    """Columns of a table or view, [] when the case has no such table."""
    try:
        return case.sql(f"SELECT * FROM {table} LIMIT 0").columns.tolist()
    except QueryError:
        return []


def has_rows(case: Case, table: str) -> bool:
    """Whether the table exists and holds at least one row."""
    if not table_columns(case, table):
        return False
    return len(case.sql(f"SELECT 1 FROM {table} LIMIT 1")) > 0


def query(case: Case, sql: str, cols: list[str], tables: tuple[str, ...], params: list[Any] | None = None
          ) -> pd.DataFrame:
    """Run ``sql`` when every table in ``tables`` has rows, else an empty frame with ``cols``."""
    if not all(has_rows(case, t) for t in tables):
        return pd.DataFrame(columns=cols)
    return case.sql(sql, params)


def row_key(table: str, **vals: Any) -> str:
    """A lineage entry ``{"table": t, "key": {...}}`` as canonical JSON (text values, sorted keys)."""
    key = {k: (None if _na(v) else str(v.item() if hasattr(v, "item") else v)) for k,
           v in sorted(vals.items())}
    return json.dumps({"table": table, "key": key}, sort_keys=True, separators=(",", ":"))


def log_row_key(table: str, r: Any) -> str:
    """Lineage entry of a log-table row (keyed by evidence, member and record offset)."""
    return row_key(table, evidence_id=r.evidence_id, member=r.member, record_offset=r.record_offset)


def _na(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ---- host identity --------------------------------------------------------------------

def log_hosts(case: Case) -> pd.DataFrame:
    """Hosts that wrote log records, with first/last time and record count."""
    parts = [f"SELECT host, ts FROM {t}" for t in ("events", "logons") if has_rows(case, t)]
    if not parts:
        return pd.DataFrame(columns=["host", "first", "last", "n"])
    return case.sql(f"SELECT host, min(ts) AS first, max(ts) AS last, count(*) AS n FROM "
                    f"({' UNION ALL '.join(parts)}) WHERE host IS NOT NULL GROUP BY host")


def inventory_bindings(case: Case) -> pd.DataFrame:
    """Host and address pairs of the asset inventory."""
    return query(case, "SELECT host, address FROM assets", ["host", "address"], ("assets",))


def binding_queries(case: Case) -> Iterator[tuple[str, pd.DataFrame]]:
    """(source, frame of name, address, first, last, n) for each kind of name-address evidence."""
    cols = ["name", "address", "first", "last", "n"]
    # WorkstationName is the client's name for network logons only (type 10 and 2 name the target itself).
    yield "logon", query(case, """
        SELECT src_host AS name, src_ip AS address, min(ts) AS first, max(ts) AS last, count(*) AS n
        FROM logons WHERE event_id IN (4624, 4625) AND logon_type IN (3, 8) AND src_host IS NOT NULL
          AND src_ip IS NOT NULL AND upper(split_part(src_host, '.', 1)) <> upper(split_part(host, '.', 1))
        GROUP BY ALL""", cols, ("logons",))
    yield "session_time", logon_target_addresses(case)
    yield "session_port", query(case, """
        SELECT l.host AS name, s.resp_h AS address, min(s.ts) AS first, max(s.ts) AS last, count(*) AS n
        FROM logons l JOIN sessions s ON s.orig_h = l.src_ip AND s.orig_p = l.src_port
        WHERE l.src_port IS NOT NULL AND l.src_port > 0 AND l.host IS NOT NULL
          AND abs(epoch(s.ts) - epoch(l.ts)) < 600
        GROUP BY ALL""", cols, ("logons", "sessions"))
    yield "sysmon", sysmon_local_addresses(case)
    yield "ntlm", query(case, """
        SELECT hostname AS name, orig_h AS address, min(ts) AS first, max(ts) AS last, count(*) AS n
        FROM ntlm WHERE hostname IS NOT NULL GROUP BY ALL""", cols, ("ntlm",))
    yield "rdp", query(case, """
        SELECT client_name AS name, orig_h AS address, min(ts) AS first, max(ts) AS last, count(*) AS n
        FROM rdp WHERE client_name IS NOT NULL GROUP BY ALL""", cols, ("rdp",))
    yield "smb_mapping", query(case, r"""
        SELECT split_part(ltrim(path, '\'), '\', 1) AS name, resp_h AS address, min(ts) AS first,
               max(ts) AS last, count(*) AS n
        FROM smb_mapping WHERE path LIKE '\\\\%' GROUP BY ALL""", cols, ("smb_mapping",))


def logon_target_addresses(case: Case) -> pd.DataFrame:
    """(logging host, address) when a logon from A at t matches exactly one connection from A at t.

    The connection (captured, or an outbound Sysmon 3 on A) to the port the
    logon came over gives the logging host's address even when the logon does
    not record the source port (RDP, WinRM, sshd without port).
    """
    cols = ["name", "address", "first", "last", "n"]
    if not has_rows(case, "logons"):
        return pd.DataFrame(columns=cols)
    ports = "22, 135, 139, 445, 3389, 5985, 5986"
    conns = []
    if has_rows(case, "sessions"):
        conns.append(f"SELECT orig_h AS client, resp_h AS server, ts FROM sessions "
                     f"WHERE proto = 'tcp' AND resp_p IN ({ports})")
    if has_rows(case, "events"):
        conns.append(f"SELECT src_ip AS client, dst AS server, ts FROM events WHERE event_id = 3 "
                     f"AND provider ILIKE '%sysmon%' AND lower({jf('Initiated')}) = 'true' "
                     f"AND dst_port IN ({ports})")
    if not conns:
        return pd.DataFrame(columns=cols)
    return case.sql(f"""
        WITH l AS (SELECT host, src_ip, ts FROM logons WHERE host IS NOT NULL AND src_ip IS NOT NULL
                     AND success AND (action = 'ssh' OR action LIKE 'rdp%'
                                      OR (action = 'logon' AND logon_type IN (3, 10)))),
             c AS ({' UNION ALL '.join(conns)}),
             m AS (SELECT l.host, l.ts AS lts, min(c.server) AS server, count(DISTINCT c.server) AS k
                   FROM l JOIN c ON c.client = l.src_ip AND c.server <> l.src_ip
                    AND c.ts BETWEEN l.ts - INTERVAL 5 SECOND AND l.ts + INTERVAL 2 SECOND
                   GROUP BY l.host, l.ts)
        SELECT host AS name, server AS address, min(lts) AS first, max(lts) AS last, count(*) AS n
        FROM m WHERE k = 1 GROUP BY ALL""")


def sysmon_connections(case: Case) -> pd.DataFrame:
    """Sysmon network connections (event 3) with both ends and the ``Initiated`` flag."""
    cols = ["ts", "host", "user", "process", "src_ip", "src_port", "dst", "dst_port", "initiated",
            "src_name", "dst_name", "evidence_id", "member", "record_offset", "source"]
    return query(case, f"""
        SELECT ts, host, user, process, src_ip, src_port, dst, dst_port,
               lower({jf('Initiated')}) AS initiated, {jf('SourceHostname')} AS src_name,
               {jf('DestinationHostname')} AS dst_name, evidence_id, member, record_offset, source
        FROM events WHERE event_id = 3 AND provider ILIKE '%sysmon%'
          AND src_ip IS NOT NULL AND dst IS NOT NULL
        """, cols, ("events",))


def server_side(src_port: Any, dst_port: Any) -> str | None:
    """Which end of a connection is the server: 'src' or 'dst' (well-known or lower port), None if equal."""
    from forensics._lateral_rules import SERVER_PORTS

    sp = int(src_port) if not _na(src_port) else 65535
    dp = int(dst_port) if not _na(dst_port) else 65535
    s_srv, d_srv = sp in SERVER_PORTS or sp < 1024, dp in SERVER_PORTS or dp < 1024
    if s_srv != d_srv:
        return "src" if s_srv else "dst"
    return None if sp == dp else ("src" if sp < dp else "dst")


def oriented_sysmon(case: Case) -> pd.DataFrame:
    """Sysmon connections as client -> server, with which end is the logging host.

    Sysmon versions disagree on which end is "Source" for inbound connections,
    so the server is told by its port, and ``Initiated`` says whether the
    logging host was the client.
    """
    df = sysmon_connections(case)
    if not len(df):
        return df.assign(client=[], client_port=[], server=[], server_port=[], local_is_client=[],
                         client_name=[], server_name=[])
    # Sysmon logs the local end as Source for connections it initiated; for inbound ones
    # versions differ, so the server end is told by its port.
    srv = [("dst" if str(i) in ("true", "1") else server_side(a, b))
           for a, b, i in zip(df["src_port"], df["dst_port"], df["initiated"], strict=True)]
    is_src = pd.Series([s == "src" for s in srv], index=df.index)
    df["server"] = df["src_ip"].where(is_src, df["dst"])
    df["server_port"] = df["src_port"].where(is_src, df["dst_port"])
    df["client"] = df["dst"].where(is_src, df["src_ip"])
    df["client_port"] = df["dst_port"].where(is_src, df["src_port"])
    df["server_name"] = df["src_name"].where(is_src, df["dst_name"])
    df["client_name"] = df["dst_name"].where(is_src, df["src_name"])
    df["local_is_client"] = df["initiated"].isin(["true", "1"])
    # Same port on both ends of an inbound record (NTP 123 <-> 123): which end is local is unknown.
    return df[[s is not None for s in srv]]


def sysmon_local_addresses(case: Case) -> pd.DataFrame:
    """(host, own address) pairs from Sysmon connections, plus names Sysmon resolved for addresses."""
    from forensics.hostmap import canonical_host

    df = oriented_sysmon(case)
    cols = ["name", "address", "first", "last", "n"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    local = df["client"].where(df["local_is_client"], df["server"])
    rows = pd.DataFrame({"name": df["host"], "address": local, "ts": df["ts"]})
    for end in ("client", "server"):  # SourceHostname / DestinationHostname
        named = df[df[f"{end}_name"].notna() & ~df[f"{end}_name"].isin(["", "-"])]
        rows = pd.concat([rows, pd.DataFrame({"name": named[f"{end}_name"], "address": named[end],
                                              "ts": named["ts"]})])
    rows = rows[[canonical_host(a) is not None for a in rows["address"]]]
    if not len(rows):
        return pd.DataFrame(columns=cols)
    return (rows.groupby(["name", "address"], dropna=True)["ts"].agg(["min", "max", "count"])
            .reset_index().rename(columns={"min": "first", "max": "last", "count": "n"}))


def case_domains(case: Case) -> set[str]:
    """DNS domains the case's own hosts belong to (from FQDNs in the logs)."""
    out: set[str] = set()
    df = log_hosts(case)
    for h in df["host"].dropna():
        h = str(h).lower()
        if "." in h and not h.replace(".", "").isdigit():
            out.add(h.split(".", 1)[1])
    if has_rows(case, "logons"):
        for d in case.sql("SELECT DISTINCT domain FROM logons WHERE domain LIKE '%.%'")["domain"].dropna():
            out.add(str(d).lower())
    return out


def dns_bindings(case: Case) -> pd.DataFrame:
    """(name, address) pairs from DNS A/AAAA answers."""
    from forensics.hostmap import normalize_address

    df = query(case, """
        SELECT query AS name, a.ans AS address, min(ts) AS first, max(ts) AS last, count(*) AS n
        FROM (SELECT query, ts, unnest(answers) AS ans FROM dns WHERE answers IS NOT NULL) a
        GROUP BY ALL""", ["name", "address", "first", "last", "n"], ("dns",))
    if len(df):
        df = df[[normalize_address(str(a)) is not None for a in df["address"]]]
    return df


def replace_rows(case: Case, tables: dict[str, pd.DataFrame]) -> None:
    """Replace the whole content of derived tables in one transaction.

    A derived table whose stored columns differ from its declaration (a case
    built by an older Breachbook) is dropped and created again: it holds
    nothing that cannot be derived again.
    """
    import pyarrow as pa

    from forensics.tables import TABLES

    case.con.execute("BEGIN TRANSACTION")
    try:
        for name, df in tables.items():
            decl = TABLES[name]
            if table_columns(case, name) != decl.names:
                case.con.execute(f"DROP TABLE IF EXISTS {name}")
                case.con.execute(decl.ddl())
            case.con.execute(f"DELETE FROM {name}")
            if len(df):
                data = df.reset_index(drop=True)[[c for c in decl.names if c in df.columns]]
                case._insert(name, pa.Table.from_pandas(data, preserve_index=False))
        case.con.execute("COMMIT")
    except Exception:
        case.con.execute("ROLLBACK")
        raise
