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

Speed: sessions are reassembled a batch at a time in compiled code, and only the
sessions a parser may want (a byte a detector can look at) become Python
objects; DNS over UDP is decoded in bulk (:func:`forensics.protocols.dns.bulk_udp`,
the same rows as the parser); and the pass over a big capture is shared out over
forked processes by runs of batches (:data:`SPLIT_MIN_ROWS`), their results put
back together in the order a single pass gives.

:func:`reconstruct_case` re-runs it on evidence already in a case (for cases
ingested before this pass existed, and for tests).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
import pickle
import sys
import threading
import time
import warnings
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forensics import _arrow as A
from forensics import protocols
from forensics.protocols import dns
from forensics.protocols._base import Emitter, Session
from forensics.reassembly._evidence import Evidence
from forensics.reassembly._index import (
    COLUMNS,
    UidIndex,
    frames_ascend,
    from_arrow,
    iter_finished_sel,
    read_plan,
)
from forensics.reassembly.stream import SessionBatch, SessionData, build_sessions
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.ingest import IngestContext

__all__ = ["APP_TABLES", "Linker", "load_kernels", "reconstruct", "reconstruct_case"]

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
        fields: _SessionFields,
        services: list[list[str]],
        reader: Callable[[int], SessionData | None] | None = None,
    ):
        self._services = services
        self._reader = reader
        self._fields = fields
        self._by: dict[tuple, list[tuple[int, int]]] | None = None  # built on the first lookup
        self.callbacks: list[Callable[[Linker], None]] = []
        # Where the pass was when each callback was asked for, and the services callbacks
        # added (so that passes over shares of the sessions can be put together in order).
        self.key: tuple = ()
        self.keys: list[tuple] = []
        self.cb_key: tuple = ()
        self.events: list[tuple[tuple, int, str]] = []

    @property
    def _by_triple(self) -> dict[tuple, list[tuple[int, int]]]:
        if self._by is None:
            f = self._fields
            (oc, onames), (rc, rnames) = f.names["orig_h"], f.names["resp_h"]
            by: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
            for i, (o, r, rp, t) in enumerate(
                zip(oc.tolist(), rc.tolist(), f.ports["resp_p"].tolist(), f.ts_ns.tolist(), strict=True)
            ):
                by[(onames[o], rnames[r], rp if rp >= 0 else None)].append((t, i))
            for v in by.values():
                v.sort()
            self._by = by
        return self._by

    def later(self, fn: Callable[[Linker], None]) -> None:
        """Run ``fn(linker)`` after all sessions are parsed."""
        self.callbacks.append(fn)
        self.keys.append(self.key)

    def find(self, orig_h: str, resp_h: str, resp_p: int, after_ns: int) -> int | None:
        """The first session (index) to (resp_h, resp_p) from orig_h starting at or after ``after_ns``."""
        cands = self._by_triple.get((orig_h, resp_h, resp_p))
        if not cands:
            return None
        i = bisect_left(cands, (after_ns - 1_000_000_000, -1))  # allow 1 s of clock jitter
        return cands[i][1] if i < len(cands) else None

    def uid(self, sid: int) -> str:
        """The uid of a session index."""
        return self._fields.index.uid(sid)

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
        self.events.append((self.cb_key, sid, service))
        if service not in self._services[sid]:
            self._services[sid].append(service)


