"""File carving: every file a capture carried, in the case's content-addressed store.

After reassembly and the protocol parsers (:func:`forensics.apps.reconstruct`)
the carver knows which sessions carried files: those with ``http_bodies``
rows, SMB sessions whose ``smb_files`` rows saw file data, FTP data
connections tied to a RETR/STOR by the ``ftp`` table, and SMTP sessions that
sent a message. Only those sessions are reassembled again (one more pass
over the packet index, bounded memory) and carved:

- HTTP (:mod:`forensics._carve_http`): request and response bodies, de-chunked
  and decoded (gzip, deflate; capped against decompression bombs), multipart
  parts, ``206`` range pieces put together per resource;
- SMB2/3 and SMB1 (:mod:`forensics._carve_smb`): reads and writes laid out by
  file offset, one file per open, earlier versions kept when rewritten;
- FTP: the data connection's bytes, named from the command that opened it;
- SMTP (:mod:`forensics._carve_mail`): each message, and its MIME leaves
  (base64, quoted-printable, nested multiparts, RFC 2231 names).

Each file is written once under ``carved/ab/<sha256>`` and described by a
``files`` row (Zeek's files.log columns, ``source = 'carve'``) and a
``carved_files`` row (claimed name, entropy, missing ranges, completeness).
Bytes never captured are kept as zeros and named as missing ranges; an
incomplete file is kept and flagged, never dropped. The name a sender chose
is data, never part of a path. Everything is bounded (:class:`Limits`) and
every cap or oddity is an ingest warning naming the session and the offset.

The parse stage of ingest carves (no database: rows come back as tables);
:func:`carve_case` carves evidence already in a case again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from forensics import _carve_http, _carve_mail, _carve_smb, filestore
from forensics._carve_base import Limits, Missing, Sink, read_ranges
from forensics.reassembly._evidence import Evidence
from forensics.reassembly._index import iter_finished
from forensics.reassembly.stream import SessionData, build_sessions
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.ingest import IngestContext

__all__ = ["CARVE_TABLES", "InlineCarver", "Limits", "after_reconstruct", "carve_capture", "carve_case",
           "merge_inline", "store_for"]

log = logging.getLogger(__name__)

CARVE_TABLES = ("files", "carved_files")
_FTP_FILE_CMDS = {"RETR": "download", "STOR": "upload", "STOU": "upload", "APPE": "upload"}


def _rows(tables: dict[str, pa.Table], name: str, cols: tuple[str, ...]) -> list[dict[str, Any]]:
    tbl = tables.get(name)
    if tbl is None or not tbl.num_rows:
        return []
    return tbl.select([c for c in cols if c in tbl.column_names]).to_pylist()


_PLAN_COLS = {
    "http_bodies": ("uid", "trans_depth", "is_orig", "content_type", "content_encoding", "transfer_encoding",
                    "content_length", "filename", "stream_start", "stream_end", "wire_len", "missing_bytes",
                    "record_offset", "record_id"),
    "http": ("uid", "trans_depth", "method", "host", "uri", "status_code"),
    "smb_files": ("uid", "fuid", "named_pipe"),
    "ftp": ("uid", "ts", "command", "arg", "file_size", "fuid", "data_uid"),
    "smtp": ("uid", "trans_depth", "fuids", "body_len"),
}
_SESSION_JOBS = ("http", "tx", "smb", "smtp")  # what a session's own rows ask for (FTP data is linked later)


def _plan(tables: dict[str, pa.Table]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per session uid, what to carve from it (only sessions that carried bodies or transfers)."""
    return _plan_rows({name: _rows(tables, name, cols) for name, cols in _PLAN_COLS.items()})


