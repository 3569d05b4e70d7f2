"""From a referenced row back to evidence bytes; export and import of the analysts' work.

Public through :mod:`forensics.findings`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from forensics._rowref import (
    CURRENT_NOTES,
    CURRENT_ROWS,
    CURRENT_TAGS,
    finding_id_of,
    has_table,
    insert,
    key_columns,
    key_match_sql,
    missing_rows,
    now,
    row_keys,
    table_columns,
    transaction,
)
from forensics.errors import CaseError
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["WORKFLOW_TABLES", "evidence_bytes", "export_workflow", "import_workflow", "lineage",
           "resolve_rows"]

WORKFLOW_TABLES = ("tags", "notes", "findings", "finding_history", "finding_rows", "control_ratings")
_FORMAT = "breachbook-workflow"


def resolve_rows(case: Case, finding_id: str, *, max_packets: int = 1000) -> pd.DataFrame:
    """The rows behind a finding, each with its lineage back to evidence bytes.

    Args:
        case: the case.
        finding_id: the finding (a unique prefix is enough).
        max_packets: at most this many packets listed per session.

    Returns:
        One row per referenced row: ``finding_id``, ``table_name``, ``row_key``,
        ``comment``, and the columns of :func:`lineage`.
    """
    fid = finding_id_of(case, finding_id)
    refs = case.sql(f"SELECT table_name, row_key, comment FROM {CURRENT_ROWS} WHERE finding_id = ? "
                    "ORDER BY table_name, row_key", [fid])
    parts = []
    for table, grp in refs.groupby("table_name", sort=True):
        keys = [json.loads(k) for k in grp["row_key"]]
        lin = lineage(case, str(table), keys, max_packets=max_packets)
        lin = lin.merge(grp[["row_key", "comment"]], on="row_key", how="left")
        parts.append(lin)
    cols = ["finding_id", "table_name", "row_key", "comment", *_LINEAGE_COLS]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "finding_id", fid)
    return out[cols]


_LINEAGE_COLS = ["found", "evidence_id", "evidence_name", "evidence_path", "sha256", "locator",
                 "frames", "offsets", "lengths", "row"]


def lineage(case: Case, table: str, keys: Any, *, max_packets: int = 1000) -> pd.DataFrame:
    """Rows of a table with their lineage: evidence file, frames, byte offsets.

    Sessions lead to their packets (frame number, file offset and captured
    length of each); a packet row to its own frame; log and application rows to
    the byte offset (and line, record id, zip member) of their record.

    Args:
        case: the case.
        table: the table.
        keys: one key or many (as for :func:`forensics.findings.tag`).
        max_packets: at most this many packets listed per session.

    Returns:
        One row per key: ``table_name``, ``row_key``, ``found`` (the row is in
        the case), ``evidence_id``, ``evidence_name``, ``evidence_path``,
        ``sha256``, ``locator`` (in words), ``frames``, ``offsets`` and
        ``lengths`` (lists; a length is None where the record's length is not
        recorded), and ``row`` (the row's columns as a dict).
    """
    cols, ks = row_keys(table, keys)
    if not has_table(case, table):
        return pd.DataFrame([{"table_name": table, "row_key": k, "found": False} for k in ks],
                            columns=["table_name", "row_key", *_LINEAGE_COLS])
    have = table_columns(case, table)
    case.con.register("_bb_keys", pa.table({"row_key": pa.array(ks, pa.string())}))
    try:
        rows = case.sql(f"SELECT k.row_key AS _bb_row_key, t.* FROM _bb_keys k LEFT JOIN {table} t "
                        f"ON {key_match_sql(cols, 't', 'k.row_key')}")
    finally:
        case.con.unregister("_bb_keys")
    rows = rows.drop_duplicates("_bb_row_key")
    ev = case.sql("SELECT evidence_id, name, path, sha256 FROM evidence").set_index("evidence_id")
    packets = _session_packets(case, rows, max_packets) if ("first_frame" in have and "uid" in have) else {}
    out = []
    for r in rows.to_dict("records"):
        key = r.pop("_bb_row_key")
        found = any(r.get(c) is not None and not _na(r.get(c)) for c in cols)
        eid = r.get("evidence_id") if found else None
        e = ev.loc[eid] if eid is not None and not _na(eid) and eid in ev.index else None
        frames, offsets, lengths, locator = _locate(r, packets) if found else ([], [], [], "not in this case")
        out.append({
            "table_name": table, "row_key": key, "found": found, "evidence_id": eid,
            "evidence_name": None if e is None else e["name"],
            "evidence_path": None if e is None else e["path"],
            "sha256": None if e is None else e["sha256"], "locator": locator, "frames": frames,
            "offsets": offsets, "lengths": lengths,
            "row": {k: v for k, v in r.items() if not (v is None or _na(v))} if found else {},
        })
    return pd.DataFrame(out, columns=["table_name", "row_key", *_LINEAGE_COLS])


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _session_packets(case: Case, rows: pd.DataFrame, limit: int) -> dict[str, pd.DataFrame]:
    uids = [u for u in rows["uid"].dropna().unique().tolist()] if "uid" in rows else []
    if not uids:
        return {}
    df = case.sql(f"""
        SELECT uid, frame, file_offset, caplen, count(*) OVER (PARTITION BY uid) AS n
        FROM packets WHERE uid IN ({', '.join('?' * len(uids))})
        QUALIFY row_number() OVER (PARTITION BY uid ORDER BY frame, tunnel_depth) <= {int(limit)}
        ORDER BY uid, frame""", uids)
    return {str(u): g for u, g in df.groupby("uid", sort=False)}


def _locate(r: dict[str, Any], packets: dict[str, pd.DataFrame]
            ) -> tuple[list[int], list[int], list[int | None], str]:
    """Frames, byte offsets, lengths and a sentence saying where a row came from."""
    if r.get("file_offset") is not None and r.get("caplen") is not None and not _na(r["file_offset"]):
        f, o, n = int(r["frame"]), int(r["file_offset"]), int(r["caplen"])
        return [f], [o], [n], f"frame {f} at byte {o} ({n} bytes captured)"
    uid = r.get("uid")
    if "first_frame" in r and uid is not None and str(uid) in packets:
        g = packets[str(uid)]
        frames = [int(x) for x in g["frame"]]
        offsets = [int(x) for x in g["file_offset"]]
        lengths: list[int | None] = [int(x) for x in g["caplen"]]
        total = int(g["n"].iloc[0])
        shown = "" if total == len(frames) else f" (first {len(frames)} listed)"
        return frames, offsets, lengths, (f"{total} packets, frames {r.get('first_frame')}–"
                                          f"{r.get('last_frame')}, first at byte {offsets[0]}{shown}")
    if r.get("record_offset") is not None and not _na(r["record_offset"]):
        o = int(r["record_offset"])
        words = [f"record at byte {o}"]
        if r.get("line") is not None and not _na(r["line"]):
            words.append(f"line {int(r['line'])}")
        if r.get("record_id") is not None and not _na(r["record_id"]):
            words.append(f"record id {int(r['record_id'])}")
        if r.get("member") is not None and not _na(r["member"]):
            words[0] += f" of zip member {r['member']} (decompressed)"
        return [], [o], [None], ", ".join(words)
    if r.get("first_frame") is not None and not _na(r["first_frame"]):
        return [int(r["first_frame"])], [], [], f"first frame {int(r['first_frame'])}"
    return [], [], [], "derived row (no byte offset recorded)"


def evidence_bytes(case: Case, evidence_id: str, offset: int, length: int) -> bytes:
    """Read bytes of an evidence file (opened read-only) at an offset from its lineage.

    Raises:
        CaseError: unknown evidence, or the file is no longer where it was registered.
    """
    ev = case.sql("SELECT path FROM evidence WHERE evidence_id = ?", [evidence_id])
    if not len(ev):
        raise CaseError(f"no evidence {evidence_id!r} in the case")
    p = Path(ev["path"].iloc[0])
    if not p.exists():
        raise CaseError(f"evidence {evidence_id} is no longer at {p}")
    with p.open("rb") as fh:
        fh.seek(int(offset))
        return fh.read(int(length))


# ---- export / import -----------------------------------------------------------------


def export_workflow(case: Case, path: str | Path) -> Path:
    """Write the analysts' work (tags, notes, findings, history, ratings) to a JSON file.

    Together with the evidence it refers to (listed by SHA-256 in the file) it
    re-creates the work in a case rebuilt from the same evidence: row keys are
    deterministic, so the references hold. See :func:`import_workflow`.

    Returns:
        The path written.
    """
    out: dict[str, Any] = {"format": _FORMAT, "version": 1, "exported_at": now().isoformat(),
                           "case": case.path.name, "tables": {}}
    out["evidence"] = case.sql("SELECT evidence_id, sha256, name, size FROM evidence "
                               "ORDER BY evidence_id").to_dict("records")
    for t in WORKFLOW_TABLES:
        df = case.sql(f"SELECT * FROM {t}")
        out["tables"][t] = [{k: _jsonable(v) for k, v in r.items()} for r in df.to_dict("records")]
    p = Path(path)
    p.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return p


def _jsonable(v: Any) -> Any:
    if v is None or _na(v):
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


def import_workflow(case: Case, path: str | Path) -> dict[str, int]:
    """Merge work exported by :func:`export_workflow` into this case (idempotent).

    Rows already present (same id) are skipped, so importing twice, or importing
    the exports of two analysts who started from the same file, adds each
    action once. Findings' current states are rebuilt from the merged history.

    Returns:
        Rows added per table, and ``unresolved``: references to rows that are not
        in this case (evidence not ingested yet, or different evidence).

    Raises:
        CaseError: the file is not a Breachbook workflow export.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise CaseError(f"{path} is not a Breachbook workflow export")
    counts: dict[str, int] = {}
    touched: set[str] = set()
    with transaction(case):
        for t in ("tags", "notes", "finding_history", "finding_rows", "control_ratings"):
            decl = TABLES[t]
            idcol = decl.key[0]
            have = set(case.sql(f"SELECT {idcol} FROM {t}")[idcol])
            times = [c.name for c in decl.columns if c.type == "TIMESTAMPTZ"]
            new = []
            for r in data.get("tables", {}).get(t, []):
                if r.get(idcol) in have:
                    continue
                row = {c: r.get(c) for c in decl.names}
                for c in times:
                    row[c] = datetime.fromisoformat(row[c]) if row[c] else None
                new.append(row)
            insert(case, t, new)
            counts[t] = len(new)
            if t == "finding_history":
                touched |= {r["finding_id"] for r in new}
        for fid in sorted(touched):
            _project(case, fid)
    counts["findings"] = len(touched)
    counts["unresolved"] = _unresolved(case)
    return counts


def _project(case: Case, fid: str) -> None:
    """Set a finding's current state from its history (latest version wins)."""
    h = case.sql("SELECT * FROM finding_history WHERE finding_id = ? ORDER BY recorded_at, history_id", [fid])
    first, last = h.iloc[0], h.iloc[-1]
    vals = [last["title"], last["severity"], last["status"], last["description"], last["recorded_at"],
            last["author"], len(h)]
    if len(case.sql("SELECT 1 FROM findings WHERE finding_id = ?", [fid])):
        case.con.execute("UPDATE findings SET title = ?, severity = ?, status = ?, description = ?, "
                         "updated_at = ?, updated_by = ?, version = ? WHERE finding_id = ?", [*vals, fid])
    else:
        insert(case, "findings", [{
            "finding_id": fid, "title": vals[0], "severity": vals[1], "status": vals[2],
            "description": vals[3], "created_at": first["recorded_at"].to_pydatetime(),
            "created_by": first["author"],
            "updated_at": last["recorded_at"].to_pydatetime(), "updated_by": vals[5], "version": len(h)}])


def _unresolved(case: Case) -> int:
    refs = case.sql(f"""
        SELECT DISTINCT table_name, row_key FROM (
            SELECT table_name, row_key FROM {CURRENT_TAGS}
            UNION ALL SELECT table_name, row_key FROM {CURRENT_ROWS}
            UNION ALL SELECT table_name, row_key FROM {CURRENT_NOTES} WHERE row_key IS NOT NULL)""")
    n = 0
    for table, grp in refs.groupby("table_name"):
        ks: Iterable[str] = grp["row_key"].tolist()
        if not has_table(case, str(table)):
            n += len(grp)
            continue
        cols = key_columns(str(table), json.loads(grp["row_key"].iloc[0]))
        n += len(missing_rows(case, str(table), cols, list(ks)))
    return n