def _ns(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(col, pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False) * 1000


_TS_NULL = np.iinfo(np.int64).min


def _to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    spec = TABLES[name]
    extra = set().union(*(r.keys() for r in rows)) - set(spec.names)
    if extra:
        raise KeyError(f"{name}: rows carry undeclared columns {sorted(extra)}")
    try:
        return _to_table_fast(spec, rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass  # a value Arrow will not take as it is (a float time, ...): column by column below
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


def _to_table_fast(spec: Any, rows: list[dict[str, Any]]) -> pa.Table:
    """:func:`_to_table` with the rows converted in one go (as a struct array), times as integers."""
    fields = []
    for c in spec.columns:
        typ = c.arrow_type.value_type if pa.types.is_dictionary(c.arrow_type) else c.arrow_type
        fields.append(pa.field(c.name, pa.int64() if c.type == "TIMESTAMPTZ" else typ))
    st = pa.array(rows, pa.struct(fields))
    arrays = []
    for c in spec.columns:
        a = st.field(c.name)
        if c.type == "TIMESTAMPTZ":  # to the nearest microsecond, as Zeek prints times
            typ = c.arrow_type.value_type if pa.types.is_dictionary(c.arrow_type) else c.arrow_type
            v = a.fill_null(_TS_NULL).to_numpy(zero_copy_only=False)
            if v.size and v.max() > np.iinfo(np.int64).max - 500:
                raise ValueError("time past what int64 rounds")
            a = pa.array((v + 500) // 1000, pa.int64(), mask=v == _TS_NULL).cast(typ)
        arrays.append(a)
    return spec.conform(pa.Table.from_arrays(arrays, names=spec.names))


def _array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _gap_table(
    sid: np.ndarray, orig: np.ndarray, start: np.ndarray, end: np.ndarray, uid: pa.Array, eid: str
) -> pa.Table:
    """``stream_gaps`` rows (sessions ascending, orig before resp, gaps in stream order)."""
    n = sid.size
    return TABLES["stream_gaps"].conform(
        pa.table(
            {
                "uid": uid.take(pa.array(sid, pa.int64())),
                "is_orig": pa.array(orig != 0, pa.bool_()),
                "stream_start": pa.array(start, pa.int64()),
                "stream_end": pa.array(end, pa.int64()),
                "length": pa.array(end - start, pa.int64()),
                "evidence_id": pa.array(np.full(n, eid, object), pa.string()),
            }
        )
    )


def _conflict_rows(uid: str, eid: str, sd: SessionData, em: Emitter) -> None:
    for d in (sd.orig, sd.resp):
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
            em.add(
                "stream_conflicts",
                {
                    "uid": uid,
                    "is_orig": d.is_orig,
                    "stream_start": c.start,
                    "stream_end": c.end,
                    "differing": c.differing,
                    "first_frame": c.first_frame,
                    "later_frame": c.later_frame,
                    "evidence_id": eid,
                },
            )


# Second passes over big captures are split over processes (forked: nothing to import again).
SPLIT_MIN_ROWS = 400_000  # packet-index rows from which a capture is split
MAX_SHARES = 4
_CB = 1 << 62  # sorts the cross-session links after every batch


def _split(packets: Path) -> int:
    """How many processes share the second pass of this capture."""
    if sys.platform != "linux" or mp.parent_process() is not None:
        return 1  # no fork here, or already a worker of a pool: its siblings have the cores
    if threading.current_thread() is not threading.main_thread():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 1
    try:
        pf = pq.ParquetFile(packets)
        if pf.metadata.num_rows < SPLIT_MIN_ROWS or not frames_ascend(pf):
            return 1
        # Datagrams rebuilt from fragments get offsets past the end of the file in the
        # order they are rebuilt: a pass split in runs would number them differently.
        if _may_rebuild(pf):
            return 1
        return max(1, min(cpus, MAX_SHARES, len(read_plan(pf))))
    except (OSError, pa.ArrowException):
        return 1


def _pack(res: dict[str, Any]) -> dict[str, Any]:
    """A share's result made cheap to pickle: one table per name instead of many slices.

    (A pickled slice of an Arrow table carries the whole of its buffers.)
    """
    keys, warns, counts = [], [], []
    tables: dict[str, list[pa.Table]] = defaultdict(list)
    for key, tbls, w in res["segments"]:
        keys.append(key)
        warns.append(w)
        c = {}
        for name, parts in tbls.items():
            tables[name].extend(parts)
            c[name] = [t.num_rows for t in parts]
        counts.append(c)
    whole = {name: pa.concat_tables(parts).combine_chunks() for name, parts in tables.items()}
    return {**res, "segments": (keys, warns, counts, whole)}


def _unpack(res: dict[str, Any]) -> dict[str, Any]:
    keys, warns, counts, whole = res["segments"]
    at = dict.fromkeys(whole, 0)
    segs = []
    for key, w, c in zip(keys, warns, counts, strict=True):
        tbls: dict[str, list[pa.Table]] = {}
        for name, ns in c.items():
            tbls[name] = []
            for n in ns:
                tbls[name].append(whole[name].slice(at[name], n))
                at[name] += n
        segs.append((key, tbls, w))
    return {**res, "segments": segs}


def load_kernels() -> None:
    """Load (from numba's cache, compiling them the first time) the kernels of the second pass."""
    from forensics.reassembly import _kernel as kern

    z, u, b = np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.bool_)
    one = np.zeros(1, np.int64)
    ro = np.zeros(0, np.uint8)
    ro.flags.writeable = False  # as the mapped evidence is
    kern.reassemble(one, z, z, z, z, 1)
    kern.compare_overlaps(ro, z, z, z, z, z, z)
    kern.gather_heads(ro, one, z, z, z, 1)
    kern.gather(ro, z, z)
    kern.read_range(ro, z, z, z, 0, 0, -1)
    kern.stable_order(z, 1)
    dns.bulk_udp(u, one, b, z, z, z, z, one, z, z, b)


def _may_rebuild(pf: pq.ParquetFile) -> bool:
    """True when some index row may complete a fragmented datagram (``frag`` bit 8)."""
    meta = pf.metadata
    i = pf.schema_arrow.get_field_index("frag")
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(i).statistics
        if meta.row_group(g).num_rows and (st is None or not st.has_min_max or st.max >= 8):
            frag = A.values(pf.read(columns=["frag"]).column("frag"))
            return bool((frag & 8).any())
    return False


def _child(fn: Callable[[int], dict], k: int, conn: Any) -> None:
    try:
        res: Any = _pack(fn(k))
    except BaseException as exc:  # reported to the parent, which does this share itself
        res = f"{type(exc).__name__}: {exc}"
    try:
        conn.send(res)
    finally:
        conn.close()


def _run_shares(shares: int, fn: Callable[[int], dict]) -> list[dict]:
    """``[fn(0), ..., fn(shares - 1)]``, share 0 here and the others in forked processes.

    A share whose process fails, dies or hangs is done here instead: the shares are
    deterministic, so the result is the same.
    """
    if shares <= 1:
        return [fn(0)]
    ctx = mp.get_context("fork")
    kids = []
    # Objects made so far go to the collector's permanent generation, so that a collection
    # in a share does not walk (and so copy, page by page) everything it inherited.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            # fork with threads (3.12+): the share runs none of them
            warnings.simplefilter("ignore", DeprecationWarning)
            for k in range(1, shares):
                r, w = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, k, w), daemon=True)
                proc.start()
                w.close()
                kids.append((k, proc, r))
    except OSError as exc:  # no fork (limits): one process does it all
        log.debug("second pass not split: %s", exc)
    finally:
        gc.unfreeze()
    out: dict[int, dict] = {}
    try:
        t0 = time.perf_counter()
        out[0] = fn(0)
        deadline = time.monotonic() + max(120.0, 10 * (time.perf_counter() - t0))
        for k, _proc, r in kids:
            res = None
            try:
                if r.poll(max(0.0, deadline - time.monotonic())):
                    res = r.recv()
                    if isinstance(res, dict):
                        res = _unpack(res)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                res = f"{type(exc).__name__}: {exc}"
            if not isinstance(res, dict):
                log.warning("second-pass share %d redone in-process (%s)", k, res or "no answer")
                res = fn(k)
            out[k] = res
        for k in range(1, shares):
            if k not in out:
                out[k] = fn(k)
    finally:
        for _k, proc, r in kids:
            r.close()
            if proc.is_alive():
                proc.kill()
            proc.join()
    return [out[k] for k in range(shares)]


