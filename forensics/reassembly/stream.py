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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from forensics.reassembly import _kernel as k
from forensics.reassembly._frag import rebuild_datagrams
from forensics.reassembly._index import Rows

if TYPE_CHECKING:
    from forensics.reassembly._evidence import Evidence

__all__ = ["Conflict", "Datagram", "Direction", "SessionBatch", "SessionData", "build_sessions"]

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
    # (end, bytes): what read(0, end) returns, read ahead in bulk (see SessionBatch)
    _head: tuple[int, bytes] | None = field(default=None, repr=False, compare=False)

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
        h = self._head
        if h is not None and start == 0 and end == h[0] and fill is None:
            return h[1]
        if end - start > _BIG_READ:
            big = self._read_big(start, end, fill)
            if big is not None:
                return big
        elif self.file_offset.dtype == np.int64 and self.start.dtype == np.int64 and (fill is None or fill):
            ok, out = k.read_range(
                self.evidence.array, self.start, self.end, self.file_offset, start, end,
                fill[0] if fill else -1,
            )
            if ok:
                return out.tobytes()
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

    def _read_big(self, start: int, end: int, fill: bytes | None) -> bytes | None:
        """:meth:`read` of a long range, copied once from the mapped file (None: not all in it)."""
        ev = self.evidence
        view = ev.view if ev is not None else None
        if view is None or (fill is not None and not fill):
            return None
        lo = int(np.searchsorted(self.end, start, side="right"))
        hi = int(np.searchsorted(self.start, end, side="left"))
        if hi <= lo:
            return None
        ps = np.maximum(self.start[lo:hi], start)
        pe = np.minimum(self.end[lo:hi], end)
        offs = self.file_offset[lo:hi] + (ps - self.start[lo:hi])
        if offs.min() < 0 or int((offs + (pe - ps)).max()) > len(view):
            return None
        if fill is None:
            ends = (offs + (pe - ps)).tolist()
            return b"".join([view[o:e] for o, e in zip(offs.tolist(), ends, strict=True)])
        out = bytearray(fill[:1] * (end - start))
        for o, n, s in zip(offs.tolist(), (pe - ps).tolist(), ps.tolist(), strict=True):
            out[s - start : s - start + n] = view[o : o + n]
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


HEAD = 1024  # bytes of each TCP direction read ahead in bulk (what the protocol detectors look at)
_BIG_READ = 1 << 16  # reads longer than this are copied from the mapped file by slices
_TCP_FIELDS = ("sid", "orig", "frame", "ts", "foff", "seq", "flags", "poff", "plen", "pwire")
_UDP_FIELDS = ("sid", "orig", "frame", "ts", "poff", "plen", "pwire")


