"""The second pass over a capture: reassembly, then application protocols.

:func:`reconstruct` reads one evidence file's packet index in frame order,
reassembles each session once its last frame has gone by
(:mod:`forensics.reassembly`), hands it to the protocol parser its content
calls for (:mod:`forensics.protocols`), and returns the rows to insert: the
application tables, ``stream_gaps``/``stream_conflicts``, and the sessions
table with ``service`` (and ``missed_bytes``) filled in. Warnings go to the
ingest context like any other. Work is per evidence file and pure (file in,
Arrow tables out), so it runs inside the engine's per-file transaction, right
after the packet pass.

:func:`reconstruct_case` re-runs it on evidence already in a case (for cases
ingested before this pass existed, and for tests).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forensics import protocols
from forensics.protocols._base import Emitter, Session
from forensics.reassembly._evidence import Evidence
from forensics.reassembly._index import COLUMNS, from_arrow, iter_finished
from forensics.reassembly.stream import SessionData, build_sessions
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.ingest import IngestContext

__all__ = ["APP_TABLES", "Linker", "reconstruct", "reconstruct_case"]

log = logging.getLogger(__name__)

# Tables this pass fills (besides the sessions it returns updated).
APP_TABLES = (
    "http",
    "http_bodies",
    "dns",
    "tls",
    "smb_files",
    "smb_mapping",
    "ntlm",
    "ftp",
    "smtp",
    "ssh",
    "kerberos",
    "rdp",
    "dce_rpc",
    "stream_gaps",
    "stream_conflicts",
)


class Linker:
    """Lookups across sessions for parsers that tie one session to another (FTP data channels).

    Parsers add callbacks with :meth:`later`; they run once every session is parsed.
    """

    def __init__(
        self,
        sessions: pa.Table,
        services: list[list[str]],
        reader: Callable[[int], SessionData | None] | None = None,
    ):
        self._services = services
        self._reader = reader
        self._uid = sessions.column("uid").to_pylist()
        self._by_triple: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        ts = _ns(sessions.column("ts"))
        for i, (oh, rh, rp, t) in enumerate(
            zip(
                sessions.column("orig_h").to_pylist(),
                sessions.column("resp_h").to_pylist(),
                sessions.column("resp_p").to_pylist(),
                ts.tolist(),
                strict=True,
            )
        ):
            self._by_triple[(oh, rh, rp)].append((t, i))
        for v in self._by_triple.values():
            v.sort()
        self.callbacks: list[Callable[[Linker], None]] = []

    def later(self, fn: Callable[[Linker], None]) -> None:
        """Run ``fn(linker)`` after all sessions are parsed."""
        self.callbacks.append(fn)

    def find(self, orig_h: str, resp_h: str, resp_p: int, after_ns: int) -> int | None:
        """The first session (index) to (resp_h, resp_p) from orig_h starting at or after ``after_ns``."""
        cands = self._by_triple.get((orig_h, resp_h, resp_p))
        if not cands:
            return None
        i = bisect_left(cands, (after_ns - 1_000_000_000, -1))  # allow 1 s of clock jitter
        return cands[i][1] if i < len(cands) else None

    def uid(self, sid: int) -> str:
        """The uid of a session index."""
        return str(self._uid[sid])

    def first_bytes(self, sid: int, n: int = 1024) -> tuple[bytes, int]:
        """First ``n`` bytes and total bytes of the busier direction of a TCP session (data channels)."""
        sd = self._reader(sid) if self._reader else None
        if sd is None:
            return b"", 0
        d = sd.orig if sd.orig.captured >= sd.resp.captured else sd.resp
        end = int(d.end[-1]) if d.end.size else 0
        return d.read(0, min(n, end)), max(d.extent, end)

    def add_service(self, sid: int, service: str) -> None:
        """Record a service for a session found by :meth:`find`."""
        if service not in self._services[sid]:
            self._services[sid].append(service)


def _ns(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(col, pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False) * 1000


def _to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    spec = TABLES[name]
    extra = set().union(*(r.keys() for r in rows)) - set(spec.names)
    if extra:
        raise KeyError(f"{name}: rows carry undeclared columns {sorted(extra)}")
    arrays = []
    for c in spec.columns:
        vals = [r.get(c.name) for r in rows]
        typ = c.arrow_type.value_type if pa.types.is_dictionary(c.arrow_type) else c.arrow_type
        if c.type == "TIMESTAMPTZ":
            # to the nearest microsecond, as Zeek prints times
            us = [None if v is None or v == np.iinfo(np.int64).min else (int(v) + 500) // 1000 for v in vals]
            arrays.append(pa.array(us, pa.int64()).cast(typ))
        else:
            arrays.append(pa.array(vals, typ))
    return spec.conform(pa.Table.from_arrays(arrays, names=spec.names))


def _stream_rows(out: dict[str, list[dict]], uid: str, eid: str, sd: SessionData, em: Emitter) -> int:
    missed = 0
    for d in (sd.orig, sd.resp):
        for s, e in d.gaps.tolist():
            out["stream_gaps"].append(
                {
                    "uid": uid,
                    "is_orig": d.is_orig,
                    "stream_start": s,
                    "stream_end": e,
                    "length": e - s,
                    "evidence_id": eid,
                }
            )
            missed += e - s
        if d.conflicts:
            c0 = d.conflicts[0]
            em.warn(
                c0.file_offset,
                "tcp_overlap_conflict",
                f"session {uid}: {len(d.conflicts)} overlapping {'orig' if d.is_orig else 'resp'} "
                f"segment(s) carried different bytes than the first copy (kept); first at stream offset "
                f"{c0.start}, frames {c0.first_frame} and {c0.later_frame}: possible evasion",
            )
        for c in d.conflicts:
            out["stream_conflicts"].append(
                {
                    "uid": uid,
                    "is_orig": d.is_orig,
                    "stream_start": c.start,
                    "stream_end": c.end,
                    "differing": c.differing,
                    "first_frame": c.first_frame,
                    "later_frame": c.later_frame,
                    "evidence_id": eid,
                }
            )
    return missed


def reconstruct(
    case: Case | None,
    evidence_id: str,
    ctx: IngestContext,
    *,
    packets: str | Path | None = None,
    sessions: pa.Table | None = None,
    evidence_path: str | Path | None = None,
) -> dict[str, pa.Table]:
    """Reassemble and parse every session of one capture file.

    Args:
        case: the case, used only to find the packet index and the sessions when they
            are not given (None in the engine's pure parse stage).
        evidence_id: the evidence.
        ctx: the ingest context; warnings go to ``ctx.warn``.
        packets: the packet-index Parquet file (default: the published partition;
            the engine passes the not yet published ``net.tmp_path``).
        sessions: the evidence's sessions (default: read from the case).
        evidence_path: the capture file (default: ``ctx.path``).

    Returns:
        Tables by name: each of :data:`APP_TABLES` that got rows, and ``sessions``
        (the same rows as given, with ``service`` and ``missed_bytes`` filled in).
    """
    t0 = time.perf_counter()
    if (sessions is None or packets is None) and case is None:
        raise ValueError("reconstruct needs the case, or both the packets file and the sessions table")
    if sessions is None:
        assert case is not None
        res = case.con.sql(
            "SELECT * FROM sessions WHERE evidence_id = ? AND source = 'pcap' ORDER BY first_frame",
            params=[evidence_id],
        )
        sessions = TABLES["sessions"].conform(res.to_arrow_table())
    if packets is None:
        assert case is not None
        packets = case.parquet_dir("packets", evidence_id) / "part-0.parquet"
    path = Path(evidence_path or ctx.path)
    n = sessions.num_rows
    out_rows: dict[str, list[dict]] = defaultdict(list)
    if n == 0 or not Path(packets).exists():
        return {"sessions": sessions}
    uids = sessions.column("uid").to_pylist()
    sid_of = {u: i for i, u in enumerate(uids)}
    last_frame = sessions.column("last_frame").fill_null(0).to_numpy(zero_copy_only=False)
    cols = {c: sessions.column(c).to_pylist() for c in ("orig_h", "orig_p", "resp_h", "resp_p", "proto")}
    ts_ns = _ns(sessions.column("ts")).tolist()
    services: list[list[str]] = [[] for _ in range(n)]
    missed = np.zeros(n, np.int64)
    emitter = Emitter(evidence_id, str(path))
    stats: dict[str, int] = defaultdict(int)
    with Evidence(path) as ev:

        def reread(sid: int) -> SessionData | None:
            tbl = pq.read_table(
                packets, columns=[*COLUMNS.values(), "uid"], filters=[("uid", "=", uids[sid])]
            )
            rows = from_arrow(tbl, {uids[sid]: sid})
            return build_sessions(rows[np.argsort(rows["frame"], kind="stable")], ev)[0].get(sid)

        linker = Linker(sessions, services, reread)
        emitter.linker = linker
        for rows in iter_finished(Path(packets), sid_of, last_frame):
            built, st = build_sessions(rows, ev)
            for k, v in st.items():
                stats[k] += v
            for sid, sd in built.items():
                info = {"uid": uids[sid], "ts_ns": ts_ns[sid], **{c: v[sid] for c, v in cols.items()}}
                if sd.proto == 6:
                    missed[sid] = _stream_rows(out_rows, uids[sid], evidence_id, sd, emitter)
                s = Session(sid, info, sd, emitter, services[sid])
                protocols.analyze(s)
            del built
            ev.release()  # keep the resident size to the sessions in flight, not the file read so far
        for fn in linker.callbacks:
            try:
                fn(linker)
            except Exception as exc:  # a cross-session link must not lose the rows already parsed
                emitter.warn(
                    None, "link_error", f"cross-session link failed: {type(exc).__name__}: {exc}", "error"
                )
    for table, parsed in emitter.rows.items():
        out_rows[table].extend(parsed)
    if stats["datagrams_unrebuilt"]:
        ctx.warn(
            None,
            "fragments_not_rebuilt",
            f"{stats['datagrams_unrebuilt']} fragmented datagram(s) "
            "could not be put together again; their payload is left out",
            severity="info",
        )
    if stats["overlap_truncated"]:
        ctx.warn(
            None,
            "tcp_overlap_budget",
            f"{stats['overlap_truncated']} TCP direction(s) had more "
            "overlapping segments than the check budget; not every overlap was compared",
        )
    for w in emitter.warnings:
        ctx.warn(w["offset"], w["code"], w["message"], severity=w["severity"])
    result = {name: _to_table(name, rows) for name, rows in out_rows.items() if rows}
    svc = pa.array([",".join(s) if s else None for s in services], pa.string())
    old_svc = sessions.column("service")
    svc = pc.coalesce(svc, old_svc.combine_chunks() if isinstance(old_svc, pa.ChunkedArray) else old_svc)
    old_missed = sessions.column("missed_bytes").fill_null(0).to_numpy(zero_copy_only=False)
    new_missed = pa.array(np.maximum(old_missed, missed))
    sessions = sessions.set_column(sessions.schema.get_field_index("service"), "service", svc)
    i = sessions.schema.get_field_index("missed_bytes")
    sessions = sessions.set_column(i, "missed_bytes", new_missed.cast(sessions.schema.field(i).type))
    result["sessions"] = sessions
    log.info("reconstructed %d sessions of %s in %.2f s", n, path.name, time.perf_counter() - t0)
    return result


def reconstruct_case(case: Case, evidence_id: str | None = None, *, strict: bool = False) -> dict[str, int]:
    """Run :func:`reconstruct` on evidence already ingested, replacing earlier pcap rows.

    Args:
        case: the case (opened for writing).
        evidence_id: one evidence file, or every capture of the case.
        strict: raise on the first bad-input warning instead of recording it.

    Returns:
        Rows written per table.
    """
    from forensics.ingest import IngestContext

    ev = case.sql(
        "SELECT evidence_id, path FROM evidence WHERE status = 'ingested'"
        + (" AND evidence_id = ?" if evidence_id else ""),
        [evidence_id] if evidence_id else None,
    )
    counts: dict[str, int] = defaultdict(int)
    for eid, path in zip(ev["evidence_id"], ev["path"], strict=True):
        if not case.parquet_dir("packets", eid).exists():
            continue
        ctx = IngestContext(path=Path(path), evidence_id=eid, strict=strict)
        tables = reconstruct(case, eid, ctx)
        sessions = tables.pop("sessions")
        case.con.execute("BEGIN TRANSACTION")
        try:
            for name in APP_TABLES:
                if "source" in TABLES[name].names:
                    case.con.execute(f"DELETE FROM {name} WHERE evidence_id = ? AND source = 'pcap'", [eid])
                else:
                    case.con.execute(f"DELETE FROM {name} WHERE evidence_id = ?", [eid])
            case.con.execute(
                "DELETE FROM ingest_warnings WHERE evidence_id = ? AND code IN (SELECT unnest(?))",
                [eid, sorted({w["code"] for w in ctx.warnings})],
            )
            for name, tbl in tables.items():
                case._insert(name, tbl)
                counts[name] += tbl.num_rows
            upd = pa.table(
                {
                    "uid": sessions.column("uid"),
                    "service": sessions.column("service"),
                    "missed_bytes": sessions.column("missed_bytes"),
                }
            )
            case.con.register("_bb_svc", upd)
            case.con.execute(
                "UPDATE sessions SET service = u.service, missed_bytes = u.missed_bytes "
                "FROM _bb_svc u WHERE sessions.uid = u.uid"
            )
            case.con.unregister("_bb_svc")
            warn = ctx.warning_table()
            if warn.num_rows:
                case._insert("ingest_warnings", warn)
            case.con.execute("COMMIT")
        except BaseException:
            case.con.execute("ROLLBACK")
            raise
    case._refresh_views()
    return dict(counts)
