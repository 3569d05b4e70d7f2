"""Breach scope: every host and account the attacker could have reached, and when, and how.

Reachability respects time: from patient zero (hosts and/or accounts) at a
start time, an edge of the lateral-movement graph (:mod:`forensics.lateral`)
is followed only if it happens after its source was itself reached, so a host
touched by a victim *before* the victim fell is not in scope.

Rules, in time order (with ``slack`` seconds for log times truncated to the second):

- An edge is *attacker-driven* when its source host was compromised by then, or
  its account is one of the patient-zero accounts.
- An attacker-driven edge that ran code on its target (``level`` execution:
  PsExec, WMI, WinRM, RDP, SSH, ...) compromises the target and the account used.
- An attacker-driven logon with a compromised account (or with credentials
  passed explicitly from the compromised source, 4648) proves the credentials
  work there: confidence *credentials*. Otherwise, and for failed attempts, it is
  *contact* only.
- A credential dump on a compromised host (comsvcs MiniDump, procdump of lsass,
  mimikatz, a Sysmon 10 read of lsass) compromises every account that logged on
  interactively there before it (types 2, 9, 10, 11).
- Any connection a compromised host opened (TCP SYN or UDP) to an internal host
  after its compromise is *contact* (from ``sessions``).

Each reached node keeps the chain of edges that explains it. Times of one
source can be corrected with ``clock_offsets``; when a logon precedes the
captured session that carried it by more than ``tolerance`` seconds, the result
carries a warning with the offset that would fix it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import _lateral_rules as R
from forensics._lateral_sql import has_rows, jf, log_row_key, query, replace_rows
from forensics.errors import ScopeError
from forensics.hostmap import HostMap, build_host_map, canonical_host, is_internal

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["ScopeError", "ScopeResult", "clock_skew", "credential_dumps", "scope"]

log = logging.getLogger(__name__)
_CONFIDENCE = {"patient_zero": "compromised", "execution": "compromised", "logon": "credentials",
               "contact": "contact", "used": "compromised", "dumped": "compromised"}
_RANK = {"contact": 1, "logon": 2, "execution": 3, "patient_zero": 4}
_LSASS_ACCESS = {"0x1010", "0x1410", "0x1fffff", "0x1f0fff", "0x143a", "0x1438", "0x1418"}
_LSASS_BENIGN = {"msmpeng.exe", "csrss.exe", "wininit.exe", "services.exe", "svchost.exe", "lsm.exe",
                 "wmiprvse.exe", "vmtoolsd.exe", "mrt.exe", "taskmgr.exe", "lsass.exe", "sysmon.exe",
                 "sysmon64.exe", "mssense.exe", "senseir.exe"}


@dataclass
class ScopeResult:
    """The outcome of :func:`scope`.

    Attributes:
        run_id: id of the run (hash of its parameters); rows of the ``scope`` table carry it.
        since: start time (UTC).
        start_hosts: patient-zero host ids.
        start_accounts: patient-zero accounts.
        nodes: one row per reached host or account (the ``scope`` table's columns).
        edges: the lateral edges used by some chain, with their columns.
        warnings: clock-skew and other warnings, in words.
    """

    run_id: str
    since: pd.Timestamp
    start_hosts: list[str]
    start_accounts: list[str]
    nodes: pd.DataFrame
    edges: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def hosts(self, *confidence: str) -> list[str]:
        """Host ids in scope, optionally only those of the given confidences (compromised, ...)."""
        df = self.nodes[self.nodes["kind"] == "host"]
        if confidence:
            df = df[df["confidence"].isin(confidence)]
        return sorted(df["node"])

    def compromised_hosts(self) -> list[str]:
        """Hosts where attacker code ran (patient zero included)."""
        return self.hosts("compromised")

    def compromised_accounts(self) -> list[str]:
        """Accounts the attacker held."""
        return sorted(self.nodes.loc[self.nodes["kind"] == "account", "node"])

    def chain(self, node: str) -> pd.DataFrame:
        """The edges that explain how ``node`` was reached, in order."""
        row = self.nodes[self.nodes["node"] == node]
        if not len(row):
            return self.edges.iloc[0:0]
        ids = list(row["chain"].iloc[0])
        have = set(self.edges["edge_id"])
        return self.edges.set_index("edge_id").loc[[i for i in ids if i in have]].reset_index()


def _true(v: Any) -> bool:
    return False if v is None or pd.isna(v) else bool(v)


def _utc(t: Any) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _resolve_start(case: Case, hm: HostMap, start: Iterable[str], edges: pd.DataFrame
                   ) -> tuple[list[str], list[str]]:
    accounts: set[str] = {a for a in edges["account"].dropna()} if len(edges) else set()
    if has_rows(case, "logons"):
        accounts |= {a for a in map(R.norm_account,
                                    case.sql("SELECT DISTINCT user FROM logons")["user"]) if a}
    in_edges = {h for h in pd.concat([edges["src"], edges["dst"]]).dropna()} if len(edges) else set()
    hosts_out, accts_out = [], []
    for item in start:
        prefix, _, rest = item.partition(":")
        kind, name = (prefix, rest) if prefix in ("host", "account") else ("", item)
        if kind != "account" and (hm.is_known(name) or hm.resolve(name) in in_edges):
            hosts_out.append(hm.resolve(name) or name)
        elif kind != "host" and R.norm_account(name) in accounts:
            accts_out.append(R.norm_account(name) or name)
        else:
            near = hm.suggest(name) + [h for h in sorted(in_edges) if name.upper() in h or h in name.upper()]
            near += [a for a in accounts if name.lower() in a or a in name.lower()]
            import difflib

            near += difflib.get_close_matches(name.lower(), sorted(accounts), n=3, cutoff=0.6)
            near = list(dict.fromkeys(near))[:8]
            raise ScopeError(f"scope start {item!r} is not a host or account of this case"
                             + (f"; near matches: {', '.join(near)}" if near else
                                "; the case knows no similar host or account"), near)
    return hosts_out, accts_out


def credential_dumps(case: Case, hm: HostMap) -> pd.DataFrame:
    """Credential dumps seen in host logs: host, time, what, and the row (``table``/``key`` lineage)."""
    df = query(case, f"""
        SELECT ts, host, event_id, process, command_line, evidence_id, member, record_offset,
               {jf('TargetImage')} AS target, {jf('GrantedAccess')} AS access,
               {jf('SourceImage')} AS source_image
        FROM events WHERE ((event_id = 1 AND provider ILIKE '%sysmon%') OR event_id = 4688)
             AND regexp_matches(coalesce(command_line, '') || ' ' || coalesce(process, ''),
                                '(?i)(comsvcs|procdump|sekurlsa|lsass|nanodump|mimikatz|minidump)')
           OR (event_id = 10 AND provider ILIKE '%sysmon%')""", [], ("events",))
    rows = []
    for r in df.itertuples(index=False):
        if r.event_id == 10:
            lsass = str(r.target or "").lower().endswith("lsass.exe")
            if not (lsass and str(r.access or "").lower() in _LSASS_ACCESS
                    and R.basename(r.source_image) not in _LSASS_BENIGN):
                continue
            what = f"Sysmon 10 {R.basename(r.source_image)} read lsass ({r.access})"
        elif R.CREDENTIAL_DUMP.search(f"{r.command_line or ''} {r.process or ''}"):
            what = f"{r.event_id} {str(r.command_line or r.process)[:120]}"
        else:
            continue
        rows.append({"host": hm.resolve(r.host), "ts": r.ts, "what": what, "key": log_row_key("events", r)})
    return pd.DataFrame(rows, columns=["host", "ts", "what", "key"])


def _interactive_logons(case: Case, hm: HostMap) -> pd.DataFrame:
    df = query(case, """SELECT ts, host, user FROM logons WHERE success AND (
                   (action = 'logon' AND logon_type IN (2, 9, 10, 11)) OR action = 'rdp_session_logon')""",
               ["ts", "host", "user"], ("logons",))
    df["account"] = df["user"].map(R.norm_account)
    df["host"] = df["host"].map(lambda h: hm.resolve(h))
    return df[df["account"].notna()]


def clock_skew(case: Case, *, tolerance: float = 2.0, clock_offsets: Mapping[str, float] | None = None
               ) -> pd.DataFrame:
    """Logons paired with the captured session that carried them (same source address and port).

    Args:
        case: the case.
        tolerance: seconds a logon may precede its session (log times are often
            truncated to the second) before the pair counts as skewed.
        clock_offsets: offsets as given to :func:`scope` (applied to both sides).

    Returns:
        One row per pair: ``host``, ``logon_ts``, ``session_ts``, ``delta``
        (logon minus session, seconds), ``skewed`` (logon earlier by more than
        ``tolerance``), ``uid`` and the logon's ``key``.
    """
    cols = ["host", "logon_ts", "evidence_id", "member", "record_offset", "reader", "s_evidence", "s_reader",
            "session_ts", "uid", "resp_h"]
    df = query(case, """
        SELECT l.host, l.ts AS logon_ts, l.evidence_id, l.member, l.record_offset, l.source AS reader,
               s.evidence_id AS s_evidence, s.source AS s_reader, s.ts AS session_ts, s.uid, s.resp_h
        FROM logons l JOIN sessions s ON s.orig_h = l.src_ip AND s.orig_p = l.src_port
        WHERE l.src_port > 0 AND abs(epoch(s.ts) - epoch(l.ts)) < 86400
          AND CASE WHEN l.action LIKE 'kerberos%' THEN s.resp_p = 88
                   WHEN l.action = 'ssh' THEN s.resp_p = 22
                   WHEN l.action LIKE 'rdp%' THEN s.resp_p = 3389
                   ELSE s.resp_p IN (135, 139, 445, 3389, 5985, 5986, 22, 1433) OR s.resp_p >= 1024 END
        """, cols, ("logons", "sessions"))
    if len(df):  # a source port is reused: keep sessions to the logging host, the nearest in time
        hm = build_host_map(case)
        df = df[[hm.resolve(h) == hm.resolve(r, t) for h, r, t in zip(df["host"], df["resp_h"],
                                                                      df["session_ts"],
                                                                        strict=True)]]
        df = df.assign(_d=(df["logon_ts"] - df["session_ts"]).abs()).sort_values("_d")
        df = df.drop_duplicates(["evidence_id", "member", "record_offset"]).drop(columns="_d")
    if not len(df):
        return df.assign(delta=[], skewed=[], key=[])
    names = dict(case.sql("SELECT evidence_id, name FROM evidence").itertuples(index=False, name=None))
    for k, secs in (clock_offsets or {}).items():
        d = pd.Timedelta(seconds=float(secs))
        lm = (df["evidence_id"] == k) | (df["evidence_id"].map(names) == k) | (df["reader"] == k) | (
            df["host"].map(canonical_host) == canonical_host(k))
        sm = (df["s_evidence"] == k) | (df["s_evidence"].map(names) == k) | (df["s_reader"] == k)
        df.loc[lm, "logon_ts"] = df.loc[lm, "logon_ts"] + d
        df.loc[sm, "session_ts"] = df.loc[sm, "session_ts"] + d
    df["delta"] = (pd.to_datetime(df["logon_ts"], utc=True) - pd.to_datetime(df["session_ts"], utc=True)
                   ).dt.total_seconds()
    df["skewed"] = df["delta"] < -tolerance
    df["key"] = [log_row_key("logons", r) for r in df.itertuples(index=False)]
    return df


def _skew_warnings(skew: pd.DataFrame, tolerance: float) -> list[str]:
    out = []
    for host, g in skew.groupby("host"):
        med = float(g["delta"].median())
        # one reused source port can pair a logon with a later session; a skewed clock moves them all
        if med >= -tolerance:
            continue
        g = g[g["skewed"]]
        out.append(f"{host}: {len(g)} logon(s) precede the captured sessions that carried them by more than "
                   f"{tolerance:g} s (median {-med:.1f} s, worst {-g['delta'].min():.1f} s); its clock looks "
                   f"behind the capture: try clock_offsets={{{str(host)!r}: {round(-med)}}}")
    return out


def scope(case: Case, start: str | Iterable[str], since: str | datetime | None = None, *,
          clock_offsets: Mapping[str, float] | None = None, tolerance: float = 2.0, slack: float = 1.0,
          internal: Iterable[str] | None = None, rebuild: bool = False, contact: bool = True,
          persist: bool = True) -> ScopeResult:
    """Time-respecting breach scope from patient zero.

    Args:
        case: the case.
        start: patient-zero host(s) (name or address) and/or account(s); prefix with
            ``host:`` or ``account:`` when a name could be either.
        since: when patient zero was compromised (ISO string or datetime, UTC when
            naive); default: the first edge's time.
        clock_offsets: seconds to add to a source's times (see
            :func:`forensics.lateral.build_lateral`); the edges are built again
            with the corrected times, and the stored ``lateral_edges`` with them.
        tolerance: seconds a logon may precede its captured session before a
            clock-skew warning is raised.
        slack: seconds an edge may precede its source's compromise and still count
            (log times truncated to the second).
        internal: internal networks (CIDRs) for network contact.
        rebuild: build the lateral edges again first.
        contact: also follow network contact from the capture (sessions).
        persist: write the rows to the ``scope`` table (replacing this run's rows).

    Returns:
        The :class:`ScopeResult`.

    Raises:
        ScopeError: a start host or account is not in the case (the message lists
            near matches).
    """
    from forensics.lateral import lateral_edges

    starts = [start] if isinstance(start, str) else list(start)
    edges = lateral_edges(case, rebuild=rebuild, internal=internal, clock_offsets=clock_offsets)
    hm = build_host_map(case, internal)
    s_hosts, s_accts = _resolve_start(case, hm, starts, edges)
    if since is not None:
        t0 = _utc(since)
    else:
        t0 = _utc(edges["ts"].min()) if len(edges) else pd.Timestamp.now("UTC")
    slk = pd.Timedelta(seconds=slack)
    host_lv: dict[str, dict[str, tuple[pd.Timestamp, str | None, str | None, list[str]]]] = {}
    acct: dict[str, tuple[pd.Timestamp, str, str | None, list[str]]] = {}
    for h in s_hosts:
        host_lv[h] = {"patient_zero": (t0, None, "patient_zero", [])}
    for a in s_accts:
        acct[a] = (t0, "patient_zero", None, [])
    dumps = credential_dumps(case, hm)
    inter = _interactive_logons(case, hm)
    ed = edges.sort_values("ts").to_dict("records")
    dumped: dict[str, str] = {}

    def comp(h: Any, t: pd.Timestamp) -> tuple[pd.Timestamp, list[str]] | None:
        lv = host_lv.get(h, {})
        best = [v for k, v in lv.items() if k in ("patient_zero", "execution") and v[0] <= t + slk]
        if not best:
            return None
        b = min(best, key=lambda v: v[0])
        return b[0], b[3]

    def reach(h: str, level: str, t: pd.Timestamp, via: str | None, tech: str | None,
              chain: list[str]) -> bool:
        cur = host_lv.setdefault(h, {}).get(level)
        if cur is None or t < cur[0]:
            host_lv[h][level] = (t, via, tech, chain)
            return True
        return False

    def own(a: str, t: pd.Timestamp, how: str, via: str | None, chain: list[str]) -> bool:
        if a not in acct or t < acct[a][0]:
            acct[a] = (t, how, via, chain)
            return True
        return False

    changed = True
    while changed:  # a pass in time order; repeat while slack lets a later edge enable an earlier one
        changed = False
        for e in ed:
            t, s, d, a = _utc(e["ts"]), e["src"], e["dst"], e["account"]
            src = comp(s, t) if isinstance(s, str) else None
            a_ok = isinstance(a, str) and a in acct and acct[a][0] <= t + slk
            if src is None and not (isinstance(a, str) and a in s_accts and a_ok):
                continue
            chain = (src[1] if src else list(acct[a][3])) + [e["edge_id"]]
            ok = None if pd.isna(e["success"]) else bool(e["success"])
            level = "contact" if ok is False else e["level"]
            if isinstance(a, str) and ok is not False and (level == "execution" or _true(e["explicit"])):
                changed |= own(a, t, "used", e["edge_id"], chain)
                a_ok = True
            if level == "logon" and not a_ok:
                level = "contact"
            if isinstance(d, str):
                changed |= reach(d, level, t, e["edge_id"], e["technique"], chain)
        for r in dumps.itertuples(index=False):
            c = comp(r.host, _utc(r.ts))
            if c is None:
                continue
            for x in inter[(inter["host"] == r.host) & (inter["ts"] <= r.ts)].itertuples(index=False):
                if own(x.account, _utc(r.ts), "dumped", r.key, c[1]):
                    when = _utc(r.ts).isoformat()
                    dumped[x.account] = f"credentials dumped on {r.host} at {when} ({r.what})"
                    changed = True
    if contact:
        _session_contact(case, hm, host_lv, comp)
    nodes = _nodes(host_lv, acct, edges, starts, t0, dumped)
    used = {i for c in nodes["chain"] for i in c}
    run_id = "S" + hashlib.sha1(json.dumps([sorted(starts), t0.isoformat(),
                                            sorted((clock_offsets or {}).items()),
                                            slack, contact]).encode()).hexdigest()[:12]
    nodes.insert(0, "run_id", run_id)
    nodes["computed_at"] = pd.Timestamp.now("UTC")
    warnings = _skew_warnings(clock_skew(case, tolerance=tolerance, clock_offsets=clock_offsets), tolerance)
    for w in warnings:
        log.warning("clock skew: %s", w)
    if persist and not case.read_only:
        old = case.sql("SELECT * FROM scope WHERE run_id <> ?", [run_id]) if has_rows(case, "scope") else None
        replace_rows(case, {"scope": pd.concat([old, nodes]) if old is not None and len(old) else nodes})
    return ScopeResult(run_id, t0, s_hosts, s_accts, nodes,
                       edges[edges["edge_id"].isin(used)].reset_index(drop=True),
                       warnings)


def _session_contact(case: Case, hm: HostMap, host_lv: dict[str, Any], comp: Any) -> None:
    """Contact for internal hosts that compromised hosts opened connections to after their compromise."""
    if not has_rows(case, "sessions"):
        return
    end = pd.Timestamp("2262-01-01", tz="UTC")
    for h in [h for h in list(host_lv) if comp(h, end) is not None]:
        t, chain = comp(h, end)
        addrs = hm.addresses_of(h)
        if not addrs:
            continue
        marks = ", ".join("?" for _ in addrs)
        df = case.sql(f"""
            SELECT resp_h, min(ts) AS ts, arg_min(uid, ts) AS uid, arg_min(resp_p, ts) AS port,
                   arg_min(proto, ts) AS proto, max(coalesce(resp_pkts, 0)) AS answered
            FROM sessions WHERE orig_h IN ({marks}) AND ts >= ? AND (proto = 'udp' OR history LIKE '%S%')
            GROUP BY resp_h""", [*addrs, t.to_pydatetime()])
        for r in df.itertuples(index=False):
            # an address nothing answered from and nothing else names is not a host (scan of empty space)
            if not is_internal(r.resp_h, hm.internal_nets) or not (r.answered > 0 or hm.is_known(r.resp_h)):
                continue
            d = hm.resolve(r.resp_h, r.ts)
            if not d or d == h:
                continue
            cur = host_lv.setdefault(d, {}).get("contact")
            ts = _utc(r.ts)
            if cur is None or ts < cur[0]:
                host_lv[d]["contact"] = (ts, f"session:{r.uid}", f"network_contact {r.proto}/{r.port}", chain)


def _nodes(host_lv: dict[str, Any], acct: dict[str, Any], edges: pd.DataFrame, starts: list[str],
           t0: pd.Timestamp, dumped: dict[str, str]) -> pd.DataFrame:
    summ = dict(zip(edges["edge_id"], edges["summary"], strict=True)) if len(edges) else {}
    start_txt = f"{', '.join(starts)} since {t0.isoformat()}"
    rows = []
    for h, lv in host_lv.items():
        top = max(lv, key=lambda k: _RANK[k])
        t, via, tech, chain = lv[top]
        if top == "patient_zero":
            reason = "patient zero"
        elif via and via.startswith("session:"):
            reason = f"{tech} from a compromised host (session {via[8:]})"
        else:
            reason = f"{tech}: {str(summ.get(via, ''))[:200]}"
        rows.append({"node": h, "kind": "host", "level": top, "confidence": _CONFIDENCE[top], "reached_at": t,
                     "first_contact": min(v[0] for v in lv.values()), "via_edge": via, "via_technique": tech,
                     "chain": list(chain), "depth": len(chain), "reason": reason, "start": start_txt})
    for a, (t, how, via, chain) in acct.items():
        reason = {"patient_zero": "patient-zero account",
                  "used": f"used by the attacker: {str(summ.get(via, ''))[:160]}",
                  "dumped": dumped.get(a, "credentials dumped on a compromised host")}[how]
        rows.append({"node": a, "kind": "account", "level": how, "confidence": "compromised", "reached_at": t,
                     "first_contact": t, "via_edge": via,
                     "via_technique": None if how == "patient_zero" else how,
                     "chain": list(chain), "depth": len(chain), "reason": re.sub(r"\s+", " ", reason),
                     "start": start_txt})
    cols = ["node", "kind", "level", "confidence", "reached_at", "first_contact", "via_edge", "via_technique",
            "chain", "depth", "reason", "start"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["kind", "reached_at", "node"]).reset_index(drop=True) if len(df) else df
