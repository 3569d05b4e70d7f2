"""Report sections written from the analysts' work: findings and the control review.

The report notebook shows each section with one call::

    review.analyst_findings_section(case)
    review.control_review_section(case)

A :class:`ReportSection` renders as HTML in Jupyter and in the exported report.
Every string in it (titles, notes, descriptions, host and file names from
evidence) is escaped with :func:`html.escape` or pandas' escaping HTML writer,
so nothing an analyst typed or an attacker planted becomes live markup.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import controls as ctl
from forensics import findings as fnd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from forensics.case import Case

__all__ = ["ReportSection", "analyst_findings_section", "area_chart", "control_review_section"]

_KIND_TITLES = {
    "policy": "Policy",
    "configuration": "Configuration changes",
    "new_control": "New controls",
    "training": "Training",
}


@dataclass(frozen=True)
class ReportSection:
    """A block of the report: escaped HTML, and the tables it was built from.

    Attributes:
        title: the section's title (the notebook's markdown cell carries the heading).
        html: the body, safe to embed.
        tables: the DataFrames behind it, by name.
    """

    title: str
    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


def _e(v: Any) -> str:
    if v is None or (not isinstance(v, (list, dict)) and pd.isna(v)):
        return ""
    if isinstance(v, pd.Timestamp):
        return html.escape(v.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return html.escape(str(v))


_STYLE = "<style>.bb-table th, .bb-table td {text-align: left !important; vertical-align: top;}</style>"


def _table(df: pd.DataFrame) -> str:
    if not len(df):
        return "<p><em>None.</em></p>"
    df = df.copy()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.DatetimeTZDtype):
            df[c] = df[c].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    df = df.astype(object).where(df.notna(), "")
    return df.to_html(index=False, escape=True, border=0, classes="bb-table")


def _para(text: str) -> str:
    return "".join(f"<p>{_e(p)}</p>" for p in str(text).split("\n\n") if p.strip())


# ---- findings ------------------------------------------------------------------------


def analyst_findings_section(case: Case, *, max_rows: int = 50) -> ReportSection:
    """The "Analyst findings" section: confirmed findings with evidence; the rest listed.

    Confirmed findings (and closed ones that were confirmed before closing) are
    shown with their description, notes, history, and each evidence row with
    its lineage: evidence file, SHA-256 and where in the file. Open findings are
    listed as open; false positives and closed findings are listed briefly.

    Args:
        case: the case.
        max_rows: at most this many evidence rows shown per finding.

    Returns:
        The section; ``tables`` holds ``findings`` and ``evidence``.
    """
    allf = fnd.list_findings(case)
    hist = case.sql("SELECT finding_id, version, recorded_at, author, status, comment FROM finding_history "
                    "ORDER BY finding_id, version, recorded_at")
    was_confirmed = set(hist.loc[hist["status"] == "confirmed", "finding_id"])
    shown = allf[(allf["status"] == "confirmed")
                 | ((allf["status"] == "closed") & allf["finding_id"].isin(was_confirmed))]
    parts = [f"<p>{_summary(allf)}</p>"]
    evidence_frames = []
    for f in shown.to_dict("records"):
        parts.append(f'<h3>{_e(f["severity"]).upper()}: {_e(f["title"])}</h3>')
        h = hist[hist["finding_id"] == f["finding_id"]]
        conf = h[h["status"] == "confirmed"]
        by = (f'confirmed by {_e(conf["author"].iloc[-1])} on {_e(conf["recorded_at"].iloc[-1])}'
              if len(conf) else "")
        parts.append(f'<p><code>{_e(f["finding_id"])}</code> · status {_e(f["status"])} · opened by '
                     f'{_e(f["created_by"])} on {_e(f["created_at"])}{" · " + by if by else ""}</p>')
        if f["description"]:
            parts.append(_para(f["description"]))
        notes = fnd.notes(case, finding_id=f["finding_id"])
        if len(notes):
            items = "".join(f'<li>{_e(n["author"])}, {_e(n["recorded_at"])}: {_e(n["text"])}</li>'
                            for n in notes.sort_values("recorded_at").to_dict("records"))
            parts.append(f"<p>Notes:</p><ul>{items}</ul>")
        ev = fnd.resolve_rows(case, f["finding_id"], max_packets=max(1, max_rows))
        if len(ev):
            view = pd.DataFrame({
                "table": ev["table_name"], "row": ev["row_key"].map(_key_text),
                "evidence file": ev["evidence_name"], "SHA-256": ev["sha256"], "where": ev["locator"],
                "analyst comment": ev["comment"]})
            more = (f"<p><em>{len(view) - max_rows} more rows not shown.</em></p>"
                    if len(view) > max_rows else "")
            parts.append("<p>Evidence:</p>" + _table(view.head(max_rows)) + more)
            evidence_frames.append(ev)
        else:
            parts.append("<p><em>No evidence rows attached.</em></p>")
        changes = "; ".join(f'v{int(r["version"])} {_e(r["status"])} by {_e(r["author"])} '
                            f'on {_e(r["recorded_at"])}' + (f' ({_e(r["comment"])})' if r["comment"] else "")
                            for r in h.to_dict("records"))
        parts.append(f"<p><small>History: {changes}</small></p>")
    if not len(shown):
        parts.append("<p><em>No confirmed findings yet.</em></p>")
    open_ = allf[allf["status"] == "open"]
    parts.append("<h3>Open findings (still under investigation)</h3>")
    parts.append(_table(open_[["finding_id", "severity", "title", "status", "rows", "created_by",
                               "created_at"]].rename(columns={"rows": "evidence rows"})))
    rest = allf[allf["status"].isin(["false_positive", "closed"])
                & ~allf["finding_id"].isin(shown["finding_id"])]
    if len(rest):
        last = hist.groupby("finding_id").tail(1).set_index("finding_id")["comment"]
        rest = rest.assign(reason=rest["finding_id"].map(last))
        parts.append("<h3>Closed without confirmation, and false positives</h3>")
        parts.append(_table(rest[["finding_id", "severity", "title", "status", "updated_by", "updated_at",
                                  "reason"]]))
    evidence = pd.concat(evidence_frames, ignore_index=True) if evidence_frames else pd.DataFrame()
    return ReportSection("Analyst findings", _STYLE + "\n".join(parts),
                         {"findings": allf, "evidence": evidence})


def _summary(allf: pd.DataFrame) -> str:
    if not len(allf):
        return "No findings have been recorded in this case."
    counts = allf["status"].value_counts()
    words = {"confirmed": "confirmed", "open": "open", "false_positive": "false positive", "closed": "closed"}
    return "Findings: " + ", ".join(f"{int(counts[s])} {w}" for s, w in words.items() if s in counts) + "."


def _key_text(row_key: str) -> str:
    import json

    d = {k: v for k, v in json.loads(row_key).items() if v is not None}
    return ", ".join(f"{k}={v}" for k, v in d.items()) if len(d) > 1 else str(next(iter(d.values()), ""))


# ---- control review ------------------------------------------------------------------


def control_review_section(case: Case, controls: pd.DataFrame | None = None) -> ReportSection:
    """The post-incident control review: scores per area and the suggested improvements.

    Scores come from the analysts' ratings (documentary × instrumental matrix,
    :data:`forensics.controls.MATRIX`), averaged per ISO/IEC 27002 area over
    the rated controls. Where the case's evidence bears on a control, what it
    showed is listed beside the rating (or as a suggestion awaiting a rating).
    Improvements are grouped as policy, configuration changes, new controls
    and training, weakest controls first.

    Args:
        case: the case.
        controls: the checklist (default: :func:`forensics.controls.load_controls`).

    Returns:
        The section; ``tables`` holds ``areas``, ``evidence`` and ``improvements``.
    """
    cl = controls if controls is not None else ctl.load_controls(case)
    areas = ctl.area_scores(case, cl)
    checklist = ctl.checklist(case, cl)
    sugg = ctl.suggest_evidence(case, cl)
    imp = ctl.improvements(case, cl)
    rated = int(areas["rated"].sum())
    authors = sorted(set(checklist["author"].dropna()))
    parts = [f"<p>{rated} of {len(cl)} controls rated"
             + (f" by {_e(', '.join(authors))}" if authors else "")
             + ". Score per control: documentary × instrumental matrix (0 to 1); per area: the mean of "
               "its rated controls.</p>"]
    view = pd.DataFrame({
        "area": [f"{int(n)}. {a}" if pd.notna(n) else a for n, a in zip(areas["area_no"], areas["area"],
                                                                         strict=True)],
        "rated": [f"{r} of {c}" for r, c in zip(areas["rated"], areas["controls"], strict=True)],
        "score": [f"{s:.2f}" if pd.notna(s) else "not rated" for s in areas["score"]],
        "weakest control": areas["weakest"]})
    parts.append(_table(view))
    ev = sugg.merge(checklist[["control_id", "instrumental", "score"]], on="control_id", how="left")
    ev_view = pd.DataFrame({
        "area": ev["area"], "control": ev["control_id"] + " " + ev["control"],
        "evidence suggests": ev["suggested"].fillna("no evidence either way"),
        "analyst's instrumental rating": ev["instrumental"].fillna("not rated yet"),
        "what the case shows": ev["summary"]})
    parts.append("<h3>Instrumental evidence from the case</h3>")
    parts.append(_table(ev_view))
    parts.append("<h3>Suggested improvements</h3>")
    if not len(imp):
        parts.append("<p><em>No rated control scores below 1.</em></p>")
    for kind, title in _KIND_TITLES.items():
        k = imp[imp["improvement_kind"] == kind]
        if not len(k):
            continue
        parts.append(f"<h4>{_e(title)}</h4>")
        parts.append(_table(pd.DataFrame({
            "control": k["control_id"] + " " + k["control"], "score": k["score"].map("{:.2f}".format),
            "improvement": k["improvement"], "analyst comment": k["comment"]})))
    other = imp[~imp["improvement_kind"].isin(list(_KIND_TITLES))]
    if len(other):
        parts.append("<h4>Other</h4>" + _table(other[["control_id", "control", "score", "improvement"]]))
    return ReportSection("Post-incident control review", _STYLE + "\n".join(parts),
                         {"areas": areas, "evidence": sugg.drop(columns=["evidence"]), "improvements": imp})


def area_chart(case: Case, controls: pd.DataFrame | None = None) -> Figure:
    """A horizontal bar chart of the area scores (unrated areas shown empty)."""
    import matplotlib.pyplot as plt

    areas = ctl.area_scores(case, controls)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(areas) + 1))
    labels = [f"{int(n)}. {a}" if pd.notna(n) else str(a) for n, a in zip(areas["area_no"], areas["area"],
                                                                           strict=True)]
    ax.barh(labels, areas["score"].fillna(0), color=["#c0392b" if s < 0.5 else "#e67e22" if s < 0.75
                                                     else "#27ae60" for s in areas["score"].fillna(0)])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("score (mean of rated controls)")
    ax.set_title("Control review per ISO/IEC 27002 area")
    fig.tight_layout()
    plt.close(fig)
    return fig
