"""DCE/RPC connection-oriented PDUs (C706 §12.6) over TCP and SMB named pipes, as Zeek's dce_rpc.log.

A bind names the interface (UUID) of each presentation context; a request
names an operation number on a context; its response (or fault) closes the
call. Each call is a row with the interface and operation names where they are
known (:mod:`forensics.protocols._dcerpc_names`) — ``svcctl CreateServiceW``
is PsExec-style service creation, ``drsuapi DRSGetNCChanges`` is DCSync.
Fragmented PDUs are put together per direction up to :data:`MAX_PDU` bytes.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from forensics.protocols import _ntlm, register
from forensics.protocols._base import Reader, Session
from forensics.protocols._dcerpc_names import ENDPOINTS, OPERATIONS

__all__ = ["Conversation", "detect", "feed_pipe", "looks_like_pdu", "parse"]

MAX_PDU = 1 << 20
MAX_CALLS = 100_000
_BIND, _BIND_ACK, _ALTER, _ALTER_RESP, _REQUEST, _RESPONSE, _FAULT = 11, 12, 14, 15, 0, 2, 3


def _uuid(b: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(b[:16])))


class Conversation:
    """DCE/RPC calls of one pipe or TCP connection.

    Args:
        s: the session rows go to.
        named_pipe: pipe name, or the TCP port as text.
    """

    def __init__(self, s: Session, named_pipe: str):
        self.s = s
        self.pipe = named_pipe
        self.contexts: dict[int, str] = {}
        self.pending_ctx: dict[int, list[tuple[int, str]]] = {}
        self.calls: dict[int, dict[str, Any]] = {}
        self.buf = {True: bytearray(), False: bytearray()}
        self.n = 0
        if "dce_rpc" not in s.services:
            s.services.append("dce_rpc")

    def feed(self, is_orig: bool, data: bytes, ts: int | None, frame: int | None, foff: int | None) -> None:
        """Bytes of one direction (whole PDUs or parts of them)."""
        buf = self.buf[is_orig]
        buf.extend(data)
        while len(buf) >= 16:
            if buf[0] != 5 or buf[1] not in (0, 1):
                self.s.warn(
                    "dce_rpc_bad_pdu",
                    f"not a DCE/RPC PDU (version {buf[0]}.{buf[1]})",
                    file_offset=foff,
                    severity="info",
                )
                buf.clear()
                return
            ln = struct.unpack_from("<H" if buf[4] & 0x10 else ">H", buf, 8)[0]
            if ln < 16 or ln > MAX_PDU:
                self.s.warn("dce_rpc_bad_pdu", f"PDU length {ln}", file_offset=foff)
                buf.clear()
                return
            if len(buf) < ln:
                return
            self.pdu(is_orig, bytes(buf[:ln]), ts, frame, foff)
            del buf[:ln]

    def pdu(self, is_orig: bool, p: bytes, ts: int | None, frame: int | None, foff: int | None) -> None:
        """One whole PDU."""
        ptype, le = p[2], bool(p[4] & 0x10)
        e = "<" if le else ">"
        call_id = struct.unpack_from(e + "I", p, 12)[0]
        auth_len = struct.unpack_from(e + "H", p, 10)[0]
        if auth_len and auth_len + 8 <= len(p):  # sec_trailer + auth value (C706 §13.2.6.1)
            msg = _ntlm.find_ntlm(p[len(p) - auth_len :])
            if msg is not None:
                _ntlm.tracker(self.s).message(msg, ts, frame, foff)
        if ptype in (_BIND, _ALTER) and len(p) >= 28:
            n, q = p[24], 28
            ctxs = []
            for _ in range(n):
                if q + 44 > len(p):
                    break
                cid, ntrans = struct.unpack_from(e + "HB", p, q)
                ctxs.append((cid, _uuid(p[q + 4 : q + 20])))
                q += 24 + 20 * ntrans
            self.pending_ctx[call_id] = ctxs
        elif ptype in (_BIND_ACK, _ALTER_RESP) and len(p) >= 26:
            ctxs = self.pending_ctx.pop(call_id, [])
            sec_len = struct.unpack_from(e + "H", p, 24)[0]
            q = 26 + sec_len
            q += (-q) % 4
            n = p[q] if q < len(p) else 0
            q += 4
            for i in range(n):
                if q + 24 > len(p):
                    break
                if struct.unpack_from(e + "H", p, q)[0] == 0 and i < len(ctxs):
                    self.contexts[ctxs[i][0]] = ctxs[i][1]
                q += 24
        elif ptype == _REQUEST and len(p) >= 24 and is_orig:
            ctx, opnum = struct.unpack_from(e + "HH", p, 20)
            if call_id not in self.calls and self.n < MAX_CALLS and p[3] & 1:  # first fragment
                self.n += 1
                self.calls[call_id] = {"ts": ts, "frame": frame, "foff": foff, "ctx": ctx, "opnum": opnum}
        elif ptype in (_RESPONSE, _FAULT) and not is_orig:
            call = self.calls.pop(call_id, None)
            if call is not None and p[3] & 2:  # last fragment
                self._emit(call, ts)
            elif call is not None:
                self.calls[call_id] = call

    def _emit(self, call: dict[str, Any], end_ts: int | None) -> None:
        iface = self.contexts.get(call["ctx"])
        name = ENDPOINTS.get(iface or "", iface)
        op = OPERATIONS.get(name or "", {}).get(call["opnum"])
        rtt = (end_ts - call["ts"]) / 1e9 if end_ts is not None and call["ts"] is not None else None
        self.s.emit(
            "dce_rpc",
            ts=call["ts"],
            frame=call["frame"],
            file_offset=call["foff"],
            rtt=rtt,
            named_pipe=self.pipe,
            endpoint=name,
            operation=op or f"opnum_{call['opnum']}",
            interface_uuid=iface,
            opnum=call["opnum"],
        )

    def finish(self) -> None:
        """Calls without a response are rows too."""
        for call in self.calls.values():
            self._emit(call, None)
        self.calls.clear()
        if "ntlm" in self.s.state:
            self.s.state["ntlm"].finish()


def feed_pipe(s: Session, f: Any, is_orig: bool, data: bytes, ts: int | None, frame: int | None,
              foff: int | None) -> None:
    """Hand bytes read from or written to an SMB named pipe (SMB1 or SMB2/3) to its DCE/RPC conversation.

    ``f.rpc`` is None until the pipe's first bytes, then the :class:`Conversation`,
    or False when those bytes were not a DCE/RPC PDU (not every pipe speaks
    DCE/RPC: PsExec's own PSEXESVC pipes do not).
    """
    if f.rpc is None:
        if not looks_like_pdu(data, (0, 2, 3, 11, 12, 13, 14, 15, 16)):
            f.rpc = False
            return
        f.rpc = Conversation(s, f.name or "<unknown>")
    if f.rpc:
        f.rpc.feed(is_orig, data, ts, frame, foff)


def looks_like_pdu(h: bytes, types: tuple[int, ...]) -> bool:
    """A connection-oriented PDU header of one of ``types`` (version 5.0/5.1, sane length)."""
    if len(h) < 16 or h[0] != 5 or h[1] not in (0, 1) or h[2] not in types or h[4] & 0xEE:
        return False
    ln = struct.unpack_from("<H" if h[4] & 0x10 else ">H", h, 8)[0]
    return 16 <= ln <= MAX_PDU


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A bind, alter-context or (session picked up mid-stream) request PDU from the client."""
    return looks_like_pdu(orig, (_BIND, _ALTER, _REQUEST)) or (
        not orig and looks_like_pdu(resp, (_BIND_ACK, _RESPONSE))
    )


@register("dce_rpc", "tcp", detect, order=40)
def parse(s: Session) -> None:
    """Feed both directions, PDU by PDU in capture order, to one conversation."""
    conv = Conversation(s, str(s.info["resp_p"]))
    events: list[tuple[tuple[int, int], bool, int, int]] = []
    for is_orig in (True, False):
        d = s.direction(is_orig)
        r = Reader(d)
        pos = 0
        while pos + 16 <= r.end and len(events) < 2 * MAX_CALLS:
            h = r.get(pos, 16)
            ln = struct.unpack_from("<H" if h[4] & 0x10 else ">H", h, 8)[0]
            if h[0] != 5 or ln < 16:
                s.warn("dce_rpc_bad_pdu", "stream does not continue with a PDU", is_orig=is_orig, offset=pos)
                break
            events.append(((d.ts_at(pos) or 0, d.frame_at(pos) or 0), is_orig, pos, ln))
            pos += ln
    events.sort(key=lambda e: e[0])
    readers = {True: Reader(s.orig), False: Reader(s.resp)}
    for (ts, frame), is_orig, pos, ln in events:
        r = readers[is_orig]
        conv.feed(is_orig, r.get(pos, min(ln, MAX_PDU)), ts, frame, s.direction(is_orig).file_offset_at(pos))
    conv.finish()
