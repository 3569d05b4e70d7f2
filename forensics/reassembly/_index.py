"""Reading the packet index back: the rows of TCP and UDP sessions, session by session.

The index is read in frame order, a few row groups at a time and only the
columns the reassembly needs, into columns (:class:`Rows`), and rows are held
per session only until the session's last frame has gone by (``last_frame``
of the sessions table); then the session's rows are handed on, in frame order.
Memory is bounded by the rows of the sessions live at one moment, not by the
size of the capture, and payload bytes are then read from the evidence roughly
in file order. A pass can start at any batch (:func:`iter_finished` ``part``):
it first picks up the rows a pass from the start would still hold there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = [
    "COLUMNS",
    "INGEST_FIELDS",
    "ROW",
    "Rows",
    "UidIndex",
    "frames_ascend",
    "from_arrow",
    "iter_finished",
    "iter_finished_sel",
    "partitions",
    "read_plan",
    "rows_for_uids",
    "rows_from_arrow",
    "share_cuts",
]

# One row of the packet index, as the reassembly needs it.
ROW = np.dtype(
    [
        ("frame", "i8"),
        ("ts", "i8"),
        ("foff", "i8"),
        ("caplen", "i8"),
        ("linktype", "i8"),
        ("proto", "i8"),
        ("flags", "i8"),
        ("seq", "i8"),
        ("ack", "i8"),
        ("poff", "i8"),
        ("plen", "i8"),
        ("pwire", "i8"),
        ("frag", "i8"),
        ("depth", "i8"),
        ("sid", "i8"),
        ("orig", "i8"),
    ]
)

_ROW_NAMES: tuple[str, ...] = tuple(ROW.names or ())

# Packet-index column for each ROW field (sid comes from uid).
COLUMNS = {
    "frame": "frame",
    "ts": "ts_ns",
    "foff": "file_offset",
    "caplen": "caplen",
    "linktype": "linktype",
    "proto": "ip_proto",
    "flags": "tcp_flags",
    "seq": "seq",
    "ack": "ack",
    "poff": "payload_offset",
    "plen": "payload_len",
    "pwire": "payload_wire_len",
    "frag": "frag",
    "depth": "tunnel_depth",
    "orig": "is_orig",
}
_FILL = {
    "ts": np.iinfo(np.int64).min,
    "poff": -1,
    "seq": 0,
    "ack": 0,
    "flags": 0,
    "plen": 0,
    "pwire": 0,
    "frag": 0,
    "proto": -1,
    "orig": 0,
}
BATCH_ROWS = 1 << 18
MIN_BATCH_ROWS = 1 << 16


def _fixed_bytes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A string column as a numpy array of fixed-width bytes (NULL as ``b""``).

    Uids all have one length: the Arrow buffer is then viewed as it is, without a
    Python object per value.
    """
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks != 1 else strings.chunk(0)
    if pa.types.is_dictionary(strings.type):
        strings = strings.dictionary_decode()
    n = len(strings)
    if pa.types.is_string(strings.type) and n and not strings.null_count:
        _, offs, data = strings.buffers()
        at = np.frombuffer(offs, np.int32, count=strings.offset + n + 1)[strings.offset:]
        width = int(at[1] - at[0])
        if width > 0 and int(at[-1] - at[0]) == width * n and bool((np.diff(at) == width).all()):
            return np.frombuffer(data, f"S{width}", count=n, offset=int(at[0])).copy()
    vals = [b"" if v is None else v.encode("utf-8", "surrogateescape") for v in strings.to_pylist()]
    return np.array(vals, dtype=bytes) if vals else np.zeros(0, "S1")


