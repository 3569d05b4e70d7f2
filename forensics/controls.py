"""Post-incident control review: a checklist of ISO/IEC 27002 (17799) controls, rated and scored.

The checklist is data (``data/controls/iso27002.csv``): one row per control,
grouped by the eleven areas of the standard, each with the question to ask, a
suggested improvement and its kind (policy, configuration, new control,
training). Users extend or override it with their own CSV files of the same
columns, in ``<case>/controls/*.csv`` or passed explicitly; a row with an
existing ``control_id`` replaces the shipped one.

Each control gets two ratings, as in the audit method our users follow:
documentary confirmation (``not_established``, ``partly``, ``fully``) and
instrumental confirmation (``not_fulfilled``, ``partly``, ``fully``), scored by
:data:`MATRIX`. Where the case holds evidence for a control, a *probe* (named
in the CSV's ``probe`` column) suggests the instrumental rating and shows the
evidence; the analyst confirms or overrides it. Ratings are appended to the
``control_ratings`` table (the latest per control counts) and roll up per area
as the mean score of the rated controls.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._probes import PROBES, Suggestion, logging_coverage
from forensics._rowref import default_author, insert, latest_sql, new_id, now, transaction

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = [
    "AREAS",
    "CHECKLIST",
    "DOCUMENTARY",
    "IMPROVEMENT_KINDS",
    "INSTRUMENTAL",
    "MATRIX",
    "PROBES",
    "Suggestion",
    "accept_suggestions",
    "area_scores",
    "checklist",
    "improvements",
    "load_controls",
    "logging_coverage",
    "rate",
    "ratings",
    "score",
    "suggest_evidence",
]

CHECKLIST = Path(__file__).resolve().parent.parent / "data" / "controls" / "iso27002.csv"
COLUMNS = ("area_no", "area", "control_id", "control", "question", "probe", "improvement_kind", "improvement")

AREAS = (
    "Security policy",
    "Organisation of security",
    "Asset management and classification",
    "Personnel security",
    "Physical security",
    "Operations management",
    "Access control",
    "Acquisition, development and maintenance",
    "Incident management",
    "Business continuity",
    "Compliance",
)
DOCUMENTARY = ("not_established", "partly", "fully")
INSTRUMENTAL = ("not_fulfilled", "partly", "fully")
IMPROVEMENT_KINDS = ("policy", "configuration", "new_control", "training")

# (instrumental, documentary) -> score. Rows instrumental, columns documentary:
#                     not established  partly  fully
#   not fulfilled          0            0.25    0.5
#   partly fulfilled       0.25         0.25    0.75
#   fully fulfilled        0.5          0.75    1
MATRIX: dict[tuple[str, str], float] = {
    ("not_fulfilled", "not_established"): 0.0,
    ("not_fulfilled", "partly"): 0.25,
    ("not_fulfilled", "fully"): 0.5,
    ("partly", "not_established"): 0.25,
    ("partly", "partly"): 0.25,
    ("partly", "fully"): 0.75,
    ("fully", "not_established"): 0.5,
    ("fully", "partly"): 0.75,
    ("fully", "fully"): 1.0,
}


def score(documentary: str, instrumental: str) -> float:
    """The score of a control from its two ratings (see :data:`MATRIX`).

    Args:
        documentary: ``not_established``, ``partly`` or ``fully``.
        instrumental: ``not_fulfilled``, ``partly`` or ``fully``.

    Raises:
        ValueError: a rating is not one of those.
    """
    if documentary not in DOCUMENTARY:
        raise ValueError(f"documentary must be one of {', '.join(DOCUMENTARY)}, not {documentary!r}")
    if instrumental not in INSTRUMENTAL:
        raise ValueError(f"instrumental must be one of {', '.join(INSTRUMENTAL)}, not {instrumental!r}")
    return MATRIX[(instrumental, documentary)]


def load_controls(case: Case | None = None, extra: Iterable[str | Path] = ()) -> pd.DataFrame:
    """The checklist: the shipped controls, then the case's own, then ``extra`` files.

    Args:
        case: read ``<case>/controls/*.csv`` too.
        extra: more CSV files with the same columns.

    Returns:
        One row per control (``control_id`` unique; a later file's row replaces an
        earlier one), in area and control order.

    Raises:
        ValueError: a file lacks a column, names an unknown probe or improvement kind.
    """
    files = [CHECKLIST]
    if case is not None:
        files += sorted((case.path / "controls").glob("*.csv"))
    files += [Path(p) for p in extra]
    rows: dict[str, dict[str, Any]] = {}
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{f}: missing column(s) {missing}; expected {list(COLUMNS)}")
            for i, r in enumerate(reader, start=2):
                r = {c: (r.get(c) or "").strip() for c in COLUMNS}
                if r["probe"] and r["probe"] not in PROBES:
                    raise ValueError(f"{f}:{i}: unknown probe {r['probe']!r}; known: {sorted(PROBES)}")
                if r["improvement_kind"] and r["improvement_kind"] not in IMPROVEMENT_KINDS:
                    raise ValueError(f"{f}:{i}: improvement_kind must be one of {IMPROVEMENT_KINDS}")
                if not r["control_id"] or not r["area"]:
                    raise ValueError(f"{f}:{i}: control_id and area are required")
                rows[r["control_id"]] = r
    df = pd.DataFrame(list(rows.values()), columns=list(COLUMNS))
    df["area_no"] = pd.to_numeric(df["area_no"], errors="coerce")
    order = {a: i for i, a in enumerate(AREAS)}
    df["_area"] = [order.get(a, len(AREAS)) for a in df["area"]]
    df["_ctl"] = [tuple(int(x) if x.isdigit() else 0 for x in c.split(".")) for c in df["control_id"]]
    df = df.sort_values(["_area", "area_no", "area", "_ctl", "control_id"]).drop(columns=["_area", "_ctl"])
    return df.reset_index(drop=True)


def rate(case: Case, control_id: str, documentary: str, instrumental: str, *, evidence: str | None = None,
         comment: str | None = None, suggested: str | None = None, author: str | None = None,
         controls: pd.DataFrame | None = None) -> float:
    """Record the analyst's rating of a control (appended; the latest rating counts).

    Args:
        case: the case (open for writing).
        control_id: the control (from :func:`load_controls`).
        documentary: documentary confirmation (:data:`DOCUMENTARY`).
        instrumental: instrumental confirmation (:data:`INSTRUMENTAL`).
        evidence: what the instrumental rating rests on (e.g. a probe's summary).
        comment: the analyst's comment.
        suggested: the instrumental level the case suggested, kept for the record.
        author: who rates.
        controls: the checklist to look the control up in (default: :func:`load_controls`).

    Returns:
        The score.
    """
    s = score(documentary, instrumental)
    if suggested is not None and suggested not in INSTRUMENTAL:
        raise ValueError(f"suggested must be one of {INSTRUMENTAL}")
    ctl = controls if controls is not None else load_controls(case)
    hit = ctl[ctl["control_id"] == control_id]
    if not len(hit):
        raise ValueError(f"no control {control_id!r} in the checklist")
    c = hit.iloc[0]
    with transaction(case):
        insert(case, "control_ratings", [{
            "rating_id": new_id(), "recorded_at": now(), "author": author or default_author(),
            "control_id": control_id, "area": c["area"], "control": c["control"],
            "documentary": documentary, "instrumental": instrumental, "score": s,
            "suggested": suggested, "evidence": evidence, "comment": comment}])
    return s


def ratings(case: Case, *, history: bool = False) -> pd.DataFrame:
    """Ratings: the current one per control, or every rating ever recorded (``history``)."""
    src = "control_ratings" if history else latest_sql("control_ratings", "control_id")
    return case.sql(f"SELECT * FROM {src} ORDER BY control_id, recorded_at")


def checklist(case: Case, controls: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every control with its current rating and score (NaN where not rated yet)."""
    ctl = controls if controls is not None else load_controls(case)
    cur = ratings(case)[["control_id", "documentary", "instrumental", "score", "suggested", "evidence",
                         "comment", "author", "recorded_at"]]
    return ctl.merge(cur, on="control_id", how="left")


def area_scores(case: Case, controls: pd.DataFrame | None = None) -> pd.DataFrame:
    """Scores rolled up per area: the mean over the area's rated controls.

    Returns:
        One row per area in the standard's order: ``area_no``, ``area``,
        ``controls``, ``rated``, ``score`` (mean, NaN when nothing is rated),
        ``lowest`` (the weakest rated control's score) and ``weakest`` (its id).
    """
    cl = checklist(case, controls)
    out = []
    for area, g in cl.groupby("area", sort=False):
        rated = g[g["score"].notna()]
        weakest = rated.sort_values("score").iloc[0] if len(rated) else None
        out.append({
            "area_no": g["area_no"].iloc[0], "area": area, "controls": len(g), "rated": len(rated),
            "score": float(rated["score"].mean()) if len(rated) else float("nan"),
            "lowest": float(weakest["score"]) if weakest is not None else float("nan"),
            "weakest": weakest["control_id"] if weakest is not None else None,
        })
    return pd.DataFrame(out, columns=["area_no", "area", "controls", "rated", "score", "lowest", "weakest"])


def improvements(case: Case, controls: pd.DataFrame | None = None, below: float = 1.0) -> pd.DataFrame:
    """Suggested improvements for the rated controls scoring below ``below``, weakest first."""
    cl = checklist(case, controls)
    cl = cl[cl["score"].notna() & (cl["score"] < below)]
    cols = ["area", "control_id", "control", "score", "documentary", "instrumental", "improvement_kind",
            "improvement", "comment"]
    return cl.sort_values(["score", "area_no"], kind="stable")[cols].reset_index(drop=True)


def suggest_evidence(case: Case, controls: pd.DataFrame | None = None) -> pd.DataFrame:
    """What the case's evidence suggests for the controls that have a probe.

    Each probe runs once, however many controls name it; tables the case does
    not have (yet) make a probe say so instead of failing.

    Returns:
        One row per control with a probe: ``control_id``, ``area``, ``control``,
        ``probe``, ``suggested`` (an instrumental level, or None when the case
        has no evidence either way), ``summary`` (in words) and ``evidence``
        (a DataFrame of the rows behind it).
    """
    ctl = controls if controls is not None else load_controls(case)
    ctl = ctl[ctl["probe"] != ""]
    results: dict[str, Suggestion] = {}
    out = []
    for r in ctl.itertuples():
        probe = str(r.probe)
        if probe not in results:
            results[probe] = PROBES[probe](case)
        s = results[probe]
        out.append({"control_id": r.control_id, "area": r.area, "control": r.control, "probe": probe,
                    "suggested": s.level, "summary": s.summary, "evidence": s.evidence})
    df = pd.DataFrame(out, columns=["control_id", "area", "control", "probe", "suggested", "summary",
                                    "evidence"])
    df["suggested"] = df["suggested"].astype(object).where(df["suggested"].notna(), None)
    return df


def accept_suggestions(case: Case, documentary: str | dict[str, str] = "partly", *, author: str | None = None,
                       controls: pd.DataFrame | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Rate every control the evidence suggests a level for, as the analyst accepting the suggestions.

    The instrumental rating is the suggestion; the documentary rating (which
    evidence cannot tell) is given, for all controls or per control id.
    Controls already rated are left alone unless ``overwrite``.

    Args:
        case: the case (open for writing).
        documentary: documentary rating for all, or a dict control id -> rating
            (controls missing from the dict are skipped).
        author: who accepts them.
        controls: the checklist (default: :func:`load_controls`).
        overwrite: re-rate controls that already have a rating.

    Returns:
        The controls rated: ``control_id``, ``documentary``, ``instrumental``, ``score``.
    """
    ctl = controls if controls is not None else load_controls(case)
    rated = set(ratings(case)["control_id"])
    out = []
    for r in suggest_evidence(case, ctl).itertuples():
        if r.suggested is None or (r.control_id in rated and not overwrite):
            continue
        doc = documentary.get(str(r.control_id)) if isinstance(documentary, dict) else documentary
        if doc is None:
            continue
        s = rate(case, str(r.control_id), doc, str(r.suggested), evidence=str(r.summary),
                 suggested=str(r.suggested), comment="accepted the case's suggestion", author=author,
                 controls=ctl)
        out.append({"control_id": r.control_id, "documentary": doc, "instrumental": r.suggested, "score": s})
    return pd.DataFrame(out, columns=["control_id", "documentary", "instrumental", "score"])
