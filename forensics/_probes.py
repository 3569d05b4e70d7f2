"""Probes: what the case's evidence says about a control, for the analyst to confirm.

A probe takes a case and returns a :class:`Suggestion`: an instrumental level
(or None when the case has no evidence either way), a sentence, and the rows
behind it. Probes read tables other parts of Breachbook fill (``files``,
``yara_hits``, ``events``, ``logons``, ``lateral_edges``, ``alerts``); any of
them may be absent or empty in a given case, and a probe then says what it
could not see instead of failing. The checklist names probes in its ``probe``
column; :data:`PROBES` is the registry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._rowref import has_table, table_columns
from forensics.errors import QueryError

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["PROBES", "Suggestion", "logging_coverage", "probe"]

_EXEC_RE = r"\.(exe|dll|scr|ps1|bat|vbs|js|hta|msi|com|cpl)$"
_ADMIN_PORTS = (22, 135, 139, 445, 3389, 5985, 5986)
_ESTABLISHED = ("SF", "S1", "S2", "S3", "RSTO", "RSTR")


@dataclass(frozen=True)
class Suggestion:
    """What a probe found.

    Attributes:
        level: suggested instrumental rating (``not_fulfilled``, ``partly``,
            ``fully``), or None when the case has no evidence either way.
        summary: what was found, in words.
        evidence: the rows behind it.
    """

    level: str | None
    summary: str
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)


PROBES: dict[str, Callable[[Case], Suggestion]] = {}


def probe(name: str) -> Callable[[Callable[[Case], Suggestion]], Callable[[Case], Suggestion]]:
    """Register a probe under ``name`` (the value of the checklist's ``probe`` column)."""

    def deco(fn: Callable[[Case], Suggestion]) -> Callable[[Case], Suggestion]:
        if name in PROBES:
            raise ValueError(f"probe {name!r} registered twice")
        PROBES[name] = fn
        return fn

    return deco


# ---- helpers ---------------------------------------------------------------------------


def _sql(case: Case, query: str, params: list[Any] | None = None) -> pd.DataFrame:
    """A query that yields no rows (instead of failing) when a table or column is not there."""
    try:
        return case.sql(query, params)
    except QueryError:
        return pd.DataFrame()


def _cols(case: Case, table: str) -> list[str] | None:
    return table_columns(case, table) if has_table(case, table) else None


def _count(case: Case, table: str) -> int:
    if not has_table(case, table):
        return 0
    return int(case.sql(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0])


@cache
def _internal(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local or ip.is_loopback:
        return False
    return ip.is_private and not (ip.version == 4 and addr.endswith(".255"))


def _short(name: Any) -> str | None:
    """A host name as logs and DNS spell it, reduced to its first label, lower case."""
    if name is None or (isinstance(name, float) and pd.isna(name)):
        return None
    s = str(name).strip().lower()
    if not s or s in ("-", "localhost"):
        return None
    try:
        ipaddress.ip_address(s)
        return s
    except ValueError:
        pass
    s = s.split("\\")[-1].rstrip("$")
    return s.split(".")[0] or None


def _names(values: pd.Series) -> str:
    vals = sorted({str(v) for v in values.dropna()})
    return ", ".join(vals[:6]) + (f" and {len(vals) - 6} more" if len(vals) > 6 else "")


# ---- malware protection -------------------------------------------------------------------


@probe("malware_protection")
def malware_protection(case: Case) -> Suggestion:
    """Malicious files carved or alerted on, and whether they were executed."""
    frames = []
    hits = _sql(case, "SELECT * FROM yara_hits") if has_table(case, "yara_hits") else None
    names: set[str] = set()  # file names of malicious files
    hashes: set[str] = set()
    if hits is not None and len(hits):
        rule = next((c for c in ("rule", "rule_name", "signature") if c in hits), None)
        fname = next((c for c in ("filename", "name", "path") if c in hits), None)
        h = pd.DataFrame({"kind": "yara_hit", "detail": hits[rule] if rule else "YARA match",
                          "name": hits[fname] if fname else None,
                          "sha256": hits.get("sha256")})
        if "sha256" in hits:
            hashes |= set(hits["sha256"].dropna().str.lower())
            fl = _sql(case, "SELECT sha256, any_value(filename) AS filename, any_value(orig_h) AS orig_h, "
                            "any_value(resp_h) AS resp_h FROM files WHERE lower(sha256) IN "
                            "(SELECT lower(sha256) FROM yara_hits) GROUP BY sha256")
            if len(fl):
                h = h.merge(fl, on="sha256", how="left")
                h["name"] = h["name"].fillna(h["filename"]) if "filename" in h else h["name"]
                h["host"] = h["orig_h"]
                h = h.drop(columns=["filename", "orig_h", "resp_h"])
        frames.append(h)
    alerts = _sql(case, """
        SELECT 'malware_alert' AS kind, ts, dest_ip AS host, signature AS detail FROM alerts
        WHERE lower(coalesce(category, '')) LIKE '%trojan%' OR regexp_matches(lower(signature),
              'malware|trojan|cnc|c2|backdoor|exe download|executable')""")
    if len(alerts):
        frames.append(alerts)
    downloads = _sql(case, f"""
        SELECT 'executable_download' AS kind, ts, orig_h AS host, filename AS name, sha256,
               mime_type AS detail FROM files
        WHERE mime_type = 'application/x-dosexec'
           OR regexp_matches(lower(coalesce(filename, '')), '{_EXEC_RE}')
        UNION ALL
        SELECT 'executable_download', ts, orig_h, regexp_extract(split_part(uri, '?', 1), '[^/]+$'), NULL,
               host || uri FROM http
        WHERE regexp_matches(lower(split_part(uri, '?', 1)), '{_EXEC_RE}')
          AND status_code BETWEEN 200 AND 299""")
    if len(downloads):
        frames.append(downloads)
    if hits is not None and len(hits):
        names |= {str(n).lower() for n in frames[0]["name"].dropna()}
    ran_malicious = _executions(case, names, hashes)
    dl_names = {str(n).lower() for n in downloads.get("name", pd.Series(dtype=object)).dropna()} - names
    ran_downloaded = _executions(case, dl_names, set())
    executed = pd.concat([f for f in (ran_malicious, ran_downloaded) if len(f)], ignore_index=True) \
        if len(ran_malicious) or len(ran_downloaded) else pd.DataFrame()
    if len(executed):
        frames.append(executed)
    evidence = pd.concat([f for f in frames if len(f)], ignore_index=True) if frames else pd.DataFrame()
    malicious = (hits is not None and len(hits) > 0) or len(alerts) > 0
    if malicious and len(ran_malicious):
        return Suggestion("not_fulfilled", f"Malicious files were found ({_describe(evidence)}) and executed "
                          f"on {_names(ran_malicious['host'])}: protection did not stop them.", evidence)
    if malicious:
        return Suggestion("partly", f"Malicious files were found ({_describe(evidence)}); no execution of "
                          "them is recorded in the case's event logs.", evidence)
    if len(ran_downloaded):
        return Suggestion("partly", f"Executables downloaded over the network ran on "
                          f"{_names(ran_downloaded['host'])} (no malware verdict in the case: "
                          "check the files).", evidence)
    if _count(case, "yara_runs") and _count(case, "files"):
        return Suggestion("fully", f"YARA scanned the files carved into the case ({_count(case, 'files')} "
                          "transfers); none matched.", evidence)
    what = f" {len(downloads)} executable download(s) seen;" if len(downloads) else ""
    return Suggestion(None, f"No malware verdicts in the case (no YARA hits or malware alerts);{what} "
                      "rate from other sources.", evidence)


def _describe(ev: pd.DataFrame) -> str:
    counts = ev["kind"].value_counts()
    return ", ".join(f"{n} {k.replace('_', ' ')}{'s' if n > 1 else ''}" for k, n in counts.items())


def _executions(case: Case, names: set[str], hashes: set[str]) -> pd.DataFrame:
    if not (names or hashes) or not _count(case, "events"):
        return pd.DataFrame()
    conds, params = [], []
    if names:
        conds.append(f"lower(regexp_extract(process, '[^\\\\/]+$')) IN ({', '.join('?' * len(names))})")
        params += sorted(names)
    for h in sorted(hashes)[:50]:
        conds.append("contains(upper(CAST(raw AS VARCHAR)), ?)")
        params.append(h.upper())
    return _sql(case, f"""
        SELECT 'execution' AS kind, ts, host, regexp_extract(process, '[^\\\\/]+$') AS name,
               command_line AS detail FROM events
        WHERE type = 'process_start' AND ({' OR '.join(conds)}) ORDER BY ts""", params)


# ---- logging ------------------------------------------------------------------------------


def logging_coverage(case: Case) -> pd.DataFrame:
    """Internal hosts active on the network, and whether the case has their event logs.

    Host names in logs are matched to addresses through the case's own
    evidence: logon records (source and destination host and address), Sysmon
    network connections and DNS answers.

    Returns:
        One row per internal address that originated sessions (``address``,
        ``names``, ``sessions``, ``has_logs``, ``log_records``, ``first_log``,
        ``last_log``), then log-only hosts whose address the case does not show.
    """
    addrs = _sql(case, "SELECT orig_h AS address, count(*) AS sessions FROM sessions GROUP BY 1")
    if len(addrs):
        addrs = addrs[[_internal(str(a)) for a in addrs["address"]]]
    logs = _sql(case, """
        SELECT host, sum(n) AS n, min(first) AS first, max(last) AS last FROM (
            SELECT host, count(*) AS n, min(ts) AS first, max(ts) AS last FROM events GROUP BY host
            UNION ALL
            SELECT host, count(*), min(ts), max(ts) FROM logons GROUP BY host) GROUP BY host""")
    per_host: dict[str, dict[str, Any]] = {}
    for r in logs.to_dict("records"):
        k = _short(r["host"])
        if k is None:
            continue
        cur = per_host.setdefault(k, {"n": 0, "first": r["first"], "last": r["last"]})
        cur["n"] += int(r["n"])
        cur["first"] = min(x for x in (cur["first"], r["first"]) if not pd.isna(x)) if not (
            pd.isna(cur["first"]) and pd.isna(r["first"])) else cur["first"]
        cur["last"] = max(x for x in (cur["last"], r["last"]) if not pd.isna(x)) if not (
            pd.isna(cur["last"]) and pd.isna(r["last"])) else cur["last"]
    names = _address_names(case)
    rows, matched = [], set()
    for r in addrs.sort_values("address").to_dict("records") if len(addrs) else []:
        a = str(r["address"])
        keys = [k for k in [*sorted(names.get(a, ())), a] if k in per_host]
        matched |= set(keys)
        n = sum(per_host[k]["n"] for k in keys)
        rows.append({"address": a, "names": ", ".join(sorted(names.get(a, ()))) or None,
                     "sessions": int(r["sessions"]), "has_logs": bool(keys), "log_records": n,
                     "first_log": min((per_host[k]["first"] for k in keys), default=None),
                     "last_log": max((per_host[k]["last"] for k in keys), default=None)})
    for k in sorted(set(per_host) - matched):
        rows.append({"address": None, "names": k, "sessions": 0, "has_logs": True,
                     "log_records": per_host[k]["n"], "first_log": per_host[k]["first"],
                     "last_log": per_host[k]["last"]})
    return pd.DataFrame(rows, columns=["address", "names", "sessions", "has_logs", "log_records",
                                       "first_log", "last_log"])


def _address_names(case: Case) -> dict[str, set[str]]:
    """Names of internal addresses, from evidence that ties a name to an address.

    Network logons name the client workstation beside its address, except
    records that name the logging host itself (Windows does that for some
    logon types), which are left out; Sysmon network connections the host
    initiated; NTLM client host names; DNS answers.
    """
    pairs = [
        _sql(case, "SELECT src_ip AS a, src_host AS n, host AS h FROM logons WHERE src_ip IS NOT NULL "
                   "AND src_host IS NOT NULL GROUP BY ALL"),
        _sql(case, """
            SELECT src_ip AS a, host AS n FROM events WHERE type = 'network_connect' AND src_ip IS NOT NULL
              AND lower(coalesce(json_extract_string(raw, '$.Initiated'),
                                 json_extract_string(raw, '$.EventData.Initiated'), 'true')) = 'true'
            GROUP BY ALL"""),
        _sql(case, "SELECT orig_h AS a, hostname AS n FROM ntlm WHERE hostname IS NOT NULL GROUP BY ALL"),
        _sql(case, "SELECT a, query AS n FROM (SELECT query, unnest(answers) AS a FROM dns "
                   "WHERE qtype_name IN ('A', 'AAAA')) GROUP BY ALL"),
    ]
    out: dict[str, set[str]] = {}
    for df in pairs:
        if not len(df):
            continue
        hosts = df["h"] if "h" in df else [None] * len(df)
        for a, n, h in zip(df["a"], df["n"], hosts, strict=True):
            s = _short(n)
            if s and a and _internal(str(a)) and s != str(a) and s != _short(h):
                out.setdefault(str(a), set()).add(s)
    return out


@probe("event_logging")
def event_logging(case: Case) -> Suggestion:
    """Internal hosts with and without event logs in the case."""
    cov = logging_coverage(case)
    active = cov[cov["address"].notna()]
    without = active[~active["has_logs"]]
    unmatched = cov[cov["address"].isna()]
    log_hosts = int(cov["has_logs"].sum())
    if not len(active) and not log_hosts:
        return Suggestion(None, "The case has neither internal network activity nor event logs.", cov)
    if not log_hosts:
        return Suggestion("not_fulfilled", f"No host event logs in the case, though {len(active)} internal "
                          "host(s) were active on the network.", cov)
    note = (f" Logs of {_names(unmatched['names'])} could not be matched to an address; they may be "
            "those hosts." if len(unmatched) and len(without) else "")
    # Hosts whose logs could not be placed may be the addresses without logs: count conservatively.
    missing = max(0, len(without) - len(unmatched))
    if not len(without) or not missing:
        return Suggestion("fully", f"Event logs are in the case for {len(active) - len(without)} of "
                          f"{len(active)} active internal hosts ({log_hosts} hosts log).{note}", cov)
    return Suggestion("partly", f"Event logs for {len(active) - len(without)} of {len(active)} active "
                      f"internal hosts; none for {_names(without['names'].fillna(without['address']))}."
                      f"{note}", cov)


# ---- access control -------------------------------------------------------------------------


@probe("admin_credentials")
def admin_credentials(case: Case) -> Suggestion:
    """Admin shares and explicit credentials used in lateral movement."""
    frames = [
        _sql(case, """
            SELECT 'admin_share' AS kind, ts, host, user, coalesce(src_host, src_ip) AS source,
                   service AS detail FROM logons
            WHERE action = 'share_access'
              AND regexp_matches(upper(coalesce(service, '')), '(^|\\\\)(ADMIN|[A-Z])\\$$')"""),
        _sql(case, """
            SELECT 'admin_share' AS kind, ts, host, user, src_ip AS source, object AS detail FROM events
            WHERE type = 'share_access'
              AND regexp_matches(upper(coalesce(object, '')), '(^|\\\\)(ADMIN|[A-Z])\\$$')"""),
        _sql(case, """
            SELECT 'explicit_credentials' AS kind, ts, host, user, subject_user AS source,
                   coalesce(dst_host, dst_ip) || coalesce(' via ' || process, '') AS detail FROM logons
            WHERE action = 'explicit_credentials'
              AND lower(coalesce(dst_host, dst_ip, '')) NOT IN ('', '-', 'localhost', '127.0.0.1', '::1')"""),
    ]
    frames += [
        _sql(case, """
            SELECT 'admin_share' AS kind, ts, resp_h AS host, NULL AS user, orig_h AS source,
                   path AS detail FROM smb_mapping
            WHERE regexp_matches(upper(coalesce(path, '')), '(^|\\\\)(ADMIN|[A-Z])\\$$')"""),
        _sql(case, """
            SELECT 'service_install' AS kind, ts, host, user, NULL AS source,
                   coalesce(object, '') || ': ' || coalesce(command_line, '') AS detail FROM events
            WHERE type = 'service_install'"""),
    ]
    edges = _count(case, "lateral_edges")
    if edges:
        frames.append(_sql(case, "SELECT 'lateral_edge' AS kind, * FROM lateral_edges"))
    ev = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=["kind", "ts", "host", "user", "source", "detail"])
    shares = int((ev["kind"] == "admin_share").sum())
    explicit = int((ev["kind"] == "explicit_credentials").sum())
    services = int((ev["kind"] == "service_install").sum())
    if shares or edges or (services and explicit):
        accounts = _names(ev.loc[ev["kind"] != "lateral_edge", "user"]) if "user" in ev else ""
        return Suggestion("not_fulfilled", "Privileged access was used to move laterally: "
                          f"{shares} admin-share access(es), {explicit} explicit-credential logon(s), "
                          f"{services} service installation(s), {edges} lateral edge(s)"
                          + (f"; accounts {accounts}." if accounts else "."), ev)
    if explicit or services:
        return Suggestion("partly", f"{explicit} logon(s) with explicit credentials to other hosts and "
                          f"{services} service installation(s); no admin-share access recorded.", ev)
    if _count(case, "logons"):
        return Suggestion("fully", f"{_count(case, 'logons')} logon records; no admin-share access or "
                          "explicit-credential use towards other hosts.", ev)
    return Suggestion(None, "No logon records in the case: access control cannot be checked "
                      "from evidence.", ev)


@probe("network_segregation")
def network_segregation(case: Case) -> Suggestion:
    """Admin-protocol connections (SMB, RPC, RDP, WinRM, SSH) that succeeded between internal hosts."""
    pairs = _sql(case, f"""
        SELECT orig_h, resp_h, resp_p, count(*) AS sessions, min(ts) AS first, max(ts) AS last
        FROM sessions WHERE resp_p IN {_ADMIN_PORTS} AND conn_state IN {_ESTABLISHED}
        GROUP BY ALL ORDER BY first""")
    if len(pairs):
        pairs = pairs[[_internal(str(a)) and _internal(str(b))
                       for a, b in zip(pairs["orig_h"], pairs["resp_h"], strict=True)]]
    if not len(pairs):
        return Suggestion(None, "No admin-protocol sessions between internal hosts in the captures.", pairs)
    sources = pairs["orig_h"].nunique()
    return Suggestion("partly", f"{len(pairs)} internal admin-protocol connection pair(s) from {sources} "
                      f"host(s), ports {_names(pairs['resp_p'])}: segregation did not stop them; check "
                      "which of them the intended segments allow.", pairs)


# ---- monitoring ---------------------------------------------------------------------------


@probe("ids_monitoring")
def ids_monitoring(case: Case) -> Suggestion:
    """IDS alerts in the case: monitoring existed; whether anyone acted is for the analyst."""
    al = _sql(case, """
        SELECT signature, category, severity, count(*) AS alerts, min(ts) AS first, max(ts) AS last
        FROM alerts GROUP BY ALL ORDER BY first""")
    if not len(al):
        return Suggestion(None, "No IDS alerts in the case (no sensor, or it saw nothing).", al)
    return Suggestion("partly", f"An IDS raised {int(al['alerts'].sum())} alert(s) with {len(al)} "
                      f"signature(s), first at {al['first'].min()}; confirm whether they were seen and "
                      "acted on.", al)
