"""Lateral movement: who reached which host, how, when, with which account, and the rows that prove it.

Build the graph of a case::

    from forensics import lateral
    edges = lateral.build_lateral(case)          # fills lateral_edges, hosts, host_names
    g = lateral.lateral_graph(case)              # networkx MultiDiGraph
    lateral.export_graphml(g, "lateral.graphml") # for Gephi, yEd, Cytoscape
    lateral.export_json(g, "lateral.json")

How edges are made. Every record that bears on movement becomes an
*observation* (:mod:`forensics._lateral_obs`): *anchors* say something ran or
was done on a target (a PsExec-style service install, a child of WmiPrvSE or
wsmprovhost, a 4624 type 10, an sshd login, a write to ADMIN$, an svcctl call on
the wire); *supports* say a host connected or logged on to it (4624 type 3,
4769, inbound Sysmon 3, captured sessions, smb_mapping); *source* records on
the source name the target (4648, ``wmic /node:``, outbound Sysmon 3).
Anchors on one target of one technique family close in time form one edge;
its source is the one named by the anchors, else the host the supports around
it point to (weighted by kind, account match and closeness in time; a logon
and a session with the same source address and port are tied together). The
edge keeps every row that proves it (``rows``), says whether that proof is
from host logs, the capture or both, and starts at the carrying connection's
first packet when the capture has it. Supports no anchor claimed become edges
of their own where they are lateral movement by themselves (network logons,
explicit credentials, service tickets, RDP/SSH/WinRM/MSSQL sessions).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd

from forensics import _lateral_rules as R
from forensics._lateral_obs import collect
from forensics.hostmap import HostMap, build_host_map, canonical_host, is_address

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["EDGE_COLUMNS", "build_lateral", "export_graphml", "export_json", "lateral_edges", "lateral_graph",
           "to_graph"]

EDGE_COLUMNS = ["edge_id", "ts", "ts_end", "src", "dst", "src_addr", "dst_addr", "account", "domain",
                "technique",
                "family", "protocol", "dst_port", "success", "explicit", "level", "proof", "n_rows",
                "summary", "rows"]
_PRIORITY = ["psexec", "service_install", "wmi", "dcom", "winrm", "scheduled_task", "mssql", "webshell",
             "rdp",
             "ssh", "smb_named_pipe", "remote_registry", "smb_copy", "service_control", "printerbug",
             "remote_image_load", "pass_the_hash"]
_WEIGHT = {"network_logon": 3.0, "explicit_credentials": 3.0, "kerberos_service_ticket": 1.0}
_STANDALONE = {"network_logon", "kerberos_service_ticket", "explicit_credentials", "smb_admin_share", "mssql",
               "rdp", "ssh", "winrm", "wmi", "psexec", "service_install", "service_control", "scheduled_task"}
_MAX_ROWS = 200
_HINT_TECHNIQUE = {"wmi": "wmi", "rdp": "rdp", "winrm": "winrm", "service": "service_control", "ssh": "ssh",
                   "scheduled_task": "scheduled_task", "mssql": "mssql", "dcom": "dcom"}


def apply_offsets(obs: pd.DataFrame, offsets: Mapping[str, float] | None,
                  names: Mapping[str, str]) -> pd.DataFrame:
    """Shift observation times by a per-source clock offset (seconds added to that source's times).

    A key matches an evidence id, an evidence file name, a logging host (any
    form of its name) or a reader (``winevent_json``, ``evtx``, ``syslog``, ``pcap``).
    """
    if not offsets or not len(obs):
        return obs
    obs = obs.copy()
    host = obs["log_host"].map(lambda h: canonical_host(h) if isinstance(h, str) else None)
    ev_name = obs["evidence_id"].map(lambda e: names.get(e))
    for key, secs in offsets.items():
        mask = ((obs["evidence_id"] == key) | (ev_name == key) | (obs["reader"] == key)
                | (host == canonical_host(key)))
        delta = pd.Timedelta(seconds=float(secs))
        obs.loc[mask, "ts"] = obs.loc[mask, "ts"] + delta
        obs.loc[mask, "ts_end"] = obs.loc[mask, "ts_end"] + delta
    return obs.sort_values(["ts", "table", "key"], kind="stable").reset_index(drop=True)


def _port_fits(family: str, port: Any, tech: str) -> bool:
    ports = R.FAMILY_PORTS.get(family)
    if ports is None or port is None or pd.isna(port):
        return True
    p = int(port)
    return p in ports or (None in ports and tech == "rpc" and p >= 1024)


def _compatible(row: Any, family: str, accounts: set[str]) -> bool:
    if accounts and isinstance(row.account, str) and row.account not in accounts:
        return False
    fam = R.family_of(row.technique)
    if row.technique in ("smb", "rpc", "rdp", "ssh", "winrm", "mssql") and row.table in ("sessions",
                                                                                         "events"):
        if row.role == "source" and isinstance(row.hint, str) and row.hint != family:
            return _port_fits(family, row.dst_port, row.technique) and row.hint in ("smb", "rpc")
        return _port_fits(family, row.dst_port, row.technique)
    if isinstance(row.hint, str) and row.hint != family:
        return False
    if fam in (family, "logon", "kerberos", "credentials"):
        return True
    return row.technique in ("smb_admin_share", "service_control") and family in (
        "service", "smb_copy", "wmi", "scheduled_task", "remote_registry", "smb", "coercion")


def _clusters(anchors: pd.DataFrame, gap: float) -> list[list[int]]:
    """Anchors on one target of one family, each within ``gap`` seconds of the previous one."""
    out: list[list[int]] = []
    a = anchors.assign(family=anchors["technique"].map(R.family_of), dst_k=anchors["dst"].fillna("?"))
    for _, grp in a.sort_values("ts").groupby(["dst_k", "family"], sort=False):
        cur: list[int] = []
        last = None
        for i, t in zip(grp.index, grp["ts"], strict=True):
            if cur and last is not None and (t - last).total_seconds() > gap:
                out.append(cur)
                cur = []
            cur.append(i)
            last = t
        if cur:
            out.append(cur)
    # Split a cluster whose anchors name different sources (two attackers at once).
    split: list[list[int]] = []
    for c in out:
        srcs = {anchors.at[i, "src"] for i in c if isinstance(anchors.at[i, "src"], str)}
        if len(srcs) <= 1:
            split.append(c)
            continue
        by: dict[str, list[int]] = {s: [] for s in srcs}
        named = [i for i in c if isinstance(anchors.at[i, "src"], str)]
        for i in c:
            s = anchors.at[i, "src"]
            if not isinstance(s, str):
                s = anchors.at[min(named, key=lambda j: abs((anchors.at[j, "ts"] - anchors.at[i, "ts"])
                                                            .total_seconds())), "src"]
            by[s].append(i)
        split.extend(by.values())
    return split


def _edge(rows: pd.DataFrame, technique: str, src: str | None, dst: str | None) -> dict[str, Any]:
    """One edge from the rows that prove it (anchors first)."""
    family, proto, port, level = R.technique_info(technique)
    ts = _start(rows)
    anchor_levels = [R.LEVELS.get(x, 1) for x in rows.loc[rows["role"] == "anchor", "level"]]
    lv = max(anchor_levels or [R.LEVELS.get(x, 1) for x in rows["level"]] or [R.LEVELS[level]])
    if ((rows["technique"] == "network_logon") & (rows["success"] == True)).any():  # noqa: E712
        lv = max(lv, R.LEVELS["logon"])
    succ = rows["success"].dropna()
    success = True if (succ == True).any() else (False if len(succ) else None)  # noqa: E712
    if success is False:
        lv = min(lv, R.LEVELS["logon"])
    acct, domain = None, None
    for role in ("anchor", "support", "source"):
        sub = rows[(rows["role"] == role) & rows["account"].notna()]
        if role == "anchor":
            sub = sub[sub["success"] != False]  # noqa: E712 (failed sshd attempts name other accounts)
        if len(sub):
            acct = Counter(sub["account"]).most_common(1)[0][0]
            domain = next((d for d in sub.loc[sub["account"] == acct, "domain"] if isinstance(d, str)), None)
            break
    ports = [int(p) for p, t in zip(rows["dst_port"], rows["technique"], strict=True)
             if pd.notna(p) and _port_fits(family, p, t)]
    dst_port = ports[0] if ports else port
    if family == "service" and dst_port is not None and dst_port != 445 and dst_port != 139:
        proto = "dce_rpc"
    src_addr = next((s for s in rows["src_raw"] if isinstance(s, str) and is_address(s)), None)
    dst_addr = next((d for d, side in zip(rows["dst_raw"], rows["side"], strict=True)
                     if side == "capture" and isinstance(d, str) and is_address(d)), None)
    sides = set(rows["side"])
    keys = list(dict.fromkeys(rows["key"]))
    ident = json.dumps([technique, src, dst, acct, ts.isoformat(), sorted(keys)[:20]], default=str)
    details = list(dict.fromkeys(d for d in rows["detail"] if isinstance(d, str)))
    return {
        "edge_id": "L" + hashlib.sha1(ident.encode()).hexdigest()[:16], "ts": ts,
            "ts_end": rows["ts_end"].max(),
        "src": src, "dst": dst, "src_addr": src_addr, "dst_addr": dst_addr, "account": acct, "domain": domain,
        "technique": technique, "family": family, "protocol": proto, "dst_port": dst_port, "success": success,
        "explicit": bool(rows["technique"].isin(["explicit_credentials", "pass_the_hash"]).any()),
        "level": {v: k for k, v in R.LEVELS.items()}[lv],
        "proof": "both" if len(sides) == 2 else next(iter(sides)), "n_rows": len(keys),
        "summary": "; ".join(details[:8]) + (f"; (+{len(details) - 8} more)" if len(details) > 8 else ""),
        "rows": "[" + ",".join(keys[:_MAX_ROWS]) + "]",
    }


def _fuse(obs: pd.DataFrame, window: float, session_window: float, anchor_gap: float,
          merge_gap: float) -> pd.DataFrame:
    """Edges from resolved observations (columns ``src``/``dst`` filled)."""
    parts: list[list[Any]] = []
    used: set[int] = set()
    anchors = obs[(obs["role"] == "anchor") & (obs["dst"].notna() | obs["src"].notna())]
    others = obs[obs["role"] != "anchor"]
    by_dst = {d: g for d, g in others.groupby("dst")}
    for cl in _clusters(anchors, anchor_gap):
        a = anchors.loc[cl]
        dst = a["dst"].iloc[0] if a["dst"].notna().any() else None
        fam = R.family_of(a["technique"].iloc[0]) or "?"
        t0, t1 = a["ts"].min(), a["ts"].max()
        accts = {x for x in a.loc[a["success"] != False, "account"] if isinstance(x, str)}  # noqa: E712
        cand = by_dst.get(dst, others.iloc[0:0]) if dst is not None else others.iloc[0:0]
        lo, hi = t0 - pd.Timedelta(seconds=window), t1 + pd.Timedelta(seconds=min(window, 10.0))
        slo, shi = t0 - pd.Timedelta(seconds=session_window), t1 + pd.Timedelta(seconds=session_window)
        near = cand[(cand["ts"] >= lo) & (cand["ts"] <= hi)]
        ok = [r for r in near.itertuples() if r.side == "host_log" and _compatible(r, fam, accts)]
        ok_links = {r.link for r in ok if isinstance(r.link, str)} | {x for x in a["link"] if isinstance(x,
                                                                                                         str)}
        bad_links = {r.link for r in near.itertuples() if r.side == "host_log" and isinstance(r.link, str)
                     and r.table == "logons" and not _compatible(r, fam, accts)} - ok_links
        cap = cand[(cand["side"] == "capture") & (cand["ts_end"] >= lo) & (cand["ts"] <= hi)]
        for r in cap.itertuples():
            linked = r.link in ok_links
            close = r.ts_end >= slo and r.ts <= shi
            if r.link not in bad_links and (linked or close) and _compatible(r, fam, accts):
                ok.append(r)
        srcs = [s for s in a["src"] if isinstance(s, str)]
        src: str | None
        if srcs:
            src = Counter(srcs).most_common(1)[0][0]
        else:
            score: Counter[str] = Counter()
            for r in ok:
                if isinstance(r.src, str):
                    w = _WEIGHT.get(r.technique, 2.0) * (1.5 if r.link in ok_links else 1.0)
                    w *= 2.0 if isinstance(r.account, str) and r.account in accts else 1.0
                    score[r.src] += w / (1.0 + abs((r.ts - t0).total_seconds()) / 30.0)
            src = score.most_common(1)[0][0] if score else None
        if a["requires_src"].any() and src is None:
            continue
        att = [r.Index for r in ok if src is not None and r.src == src]
        used.update(att)
        tech = min(a["technique"], key=lambda t: _PRIORITY.index(t) if t in _PRIORITY else 99)
        if tech == "pass_the_hash":
            src, dst = a["src"].iloc[0], None
        parts.append([pd.concat([a, obs.loc[att]]), tech, src, dst])
    singles = _standalone(obs[~obs.index.isin(used) & (obs["role"] != "anchor")], obs, merge_gap)
    edges = [_edge(*p) for p in parts + _merge(parts, singles, merge_gap)]
    out = pd.DataFrame(edges, columns=EDGE_COLUMNS)
    return out.sort_values(["ts", "edge_id"]).reset_index(drop=True) if len(out) else out


def _start(rows: pd.DataFrame) -> pd.Timestamp:
    """When an edge starts: the carrying connection's first packet when the capture has it.

    Host logs often keep whole seconds, so a captured connection that starts up
    to 2 s after the first log record (or any time in the minute before it) is
    the more precise start; later captured rows (a session's later requests)
    do not move the start.
    """
    host = rows.loc[rows["side"] == "host_log", "ts"]
    cap = rows.loc[rows["side"] == "capture", "ts"]
    if not len(host):
        return cap.min()
    first = host.min()
    near = cap[(cap >= first - pd.Timedelta(seconds=60)) & (cap <= first + pd.Timedelta(seconds=2))]
    return near.min() if len(near) else min(first, cap.min()) if len(cap) else first


def _merge(parts: list[list[Any]], singles: list[list[Any]], merge_gap: float) -> list[list[Any]]:
    """Fold standalone records into an anchored edge of the same hosts, family and account nearby.

    (A PowerShell remoting session's later WS-Management requests belong to the
    edge of its wsmprovhost start.) Returns the records that stay edges of their own.
    """
    gap = pd.Timedelta(seconds=merge_gap)
    rest = []
    for rows, tech, src, dst in singles:
        accts = set(rows["account"].dropna())
        for p in parts:
            prow, ptech, psrc, pdst = p
            if src is None or (psrc, pdst) != (src, dst) or R.family_of(ptech) != R.family_of(tech):
                continue
            pacc = set(prow["account"].dropna())
            if accts and pacc and not accts & pacc:
                continue
            if rows["ts"].min() <= prow["ts_end"].max() + gap and rows["ts"].max() >= prow["ts"].min() - gap:
                p[0] = pd.concat([prow, rows])
                break
        else:
            rest.append([rows, tech, src, dst])
    return rest


def _standalone(rest: pd.DataFrame, obs: pd.DataFrame, merge_gap: float) -> list[list[Any]]:
    """Edges (rows, technique, source, target) from supports and source records no anchor claimed."""
    keep = rest[rest["src"].notna() & rest["dst"].notna() & (rest["src"] != rest["dst"])
                & rest["technique"].isin(_STANDALONE)].copy()
    keep["group"] = keep["technique"]
    # A 4648 on the source and the logon it produced on the target are one edge.
    logons = keep[keep["technique"] == "network_logon"]
    for i, r in keep[keep["technique"] == "explicit_credentials"].iterrows():
        same = (logons["src"] == r["src"]) & (logons["dst"] == r["dst"]) & (logons["account"] == r["account"])
        m = logons[same & ((logons["ts"] - r["ts"]).abs() <= pd.Timedelta(seconds=10))]
        if len(m):
            keep.at[i, "group"] = "network_logon"
            keep.at[i, "success"] = m["success"].iloc[0]
        elif isinstance(r["hint"], str) and r["hint"] in _HINT_TECHNIQUE:
            keep.at[i, "group"] = _HINT_TECHNIQUE[r["hint"]]
    sessions = obs[obs["table"] == "sessions"]
    by_link = {k: g for k, g in sessions.groupby("link")}
    edges = []
    key_cols = ["src", "dst", "group", "account", "success"]
    k = keep.assign(**{c: keep[c].astype(object).where(keep[c].notna(), "\0")
                       for c in ("account", "success")})
    for _, grp in k.groupby(key_cols, sort=False):
        grp = grp.sort_values("ts")
        starts = (grp["ts"].diff().dt.total_seconds().fillna(0) > merge_gap).cumsum()
        for _, run in grp.groupby(starts):
            rows = obs.loc[run.index]
            links = [x for x in rows["link"] if isinstance(x, str)]
            extra = [g for lk in links if lk in by_link for g in [by_link[lk]]]
            if extra and rows["side"].eq("host_log").all():
                near = pd.concat(extra)
                near = near[(near["ts"] <= rows["ts"].max() + pd.Timedelta(seconds=600))
                            & (near["ts_end"] >= rows["ts"].min() - pd.Timedelta(seconds=600))]
                rows = pd.concat([rows, near])
            tech = run["group"].iloc[0]
            hints = [h for h in rows["hint"] if isinstance(h, str) and h in _HINT_TECHNIQUE]
            # the source says how (WMIC, mstsc) the credentials were used
            if hints and tech in ("network_logon", "explicit_credentials"):
                tech = _HINT_TECHNIQUE[Counter(hints).most_common(1)[0][0]]
            edges.append([rows, tech, run["src"].iloc[0], run["dst"].iloc[0]])
    return edges


def build_lateral(case: Case, *, internal: Iterable[str] | None = None,
                  clock_offsets: Mapping[str, float] | None = None, window: float = 60.0,
                  session_window: float = 10.0, anchor_gap: float = 60.0, merge_gap: float = 900.0,
                  persist: bool = True) -> pd.DataFrame:
    """Build the lateral-movement edges of a case (and the host identity tables).

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193); only
            sessions between internal addresses are candidate lateral movement.
        clock_offsets: seconds to add to the times of a source, keyed by evidence
            id, evidence file name, logging host or reader (``{"WS04": -3600}``).
        window: seconds before an anchor in which logons and source records are
            looked for (and ``min(window, 10)`` after).
        session_window: seconds around an anchor a captured session must overlap
            when no logon ties it to the anchor by source address and port.
        anchor_gap: anchors on one target of one family closer than this are one edge.
        merge_gap: standalone records of the same kind between the same hosts and
            account closer than this are one edge.
        persist: write ``lateral_edges``, ``hosts`` and ``host_names`` (skipped for
            a read-only case).

    Returns:
        The edges, one row each (columns :data:`EDGE_COLUMNS`), in time order.
    """
    hm = build_host_map(case, internal)
    obs = collect(case, hm.internal_nets)
    names = dict(case.sql("SELECT evidence_id, name FROM evidence").itertuples(index=False, name=None))
    obs = apply_offsets(obs, clock_offsets, names)
    obs["src"] = [hm.resolve(v, t) for v, t in zip(obs["src_raw"], obs["ts"], strict=True)]
    obs["dst"] = [hm.resolve(v, t) for v, t in zip(obs["dst_raw"], obs["ts"], strict=True)]
    obs = obs[~(obs["src"].notna() & (obs["src"] == obs["dst"]))]
    edges = _fuse(obs, window, session_window, anchor_gap, merge_gap) if len(obs) else pd.DataFrame(
        columns=EDGE_COLUMNS)
    if persist and not case.read_only:
        _persist(case, edges, hm)
    return edges


def _persist(case: Case, edges: pd.DataFrame, hm: HostMap) -> None:
    from forensics._lateral_sql import inventory_bindings, replace_rows

    inv = set()
    for r in inventory_bindings(case).itertuples():
        h = hm.resolve(r.host) or hm.resolve(r.address)
        if h:
            inv.add(h)
    extra = {h for h in pd.concat([edges["src"], edges["dst"]]).dropna()} if len(edges) else set()
    replace_rows(case, {"lateral_edges": edges, "host_names": hm.host_names_frame(),
                        "hosts": hm.hosts_frame(extra, inv)})


def lateral_edges(case: Case, *, rebuild: bool = False, internal: Iterable[str] | None = None,
                  clock_offsets: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The persisted edges (built first when the table is empty, or when asked to).

    Args:
        case: the case.
        rebuild: build again even when edges exist.
        internal: internal networks (CIDRs); given, the edges are built again with them.
        clock_offsets: per-source clock offsets (see :func:`build_lateral`); given, the
            edges are built again with them (and stored so).
    """
    if rebuild or internal or clock_offsets:
        return build_lateral(case, internal=internal, clock_offsets=clock_offsets)
    df = case.sql("SELECT * FROM lateral_edges ORDER BY ts, edge_id")
    if not len(df) and not case.read_only:
        return build_lateral(case)
    return df


def to_graph(edges: pd.DataFrame, hosts: pd.DataFrame | None = None) -> nx.MultiDiGraph:
    """A MultiDiGraph of hosts and accounts from edges.

    Host nodes carry ``kind="host"``, ``names``, ``addresses``; an edge's missing
    source or target is the node ``"?"`` (``kind="unknown"``). Each lateral edge
    is keyed by its ``edge_id`` and carries its columns (times as ISO strings,
    ``rows`` as JSON text). Each account used is a node ``account:<name>``
    (``kind="account"``) with an ``account_use`` edge to the target host.
    """
    g = nx.MultiDiGraph(name="breachbook lateral movement")
    if hosts is not None:
        for h in hosts.itertuples(index=False):
            g.add_node(h.host_id, kind="host", names="|".join(h.names), addresses="|".join(h.addresses),
                       internal=bool(h.internal), in_inventory=bool(h.in_inventory))
    for e in edges.to_dict("records"):
        s, d = e["src"] if isinstance(e["src"], str) else "?", e["dst"] if isinstance(e["dst"], str) else "?"
        for n in (s, d):
            if n not in g:
                g.add_node(n, kind="unknown" if n == "?" else "host", names="" if is_address(n) else n,
                           addresses=n if is_address(n) else "")
        attrs = {k: _scalar(v) for k, v in e.items() if k not in ("src", "dst")}
        g.add_edge(s, d, key=e["edge_id"], kind="lateral", **attrs)
        if isinstance(e["account"], str):
            an = f"account:{e['account']}"
            if an not in g:
                g.add_node(an, kind="account", names=e["account"], addresses="")
            g.add_edge(an, d, key=f"{e['edge_id']}/account", kind="account_use", edge_id=e["edge_id"],
                       ts=_scalar(e["ts"]), technique=e["technique"], success=_scalar(e["success"]))
    return g


def _scalar(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.isoformat()
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def lateral_graph(case: Case, *, rebuild: bool = False, internal: Iterable[str] | None = None,
                  clock_offsets: Mapping[str, float] | None = None) -> nx.MultiDiGraph:
    """The lateral-movement graph of a case (see :func:`to_graph`).

    Args:
        case: the case.
        rebuild: build the edges again first.
        internal: internal networks (CIDRs), as for :func:`lateral_edges`.
        clock_offsets: per-source clock offsets, as for :func:`lateral_edges`.
    """
    edges = lateral_edges(case, rebuild=rebuild, internal=internal, clock_offsets=clock_offsets)
    hosts = case.sql("SELECT * FROM hosts ORDER BY host_id")
    return to_graph(edges, hosts)


def export_graphml(g: nx.MultiDiGraph, path: str | Path) -> Path:
    """Write the graph as GraphML (missing attributes are left out, as GraphML requires)."""
    h = nx.MultiDiGraph(name=g.graph.get("name", ""))
    for n, a in g.nodes(data=True):
        h.add_node(n, **{k: v for k, v in a.items() if v is not None})
    for s, d, k, a in g.edges(keys=True, data=True):
        h.add_edge(s, d, key=k, **{k2: v for k2, v in a.items() if v is not None})
    p = Path(path)
    nx.write_graphml(h, p)
    return p


def export_json(g: nx.MultiDiGraph, path: str | Path) -> Path:
    """Write the graph as node-link JSON (``nodes``, ``links``), as d3 and networkx read it."""
    p = Path(path)
    data = nx.node_link_data(g, edges="links")
    p.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    return p