class UidIndex(Mapping[str, int]):
    """Session index of each uid, found in a sorted array of the uids.

    What ``{uid: i for i, uid in enumerate(uids)}`` gives (the last index for a uid
    given twice), in about 30 bytes per session instead of a Python string and a
    dict entry each (half a million sessions: 13 MB instead of about 80 MB), and
    looked up for a whole column at once (:meth:`codes`).
    """

    def __init__(self, uids: pa.Array | pa.ChunkedArray):
        self.array = _fixed_bytes(uids)
        self._order = np.argsort(self.array, kind="stable")
        self._sorted = self.array[self._order]

    def codes(self, uids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Session index of each of ``uids`` (-1 where it is unknown or NULL)."""
        return self._codes(_fixed_bytes(uids))

    def _codes(self, want: np.ndarray) -> np.ndarray:
        if not self._sorted.size or not want.size:
            return np.full(want.size, -1, np.int64)
        pos = np.searchsorted(self._sorted, want, side="right") - 1
        found = (pos >= 0) & (self._sorted[np.maximum(pos, 0)] == want) & (want != b"")
        return np.where(found, self._order[np.maximum(pos, 0)], -1).astype(np.int64)

    def uid(self, sid: int) -> str:
        """The uid of session index ``sid``."""
        return bytes(self.array[sid]).decode("utf-8", "surrogateescape")

    def __getitem__(self, uid: str) -> int:
        sid = int(self._codes(np.array([uid.encode("utf-8", "surrogateescape")], dtype=bytes))[0])
        if sid < 0:
            raise KeyError(uid)
        return sid

    def _keys(self) -> np.ndarray:
        """Session indexes that a uid maps to (each uid once: its last index; no NULL)."""
        return np.flatnonzero(self._codes(self.array) == np.arange(self.array.size))

    def __iter__(self) -> Iterator[str]:
        return (self.uid(i) for i in self._keys().tolist())

    def __len__(self) -> int:
        return int(self._keys().size)


def _lookup(dictionary: pa.Array, sid_of: Mapping[str, int]) -> np.ndarray:
    """Session index of each uid of a column's dictionary, and -1 after them (for NULL rows)."""
    if isinstance(sid_of, UidIndex):
        return np.append(sid_of.codes(dictionary), -1)
    get = sid_of.get
    return np.array([get(u, -1) for u in dictionary.to_pylist()] + [-1], np.int64)


def _uid_codes(col: pa.ChunkedArray | pa.Array, sid_of: Mapping[str, int]) -> np.ndarray:
    """Session index per row (-1 where the uid is NULL or unknown)."""
    if isinstance(col, pa.ChunkedArray):
        parts = [_uid_codes(c, sid_of) for c in col.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    dic = col.dictionary
    lut = _lookup(dic, sid_of)
    idx = col.indices
    idx = (idx.fill_null(len(dic)) if idx.null_count else idx).to_numpy(zero_copy_only=False)
    return lut[idx]


def _column(tbl: pa.Table | pa.RecordBatch, name: str, fill: int) -> np.ndarray:
    """One packet-index column as int64 (NULLs filled)."""
    col = tbl.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    if col.null_count:
        col = col.fill_null(fill)
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


class Rows(dict):
    """Packet-index rows column by column: ROW field name -> int64 array, all of one length.

    The columnar twin of a ROW array (``rows["plen"]``, ``rows.size``,
    ``rows[mask]``), cheaper to build, filter and reorder; it may hold only
    some of the fields.
    """

    @property
    def size(self) -> int:
        """Number of rows."""
        return len(next(iter(self.values()))) if self else 0

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return Rows({k: v[key] for k, v in self.items()})

    def take(self, idx: np.ndarray, fields: tuple[str, ...]) -> Rows:
        """Some fields of the rows at ``idx``."""
        return Rows({f: dict.__getitem__(self, f)[idx] for f in fields})

    @classmethod
    def of(cls, rows: np.ndarray | Rows) -> Rows:
        """Columns of a ROW array (a copy), or the Rows themselves."""
        if isinstance(rows, Rows):
            return rows
        return cls({f: np.ascontiguousarray(rows[f], np.int64) for f in _ROW_NAMES})

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """Rows of several batches (with the same fields), one after the other."""
        parts = [p for p in parts if p.size]
        if not parts:
            return cls()
        if len(parts) == 1:
            return parts[0]
        return cls({f: np.concatenate([p[f] for p in parts]) for f in parts[0]})


# What the ingest's reassembly reads of the index (the ack number and tunnel depth are
# for the pcap export and the conversation views).
INGEST_FIELDS = tuple(f for f in COLUMNS if f not in ("ack", "depth"))


def from_arrow(tbl: pa.Table | pa.RecordBatch, sid_of: Mapping[str, int]) -> np.ndarray:
    """Rows of a packet-index table or batch as a ROW array (TCP and UDP rows with a uid)."""
    cols = rows_from_arrow(tbl, sid_of)
    out = np.zeros(cols.size, ROW)
    for f in _ROW_NAMES:
        out[f] = cols[f]
    return out


def rows_from_arrow(
    tbl: pa.Table | pa.RecordBatch, sid_of: Mapping[str, int], fields: tuple[str, ...] = tuple(COLUMNS)
) -> Rows:
    """Rows of a packet-index table or batch as :class:`Rows` (TCP and UDP rows with a uid).

    Args:
        tbl: index rows.
        sid_of: session index of each uid.
        fields: the ROW fields wanted (``sid`` is always there).
    """
    out = Rows()
    for f in fields:
        out[f] = _column(tbl, COLUMNS[f], _FILL.get(f, 0))
    out["sid"] = _uid_codes(tbl.column("uid"), sid_of)
    proto = out["proto"]
    keep = (out["sid"] >= 0) & ((proto == 6) | (proto == 17))
    return out if keep.all() else out[np.flatnonzero(keep)]


def _batch_rows(pf: pq.ParquetFile, batch_rows: int | None) -> int:
    if batch_rows is not None:
        return batch_rows
    return min(BATCH_ROWS, max(MIN_BATCH_ROWS, pf.metadata.num_rows // 8))


def read_plan(pf: pq.ParquetFile, batch_rows: int | None = None) -> list[list[int]]:
    """Row groups read together, batch by batch.

    Row groups are small (one packet-pass chunk): a few are read at a time, so that
    the rows still pending are copied less often. The batch size depends on the
    file only, so the batches (and the order of what comes out of them) are the
    same however the work is shared out.
    """
    meta = pf.metadata
    batch_rows = _batch_rows(pf, batch_rows)
    batches: list[list[int]] = []
    cur: list[int] = []
    n = 0
    for g in range(meta.num_row_groups):
        r = meta.row_group(g).num_rows
        if not r:
            continue
        cur.append(g)
        n += r
        if n >= batch_rows:
            batches.append(cur)
            cur, n = [], 0
    if cur:
        batches.append(cur)
    return batches


def frames_ascend(pf: pq.ParquetFile) -> bool:
    """True when the row groups' frame numbers ascend (statistics say so), as the packet pass writes them."""
    meta = pf.metadata
    i = pf.schema_arrow.get_field_index("frame")
    hi = None
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if not rg.num_rows:
            continue
        st = rg.column(i).statistics
        if st is None or not st.has_min_max:
            return False
        if hi is not None and st.min < hi:
            return False
        hi = st.max
    return True


def share_cuts(pf: pq.ParquetFile, batches: list[list[int]], shares: int) -> list[int]:
    """Batch indexes where each of ``shares`` runs of batches starts, then the end (as many rows each)."""
    meta = pf.metadata
    rows = np.array([sum(meta.row_group(g).num_rows for g in b) for b in batches], np.int64)
    cum = np.concatenate([[0], np.cumsum(rows)])
    cuts = [0]
    for k in range(1, shares):
        j = int(np.searchsorted(cum, cum[-1] * k / shares))
        cuts.append(min(max(j, cuts[-1] + 1), len(batches)))
    cuts.append(len(batches))
    return cuts


def iter_finished(
    packets: Path,
    sid_of: Mapping[str, int],
    last_frame: np.ndarray,
    batch_rows: int | None = None,
    part: tuple[int, int] = (0, 1),
) -> Iterator[Rows]:
    """Rows of finished sessions, a group of sessions at a time, in index order.

    Row groups are read a few at a time (:func:`read_plan`), only the columns the
    reassembly needs (:data:`INGEST_FIELDS`), with the decoding spread over the
    cores (unless the pass itself is shared out over processes). A session's rows
    all come in one group; :func:`~forensics.reassembly.stream.build_sessions`
    sorts them out by session.

    Args:
        packets: the evidence's packet-index Parquet file.
        sid_of: session index of each uid.
        last_frame: per session index, its last frame number.
        batch_rows: index rows read at a time (default: by the file's size).
        part: ``(k, shares)``: only the groups of the k-th of ``shares`` runs of
            batches (:func:`share_cuts`; the frames must ascend, see
            :func:`frames_ascend`). The groups of all the parts, one part after the
            other, are the groups of the whole.
    """
    for rows, sel in iter_finished_sel(packets, sid_of, last_frame, batch_rows, part):
        yield rows if sel is None else rows[sel]


def iter_finished_sel(
    packets: Path,
    sid_of: Mapping[str, int],
    last_frame: np.ndarray,
    batch_rows: int | None = None,
    part: tuple[int, int] = (0, 1),
    first_seen: np.ndarray | None = None,
) -> Iterator[tuple[Rows, np.ndarray | None]]:
    """:func:`iter_finished` without copying the groups out: each comes as ``(rows, sel)``.

    The group is the rows at ``sel`` of ``rows`` (all of them when ``sel`` is None);
    :class:`~forensics.reassembly.stream.SessionBatch` takes what it needs of it.
    ``first_seen`` (per session index, the first frame it can have in this file, 0 if
    unknown) lets a later part find the rows of sessions still open at its start
    without reading the uids of every row group before it.
    """
    pf = pq.ParquetFile(packets)
    cols = [COLUMNS[f] for f in INGEST_FIELDS] + ["uid"]
    batches = read_plan(pf, batch_rows)
    k, shares = part
    cuts = share_cuts(pf, batches, shares) if shares > 1 else [0, len(batches)]
    first, stop = cuts[k], cuts[k + 1]
    final = k == shares - 1
    full = _batch_rows(pf, batch_rows)
    pending = Rows()
    if first > 0:
        pending = _pending_before(pf, batches, first, sid_of, last_frame, cols, first_seen)
    for j in range(first, stop):
        groups = batches[j]
        tbl = pf.read_row_groups(groups, columns=cols, use_threads=shares == 1)
        frame = tbl.column("frame")
        top = int(frame[len(frame) - 1].as_py())
        n = tbl.num_rows
        fresh = rows_from_arrow(tbl, sid_of, INGEST_FIELDS)
        del tbl
        pending = Rows.concat([pending, fresh])
        if j == len(batches) - 1 and n < full:
            break  # the short tail: everything left comes out below
        if not pending.size:
            continue
        # Rows of one frame may straddle two batches (tunnels): only frames before
        # the last one read are known to be complete.
        done = last_frame[pending["sid"]] < top
        if done.all():
            fin, pending = pending, Rows()
            yield fin, None
        elif done.any():
            fin = pending
            pending = pending[~done]
            yield fin, np.flatnonzero(done)
    if final and pending.size:
        yield pending, None


def _live_lut(
    chunk: pa.Array, sid_of: Mapping[str, int], last_frame: np.ndarray, top: int
) -> tuple[np.ndarray, pa.Array]:
    """Per dictionary entry of a uid chunk, whether its session goes on past ``top``; and the indices."""
    if not pa.types.is_dictionary(chunk.type):
        chunk = pc.dictionary_encode(chunk)
    sids = _lookup(chunk.dictionary, sid_of)
    lut = (sids >= 0) & (last_frame[np.maximum(sids, 0)] >= top)
    lut[-1] = False  # NULL uids
    return lut, chunk.indices


def _pending_before(
    pf: pq.ParquetFile,
    batches: list[list[int]],
    first: int,
    sid_of: Mapping[str, int],
    last_frame: np.ndarray,
    cols: list[str],
    first_seen: np.ndarray | None = None,
) -> Rows:
    """The rows a pass from the start would still hold when it reaches batch ``first``.

    Those of sessions not finished by the end of the batch before: the first row
    group that has one of them is found from ``first_seen`` and the row groups'
    frame statistics (without it, from the row groups' uid dictionaries), and
    those sessions' rows are read from there on.
    """
    last = batches[first - 1][-1]
    fr = pf.read_row_group(last, columns=["frame"]).column("frame")
    top = int(fr[len(fr) - 1].as_py())
    upto = [g for b in batches[:first] for g in b]
    start = _first_live_group(pf, upto, first_seen, last_frame, top) if first_seen is not None else None
    if first_seen is None:
        for g in upto:
            col = pf.read_row_group(g, columns=["uid"]).column("uid")
            if any(_live_lut(c, sid_of, last_frame, top)[0].any() for c in col.chunks):
                start = g
                break
    if start is None:
        return Rows()
    tbl = pf.read_row_groups([g for g in upto if g >= start], columns=cols, use_threads=False)
    keep = []
    for c in tbl.column("uid").chunks:
        lut, idx = _live_lut(c, sid_of, last_frame, top)
        idx = idx.fill_null(len(lut) - 1) if idx.null_count else idx
        keep.append(lut[idx.to_numpy(zero_copy_only=False)])
    tbl = tbl.filter(pa.array(np.concatenate(keep) if keep else np.zeros(0, bool)))
    return rows_from_arrow(tbl, sid_of, INGEST_FIELDS)


def _first_live_group(
    pf: pq.ParquetFile, groups: list[int], first_seen: np.ndarray, last_frame: np.ndarray, top: int
) -> int | None:
    """The first of ``groups`` that may hold a row of a session still open after frame ``top``.

    A session can have rows up to ``top`` only if it was first seen by then; the
    earliest of those first frames is looked up in the row groups' frame statistics.
    """
    live = (last_frame >= top) & (first_seen <= top)
    if not live.any():
        return None
    lo = int(first_seen[live].min())
    i = pf.schema_arrow.get_field_index("frame")
    for g in groups:
        st = pf.metadata.row_group(g).column(i).statistics
        if st is None or not st.has_min_max or st.max >= lo:
            return g
    return None


def partitions(case: Case) -> list[tuple[str, Path, list[Path]]]:
    """(evidence id, evidence file, packet-index files) of every capture in the case."""
    ev = case.sql("SELECT evidence_id, path FROM evidence")
    paths = dict(zip(ev["evidence_id"], ev["path"], strict=True))
    out = []
    for d in sorted((case.path / "parquet" / "packets").glob("evidence_id=*")):
        eid = d.name.split("=", 1)[1]
        files = sorted(d.glob("*.parquet"))
        if files and eid in paths:
            out.append((eid, Path(paths[eid]), files))
    return out


def rows_for_uids(case: Case, uids: list[str]) -> tuple[np.ndarray, list[Path]]:
    """Index rows of some sessions, from every capture file they appear in.

    A session of a rotated capture stream spans files: each file's payload
    offsets are moved past the files before it (see
    :class:`~forensics.reassembly._evidence.Evidence`) and, so that capture
    order survives, frames of the k-th file after the first carry ``k << 40``.

    Returns:
        The rows sorted by (sid, frame), sid being the position in ``uids``, and
        the evidence files in the order their offsets were laid out.
    """
    sid_of = {u: i for i, u in enumerate(uids)}
    found: list[tuple[int, Path, np.ndarray]] = []
    for _eid, evpath, files in partitions(case):
        parts = []
        for f in files:
            tbl = pq.read_table(f, columns=[*COLUMNS.values(), "uid"], filters=[("uid", "in", list(uids))])
            if tbl.num_rows:
                parts.append(from_arrow(tbl, sid_of))
        rows = np.concatenate(parts) if parts else np.zeros(0, ROW)
        if rows.size:
            found.append((int(rows["ts"].min()), evpath, rows))
    found.sort(key=lambda x: x[0])
    paths: list[Path] = []
    out = []
    base = 0
    for k, (_t, evpath, rows) in enumerate(found):
        rows = rows.copy()
        has = rows["poff"] >= 0
        rows["poff"][has] += base
        rows["foff"] += base
        rows["frame"] += k << 40
        out.append(rows)
        paths.append(evpath)
        base += evpath.stat().st_size
    rows = np.concatenate(out) if out else np.zeros(0, ROW)
    order = np.lexsort((rows["frame"], rows["sid"]))
    return rows[order], paths
