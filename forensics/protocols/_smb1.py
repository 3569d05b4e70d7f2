"""SMB1 ([MS-CIFS] §2.2) messages fed to the shared SMB state: sessions, trees, files, pipes.

AndX chains are followed (§2.2.3.4); strings are UTF-16 when the header's
Flags2 says so, aligned on 2 bytes from the header (§2.2.1.1). Handled:
SESSION_SETUP_ANDX (NTLMSSP or plain account/domain), TREE_CONNECT_ANDX,
NT_CREATE_ANDX, READ_ANDX, WRITE_ANDX, CLOSE, DELETE, RENAME and
TRANSACTION/TransactNmPipe (DCE/RPC over a pipe).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from forensics.protocols import _ntlm
from forensics.protocols._smbstate import SmbState, Tree, filetime_ns, nt_status

if TYPE_CHECKING:
    from forensics.protocols._base import Reader

__all__ = ["Smb1", "andx_chain", "header"]

_ANDX = {0x2E, 0x2F, 0x73, 0x75, 0xA2, 0x74, 0x24}
_SERVICE_TYPE = {"IPC": "PIPE", "LPT1:": "PRINT", "COMM": "DISK", "A:": "DISK"}


def header(b: bytes) -> tuple[int, int, bool, bool, int, int] | None:
    """The fields of an SMB1 header (MS-CIFS 2.2.3.1) the parsers use, or None when too short.

    Returns:
        (command, status, reply, unicode, tid, mid).
    """
    if len(b) < 35:
        return None
    cmd, status, flags = b[4], struct.unpack_from("<I", b, 5)[0], b[9]
    uni = bool(struct.unpack_from("<H", b, 10)[0] & 0x8000)
    tid, mid = struct.unpack_from("<H", b, 24)[0], struct.unpack_from("<H", b, 30)[0]
    return cmd, status, bool(flags & 0x80), uni, tid, mid


def andx_chain(b: bytes, cmd: int) -> Iterator[tuple[int, bytes, int, int]]:
    """The commands of an SMB1 message and its AndX chain (MS-CIFS 2.2.3.4), at most 8.

    Yields:
        (command, parameter words, byte count, offset of the data bytes in ``b``).
        The chain stops at a link that does not move forward or leaves the message.
    """
    pos, hops = 32, 0
    while pos < len(b) and hops < 8:
        hops += 1
        wc = b[pos]
        words = b[pos + 1 : pos + 1 + 2 * wc]
        bc_at = pos + 1 + 2 * wc
        if bc_at + 2 > len(b):
            return
        yield cmd, words, struct.unpack_from("<H", b, bc_at)[0], bc_at + 2
        if cmd not in _ANDX or len(words) < 4 or words[0] == 0xFF:
            return
        nxt = struct.unpack_from("<H", words, 2)[0]
        if nxt <= pos or nxt >= len(b):
            return
        cmd, pos = words[0], nxt


def _str(b: bytes, pos: int, unicode: bool, hdr_pos: int = 0) -> tuple[str, int]:
    """A NUL-terminated string at ``pos`` and the offset after it."""
    if unicode:
        if (pos - hdr_pos) % 2:
            pos += 1
        end = pos
        while end + 1 < len(b) and b[end : end + 2] != b"\0\0":
            end += 2
        return b[pos:end].decode("utf-16-le", "replace"), end + 2
    end = b.find(b"\0", pos)
    end = len(b) if end < 0 else end
    return b[pos:end].decode("latin-1"), end + 1


class Smb1:
    """SMB1 message handling for one connection."""

    def __init__(self, st: SmbState):
        self.st = st
        self.s = st.s
        self.pending: dict[tuple[int, int], dict[str, Any]] = {}

    def message(self, b: bytes, m: Any, r: Reader) -> None:
        """One SMB1 message (with its AndX chain)."""
        hdr = header(b)
        if hdr is None:
            return
        first, status, reply, uni, tid, mid = hdr
        d = self.s.direction(m.is_orig)
        where = (d.ts_at(m.start), d.frame_at(m.start), d.file_offset_at(m.start))
        for cmd, words, bcount, data_at in andx_chain(b, first):
            try:
                if reply:
                    self.response(cmd, mid, tid, status, words, b, data_at, uni, where)
                else:
                    self.request(cmd, mid, tid, words, b, data_at, bcount, uni, where)
            except (struct.error, IndexError, ValueError) as exc:
                self.s.warn(
                    "smb_bad_message",
                    f"SMB1 command {cmd:#x} not decoded: {exc}",
                    is_orig=m.is_orig,
                    offset=m.start,
                )
                return

    def request(
        self, cmd: int, mid: int, tid: int, w: bytes, b: bytes, p: int, bc: int, uni: bool, where: tuple
    ) -> None:
        st = self.st
        ts, frame, foff = where
        c: dict[str, Any] = {"ts": ts, "frame": frame, "foff": foff, "tid": tid}
        self.pending[(mid, cmd)] = c
        if cmd == 0x73 and len(w) >= 24:  # SESSION_SETUP_ANDX (§2.2.4.53, §2.2.4.6)
            if len(w) == 24:
                blen = struct.unpack_from("<H", w, 14)[0]
                msg = _ntlm.find_ntlm(b[p : p + blen])
                if msg is not None:
                    _ntlm.tracker(self.s).message(msg, ts, frame, foff)
                else:
                    c["blob"] = b[p : p + blen]
            elif len(w) >= 26:  # plain LM/NTLM logon: account and domain in clear (§2.2.4.53.1)
                lm, nt = struct.unpack_from("<HH", w, 14)
                q = p + lm + nt
                user, q = _str(b, q, uni, 0)
                dom, q = _str(b, q, uni, 0)
                _ntlm.tracker(self.s).message(
                    _ntlm.NtlmMessage(3, username=user or None, domainname=dom or None), ts, frame, foff
                )
                c["plain"] = True
        elif cmd == 0x75 and len(w) >= 8:  # TREE_CONNECT_ANDX (§2.2.4.55)
            plen = struct.unpack_from("<H", w, 6)[0]
            c["path"], _ = _str(b, p + plen, uni, 0)
        elif cmd == 0xA2 and len(w) >= 48:  # NT_CREATE_ANDX (§2.2.4.64)
            c["name"], _ = _str(b, p, uni, 0)
            c["options"] = struct.unpack_from("<I", w, 39)[0]
        elif cmd in (0x2E, 0x2F) and len(w) >= 12:  # READ_ANDX / WRITE_ANDX
            fid = struct.unpack_from("<H", w, 4)[0]
            off = struct.unpack_from("<I", w, 6)[0]
            f = st.file(fid, ts, frame, foff)
            tree = st.tree(tid)
            c.update(fid=fid, offset=off)
            if cmd == 0x2E:
                length = struct.unpack_from("<H", w, 10)[0]
                st.log(f, st.kind(f, "READ", tree), offset=off, length=length)
            elif len(w) >= 24:
                hi, length, doff = struct.unpack_from("<HHH", w, 18)
                length |= hi << 16
                st.log(f, st.kind(f, "WRITE", tree), offset=off, length=length)
                st.data(f, length, off)
                if f.pipe:
                    self._rpc(f, True, b[doff : doff + length], where)
        elif cmd == 0x04 and len(w) >= 2:  # CLOSE
            fid = struct.unpack_from("<H", w, 0)[0]
            if fid in st.files:
                st.close(st.files.pop(fid), st.tree(tid))
        elif cmd == 0x06:  # DELETE (§2.2.4.7): buffer format 0x04 then the name
            name, _ = _str(b, p + 1, uni, 0)
            f = st.file(-(zlib.crc32(name.encode()) + 1), ts, frame, foff)
            f.name = name
            st.log(f, "FILE_DELETE")
        elif cmd == 0x07:  # RENAME (§2.2.4.8)
            old, q = _str(b, p + 1, uni, 0)
            new, _ = _str(b, q + 1, uni, 0)
            f = st.file(-(zlib.crc32(old.encode()) + 1), ts, frame, foff)
            f.prev_name, f.name = old, new
            st.log(f, "FILE_RENAME")
        elif cmd == 0x25 and len(w) >= 32:  # TRANSACTION / TransactNmPipe (§2.2.4.33)
            dcount, doff = struct.unpack_from("<HH", w, 22)
            sub, fid = struct.unpack_from("<HH", w, 28)
            got = st.files.get(fid)
            c["fid"] = fid
            if sub == 0x26 and got is not None and dcount:
                self._rpc(got, True, b[doff : doff + dcount], where)

    def response(
        self, cmd: int, mid: int, tid: int, status: int, w: bytes, b: bytes, p: int, uni: bool, where: tuple
    ) -> None:
        st = self.st
        c = self.pending.pop((mid, cmd), None)
        if cmd == 0x73:
            blob = b[p : p + struct.unpack_from("<H", w, 6)[0]] if len(w) >= 8 else b""
            msg = _ntlm.find_ntlm(blob) if blob else None
            if msg is not None:
                _ntlm.tracker(self.s).message(msg, *where)
            state = (
                _ntlm.neg_state(blob) if blob else (0 if status == 0 else 2) if c and "plain" in c else None
            )
            if state is not None and "ntlm" in self.s.state:
                self.s.state["ntlm"].neg_result(state, nt_status(status))
            if c is not None and "blob" in c:
                from forensics.protocols import kerberos

                kerberos.ap_request(
                    self.s, c["blob"], status in (0, 0xC0000016), c["ts"], c["frame"], c["foff"]
                )
            return
        if c is None:
            return
        if cmd == 0x75:
            tree = st.tree(tid) if status == 0 else Tree()
            tree.path = c.get("path")
            if status == 0 and len(w) >= 6:
                tree.service, q = _str(b, p, False)
                tree.nfs, _ = _str(b, q, uni, 0)
                tree.nfs = tree.nfs or None
                tree.share_type = _SERVICE_TYPE.get(tree.service, "DISK")
            st.mapping(tree, c["ts"], c["frame"], c["foff"], nt_status(status))
        elif cmd == 0xA2 and status == 0 and len(w) >= 68:
            fid = struct.unpack_from("<H", w, 5)[0]
            ft = struct.unpack_from("<QQQQ", w, 11)
            size = struct.unpack_from("<Q", w, 55)[0]
            f = st.file(fid, c["ts"], c["frame"], c["foff"])
            times = (filetime_ns(ft[2]), filetime_ns(ft[1]), filetime_ns(ft[0]), filetime_ns(ft[3]))
            st.opened(f, c.get("name", "").lstrip("\\"), st.tree(c["tid"]), size, times)
            if c.get("options", 0) & 0x1000:
                st.log(f, "FILE_DELETE")
        elif cmd == 0x2E and status == 0 and len(w) >= 14:
            dlen, doff = struct.unpack_from("<HH", w, 10)
            got = st.files.get(c.get("fid", -1))
            if got is not None:
                st.data(got, dlen, c.get("offset"))
                if got.pipe:
                    self._rpc(got, False, b[doff : doff + dlen], where)
        elif cmd == 0x25 and status in (0, 0x80000005) and len(w) >= 16:
            dcount, doff = struct.unpack_from("<HH", w, 12)
            got = st.files.get(c.get("fid", -1))
            if got is not None and dcount:
                self._rpc(got, False, b[doff : doff + dcount], where)

    def _rpc(self, f: Any, is_orig: bool, data: bytes, where: tuple) -> None:
        from forensics.protocols import dce_rpc

        dce_rpc.feed_pipe(self.s, f, is_orig, data, *where)
