"""Reassembled TCP directions and UDP datagrams of sessions, read lazily from the evidence.

A :class:`Direction` is one side of a TCP connection after reassembly: an
ordered list of *pieces* (stream range, where its bytes sit in the evidence,
the frame that carried them), the *gaps* nobody captured, and the *conflicts*
where a later copy of a byte disagreed with the first one (kept). Bytes are
read from the evidence only when asked for (:meth:`Direction.read`).
:func:`build_sessions` turns packet-index rows of finished sessions into
:class:`SessionData` objects in one compiled pass over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from forensics.reassembly import _kernel as k
from forensics.reassembly._frag import rebuild_datagrams

if TYPE_CHECKING:
    from forensics.reassembly._evidence import Evidence

__all__ = ["Conflict", "Datagram", "Direction", "SessionData", "build_sessions"]

_Z = np.zeros(0, np.int64)
_Z2 = np.zeros((0, 2), np.int64)
_Z.flags.writeable = False
_Z2.flags.writeable = False
OVERLAP_BUDGET_PER_ROW = 8  # overlap records listed per segment on average before giving up
OVERLAP_BUDGET_MIN = 1 << 16


@dataclass(frozen=True)
class Conflict:
    """Bytes sent twice with different content: the first copy was kept.

    Attributes:
        start: stream offset of the overlap.
        end: stream offset one past it.
        differing: how many bytes differ.
        first_frame: frame whose copy was kept.
        later_frame: frame that carried the other copy.
        file_offset: evidence offset of the later copy's frame.
    """

    start: int
    end: int
    differing: int
    first_frame: int
    later_frame: int
    file_offset: int = -1


@dataclass
class Direction:
    """One reassembled side of a TCP connection.

    Attributes:
        is_orig: True for the originator's bytes.
        start: per piece, stream offset of its first byte (pieces are in stream order).
        end: per piece, stream offset one past its last byte.
        file_offset: per piece, where its bytes start in the evidence.
        frame: per piece, the frame that carried it (first copy).
        ts: per piece, that frame's capture time (ns since the epoch, UTC).
        gaps: (k, 2) array of stream ranges no captured packet covered.
        extent: stream length as far as sequence numbers on the wire reached.
        isn: the origin's absolute sequence number (SYN + 1), when a SYN was seen.
        conflicts: overlaps whose bytes differed.
        overlap_bytes: bytes received more than once (retransmissions included).
        overlaps_truncated: the overlap budget ran out; not every overlap was checked.
        out_of_order: segments arrived out of order or overlapped.
    """

    is_orig: bool
    start: np.ndarray
    end: np.ndarray
    file_offset: np.ndarray
    frame: np.ndarray
    ts: np.ndarray
    gaps: np.ndarray
    extent: int
    evidence: Evidence | None = None
    isn: int | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    overlap_bytes: int = 0
    overlaps_truncated: bool = False
    out_of_order: bool = False

    @classmethod
    def empty(cls, is_orig: bool, evidence: Evidence | None = None) -> Direction:
        """A direction that carried no payload."""
        return cls(is_orig, _Z, _Z, _Z, _Z, _Z, _Z2, 0, evidence)

    @property
    def captured(self) -> int:
        """Bytes captured (the extent minus the gaps)."""
        return int((self.end - self.start).sum())

    @property
    def missing(self) -> int:
        """Bytes in gaps."""
        return int((self.gaps[:, 1] - self.gaps[:, 0]).sum()) if self.gaps.size else 0

    def read(self, start: int = 0, end: int | None = None, *, fill: bytes | None = None) -> bytes:
        r"""Reassembled bytes of ``[start, end)``.

        Args:
            start: first stream offset.
            end: one past the last (default: the end of the captured stream).
            fill: byte to put in gaps (e.g. ``b"\\0"``); by default gaps are left out,
                so the result is shorter than ``end - start`` when the range has gaps.
        """
        if self.evidence is None or not self.start.size:
            return b""
        if end is None:
            end = int(self.end[-1])
        if end <= start:
            return b""
        lo = int(np.searchsorted(self.end, start, side="right"))
        if lo < self.start.size:  # fast path: the range lies inside one piece
            s0, e0 = int(self.start[lo]), int(self.end[lo])
            if s0 <= start and end <= e0:
                return self.evidence.read(int(self.file_offset[lo]) + start - s0, end - start)
        hi = int(np.searchsorted(self.start, end, side="left"))
        if hi <= lo:
            return (fill or b"")[:1] * (end - start) if fill else b""
        ps = np.maximum(self.start[lo:hi], start)
        pe = np.minimum(self.end[lo:hi], end)
        offs = self.file_offset[lo:hi] + (ps - self.start[lo:hi])
        lens = pe - ps
        if fill is None or (ps[0] == start and pe[-1] == end and (ps[1:] == pe[:-1]).all()):
            return self.evidence.gather(offs, lens)
        out = bytearray(fill[:1] * (end - start))
        for o, n, s in zip(offs.tolist(), lens.tolist(), ps.tolist(), strict=True):
            out[s - start : s - start + n] = self.evidence.read(o, n)
        return bytes(out)

    def contiguous_end(self, start: int = 0) -> int:
        """End of the gap-free run of bytes that begins at ``start``."""
        i = int(np.searchsorted(self.end, start, side="right"))
        if i >= self.start.size or self.start[i] > start:
            return start
        pos = int(self.end[i])
        for j in range(i + 1, self.start.size):
            if self.start[j] != pos:
                break
            pos = int(self.end[j])
        return pos

    def locate(self, offset: int) -> int:
        """Index of the piece holding ``offset`` (or the next piece after it; -1 if none)."""
        i = int(np.searchsorted(self.end, offset, side="right"))
        return i if i < self.start.size else -1

    def ts_at(self, offset: int) -> int | None:
        """Capture time (ns) of the frame that carried the byte at ``offset`` (or the next one)."""
        i = self.locate(offset)
        return int(self.ts[i]) if i >= 0 else None

    def frame_at(self, offset: int) -> int | None:
        """Frame that carried the byte at ``offset`` (or the next captured byte)."""
        i = self.locate(offset)
        return int(self.frame[i]) if i >= 0 else None

    def file_offset_at(self, offset: int) -> int | None:
        """Evidence offset of the byte at ``offset`` (or of the next captured byte)."""
        i = self.locate(offset)
        if i < 0:
            return None
        return int(self.file_offset[i] + max(offset - int(self.start[i]), 0))


class Datagram(NamedTuple):
    """One UDP payload.

    Attributes:
        is_orig: sent by the originator.
        ts: capture time (ns).
        frame: frame number.
        file_offset: offset of the payload in the evidence (past the end of the file
            for a datagram rebuilt from fragments).
        data: the payload bytes (as captured).
        wire_len: payload length per the headers.
    """

    is_orig: bool
    ts: int
    frame: int
    file_offset: int
    data: bytes
    wire_len: int


@dataclass
class SessionData:
    """What reassembly gives the protocol parsers for one session.

    Attributes:
        sid: index of the session in the sessions table handed to reassembly.
        proto: 6 (TCP) or 17 (UDP).
        orig: the originator's reassembled bytes (TCP).
        resp: the responder's reassembled bytes (TCP).
        datagrams: the UDP payloads in capture order.
        first_frame: first frame of the session's rows.
    """

    sid: int
    proto: int
    orig: Direction
    resp: Direction
    datagrams: list[Datagram] = field(default_factory=list)
    first_frame: int = 0


def build_sessions(
    rows: np.ndarray,
    ev: Evidence,
    *,
    conflicts: bool = True,
) -> tuple[dict[int, SessionData], dict[str, int]]:
    """Reassemble the TCP sessions and collect the UDP datagrams of a batch of rows.

    Args:
        rows: ROW array of finished sessions sorted by (sid, frame).
        ev: the evidence the rows point into.
        conflicts: compare the bytes of overlapping copies (costs reading them).

    Returns:
        Sessions by sid, and counters (``datagrams_unrebuilt``, ``overlap_truncated``).
    """
    stats = {"datagrams_unrebuilt": 0, "overlap_truncated": 0}
    out: dict[int, SessionData] = {}
    if not rows.size:
        return out, stats
    if ((rows["frag"] & 8) != 0).any():
        rows = rows.copy()
        stats["datagrams_unrebuilt"] = rebuild_datagrams(rows, ev)
    # A fragment's own row is part of the datagram its completing row (bit 8) carries.
    rows = rows[((rows["frag"] & 1) == 0) | ((rows["frag"] & 8) != 0)]
    tcp = rows[rows["proto"] == 6]
    if tcp.size:
        _build_tcp(tcp, ev, out, stats, conflicts)
    udp = rows[(rows["proto"] == 17) & (rows["poff"] >= 0)]
    if udp.size:
        _build_udp(udp, ev, out)
    return out, stats


def _build_udp(udp: np.ndarray, ev: Evidence, out: dict[int, SessionData]) -> None:
    sids = udp["sid"]
    cuts = np.flatnonzero(np.diff(sids)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [sids.size]])
    orig, ts, frame = udp["orig"].tolist(), udp["ts"].tolist(), udp["frame"].tolist()
    poff, plen, pwire = udp["poff"], udp["plen"], udp["pwire"].tolist()
    # One gather for every payload of the batch, then slices (payloads are small and many).
    blob = ev.gather(np.ascontiguousarray(poff), np.ascontiguousarray(plen))
    at = np.concatenate([[0], np.cumsum(plen)]).tolist()
    poff_l = poff.tolist()
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        sid = int(sids[a])
        s = out.get(sid)
        if s is None:
            s = out[sid] = SessionData(
                sid, 17, Direction.empty(True, ev), Direction.empty(False, ev), first_frame=frame[a]
            )
        s.datagrams.extend(
            Datagram(bool(orig[i]), ts[i], frame[i], poff_l[i], blob[at[i] : at[i + 1]], pwire[i])
            for i in range(a, b)
        )


def _build_tcp(
    tcp: np.ndarray, ev: Evidence, out: dict[int, SessionData], stats: dict[str, int], conflicts: bool
) -> None:
    order = np.lexsort((tcp["frame"], 1 - tcp["orig"], tcp["sid"]))
    t = tcp[order]
    key = t["sid"] * 2 + (1 - t["orig"])
    cuts = np.flatnonzero(np.diff(key)) + 1
    gstart = np.concatenate([[0], cuts, [key.size]]).astype(np.int64)
    # Rows without a payload offset (a datagram that could not be rebuilt) count as uncaptured.
    plen = np.where(t["poff"] >= 0, t["plen"], 0).astype(np.int64)
    pwire = np.maximum(t["pwire"], plen).astype(np.int64)
    budget = max(OVERLAP_BUDGET_MIN, OVERLAP_BUDGET_PER_ROW * t.size)
    (
        seg_s,
        pc_s,
        pc_e,
        pc_o,
        g_pc,
        gp_s,
        gp_e,
        g_gap,
        ov_j,
        ov_o,
        ov_s,
        ov_e,
        g_ov,
        g_base,
        g_ext,
        g_flags,
    ) = k.reassemble(
        gstart, np.ascontiguousarray(t["seq"]), np.ascontiguousarray(t["flags"]), plen, pwire, budget
    )
    poff = np.ascontiguousarray(t["poff"])
    diff = None
    if conflicts and ov_j.size:
        diff, _first = k.compare_overlaps(ev.array, poff, seg_s, ov_j, ov_o, ov_s, ov_e)
    foff = poff[pc_o] + (pc_s - seg_s[pc_o])
    pframe, pts = t["frame"][pc_o], t["ts"][pc_o]
    gaps = np.stack([gp_s, gp_e], axis=1)
    seq0 = t["seq"][gstart[:-1]].tolist()
    gs, sids, origs = gstart.tolist(), t["sid"].tolist(), t["orig"].tolist()
    gpc, ggap, gfl, gext, gbase = (
        g_pc.tolist(),
        g_gap.tolist(),
        g_flags.tolist(),
        g_ext.tolist(),
        g_base.tolist(),
    )
    frames = t["frame"].tolist()
    ng = gstart.size - 1
    for g in range(ng):
        a = gs[g]
        sid, is_orig = sids[a], bool(origs[a])
        p0, p1 = gpc[g], gpc[g + 1]
        q0, q1 = ggap[g], ggap[g + 1]
        flags = gfl[g]
        d = Direction(
            is_orig,
            pc_s[p0:p1],
            pc_e[p0:p1],
            foff[p0:p1],
            pframe[p0:p1],
            pts[p0:p1],
            gaps[q0:q1],
            gext[g],
            ev,
            isn=(seq0[g] + gbase[g]) & 0xFFFFFFFF if flags & k.G_SYN else None,
            overlaps_truncated=bool(flags & k.G_OVERLAP_TRUNC),
            out_of_order=bool(flags & k.G_OUT_OF_ORDER),
        )
        if flags & k.G_OVERLAP_TRUNC:
            stats["overlap_truncated"] += 1
        r0, r1 = int(g_ov[g]), int(g_ov[g + 1])
        if r1 > r0:
            d.overlap_bytes = int((ov_e[r0:r1] - ov_s[r0:r1]).sum())
            if diff is not None:
                for r in np.flatnonzero(diff[r0:r1]).tolist():
                    r += r0
                    j = int(ov_j[r])
                    if plen[j] <= 1:
                        continue  # keep-alive or window probe: one stale byte by design
                    d.conflicts.append(
                        Conflict(
                            int(ov_s[r]),
                            int(ov_e[r]),
                            int(diff[r]),
                            int(t["frame"][ov_o[r]]),
                            int(t["frame"][j]),
                            int(t["foff"][j]),
                        )
                    )
        s = out.get(sid)
        if s is None:
            s = out[sid] = SessionData(
                sid, 6, Direction.empty(True, ev), Direction.empty(False, ev), first_frame=frames[a]
            )
        else:
            s.first_frame = min(s.first_frame, frames[a])
        if is_orig:
            s.orig = d
        else:
            s.resp = d
