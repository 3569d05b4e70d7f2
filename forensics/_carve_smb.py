"""SMB carving: the files read and written over SMB2/3 ([MS-SMB2]) and SMB1 ([MS-CIFS]).

Messages are cut from each direction by their NetBIOS session header and
replayed in capture order, as the SMB parser does. A successful create opens
a file; every read response and write request then adds a *piece* (file
offset, length, the stream range holding the bytes) to that open. When the
file is closed (or the session ends) its pieces are laid out at their
offsets into one file per open, holes written as zeros and named as missing
ranges, the expected size being the end of file the server reported (or set
later). A write that changes bytes already seen in the same open starts a
new *version*: the file as it was before is kept too. Named pipes are RPC
conversations, not files, and are left to the DCE/RPC parser. Encrypted
(SMB3 transform) messages cannot be read. Bytes are never loaded whole: the
pieces are read from the evidence when the file is written.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forensics._carve_base import Missing, Sink, read_ranges
from forensics.protocols import _smb1 as smb1
from forensics.protocols._smbstate import KNOWN_PIPES
from forensics.reassembly.stream import Direction, SessionData

__all__ = ["carve_session"]

_HEAD = 4096  # bytes of a message read to decode its headers
_MAX_MESSAGE = 1 << 24
_MAX_MESSAGES = 500_000
_COMPARE = 1 << 20
_MAGIC = (b"\xfeSMB", b"\xffSMB", b"\xfdSMB", b"\xfcSMB")
_STATUS_OK = (0, 0x80000005)  # SUCCESS, BUFFER_OVERFLOW (a short read still carries data)


@dataclass
class _Piece:
    off: int  # file offset
    length: int
    d: Direction
    stream: int  # stream offset of the first byte
    ts: int | None


@dataclass
class _Open:
    """One opened file (one create response) and what was read from or written to it."""

    fid: int
    name: str | None
    path: str | None
    pipe: bool
    size: int | None
    ts: int | None
    frame: int | None = None
    foff: int | None = None
    pieces: list[_Piece] = field(default_factory=list)
    segs: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, piece index), sorted
    versions: list[list[tuple[int, int, int]]] = field(default_factory=list)
    read: int = 0
    written: int = 0
    dropped: bool = False


def _messages(d: Direction) -> list[tuple[tuple[int, int, int], int, int]]:
    """(sort key, start, length) of each NetBIOS session message of a direction."""
    out: list[tuple[tuple[int, int, int], int, int]] = []
    end = int(d.end[-1]) if d.end.size else 0
    pos = 0
    head = d.read(0, 8, fill=b"\0")
    if not ((head[:1] == b"\0" and head[4:8] in _MAGIC) or head[:1] in (b"\x81", b"\x82", b"\x83", b"\x85")):
        probe = d.read(0, min(end, 1 << 16), fill=b"\0")  # picked up mid-message: the first SMB header
        found = min((i for i in (probe.find(m) for m in _MAGIC) if i >= 4), default=-1)
        if found < 0:
            return out
        pos = found - 4
    while pos + 4 <= end and len(out) < _MAX_MESSAGES:
        hdr = d.read(pos, pos + 4, fill=b"\0")
        typ, ln = hdr[0], int.from_bytes(hdr[1:4], "big")
        if typ not in (0x00, 0x81, 0x82, 0x83, 0x84, 0x85) or ln > _MAX_MESSAGE:
            break
        if typ == 0 and ln:
            last = min(pos + 4 + ln, max(end, 1)) - 1
            out.append(((d.ts_at(last) or 0, d.frame_at(last) or 0, 0 if d.is_orig else 1), pos + 4, ln))
        pos += 4 + ln
    return out


def _parser_fuid(uid: str, fid: int, name: str | None) -> str:
    """The SMB parser's ``smb_files.fuid`` for an open, so that ``files`` rows join it."""
    return "F" + hashlib.sha1(f"{uid}:{fid}:{name}".encode(), usedforsecurity=False).hexdigest()[:17]


