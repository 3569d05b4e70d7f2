"""Write chosen sessions back out as a capture file that tshark reads as the original.

Frames are copied byte for byte from the evidence (located by the packet
index), in capture-time order, with their original timestamps (nanosecond
resolution) and original lengths. One link type gives a classic pcap; several
(pcapng evidence with mixed interfaces) give a pcapng with one interface block
per link type.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from forensics.reassembly._evidence import Evidence

if TYPE_CHECKING:
    from collections.abc import Iterable

    from forensics.case import Case

__all__ = ["export_pcap"]

_NO_TS = np.iinfo(np.int64).min


def _frames(case: Case, uids: list[str]) -> list[tuple[str, np.ndarray]]:
    """Per evidence file: (path, structured array of its frames to copy), frames unique."""
    import pyarrow as pa

    from forensics.reassembly._index import partitions

    out = []
    for _eid, path, files in partitions(case):
        parts = []
        for f in files:
            t = pq.read_table(
                f,
                columns=["frame", "ts_ns", "file_offset", "caplen", "wirelen", "linktype"],
                filters=[("uid", "in", uids)],
            )
            if t.num_rows:
                parts.append(t)
        if not parts:
            continue
        t = pa.concat_tables(parts)
        arr = np.zeros(
            t.num_rows,
            [("frame", "i8"), ("ts", "i8"), ("off", "i8"), ("cap", "i8"), ("wire", "i8"), ("lt", "i8")],
        )
        for f, c in zip(arr.dtype.names, t.column_names, strict=True):
            arr[f] = t.column(c).fill_null(_NO_TS if f == "ts" else 0).to_numpy(zero_copy_only=False)
        _, first = np.unique(arr["frame"], return_index=True)  # a frame has one row per decoded layer
        out.append((str(path), arr[first]))
    return out


def export_pcap(case: Case, uids: str | Iterable[str], path: str | Path) -> dict[str, object]:
    """Write the frames of the given sessions to a capture file.

    Args:
        case: the case.
        uids: one session uid or several (they may come from different evidence files).
        path: output file; ``.pcap`` (or pcapng when the frames have several link types).

    Returns:
        ``{"frames": n, "bytes": size, "format": "pcap" | "pcapng"}``.

    Raises:
        KeyError: none of the uids is a pcap-derived session of the case.
    """
    ulist = [uids] if isinstance(uids, str) else list(uids)
    groups = _frames(case, ulist)
    if not groups:
        raise KeyError(f"no pcap-derived session among {ulist[:5]}")
    allf = []
    for gi, (_p, arr) in enumerate(groups):
        for r in arr.tolist():
            allf.append((r[1] if r[1] != _NO_TS else 0, gi, r[0], r))
    allf.sort(key=lambda x: (x[0], x[1], x[2]))
    linktypes = sorted({r[3][5] for r in allf})
    out = Path(path)
    evs = [Evidence(p) for p, _ in groups]
    try:
        with out.open("wb") as fh:
            if len(linktypes) == 1:
                fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktypes[0]))
                for ts, gi, _f, r in allf:
                    data = evs[gi].read(r[2], r[3])
                    fh.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(data), r[4]))
                    fh.write(data)
                fmt = "pcap"
            else:
                fh.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
                iface = {}
                for i, lt in enumerate(linktypes):
                    iface[lt] = i
                    # if_tsresol = 9: nanoseconds (pcapng §4.2)
                    opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
                    fh.write(_block(1, struct.pack("<HHI", lt, 0, 262144) + opts))
                for ts, gi, _f, r in allf:
                    data = evs[gi].read(r[2], r[3])
                    body = (
                        struct.pack("<IIIII", iface[r[5]], ts >> 32, ts & 0xFFFFFFFF, len(data), r[4]) + data
                    )
                    fh.write(_block(6, body))
                fmt = "pcapng"
    finally:
        for e in evs:
            e.close()
    return {"frames": len(allf), "bytes": out.stat().st_size, "format": fmt}


def _block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    n = 12 + len(body) + pad
    return struct.pack("<II", btype, n) + body + b"\0" * pad + struct.pack("<I", n)
