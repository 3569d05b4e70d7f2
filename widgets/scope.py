"""The breach at a glance: compromised hosts and accounts, exfiltration, files with hits, risk register.

::

    from widgets.scope import ScopeSummary
    s = ScopeSummary(case)                     # the reported scope run
    s = ScopeSummary(case, scope=result)       # a ScopeResult from forensics.scope.scope
    s.time_range = (start, end)                # as of the window's end (or link a Timeline)
    s.value                                    # the headline counts

Built from the same functions as the report's sections
(:mod:`forensics.report_sections`); every table is escaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pandas as pd
import traitlets

from forensics import report_sections as rs
from widgets._html import esc, fmt_ts, table

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.scope import ScopeResult

__all__ = ["ScopeSummary"]

_TABS = ("Hosts", "Accounts", "Exfiltration", "Files with hits", "Risk register")


class ScopeSummary(W.VBox):
    """Headline figures and one tab per part of the scope.

    Args:
        case: the case.
        scope: a ScopeResult, a scope ``run_id``, scope rows, or None for the reported run.
        time_range: ``(start, end)``: hosts and accounts as reached by the end of the
            window, exfiltration and files inside it (the risk register is not timed).

    Attributes:
        value: the headline counts (:func:`forensics.report_sections.headline`).
        time_range: the window (settable; a Timeline's :meth:`~widgets.timeline.Timeline.link` sets it).
        frames: the DataFrames shown, by tab title.
        headline: the figures as HTML; tabs: one HTML table per part.
    """

    value = traitlets.Dict()
    time_range = traitlets.Any(None, allow_none=True)

    def __init__(self, case: Case, scope: ScopeResult | str | pd.DataFrame | None = None, *,
                 time_range: tuple[Any, Any] | None = None):
        self.case = case
        self.nodes = rs.scope_nodes(case, scope)
        self.frames: dict[str, pd.DataFrame] = {}
        self.window = W.HTML()
        self.headline = W.HTML()
        self.views = {name: W.HTML(layout=W.Layout(max_height="420px", overflow="auto")) for name in _TABS}
        self.tabs = W.Tab(children=list(self.views.values()), titles=list(_TABS))
        self.observe(lambda _c: self.refresh(), "time_range")
        super().__init__([W.HTML("<b>Breach scope</b>"), self.window, self.headline, self.tabs])
        if time_range is not None:
            self.time_range = tuple(time_range)
        else:
            self.refresh()

    def refresh(self) -> None:
        """Read the tables again for the current window."""
        lo, hi = self.time_range if self.time_range else (None, None)
        c, n = self.case, self.nodes
        self.frames = {
            "Hosts": rs.scope_hosts(c, n, hi),
            "Accounts": rs.scope_accounts(c, n, hi),
            "Exfiltration": rs.exfil_summary(c, lo, hi),
            "Files with hits": rs.files_with_hits(c, lo, hi),
            "Risk register": rs.risk_table(c),
        }
        empty = {"Hosts": "no scope run yet (breachbook scope, or scope_for in the notebook)",
                 "Accounts": "no account in scope", "Exfiltration": "no data seen leaving",
                 "Files with hits": "no carved file with a YARA or IOC hit",
                 "Risk register": "no risk register yet (breachbook risk --inventory ...)"}
        for name, df in self.frames.items():
            cols = [c for c in df.columns if c not in ("path", "src_addr")]
            self.views[name].value = table(df, cols, empty=empty[name])
        self.value = rs.headline(c, n, since=lo, until=hi)
        self.headline.value = str(rs.headline_html(c, n, since=lo, until=hi))
        self.window.value = (f"<small>window {esc(fmt_ts(lo))} – {esc(fmt_ts(hi))} UTC: hosts and "
                             "accounts as reached by its end, exfiltration and files inside it</small>"
                             if self.time_range else "<small>whole case</small>")
