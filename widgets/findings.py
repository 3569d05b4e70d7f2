"""A small "tag / add to finding" action for any widget that selects rows of a case.

Embed it, then tell it what is selected::

    action = FindingAction(case, "sessions")
    table_widget.observe(lambda ch: action.select(ch["new"]), "selected_uids")
    VBox([table_widget, action])

It tags the selected rows, or adds them to an existing finding or a new one,
through :mod:`forensics.findings`. State: ``.selected_keys`` (the selection),
``.value`` (the last action done), and the child widgets, which tests set
directly (``action.label.value = "c2"; action.tag_button.click()``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import traitlets

from forensics import findings
from forensics.errors import BreachbookError

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["NEW_FINDING", "FindingAction"]

NEW_FINDING = "__new__"


class FindingAction(W.VBox):
    """Tag the selected rows, or add them to a finding.

    Attributes:
        case: the case (read-only cases show the action disabled).
        table: the table the selected rows belong to.
        selected_keys: the selected rows' keys (set with :meth:`select`). Not ``keys``:
            that name is ipywidgets' own list of synced state.
        value: the last action: ``{"action": "tag" | "untag" | "add_to_finding", "table",
            "rows", "label" | "finding_id"}``; empty until something is done.
        label: the tag to apply (a Combobox offering the labels in use).
        finding: the finding to add to (open and confirmed findings, or "New finding").
        title: title of a new finding.
        severity: severity of a new finding.
        status: the outcome of the last action, as text.
    """

    value = traitlets.Dict()
    selected_keys: traitlets.List[Any] = traitlets.List()

    def __init__(self, case: Case, table: str, keys: Any = None, *, author: str | None = None):
        self.case = case
        self.table = table
        self.author = author
        self.label = W.Combobox(placeholder="tag, e.g. c2", ensure_option=False,
                                layout=W.Layout(width="160px"))
        self.tag_button = W.Button(description="Tag", icon="tag", layout=W.Layout(width="80px"))
        self.untag_button = W.Button(description="Untag", layout=W.Layout(width="80px"))
        self.finding = W.Dropdown(description="Finding", layout=W.Layout(width="360px"))
        self.title = W.Text(placeholder="title of the new finding", layout=W.Layout(width="300px"))
        self.severity = W.Dropdown(options=list(findings.SEVERITIES), value="medium",
                                   layout=W.Layout(width="100px"))
        self.add_button = W.Button(description="Add to finding", icon="plus", layout=W.Layout(width="140px"))
        self.status = W.HTML()
        self.tag_button.on_click(lambda _b: self.apply_tag())
        self.untag_button.on_click(lambda _b: self.apply_tag(remove=True))
        self.add_button.on_click(lambda _b: self.add_to_finding())
        self.finding.observe(lambda _c: self._show_new(), "value")
        super().__init__([
            W.HBox([self.label, self.tag_button, self.untag_button]),
            W.HBox([self.finding, self.title, self.severity, self.add_button]),
            self.status,
        ])
        self.refresh()
        self.select(keys if keys is not None else [])

    def select(self, keys: Any) -> None:
        """Set the selected rows (one key, a list of keys, or a DataFrame of rows)."""
        self.selected_keys = findings.split_keys(keys) if keys is not None and not _empty(keys) else []
        self._enable()

    def refresh(self) -> None:
        """Reload the labels and findings offered (after changes made elsewhere)."""
        self.label.options = tuple(findings.tag_labels(self.case, self.table)["label"])
        fs = findings.list_findings(self.case, status=("open", "confirmed"))
        opts = [("New finding…", NEW_FINDING)] + [
            (f"{r.finding_id} [{r.severity}] {r.title[:60]}", r.finding_id) for r in fs.itertuples()]
        current = self.finding.value
        self.finding.options = opts
        self.finding.value = current if current in {v for _, v in opts} else NEW_FINDING
        self._show_new()

    def apply_tag(self, remove: bool = False) -> int:
        """Tag (or untag) the selected rows with the label; returns the rows changed."""
        label = (self.label.value or "").strip()
        if not label:
            return self._fail("type a tag first")
        try:
            if remove:
                n = findings.untag(self.case, self.table, self.selected_keys, label, author=self.author)
            else:
                n = findings.tag(self.case, self.table, self.selected_keys, label, author=self.author)
        except (BreachbookError, ValueError) as exc:
            return self._fail(str(exc))
        verb = "untagged" if remove else "tagged"
        self.value = {"action": "untag" if remove else "tag", "table": self.table, "rows": n, "label": label}
        self._ok(f"{verb} {n} of {len(self.selected_keys)} selected row(s) “{label}”")
        self.refresh()
        return n

    def add_to_finding(self) -> str | None:
        """Add the selected rows to the chosen finding (opening it if new); returns its id."""
        rows = [(self.table, k) for k in self.selected_keys]
        try:
            if self.finding.value == NEW_FINDING:
                title = (self.title.value or "").strip()
                if not title:
                    self._fail("give the new finding a title")
                    return None
                fid = findings.finding(self.case, title, self.severity.value, rows=rows, author=self.author)
                n = len(rows)
            else:
                fid = str(self.finding.value)
                n = findings.add_rows(self.case, fid, rows, author=self.author)
        except (BreachbookError, ValueError) as exc:
            self._fail(str(exc))
            return None
        self.value = {"action": "add_to_finding", "table": self.table, "rows": n, "finding_id": fid}
        self._ok(f"{n} row(s) added to {fid}")
        self.title.value = ""
        self.refresh()
        self.finding.value = fid
        return fid

    # ---- internals ----------------------------------------------------------------------

    def _enable(self) -> None:
        off = self.case.read_only or not self.selected_keys
        for b in (self.tag_button, self.untag_button, self.add_button):
            b.disabled = off
        if self.case.read_only:
            self.status.value = "<small>The case is open read-only: reopen it for writing to tag.</small>"
        else:
            n, table = len(self.selected_keys), html.escape(self.table)
            self.status.value = f"<small>{n} row(s) of {table} selected</small>"

    def _show_new(self) -> None:
        shown = self.finding.value == NEW_FINDING
        self.title.layout.display = None if shown else "none"
        self.severity.layout.display = None if shown else "none"

    def _ok(self, msg: str) -> None:
        self.status.value = f"<small>{html.escape(msg)}</small>"

    def _fail(self, msg: str) -> int:
        self.status.value = f'<small style="color:#b00">{html.escape(msg)}</small>'
        return 0


def _empty(keys: Any) -> bool:
    try:
        return len(keys) == 0
    except TypeError:
        return False
