"""Compiled walkers over capture-file record headers (pcap and pcapng).

The packet pass is the hot path (DESIGN §5): a Python loop over records manages
well under 100k packets/s, so the record headers are walked here by numba over a
``uint8`` buffer holding a chunk of the file. Each walker fills preallocated
arrays and returns how far it got plus a status, so that the Python caller can
read more of the file, parse a rare control block itself, or warn and resync.

Offsets in the outputs are relative to the start of ``buf``; the caller adds the
chunk's file offset.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Status codes returned by the walkers.
NEED_MORE = 0  # the next record is not complete in the buffer
OUT_FULL = 1  # output arrays are full
BAD_RECORD = 2  # the next record header is implausible (caller warns, then resyncs)
CONTROL_BLOCK = 3  # pcapng: a block the caller parses itself (SHB, IDB)

# pcapng block types (draft-ietf-opsawg-pcapng §4).
SHB = 0x0A0D0D0A
IDB = 0x00000001
OPB = 0x00000002  # obsolete packet block (Appendix A)
SPB = 0x00000003
EPB = 0x00000006

# Largest record we accept. libpcap's MAXIMUM_SNAPLEN is 256 KiB (262144); D-Bus
# captures may use 128 MiB, but a record that large in a network capture is a
# corrupt length far more often than a real packet.
MAX_CAPLEN = 262144 * 4


@njit(cache=True, inline="always")
def _u16(buf: np.ndarray, i: int, swap: bool) -> int:
    if swap:
        return (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)


@njit(cache=True, inline="always")
def _u32(buf: np.ndarray, i: int, swap: bool) -> int:
    if swap:
        return (
            (np.int64(buf[i]) << 24)
            | (np.int64(buf[i + 1]) << 16)
            | (np.int64(buf[i + 2]) << 8)
            | np.int64(buf[i + 3])
        )
    return (
        np.int64(buf[i])
        | (np.int64(buf[i + 1]) << 8)
        | (np.int64(buf[i + 2]) << 16)
        | (np.int64(buf[i + 3]) << 24)
    )


@njit(cache=True, nogil=True)
def walk_pcap(
    buf: np.ndarray,
    pos: int,
    swap: bool,
    frac_ns: int,
    out_off: np.ndarray,
    out_ts: np.ndarray,
    out_caplen: np.ndarray,
    out_wirelen: np.ndarray,
) -> tuple[int, int, int]:
    """Walk classic pcap record headers from ``pos``.

    Args:
        buf: chunk of the file.
        pos: offset of the first record header in ``buf``.
        swap: the file is big-endian relative to the little-endian reader.
        frac_ns: nanoseconds per unit of the fraction field (1000 for µs, 1 for ns).
        out_off: receives the offset of each packet's data.
        out_ts: receives each packet's timestamp in ns since the epoch.
        out_caplen: receives captured lengths.
        out_wirelen: receives original (wire) lengths.

    Returns:
        (number of packets written, position after the last complete record, status).
    """
    n = 0
    end = buf.shape[0]
    cap = out_off.shape[0]
    while True:
        if n >= cap:
            return n, pos, OUT_FULL
        if pos + 16 > end:
            return n, pos, NEED_MORE
        sec = _u32(buf, pos, swap)
        frac = _u32(buf, pos + 4, swap)
        caplen = _u32(buf, pos + 8, swap)
        wirelen = _u32(buf, pos + 12, swap)
        if caplen > MAX_CAPLEN:
            return n, pos, BAD_RECORD
        if pos + 16 + caplen > end:
            return n, pos, NEED_MORE
        out_off[n] = pos + 16
        out_ts[n] = sec * 1_000_000_000 + frac * frac_ns
        out_caplen[n] = caplen
        out_wirelen[n] = wirelen
        n += 1
        pos += 16 + caplen


@njit(cache=True, nogil=True)
def resync_pcap(buf: np.ndarray, pos: int, swap: bool, prev_sec: int, snaplen: int) -> int:
    """Find the next plausible pcap record header at or after ``pos``.

    A candidate must have a timestamp within a day of the last good packet, a
    captured length no larger than the snapshot length and the wire length, and
    be followed by another plausible header (or end exactly at the buffer end).

    Returns:
        The offset of the candidate, or -1 if none is in the buffer.
    """
    end = buf.shape[0]
    limit = snaplen if 0 < snaplen <= MAX_CAPLEN else MAX_CAPLEN
    i = pos
    while i + 16 <= end:
        sec = _u32(buf, i, swap)
        frac = _u32(buf, i + 4, swap)
        caplen = _u32(buf, i + 8, swap)
        wirelen = _u32(buf, i + 12, swap)
        ok = (
            abs(sec - prev_sec) <= 86400
            and frac < 1_000_000_000
            and caplen <= limit
            and caplen <= wirelen
            and wirelen <= 262144
        )
        if ok:
            nxt = i + 16 + caplen
            if nxt == end:
                return i
            if nxt + 16 <= end:
                sec2 = _u32(buf, nxt, swap)
                cap2 = _u32(buf, nxt + 8, swap)
                wire2 = _u32(buf, nxt + 12, swap)
                if abs(sec2 - sec) <= 86400 and cap2 <= limit and cap2 <= wire2:
                    return i
        i += 1
    return -1


@njit(cache=True, nogil=True)
def walk_pcapng(
    buf: np.ndarray,
    pos: int,
    swap: bool,
    out_off: np.ndarray,
    out_tsraw: np.ndarray,
    out_caplen: np.ndarray,
    out_wirelen: np.ndarray,
    out_iface: np.ndarray,
    out_block: np.ndarray,
) -> tuple[int, int, int]:
    """Walk pcapng blocks from ``pos``, collecting packet blocks.

    Enhanced (EPB), simple (SPB) and obsolete (OPB) packet blocks are collected;
    section header and interface description blocks stop the walk with
    ``CONTROL_BLOCK`` so the caller can parse their options; every other block
    type is skipped. Raw timestamps are returned in interface units (SPB has
    none: -1), to be scaled by the caller per interface.

    Returns:
        (number of packets written, position of the next unread block, status).
    """
    n = 0
    end = buf.shape[0]
    cap = out_off.shape[0]
    while True:
        if n >= cap:
            return n, pos, OUT_FULL
        if pos + 12 > end:
            return n, pos, NEED_MORE
        btype = _u32(buf, pos, swap)
        if btype == SHB:
            return n, pos, CONTROL_BLOCK
        blen = _u32(buf, pos + 4, swap)
        if blen < 12 or (blen & 3) != 0 or blen > MAX_CAPLEN + 64:
            return n, pos, BAD_RECORD
        if pos + blen > end:
            return n, pos, NEED_MORE
        if _u32(buf, pos + blen - 4, swap) != blen:
            return n, pos, BAD_RECORD
        if btype == IDB:
            return n, pos, CONTROL_BLOCK
        if btype == EPB:
            if blen < 32:
                return n, pos, BAD_RECORD
            caplen = _u32(buf, pos + 20, swap)
            if 28 + caplen > blen - 4:
                return n, pos, BAD_RECORD
            out_iface[n] = _u32(buf, pos + 8, swap)
            out_tsraw[n] = (_u32(buf, pos + 12, swap) << 32) | _u32(buf, pos + 16, swap)
            out_caplen[n] = caplen
            out_wirelen[n] = _u32(buf, pos + 24, swap)
            out_off[n] = pos + 28
            out_block[n] = pos
            n += 1
        elif btype == SPB:
            if blen < 16:
                return n, pos, BAD_RECORD
            wirelen = _u32(buf, pos + 8, swap)
            caplen = min(wirelen, blen - 16)
            out_iface[n] = 0
            out_tsraw[n] = -1
            out_caplen[n] = caplen
            out_wirelen[n] = wirelen
            out_off[n] = pos + 12
            out_block[n] = pos
            n += 1
        elif btype == OPB:
            if blen < 32:
                return n, pos, BAD_RECORD
            caplen = _u32(buf, pos + 20, swap)
            if 28 + caplen > blen - 4:
                return n, pos, BAD_RECORD
            out_iface[n] = _u16(buf, pos + 8, swap)
            out_tsraw[n] = (_u32(buf, pos + 12, swap) << 32) | _u32(buf, pos + 16, swap)
            out_caplen[n] = caplen
            out_wirelen[n] = _u32(buf, pos + 24, swap)
            out_off[n] = pos + 28
            out_block[n] = pos
            n += 1
        pos += blen


@njit(cache=True, nogil=True)
def resync_pcapng(buf: np.ndarray, pos: int, swap: bool) -> int:
    """Find the next block at or after ``pos`` whose leading and trailing lengths agree.

    Only 4-byte aligned positions relative to ``pos`` are tried, since blocks are
    32-bit aligned. Returns the offset, or -1 if none is in the buffer.
    """
    end = buf.shape[0]
    i = pos + 4
    while i + 12 <= end:
        btype = _u32(buf, i, swap)
        if btype in (SHB, IDB, OPB, SPB, EPB, 4, 5, 10):
            blen = _u32(buf, i + 4, swap)
            if (12 <= blen <= MAX_CAPLEN + 64 and (blen & 3) == 0 and i + blen <= end
                    and _u32(buf, i + blen - 4, swap) == blen):
                return i
        i += 4
    return -1