class _Conn:
    """Trees, opens and pending requests of one SMB connection."""

    def __init__(self, sink: Sink, uid: str, sd: SessionData):
        self.sink, self.uid, self.sd = sink, uid, sd
        self.trees: dict[int, tuple[str | None, bool]] = {}  # tid -> (share path, is IPC/pipe share)
        self.opens: dict[int, _Open] = {}
        self.pending: dict[Any, dict[str, Any]] = {}
        self.done: list[_Open] = []
        self.used: set[str] = set()

    def read(self, d: Direction, start: int, n: int) -> bytes:
        return d.read(start, start + n, fill=b"\0")

    def open(self, fid: int, name: str | None, tid: int | None, size: int | None,
             req: dict[str, Any]) -> _Open:
        old = self.opens.pop(fid, None)
        if old is not None:
            self.done.append(old)
        path, ipc = self.trees.get(tid, (None, False)) if tid is not None else (None, False)
        base = (name or "").lower().replace("\\", "/").rsplit("/", 1)[-1]
        pipe = ipc or (path is None and base in KNOWN_PIPES)
        o = _Open(fid, name, path, pipe, size, req.get("ts"), req.get("frame"), req.get("foff"))
        self.opens[fid] = o
        return o

    def get(self, key: int, ts: int | None, tid: int | None) -> _Open:
        """The open of a file id; one whose create was not captured is opened here, nameless.

        Such an open on a pipe share (IPC$) is a pipe, as the SMB parser decides.
        """
        o = self.opens.get(key)
        if o is None:
            path, ipc = self.trees.get(tid, (None, False)) if tid is not None else (None, False)
            o = self.opens[key] = _Open(key & 0xFFFF if key >> 48 == 1 else key, None, path, ipc, None, ts)
        return o

    def piece(self, o: _Open, off: int, length: int, d: Direction, stream: int,
              where: dict[str, Any]) -> None:
        """File bytes ``[off, off + length)`` sit at ``stream`` in ``d`` (message as ``where`` says)."""
        ts = where["ts"]
        length = min(length, where["mend"] - stream)
        if o.pipe or length <= 0 or o.dropped:
            return
        lim = self.sink.limits
        if off < 0 or off + length > lim.max_file:
            self.sink.warn(self.uid, "carve_smb_offset", f"{'write' if d.is_orig else 'read'} at file offset "
                           f"{off} (+{length}) of {o.name!r} past the size cap {lim.max_file}: not carved",
                           d=d, offset=stream)
            return
        if len(o.pieces) >= lim.max_pieces:
            o.dropped = True
            self.sink.warn(self.uid, "carve_piece_cap", f"more than {lim.max_pieces} reads/writes of "
                           f"{o.name!r}: the rest are not carved", d=d, offset=stream)
            return
        if d.is_orig:
            o.written += length
        else:
            o.read += length
        p = _Piece(off, length, d, stream, ts)
        o.pieces.append(p)
        self._overlay(o, len(o.pieces) - 1)

    def _overlay(self, o: _Open, k: int) -> None:
        """Lay piece ``k`` over the open's segments; a changed byte first saves the current version."""
        p = o.pieces[k]
        a, b = p.off, p.off + p.length
        segs = o.segs
        i = bisect.bisect_right(segs, (a, 1 << 62, 0)) - 1
        i = max(i, 0)
        while i < len(segs) and segs[i][1] <= a:
            i += 1
        j = i
        changed = False
        while j < len(segs) and segs[j][0] < b:
            s, e, q = segs[j]
            lo, hi = max(s, a), min(e, b)
            old = o.pieces[q]
            for x in range(lo, hi, _COMPARE):
                y = min(hi, x + _COMPARE)
                if (self.read(old.d, old.stream + x - old.off, y - x)
                        != self.read(p.d, p.stream + x - p.off, y - x)):
                    changed = True
                    break
            j += 1
        if changed and p.d.is_orig:
            if len(o.versions) < self.sink.limits.smb_versions:
                o.versions.append(list(segs))
            elif len(o.versions) == self.sink.limits.smb_versions:
                o.versions.append([])  # marker: warned once
                self.sink.warn(self.uid, "carve_version_cap", f"{o.name!r} rewritten more than "
                               f"{self.sink.limits.smb_versions} times: later versions not kept")
        new: list[tuple[int, int, int]] = []
        for s, e, q in segs[i:j]:
            if s < a:
                new.append((s, a, q))
            if e > b:
                new.append((b, e, q))
        new.append((a, b, k))
        new.sort()
        segs[i:j] = new

    def close(self, fid: int) -> None:
        o = self.opens.pop(fid, None)
        if o is not None:
            self.done.append(o)

    def finish(self) -> None:
        self.done.extend(self.opens.values())
        self.opens.clear()
        for o in self.done:
            if o.pipe or not o.pieces:
                continue
            versions = [v for v in o.versions if v]
            for n, segs in enumerate([*versions, o.segs]):
                if self.sink.full(self.uid):
                    return
                self._write(o, segs, n, last=n == len(versions))

    def _chunks(self, o: _Open, segs: list[tuple[int, int, int]], missing: Missing) -> Iterator[bytes]:
        pos, fill = 0, 0
        for s, e, q in segs:
            if s > pos:
                fill += s - pos
                if fill > self.sink.limits.max_fill:
                    self.sink.warn(self.uid, "carve_fill_cap", f"{o.name!r}: more than "
                                   f"{self.sink.limits.max_fill} bytes never seen; file stops at byte {pos}")
                    missing.add(pos, (o.size or s) if (o.size or 0) > pos else s)
                    return
                missing.add(pos, s)
                for x in range(pos, s, 1 << 20):
                    yield bytes(min(1 << 20, s - x))
            p = o.pieces[q]
            yield from read_ranges(p.d, [(p.stream + s - p.off, e - s)], missing, base=s)
            pos = e

    def _write(self, o: _Open, segs: list[tuple[int, int, int]], n: int, last: bool) -> None:
        used = {q for _s, _e, q in segs}
        ps = [o.pieces[q] for q in sorted(used)]
        first, final = min(ps, key=lambda p: p.ts or 0), max(ps, key=lambda p: p.ts or 0)
        upload = o.written >= o.read
        fuid = None
        if n == 0:
            fuid = _parser_fuid(self.uid, o.fid, o.name)
            if fuid in self.used:
                fuid = None
            self.used.add(fuid or "")
        end = segs[-1][1] if segs else 0
        expected = max(o.size or 0, end) if last else end
        missing = Missing()
        self.sink.store(
            self._chunks(o, segs, missing), uid=self.uid, protocol="smb", fuid=fuid,
            key=("smb", o.fid, o.name, o.ts, o.frame, n), claimed_name=o.name,
            direction="upload" if upload else "download", is_orig=upload, ts_ns=first.ts, end_ns=final.ts,
            expected_size=expected, missing=missing, record_offset=o.foff, record_id=o.frame,
            source_row=("smb_files", {"uid": self.uid, "fuid": _parser_fuid(self.uid, o.fid, o.name),
                                      "version": n}))


