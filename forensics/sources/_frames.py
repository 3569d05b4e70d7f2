"""Chunked reading of capture files into :class:`FrameBatch` es.

Captures are streamed in chunks of a few MiB: memory is bounded by the chunk
size and the number of live flows, never by the file size (DESIGN §5). The
record headers of each chunk are walked by the compiled walkers in
:mod:`forensics.net._walk`; what they cannot handle (pcapng control blocks, a
corrupt record) comes back here, where it is parsed, or warned about and
skipped by resynchronising on the next plausible record.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from forensics.errors import UnsupportedSource
from forensics.net import _walk

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

CHUNK = 16 << 20
MAX_OUT = 1 << 17
NO_TS = np.iinfo(np.int64).min  # marks "no timestamp" (pcapng simple packet blocks)

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, 1000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (True, 1000),  # big-endian, microseconds
    b"\x4d\x3c\xb2\xa1": (False, 1),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (True, 1),  # big-endian, nanoseconds
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


@dataclass
class FrameBatch:
    """Frames of one chunk of a capture, with their record fields.

    Attributes:
        buf: the chunk's bytes; ``off`` indexes into it.
        base: file offset of ``buf[0]``.
        off: offset of each frame's data in ``buf``.
        ts_ns: timestamps in ns since the epoch; ``NO_TS`` where the format has none.
        caplen: captured lengths.
        wirelen: original lengths.
        linktype: link type of each frame (per interface in pcapng).
        iface: interface id of each frame.
    """

    buf: np.ndarray
    base: int
    off: np.ndarray
    ts_ns: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    linktype: np.ndarray
    iface: np.ndarray

    def __len__(self) -> int:
        return int(self.off.shape[0])


class _Chunks:
    """A file seen through a sliding window, carrying unread bytes into the next one.

    The window is a read-only memory map of the file (no copy; the evidence
    cannot be written through it), moved forward chunk by chunk so only a few
    MiB are mapped at a time. Where a file cannot be mapped (a pipe, an empty
    file), chunks are read into memory instead.
    """

    def __init__(self, fh: BinaryIO, start: int):
        self.fh = fh
        self.base = start  # file offset of buf[0]
        self.buf = np.empty(0, np.uint8)
        self.eof = False
        try:
            self.size: int | None = os.fstat(fh.fileno()).st_size
        except (OSError, AttributeError, io.UnsupportedOperation):
            self.size = None
        self._map: mmap.mmap | None = None

    def more(self, keep_from: int) -> bool:
        """Drop ``buf[:keep_from]`` and extend the window by a chunk; False at end of file."""
        start = self.base + keep_from
        end_before = self.base + self.buf.shape[0]
        if self.size and self.size > 0:
            if end_before >= self.size:
                self.base, self.buf, self.eof = start, self.buf[keep_from:], True
                return False
            aligned = start - start % mmap.ALLOCATIONGRANULARITY
            length = min(self.size - aligned, (end_before - aligned) + CHUNK)
            self._map = mmap.mmap(self.fh.fileno(), length, access=mmap.ACCESS_READ, offset=aligned)
            self.buf = np.frombuffer(self._map, np.uint8)[start - aligned:]
            self.base = start
            return True
        tail = self.buf[keep_from:]
        self.base = start
        new = np.empty(tail.shape[0] + CHUNK, np.uint8)
        new[: tail.shape[0]] = tail
        got = self.fh.readinto(memoryview(new)[tail.shape[0]:])  # type: ignore[attr-defined,arg-type]
        self.buf = new[: tail.shape[0] + (got or 0)]
        if not got:
            self.eof = True
            return False
        return True


def read_pcap(path: Path, ctx: IngestContext) -> Iterator[FrameBatch]:
    """Stream a classic pcap file (either byte order, micro- or nanoseconds)."""
    with path.open("rb") as fh:
        hdr = fh.read(24)
        if len(hdr) < 24 or hdr[:4] not in PCAP_MAGICS:
            raise UnsupportedSource("not a pcap file (bad magic or short header)", str(path), 0)
        swap, frac_ns = PCAP_MAGICS[hdr[:4]]
        end = ">" if swap else "<"
        _vmaj, _vmin, _tz, _sig, snaplen, ltfield = struct.unpack(end + "HHiIII", hdr[4:24])
        linktype = ltfield & 0xFFFF  # upper bits may carry the FCS length (pcap-ng draft §A)
        ch = _Chunks(fh, 24)
        out = [np.empty(MAX_OUT, np.int64) for _ in range(4)]
        pos = 0
        prev_sec = 0
        resyncing = False
        ch.more(0)
        while True:
            if resyncing:
                nxt = _walk.resync_pcap(ch.buf, pos, swap, prev_sec, snaplen)
                if nxt < 0:
                    keep = max(pos, ch.buf.shape[0] - 32)
                    if not ch.more(keep):
                        ctx.warn(ch.base + keep, "garbage_skipped",
                                 f"no further valid record; {ch.buf.shape[0]} bytes at the end skipped")
                        return
                    pos = 0
                    continue
                ctx.warn(ch.base + pos, "garbage_skipped",
                         f"skipped {nxt - pos} bytes to the next valid record at offset {ch.base + nxt}")
                pos = nxt
                resyncing = False
            n, pos, status = _walk.walk_pcap(ch.buf, pos, swap, frac_ns, *out)
            if n:
                prev_sec = int(out[1][n - 1] // 1_000_000_000)
                yield FrameBatch(ch.buf, ch.base, out[0][:n].copy(), out[1][:n].copy(),
                                 out[2][:n].copy(), out[3][:n].copy(),
                                 np.full(n, linktype, np.int32), np.zeros(n, np.int32))
            if status == _walk.OUT_FULL:
                continue
            if status == _walk.BAD_RECORD:
                caplen = struct.unpack(end + "I", ch.buf[pos + 8:pos + 12].tobytes())[0]
                ctx.warn(ch.base + pos, "bad_record_length",
                         f"record header claims {caplen} captured bytes; resynchronising")
                resyncing = True
                pos += 1
                continue
            # NEED_MORE
            if not ch.more(pos):
                left = ch.buf.shape[0]
                if left:
                    ctx.warn(ch.base, "truncated_record",
                             f"last record cut short: {left} bytes at the end of the file")
                return
            pos = 0


def _idb_resolution(body: bytes, swap: bool) -> tuple[int, int, int]:
    """Link type, and (units per second as numerator/exponent form) from an IDB body."""
    end = ">" if swap else "<"
    linktype = struct.unpack(end + "H", body[0:2])[0]
    tsresol = 6
    tsoffset = 0
    i = 8
    while i + 4 <= len(body):
        code, length = struct.unpack(end + "HH", body[i:i + 4])
        val = body[i + 4:i + 4 + length]
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol (pcapng §4.2)
            tsresol = val[0]
        elif code == 14 and length >= 8:  # if_tsoffset, seconds
            tsoffset = struct.unpack(end + "q", val[:8])[0]
        i += 4 + ((length + 3) & ~3)
    return linktype, tsresol, tsoffset


def _scale(raw: np.ndarray, tsresol: int, tsoffset: int) -> np.ndarray:
    """Raw pcapng timestamps of one interface to nanoseconds since the epoch."""
    if tsresol & 0x80:  # power of two
        k = tsresol & 0x7F
        ns = np.array([(int(v) * 1_000_000_000) >> k for v in raw], np.int64)
    elif tsresol <= 9:
        ns = raw * (10 ** (9 - tsresol))
    else:
        ns = raw // (10 ** (tsresol - 9))
    return ns + tsoffset * 1_000_000_000


def read_pcapng(path: Path, ctx: IngestContext) -> Iterator[FrameBatch]:
    """Stream a pcapng file: many sections and interfaces, each with its own link type and clock."""
    with path.open("rb") as fh:
        if fh.read(4) != PCAPNG_SHB:
            raise UnsupportedSource("not a pcapng file (no section header block)", str(path), 0)
        fh.seek(0)
        ch = _Chunks(fh, 0)
        ch.more(0)
        swap = False
        ifaces: list[tuple[int, int, int]] = []
        outs = [np.empty(MAX_OUT, np.int64) for _ in range(6)]
        pos = 0
        resyncing = False
        while True:
            if resyncing:
                nxt = _walk.resync_pcapng(ch.buf, pos, swap)
                if nxt < 0:
                    keep = max(pos, ch.buf.shape[0] - 16)
                    if not ch.more(keep):
                        ctx.warn(ch.base + keep, "garbage_skipped",
                                 "no further valid block; the end of the file was skipped")
                        return
                    pos = 0
                    continue
                ctx.warn(ch.base + pos, "garbage_skipped",
                         f"skipped {nxt - pos} bytes to the next valid block at offset {ch.base + nxt}")
                pos, resyncing = nxt, False
            n, pos, status = _walk.walk_pcapng(ch.buf, pos, swap, *outs)
            if n:
                yield _pcapng_batch(ch, outs, n, ifaces, ctx)
            if status == _walk.OUT_FULL:
                continue
            if status == _walk.CONTROL_BLOCK:
                blen_ok = _control_block(ch, pos, swap)
                if blen_ok is None:
                    if not ch.more(pos):
                        ctx.warn(ch.base, "truncated_record",
                                 f"last block cut short: {ch.buf.shape[0]} bytes at the end")
                        return
                    pos = 0
                    continue
                kind, blen, new_swap, iface = blen_ok
                if kind == "shb":
                    swap = new_swap
                    ifaces = []  # interface ids restart in each section (pcapng §4.1)
                elif kind == "idb" and iface is not None:
                    ifaces.append(iface)
                elif kind == "bad":
                    ctx.warn(ch.base + pos, "bad_block", "malformed control block; resynchronising")
                    resyncing = True
                    pos += 4
                    continue
                pos += blen
                continue
            if status == _walk.BAD_RECORD:
                ctx.warn(ch.base + pos, "bad_block", "malformed block length; resynchronising")
                resyncing = True
                continue
            if not ch.more(pos):
                left = ch.buf.shape[0]
                if left:
                    ctx.warn(ch.base, "truncated_record",
                             f"last block cut short: {left} bytes at the end of the file")
                return
            pos = 0


def _control_block(
    ch: _Chunks, pos: int, swap: bool
) -> tuple[str, int, bool, tuple[int, int, int] | None] | None:
    """Parse an SHB or IDB at ``pos``; None when it is not complete in the buffer."""
    b = ch.buf
    if pos + 12 > b.shape[0]:
        return None
    head = b[pos:pos + 12].tobytes()
    if head[:4] == PCAPNG_SHB:
        bom = head[8:12]
        if bom == b"\x4d\x3c\x2b\x1a":
            swap = False
        elif bom == b"\x1a\x2b\x3c\x4d":
            swap = True
        else:
            return ("bad", 0, False, None)
        blen = struct.unpack(">I" if swap else "<I", head[4:8])[0]
        if blen < 28 or blen & 3:
            return ("bad", 0, swap, None)
        if pos + blen > b.shape[0]:
            return None
        return ("shb", blen, swap, None)
    # An IDB; the walker checked its lengths already, with the section's byte order.
    blen = struct.unpack(">I" if swap else "<I", head[4:8])[0]
    if pos + blen > b.shape[0]:
        return None
    body = b[pos + 8:pos + blen - 4].tobytes()
    if len(body) < 8:
        return ("bad", 0, swap, None)
    return ("idb", blen, swap, _idb_resolution(body, swap))


def _pcapng_batch(
    ch: _Chunks, outs: list[np.ndarray], n: int, ifaces: list[tuple[int, int, int]],
    ctx: IngestContext,
) -> FrameBatch:
    off, tsraw, caplen, wirelen, iface, _block = (o[:n].copy() for o in outs)
    linktype = np.full(n, -1, np.int32)
    ts = np.full(n, NO_TS, np.int64)
    for i, (lt, res, toff) in enumerate(ifaces):
        m = iface == i
        if not m.any():
            continue
        linktype[m] = lt
        has = m & (tsraw >= 0)
        if has.any():
            ts[has] = _scale(tsraw[has], res, toff)
    unknown = iface >= len(ifaces)
    if unknown.any():
        first = int(np.argmax(unknown))
        ctx.warn(ch.base + int(off[first]), "unknown_interface",
                 f"packet block names interface {int(iface[first])}, but only {len(ifaces)} "
                 "are described; link type unknown", count=int(unknown.sum()))
    return FrameBatch(ch.buf, ch.base, off, ts, caplen, wirelen, linktype, iface.astype(np.int32))