class _Pass:
    """One share of the second pass (every session when there is one share).

    Reads the packet index batch by batch (:func:`iter_finished_sel`; a share is a run of
    batches), reassembles the sessions of each batch in bulk, hands each session a
    parser may want to :func:`protocols.analyze` and decodes DNS over UDP in bulk.
    Rows and warnings are filed by where the pass was (share, batch, TCP or UDP) so
    that shares can be put back together in the order a single pass gives.
    """

    def __init__(self, sessions: pa.Table, evidence_id: str, path: Path, packets: Path,
                 carve_root: Path | None = None):
        self.carve_root = carve_root
        self.eid = evidence_id
        self.path = path
        self.packets = packets
        # Lookups every share needs, made once (forked shares inherit them); kept in
        # columns, so that memory does not grow by Python objects per session.
        n = sessions.num_rows
        self.index = UidIndex(sessions.column("uid"))
        self.fields = _SessionFields(sessions, self.index)
        self.last_frame = A.values(sessions.column("last_frame"), 0)
        # The first frame a session can have in this file: a session of a capture stream
        # that began in an earlier file (another evidence_id) may be there from the start.
        own = A.values(pc.equal(sessions.column("evidence_id"), evidence_id), False)
        self.first_seen = np.where(own, A.values(sessions.column("first_frame"), 0), 0)
        self.bulk_dns = dns.bulk_ready()
        self.conn = {c: _array(sessions.column(c)) for c in ("uid", "orig_h", "orig_p", "resp_h", "resp_p")}
        dports = list(dns.DNS_PORTS)
        ports = self.fields.ports
        self.dns_port = np.isin(ports["orig_p"], dports) | np.isin(ports["resp_p"], dports)
        self.n = n

    def run(self, k: int = 0, shares: int = 1) -> dict[str, Any]:
        """Process share ``k`` of ``shares``.

        Returns:
            Its segments, services, missed bytes, counters and link events.
        """
        with _young_gc():
            return self._run(k, shares)

    def _run(self, k: int, shares: int) -> dict[str, Any]:
        eid, n = self.eid, self.n
        index, fields, last_frame = self.index, self.fields, self.last_frame
        bulk_dns, conn = self.bulk_dns, self.conn
        ports, dns_port = fields.ports, self.dns_port
        services: list[list[str]] = [[] for _ in range(n)]
        missed = np.zeros(n, np.int64)
        emitter = Emitter(eid, str(self.path))
        stats: dict[str, int] = defaultdict(int)
        mine: list[np.ndarray] = []

        carver = None
        if self.carve_root is not None:
            from forensics.carve import InlineCarver

            carver = InlineCarver(self.carve_root, eid, emitter, _Conn(index, fields))

        def session(sid: int, sd: SessionData) -> Session:
            return Session(sid, fields.info(sid), sd, emitter, services[sid])

        with Evidence(self.path) as ev:
            packets = self.packets

            def reread(sid: int) -> SessionData | None:
                uid = index.uid(sid)
                tbl = pq.read_table(packets, columns=[*COLUMNS.values(), "uid"], filters=[("uid", "=", uid)])
                rows = from_arrow(tbl, {uid: sid})
                return build_sessions(rows[np.argsort(rows["frame"], kind="stable")], ev)[0].get(sid)

            linker = Linker(fields, services, reread)
            emitter.linker = linker
            groups = iter_finished_sel(packets, index, last_frame, part=(k, shares),
                                       first_seen=self.first_seen)
            segments: list[_Segment] = []
            held: list[_Segment] = []
            for bno, (rows, sel) in enumerate(groups):
                links = len(linker.callbacks)
                # The batch's sessions reassembled at once; per-session objects only for the
                # sessions a parser may want (a byte to look at, or a conflict to report).
                b = SessionBatch(rows, ev, sel=sel)
                del rows, sel
                for name, v in b.stats.items():
                    stats[name] += v
                linker.key = (k, bno, 0)
                emitter.segment(linker.key)
                tcp_sids = b.tcp_sids
                gsid, gorig, gs, ge = b.gaps()
                if gsid.size:
                    emitter.add_table("stream_gaps", _gap_table(gsid, gorig, gs, ge, conn["uid"], eid))
                    per = np.zeros(tcp_sids.size, np.int64)
                    np.add.at(per, np.searchsorted(tcp_sids, gsid), ge - gs)
                    missed[tcp_sids] = per
                heads = b.head_sizes()
                confl = b.conflicted()
                for i in np.flatnonzero((heads > 0) | confl).tolist():
                    sid = int(tcp_sids[i])
                    found: protocols.Analyzer | None = None
                    probe = None
                    if not confl[i] and (hh := b.tcp_heads(i)) is not None:
                        # The detectors first, on the heads read in bulk: a session nobody
                        # claims (most, in random or encrypted traffic) is never built.
                        probe = Session(sid, fields.info(sid), _HEADS_TCP, emitter)  # type: ignore[arg-type]
                        try:
                            found = protocols.claim(*hh, probe)
                        except protocols.NeedsSession:
                            probe = None  # a detector wants the whole session: analyze decides
                        else:
                            if found is None:
                                continue
                    sd = b.tcp_session(i)
                    if confl[i]:
                        _conflict_rows(index.uid(sid), eid, sd, emitter)
                    if heads[i]:
                        s = session(sid, sd) if probe is None else Session(
                            sid, probe.info, sd, emitter, services[sid], probe.state)
                        if carver is None:
                            protocols.analyze(s, found)
                            continue
                        mark = carver.mark(emitter.rows)
                        protocols.analyze(s, found)
                        carver.after(index.uid(sid), sd, emitter.rows, mark)  # its files, from the same bytes
                linker.key = (k, bno, 1)
                emitter.segment(linker.key)
                udp_sids = b.udp_sids.tolist()
                taken = None
                if bulk_dns and udp_sids:
                    u = b.udp_payloads()
                    us = b.udp_sids
                    res = dns.bulk_udp(
                        u["buf"], u["at"], u["ok"], u["orig"], u["ts"], u["frame"], u["poff"], u["start"],
                        ports["orig_p"][us], ports["resp_p"][us], dns_port[us],
                    )  # fmt: skip
                    taken = res[0]
                    if taken.any():
                        idx = pa.array(us, pa.int64())
                        tbl, row0 = dns.bulk_table(res, {c: a.take(idx) for c, a in conn.items()}, eid)
                i, nu = 0, len(udp_sids)
                while i < nu:
                    if taken is not None and taken[i]:  # DNS decoded in bulk: the parser's rows
                        j = i
                        while j < nu and taken[j]:
                            services[udp_sids[j]].append("dns")
                            j += 1
                        emitter.add_table("dns", tbl.slice(row0[i], row0[j] - row0[i]))
                        i = j
                        continue
                    protocols.analyze(session(udp_sids[i], b.udp_session(i)))
                    i += 1
                mine += [tcp_sids, b.udp_sids]
                del b
                # The batch's rows into Arrow now, so that memory holds the output as columns,
                # not as a dict per row; unless a cross-session link asked for during the
                # batch may still fill some in (FTP data channels): those wait for the links.
                if len(linker.callbacks) == links:
                    segments += _arrow_segments(emitter.done_segments())
                else:
                    held += emitter.done_segments()
                ev.release()  # keep the resident size to the sessions in flight, not the file read so far
                gc.collect(1)  # the batch's garbage: collection walks only what the batch made
            own = np.concatenate(mine) if mine else np.zeros(0, np.int64)
            own_services = {sid: list(services[sid]) for sid in own.tolist() if services[sid]}
            for j, (fn, key) in enumerate(zip(linker.callbacks, linker.keys, strict=True)):
                linker.cb_key = (_CB, *key, j)
                emitter.segment(linker.cb_key)
                try:
                    fn(linker)
                except Exception as exc:  # a cross-session link must not lose the rows already parsed
                    emitter.warn(
                        None, "link_error", f"cross-session link failed: {type(exc).__name__}: {exc}", "error"
                    )
        segments += _arrow_segments(held + emitter.done_segments())
        tcp_own = own[missed[own] != 0]
        return {
            "segments": segments,
            "services": own_services,
            "events": linker.events,
            "missed": (tcp_own, missed[tcp_own]),
            "stats": dict(stats),
            "carved": carver.result() if carver is not None else None,
        }