def _plan_rows(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """:func:`_plan` from rows as dicts (a missing column reads as None)."""
    jobs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows.get("http_bodies", ()):
        if (r.get("stream_start") or 0) < (r.get("stream_end") or 0):
            jobs[r["uid"]]["http"].append({c: r.get(c) for c in _PLAN_COLS["http_bodies"]})
    for r in rows.get("http", ()):
        if r["uid"] in jobs:
            jobs[r["uid"]]["tx"].append({c: r.get(c) for c in _PLAN_COLS["http"]})
    for r in rows.get("smb_files", ()):
        if r.get("fuid") and not r.get("named_pipe") and not jobs[r["uid"]]["smb"]:
            jobs[r["uid"]]["smb"].append(r)
    for r in rows.get("ftp", ()):
        if r.get("data_uid") and r.get("command") in _FTP_FILE_CMDS:
            jobs[r["data_uid"]]["ftp"].append(r)
    for r in rows.get("smtp", ()):
        if r.get("body_len"):
            jobs[r["uid"]]["smtp"].append({c: r.get(c) for c in _PLAN_COLS["smtp"]})
    return jobs


class InlineCarver:
    """Carving inside the second pass: a session's files while its reassembled bytes are at hand.

    :func:`forensics.apps.reconstruct` asks the protocol parsers for a session's
    rows and, right after, hands the session here: its HTTP bodies, SMB files and
    SMTP messages are carved from the same :class:`SessionData`, so the packet
    index is not read and the session not reassembled a second time. What needs
    every session first (FTP data connections, tied to their command at the end
    of the pass; HTTP range pieces put together across sessions) is left to
    :func:`carve_capture`, which takes :meth:`result` as its starting point.

    Args:
        store_root: the case's store folder (``<case>/carved``).
        evidence_id: the evidence.
        out: where warnings go (the pass's emitter, or an ingest context).
        conn: per session uid, its ``orig_h``, ``orig_p``, ``resp_h``, ``resp_p``.
        limits: bounds (default :class:`Limits`).
    """

    WATCH = ("http_bodies", "http", "smb_files", "smtp")

    def __init__(self, store_root: Path, evidence_id: str, out: Any, conn: Any, limits: Limits | None = None):
        self.sink = Sink(Path(store_root), evidence_id, out, conn, limits or Limits())
        self.pieces: dict[tuple, list[_carve_http.RangePiece]] = {}
        self.http_fuids: dict[tuple[str, int, bool], list[str]] = {}
        self.done: set[str] = set()

    def mark(self, rows: dict[str, list[dict[str, Any]]]) -> tuple[int, ...]:
        """Where the watched tables' row lists stand before a session is parsed."""
        return tuple(len(rows.get(t, ())) for t in self.WATCH)

    def after(self, uid: str, sd: SessionData, rows: dict[str, list[dict[str, Any]]],
              mark: tuple[int, ...]) -> None:
        """Carve what the rows emitted since ``mark`` (this session's) say it carried."""
        new = {t: rows.get(t, [])[m:] for t, m in zip(self.WATCH, mark, strict=True)}
        if not (new["http_bodies"] or new["smb_files"] or new["smtp"]):
            return
        job = _plan_rows(new).get(uid)
        if not job:
            return
        self.done.add(uid)
        _carve_guarded(self.sink, uid, sd, job, self.pieces, self.http_fuids)

    def result(self) -> dict[str, Any]:
        """What was carved, for :func:`carve_capture` (picklable: shares of the pass send it back)."""
        return {"rows": list(self.sink.rows.items()), "notes": self.sink.notes, "pieces": self.pieces,
                "http_fuids": self.http_fuids, "done": self.done}


def merge_inline(parts: list[dict[str, Any]], ctx: Any) -> dict[str, Any] | None:
    """The :meth:`InlineCarver.result` of each share of a pass, as one pass would have made it.

    Shares carve disjoint sessions, so a file id can only repeat if two sessions'
    protocol rows named the same one; the later file is then given a new id (and
    its children and HTTP links follow), with a warning.
    """
    parts = [p for p in parts if p]
    if not parts:
        return None
    rows: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    out: dict[str, Any] = {"notes": {}, "pieces": {}, "http_fuids": {}, "done": set()}
    for part in parts:
        rename: dict[str, str] = {}
        for fuid, pair in part["rows"]:
            if fuid in rows:
                ident = repr((fuid, pair[0].get("uid"), len(rows))).encode()
                new = "F" + hashlib.sha256(ident).hexdigest()[:17]
                rename[fuid] = new
                ctx.warn(None, "carve_fuid_collision", f"file id {fuid} given twice; the later file is {new}",
                         severity="info")
        for fuid, (frow, crow) in part["rows"]:
            for row in (frow, crow):
                for col in ("fuid", "parent_fuid"):
                    if row.get(col) in rename:
                        row[col] = rename[row[col]]
            rows[rename.get(fuid, fuid)] = (frow, crow)
        for key, fuids in part["http_fuids"].items():
            out["http_fuids"][key] = [rename.get(f, f) for f in fuids]
        for key, ps in part["pieces"].items():
            out["pieces"].setdefault(key, []).extend(ps)
        out["notes"].update(part["notes"])
        out["done"] |= part["done"]
    out["rows"] = rows
    return out


def _ftp_name(arg: str | None) -> str | None:
    """The path of a RETR/STOR as the client named it (the ftp table keeps it as a ftp:// URL)."""
    if not arg:
        return None
    path = arg
    if arg.startswith("ftp://"):  # ftp://host/path as the parser builds it (nothing %-encoded)
        slash = arg.find("/", len("ftp://"))
        path = arg[slash:] if slash >= 0 else ""
    while "/./" in path:
        path = path.replace("/./", "/")
    return path or None


def _carve_ftp(sink: Sink, uid: str, sd: SessionData, rows: list[dict[str, Any]]) -> None:
    """The bytes of an FTP data connection, named from the RETR/STOR/APPE that opened it."""
    row = rows[0]
    if len(rows) > 1:
        sink.warn(uid, "carve_ftp_shared_data", f"{len(rows)} transfer commands tied to one data connection; "
                  "named from the first", severity="info")
    d = sd.orig if sd.orig.captured >= sd.resp.captured else sd.resp
    end = int(d.end[-1]) if d.end.size else 0
    extent = max(end, d.extent)
    if not extent:
        return
    direction = _FTP_FILE_CMDS[row["command"]]
    size = row.get("file_size")
    expected = int(size) if direction == "download" and size is not None and size >= 0 else None
    missing = Missing()
    sink.store(read_ranges(d, [(0, extent)], missing), uid=uid, protocol="ftp", fuid=row.get("fuid"),
               key=("ftp-data", row["uid"], str(row.get("ts"))), claimed_name=_ftp_name(row.get("arg")),
               direction=direction, is_orig=d.is_orig, ts_ns=d.ts_at(0), end_ns=d.ts_at(max(0, end - 1)),
               expected_size=expected, missing=missing, record_offset=d.file_offset_at(0),
               record_id=d.frame_at(0), source_row=("ftp", {"uid": row["uid"], "ts": row.get("ts"),
                                                            "command": row["command"]}))


def _with_http_fuids(http: pa.Table, fuids: dict[tuple[str, int, bool], list[str]]) -> pa.Table:
    """The ``http`` table with ``orig_fuids``/``resp_fuids`` naming the carved files (Zeek's join)."""
    uids, depths = http.column("uid").to_pylist(), http.column("trans_depth").to_pylist()
    out = http
    for col, is_orig in (("orig_fuids", True), ("resp_fuids", False)):
        old = http.column(col).to_pylist()
        new = [fuids.get((u, t or 0, is_orig)) or o for u, t, o in zip(uids, depths, old, strict=True)]
        i = out.schema.get_field_index(col)
        out = out.set_column(i, out.schema.field(i), pa.array(new, out.schema.field(i).type))
    return out


def carve_capture(
    ctx: IngestContext,
    tables: dict[str, pa.Table],
    *,
    packets: str | Path,
    sessions: pa.Table,
    evidence_path: str | Path,
    store_root: str | Path,
    evidence_id: str | None = None,
    limits: Limits | None = None,
    pre: dict[str, Any] | None = None,
) -> dict[str, pa.Table]:
    """Carve every file of one capture file (pure: no database; bytes go to ``store_root``).

    Args:
        ctx: the ingest context (warnings go to ``ctx.warn``).
        tables: what :func:`forensics.apps.reconstruct` returned (``http_bodies``,
            ``http``, ``smb_files``, ``ftp``, ``smtp``, ...).
        packets: the evidence's packet-index Parquet file.
        sessions: the evidence's sessions table.
        evidence_path: the capture file.
        store_root: the case's store folder, ``<case>/carved``.
        evidence_id: the evidence (default: ``ctx.evidence_id``).
        limits: bounds (default :class:`Limits`).
        pre: what the pass carved already (:func:`merge_inline`): those sessions'
            own files are not carved again; only what needed the whole pass is
            (FTP data connections, HTTP range pieces put together).

    Returns:
        ``files`` and ``carved_files`` (when anything was carved), and ``http`` with
        ``orig_fuids``/``resp_fuids`` filled in (when ``tables`` had it).
    """
    t0 = time.perf_counter()
    plan = _plan(tables)
    pre = pre or {}
    for uid in pre.get("done", ()):
        job = plan.get(uid)
        if job is not None:
            for name in _SESSION_JOBS:
                job.pop(name, None)
            if not job:
                del plan[uid]
    carried = bool(pre.get("rows") or pre.get("pieces"))  # the pass carved something already
    if not (plan or carried):
        return {}
    uids = sessions.column("uid").to_pylist()
    wanted = [i for i, u in enumerate(uids) if u in plan]
    if not (wanted or carried):
        return {}
    sid_of = {uids[i]: k for k, i in enumerate(wanted)}
    pieces: dict[tuple, list[_carve_http.RangePiece]] = pre.get("pieces", {})
    need = set(plan) | {p.uid for ps in pieces.values() for p in ps}  # range files name their session
    conn = {uids[i]: {c: sessions.column(c)[i].as_py() for c in ("orig_h", "orig_p", "resp_h", "resp_p")}
            for i, u in enumerate(uids) if u in need}
    sink = Sink(Path(store_root), evidence_id or ctx.evidence_id, ctx, conn, limits or Limits())
    sink.rows.update(pre.get("rows", {}))
    sink.notes.update(pre.get("notes", {}))
    http_fuids: dict[tuple[str, int, bool], list[str]] = pre.get("http_fuids", {})
    names = [uids[i] for i in wanted]
    if wanted and Path(packets).exists():
        last = sessions.column("last_frame").fill_null(0).to_numpy(zero_copy_only=False)[wanted]
        with Evidence(evidence_path) as ev:
            for rows in iter_finished(Path(packets), sid_of, np.ascontiguousarray(last)):
                built, _stats = build_sessions(rows, ev, conflicts=False)
                for k, sd in sorted(built.items()):
                    _carve_guarded(sink, names[k], sd, plan[names[k]], pieces, http_fuids)
                del built
                ev.release()
    _carve_http.assemble_ranges(sink, pieces)
    out: dict[str, pa.Table] = {}
    if sink.rows:
        out.update(filestore.rows_to_tables(sink.rows.values()))
    if http_fuids and tables.get("http") is not None:
        out["http"] = _with_http_fuids(tables["http"], http_fuids)
    log.info("carved %d files (%d sessions after the pass) of %s in %.2f s", len(sink.rows), len(wanted),
             Path(evidence_path).name, time.perf_counter() - t0)
    return out


def _carve_guarded(sink: Sink, uid: str, sd: SessionData, job: dict[str, list[dict[str, Any]]],
                   pieces: dict[tuple, list[_carve_http.RangePiece]],
                   http_fuids: dict[tuple[str, int, bool], list[str]]) -> None:
    try:
        _carve_one(sink, uid, sd, job, pieces, http_fuids)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # one hostile session must not cost the files of the others
        log.exception("carving session %s failed", uid)
        sink.warn(uid, "carve_error", f"carving stopped: {type(exc).__name__}: {exc}", severity="error")


def _carve_one(sink: Sink, uid: str, sd: SessionData, job: dict[str, list[dict[str, Any]]],
               pieces: dict[tuple, list[_carve_http.RangePiece]],
               http_fuids: dict[tuple[str, int, bool], list[str]]) -> None:
    if sd.proto != 6:
        return
    if job.get("http"):
        tx = {int(r["trans_depth"] or 0): r for r in job.get("tx", [])}
        got = _carve_http.carve_session(sink, uid, sd, job["http"], tx, pieces)
        for (depth, is_orig), f in got.items():
            http_fuids.setdefault((uid, depth, is_orig), []).extend(f)
    if job.get("smb"):
        _carve_smb.carve_session(sink, uid, sd)
    if job.get("smtp"):
        _carve_mail.carve_session(sink, uid, sd, job["smtp"])
    if job.get("ftp"):
        _carve_ftp(sink, uid, sd, job["ftp"])


def store_for(case: Case | None, packets: str | Path) -> Path | None:
    """The store carved files go to: ``<case>/carved`` (None: not carving here).

    In the engine's parse stage (``case`` None) it is the case folder holding the
    staging folder of ``packets``; a read-only case is not carved into.
    """
    if case is None:
        return _staging_store(packets)
    if getattr(case, "read_only", False):
        return None
    return case.path / "carved"


def _staging_store(packets: str | Path) -> Path | None:
    """``<case>/carved`` for a packet index staged anywhere under ``<case>/.staging/``."""
    for parent in list(Path(packets).resolve().parents)[:4]:
        if parent.name == ".staging" and (parent.parent / "case.duckdb").exists():
            return parent.parent / "carved"
    return None


def after_reconstruct(
    case: Case | None,
    evidence_id: str,
    ctx: IngestContext,
    tables: dict[str, pa.Table],
    *,
    packets: str | Path,
    sessions: pa.Table,
    evidence_path: str | Path,
    pre: dict[str, Any] | None = None,
) -> dict[str, pa.Table]:
    """Carve at the end of :func:`forensics.apps.reconstruct`; returns tables to merge into its result.

    In the engine's parse stage (``case`` None) the store is the case folder
    that holds the staging folder of ``packets``, and the ``files`` and
    ``carved_files`` rows come back to be staged with the rest. When ``case``
    is given (:func:`forensics.apps.reconstruct_case`) the evidence's carved
    rows are replaced in the case directly, so that running it again adds no
    duplicates; only ``http`` (with its file ids) comes back. ``pre`` is what
    the pass carved already (:func:`merge_inline`).
    """
    root = store_for(case, packets)
    if root is None:
        if case is None:
            ctx.warn(None, "carve_skipped", "files not carved: the packet index is not staged inside a case",
                     severity="info")
        return {}
    out = carve_capture(ctx, tables, packets=packets, sessions=sessions, evidence_path=evidence_path,
                        store_root=root, evidence_id=evidence_id, pre=pre)
    if case is None:
        return out
    _replace_rows(case, evidence_id, out)
    return {k: v for k, v in out.items() if k not in CARVE_TABLES}


def _replace_rows(case: Case, evidence_id: str, out: dict[str, pa.Table]) -> None:
    from forensics._rowref import transaction

    with transaction(case):
        case.con.execute("DELETE FROM files WHERE source = 'carve' AND evidence_id = ?", [evidence_id])
        case.con.execute("DELETE FROM carved_files WHERE evidence_id = ?", [evidence_id])
        for name in CARVE_TABLES:
            if name in out and out[name].num_rows:
                case._insert(name, out[name])


def carve_case(case: Case, evidence_id: str | None = None, *, limits: Limits | None = None) -> dict[str, int]:
    """Carve captures already in a case again (e.g. ingested before carving existed).

    The evidence's earlier carved rows are replaced; the bytes in the store are
    content-addressed, so nothing is written twice.

    Args:
        case: the case (open for writing).
        evidence_id: one evidence file, or every capture of the case.
        limits: bounds (default :class:`Limits`).

    Returns:
        Files carved per evidence id.
    """
    from forensics._rowref import transaction
    from forensics.ingest import IngestContext

    case._need_write()
    ev = case.sql("SELECT evidence_id, path FROM evidence WHERE status = 'ingested'"
                  + (" AND evidence_id = ?" if evidence_id else ""), [evidence_id] if evidence_id else None)
    counts: dict[str, int] = {}
    for eid, path in zip(ev["evidence_id"], ev["path"], strict=True):
        packets = case.parquet_dir("packets", eid) / "part-0.parquet"
        if not packets.exists():
            continue
        tables = {name: TABLES[name].conform(
            case.con.sql(f"SELECT * FROM {name} WHERE evidence_id = ?", params=[eid]).to_arrow_table())
                  for name in ("http_bodies", "http", "smb_files", "ftp", "smtp")}
        sessions = TABLES["sessions"].conform(case.con.sql(
            "SELECT * FROM sessions WHERE evidence_id = ? AND source = 'pcap' ORDER BY first_frame",
            params=[eid]).to_arrow_table())
        ctx = IngestContext(path=Path(path), evidence_id=eid)
        out = carve_capture(ctx, tables, packets=packets, sessions=sessions, evidence_path=path,
                            store_root=case.path / "carved", evidence_id=eid, limits=limits)
        with transaction(case):
            _replace_rows(case, eid, out)
            if "http" in out:
                case.con.execute("DELETE FROM http WHERE evidence_id = ? AND source = 'pcap'", [eid])
                case._insert("http", out["http"])
            case.con.execute("DELETE FROM ingest_warnings WHERE evidence_id = ? AND code LIKE 'carve%'",
                             [eid])
            warn = ctx.warning_table()
            if warn.num_rows:
                case._insert("ingest_warnings", warn)
        counts[eid] = out["files"].num_rows if "files" in out else 0
    return counts
