"""Tags, notes and findings: the analysts' work, kept in the case beside the evidence.

::

    from forensics import findings
    findings.tag(case, "sessions", ["C4f1...", "C9a0..."], "c2")
    cond, params = findings.tag_filter("sessions", "c2")
    case.sql("SELECT * FROM sessions WHERE " + cond, params)
    fid = findings.finding(case, "Beaconing to 203.0.113.7", "high", rows={"sessions": ["C4f1..."]})
    findings.note(case, "Interval 60 s ± 2 s", finding_id=fid)
    findings.update_finding(case, fid, status="confirmed", comment="matches the proxy log")
    findings.resolve_rows(case, fid)   # each row with its evidence file, frames and byte offsets

Rows are referred to by table and key (see :mod:`forensics.tables.workflow`):
keys are deterministic, so tags and findings survive reopening the case, a
re-ingest, and (through :func:`export_workflow` / :func:`import_workflow`) a
case rebuilt from the same evidence. Every write records its author and a
tz-aware UTC time, runs in one transaction, and only appends: nothing is
deleted, an action is undone by a later one.

Concurrency: DuckDB lets one process open a case for writing, and no other
process can open it at all (not even read-only) until that writer closes it.
Inside the writing process, readers on other cursors (``case.con.cursor()``)
see a consistent snapshot: a note, or a finding with its history and rows,
appears to them all at once when its transaction commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._lineage import (
    WORKFLOW_TABLES,
    evidence_bytes,
    export_workflow,
    import_workflow,
    lineage,
    resolve_rows,
)
from forensics._rowref import (
    CURRENT_NOTES,
    CURRENT_ROWS,
    CURRENT_TAGS,
    default_author,
    finding_id_of,
    insert,
    key_columns,
    key_match_sql,
    missing_rows,
    new_id,
    now,
    row_keys,
    split_keys,
    transaction,
)
from forensics.errors import CaseError

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = [
    "SEVERITIES",
    "STATUSES",
    "WORKFLOW_TABLES",
    "add_rows",
    "default_author",
    "evidence_bytes",
    "export_workflow",
    "finding",
    "finding_history",
    "finding_rows",
    "get_finding",
    "import_workflow",
    "lineage",
    "list_findings",
    "note",
    "notes",
    "remove_rows",
    "resolve_rows",
    "row_keys",
    "split_keys",
    "tag",
    "tag_filter",
    "tag_labels",
    "tagged_keys",
    "tags_for",
    "untag",
    "update_finding",
    "with_tags",
]

SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("open", "confirmed", "false_positive", "closed")


Rows = Mapping[str, Any] | Iterable[tuple[str, Any]]


# ---- tags ----------------------------------------------------------------------------


def tag(case: Case, table: str, keys: Any, label: str, *, author: str | None = None,
        comment: str | None = None, check: bool = True) -> int:
    """Tag rows of a table (idempotent: rows that already carry the tag are left alone).

    Args:
        case: the case (open for writing).
        table: table of the rows (``sessions``, ``events``, ``files``, ...).
        keys: one key or many: a session uid, a list of uids, a tuple or dict for
            tables with composite keys, or a DataFrame of selected rows.
        label: the tag, e.g. ``"c2"``.
        author: who tags; defaults to ``$BREACHBOOK_AUTHOR`` or ``user@host``.
        comment: why (optional).
        check: refuse keys that match no row of the case.

    Returns:
        The number of rows newly tagged.

    Raises:
        CaseError: the case is read-only, the table does not exist, or (with
            ``check``) a key matches no row.
    """
    label = _label(label)
    cols, keys_ = row_keys(table, keys)
    if check:
        _require_rows(case, table, cols, keys_)
    have = set(case.sql(f"SELECT row_key FROM {CURRENT_TAGS} WHERE table_name = ? AND label = ?",
                        [table, label])["row_key"])
    new = [k for k in keys_ if k not in have]
    return _tag_actions(case, table, new, label, "add", author, comment)


def untag(case: Case, table: str, keys: Any, label: str, *, author: str | None = None,
          comment: str | None = None) -> int:
    """Remove a tag from rows (recorded as a ``remove`` action; the ``add`` stays in history).

    Args:
        case: the case (open for writing).
        table: table of the rows.
        keys: one key or many (as for :func:`tag`).
        label: the tag to remove.
        author: who removes it.
        comment: why (optional).

    Returns:
        The number of rows that carried the tag and no longer do.
    """
    label = _label(label)
    _, keys_ = row_keys(table, keys)
    have = set(case.sql(f"SELECT row_key FROM {CURRENT_TAGS} WHERE table_name = ? AND label = ?",
                        [table, label])["row_key"])
    return _tag_actions(case, table, [k for k in keys_ if k in have], label, "remove", author, comment)


def _tag_actions(case: Case, table: str, keys: list[str], label: str, action: str,
                 author: str | None, comment: str | None) -> int:
    who = author or default_author()
    rows = [{"tag_id": new_id(), "recorded_at": now(), "author": who, "action": action, "table_name": table,
             "row_key": k, "label": label, "comment": comment} for k in keys]
    with transaction(case):
        insert(case, "tags", rows)
    return len(rows)


def tags_for(case: Case, table: str | None = None, keys: Any = None, label: str | None = None
             ) -> pd.DataFrame:
    """Current tags, optionally of one table, some rows or one label.

    Returns:
        One row per tagged row and label: ``table_name``, ``row_key``, ``label``,
        ``recorded_at`` (when tagged), ``author``, ``comment``.
    """
    where, params = ["true"], []
    if table:
        where.append("table_name = ?")
        params.append(table)
    if label:
        where.append("label = ?")
        params.append(label)
    df = case.sql(f"SELECT table_name, row_key, label, recorded_at, author, comment FROM {CURRENT_TAGS} "
                  f"WHERE {' AND '.join(where)} ORDER BY table_name, row_key, label", params)
    if keys is not None:
        if not table:
            raise ValueError("keys need a table")
        df = df[df["row_key"].isin(row_keys(table, keys)[1])].reset_index(drop=True)
    return df


def tag_labels(case: Case, table: str | None = None) -> pd.DataFrame:
    """Labels in use with the number of rows carrying each (for filter menus)."""
    where = "WHERE table_name = ?" if table else ""
    return case.sql(f"SELECT label, count(*) AS rows FROM {CURRENT_TAGS} {where} "
                    "GROUP BY label ORDER BY rows DESC, label", [table] if table else None)


def tag_filter(table: str, label: str, *, alias: str | None = None,
               key: Iterable[str] | None = None) -> tuple[str, list[Any]]:
    """A SQL condition selecting the rows of ``table`` that carry ``label``.

    Use it in any query over the table, e.g.
    ``sql, params = tag_filter("sessions", "c2")`` then
    ``case.sql("SELECT * FROM sessions WHERE " + sql, params)``.

    Args:
        table: the table the condition is for.
        label: the tag.
        alias: the alias the table has in the query (default: its name).
        key: key columns, only for tables Breachbook does not declare.

    Returns:
        The condition (with ``?`` placeholders) and its parameters.
    """
    cols = key_columns(table, key)
    row = alias or table
    if len(cols) == 1:
        c = cols[0]
        cond = (f"CAST({row}.{c} AS VARCHAR) IN (SELECT json_extract_string(row_key, '$.{c}') "
                f"FROM {CURRENT_TAGS} WHERE table_name = ? AND label = ?)")
    else:
        cond = (f"EXISTS (SELECT 1 FROM {CURRENT_TAGS} _t WHERE _t.table_name = ? AND _t.label = ? "
                f"AND {key_match_sql(cols, row, '_t.row_key')})")
    return cond, [table, label]


def tagged_keys(case: Case, table: str, label: str) -> pd.DataFrame:
    """Key columns of the rows of ``table`` tagged ``label`` (one row per tagged row)."""
    df = case.sql(f"SELECT row_key FROM {CURRENT_TAGS} WHERE table_name = ? AND label = ? "
                  "ORDER BY row_key", [table, label])
    try:
        cols = list(key_columns(table, _key_of(df)))
    except ValueError:  # an undeclared table with nothing tagged: no key columns known
        cols = []
    return pd.DataFrame([json.loads(k) for k in df["row_key"]], columns=cols)


def with_tags(case: Case, table: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (rows of ``table``) with a ``tags`` column: the labels of each row, sorted.

    Timelines and tables in the widgets use this to show tags beside the rows.
    """
    out = df.copy()
    if not len(df):
        out["tags"] = pd.Series(dtype=object)
        return out
    _, keys = row_keys(table, df)
    current = tags_for(case, table)
    by_key = current.groupby("row_key")["label"].agg(sorted).to_dict() if len(current) else {}
    out["tags"] = [by_key.get(k, []) for k in keys] if len(keys) == len(df) else [
        by_key.get(row_keys(table, [r])[1][0], []) for r in df.to_dict("records")]
    return out