_HEADS_TCP = protocols.HeadsOnly(6)


class _SessionFields:
    """Each session's connection fields, by session index, as a parser finds them in ``Session.info``.

    Held in columns (codes into the distinct host names, ports and times as numpy
    arrays); the dict is made only for a session handed to a parser.
    """

    def __init__(self, sessions: pa.Table, index: UidIndex):
        self.index = index
        self.ts_ns = _ns(sessions.column("ts"))
        self.names: dict[str, tuple[np.ndarray, list[Any]]] = {}
        for c in ("orig_h", "resp_h", "proto"):
            enc = pc.dictionary_encode(_array(sessions.column(c)))
            # NULL: code -1, which picks the None put after the names
            self.names[c] = (A.values(enc.indices, -1).astype(np.int64), [*enc.dictionary.to_pylist(), None])
        # ports are never negative: -1 stands for NULL
        self.ports = {
            c: A.values(_array(sessions.column(c)), -1).astype(np.int64) for c in ("orig_p", "resp_p")
        }

    def _name(self, c: str, sid: int) -> Any:
        codes, names = self.names[c]
        return names[codes[sid]]

    def _port(self, c: str, sid: int) -> int | None:
        p = int(self.ports[c][sid])
        return p if p >= 0 else None

    def conn(self, sid: int) -> dict[str, Any]:
        """``orig_h``, ``orig_p``, ``resp_h`` and ``resp_p`` of a session."""
        return {"orig_h": self._name("orig_h", sid), "orig_p": self._port("orig_p", sid),
                "resp_h": self._name("resp_h", sid), "resp_p": self._port("resp_p", sid)}

    def info(self, sid: int) -> dict[str, Any]:
        """What a parser's ``Session.info`` holds: uid, ts_ns, the connection and proto."""
        return {"uid": self.index.uid(sid), "ts_ns": int(self.ts_ns[sid]), **self.conn(sid),
                "proto": self._name("proto", sid)}