def _smb2(c: _Conn, buf: bytes, d: Direction, start: int, length: int) -> None:
    """One SMB2/3 message (with its compound chain)."""
    off = 0
    mend = start + length
    related_fid: int | None = None
    while off + 64 <= length:
        h = buf[off:off + 64] if off + 64 <= len(buf) else c.read(d, start + off, 64)
        if h[:4] != b"\xfeSMB":
            return
        status, cmd = struct.unpack_from("<IH", h, 8)
        flags, nxt, mid = struct.unpack_from("<IIQ", h, 16)
        tid = None if flags & 2 else struct.unpack_from("<I", h, 36)[0]
        body = buf[off + 64:off + 64 + 128] if off + 192 <= len(buf) else c.read(d, start + off + 64, 128)
        ts = d.ts_at(start + off)
        where = {"ts": ts, "frame": d.frame_at(start + off), "foff": d.file_offset_at(start + off),
                 "mend": mend}
        with contextlib.suppress(struct.error, IndexError, ValueError):  # the SMB parser warned already
            related_fid = _smb2_cmd(c, d, start + off, cmd, status, flags, mid, tid, h, body, where,
                                    related_fid)
        if not nxt or nxt < 64:
            return
        off += nxt


def _fid2(body: bytes, at: int) -> int | None:
    pers, vol = struct.unpack_from("<QQ", body, at)
    if pers == vol == 0xFFFFFFFFFFFFFFFF:
        return None  # related compound: the create's file id
    return pers ^ (vol << 1)


