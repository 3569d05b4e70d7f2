"""RDP connection negotiation ([MS-RDPBCGR] §2.2.1), as Zeek's rdp.log.

The client's X.224 Connection Request carries the ``mstshash`` cookie (the
user name the client typed) and the security protocols it asks for; the
server's Connection Confirm names the one chosen or why it refused. With
standard RDP security the MCS Connect Initial that follows is in clear and
its client core data block (§2.2.1.3.2) gives the client's build, computer
name, keyboard layout and desktop size.
"""

from __future__ import annotations

import re
import struct

from forensics.protocols import register
from forensics.protocols._base import Reader, Session

__all__ = ["detect", "parse"]

_PROTOCOLS = {0: "RDP", 1: "SSL", 2: "HYBRID", 4: "RDSTLS", 8: "HYBRID_EX", 16: "RDSAAD"}
_FAILURES = {
    1: "SSL_REQUIRED_BY_SERVER",
    2: "SSL_NOT_ALLOWED_BY_SERVER",
    3: "SSL_CERT_NOT_ON_SERVER",
    4: "INCONSISTENT_FLAGS",
    5: "HYBRID_REQUIRED_BY_SERVER",
    6: "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
}
_BUILDS = {
    2600: "RDP 5.1",
    3790: "RDP 5.2",
    6000: "RDP 6.0",
    6001: "RDP 6.1",
    6002: "RDP 6.2",
    7600: "RDP 7.0",
    7601: "RDP 7.1",
    9200: "RDP 8.0",
    9600: "RDP 8.1",
    10240: "RDP 10.0",
}
_KEYBOARDS = {
    0x409: "English - United States",
    0x809: "English - United Kingdom",
    0x407: "German - Germany",
    0x40C: "French - France",
    0x410: "Italian - Italy",
    0x40A: "Spanish - Spain",
    0x411: "Japanese",
    0x412: "Korean",
    0x804: "Chinese - PRC",
    0x419: "Russian",
    0x416: "Portuguese - Brazil",
}


# The first cookie of a line, found once (with a plain search each later one on the line was
# tried again to the line's end: quadratic in a 64 KiB TPKT of cookies).
_COOKIE = re.compile(rb"(?:^|[\r\n])(?>[^\r\n]*?Cookie: mstshash=)([^\r\n]*)\r\n")

def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A TPKT-framed X.224 Connection Request from the client (or Confirm from the server)."""
    if len(orig) >= 11 and orig[:2] == b"\x03\x00" and orig[5] == 0xE0:
        return True
    return not orig and len(resp) >= 11 and resp[:2] == b"\x03\x00" and resp[5] == 0xD0


def _tpkt(r: Reader, n: int = 4) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 4 <= r.end and len(out) < n:
        h = r.get(pos, 4)
        if h[0] != 3:
            break
        ln = struct.unpack_from(">H", h, 2)[0]
        if ln < 4:
            break
        out.append((pos, r.get(pos + 4, ln - 4)))
        pos += ln
    return out


@register("rdp", "tcp", detect, order=45)
def parse(s: Session) -> None:
    """Emit one ``rdp`` row for the connection's negotiation."""
    co, sr = _tpkt(Reader(s.orig)), _tpkt(Reader(s.resp), 2)
    row: dict = {}
    if co:
        x224 = co[0][1]
        m = _COOKIE.search(x224)
        if m:
            row["cookie"] = m.group(1).decode("utf-8", "backslashreplace")
        neg = x224.find(b"\x01", (m.end() if m else 7))
        if m and neg >= 0 and neg + 8 <= len(x224) and x224[neg + 2 : neg + 4] == b"\x08\x00":
            req = struct.unpack_from("<I", x224, neg + 4)[0]
            row["requested_protocols"] = [n for b, n in _PROTOCOLS.items() if b and req & b] or ["RDP"]
    if sr:
        cc = sr[0][1]
        if len(cc) >= 15 and cc[1] == 0xD0 and cc[7] in (2, 3):
            code = struct.unpack_from("<I", cc, 11)[0]
            if cc[7] == 2:
                row.update(result="Success", security_protocol=_PROTOCOLS.get(code, str(code)))
            else:
                row["result"] = _FAILURES.get(code, f"failure {code}")
        elif len(cc) >= 2 and cc[1] == 0xD0:
            row.update(result="Success", security_protocol="RDP")
    if row.get("security_protocol") == "RDP" and len(co) > 1:
        data = co[1][1]
        i = data.find(b"\x01\xc0", max(data.find(b"Duca"), 0))  # T.124 user data key, then CS_CORE
        if i >= 0 and i + 8 + 32 + 16 <= len(data):
            _t, _ln, _ver, w, h, _depth, _sas, kbd, build = struct.unpack_from("<HHIHHHHII", data, i)
            name = data[i + 24 : i + 56].decode("utf-16-le", "replace").split("\0", 1)[0]
            row.update(
                desktop_width=w,
                desktop_height=h,
                keyboard_layout=_KEYBOARDS.get(kbd, hex(kbd)),
                client_build=_BUILDS.get(build, f"RDP build {build}"),
                client_name=name or None,
            )
    s.emit_at("rdp", True, 0, **row) if s.orig.captured else s.emit("rdp", **row)
