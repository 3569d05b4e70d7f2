"""Sessions, logons, alerts, file transfers, lateral movement and detections on one time axis.

::

    from widgets.timeline import Timeline
    t = Timeline(case)
    t.link(replay, graph, summary)        # the brush filters the other widgets
    t.brush.index = (20, 80)              # or drag it; t.range is the window in UTC
    t.on_range(lambda rng: print(rng))    # any callback

The picture is :func:`forensics.report_sections.timeline_figure` (the same as
in the report) with the brushed window shaded; below it, the events inside the
window (escaped) and their count per lane.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pandas as pd
import traitlets

from forensics import report_sections as rs
from widgets._html import esc, fmt_ts, table

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["Timeline"]


class Timeline(W.VBox):
    """A timeline of the case with a brush (a range slider) that filters other widgets.

    Args:
        source: a case, or events shaped like :func:`forensics.report_sections.timeline_events`.
        sessions: session counts per bin (:func:`forensics.report_sections.session_counts`);
            read from the case when given one.
        since: leave out what happened before this time.
        until: leave out what happened after it.
        steps: positions of the brush between the first and the last event.
        max_rows: events listed under the picture at most.

    Attributes:
        range: the brushed window ``(start, end)`` as UTC Timestamps; observe it
            (``t.observe(fn, "range")``), or use :meth:`on_range` / :meth:`link`.
        value: the same window (the widget's value).
        events: every event of the timeline; :attr:`selected` those in the window.
        brush: the SelectionRangeSlider; ``lanes`` picks the lanes listed.
        image: the picture (PNG); table: the events in the window, as HTML.
    """

    range = traitlets.Tuple()
    value = traitlets.Tuple()

    def __init__(self, source: Case | pd.DataFrame, sessions: pd.DataFrame | None = None, *,
                 since: Any = None, until: Any = None, steps: int = 200, max_rows: int = 200):
        if isinstance(source, pd.DataFrame):
            self.events = source
            self.sessions = sessions if sessions is not None else pd.DataFrame(columns=["ts", "sessions"])
        else:
            self.events = rs.timeline_events(source, since, until)
            self.sessions = sessions if sessions is not None else rs.session_counts(source, since, until)
        self.max_rows = max_rows
        times = pd.concat([pd.to_datetime(self.events["ts"], utc=True),
                           *(pd.to_datetime(self.sessions[c], utc=True) for c in ("ts", "ts_end")
                             if c in self.sessions)]).dropna()
        lo = times.min() if len(times) else pd.Timestamp("1970-01-01", tz="UTC")
        hi = times.max() if len(times) else lo
        if hi <= lo:
            hi = lo + pd.Timedelta(seconds=1)
        self.ticks = [lo + (hi - lo) * i / steps for i in range(steps + 1)]
        labels = [(fmt_ts(t, ms=False), i) for i, t in enumerate(self.ticks)]
        self.brush = W.SelectionRangeSlider(options=labels,
                                            index=(0, steps), description="Window", continuous_update=False,
                                            layout=W.Layout(width="95%"))
        lanes = [lane for lane in rs.LANES if lane != "sessions"]
        self.lanes = W.SelectMultiple(options=lanes, value=tuple(lanes), description="Lanes", rows=len(lanes))
        self.reset = W.Button(description="Whole case", icon="expand")
        self.image = W.Image(format="png", layout=W.Layout(width="100%", max_width="1000px"))
        self.counts = W.HTML()
        self.table = W.HTML(layout=W.Layout(max_height="400px", overflow="auto"))
        self.brush.observe(lambda _c: self._brushed(), "index")
        self.lanes.observe(lambda _c: self._render_table(), "value")
        self.reset.on_click(lambda _b: setattr(self.brush, "index", (0, steps)))
        super().__init__([W.HTML("<b>Timeline</b>"), self.image, self.brush,
                          W.HBox([self.lanes, W.VBox([self.counts, self.reset])]), self.table])
        self._brushed()

    @property
    def selected(self) -> pd.DataFrame:
        """Events inside the brushed window (all lanes)."""
        if not len(self.events):
            return self.events
        lo, hi = self.range
        ts = pd.to_datetime(self.events["ts"], utc=True)
        return self.events[(ts >= lo) & (ts <= hi)]

    def on_range(self, callback: Callable[[tuple[pd.Timestamp, pd.Timestamp]], Any]) -> None:
        """Call ``callback(range)`` whenever the window changes."""
        self.observe(lambda c: callback(c["new"]), "range")

    def link(self, *widgets: Any) -> None:
        """Make the window filter other widgets: each gets ``time_range`` set now and on every change."""
        for w in widgets:
            if not hasattr(w, "time_range"):
                raise TypeError(f"{type(w).__name__} has no time_range to filter")
            w.time_range = self.range
            self.on_range(functools.partial(setattr, w, "time_range"))

    # ---- internals ----------------------------------------------------------------------------------

    def _brushed(self) -> None:
        a, b = self.brush.index
        rng = (self.ticks[a], self.ticks[b])
        whole = (a, b) == (0, len(self.ticks) - 1)
        fig = rs.timeline_figure(self.events, self.sessions, highlight=None if whole else rng)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        self.image.value = buf.getvalue()
        self.range = rng
        self.value = rng
        self._render_table()

    def _render_table(self) -> None:
        sel = self.selected
        per_lane = sel["lane"].value_counts() if len(sel) else pd.Series(dtype=int)
        lines = [f"{esc(lane)}: {int(per_lane.get(lane, 0))}" for lane in rs.LANES[1:]]
        self.counts.value = (f"<b>{esc(fmt_ts(self.range[0]))} – {esc(fmt_ts(self.range[1]))} UTC</b><br>"
                             + "<br>".join(lines))
        shown = sel[sel["lane"].isin(self.lanes.value)] if len(sel) else sel
        self.table.value = table(shown, ["ts", "lane", "host", "label", "detail"], max_rows=self.max_rows,
                                 empty="no event in this window")