# ---- notes ---------------------------------------------------------------------------


def note(case: Case, text: str, *, table: str | None = None, keys: Any = None,
         finding_id: str | None = None, supersedes: str | None = None,
         author: str | None = None, check: bool = True) -> str:
    """Write a note on the case, on one row, or on a finding.

    Args:
        case: the case (open for writing).
        text: the note, plain text (escaped wherever it is shown as HTML).
        table: with ``keys``: the row the note is about.
        keys: the key of that one row.
        finding_id: the finding the note is about.
        supersedes: id of an earlier note this one corrects (the earlier one is
            kept, and no longer listed by :func:`notes`).
        author: who writes it.
        check: refuse a row key that matches no row.

    Returns:
        The new note's id.
    """
    if not text or not text.strip():
        raise ValueError("a note needs text")
    row_key = None
    if table is not None or keys is not None:
        if table is None or keys is None:
            raise ValueError("a note on a row needs both table and keys")
        cols, ks = row_keys(table, keys)
        if len(ks) != 1:
            raise ValueError(f"a note is about one row, not {len(ks)}; write one note per row")
        if check:
            _require_rows(case, table, cols, ks)
        row_key = ks[0]
    if finding_id is not None:
        finding_id = finding_id_of(case, finding_id)
    if supersedes is not None and not len(case.sql("SELECT 1 FROM notes WHERE note_id = ?", [supersedes])):
        raise CaseError(f"no note {supersedes!r} to supersede")
    nid = new_id()
    with transaction(case):
        insert(case, "notes", [{"note_id": nid, "recorded_at": now(), "author": author or default_author(),
                                "text": text, "table_name": table, "row_key": row_key,
                                "finding_id": finding_id, "supersedes": supersedes}])
    return nid