class SessionBatch:
    """The sessions of a batch of index rows, reassembled in one compiled pass.

    Reassembly runs over every TCP direction of the batch at once; the per-session
    objects (:class:`SessionData`, :class:`Direction`, :class:`Datagram`) are made
    only when asked for (:meth:`tcp_session`, :meth:`udp_session`), so a caller that
    needs the bulk results only (:meth:`gaps`, :meth:`head_sizes`,
    :meth:`udp_payloads`) pays nothing per session.

    Args:
        rows: rows of finished sessions (ROW array or
            :class:`~forensics.reassembly._index.Rows`), in index order or sorted
            by (sid, frame): a session's rows keep their order.
        ev: the evidence the rows point into.
        conflicts: compare the bytes of overlapping copies (costs reading them).
        sel: only the rows at these positions (ascending) of ``rows``.

    Attributes:
        stats: counters (``datagrams_unrebuilt``, ``overlap_truncated``).
        tcp_sids: TCP sessions of the batch, ascending.
        udp_sids: UDP sessions with at least one payload, ascending.
    """

    def __init__(
        self, rows: np.ndarray | Rows, ev: Evidence, *, conflicts: bool = True, sel: np.ndarray | None = None
    ):
        self.ev = ev
        self.stats = {"datagrams_unrebuilt": 0, "overlap_truncated": 0}
        rows = Rows.of(rows)
        self.tcp_sids = self.udp_sids = _Z
        self._tcp: dict[str, Any] = {}
        self._udp: dict[str, Any] = {}
        if not (rows.size if sel is None else sel.size):
            return
        frag = rows["frag"] if sel is None else rows["frag"][sel]
        if ((frag & 8) != 0).any():
            rows = Rows({k: (v if sel is None else v[sel]).copy() for k, v in rows.items()})
            sel = None
            self.stats["datagrams_unrebuilt"] = rebuild_datagrams(rows, ev)  # type: ignore[arg-type]
        proto = rows["proto"] if sel is None else rows["proto"][sel]
        # A fragment's own row is part of the datagram its completing row (bit 8) carries.
        whole = ((frag & 1) == 0) | ((frag & 8) != 0) if (frag & 1).any() else None
        is_tcp = proto == 6
        if whole is not None:
            is_tcp &= whole
        tcp = np.flatnonzero(is_tcp)
        if tcp.size:
            self._build_tcp(rows, tcp if sel is None else sel[tcp], conflicts)
        poff = rows["poff"] if sel is None else rows["poff"][sel]
        is_udp = (proto == 17) & (poff >= 0)
        if whole is not None:
            is_udp &= whole
        udp = np.flatnonzero(is_udp)
        if udp.size:
            self._build_udp(rows, udp if sel is None else sel[udp])

    # -- TCP -------------------------------------------------------------------------------

    def _build_tcp(self, rows: Rows, idx: np.ndarray, conflicts: bool) -> None:
        # Directions (orig first) of sessions in sid order, segments in capture order.
        key = rows["sid"][idx] * 2 + (1 - rows["orig"][idx])
        frame = rows["frame"][idx]
        if frame.size > 1 and not bool((frame[1:] >= frame[:-1]).all()):
            order = np.lexsort((frame, key))
        else:
            order = _stable_order(key)
        t = rows.take(idx[order], _TCP_FIELDS)
        key = key[order]
        frame = t["frame"]
        cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
        gstart = np.concatenate([[0], cuts, [key.size]]).astype(np.int64)
        # Rows without a payload offset (a datagram that could not be rebuilt) count as uncaptured.
        poff = t["poff"]
        plen = np.where(poff >= 0, t["plen"], 0)
        pwire = np.maximum(t["pwire"], plen)
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
        ) = k.reassemble(gstart, t["seq"], t["flags"], plen, pwire, budget)
        ng = gstart.size - 1
        foff = poff[pc_o] + (pc_s - seg_s[pc_o])
        g_sid = t["sid"][gstart[:-1]]
        g_orig = t["orig"][gstart[:-1]]
        self.stats["overlap_truncated"] += int(np.count_nonzero(g_flags & k.G_OVERLAP_TRUNC))
        # Per session: its orig and resp groups (-1: that side sent nothing).
        first = np.ones(ng, bool)
        first[1:] = g_sid[1:] != g_sid[:-1]
        sess_g = np.flatnonzero(first)
        self.tcp_sids = g_sid[sess_g]
        go = np.where(g_orig[sess_g] == 1, sess_g, -1)
        nxt = np.minimum(sess_g + 1, ng - 1)
        two = (sess_g + 1 < ng) & (g_sid[nxt] == self.tcp_sids)
        gr = np.where(g_orig[sess_g] == 1, np.where(two, sess_g + 1, -1), sess_g)
        ff = frame[gstart[:-1]]
        ff_s = np.where(two, np.minimum(ff[sess_g], ff[nxt]), ff[sess_g])
        # Overlaps: bytes per group, and the conflicting ones (rare) as objects.
        ov_cum = np.concatenate([[0], np.cumsum(ov_e - ov_s)])
        g_ovb = ov_cum[g_ov[1:]] - ov_cum[g_ov[:-1]]
        conf: dict[int, list[Conflict]] = {}
        if conflicts and ov_j.size:
            diff, _first = k.compare_overlaps(ev_array(self.ev), poff, seg_s, ov_j, ov_o, ov_s, ov_e)
            # keep-alives and window probes: one stale byte by design
            hit = np.flatnonzero((diff != 0) & (plen[ov_j] > 1))
            if hit.size:
                g_of = np.searchsorted(g_ov, hit, side="right") - 1
                tf, tfo = t["frame"], t["foff"]
                for r, g in zip(hit.tolist(), g_of.tolist(), strict=True):
                    j = int(ov_j[r])
                    c = Conflict(
                        int(ov_s[r]), int(ov_e[r]), int(diff[r]), int(tf[ov_o[r]]), int(tf[j]), int(tfo[j])
                    )
                    conf.setdefault(g, []).append(c)
        heads, h_off, h_ok = k.gather_heads(ev_array(self.ev), g_pc, pc_s, pc_e, foff, HEAD)
        self._tcp = {
            "pc_s": pc_s,
            "pc_e": pc_e,
            "foff": foff,
            "pframe": t["frame"][pc_o],
            "pts": t["ts"][pc_o],
            "gaps": np.stack([gp_s, gp_e], axis=1),
            "g_pc": g_pc.tolist(),
            "g_gap": g_gap.tolist(),
            "g_ext": g_ext.tolist(),
            "g_flags": g_flags.tolist(),
            "g_isn": ((t["seq"][gstart[:-1]] + g_base) & 0xFFFFFFFF).tolist(),
            "g_ovb": g_ovb.tolist(),
            "g_orig": g_orig,
            "conf": conf,
            "go": go.tolist(),
            "gr": gr.tolist(),
            "ff": ff_s.tolist(),
            "heads": heads.tobytes(),
            "h_off": h_off.tolist(),
            "h_ok": h_ok.tolist(),
            # bulk results for callers that want them without the objects
            "g_sid": g_sid,
            "gp_s": gp_s,
            "gp_e": gp_e,
            "g_gap_a": g_gap,
            "g_pc_a": g_pc,
            "h_off_a": h_off,
            "sess_g": sess_g,
        }

    def gaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every gap of every TCP direction, sessions ascending, orig before resp.

        Returns:
            ``(sid, is_orig, start, end)`` per gap.
        """
        tc = self._tcp
        if not tc:
            return _Z, _Z, _Z, _Z
        gg = tc["g_gap_a"]
        n = np.diff(gg)
        sid = np.repeat(tc["g_sid"], n)
        orig = np.repeat(tc["g_orig"], n)
        return sid, orig, tc["gp_s"], tc["gp_e"]

    def head_sizes(self) -> np.ndarray:
        """Per TCP session (as :attr:`tcp_sids`), head bytes of both directions together.

        Zero means neither direction has a byte a detector could look at.
        """
        tc = self._tcp
        if not tc:
            return _Z
        h = np.diff(tc["h_off_a"])
        h = np.where(np.asarray(tc["h_ok"], bool), h, 1)  # unknown: look the slow way
        go, gr = np.asarray(tc["go"]), np.asarray(tc["gr"])
        return np.where(go >= 0, h[go], 0) + np.where(gr >= 0, h[gr], 0)

    def conflicted(self) -> np.ndarray:
        """Per TCP session (as :attr:`tcp_sids`), True when a direction has conflicting overlaps."""
        tc = self._tcp
        out = np.zeros(self.tcp_sids.size, bool)
        if tc and tc["conf"]:
            g = np.fromiter(tc["conf"].keys(), np.int64)
            out[np.searchsorted(tc["sess_g"], g, side="right") - 1] = True
        return out

    def tcp_heads(self, i: int) -> tuple[bytes, bytes] | None:
        """The first bytes (up to ``HEAD``) of each direction of the ``i``-th TCP session.

        From the batch's bulk read: what ``Direction.read`` gives for them. None when a
        head is not known in bulk (:meth:`tcp_session` then reads it).
        """
        tc = self._tcp
        heads = [self._bulk_head(g) for g in (tc["go"][i], tc["gr"][i])]
        if heads[0] is None or heads[1] is None:
            return None
        return heads[0], heads[1]

    def _bulk_head(self, g: int) -> bytes | None:
        """Direction group ``g``'s head as the bulk read got it.

        b"" when the direction carried no payload; None when the bulk read could not get it.
        """
        tc = self._tcp
        if g < 0 or tc["g_pc"][g + 1] <= tc["g_pc"][g]:
            return b""
        if not tc["h_ok"][g]:
            return None
        return tc["heads"][tc["h_off"][g]:tc["h_off"][g + 1]]

    def _direction(self, g: int, is_orig: bool) -> Direction:
        if g < 0:
            return Direction.empty(is_orig, self.ev)
        tc = self._tcp
        p0, p1 = tc["g_pc"][g], tc["g_pc"][g + 1]
        q0, q1 = tc["g_gap"][g], tc["g_gap"][g + 1]
        flags = tc["g_flags"][g]
        d = Direction(
            is_orig,
            tc["pc_s"][p0:p1],
            tc["pc_e"][p0:p1],
            tc["foff"][p0:p1],
            tc["pframe"][p0:p1],
            tc["pts"][p0:p1],
            tc["gaps"][q0:q1],
            tc["g_ext"][g],
            self.ev,
            isn=tc["g_isn"][g] if flags & k.G_SYN else None,
            overlaps_truncated=bool(flags & k.G_OVERLAP_TRUNC),
            out_of_order=bool(flags & k.G_OUT_OF_ORDER),
        )
        d.overlap_bytes = tc["g_ovb"][g]
        c = tc["conf"].get(g)
        if c:
            d.conflicts = c
        head = self._bulk_head(g) if p1 > p0 else None
        if head is not None:
            d._head = (min(HEAD, int(d.end[-1])), head)
        return d

    def tcp_session(self, i: int) -> SessionData:
        """The ``i``-th TCP session of the batch (``tcp_sids[i]``)."""
        tc = self._tcp
        return SessionData(
            int(self.tcp_sids[i]),
            6,
            self._direction(tc["go"][i], True),
            self._direction(tc["gr"][i], False),
            first_frame=tc["ff"][i],
        )

    # -- UDP -------------------------------------------------------------------------------

    def _build_udp(self, rows: Rows, idx: np.ndarray) -> None:
        udp = rows.take(idx[_stable_order(rows["sid"][idx])], _UDP_FIELDS)
        sids = udp["sid"]
        cuts = np.flatnonzero(sids[1:] != sids[:-1]) + 1
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        self.udp_sids = sids[starts]
        poff, plen = udp["poff"], udp["plen"]
        # One gather for every payload of the batch, then slices (payloads are small and many).
        buf, at, ok = k.gather(ev_array(self.ev), poff, plen)
        self._udp = {
            "start": np.concatenate([starts, [sids.size]]),
            "buf": buf,
            "at": at,
            "ok": ok,
            "rows": udp,
        }

    def udp_payloads(self) -> dict[str, np.ndarray]:
        """The UDP datagrams of the batch in bulk, sessions ascending, capture order inside.

        Returns:
            ``start`` (CSR offsets of each session's datagrams, as :attr:`udp_sids`),
            ``buf``/``at`` (payload bytes and where each starts, len = datagrams + 1),
            ``ok`` (False: not in ``buf``, read with :meth:`Evidence.read`),
            and per datagram ``orig``, ``ts``, ``frame``, ``poff``, ``plen``, ``pwire``.
        """
        u = self._udp
        if not u:
            return {}
        r = u["rows"]
        return {
            "start": u["start"],
            "buf": u["buf"],
            "at": u["at"],
            "ok": u["ok"],
            **{f: r[f] for f in ("orig", "ts", "frame", "poff", "plen", "pwire")},
        }

    def udp_session(self, i: int) -> SessionData:
        """The ``i``-th UDP session of the batch (``udp_sids[i]``)."""
        u = self._udp
        a, b = int(u["start"][i]), int(u["start"][i + 1])
        r = u["rows"]
        orig = r["orig"][a:b].tolist()
        ts = r["ts"][a:b].tolist()
        frame = r["frame"][a:b].tolist()
        poff = r["poff"][a:b].tolist()
        plen = r["plen"][a:b].tolist()
        pwire = r["pwire"][a:b].tolist()
        at = u["at"][a : b + 1].tolist()
        ok = u["ok"][a:b].tolist()
        blob = u["buf"][at[0] : at[-1]].tobytes()
        base = at[0]
        read = self.ev.read
        dgs = [
            Datagram(
                bool(orig[i]),
                ts[i],
                frame[i],
                poff[i],
                blob[at[i] - base : at[i + 1] - base] if ok[i] else read(poff[i], plen[i]),
                pwire[i],
            )
            for i in range(b - a)
        ]
        ev = self.ev
        return SessionData(
            int(self.udp_sids[i]), 17, Direction.empty(True, ev), Direction.empty(False, ev), dgs, frame[0]
        )

    def sessions(self) -> dict[int, SessionData]:
        """Every session of the batch by sid (TCP first, then UDP, each ascending)."""
        out = {int(s): self.tcp_session(i) for i, s in enumerate(self.tcp_sids.tolist())}
        for i, s in enumerate(self.udp_sids.tolist()):
            out[int(s)] = self.udp_session(i)
        return out


def _stable_order(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of non-negative keys (linear time while they are few)."""
    top = int(key.max()) + 1 if key.size else 0
    if key.size and key.min() >= 0 and top <= 4 * key.size + (1 << 16):
        return k.stable_order(key, top)
    return np.argsort(key, kind="stable")


def ev_array(ev: Evidence) -> np.ndarray:
    """The evidence's main file as a uint8 array (empty when it cannot be mapped)."""
    return ev.array


def build_sessions(
    rows: np.ndarray | Rows,
    ev: Evidence,
    *,
    conflicts: bool = True,
) -> tuple[dict[int, SessionData], dict[str, int]]:
    """Reassemble the TCP sessions and collect the UDP datagrams of a batch of rows.

    Args:
        rows: ROW array (or :class:`~forensics.reassembly._index.Rows`) of finished
            sessions, in index order or sorted by (sid, frame).
        ev: the evidence the rows point into.
        conflicts: compare the bytes of overlapping copies (costs reading them).

    Returns:
        Sessions by sid, and counters (``datagrams_unrebuilt``, ``overlap_truncated``).
    """
    b = SessionBatch(rows, ev, conflicts=conflicts)
    return b.sessions(), b.stats
