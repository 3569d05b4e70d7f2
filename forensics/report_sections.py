"""Breach report sections: timeline, lateral graph, scope, exfiltration, files with hits, risk register.

Pure functions over a case that return DataFrames, matplotlib figures or
escaped HTML (:class:`Html`). The report notebook calls them one per cell, and
the widgets (``widgets.timeline``, ``widgets.graph``, ``widgets.scope``) draw
from the same functions, so the picture in the lab is the picture in the report.
They only read: tables that are empty (nothing carved, no scope run yet) give
an empty frame or a figure that says so. Text from evidence reaches HTML only
through pandas' escaping writer or :func:`html.escape`; figures draw it with
mathtext off, so a ``$`` in a host name is a dollar sign.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._timeline import LANES, session_counts, timeline_events
from forensics._timeline import utc as _ts
from forensics._timeline import window as _window

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from forensics.case import Case
    from forensics.scope import ScopeResult

__all__ = [
    "CONFIDENCE_COLOURS",
    "LANES",
    "Html",
    "as_time",
    "evidence_rows",
    "exfil_summary",
    "files_with_hits",
    "graph_layout",
    "headline",
    "headline_html",
    "ioc_hits",
    "lateral_edges",
    "lateral_figure",
    "risk_table",
    "scope_accounts",
    "scope_for",
    "scope_hosts",
    "scope_nodes",
    "scope_path",
    "scope_run_id",
    "session_counts",
    "timeline_events",
    "timeline_figure",
    "yara_hits",
]

CONFIDENCE_COLOURS = {"compromised": "#d62728", "credentials": "#ff7f0e", "contact": "#e6c229",
                      None: "#9e9e9e"}
_NO_MATH: Any = {"text.parse_math": False}  # evidence text is never mathtext


class Html(str):
    """Already-escaped HTML that notebooks display as HTML (and str() gives back)."""

    def _repr_html_(self) -> str:
        return str(self)


# ---- timeline -----------------------------------------------------------------------------


def timeline_figure(source: Case | pd.DataFrame, sessions: pd.DataFrame | None = None, *,
                    highlight: tuple[Any, Any] | None = None, title: str = "Breach timeline (UTC)") -> Figure:
    """The timeline: session counts and one lane per kind of event, with an optional shaded range.

    Args:
        source: a case, or events from :func:`timeline_events`.
        sessions: session counts from :func:`session_counts` (taken from the case when
            ``source`` is one).
        highlight: a ``(start, end)`` range to shade (the brush of the Timeline widget).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    if not isinstance(source, pd.DataFrame):
        events, sessions = timeline_events(source), session_counts(source)
    else:
        events = source
    with plt.rc_context(_NO_MATH):
        fig, ax = plt.subplots(figsize=(11, 3.6))
        ys = {lane: len(LANES) - 1 - i for i, lane in enumerate(LANES)}
        if sessions is not None and len(sessions):
            # Square-root heights: one scan burst must not flatten every other bin.
            height = (sessions["sessions"] / max(float(sessions["sessions"].max()), 1.0)) ** 0.5 * 0.8
            width = (sessions["ts_end"] - sessions["ts"]).min() if "ts_end" in sessions else (
                sessions["ts"].diff().min() if len(sessions) > 1 else pd.Timedelta(seconds=1))
            ax.bar(sessions["ts"], height, width=width, bottom=ys["sessions"] - 0.4, color="#7f9fbf",
                   align="edge", linewidth=0)
        colours = plt.get_cmap("tab10")
        for i, lane in enumerate(LANES[1:]):
            ev = events[events["lane"] == lane] if len(events) else events
            if len(ev):
                ax.scatter(ev["ts"], [ys[lane]] * len(ev), marker="|", s=160, color=colours(i),
                           linewidths=1.5)
        ax.set_yticks(list(ys.values()), list(ys.keys()))
        ax.set_ylim(-0.7, len(LANES) - 0.3)
        if not len(events) and (sessions is None or not len(sessions)):
            ax.text(0.5, 0.5, "nothing in the case yet", transform=ax.transAxes, ha="center", va="center")
        if highlight is not None and _ts(highlight[0]) is not None and _ts(highlight[1]) is not None:
            ax.axvspan(_ts(highlight[0]), _ts(highlight[1]),  # type: ignore[arg-type]  # datetimes are fine
                       color="#ffd54f", alpha=0.3, linewidth=0)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(title)
        fig.autofmt_xdate()
        fig.tight_layout()
    plt.close(fig)  # shown once by the notebook (or saved by the widget), not by pyplot too
    return fig


