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

Each file is written once under ``carved/ab/cd/<sha256>`` and described by a
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

__all__ = ["CARVE_TABLES", "Limits", "after_reconstruct", "carve_capture", "carve_case"]

log = logging.getLogger(__name__)

CARVE_TABLES = ("files", "carved_files")
_FTP_FILE_CMDS = {"RETR": "download", "STOR": "upload", "STOU": "upload", "APPE": "upload"}


def _rows(tables: dict[str, pa.Table], name: str, cols: tuple[str, ...]) -> list[dict[str, Any]]:
    tbl = tables.get(name)
    if tbl is None or not tbl.num_rows:
        return []
    return tbl.select([c for c in cols if c in tbl.column_names]).to_pylist()


def _plan(tables: dict[str, pa.Table]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per session uid, what to carve from it (only sessions that carried bodies or transfers)."""
    jobs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    body_cols = ("uid", "trans_depth", "is_orig", "content_type", "content_encoding", "transfer_encoding",
                 "content_length", "filename", "stream_start", "stream_end", "wire_len", "missing_bytes",
                 "record_offset", "record_id")
    for r in _rows(tables, "http_bodies", body_cols):
        if (r["stream_start"] or 0) < (r["stream_end"] or 0):
            jobs[r["uid"]]["http"].append(r)
    for r in _rows(tables, "http", ("uid", "trans_depth", "method", "host", "uri", "status_code")):
        if r["uid"] in jobs:
            jobs[r["uid"]]["tx"].append(r)
    for r in _rows(tables, "smb_files", ("uid", "fuid", "named_pipe")):
        if r["fuid"] and not r["named_pipe"] and not jobs[r["uid"]]["smb"]:
            jobs[r["uid"]]["smb"].append(r)
    for r in _rows(tables, "ftp", ("uid", "ts", "command", "arg", "file_size", "fuid", "data_uid")):
        if r["data_uid"] and r["command"] in _FTP_FILE_CMDS:
            jobs[r["data_uid"]]["ftp"].append(r)
    for r in _rows(tables, "smtp", ("uid", "trans_depth", "fuids", "body_len")):
        if r["body_len"]:
            jobs[r["uid"]]["smtp"].append(r)
    return jobs


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

    Returns:
        ``files`` and ``carved_files`` (when anything was carved), and ``http`` with
        ``orig_fuids``/``resp_fuids`` filled in (when ``tables`` had it).
    """
    t0 = time.perf_counter()
    plan = _plan(tables)
    if not plan or not sessions.num_rows or not Path(packets).exists():
        return {}
    uids = sessions.column("uid").to_pylist()
    wanted = [i for i, u in enumerate(uids) if u in plan]
    if not wanted:
        return {}
    sid_of = {uids[i]: k for k, i in enumerate(wanted)}
    last = sessions.column("last_frame").fill_null(0).to_numpy(zero_copy_only=False)[wanted]
    conn = {uids[i]: {c: sessions.column(c)[i].as_py() for c in ("orig_h", "orig_p", "resp_h", "resp_p")}
            for i in wanted}
    sink = Sink(Path(store_root), evidence_id or ctx.evidence_id, ctx, conn, limits or Limits())
    pieces: dict[tuple, list[_carve_http.RangePiece]] = {}
    http_fuids: dict[tuple[str, int, bool], list[str]] = {}
    names = [uids[i] for i in wanted]
    with Evidence(evidence_path) as ev:
        for rows in iter_finished(Path(packets), sid_of, np.ascontiguousarray(last)):
            built, _stats = build_sessions(rows, ev, conflicts=False)
            for k, sd in sorted(built.items()):
                uid = names[k]
                try:
                    _carve_one(sink, uid, sd, plan[uid], pieces, http_fuids)
                except (OSError, MemoryError):
                    raise
                except Exception as exc:  # one hostile session must not cost the files of the others
                    log.exception("carving session %s failed", uid)
                    sink.warn(uid, "carve_error", f"carving stopped: {type(exc).__name__}: {exc}",
                              severity="error")
            del built
            ev.release()
    _carve_http.assemble_ranges(sink, pieces)
    out: dict[str, pa.Table] = {}
    if sink.rows:
        out.update(filestore.rows_to_tables(sink.rows.values()))
    if http_fuids and tables.get("http") is not None:
        out["http"] = _with_http_fuids(tables["http"], http_fuids)
    log.info("carved %d files from %d sessions of %s in %.2f s", len(sink.rows), len(wanted),
             Path(evidence_path).name, time.perf_counter() - t0)
    return out


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
) -> dict[str, pa.Table]:
    """Carve at the end of :func:`forensics.apps.reconstruct`; returns tables to merge into its result.

    In the engine's parse stage (``case`` None) the store is the case folder
    that holds the staging folder of ``packets``, and the ``files`` and
    ``carved_files`` rows come back to be staged with the rest. When ``case``
    is given (:func:`forensics.apps.reconstruct_case`) the evidence's carved
    rows are replaced in the case directly, so that running it again adds no
    duplicates; only ``http`` (with its file ids) comes back.
    """
    if case is None:
        root = _staging_store(packets)
        if root is None:
            ctx.warn(None, "carve_skipped", "files not carved: the packet index is not staged inside a case",
                     severity="info")
            return {}
        return carve_capture(ctx, tables, packets=packets, sessions=sessions, evidence_path=evidence_path,
                             store_root=root, evidence_id=evidence_id)
    if getattr(case, "read_only", False):
        return {}
    out = carve_capture(ctx, tables, packets=packets, sessions=sessions, evidence_path=evidence_path,
                        store_root=case.path / "carved", evidence_id=evidence_id)
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
