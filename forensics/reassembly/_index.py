"""Reading the packet index back: the rows of TCP and UDP sessions, session by session.

The index is read in frame order, a row group at a time, and rows are held
per session only until the session's last frame has gone by (``last_frame``
of the sessions table); then the session's rows are handed on, sorted by
frame. Memory is bounded by the rows of the sessions live at one moment, not
by the size of the capture, and payload bytes are then read from the evidence
roughly in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["COLUMNS", "ROW", "from_arrow", "iter_finished", "partitions", "rows_for_uids"]

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


def _uid_codes(col: pa.ChunkedArray | pa.Array, sid_of: dict[str, int]) -> np.ndarray:
    """Session index per row (-1 where the uid is NULL or unknown)."""
    if isinstance(col, pa.ChunkedArray):
        parts = [_uid_codes(c, sid_of) for c in col.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    dic = col.dictionary.to_pylist()
    lut = np.array([sid_of.get(u, -1) for u in dic] + [-1], np.int64)
    idx = col.indices.fill_null(len(dic)).to_numpy(zero_copy_only=False).astype(np.int64)
    return lut[idx]


def from_arrow(tbl: pa.Table | pa.RecordBatch, sid_of: dict[str, int]) -> np.ndarray:
    """Rows of a packet-index table or batch as a ROW array (TCP and UDP rows with a uid)."""
    n = tbl.num_rows
    out = np.zeros(n, ROW)
    for f, c in COLUMNS.items():
        col = tbl.column(c)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_boolean(col.type):
            col = col.cast(pa.int8())
        out[f] = col.fill_null(_FILL.get(f, 0)).to_numpy(zero_copy_only=False)
    out["sid"] = _uid_codes(tbl.column("uid"), sid_of)
    keep = (out["sid"] >= 0) & ((out["proto"] == 6) | (out["proto"] == 17))
    return out[keep]


def iter_finished(
    packets: Path,
    sid_of: dict[str, int],
    last_frame: np.ndarray,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[np.ndarray]:
    """Rows of finished sessions, a group of sessions at a time, sorted by (sid, frame).

    Args:
        packets: the evidence's packet-index Parquet file.
        sid_of: session index of each uid.
        last_frame: per session index, its last frame number.
        batch_rows: index rows read at a time.
    """
    pf = pq.ParquetFile(packets)
    cols = [*COLUMNS.values(), "uid"]
    pending = np.zeros(0, ROW)
    fresh: list[np.ndarray] = []
    nfresh = 0
    top = 0
    batches = pf.iter_batches(batch_size=batch_rows, columns=cols)
    while True:
        batch = next(batches, None)
        if batch is not None and not batch.num_rows:
            continue
        if batch is not None:
            top = int(batch.column(batch.schema.get_field_index("frame"))[-1].as_py())
            fresh.append(from_arrow(batch, sid_of))
            nfresh += batch.num_rows
            # Row groups are small (one packet-pass chunk): gather a few before sorting
            # out the finished sessions, so the rows still pending are copied less often.
            if nfresh < batch_rows:
                continue
        if batch is None:
            rows = np.concatenate([pending, *fresh]) if fresh else pending
            if rows.size:
                yield rows[np.argsort(rows["sid"], kind="stable")]
            return
        pending = np.concatenate([pending, *fresh]) if pending.size else np.concatenate(fresh)
        fresh, nfresh = [], 0
        # Rows of one frame may straddle two batches (tunnels): only frames before
        # the last one read are known to be complete.
        done = last_frame[pending["sid"]] < top
        if done.any():
            fin = pending[done]
            pending = pending[~done]
            yield fin[np.argsort(fin["sid"], kind="stable")]


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