# ---- lateral movement and scope -------------------------------------------------------------


def lateral_edges(case: Case, since: Any = None, until: Any = None) -> pd.DataFrame:
    """The persisted lateral-movement edges in time order (empty until they are built)."""
    w, p = _window("ts", since, until)
    return case.sql(f"SELECT * FROM lateral_edges WHERE true{w} ORDER BY ts, edge_id", p)


def scope_run_id(case: Case) -> str | None:
    """The scope run to report: the one the risk register was built from, else the largest run."""
    rr = case.sql("SELECT DISTINCT scope_run FROM risk_register WHERE scope_run IS NOT NULL ORDER BY 1")
    if len(rr) == 1:
        return str(rr["scope_run"].iloc[0])
    runs = case.sql("SELECT run_id, count(*) AS n FROM scope GROUP BY run_id ORDER BY n DESC, run_id")
    return str(runs["run_id"].iloc[0]) if len(runs) else None


def scope_for(case: Case, patient_zero: str | Iterable[str] = "",
              since: Any = None) -> ScopeResult | str | None:
    """The scope to show: run from patient zero when given, else the case's reported run.

    Args:
        case: the case; the run is persisted when it is open for writing
            (see :func:`forensics.scope.scope`).
        patient_zero: host(s) or account(s) where the breach began; empty strings are ignored.
        since: when patient zero was compromised (default: the first movement).

    Returns:
        A ScopeResult for a new run, the ``run_id`` of the reported run
        (:func:`scope_run_id`), or None when the case has no scope run.
    """
    from forensics.scope import scope

    starts = [patient_zero] if isinstance(patient_zero, str) else list(patient_zero)
    starts = [s.strip() for s in starts if s and s.strip()]
    if not starts:
        return scope_run_id(case)
    s = _ts(since)
    return scope(case, starts, s.to_pydatetime() if s is not None else None, persist=not case.read_only)


def scope_nodes(case: Case, scope: ScopeResult | str | pd.DataFrame | None = None) -> pd.DataFrame:
    """Hosts and accounts in scope: from a ScopeResult, a run id, a frame, or the reported run."""
    if isinstance(scope, pd.DataFrame):
        return scope
    if scope is not None and not isinstance(scope, str):
        return scope.nodes
    run = scope or scope_run_id(case)
    if run is None:
        return case.sql("SELECT * FROM scope WHERE false")
    return case.sql("SELECT * FROM scope WHERE run_id = ? ORDER BY kind, reached_at, node", [run])


def scope_path(nodes: pd.DataFrame, target: str | None = None) -> set[str]:
    """Edge ids on the chains from patient zero: to ``target``, or to every compromised node."""
    if nodes is None or not len(nodes):
        return set()
    rows = nodes[nodes["node"] == target] if target else nodes[nodes["confidence"] == "compromised"]
    out: set[str] = set()
    for chain in rows["chain"]:
        if chain is not None and not isinstance(chain, float):
            out.update(str(e) for e in chain)
    return out


def graph_layout(edges: pd.DataFrame, nodes: pd.DataFrame | None = None) -> dict[str, tuple[float, float]]:
    """Fixed node positions, left to right as the attack unfolds (stable while the graph grows).

    Columns are the hop count from patient zero (the scope's depth; for hosts out
    of scope, the hop count from the first source); within a column nodes are
    ordered by when they first appear.
    """
    import networkx as nx

    first: dict[str, pd.Timestamp] = {}
    g = nx.Graph()
    for e in edges.sort_values("ts").itertuples(index=False):
        s, d = _node(e.src, e.src_addr), _node(e.dst, e.dst_addr)
        g.add_edge(s, d)
        for n in (s, d):
            first.setdefault(n, e.ts)
    depth: dict[str, int] = {}
    if nodes is not None and len(nodes):
        for r in nodes[nodes["kind"] == "host"].itertuples(index=False):
            depth[r.node] = int(r.depth) if not pd.isna(r.depth) else 0
            first.setdefault(r.node, r.reached_at)
            g.add_node(r.node)
    roots = [n for n in depth if depth[n] == 0] or list(first)[:1]
    hops = nx.multi_source_dijkstra_path_length(g, [r for r in roots if r in g]) if roots else {}
    cols: dict[int, list[str]] = {}
    far = max([*depth.values(), *hops.values(), 0]) + 1
    for n in sorted(g.nodes, key=lambda n: (_sort_ts(first.get(n)), n)):
        cols.setdefault(depth.get(n, int(hops.get(n, far))), []).append(n)
    pos = {}
    for x, members in cols.items():
        for i, n in enumerate(members):
            # Alternate nodes of a column left and right so edges inside a column stay visible.
            wobble = 0.35 * (1 if i % 2 else -1) if len(members) > 2 else 0.0
            pos[n] = (2.0 * x + wobble, -1.3 * (i - (len(members) - 1) / 2))
    return pos


