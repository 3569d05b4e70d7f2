"""Explore the lateral-movement graph as the attack unfolds, with the scope path highlighted.

::

    from widgets.graph import GraphExplorer
    g = GraphExplorer(case)                   # edges of the case, the reported scope run
    g = GraphExplorer(case, scope=result)     # a ScopeResult from forensics.scope.scope
    g.step.value = 5                          # the graph after its first five movements
    g.nodes.value = "FS01"                    # details of a host (the "click"), its chain highlighted
    g.edges.value = edge_id                   # details of a movement and the evidence rows behind it

The picture is drawn with matplotlib (:func:`forensics.report_sections.lateral_figure`)
on fixed positions, so nodes stay put while the time slider grows the graph.
Hosts are coloured by scope confidence (red compromised, orange credentials,
yellow contact) and patient zero is outlined; the chains that reached
compromised hosts are drawn thick red. Picking a node or an edge in the lists
beside the picture stands in for clicking it and shows its details, escaped.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pandas as pd
import traitlets

from forensics import report_sections as rs
from widgets._html import esc, fmt_ts, kv_table, table
from widgets.findings import FindingAction

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.scope import ScopeResult

__all__ = ["GraphExplorer"]

_EDGE_COLUMNS = ["ts", "src", "dst", "technique", "account", "level", "success", "proof", "summary"]


class GraphExplorer(W.VBox):
    """The lateral-movement graph with a time slider, the scope path and node/edge details.

    Args:
        source: a case, or a DataFrame of lateral edges (the ``lateral_edges`` table's columns).
        scope: scope nodes to colour hosts and draw the path: a ScopeResult, a scope
            ``run_id``, a DataFrame of scope rows, or None for the case's reported run.
        hosts: the ``hosts`` table for node details (read from the case when given one).
        author: who tags or adds edges to findings from here.

    Attributes:
        value: the selected node (host id) or edge id; None when nothing is selected.
        selected_node: the selected host.
        selected_edge: the selected edge id.
        selected_sessions: session uids among the selected edge's evidence rows (wire
            them to a SessionReplay to replay one).
        time_range: ``(start, end)`` UTC: only edges inside are drawn (a Timeline's brush).
        until: time of the last edge drawn (None before the first).
        shown: the edges drawn now.
        step: slider over the edges in time order (0 draws none); ``player`` animates it.
        nodes: Select of hosts; edges: Select of movements; highlight: which chains to draw.
        image: the picture (PNG); details: what the selection shows, as HTML.
    """

    value = traitlets.Unicode(None, allow_none=True)
    selected_node = traitlets.Unicode(None, allow_none=True)
    selected_edge = traitlets.Unicode(None, allow_none=True)
    selected_sessions: traitlets.List[str] = traitlets.List()
    time_range = traitlets.Any(None, allow_none=True)

    def __init__(self, source: Case | pd.DataFrame, scope: ScopeResult | str | pd.DataFrame | None = None, *,
                 hosts: pd.DataFrame | None = None, author: str | None = None):
        self.case = None if isinstance(source, pd.DataFrame) else source
        edges = source if isinstance(source, pd.DataFrame) else rs.lateral_edges(source)
        self.all_edges = edges.sort_values(["ts", "edge_id"], kind="stable").reset_index(drop=True)
        if self.case is not None:
            self.scope = rs.scope_nodes(self.case, scope)
            self.hosts = hosts if hosts is not None else self.case.sql("SELECT * FROM hosts ORDER BY host_id")
        else:
            self.scope = scope if isinstance(scope, pd.DataFrame) else (
                scope.nodes if scope is not None and not isinstance(scope, str) else pd.DataFrame())
            self.hosts = hosts if hosts is not None else pd.DataFrame(columns=["host_id"])
        self.layout_pos = rs.graph_layout(self.all_edges, self.scope if len(self.scope) else None)
        self.edges_in_range = self.all_edges
        n = len(self.all_edges)
        self.step = W.IntSlider(value=n, min=0, max=n, description="Movements", continuous_update=False,
                                layout=W.Layout(width="420px"))
        self.player = W.Play(value=n, min=0, max=n, interval=900, show_repeat=False, description="grow")
        traitlets.link((self.player, "value"), (self.step, "value"))
        self.clock = W.HTML()
        self.highlight = W.Dropdown(options=[("chains to every compromised host", "all"),
                                             ("chain to the selected host", "selected"), ("none", "none")],
                                    description="Path", layout=W.Layout(width="360px"))
        self.image = W.Image(format="png", layout=W.Layout(width="100%", max_width="900px"))
        self.nodes = W.Select(description="Hosts", rows=8, layout=W.Layout(width="300px"))
        self.edges = W.Select(description="Moves", rows=8, layout=W.Layout(width="100%"))
        self.details = W.HTML(layout=W.Layout(max_height="420px", overflow="auto"))
        self.action = (FindingAction(self.case, "lateral_edges", author=author)
                       if self.case is not None else None)
        self.step.observe(lambda _c: self._render(), "value")
        self.highlight.observe(lambda _c: self._render(), "value")
        self.nodes.observe(lambda c: self._pick_node(c["new"]), "value")
        self.edges.observe(lambda c: self._pick_edge(c["new"]), "value")
        self.observe(lambda c: self._apply_range(c["new"]), "time_range")
        self.nodes.options = [(_node_label(h, self.scope), h) for h in sorted(self.layout_pos)]
        self.nodes.value = None
        picks = W.VBox([self.nodes, self.edges], layout=W.Layout(width="45%"))
        parts: list[W.Widget] = [W.HTML("<b>Lateral movement</b>"),
                                 W.HBox([self.player, self.step, self.clock, self.highlight],
                                        layout=W.Layout(flex_flow="row wrap")),
                                 W.HBox([W.Box([self.image], layout=W.Layout(width="55%")), picks]),
                                 self.details]
        if self.action is not None:
            parts.append(self.action)
        super().__init__(parts)
        self._render()

    @property
    def until(self) -> pd.Timestamp | None:
        """Time of the last edge drawn (None when none is)."""
        k = self.step.value
        return self.edges_in_range["ts"].iloc[k - 1] if k > 0 and len(self.edges_in_range) else None

    @property
    def shown(self) -> pd.DataFrame:
        """The edges drawn at the slider's position."""
        return self.edges_in_range.head(self.step.value)

    @property
    def visible_nodes(self) -> set[str]:
        """Hosts drawn now (both ends of every edge drawn, and patient zero)."""
        out = {_end(r, "src") for r in self.shown.to_dict("records")} | {
            _end(r, "dst") for r in self.shown.to_dict("records")}
        if len(self.scope):
            sc = self.scope
            out |= set(sc.loc[(sc["kind"] == "host") & (sc["level"] == "patient_zero"), "node"])
        return out

    def png(self) -> bytes:
        """The picture as it stands (PNG bytes)."""
        return bytes(self.image.value)

    # ---- internals ---------------------------------------------------------------------------------

    def _apply_range(self, rng: tuple[Any, Any] | None) -> None:
        e = self.all_edges
        if rng:
            lo, hi = rs.as_time(rng[0]), rs.as_time(rng[1])
            if lo is not None:
                e = e[e["ts"] >= pd.Timestamp(lo)]
            if hi is not None:
                e = e[e["ts"] <= pd.Timestamp(hi)]
        self.edges_in_range = e.reset_index(drop=True)
        n = len(self.edges_in_range)
        with self.hold_trait_notifications():
            self.step.max = self.player.max = n
            self.step.value = n
        self._render()

    def _highlight(self) -> set[str] | None:
        mode = self.highlight.value
        if mode == "none":
            return set()
        if mode == "selected":
            return rs.scope_path(self.scope, self.selected_node) if self.selected_node else set()
        return None  # lateral_figure's default: every chain to a compromised host

    def _render(self) -> None:
        shown = self.shown
        until = self.until
        if until is None:  # nothing drawn yet: the picture as it stood just before the first movement
            first = self.edges_in_range["ts"].min() if len(self.edges_in_range) else None
            until = None if first is None or pd.isna(first) else first - pd.Timedelta(microseconds=1)
        fig = rs.lateral_figure(shown, self.scope if len(self.scope) else None, until=until,
                                highlight=self._highlight(), selected=self.value, layout=self.layout_pos)
        until = self.until
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        self.image.value = buf.getvalue()
        self.clock.value = (f"<small>{len(shown)} of {len(self.edges_in_range)} movement(s)"
                            + (f", up to {esc(fmt_ts(until))} UTC" if until is not None else "") + "</small>")
        opts = [(_edge_label(r), r["edge_id"]) for r in shown.to_dict("records")]
        keep = self.selected_edge if self.selected_edge in {o[1] for o in opts} else None
        with self.hold_trait_notifications():
            self.edges.options = opts
            self.edges.value = keep

    def _pick_node(self, node: str | None) -> None:
        if node is None:
            return
        self.selected_node, self.selected_edge, self.value = node, None, node
        self.selected_sessions = []
        self.edges.value = None
        self.details.value = self._node_html(node)
        if self.action is not None:
            e = self.all_edges
            self.action.select(list(e.loc[(e["src"] == node) | (e["dst"] == node), "edge_id"]))
        self._render()

    def _pick_edge(self, edge_id: str | None) -> None:
        if edge_id is None:
            return
        row = self.all_edges[self.all_edges["edge_id"] == edge_id]
        if not len(row):
            return
        r = row.iloc[0].to_dict()
        self.selected_edge, self.value = edge_id, edge_id
        ev = rs.evidence_rows(r.get("rows"))
        self.selected_sessions = (list(ev.loc[ev["table"] == "sessions", "uid"])
                                  if len(ev) and "uid" in ev.columns else [])
        self.details.value = self._edge_html(r, ev)
        if self.action is not None:
            self.action.select([edge_id])
        self._render()

    def _node_html(self, node: str) -> str:
        out = [f"<h4>Host {esc(node)}</h4>"]
        h = self.hosts[self.hosts["host_id"] == node] if "host_id" in self.hosts.columns else pd.DataFrame()
        if len(h):
            r = h.iloc[0]
            out.append(kv_table([("names", ", ".join(map(str, _seq(r.get("names"))))),
                                 ("addresses", ", ".join(map(str, _seq(r.get("addresses"))))),
                                 ("first seen", fmt_ts(r.get("first_seen"))),
                                 ("last seen", fmt_ts(r.get("last_seen"))),
                                 ("internal", r.get("internal")), ("in inventory", r.get("in_inventory"))]))
        sc = self.scope[self.scope["node"] == node] if len(self.scope) else pd.DataFrame()
        if len(sc):
            s = sc.iloc[0]
            out.append("<b>Scope</b>" + kv_table([("level", s["level"]), ("confidence", s["confidence"]),
                                                   ("reached", fmt_ts(s["reached_at"])),
                                                   ("via", s.get("via_technique")), ("hops", s.get("depth")),
                                                   ("why", s.get("reason"))]))
            chain = self.all_edges[self.all_edges["edge_id"].isin(list(_seq(s.get("chain"))))]
            out.append("<b>Chain from patient zero</b>" + table(chain, _EDGE_COLUMNS, empty="(patient zero)"))
        else:
            out.append("<p><i>Not in scope.</i></p>")
        e = self.all_edges
        touching = e[(e["src"] == node) | (e["dst"] == node)]
        accounts = sorted({str(a) for a in touching.loc[touching["dst"] == node, "account"].dropna()})
        out.append(f"<b>Accounts used to reach it:</b> {esc(', '.join(accounts) or 'none recorded')}")
        out.append("<b>Movements from and to it</b>" + table(touching, _EDGE_COLUMNS))
        return "".join(out)

    def _edge_html(self, r: dict[str, Any], ev: pd.DataFrame) -> str:
        fields = [(k, fmt_ts(v) if k in ("ts", "ts_end") else v) for k, v in r.items() if k != "rows"]
        out = f"<h4>Movement {esc(r.get('technique'))}: {esc(r.get('src'))} → {esc(r.get('dst'))}</h4>"
        out += kv_table(fields) + f"<b>Evidence rows ({len(ev)})</b>" + table(ev)
        if self.case is not None and len(ev):
            out += "".join(f"<b>{esc(t)} rows</b>" + table(df, max_rows=50)
                           for t, df in evidence_details(self.case, ev).items())
        if self.case is not None and len(ev) and "uid" in ev.columns:
            uids = [u for u in ev["uid"].dropna().unique().tolist()][:50]
            s = self.case.sql("SELECT uid, ts, proto, service, orig_h, orig_p, resp_h, resp_p, orig_bytes, "
                              "resp_bytes, conn_state FROM sessions WHERE uid IN (SELECT unnest(?)) "
                              "ORDER BY ts",
                              [uids])
            out += "<b>Sessions behind it</b> <small>(replay one with SessionReplay)</small>" + table(s)
        return out


_SHOWN = ("ts", "host", "event_id", "action", "success", "user", "src_ip", "dst_host", "method", "uri",
          "endpoint", "operation", "named_pipe", "path", "name", "command_line", "object", "message")


def evidence_details(case: Case, ev: pd.DataFrame, per_table: int = 50) -> dict[str, pd.DataFrame]:
    """The rows an edge's ``rows`` JSON points to, read from their tables (a few columns each)."""
    import re

    from forensics.tables import TABLES

    out: dict[str, pd.DataFrame] = {}
    for name, g in ev.groupby("table", sort=True):
        t = TABLES.get(str(name))
        if t is None or name == "sessions":
            continue
        keys = [c for c in g.columns if c != "table" and c in t.names and re.fullmatch(r"[a-z_]+", c)]
        conds, params = [], []
        for r in g.head(per_table).to_dict("records"):
            parts = []
            for c in keys:  # a missing value is left out (the other columns still pin the row)
                v = r.get(c)
                if v is not None and not (isinstance(v, float) and pd.isna(v)):
                    parts.append(f"CAST({c} AS VARCHAR) = ?")
                    params.append(str(v))
            if parts:
                conds.append("(" + " AND ".join(parts) + ")")
        if not conds:
            continue
        cols = [c for c in _SHOWN if c in t.names] or list(t.names)[:8]
        df = case.sql(f"SELECT {', '.join(cols)} FROM {name} WHERE {' OR '.join(conds)} LIMIT {per_table}",
                      params)
        if len(df):
            out[str(name)] = df
    return out


def _seq(v: Any) -> list[Any]:
    if v is None or isinstance(v, float | str):
        return [] if v is None or isinstance(v, float) else [v]
    return list(v)


def _end(r: dict[str, Any], side: str) -> str:
    for v in (r.get(side), r.get(f"{side}_addr")):
        if isinstance(v, str) and v:
            return v
    return "?"


def _node_label(node: str, scope: pd.DataFrame) -> str:
    if len(scope):
        row = scope[scope["node"] == node]
        if len(row):
            return f"{node} ({row['confidence'].iloc[0]})"
    return node


def _edge_label(r: dict[str, Any]) -> str:
    acct = r.get("account") if isinstance(r.get("account"), str) else "?"
    return (f"{fmt_ts(r['ts'])}  {r.get('technique')}  {_end(r, 'src')} → {_end(r, 'dst')}  {acct}  "
            f"({r.get('level')}, {r.get('proof')})")