class _Conn(Mapping[str, dict[str, Any]]):
    """A session's connection columns by uid (what the carver names files with), read on demand."""

    def __init__(self, index: UidIndex, fields: _SessionFields):
        self.index, self.fields = index, fields

    def __getitem__(self, uid: str) -> dict[str, Any]:
        return self.fields.conn(self.index[uid])

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


@contextlib.contextmanager
def _young_gc() -> Iterator[None]:
    """No automatic garbage collection inside (the pass collects the young generations itself).

    A full collection walks every object of the process, over and over as the parsed
    rows pile up; the pass makes few reference cycles, and collects what each batch
    made when the batch is done (:func:`gc.collect` of generation 1).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_Segment = tuple[Any, dict[str, list], list[dict]]


def _arrow_segments(segs: list[_Segment]) -> list[_Segment]:
    """Segments with their row dicts turned into Arrow: one conversion per table, then slices."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for _key, tables, _w in segs:
        for name, items in tables.items():
            for it in items:
                if not isinstance(it, pa.Table):
                    rows[name].extend(it)
    whole = {name: _to_table(name, r) for name, r in rows.items()}
    at = dict.fromkeys(whole, 0)
    out = []
    for key, tables, w in segs:
        conv: dict[str, list] = {}
        for name, items in tables.items():
            conv[name] = []
            for it in items:
                if isinstance(it, pa.Table):
                    conv[name].append(it)
                else:
                    conv[name].append(whole[name].slice(at[name], len(it)))
                    at[name] += len(it)
        out.append((key, conv, w))
    return out