def _smb2_cmd(c: _Conn, d: Direction, at: int, cmd: int, status: int, flags: int, mid: int,
              tid: int | None, h: bytes, p: bytes, where: dict[str, Any], related: int | None) -> int | None:
    is_resp = bool(flags & 1)
    key = (mid, cmd)
    if not is_resp:
        req: dict[str, Any] = {**where, "tid": tid}
        if cmd == 0x03:  # TREE_CONNECT (§2.2.9)
            poff, plen = struct.unpack_from("<HH", p, 4)
            req["path"] = c.read(d, at + poff, min(plen, 1024)).decode("utf-16-le", "replace")
        elif cmd == 0x05:  # CREATE (§2.2.13)
            noff, nlen = struct.unpack_from("<HH", p, 44)
            req["name"] = c.read(d, at + noff, min(nlen, 4096)).decode("utf-16-le", "replace") if nlen else ""
        elif cmd == 0x08:  # READ (§2.2.19)
            _len, req["offset"] = struct.unpack_from("<IQ", p, 4)
            req["fid"] = _fid2(p, 16)
        elif cmd == 0x09:  # WRITE (§2.2.21): the data is in the request
            doff, wlen, woff = struct.unpack_from("<HIQ", p, 2)
            fid = _fid2(p, 16)
            fid = related if fid is None else fid
            if fid is not None:
                c.piece(c.get(fid, where["ts"], tid), woff, wlen, d, at + doff, where)
        elif cmd == 0x06:  # CLOSE (§2.2.15)
            fid = _fid2(p, 8)
            req["fid"] = related if fid is None else fid
        elif cmd == 0x11:  # SET_INFO (§2.2.39): FileEndOfFileInformation sets the size
            itype, cls, blen, boff = struct.unpack_from("<BBIH", p, 2)
            fid = _fid2(p, 16)
            fid = related if fid is None else fid
            if itype == 1 and cls == 20 and blen >= 8 and fid is not None:
                eof = struct.unpack_from("<Q", c.read(d, at + boff, 8))[0]
                c.get(fid, where["ts"], tid).size = eof
        c.pending[key] = req
        return related
    if status == 0x103:  # STATUS_PENDING: an interim response, the real one follows (§3.3.4.2)
        return related
    req = c.pending.pop(key, {})
    if not req:
        return related
    if cmd == 0x03 and status == 0:
        c.trees[tid or 0] = (req.get("path"), p[2] == 2 or str(req.get("path", "")).upper().endswith("IPC$"))
    elif cmd == 0x05 and status == 0:
        size = struct.unpack_from("<Q", p, 48)[0]
        fid = _fid2(p, 64)
        if fid is not None:
            c.open(fid, req.get("name") or "<share_root>", req.get("tid"), size, req)
            return fid
    elif cmd == 0x08 and status in _STATUS_OK:
        doff, _r, dlen = struct.unpack_from("<BBI", p, 2)
        fid = req.get("fid")
        fid = related if fid is None else fid
        if fid is not None and dlen:
            c.piece(c.get(fid, where["ts"], req.get("tid")), req["offset"], dlen, d, at + doff, where)
    elif cmd == 0x06:
        fid = req.get("fid")
        if fid is not None:
            c.close(fid)
    return related


def _smb1(c: _Conn, buf: bytes, d: Direction, start: int, length: int) -> None:
    """One SMB1 message and its AndX chain (§2.2.3.4)."""
    hdr = smb1.header(buf)
    if hdr is None:
        return
    first, status, reply, uni, tid, mid = hdr
    where = {"ts": d.ts_at(start), "frame": d.frame_at(start), "foff": d.file_offset_at(start),
             "mend": start + length}
    for cmd, w, _bcount, data_at in smb1.andx_chain(buf, first):
        try:
            _smb1_cmd(c, d, start, cmd, status, reply, tid, mid, w, buf, data_at, uni, where)
        except (struct.error, IndexError, ValueError):
            return


def _str1(b: bytes, pos: int, uni: bool) -> str:
    if uni:
        pos += pos % 2
        end = pos
        while end + 1 < len(b) and b[end:end + 2] != b"\0\0":
            end += 2
        return b[pos:end].decode("utf-16-le", "replace")
    end = b.find(b"\0", pos)
    return b[pos:len(b) if end < 0 else end].decode("latin-1")


