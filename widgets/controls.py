"""A widget for the post-incident control review: rate each control, see the area scores.

::

    from widgets.controls import ControlsWidget
    w = ControlsWidget(case)        # one row per control of the checklist
    w                               # pick ratings, "use suggestion" where the case has evidence, Save

Each row offers the two ratings of the audit method (documentary and
instrumental), the case's suggestion with a button to take it, a comment, and
the resulting score; the area scores update as ratings change. *Save* appends
the changed ratings to the case (:func:`forensics.controls.rate`). State:
``.value`` (ratings per control as shown), ``.rows[control_id]`` (each row's
child widgets), which tests set directly before clicking ``save_button``.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pandas as pd
import traitlets

from forensics import controls as K
from forensics.errors import BreachbookError

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["ALL_AREAS", "ControlRow", "ControlsWidget"]

ALL_AREAS = "All areas"
_DOC = [("—", None), ("not established", "not_established"), ("partly", "partly"), ("fully", "fully")]
_INS = [("—", None), ("not fulfilled", "not_fulfilled"), ("partly", "partly"), ("fully", "fully")]


class ControlRow(W.HBox):
    """One control: its two ratings, the case's suggestion, a comment and the score.

    Attributes:
        control: the checklist row (a dict).
        documentary: Dropdown of the documentary rating.
        instrumental: Dropdown of the instrumental rating.
        comment: the analyst's comment.
        use_suggestion: button that sets the instrumental rating to the suggestion.
        score: the score shown.
        saved: the rating as stored in the case (None if never rated).
    """

    def __init__(self, control: dict[str, Any], suggestion: dict[str, Any] | None,
                 saved: dict[str, Any] | None):
        self.control = control
        self.suggestion = suggestion
        self.saved = saved
        tip = html.escape(str(control.get("question") or ""), quote=True)
        self.name = W.HTML(f'<span title="{tip}"><b>{html.escape(str(control["control_id"]))}</b> '
                           f'{html.escape(str(control["control"]))}</span>', layout=W.Layout(width="300px"))
        self.documentary = W.Dropdown(options=_DOC, value=(saved or {}).get("documentary"),
                                      layout=W.Layout(width="140px"))
        self.instrumental = W.Dropdown(options=_INS, value=(saved or {}).get("instrumental"),
                                       layout=W.Layout(width="130px"))
        level = (suggestion or {}).get("suggested")
        self.use_suggestion = W.Button(description=f"use: {level}" if level else "no suggestion",
                                       disabled=not level, layout=W.Layout(width="150px"),
                                       tooltip=str((suggestion or {}).get("summary") or ""))
        self.evidence = W.HTML(f"<small>{html.escape(str((suggestion or {}).get('summary') or ''))}</small>",
                               layout=W.Layout(width="320px"))
        self.comment = W.Text(value=(saved or {}).get("comment") or "", placeholder="comment",
                              layout=W.Layout(width="200px"))
        self.score = W.HTML(layout=W.Layout(width="50px"))
        self.use_suggestion.on_click(lambda _b: setattr(self.instrumental, "value", level))
        super().__init__([self.name, self.documentary, self.instrumental, self.use_suggestion,
                          self.comment, self.score, self.evidence])
        self.update_score()

    @property
    def current(self) -> dict[str, Any]:
        """The rating as shown: documentary, instrumental, comment, score (None while incomplete)."""
        d, i = self.documentary.value, self.instrumental.value
        return {"documentary": d, "instrumental": i, "comment": self.comment.value or None,
                "score": K.score(d, i) if d and i else None}

    @property
    def dirty(self) -> bool:
        """Whether the row differs from what the case holds."""
        cur, saved = self.current, self.saved or {}
        keys = ("documentary", "instrumental", "comment")
        return any((cur[k] or None) != (saved.get(k) or None) for k in keys)

    def update_score(self) -> None:
        """Show the score of the current ratings."""
        s = self.current["score"]
        self.score.value = "" if s is None else f"<b>{s:.2f}</b>"


class ControlsWidget(W.VBox):
    """Rate the controls of the checklist against a case and save the ratings.

    Args:
        case: the case (open for writing to save; read-only shows the ratings).
        controls: the checklist (default: :func:`forensics.controls.load_controls`).
        author: who rates (default: ``$BREACHBOOK_AUTHOR`` or ``user@host``).
        suggestions: run the evidence probes and offer their suggestions.

    Attributes:
        value: ``{control_id: {"documentary", "instrumental", "comment", "score",
            "saved"}}`` for every control with a rating shown, saved or not.
        rows: the :class:`ControlRow` of each control, by id.
        area: Dropdown filtering the rows shown by area.
        save_button: appends the changed, complete ratings to the case.
        status: outcome of the last save, as HTML.
        scores: the per-area roll-up of the ratings shown, as HTML.
    """

    value = traitlets.Dict()

    def __init__(self, case: Case, *, controls: pd.DataFrame | None = None, author: str | None = None,
                 suggestions: bool = True):
        self.case = case
        self.author = author
        self.controls = controls if controls is not None else K.load_controls(case)
        sugg = (K.suggest_evidence(case, self.controls).drop(columns=["evidence"]) if suggestions
                else pd.DataFrame(columns=["control_id"]))
        by_id = {r["control_id"]: r for r in _records(sugg)}
        saved = {r["control_id"]: r for r in _records(K.ratings(case))}
        self.rows: dict[str, ControlRow] = {}
        for c in _records(self.controls):
            row = ControlRow(c, by_id.get(c["control_id"]), saved.get(c["control_id"]))
            for w in (row.documentary, row.instrumental, row.comment):
                w.observe(lambda _ch, row=row: self._changed(row), "value")
            self.rows[c["control_id"]] = row
        areas = list(dict.fromkeys(self.controls["area"]))
        self.area = W.Dropdown(options=[ALL_AREAS, *areas], value=ALL_AREAS, description="Area")
        self.area.observe(lambda _ch: self._filter(), "value")
        self.save_button = W.Button(description="Save ratings", icon="save", button_style="primary",
                                    disabled=case.read_only)
        self.save_button.on_click(lambda _b: self.save())
        self.status = W.HTML("<small>The case is open read-only: ratings cannot be saved.</small>"
                             if case.read_only else "")
        self.scores = W.HTML()
        self._list = W.VBox()
        header = W.HTML("<small><b>control · documentary · instrumental · suggestion · comment · score · "
                        "what the case shows</b></small>")
        super().__init__([W.HBox([self.area, self.save_button]), header, self._list, self.status,
                          self.scores])
        self._filter()
        self._refresh_value()

    def save(self) -> int:
        """Append the changed, complete ratings to the case; returns how many were saved."""
        changed = [r for r in self.rows.values() if r.dirty]
        incomplete = [r for r in changed if r.current["score"] is None]
        n = 0
        try:
            for r in changed:
                cur = r.current
                if cur["score"] is None:
                    continue
                sugg = r.suggestion or {}
                K.rate(self.case, r.control["control_id"], cur["documentary"], cur["instrumental"],
                       evidence=sugg.get("summary"), suggested=sugg.get("suggested"), comment=cur["comment"],
                       author=self.author, controls=self.controls)
                r.saved = dict(cur)
                n += 1
        except (BreachbookError, ValueError) as exc:
            self.status.value = f'<small style="color:#b00">{html.escape(str(exc))}</small>'
            return n
        msg = f"saved {n} rating(s)"
        if incomplete:
            ids = ", ".join(r.control["control_id"] for r in incomplete[:8])
            msg += f"; {len(incomplete)} need both ratings first ({ids})"
        self.status.value = f"<small>{html.escape(msg)}</small>"
        self._refresh_value()
        return n

    # ---- internals ----------------------------------------------------------------------

    def _changed(self, row: ControlRow) -> None:
        row.update_score()
        self._refresh_value()

    def _filter(self) -> None:
        a = self.area.value
        self._list.children = [r for r in self.rows.values() if a == ALL_AREAS or r.control["area"] == a]

    def _refresh_value(self) -> None:
        val = {}
        for cid, r in self.rows.items():
            cur = r.current
            if cur["documentary"] or cur["instrumental"]:
                val[cid] = {**cur, "saved": not r.dirty}
        self.value = val
        self.scores.value = self._scores_html()

    def _scores_html(self) -> str:
        rows = []
        for area, g in self.controls.groupby("area", sort=False):
            scores = [self.rows[c].current["score"] for c in g["control_id"]]
            rated = [s for s in scores if s is not None]
            mean = sum(rated) / len(rated) if rated else math.nan
            rows.append(f"<tr><td>{html.escape(str(area))}</td><td>{len(rated)} of {len(g)}</td>"
                        f"<td>{'' if math.isnan(mean) else f'{mean:.2f}'}</td></tr>")
        return ("<table><thead><tr><th>area</th><th>rated</th><th>score</th></tr></thead><tbody>"
                + "".join(rows) + "</tbody></table>")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with pandas' missing values (NaN, NaT) as None."""
    return [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]