def _merge(
    ctx: IngestContext, done: list[dict[str, Any]], n: int
) -> tuple[dict[str, pa.Table], list[list[str]], np.ndarray]:
    """The shares' results as one pass over every session would give them.

    Batch by batch, TCP then UDP sessions, each in session order; what the
    cross-session links added comes last, in the order they were asked for.
    Warnings go to ``ctx``.

    Returns:
        The application tables, each session's services and its bytes missed.
    """
    services: list[list[str]] = [[] for _ in range(n)]
    missed = np.zeros(n, np.int64)
    stats: dict[str, int] = defaultdict(int)
    segments: list[tuple[tuple, dict[str, list], list[dict]]] = []
    events: list[tuple[tuple, int, str]] = []
    for part in done:
        for sid, svc in part["services"].items():
            services[sid] = svc
        missed[part["missed"][0]] = part["missed"][1]
        for k, v in part["stats"].items():
            stats[k] += v
        segments.extend(part["segments"])
        events.extend(part["events"])
    segments.sort(key=lambda x: x[0])
    events.sort(key=lambda x: x[0])
    for _key, sid, svc in events:
        if svc not in services[sid]:
            services[sid].append(svc)
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
    parts: dict[str, list[pa.Table]] = defaultdict(list)
    for _key, tables, warns in segments:
        for w in warns:
            ctx.warn(w["offset"], w["code"], w["message"], severity=w["severity"])
        for name, tbls in tables.items():
            parts[name].extend(tbls)
    result: dict[str, pa.Table] = {}
    for name, tbls in parts.items():
        tbls = [t for t in tbls if t.num_rows]
        if tbls:
            # one chunk per column: slices of the bulk tables would each carry their whole buffers
            result[name] = pa.concat_tables(tbls).combine_chunks()
    return result, services, missed


