"""NTLMSSP messages ([MS-NLMP] §2.2.1) found inside SMB, HTTP or DCE/RPC security blobs.

Only the fields a responder needs: from CHALLENGE the server's names (AV pairs,
§2.2.2.1), from AUTHENTICATE the user, domain and workstation. Every offset
and length is checked against the buffer; a field that points outside it is
left empty.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["NtlmMessage", "Tracker", "find_ntlm", "neg_state", "tracker"]

SIGNATURE = b"NTLMSSP\0"
_UNICODE = 0x00000001


@dataclass
class NtlmMessage:
    """One NTLMSSP message: type 1 (negotiate), 2 (challenge) or 3 (authenticate)."""

    type: int
    username: str | None = None
    domainname: str | None = None
    hostname: str | None = None
    server_nb_computer_name: str | None = None
    server_dns_computer_name: str | None = None
    server_tree_name: str | None = None


def _field(buf: bytes, at: int, unicode: bool) -> str | None:
    if at + 8 > len(buf):
        return None
    ln, _max, off = struct.unpack_from("<HHI", buf, at)
    if ln == 0 or off + ln > len(buf):
        return None
    raw = buf[off : off + ln]
    return raw.decode("utf-16-le", "replace") if unicode else raw.decode("latin-1")


def parse(buf: bytes) -> NtlmMessage | None:
    """Decode an NTLMSSP message starting at ``buf[0]`` (None when it is not one)."""
    if not buf.startswith(SIGNATURE) or len(buf) < 12:
        return None
    mtype = struct.unpack_from("<I", buf, 8)[0]
    msg = NtlmMessage(mtype)
    if mtype == 2 and len(buf) >= 48:
        tlen, _tmax, toff = struct.unpack_from("<HHI", buf, 40)
        p, end = toff, min(len(buf), toff + tlen)
        while p + 4 <= end:
            av_id, av_len = struct.unpack_from("<HH", buf, p)
            if av_id == 0:
                break
            val = buf[p + 4 : p + 4 + av_len]
            text = val.decode("utf-16-le", "replace")  # AV pair values are always UTF-16 (§2.2.2.1)
            if av_id == 1:
                msg.server_nb_computer_name = text
            elif av_id == 3:
                msg.server_dns_computer_name = text
            elif av_id == 5:
                msg.server_tree_name = text
            p += 4 + av_len
    elif mtype == 3 and len(buf) >= 52:
        flags = struct.unpack_from("<I", buf, 60)[0] if len(buf) >= 64 else _UNICODE
        uni = bool(flags & _UNICODE)
        msg.domainname = _field(buf, 28, uni)
        msg.username = _field(buf, 36, uni)
        msg.hostname = _field(buf, 44, uni)
    return msg


def find_ntlm(blob: bytes) -> NtlmMessage | None:
    """The NTLMSSP message inside a GSS-API/SPNEGO blob, wherever it sits (None if absent)."""
    i = blob.find(SIGNATURE)
    return parse(blob[i:]) if i >= 0 else None


class Tracker:
    """Zeek's ntlm.log rules for one connection: one row, written once the outcome is known.

    The row collects the server names of the CHALLENGE and the user of the
    AUTHENTICATE; it is written when a SPNEGO result says whether the logon
    worked (``neg_result``), or when the session ends.
    """

    def __init__(self, s: Any):
        self.s = s
        self.row: dict[str, Any] | None = None
        self.done = False

    def message(self, msg: NtlmMessage, ts: int | None, frame: int | None, foff: int | None) -> None:
        """An NTLMSSP message seen in either direction."""
        if self.row is None:
            self.row = {"ts": ts, "frame": frame, "file_offset": foff}
        if msg.type == 2:
            for k in ("server_nb_computer_name", "server_dns_computer_name", "server_tree_name"):
                if getattr(msg, k):
                    self.row[k] = getattr(msg, k)
        elif msg.type == 3:
            for k in ("domainname", "hostname", "username"):
                if getattr(msg, k):
                    self.row[k] = getattr(msg, k)
        if "ntlm" not in self.s.services:
            self.s.services.append("ntlm")

    def neg_result(self, state: int, status: str | None = None) -> None:
        """A SPNEGO negState (0 accepted, 1 incomplete, 2 rejected) from the server."""
        if self.row is None or state == 1:
            return
        self.row["success"] = state == 0
        if status:
            self.row["status"] = status
        if not self.done:
            self.s.emit("ntlm", **self.row)
            self.done = True

    def finish(self) -> None:
        """End of the connection: the row is written if it was not already."""
        if self.row is not None and not self.done:
            self.s.emit("ntlm", **self.row)
            self.done = True


def tracker(s: Any) -> Tracker:
    """The connection's tracker (one per session)."""
    t = s.state.get("ntlm")
    if t is None:
        t = s.state["ntlm"] = Tracker(s)
    return t


def neg_state(blob: bytes) -> int | None:
    """NegState of a SPNEGO negTokenResp (RFC 4178 §4.2.2) in a security blob, if present."""
    i = blob.find(b"\xa0\x03\x0a\x01")
    return blob[i + 4] if i >= 0 and i + 4 < len(blob) else None