def _smb1_cmd(c: _Conn, d: Direction, at: int, cmd: int, status: int, reply: bool, tid: int, mid: int,
              w: bytes, b: bytes, data_at: int, uni: bool, where: dict[str, Any]) -> None:
    key = (1, mid, cmd)
    if not reply:
        req: dict[str, Any] = {**where, "tid": tid}
        if cmd == 0x75 and len(w) >= 8:  # TREE_CONNECT_ANDX (§2.2.4.55)
            req["path"] = _str1(b, data_at + struct.unpack_from("<H", w, 6)[0], uni)
        elif cmd == 0xA2 and len(w) >= 48:  # NT_CREATE_ANDX (§2.2.4.64)
            req["name"] = _str1(b, data_at, uni).lstrip("\\")
        elif cmd == 0x2E and len(w) >= 20:  # READ_ANDX (§2.2.4.42)
            fid, off = struct.unpack_from("<HI", w, 4)
            if len(w) >= 24:
                off |= struct.unpack_from("<I", w, 20)[0] << 32
            req.update(fid=fid, offset=off)
        elif cmd == 0x2F and len(w) >= 24:  # WRITE_ANDX (§2.2.4.43): the data is in the request
            fid, off = struct.unpack_from("<HI", w, 4)
            hi, length, doff = struct.unpack_from("<HHH", w, 18)
            if len(w) >= 28:
                off |= struct.unpack_from("<I", w, 24)[0] << 32
            c.piece(c.get(fid | 1 << 48, where["ts"], tid), off, length | hi << 16, d, at + doff, where)
        elif cmd == 0x0B and len(w) >= 10:  # WRITE (§2.2.4.12): buffer format, length, data
            fid, n, off = struct.unpack_from("<HHI", w, 0)
            c.piece(c.get(fid | 1 << 48, where["ts"], tid), off, n, d, at + data_at + 3, where)
        elif cmd == 0x0A and len(w) >= 10:  # READ (§2.2.4.11)
            fid, _n, off = struct.unpack_from("<HHI", w, 0)
            req.update(fid=fid, offset=off)
        elif cmd == 0x04 and len(w) >= 2:  # CLOSE (§2.2.4.5)
            c.close(struct.unpack_from("<H", w, 0)[0] | 1 << 48)
        c.pending[key] = req
        return
    req = c.pending.pop(key, {})
    if not req:
        return
    if cmd == 0x75 and status == 0:
        service = _str1(b, data_at, False)
        c.trees[tid] = (req.get("path"), service == "IPC")
    elif cmd == 0xA2 and status == 0 and len(w) >= 63:
        fid = struct.unpack_from("<H", w, 5)[0]
        size = struct.unpack_from("<Q", w, 55)[0]
        o = c.open(fid | 1 << 48, req.get("name") or "<share_root>", req.get("tid"), size, req)
        o.fid = fid  # the SMB parser's file id (for its fuid); the key keeps SMB1 apart from SMB2
    elif cmd == 0x2E and status in _STATUS_OK and len(w) >= 16:
        dlen, doff, dhi = struct.unpack_from("<HHH", w, 10)
        n = dlen | (dhi << 16 if dhi != 0xFFFF else 0)
        if n and "fid" in req:
            c.piece(c.get(req["fid"] | 1 << 48, where["ts"], tid), req["offset"], n, d, at + doff, where)
    elif cmd == 0x0A and status == 0 and len(w) >= 2 and "fid" in req:
        n = struct.unpack_from("<H", w, 0)[0]
        if n:
            c.piece(c.get(req["fid"] | 1 << 48, where["ts"], tid), req["offset"], n, d, at + data_at + 3,
                    where)


def carve_session(sink: Sink, uid: str, sd: SessionData) -> None:
    """Carve every file read or written in one SMB session."""
    c = _Conn(sink, uid, sd)
    msgs = sorted([(k, s, n, sd.orig) for k, s, n in _messages(sd.orig)]
                  + [(k, s, n, sd.resp) for k, s, n in _messages(sd.resp)], key=lambda m: m[0])
    for _k, start, n, d in msgs:
        buf = d.read(start, start + min(n, _HEAD), fill=b"\0")
        if buf[:4] == b"\xffSMB":
            _smb1(c, buf, d, start, n)
        elif buf[:4] == b"\xfeSMB":
            _smb2(c, buf, d, start, n)
    c.finish()
