"""IP fragment reassembly for the packet pass (RFC 791 §3.2, RFC 8200 §4.5).

Fragments are rare, so this runs in Python over the few rows the compiled
decoder flagged. A complete datagram is rebuilt, its transport header decoded,
and the row of the fragment that completed it carries the datagram (as Zeek
counts one packet per reassembled datagram); the other fragments' rows keep
their fragment flags and get the same session uid. Overlapping fragments keep
the first copy of each byte; conflicting overlaps are recorded as warnings
(an IDS-evasion signal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from forensics.net import _decode as d

if TYPE_CHECKING:
    from forensics.ingest import IngestContext
    from forensics.sources._frames import FrameBatch

MAX_PENDING = 4096  # datagrams in reassembly at once
MAX_DATAGRAM = 65535 + 40
TIMEOUT_NS = 60 * 1_000_000_000


class _Datagram:
    __slots__ = ("buf", "conflict", "first", "first_ts", "have", "header", "offset", "rows", "total")

    def __init__(self, ts: int, offset: int):
        self.buf = bytearray(MAX_DATAGRAM)
        self.have = np.zeros(MAX_DATAGRAM, bool)
        self.total = -1
        self.header: bytes | None = None
        self.first_ts = ts
        self.offset = offset
        self.rows: list[int] = []
        self.first = None
        self.conflict = False


class FragmentReassembler:
    """Keeps partial datagrams across chunks; see the module docstring."""

    def __init__(self, ctx: IngestContext):
        self.ctx = ctx
        self.pending: dict[tuple, _Datagram] = {}

    def process(
        self, b: FrameBatch, rows: np.ndarray, addr: np.ndarray, frames: np.ndarray
    ) -> list[tuple[list[int], int]]:
        """Reassemble what this chunk completes; returns (member rows, completing row) pairs."""
        idx = np.nonzero(rows[:, d.F_FRAG] & 1)[0]
        groups: list[tuple[list[int], int]] = []
        for r in idx.tolist():
            fr = int(rows[r, d.F_FRAME])
            ts = int(b.ts_ns[fr])
            key = (int(rows[r, d.F_IPV]), *(int(x) for x in addr[r]), int(rows[r, d.F_IPID]),
                   int(rows[r, d.F_PROTO]) if rows[r, d.F_IPV] == 4 else 0)
            dg = self.pending.get(key)
            if dg is None:
                if len(self.pending) >= MAX_PENDING:
                    self._expire(ts, force=True)
                dg = self.pending[key] = _Datagram(ts, b.base + int(b.off[fr]))
            fo = int(rows[r, d.F_FRAGOFF])
            po = int(rows[r, d.F_PAYOFF])
            if fo == 0:
                # The decoder went on into the first fragment's transport header, so
                # F_PAYOFF points past it; the fragment's data starts at the IP payload.
                po = _fragment_data_start(b.buf, int(rows[r, d.F_IPOFF]), int(rows[r, d.F_IPV]))
            ipoff = int(rows[r, d.F_IPOFF])
            ip_end = ipoff + int(rows[r, d.F_IPLEN])
            frame_end = int(b.off[fr]) + int(b.caplen[fr])
            plen = max(0, min(ip_end, frame_end) - po) if po >= 0 else 0
            data = b.buf[po:po + plen].tobytes() if po >= 0 else b""
            end = min(fo + len(data), MAX_DATAGRAM)
            seg = np.frombuffer(data[: max(0, end - fo)], np.uint8)
            if seg.size:
                old = self.dg_bytes(dg, fo, end)
                overlap = dg.have[fo:end]
                if overlap.any() and (old[overlap] != seg[overlap]).any():
                    if not dg.conflict:
                        self.ctx.warn(b.base + int(b.off[fr]), "fragment_overlap_conflict",
                                      "overlapping IP fragments carry different bytes; "
                                      "kept the first copy")
                    dg.conflict = True
                new = ~overlap
                buf = np.frombuffer(dg.buf, np.uint8)
                buf[fo:end][new] = seg[new]
                dg.have[fo:end] |= True
            dg.rows.append(r)
            if fo == 0:
                ipoff = int(rows[r, d.F_IPOFF])
                dg.header = b.buf[ipoff:po].tobytes() if po >= ipoff >= 0 else None
            if not (rows[r, d.F_FRAG] & 2):
                dg.total = fo + plen
            if dg.total >= 0 and dg.header is not None and dg.have[: dg.total].all():
                del self.pending[key]
                if self._complete(dg, rows, addr, r):
                    groups.append(([x for x in dg.rows if x != r], r))
        self._expire(int(b.ts_ns[-1]))
        return groups

    @staticmethod
    def dg_bytes(dg: _Datagram, a: int, b: int) -> np.ndarray:
        """Bytes ``a..b`` of a datagram buffer as an array view."""
        return np.frombuffer(dg.buf, np.uint8)[a:b]

    def _complete(self, dg: _Datagram, rows: np.ndarray, addr: np.ndarray, r: int) -> bool:
        hdr = bytearray(dg.header or b"")
        payload = bytes(dg.buf[: dg.total])
        if rows[r, d.F_IPV] == 4 and len(hdr) >= 20:
            total = len(hdr) + len(payload)
            hdr[2:4] = total.to_bytes(2, "big")
            hdr[6:8] = b"\x00\x00"
            pkt = bytes(hdr) + payload
        elif rows[r, d.F_IPV] == 6 and len(hdr) >= 40:
            # Rebuild as a plain IPv6 packet: fixed header, then the reassembled payload.
            h6 = bytearray(hdr[:40])
            h6[4:6] = len(payload).to_bytes(2, "big")
            h6[6] = int(rows[r, d.F_PROTO]) & 0xFF
            pkt = bytes(h6) + payload
        else:
            return False
        buf = np.frombuffer(pkt, np.uint8)
        out = np.empty((2, d.NFIELDS), np.int64)
        oaddr = np.empty((2, 4), np.uint64)
        n = d.decode(buf, np.zeros(1, np.int64), np.array([len(pkt)], np.int64),
                     np.array([d.LT_RAW], np.int64), out, oaddr)
        if n < 1:
            return False
        keep = {d.F_FRAME, d.F_DEPTH, d.F_VLAN, d.F_VLAN2, d.F_ETHERTYPE, d.F_TUNNEL, d.F_IPOFF}
        for k in range(d.NFIELDS):
            if k not in keep:
                rows[r, k] = out[0, k]
        rows[r, d.F_PAYOFF] = -1
        rows[r, d.F_FRAG] = 8  # reassembled
        return True

    def _expire(self, now: int, force: bool = False) -> None:
        for key, dg in list(self.pending.items()):
            if force or now - dg.first_ts > TIMEOUT_NS:
                self.ctx.warn(dg.offset, "fragments_incomplete",
                              "fragmented datagram never completed; its fragments are indexed "
                              "but not counted in a session")
                del self.pending[key]
                if force:
                    return

    def flush(self) -> None:
        """Report datagrams still incomplete at the end of the file."""
        for dg in self.pending.values():
            self.ctx.warn(dg.offset, "fragments_incomplete",
                          "fragmented datagram never completed; its fragments are indexed "
                          "but not counted in a session")
        self.pending.clear()


def _fragment_data_start(buf: np.ndarray, ipoff: int, ipv: int) -> int:
    """Offset where a fragment's data begins.

    That is after the IPv4 header, or after the IPv6 fragment header (RFC 8200
    §4.5: the fragmentable part follows it).
    """
    if ipoff < 0:
        return -1
    if ipv == 4:
        return ipoff + (int(buf[ipoff]) & 0xF) * 4
    nh, q = int(buf[ipoff + 6]), ipoff + 40
    for _ in range(16):
        if q + 8 > buf.shape[0]:
            return -1
        if nh == 44:
            return q + 8
        if nh == 51:
            hl = (int(buf[q + 1]) + 2) * 4
        elif nh in (0, 43, 60, 135, 139, 140, 253, 254):
            hl = (int(buf[q + 1]) + 1) * 8
        else:
            return -1
        nh, q = int(buf[q]), q + hl
    return -1
