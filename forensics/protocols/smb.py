"""SMB2/3 ([MS-SMB2]) and SMB1 ([MS-CIFS]) over TCP: shares, files, named pipes, NTLM users.

Messages are cut from each direction by their NetBIOS session header
(RFC 1002 §4.3.1; the same 4 bytes frame "direct TCP" on port 445), then
replayed requests and responses in capture order through
:class:`~forensics.protocols._smbstate.SmbState`, which writes
``smb_files``/``smb_mapping``/``ntlm`` rows as Zeek does. Only the first
:data:`HEAD` bytes of a message are read: file contents are counted, never
loaded. Named-pipe traffic (svcctl, samr, lsarpc, ...) goes to the DCE/RPC
parser. Lengths and offsets are checked against the buffer; a message that
lies about them is skipped with a warning, and an encrypted (SMB3 transform)
or compressed message is counted but not read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from forensics.protocols import _ntlm, register
from forensics.protocols._base import Reader, Session
from forensics.protocols._smbstate import SmbState, Tree, filetime_ns, nt_status

__all__ = ["detect", "parse"]

HEAD = 8192  # bytes of each message read
MAX_MESSAGE = 1 << 24
MAX_MESSAGES = 500_000
_SHARE = {1: "DISK", 2: "PIPE", 3: "PRINT"}
_MAGIC = (b"\xfeSMB", b"\xffSMB", b"\xfdSMB", b"\xfcSMB")
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
STATUS_PENDING = 0x103


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A NetBIOS session message (or session request) carrying an SMB header."""
    if any(len(h) >= 8 and h[0] == 0 and h[4:8] in _MAGIC for h in (orig, resp)):
        return True
    return orig[:1] == b"\x81" and resp[:1] in (b"\x82", b"\x83")  # NetBIOS session request (port 139)


@dataclass(order=True)
class _Msg:
    key: tuple[int, int, int]
    is_orig: bool = field(compare=False)
    start: int = field(compare=False)
    length: int = field(compare=False)


def _messages(s: Session, is_orig: bool) -> list[_Msg]:
    d = s.direction(is_orig)
    r = Reader(d)
    out: list[_Msg] = []
    pos = 0
    head = r.get(0, 8)
    if not ((head[:1] == b"\0" and head[4:8] in _MAGIC) or head[:1] in (b"\x81", b"\x82", b"\x83", b"\x85")):
        found = min((i for i in (r.get(0, 1 << 16).find(m) for m in _MAGIC) if i >= 4), default=-1)
        if found < 0:
            return out
        s.warn(
            "smb_resync",
            "session picked up mid-message; skipped to the first SMB header",
            is_orig=is_orig,
            offset=0,
            severity="info",
        )
        pos = found - 4
    while pos + 4 <= r.end and len(out) < MAX_MESSAGES:
        hdr = r.get(pos, 4)
        typ, ln = hdr[0], int.from_bytes(hdr[1:4], "big")
        if typ not in (0x00, 0x81, 0x82, 0x83, 0x84, 0x85) or ln > MAX_MESSAGE:
            s.warn(
                "smb_bad_length",
                f"NetBIOS header type {typ:#x} length {ln}: rest of the direction skipped",
                is_orig=is_orig,
                offset=pos,
            )
            break
        if typ == 0 and ln:
            end = pos + 4 + ln
            last = min(end, max(r.end, 1)) - 1
            out.append(
                _Msg((d.ts_at(last) or 0, d.frame_at(last) or 0, 0 if is_orig else 1), is_orig, pos + 4, ln)
            )
        pos += 4 + ln
    return out


@dataclass
class _Cmd:
    """A request waiting for its response (by SMB2 message id)."""

    command: int
    ts: int | None
    frame: int | None
    foff: int | None
    tid: int | None
    args: dict[str, Any] = field(default_factory=dict)


