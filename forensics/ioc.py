"""Threat-intelligence matching: import indicator feeds, match them against the case.

::

    from forensics import ioc
    ioc.import_feed(case, "feeds/apt-report.json")        # STIX 2.1 bundle
    ioc.import_feed(case, "feeds/misp-event.json")        # MISP event
    ioc.import_feed(case, "feeds/ja3.csv", name="sslbl-ja3")
    ioc.match(case)                                       # -> ioc_hits
    case.sql("SELECT * FROM ioc_hits")

Supported indicators: IP addresses and CIDR networks, domains (a domain
matches its subdomains: ``evil.com`` matches ``cdn.evil.com``, not
``notevil.com``), URLs (compared without the scheme), MD5/SHA-1/SHA-256 file
hashes and JA3 fingerprints. In a plain list a 32-hex-digit value is an MD5;
pass ``kind="ja3"`` (or prefix lines with ``ja3:``) for a list of JA3s.

Each indicator is matched against the columns of :data:`TARGETS` in whichever
of those tables the case has. Where a feed gives a validity window (STIX
``valid_from``/``valid_until``, MISP ``first_seen``/``last_seen``, CSV
``valid_from``/``valid_until``), a row outside it is not a hit; a row without a
time is matched. A hit names its row by ``table_name`` and ``row_key``, as tags
and findings do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from forensics._iocfeeds import Indicator, parse, url_key
from forensics.errors import BreachbookError

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["TARGETS", "FeedResult", "MatchReport", "import_feed", "match"]

# (table, column, what the column holds): "addr" is an address or a host name,
# "addr[]" a list of them (DNS answers), "url" the HTTP host + uri, else a hash kind.
TARGETS: tuple[tuple[str, str, str], ...] = (
    ("sessions", "orig_h", "addr"), ("sessions", "resp_h", "addr"),
    ("dns", "query", "addr"), ("dns", "answers", "addr[]"),
    ("http", "host", "addr"), ("http", "uri", "url"), ("http", "orig_h", "addr"), ("http", "resp_h", "addr"),
    ("tls", "server_name", "addr"), ("tls", "ja3", "ja3"),
    ("files", "md5", "md5"), ("files", "sha1", "sha1"), ("files", "sha256", "sha256"),
    ("logons", "src_ip", "addr"), ("logons", "dst_ip", "addr"),
    ("events", "src_ip", "addr"), ("events", "dst", "addr"),
)


@dataclass
class FeedResult:
    """One feed imported.

    Attributes:
        feed: its name.
        version: its version (given, or what the feed says, or the file's SHA-256 prefix).
        format: ``plain``, ``csv``, ``stix2.1`` or ``misp``.
        indicators: indicators imported (duplicates merged).
        skipped: entries not imported, by reason.
    """

    feed: str
    version: str | None
    format: str
    indicators: int
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class MatchReport:
    """What :func:`match` found.

    Attributes:
        hits: rows written to ``ioc_hits``.
        by_target: hits per ``table.column``.
        skipped: ``table.column`` targets the case does not have.
        seconds: wall time.
    """

    hits: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _indicator_id(feed: str, ind: Indicator) -> str:
    parts = [feed, ind.type, ind.value, str(ind.valid_from), str(ind.valid_until)]
    return "I" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:15]


def import_feed(case: Case, path: str | Path, name: str | None = None, *, version: str | None = None,
                kind: str | None = None) -> FeedResult:
    """Import a feed of indicators, replacing an earlier import of the same name.

    Args:
        case: the case (open for writing).
        path: the feed file: a plain list, CSV, a STIX 2.1 bundle or MISP JSON events.
        name: feed name (default: the file name without suffix).
        version: feed version (default: what the feed says - latest STIX
            ``modified``, MISP event ``timestamp`` - else the file's SHA-256 prefix).
        kind: type of every value of a plain list or single-column CSV
            (``ip``, ``domain``, ``url``, ``md5``, ``sha1``, ``sha256``, ``ja3``).

    Returns:
        The :class:`FeedResult`.

    Raises:
        BreachbookError: the file is missing or in no supported format.
    """
    from forensics._rowref import insert, transaction

    case._need_write()
    p = Path(path)
    if not p.is_file():
        raise BreachbookError(f"no such feed file: {p}")
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse(data, p.suffix, kind)
    except ValueError as exc:
        raise BreachbookError(f"{p}: {exc}") from exc
    feed = name or p.stem
    merged: dict[str, dict[str, Any]] = {}
    for ind in parsed.indicators:
        iid = _indicator_id(feed, ind)
        if iid in merged:
            row = merged[iid]
            row["labels"] += [x for x in ind.labels if x not in row["labels"]]
            continue
        merged[iid] = {"indicator_id": iid, "feed": feed, "type": ind.type, "value": ind.value,
                       "raw": ind.raw, "valid_from": ind.valid_from, "valid_until": ind.valid_until,
                       "labels": list(dict.fromkeys(ind.labels)), "description": ind.description,
                       "ref": ind.ref, "to_ids": ind.to_ids}
    ver = version or parsed.version or sha[:12]
    feed_row = {"feed": feed, "version": ver, "format": parsed.format, "path": str(p.resolve()),
                "sha256": sha, "imported_at": datetime.now(UTC), "indicators": len(merged),
                "skipped": sum(parsed.skipped.values()),
                "skipped_reasons": json.dumps(dict(parsed.skipped), sort_keys=True),
                "description": parsed.description}
    with transaction(case):
        for table in ("ioc_hits", "ioc_indicators", "ioc_feeds"):
            case.con.execute(f"DELETE FROM {table} WHERE feed = ?", [feed])
        insert(case, "ioc_feeds", [feed_row])
        insert(case, "ioc_indicators", list(merged.values()))
    return FeedResult(feed, ver, parsed.format, len(merged), parsed.skipped)


# ---- matching ------------------------------------------------------------------------------

def _present(case: Case) -> dict[str, set[str]]:
    rows = case.con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall()
    out: dict[str, set[str]] = defaultdict(set)
    for t, c in rows:
        out[t].add(c)
    return out


def _host(value: str) -> str:
    """An observed address or name, lower-case, without a port or trailing dot."""
    s = value.strip().lower().rstrip(".")
    if s.startswith("[") and "]" in s:
        return s[1:s.index("]")]
    if s.count(":") == 1:
        host, _, port = s.partition(":")
        if port.isdigit():
            return host.rstrip(".")
    return s


class _Matcher:
    """Addresses, networks and domains of the indicators, for looking up observed values."""

    def __init__(self, indicators: list[tuple[str, str, str]]):
        self.ips: dict[str, list[str]] = defaultdict(list)
        self.nets: dict[tuple[int, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.domains: dict[str, list[str]] = defaultdict(list)
        for iid, typ, value in indicators:
            if typ == "ip":
                self.ips[value].append(iid)
            elif typ == "cidr":
                net = ipaddress.ip_network(value)
                self.nets[(net.version, net.prefixlen)][str(net)].append(iid)
            elif typ == "domain":
                self.domains[value].append(iid)

    def lookup(self, observed: str) -> list[str]:
        host = _host(observed)
        try:
            addr: Any = ipaddress.ip_address(host)
        except ValueError:
            labels = host.split(".")
            return [iid for i in range(len(labels)) for iid in self.domains.get(".".join(labels[i:]), ())]
        addrs = [addr]
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addrs.append(addr.ipv4_mapped)
        out: list[str] = []
        for a in addrs:
            out += self.ips.get(str(a), [])
            for (version, plen), nets in self.nets.items():
                if version == a.version:
                    out += nets.get(str(ipaddress.ip_network(f"{a}/{plen}", strict=False)), [])
        return out


def _row_key_sql(table: str, cols: set[str]) -> str:
    from forensics._rowref import key_columns

    try:
        keys = sorted(key_columns(table))
    except ValueError:
        keys = []
    if not keys or any(k not in cols for k in keys):
        return "NULL"
    return "json_object(" + ", ".join(f"'{k}', CAST(v.\"{k}\" AS VARCHAR)" for k in keys) + ")"


def match(case: Case, feeds: Iterable[str] | None = None, *, honour_validity: bool = True) -> MatchReport:
    """Match imported indicators against the case and write ``ioc_hits``.

    Earlier hits of the same feeds are replaced, so matching again (after more
    evidence is ingested) adds no duplicates.

    Args:
        case: the case (open for writing).
        feeds: feed names to match (default: every imported feed).
        honour_validity: skip rows whose time is outside an indicator's validity window.

    Returns:
        The :class:`MatchReport`.
    """
    from forensics._rowref import transaction

    case._need_write()
    t0 = time.perf_counter()
    report = MatchReport()
    names = list(feeds) if feeds is not None else [
        r[0] for r in case.con.execute("SELECT feed FROM ioc_feeds ORDER BY feed").fetchall()]
    if not names:
        return report
    present = _present(case)
    inds = case.con.execute("SELECT indicator_id, type, value FROM ioc_indicators "
                            "WHERE list_contains(?, feed)", [names]).fetchall()
    matcher = _Matcher(inds)
    targets = []
    for table, col, kind in TARGETS:
        if col in present.get(table, set()):
            targets.append((table, col, kind))
        else:
            report.skipped.append(f"{table}.{col}")
    observed: set[str] = set()
    for table, col, kind in targets:
        if kind == "addr":
            sql = f'SELECT DISTINCT CAST("{col}" AS VARCHAR) FROM {table} WHERE "{col}" IS NOT NULL'
        elif kind == "addr[]":
            sql = f'SELECT DISTINCT CAST(unnest("{col}") AS VARCHAR) FROM {table}'
        else:
            continue
        observed.update(r[0] for r in case.con.execute(sql).fetchall() if r[0])
    addr_map = [(v, iid) for v in sorted(observed) for iid in dict.fromkeys(matcher.lookup(v))]
    urls = {url_key(v): iid for iid, typ, v in inds if typ == "url"}
    url_map: list[tuple[str | None, str | None, str, str]] = []
    if ("http", "uri", "url") in targets and urls and "host" in present["http"]:
        pairs = case.con.execute("SELECT DISTINCT host, uri FROM http WHERE uri IS NOT NULL").fetchall()
        for host, uri in pairs:
            full = uri if "://" in uri[:12] else f"http://{host or ''}{uri}"
            key = url_key(full)
            if key in urls:
                url_map.append((host, uri, key or "", urls[key]))
    window = "true"
    if honour_validity:
        window = ("(i.valid_from IS NULL OR v.ts IS NULL OR v.ts >= i.valid_from) AND "
                  "(i.valid_until IS NULL OR v.ts IS NULL OR v.ts < i.valid_until)")
    now = datetime.now(UTC)
    with transaction(case):
        case.con.execute("DELETE FROM ioc_hits WHERE list_contains(?, feed)", [names])
        case.con.register("_bb_addr", pa.table({"observed": [a for a, _ in addr_map],
                                                "indicator_id": [i for _, i in addr_map]},
                                               schema=pa.schema([("observed", pa.string()),
                                                                 ("indicator_id", pa.string())])))
        case.con.register("_bb_url", pa.table(
            {"host": [u[0] for u in url_map], "uri": [u[1] for u in url_map],
             "matched": [u[2] for u in url_map], "indicator_id": [u[3] for u in url_map]},
            schema=pa.schema([("host", pa.string()), ("uri", pa.string()), ("matched", pa.string()),
                              ("indicator_id", pa.string())])))
        try:
            for table, col, kind in targets:
                cols = present[table]
                key = _row_key_sql(table, cols)
                uid = "v.uid" if "uid" in cols else "NULL"
                ts = "v.ts" if "ts" in cols else "NULL"
                if kind in ("addr", "addr[]"):
                    val = f'unnest(t."{col}")' if kind == "addr[]" else f't."{col}"'
                    src = (f"(SELECT t.*, CAST({val} AS VARCHAR) AS _bb_v FROM {table} t) v "
                           "JOIN _bb_addr m ON m.observed = v._bb_v")
                    matched = "v._bb_v"
                elif kind == "url":
                    src = ("http v JOIN _bb_url m ON m.host IS NOT DISTINCT FROM v.host "
                           "AND m.uri = v.uri")
                    matched = "m.matched"
                else:
                    src = (f"(SELECT t.*, '{kind}' AS _bb_type, lower(CAST(t.\"{col}\" AS VARCHAR)) "
                           f"AS _bb_v FROM {table} t) v JOIN ioc_indicators m "
                           "ON m.type = v._bb_type AND m.value = v._bb_v")
                    matched = f'v."{col}"'
                n = case.con.execute(
                    f"INSERT INTO ioc_hits SELECT DISTINCT i.indicator_id, i.feed, i.type, i.value, "
                    f"'{table}', {key}, '{col}', CAST({matched} AS VARCHAR), {ts}, {uid}, ? "
                    f"FROM {src} JOIN ioc_indicators i ON i.indicator_id = m.indicator_id "
                    f"WHERE list_contains(?, i.feed) AND {window}", [now, names]).fetchone()
                if n and n[0]:
                    report.by_target[f"{table}.{col}"] += int(n[0])
        finally:
            case.con.unregister("_bb_addr")
            case.con.unregister("_bb_url")
    report.hits = sum(report.by_target.values())
    report.seconds = time.perf_counter() - t0
    return report