def _sort_ts(t: Any) -> float:
    v = _ts(t) if t is not None and not (isinstance(t, float)) else None
    return v.value if v is not None else float("inf")


def _node(name: Any, addr: Any) -> str:
    for v in (name, addr):
        if isinstance(v, str) and v:
            return v
    return "?"


def lateral_figure(source: Case | pd.DataFrame, nodes: ScopeResult | str | pd.DataFrame | None = None, *,
                   until: Any = None,
                   since: Any = None, highlight: set[str] | None = None, selected: str | None = None,
                   layout: dict[str, tuple[float, float]] | None = None,
                   title: str = "Lateral movement") -> Figure:
    """The lateral-movement graph as a matplotlib figure, grown up to ``until``.

    Args:
        source: a case, or the edges (:func:`lateral_edges`).
        nodes: the scope (anything :func:`scope_nodes` takes; with a case, None is the
            reported run): colours hosts by confidence and marks patient zero.
        until: draw edges up to this time (the graph as it stood then).
        since: leave out edges before this time.
        highlight: edge ids to draw as the scope path (default: every chain to a compromised node).
        selected: a node or an edge id to outline.
        layout: node positions (default :func:`graph_layout` of all edges, so growth is stable).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    scope_df: pd.DataFrame | None
    if not isinstance(source, pd.DataFrame):
        edges = lateral_edges(source)
        scope_df = scope_nodes(source, nodes)
    else:
        edges = source
        scope_df = nodes if isinstance(nodes, pd.DataFrame) else (
            None if nodes is None or isinstance(nodes, str) else nodes.nodes)
    pos = layout or graph_layout(edges, scope_df)
    shown = edges
    if until is not None and len(shown):
        shown = shown[shown["ts"] <= _ts(until)]
    if since is not None and len(shown):
        shown = shown[shown["ts"] >= _ts(since)]
    path = scope_path(scope_df) if highlight is None and scope_df is not None else (highlight or set())
    conf: dict[str, Any] = {}
    pz: set[str] = set()
    if scope_df is not None and len(scope_df):
        for r in scope_df[scope_df["kind"] == "host"].itertuples(index=False):
            reached = _ts(r.reached_at)
            if until is None or reached is None or reached <= _ts(until):
                conf[r.node] = r.confidence
            if r.level == "patient_zero":
                pz.add(r.node)
    with plt.rc_context(_NO_MATH):
        fig, ax = plt.subplots(figsize=(10, 5.5))
        pairs: dict[tuple[str, str], list[Any]] = {}
        for e in shown.itertuples(index=False):
            pairs.setdefault((_node(e.src, e.src_addr), _node(e.dst, e.dst_addr)), []).append(e)
        for (s, d), es in sorted(pairs.items()):
            on_path = any(e.edge_id in path for e in es)
            sel = selected is not None and any(e.edge_id == selected for e in es)
            ax.annotate("", xy=pos.get(d, (0, 0)), xytext=pos.get(s, (0, 0)),
                        arrowprops={"arrowstyle": "-|>", "lw": 3.2 if on_path or sel else 1.0,
                                    "color": "#1a4fa0" if sel else ("#d62728" if on_path else "#8a8a8a"),
                                    "shrinkA": 16, "shrinkB": 16, "connectionstyle": "arc3,rad=0.12"})
            techs = sorted({str(e.technique) for e in es})
            (sx, sy), (dx, dy) = pos.get(s, (0, 0)), pos.get(d, (0, 0))
            at = 0.35 if (d, s) in pairs else 0.5  # a pair both ways: each label nearer its source
            ax.text(sx + at * (dx - sx), sy + at * (dy - sy),
                    ", ".join(techs)[:36] + (f" ×{len(es)}" if len(es) > 1 else ""), fontsize=7,
                    ha="center", va="center", color="#333", zorder=2,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "#fff", "ec": "none", "alpha": 0.8})
        present = {n for p in pairs for n in p} | pz
        for n in sorted(present):
            x, y = pos.get(n, (0.0, 0.0))
            ax.scatter([x], [y], s=900, color=CONFIDENCE_COLOURS.get(conf.get(n), "#9e9e9e"), zorder=3,
                       edgecolors="#1a4fa0" if n == selected else ("#000" if n in pz else "#fff"),
                       linewidths=3 if n in pz or n == selected else 1)
            ax.text(x, y - 0.3, n[:24] + ("\n(patient zero)" if n in pz else ""), ha="center", va="top",
                    fontsize=8, fontweight="bold", zorder=4)
        if pos:
            xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
            ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
            ax.set_ylim(min(ys) - 1.0, max(ys) + 0.6)
        if not len(shown):
            ax.text(0.5, 0.5, "no lateral movement to show" if pos else "no lateral movement in the case",
                    transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        stamp = f" up to {_ts(until):%Y-%m-%d %H:%M:%S} UTC" if until is not None else ""
        ax.set_title(title + stamp)
        fig.tight_layout()
    plt.close(fig)
    return fig


def scope_hosts(case: Case, scope: ScopeResult | str | pd.DataFrame | None = None,
                until: Any = None) -> pd.DataFrame:
    """Hosts in scope, most serious first: level, confidence, when and how they were reached."""
    n = scope_nodes(case, scope)
    n = n[n["kind"] == "host"] if len(n) else n
    if until is not None and len(n):
        n = n[pd.to_datetime(n["reached_at"], utc=True) <= _ts(until)]
    order = {"compromised": 0, "credentials": 1, "contact": 2}
    cols = ["node", "level", "confidence", "reached_at", "via_technique", "depth", "reason"]
    if not len(n):
        return pd.DataFrame(columns=cols).rename(columns={"node": "host"})
    n = n.assign(_o=n["confidence"].map(order)).sort_values(["_o", "reached_at", "node"])
    return n[cols].rename(columns={"node": "host"}).reset_index(drop=True)


def scope_accounts(case: Case, scope: ScopeResult | str | pd.DataFrame | None = None,
                   until: Any = None) -> pd.DataFrame:
    """Accounts the attacker held: how (patient zero, used, dumped) and since when."""
    n = scope_nodes(case, scope)
    n = n[n["kind"] == "account"] if len(n) else n
    if until is not None and len(n):
        n = n[pd.to_datetime(n["reached_at"], utc=True) <= _ts(until)]
    cols = ["node", "level", "reached_at", "reason"]
    if not len(n):
        return pd.DataFrame(columns=cols).rename(columns={"node": "account"})
    n = n.sort_values(["reached_at", "node"])[cols]
    return n.rename(columns={"node": "account"}).reset_index(drop=True)


def exfil_summary(case: Case, since: Any = None, until: Any = None) -> pd.DataFrame:
    """Data that left, per kind, internal host, destination and channel, largest first."""
    w, p = _window("first", since, until)
    return case.sql(f"""
        SELECT kind, src, src_addr, dst, dst_name, channel, encryption, sum(bytes) AS bytes,
               sum(sessions) AS sessions, min(first) AS first, max(last) AS last, max(score) AS score,
               string_agg(DISTINCT detail, '; ' ORDER BY detail) AS detail
        FROM exfil WHERE true{w}
        GROUP BY kind, src, src_addr, dst, dst_name, channel, encryption
        ORDER BY bytes DESC NULLS LAST, kind, src, dst""", p)


def files_with_hits(case: Case, since: Any = None, until: Any = None, *, only_hits: bool = True,
                    uid: str | None = None) -> pd.DataFrame:
    """Carved files with their YARA rules and threat-intel hits (only those with hits by default).

    Args:
        case: the case.
        since: files first seen at or after this time.
        until: files first seen at or before this time.
        only_hits: leave out files without a YARA or IOC hit.
        uid: only files carved from this session.
    """
    w, p = _window("c.ts", since, until)
    if uid is not None:
        w += " AND c.uid = ?"
        p.append(uid)
    return case.sql(f"""
        WITH y AS (SELECT sha256, list(DISTINCT rule ORDER BY rule) AS yara FROM yara_hits GROUP BY sha256),
        i AS (SELECT c.fuid, list(DISTINCT h.feed || ':' || h.value ORDER BY h.feed || ':' || h.value) AS ioc
              FROM carved_files c LEFT JOIN files f ON f.fuid = c.fuid
              JOIN ioc_hits h ON lower(h.matched) IN (lower(c.sha256), lower(f.md5), lower(f.sha1))
              GROUP BY c.fuid)
        SELECT c.ts, c.claimed_name, c.protocol, c.direction, c.uid, c.size, c.mime_type, c.filetype,
               round(c.entropy, 2) AS entropy, c.complete, c.sha256, y.yara, i.ioc, c.path
        FROM carved_files c LEFT JOIN y USING (sha256) LEFT JOIN i USING (fuid)
        WHERE true{w} {"AND (y.yara IS NOT NULL OR i.ioc IS NOT NULL)" if only_hits else ""}
        ORDER BY c.ts, c.sha256, c.fuid""", p)


def yara_hits(case: Case) -> pd.DataFrame:
    """YARA rules that matched carved files, with the names the files travelled under."""
    return case.sql("""
        SELECT h.rule, h.namespace, h.tags, h.sha256, list(DISTINCT c.claimed_name) AS names,
               list(DISTINCT c.uid) AS sessions, min(c.ts) AS first_seen, max(h.scanned_at) AS scanned_at
        FROM yara_hits h LEFT JOIN carved_files c USING (sha256)
        GROUP BY h.rule, h.namespace, h.tags, h.sha256 ORDER BY first_seen NULLS LAST, h.rule, h.sha256""")


def ioc_hits(case: Case, since: Any = None, until: Any = None) -> pd.DataFrame:
    """Threat-intel indicators that matched rows of the case, per indicator and column."""
    w, p = _window("ts", since, until)
    return case.sql(f"""
        SELECT feed, type, value, table_name, "column", count(*) AS hits, min(ts) AS first, max(ts) AS last,
               list(DISTINCT uid ORDER BY uid)[:5] AS sessions
        FROM ioc_hits WHERE true{w} GROUP BY ALL ORDER BY first NULLS LAST, feed, value, table_name""", p)


def risk_table(case: Case) -> pd.DataFrame:
    """The risk register, highest risk first (empty until :func:`forensics.risk.risk_register` ran)."""
    return case.sql("""
        SELECT host, business_process, owner, probability_label AS probability, damage_label AS damage, risk,
               risk_level, acceptability, treatment, value, quantitative_risk, reason
        FROM risk_register ORDER BY risk DESC, quantitative_risk DESC NULLS LAST, host""")


def headline(case: Case, scope: ScopeResult | str | pd.DataFrame | None = None, *, since: Any = None,
             until: Any = None) -> dict[str, Any]:
    """The scope at a glance: counts of compromised hosts, accounts, bytes out, files with hits, risks."""
    hosts = scope_hosts(case, scope, until)
    ex = exfil_summary(case, since, until)
    files = files_with_hits(case, since, until)
    risks = risk_table(case)
    return {
        "compromised_hosts": int((hosts["confidence"] == "compromised").sum()) if len(hosts) else 0,
        "hosts_in_scope": len(hosts),
        "accounts": len(scope_accounts(case, scope, until)),
        "exfil_bytes": int(ex["bytes"].fillna(0).sum()) if len(ex) else 0,
        "exfil_destinations": int(ex["dst"].nunique()) if len(ex) else 0,
        "files_with_hits": len(files),
        "high_risks": int((risks["risk_level"] == "H").sum()) if len(risks) else 0,
        "risks": len(risks),
    }


def headline_html(case: Case, scope: ScopeResult | str | pd.DataFrame | None = None, **kw: Any) -> Html:
    """:func:`headline` as a row of escaped figures for the report and the ScopeSummary widget."""
    h = headline(case, scope, **kw)
    items = [("compromised hosts", h["compromised_hosts"]), ("hosts in scope", h["hosts_in_scope"]),
             ("accounts held", h["accounts"]), ("bytes out", f"{h['exfil_bytes']:,}"),
             ("destinations", h["exfil_destinations"]), ("files with hits", h["files_with_hits"]),
             ("high risks", f"{h['high_risks']} of {h['risks']}")]
    cells = "".join(f"<div style='display:inline-block;margin:0 1.5em 0.5em 0'><div style='font-size:1.6em;"
                    f"font-weight:bold'>{html.escape(str(v))}</div><div>{html.escape(k)}</div></div>"
                    for k, v in items)
    return Html(f"<div class='bb-headline'>{cells}</div>")


def evidence_rows(rows: Any) -> pd.DataFrame:
    """The ``rows`` JSON of a derived row (lateral edge, detection, exfil) as a table of table + key."""
    try:
        items = json.loads(rows) if isinstance(rows, str) else list(rows or [])
    except (TypeError, ValueError):
        items = []
    return pd.DataFrame([{"table": i.get("table"), **{k: v for k, v in (i.get("key") or {}).items()}}
                         for i in items if isinstance(i, dict)])


def as_time(v: Any) -> datetime | None:
    """An ISO string, datetime or Timestamp as a UTC datetime (None when empty)."""
    t = _ts(v)
    return t.to_pydatetime() if t is not None else None