def notes(case: Case, *, table: str | None = None, keys: Any = None, finding_id: str | None = None,
          include_superseded: bool = False) -> pd.DataFrame:
    """Notes, newest first; superseded notes only when asked for."""
    where, params = ["true"], []
    if table:
        where.append("table_name = ?")
        params.append(table)
    if keys is not None:
        if not table:
            raise ValueError("keys need a table")
        ks = row_keys(table, keys)[1]
        where.append(f"row_key IN ({', '.join('?' * len(ks))})")
        params += ks
    if finding_id:
        where.append("finding_id = ?")
        params.append(finding_id_of(case, finding_id))
    src = "notes" if include_superseded else CURRENT_NOTES
    return case.sql(f"SELECT * FROM {src} WHERE {' AND '.join(where)} ORDER BY recorded_at DESC", params)


# ---- findings ------------------------------------------------------------------------


def finding(case: Case, title: str, severity: str, rows: Rows | None = None, status: str = "open", *,
            description: str = "", author: str | None = None, check: bool = True) -> str:
    """Open a finding, optionally with the rows that support it.

    Args:
        case: the case (open for writing).
        title: short statement of what was found.
        severity: one of :data:`SEVERITIES`.
        rows: rows of the case behind it: ``{"sessions": [uid, ...], "events": [{...}]}``
            or an iterable of ``(table, key)`` pairs.
        status: one of :data:`STATUSES` (usually ``open``).
        description: what it means and why the analyst believes it.
        author: who opens it.
        check: refuse row keys that match no row.

    Returns:
        The finding id (``F-`` and ten hex digits).
    """
    _check_choice("severity", severity, SEVERITIES)
    _check_choice("status", status, STATUSES)
    if not title.strip():
        raise ValueError("a finding needs a title")
    refs = _refs(case, rows, check)
    fid, who, t = new_id("F-"), author or default_author(), now()
    with transaction(case):
        insert(case, "finding_history", [{
            "history_id": new_id(), "finding_id": fid, "version": 1, "recorded_at": t, "author": who,
            "title": title, "severity": severity, "status": status, "description": description,
            "comment": "opened"}])
        insert(case, "findings", [{
            "finding_id": fid, "title": title, "severity": severity, "status": status,
            "description": description, "created_at": t, "created_by": who, "updated_at": t,
            "updated_by": who, "version": 1}])
        _row_actions(case, fid, refs, "add", who, None)
    return fid