def reconstruct(
    case: Case | None,
    evidence_id: str,
    ctx: IngestContext,
    *,
    packets: str | Path | None = None,
    sessions: pa.Table | None = None,
    evidence_path: str | Path | None = None,
    carve: bool = True,
) -> dict[str, pa.Table]:
    """Reassemble and parse every session of one capture file, and carve the files they carried.

    Args:
        case: the case, used only to find the packet index and the sessions when they
            are not given (None in the engine's pure parse stage).
        evidence_id: the evidence.
        ctx: the ingest context; warnings go to ``ctx.warn``.
        packets: the packet-index Parquet file (default: the published partition;
            the engine passes the not yet published ``net.tmp_path``).
        sessions: the evidence's sessions (default: read from the case).
        evidence_path: the capture file (default: ``ctx.path``).
        carve: carve files into the case's store (:mod:`forensics.carve`): inside
            the pass, while each session's bytes are at hand, and at its end what
            needs every session (FTP data, HTTP range pieces).

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
    if n == 0 or not Path(packets).exists():
        return {"sessions": sessions}
    shares = _split(Path(packets))
    if shares > 1:
        load_kernels()  # once here, not in every forked share
    with _young_gc():
        from forensics.carve import after_reconstruct, merge_inline, store_for

        root = store_for(case, packets) if carve else None
        work = _Pass(sessions, evidence_id, path, Path(packets), carve_root=root)
        done = _run_shares(shares, lambda k: work.run(k, shares))
        result, services, missed = _merge(ctx, done, n)
        carved = merge_inline([part["carved"] for part in done], ctx)
        svc = pa.array([",".join(s) if s else None for s in services], pa.string())
        del done, services
    old_svc = sessions.column("service")
    svc = pc.coalesce(svc, old_svc.combine_chunks() if isinstance(old_svc, pa.ChunkedArray) else old_svc)
    old_missed = sessions.column("missed_bytes").fill_null(0).to_numpy(zero_copy_only=False)
    new_missed = pa.array(np.maximum(old_missed, missed))
    sessions = sessions.set_column(sessions.schema.get_field_index("service"), "service", svc)
    i = sessions.schema.get_field_index("missed_bytes")
    sessions = sessions.set_column(i, "missed_bytes", new_missed.cast(sessions.schema.field(i).type))
    result["sessions"] = sessions
    log.info("reconstructed %d sessions of %s in %.2f s", n, path.name, time.perf_counter() - t0)
    if carve:  # files, carved_files (and http with its fuids): what needed the whole pass, and the tables
        result.update(after_reconstruct(case, evidence_id, ctx, result, packets=packets, sessions=sessions,
                                        evidence_path=path, pre=carved))
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