class _Smb2:
    """SMB2/3 message handling for one connection."""

    def __init__(self, st: SmbState):
        self.st = st
        self.s = st.s
        self.pending: dict[int, _Cmd] = {}
        self.auth: Any = None

    def message(self, buf: bytes, m: _Msg, r: Reader) -> None:
        off = 0
        while off + 64 <= len(buf):
            magic = buf[off : off + 4]
            if magic in (b"\xfdSMB", b"\xfcSMB"):
                if "smb3_encrypted" not in self.st.__dict__:
                    self.st.__dict__["smb3_encrypted"] = True
                    self.s.warn(
                        "smb_encrypted",
                        "SMB3 encrypted or compressed messages: contents not readable",
                        is_orig=m.is_orig,
                        offset=m.start,
                        severity="info",
                    )
                return
            if magic != b"\xfeSMB":
                return
            status, command = struct.unpack_from("<IH", buf, off + 8)
            flags, nxt, mid = struct.unpack_from("<IIQ", buf, off + 16)
            tid = None if flags & 2 else struct.unpack_from("<I", buf, off + 36)[0]
            end = off + nxt if nxt else len(buf)
            if end > len(buf) or (nxt and nxt < 64):
                self.s.warn(
                    "smb_bad_length",
                    f"compound offset {nxt} past the message",
                    is_orig=m.is_orig,
                    offset=m.start + off,
                )
                return
            total = nxt if nxt else m.length - off
            try:
                if m.is_orig:
                    self.request(command, mid, tid, buf, off, total, m)
                elif status != STATUS_PENDING:
                    self.response(command, mid, tid, status, buf, off, m)
            except (struct.error, IndexError, ValueError) as exc:
                self.s.warn(
                    "smb_bad_message",
                    f"SMB2 command {command} not decoded: {exc}",
                    is_orig=m.is_orig,
                    offset=m.start + off,
                )
            if not nxt:
                return
            off += nxt

    def _where(self, m: _Msg) -> tuple[int | None, int | None, int | None]:
        d = self.s.direction(m.is_orig)
        return d.ts_at(m.start), d.frame_at(m.start), d.file_offset_at(m.start)

    def request(self, cmd: int, mid: int, tid: int | None, b: bytes, o: int, total: int, m: _Msg) -> None:
        ts, frame, foff = self._where(m)
        c = self.pending[mid] = _Cmd(cmd, ts, frame, foff, tid)
        st, p = self.st, o + 64
        if cmd == 0x01:  # SESSION_SETUP (§2.2.5)
            boff, blen = struct.unpack_from("<HH", b, p + 12)
            blob = b[o + boff : o + boff + blen]
            msg = _ntlm.find_ntlm(blob)
            if msg is not None:
                _ntlm.tracker(self.s).message(msg, ts, frame, foff)
            else:
                c.args["blob"] = blob
        elif cmd == 0x03:  # TREE_CONNECT (§2.2.9)
            poff, plen = struct.unpack_from("<HH", b, p + 4)
            c.args["path"] = b[o + poff : o + poff + plen].decode("utf-16-le", "replace")
        elif cmd == 0x05:  # CREATE (§2.2.13)
            opts = struct.unpack_from("<I", b, p + 40)[0]
            noff, nlen = struct.unpack_from("<HH", b, p + 44)
            name = b[o + noff : o + noff + nlen].decode("utf-16-le", "replace") if nlen else ""
            c.args.update(name=name, options=opts)
        elif cmd in (0x08, 0x09):  # READ / WRITE (§2.2.19, §2.2.21)
            if cmd == 0x08:
                length, offset = struct.unpack_from("<IQ", b, p + 4)
            else:
                doff, length, offset = struct.unpack_from("<HIQ", b, p + 2)
            fid = self._fid(b, p + 16, mid)
            tree = st.tree(tid)
            f = st.file(fid, ts, frame, foff)
            c.args.update(fid=fid, offset=offset)
            st.log(f, st.kind(f, "READ" if cmd == 0x08 else "WRITE", tree), offset=offset, length=length)
            if cmd == 0x09:
                data = b[o + doff : o + doff + length] if f.pipe else b""
                st.data(f, length, offset)
                if f.pipe and data:
                    self._rpc(f, True, data, ts, frame, foff)
        elif cmd == 0x06:  # CLOSE (§2.2.15)
            fid = self._fid(b, p + 8, mid)
            if fid in st.files:
                st.close(st.files.pop(fid), st.tree(tid))
        elif cmd == 0x11:  # SET_INFO (§2.2.39)
            itype, cls, blen, boff = struct.unpack_from("<BBIH", b, p + 2)
            fid = self._fid(b, p + 16, mid)
            buf = b[o + boff : o + boff + blen]
            f = st.file(fid, ts, frame, foff)
            if itype == 1 and cls == 10 and len(buf) >= 20:  # FileRenameInformation
                nlen = struct.unpack_from("<I", buf, 16)[0]
                f.prev_name, f.name = f.name, buf[20 : 20 + nlen].decode("utf-16-le", "replace")
                st.log(f, "FILE_RENAME")
            elif itype == 1 and cls in (13, 64) and buf[:1] not in (b"", b"\0"):  # FileDisposition(Ex)
                st.log(f, "FILE_DELETE")
            elif itype == 1 and cls == 4:
                st.log(f, "FILE_SET_ATTRIBUTE")
        elif cmd == 0x0B:  # IOCTL (§2.2.31)
            ctl = struct.unpack_from("<I", b, p + 4)[0]
            fid = self._fid(b, p + 8, mid)
            ioff, ilen = struct.unpack_from("<II", b, p + 24)
            c.args.update(fid=fid, ctl=ctl)
            got = st.files.get(fid)
            if ctl == FSCTL_PIPE_TRANSCEIVE and got is not None and ilen:
                self._rpc(got, True, b[o + ioff : o + ioff + ilen], ts, frame, foff)

    def _fid(self, b: bytes, at: int, mid: int) -> int:
        pers, vol = struct.unpack_from("<QQ", b, at)
        if pers == vol == 0xFFFFFFFFFFFFFFFF:  # related compound request (§3.2.4.1.4): not tracked, as Zeek
            return -1
        return pers ^ (vol << 1)

    def response(self, cmd: int, mid: int, tid: int | None, status: int, b: bytes, o: int, m: _Msg) -> None:
        c = self.pending.pop(mid, None)
        st, p = self.st, o + 64
        ts, frame, foff = self._where(m)
        if cmd == 0x01:
            boff, blen = struct.unpack_from("<HH", b, p + 4)
            blob = b[o + boff : o + boff + blen]
            msg = _ntlm.find_ntlm(blob) if blen else None
            if msg is not None:
                _ntlm.tracker(self.s).message(msg, ts, frame, foff)
            state = _ntlm.neg_state(blob)
            if state is not None and "ntlm" in self.s.state:
                self.s.state["ntlm"].neg_result(state, nt_status(status))
            if c is not None and "blob" in c.args:
                from forensics.protocols import kerberos

                kerberos.ap_request(self.s, c.args["blob"], status in (0, 0xC0000016), c.ts, c.frame, c.foff)
        if c is None:
            return
        if cmd == 0x03:
            tree = st.tree(tid) if status == 0 else Tree()
            tree.path = c.args.get("path")
            if status == 0:
                tree.share_type = _SHARE.get(b[p + 2], "DISK")
            st.mapping(tree, c.ts, c.frame, c.foff, nt_status(status))
        elif cmd == 0x05 and status == 0:
            ft = struct.unpack_from("<QQQQ", b, p + 8)
            size = struct.unpack_from("<Q", b, p + 48)[0]
            fid = self._fid(b, p + 64, mid)
            f = st.file(fid, c.ts, c.frame, c.foff)
            times = (filetime_ns(ft[2]), filetime_ns(ft[1]), filetime_ns(ft[0]), filetime_ns(ft[3]))
            st.opened(f, c.args.get("name", ""), st.tree(c.tid), size, times)
            if c.args.get("options", 0) & 0x1000:  # FILE_DELETE_ON_CLOSE
                st.log(f, "FILE_DELETE")
        elif cmd == 0x08 and status in (0, 0x80000005):
            doff, _res, dlen = struct.unpack_from("<BBI", b, p + 2)
            got = st.files.get(c.args.get("fid", -1))
            if got is not None:
                st.data(got, dlen, c.args.get("offset"))
                if got.pipe and dlen:
                    self._rpc(got, False, b[o + doff : o + doff + dlen], ts, frame, foff)
        elif cmd == 0x0B and status in (0, 0x80000005) and c.args.get("ctl") == FSCTL_PIPE_TRANSCEIVE:
            ooff, olen = struct.unpack_from("<II", b, p + 32)
            got = st.files.get(c.args.get("fid", -1))
            if got is not None and olen:
                self._rpc(got, False, b[o + ooff : o + ooff + olen], ts, frame, foff)

    def _rpc(
        self, f: Any, is_orig: bool, data: bytes, ts: int | None, frame: int | None, foff: int | None
    ) -> None:
        from forensics.protocols import dce_rpc

        dce_rpc.feed_pipe(self.s, f, is_orig, data, ts, frame, foff)


@register("smb", "tcp", detect, order=25)
def parse(s: Session) -> None:
    """Replay the session's SMB messages and emit its rows."""
    from forensics.protocols import _smb1

    ro, rr = Reader(s.orig), Reader(s.resp)
    msgs = sorted(_messages(s, True) + _messages(s, False))
    st = SmbState(s)
    v2 = _Smb2(st)
    v1: Any = None
    for m in msgs:
        r = ro if m.is_orig else rr
        buf = r.get(m.start, min(m.length, HEAD))
        if buf[:4] == b"\xffSMB":
            if v1 is None:
                st.version = "SMB1"
                v1 = _smb1.Smb1(st)
            v1.message(buf, m, r)
        else:
            if buf[:4] == b"\xfeSMB" and st.version == "SMB1":
                st.version = "SMB2"
            v2.message(buf, m, r)
    st.finish()