def update_finding(case: Case, finding_id: str, *, status: str | None = None, title: str | None = None,
                   severity: str | None = None, description: str | None = None,
                   comment: str | None = None, author: str | None = None) -> int:
    """Change a finding: a new version in ``finding_history``; earlier versions stay.

    Args:
        case: the case (open for writing).
        finding_id: the finding (a unique prefix is enough).
        status: new status (``open``, ``confirmed``, ``false_positive``, ``closed``).
        title: new title.
        severity: new severity.
        description: new description.
        comment: why it changed (a comment alone records a reviewed-unchanged version).
        author: who changes it.

    Returns:
        The new version number.
    """
    fid = finding_id_of(case, finding_id)
    if status is not None:
        _check_choice("status", status, STATUSES)
    if severity is not None:
        _check_choice("severity", severity, SEVERITIES)
    cur = get_finding(case, fid)
    new = {"title": title, "severity": severity, "status": status, "description": description}
    state = {k: (v if v is not None else cur[k]) for k, v in new.items()}
    if all(state[k] == cur[k] for k in state) and not comment:
        raise ValueError("nothing to change: give a new status, title, severity, description or a comment")
    who, t = author or default_author(), now()
    version = int(cur["version"]) + 1
    with transaction(case):
        insert(case, "finding_history", [{"history_id": new_id(), "finding_id": fid, "version": version,
                                          "recorded_at": t, "author": who, "comment": comment, **state}])
        case.con.execute(
            "UPDATE findings SET title = ?, severity = ?, status = ?, description = ?, updated_at = ?, "
            "updated_by = ?, version = ? WHERE finding_id = ?",
            [state["title"], state["severity"], state["status"], state["description"], t, who, version, fid])
    return version


def add_rows(case: Case, finding_id: str, rows: Rows, *, author: str | None = None,
             comment: str | None = None, check: bool = True) -> int:
    """Add rows of the case to a finding as its evidence; returns how many were new to it."""
    fid = finding_id_of(case, finding_id)
    have = set(map(tuple, finding_rows(case, fid)[["table_name", "row_key"]].to_numpy().tolist()))
    refs = [r for r in _refs(case, rows, check) if r not in have]
    with transaction(case):
        _row_actions(case, fid, refs, "add", author or default_author(), comment)
    return len(refs)


def remove_rows(case: Case, finding_id: str, rows: Rows, *, author: str | None = None,
                comment: str | None = None) -> int:
    """Take rows off a finding (recorded; the earlier add stays in the table)."""
    fid = finding_id_of(case, finding_id)
    have = set(map(tuple, finding_rows(case, fid)[["table_name", "row_key"]].to_numpy().tolist()))
    refs = [r for r in _refs(case, rows, False) if r in have]
    with transaction(case):
        _row_actions(case, fid, refs, "remove", author or default_author(), comment)
    return len(refs)


