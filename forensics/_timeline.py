"""Timeline data for the report sections and the Timeline widget: events and session counts.

Private to :mod:`forensics.report_sections`, which re-exports what is public.
Every lane is read with one SQL query over the case's shared tables (logons,
alerts, files, smb_files, ftp, lateral_edges, detections, exfil), so a source
that fills a table shows up on the timeline without code here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["EVENT_COLUMNS", "LANES", "session_counts", "timeline_events", "utc", "window"]

LANES = ("sessions", "logons", "alerts", "files", "lateral", "detections", "exfiltration")
EVENT_COLUMNS = ["ts", "lane", "host", "label", "detail", "table_name", "key"]


def utc(v: Any) -> pd.Timestamp | None:
    """A time (ISO string, datetime, Timestamp; naive means UTC) as a UTC Timestamp; None when empty."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    t = pd.Timestamp(v)
    if pd.isna(t):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def window(col: str, since: Any, until: Any) -> tuple[str, list[Any]]:
    """SQL conditions (`` AND col >= ? ...``) and their parameters for a time window."""
    cond, params = [], []
    s, u = utc(since), utc(until)
    if s is not None:
        cond.append(f"{col} >= ?")
        params.append(s.to_pydatetime())
    if u is not None:
        cond.append(f"{col} <= ?")
        params.append(u.to_pydatetime())
    return (" AND " + " AND ".join(cond)) if cond else "", params


def session_counts(case: Case, since: Any = None, until: Any = None, bins: int = 200) -> pd.DataFrame:
    """Sessions started per time bin: ``ts`` and ``ts_end`` (the bin, UTC), ``sessions``, ``bytes``."""
    w, p = window("ts", since, until)
    span = case.sql("SELECT epoch_ms(min(ts)) AS a, epoch_ms(max(ts)) AS b FROM sessions "
                    f"WHERE ts IS NOT NULL{w}", p)
    a, b = span["a"].iloc[0], span["b"].iloc[0]
    if pd.isna(a):
        empty = pd.Series(dtype="datetime64[ns, UTC]")
        return pd.DataFrame({"ts": empty, "ts_end": empty, "sessions": [], "bytes": []})
    width = max(int((int(b) - int(a)) / max(bins, 1)) + 1, 1000)
    df = case.sql(f"""SELECT (epoch_ms(ts) // {width}) * {width} AS ms, count(*) AS sessions,
                             sum(coalesce(orig_bytes, 0) + coalesce(resp_bytes, 0)) AS bytes
                      FROM sessions WHERE ts IS NOT NULL{w} GROUP BY ms ORDER BY ms""", p)
    df.insert(0, "ts", pd.to_datetime(df.pop("ms"), unit="ms", utc=True))
    df.insert(1, "ts_end", df["ts"] + pd.Timedelta(milliseconds=width))
    return df


_EVENT_SQL = {
    "logons": """SELECT ts, coalesce(dst_host, host) AS host,
        concat_ws(' ', action, CASE WHEN success THEN 'ok' WHEN NOT success THEN 'FAILED' END, user,
                  'from ' || coalesce(src_host, src_ip)) AS label,
        concat_ws(' ', auth_package, 'type ' || logon_type, service) AS detail, 'logons' AS table_name,
        json_object('evidence_id', evidence_id, 'record_offset', record_offset::VARCHAR,
                    'member', member) AS key
        FROM logons WHERE ts IS NOT NULL AND action NOT IN ('logoff', 'rdp_logoff', 'rdp_disconnect')""",
    "alerts": """SELECT ts, src_ip AS host, concat_ws(' ', signature, src_ip || ' -> ' || dest_ip) AS label,
        concat_ws(' ', category, 'severity ' || severity) AS detail, 'alerts' AS table_name,
        json_object('evidence_id', evidence_id, 'record_offset', record_offset::VARCHAR,
                    'member', member) AS key
        FROM alerts WHERE ts IS NOT NULL""",
    "files": """SELECT ts, orig_h AS host,
        concat_ws(' ', coalesce(filename, '(no name)'), file_source, orig_h || ' -> ' || resp_h) AS label,
        concat_ws(' ', mime_type, seen_bytes || ' B', sha256) AS detail, 'files' AS table_name,
        json_object('fuid', fuid) AS key FROM files WHERE ts IS NOT NULL
        UNION ALL
        SELECT ts, orig_h, concat_ws(' ', action, path || '\\' || name, orig_h || ' -> ' || resp_h),
        data_len || ' B', 'smb_files', json_object('uid', uid, 'name', name, 'action', action)
        FROM smb_files WHERE ts IS NOT NULL AND NOT coalesce(named_pipe, false)
             AND action IN ('SMB::FILE_WRITE', 'SMB::FILE_READ', 'SMB::FILE_DELETE', 'SMB::FILE_RENAME')
        UNION ALL
        SELECT ts, orig_h, concat_ws(' ', command, arg), file_size || ' B', 'ftp', json_object('uid', uid)
        FROM ftp WHERE ts IS NOT NULL AND command IN ('RETR', 'STOR', 'STOU', 'APPE')""",
    "lateral": """SELECT ts, src AS host, concat_ws(' ', technique, coalesce(src, src_addr) || ' -> '
        || coalesce(dst, dst_addr), account) AS label, concat_ws(' ', level, proof, summary) AS detail,
        'lateral_edges' AS table_name, json_object('edge_id', edge_id) AS key FROM lateral_edges
        WHERE ts IS NOT NULL""",
    "detections": """SELECT first AS ts, src AS host, concat_ws(' ', kind, coalesce(src, src_addr) || ' -> '
        || coalesce(dst_name, dst), 'score ' || round(score, 2)) AS label, detail, 'detections' AS table_name,
        json_object('detection_id', detection_id) AS key FROM detections WHERE first IS NOT NULL""",
    "exfiltration": """SELECT first AS ts, src AS host, concat_ws(' ', kind, coalesce(src, src_addr) || ' -> '
        || coalesce(dst_name, dst), channel, bytes || ' B') AS label, detail, 'exfil' AS table_name,
        NULL AS key FROM exfil WHERE first IS NOT NULL""",
}


def timeline_events(case: Case, since: Any = None, until: Any = None, *,
                    limit_per_lane: int = 5000) -> pd.DataFrame:
    """Logons, alerts, file transfers, lateral movement, detections and exfiltration on one time axis.

    Args:
        case: the case.
        since: first time shown (ISO string or datetime, UTC).
        until: last time shown.
        limit_per_lane: earliest rows kept per lane (sessions are counted by :func:`session_counts`).

    Returns:
        One row per event: ``ts``, ``lane`` (one of :data:`LANES`), ``host``, ``label``,
        ``detail``, ``table_name`` and ``key`` (the row's key as JSON, for tags and findings).
    """
    parts = []
    for lane, sql in _EVENT_SQL.items():
        w, p = window("ts", since, until)
        df = case.sql(f"SELECT * FROM ({sql}) WHERE true{w} ORDER BY ts, label LIMIT {int(limit_per_lane)}",
                      p)
        if len(df):
            df.insert(1, "lane", lane)
            parts.append(df)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c == "ts" else object)
                             for c in EVENT_COLUMNS})
    out = pd.concat(parts, ignore_index=True)[EVENT_COLUMNS]
    return out.sort_values(["ts", "lane", "label"], kind="stable").reset_index(drop=True)
