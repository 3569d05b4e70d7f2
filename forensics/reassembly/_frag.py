"""Payloads of IP datagrams the packet pass rebuilt from fragments.

The packet index marks the row of the fragment that completed a datagram
(``frag`` bit 8) and has no single payload offset for it: its bytes are spread
over several frames. Fragments are rare, so this re-reads those frames with
dpkt, puts the datagram together again (RFC 791 §3.2, RFC 8200 §4.5; first copy
of a byte wins) and stores its transport payload in the evidence's side store.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from forensics.reassembly._evidence import Evidence

__all__ = ["rebuild_datagrams"]

_FRAG_BIT, _DONE_BIT = 1, 8


def _ip_of_frame(frame: bytes, linktype: int) -> bytes | None:
    """The IP packet inside a captured frame, for the common link types."""
    import dpkt

    try:
        if linktype == 1:
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            return bytes(ip) if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) else None
        if linktype in (101, 12, 14, 228, 229):
            return frame
        if linktype == 113:
            return frame[16:]
        if linktype == 276:
            return frame[20:]
        if linktype in (0, 108):
            return frame[4:]
    except (dpkt.UnpackError, struct.error, IndexError, ValueError):
        return None
    return None


def _fragment(ip: bytes) -> tuple[int, int, bool, bytes, int, bytes] | None:
    """(id, offset, more, data, protocol, header) of an IPv4 or IPv6 fragment."""
    if not ip:
        return None
    v = ip[0] >> 4
    if v == 4 and len(ip) >= 20:
        hl = (ip[0] & 15) * 4
        tot = struct.unpack_from(">H", ip, 2)[0]
        ident, off = struct.unpack_from(">HH", ip, 4)
        return ident, (off & 0x1FFF) * 8, bool(off & 0x2000), ip[hl:tot], ip[9], ip[:hl]
    if v == 6 and len(ip) >= 40:
        nh, p = ip[6], 40
        end = 40 + struct.unpack_from(">H", ip, 4)[0]
        while nh in (0, 43, 60, 44) and p + 8 <= len(ip):
            if nh == 44:  # RFC 8200 §4.5
                offlg, ident = struct.unpack_from(">HI", ip, p + 2)
                return ident, offlg & 0xFFF8, bool(offlg & 1), ip[p + 8 : end], ip[p], ip[:p]
            nh, p = ip[p], p + (ip[p + 1] + 1) * 8
    return None


def rebuild_datagrams(rows: np.ndarray, ev: Evidence) -> int:
    """Give every completed-datagram row a payload offset (in the side store).

    Args:
        rows: ROW array of one or more sessions, sorted by (sid, frame); updated in place.
        ev: the evidence.

    Returns:
        How many datagrams could not be rebuilt (their payload stays unavailable).
    """
    todo = np.nonzero(((rows["frag"] & _DONE_BIT) != 0) & (rows["poff"] < 0))[0]
    failed = 0
    for r in todo.tolist():
        sid = rows["sid"][r]
        members = np.nonzero(
            (rows["sid"] == sid)
            & ((rows["frag"] & (_FRAG_BIT | _DONE_BIT)) != 0)
            & (rows["frame"] <= rows["frame"][r])
        )[0]
        frags = []
        for m in members.tolist():
            ip = _ip_of_frame(ev.read(int(rows["foff"][m]), int(rows["caplen"][m])), int(rows["linktype"][m]))
            f = _fragment(ip) if ip else None
            if f:
                frags.append(f)
        if not frags:
            failed += 1
            continue
        ident = frags[-1][0]
        buf = bytearray()
        have = bytearray()
        last = -1
        for fid, off, more, data, _proto, _hdr in frags:
            if fid != ident:
                continue
            if len(buf) < off + len(data):
                grow = off + len(data) - len(buf)
                buf.extend(b"\0" * grow)
                have.extend(b"\0" * grow)
            for i in range(len(data)):  # first copy wins
                if not have[off + i]:
                    buf[off + i] = data[i]
                    have[off + i] = 1
            if not more:
                last = off + len(data)
        if last < 0 or not all(have[:last]):
            failed += 1
            continue
        proto = frags[-1][4]
        dgram = bytes(buf[:last])
        if proto == 6 and len(dgram) >= 20:
            payload = dgram[(dgram[12] >> 4) * 4 :]
        elif proto == 17 and len(dgram) >= 8:
            payload = dgram[8 : struct.unpack_from(">H", dgram, 4)[0] or len(dgram)]
        else:
            payload = dgram
        rows["poff"][r] = ev.add(payload)
        rows["plen"][r] = len(payload)
    return failed