def list_findings(case: Case, status: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Findings in their current state, most severe first.

    Args:
        case: the case.
        status: only findings with this status (or any of these).

    Returns:
        ``finding_id``, ``title``, ``severity``, ``status``, ``rows`` (number of
        rows behind it), ``notes``, ``created_at``, ``created_by``, ``updated_at``,
        ``updated_by``, ``version``, ``description``.
    """
    where, params = "", []
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        for s in wanted:
            _check_choice("status", s, STATUSES)
        where = f"WHERE f.status IN ({', '.join('?' * len(wanted))})"
        params = wanted
    order = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SEVERITIES))
    return case.sql(f"""
        SELECT f.finding_id, f.title, f.severity, f.status,
               (SELECT count(*) FROM {CURRENT_ROWS} r WHERE r.finding_id = f.finding_id) AS rows,
               (SELECT count(*) FROM {CURRENT_NOTES} n WHERE n.finding_id = f.finding_id) AS notes,
               f.created_at, f.created_by, f.updated_at, f.updated_by, f.version, f.description
        FROM findings f {where}
        ORDER BY CASE f.severity {order} END DESC, f.created_at, f.finding_id""", params)


def get_finding(case: Case, finding_id: str) -> dict[str, Any]:
    """One finding's current state as a dict (a unique prefix of the id is enough)."""
    fid = finding_id_of(case, finding_id)
    row = case.sql("SELECT * FROM findings WHERE finding_id = ?", [fid]).iloc[0]
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def finding_history(case: Case, finding_id: str) -> pd.DataFrame:
    """Every version of a finding, oldest first, with who changed it, when and why."""
    return case.sql("SELECT * FROM finding_history WHERE finding_id = ? ORDER BY version, recorded_at",
                    [finding_id_of(case, finding_id)])


def finding_rows(case: Case, finding_id: str) -> pd.DataFrame:
    """Rows currently behind a finding: ``table_name``, ``row_key``, ``at``, ``author``, ``comment``."""
    return case.sql(f"SELECT table_name, row_key, recorded_at, author, comment FROM {CURRENT_ROWS} "
                    "WHERE finding_id = ? ORDER BY table_name, row_key", [finding_id_of(case, finding_id)])


# ---- helpers -------------------------------------------------------------------------


def _label(label: str) -> str:
    label = (label or "").strip()
    if not label:
        raise ValueError("a tag needs a label")
    return label


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def _key_of(df: pd.DataFrame) -> list[str] | None:
    return list(json.loads(df["row_key"].iloc[0])) if len(df) else None


def _require_rows(case: Case, table: str, cols: tuple[str, ...], keys: list[str]) -> None:
    missing = missing_rows(case, table, cols, keys)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CaseError(f"no row of {table} has key {', '.join(missing[:3])}{more}")


def _refs(case: Case, rows: Rows | None, check: bool) -> list[tuple[str, str]]:
    if rows is None:
        return []
    pairs: list[tuple[str, Any]] = []
    if isinstance(rows, Mapping):
        pairs = [(t, k) for t, keys in rows.items() for k in split_keys(keys)]
    else:
        pairs = list(rows)
    by_table: dict[str, list[Any]] = {}
    for t, k in pairs:
        by_table.setdefault(t, []).append(k)
    out: list[tuple[str, str]] = []
    for t, keys in by_table.items():
        cols, ks = row_keys(t, keys)
        if check:
            _require_rows(case, t, cols, ks)
        out += [(t, k) for k in ks]
    return out


def _row_actions(case: Case, fid: str, refs: list[tuple[str, str]], action: str, who: str,
                 comment: str | None) -> None:
    insert(case, "finding_rows", [{
        "ref_id": new_id(), "finding_id": fid, "recorded_at": now(), "author": who, "action": action,
        "table_name": t, "row_key": k, "comment": comment} for t, k in refs])
