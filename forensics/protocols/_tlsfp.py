"""ClientHello/ServerHello fields and the JA3, JA3S and JA4 fingerprints computed from them.

JA3 (Salesforce): MD5 of ``version,ciphers,extensions,groups,point_formats``
in decimal, GREASE values (RFC 8701) left out. JA3S: MD5 of
``version,cipher,extensions`` of the ServerHello. JA4 (FoxIO, ``JA4_a_b_c``):
protocol, highest version, SNI present, cipher and extension counts and ALPN
ends; then the first 12 hex digits of SHA-256 over the sorted cipher list and
over the sorted extension list (SNI and ALPN left out) joined with the
signature algorithms in their order.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

__all__ = ["ClientHello", "ServerHello", "ja3", "ja3s", "ja4", "parse_client_hello", "parse_server_hello"]


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE value (0x0a0a, 0x1a1a, ..., 0xfafa)."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


@dataclass
class ClientHello:
    """The ClientHello fields fingerprints and ssl.log need."""

    version: int
    session_id: bytes
    ciphers: list[int]
    extensions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    alpn: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    sni: str | None = None


@dataclass
class ServerHello:
    """The ServerHello fields ssl.log and JA3S need."""

    version: int
    legacy_version: int
    session_id: bytes
    cipher: int
    extensions: list[int] = field(default_factory=list)
    alpn: str | None = None
    key_share: int | None = None
    psk: bool = False


def _u16s(b: bytes) -> list[int]:
    return [struct.unpack_from(">H", b, i)[0] for i in range(0, len(b) - 1, 2)]


def _extensions(b: bytes, p: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    if p + 2 > len(b):
        return out
    end = min(len(b), p + 2 + struct.unpack_from(">H", b, p)[0])
    p += 2
    while p + 4 <= end:
        t, n = struct.unpack_from(">HH", b, p)
        out.append((t, b[p + 4 : p + 4 + n]))
        p += 4 + n
    return out


def parse_client_hello(b: bytes, dtls: bool = False) -> ClientHello:
    """Decode a ClientHello body (RFC 8446 §4.1.2; DTLS adds a cookie).

    Raises:
        ValueError: the message is cut short.
    """
    if len(b) < 35:
        raise ValueError("ClientHello shorter than its fixed part")
    ver = struct.unpack_from(">H", b)[0]
    p = 34
    sid = b[p + 1 : p + 1 + b[p]]
    p += 1 + b[p]
    if dtls or ver in (0xFEFF, 0xFEFD, 0xFEFC):
        p += 1 + b[p]  # cookie
    n = struct.unpack_from(">H", b, p)[0]
    ciphers = _u16s(b[p + 2 : p + 2 + n])
    p += 2 + n
    p += 1 + b[p]  # compression methods
    ch = ClientHello(ver, sid, ciphers)
    for t, data in _extensions(b, p):
        ch.extensions.append(t)
        if t == 0 and len(data) >= 5 and data[2] == 0:
            ln = struct.unpack_from(">H", data, 3)[0]
            ch.sni = data[5 : 5 + ln].decode("latin-1")
        elif t == 10 and len(data) >= 2:
            ch.groups = _u16s(data[2 : 2 + struct.unpack_from(">H", data)[0]])
        elif t == 11 and data:
            ch.point_formats = list(data[1 : 1 + data[0]])
        elif t == 13 and len(data) >= 2:
            ch.sig_algs = _u16s(data[2 : 2 + struct.unpack_from(">H", data)[0]])
        elif t == 16 and len(data) >= 2:
            q = 2
            while q < len(data):
                ch.alpn.append(data[q + 1 : q + 1 + data[q]].decode("latin-1"))
                q += 1 + data[q]
        elif t == 43 and data:
            ch.versions = _u16s(data[1 : 1 + data[0]])
    return ch


def parse_server_hello(b: bytes) -> ServerHello:
    """Decode a ServerHello body; ``version`` is the negotiated one (supported_versions wins).

    Raises:
        ValueError: the message is cut short.
    """
    if len(b) < 38:
        raise ValueError("ServerHello shorter than its fixed part")
    ver = struct.unpack_from(">H", b)[0]
    p = 34
    sid = b[p + 1 : p + 1 + b[p]]
    p += 1 + b[p]
    cipher = struct.unpack_from(">H", b, p)[0]
    p += 3
    sh = ServerHello(ver, ver, sid, cipher)
    for t, data in _extensions(b, p):
        sh.extensions.append(t)
        if t == 43 and len(data) >= 2:
            sh.version = struct.unpack_from(">H", data)[0]
        elif t == 16 and len(data) >= 3:
            sh.alpn = data[3 : 3 + data[2]].decode("latin-1")
        elif t == 51 and len(data) >= 2:
            sh.key_share = struct.unpack_from(">H", data)[0]
        elif t == 41:
            sh.psk = True
    return sh


def _md5(s: str) -> str:
    return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()


def ja3(ch: ClientHello) -> str:
    """JA3 of a ClientHello (MD5 hex)."""

    def j(v: list[int]) -> str:
        return "-".join(str(x) for x in v if not is_grease(x))

    return _md5(
        f"{ch.version},{j(ch.ciphers)},{j(ch.extensions)},{j(ch.groups)},"
        f"{'-'.join(map(str, ch.point_formats))}"
    )


def ja3s(sh: ServerHello) -> str:
    """JA3S of a ServerHello (MD5 hex)."""
    ext = "-".join(str(x) for x in sh.extensions if not is_grease(x))
    return _md5(f"{sh.legacy_version},{sh.cipher},{ext}")


_JA4_VER = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}


def _sha12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12] if s else "000000000000"


def ja4(ch: ClientHello, proto: str = "t") -> str:
    """JA4 of a ClientHello; ``proto`` is ``t`` (TCP), ``q`` (QUIC) or ``d`` (DTLS)."""
    versions = [v for v in ch.versions if not is_grease(v)]
    ver = _JA4_VER.get(max(versions) if versions else ch.version, "00")
    ciphers = [c for c in ch.ciphers if not is_grease(c)]
    exts = [e for e in ch.extensions if not is_grease(e)]
    alpn = ch.alpn[0] if ch.alpn else ""
    if not alpn:
        a = "00"
    elif alpn[0].isascii() and alpn[0].isalnum() and alpn[-1].isascii() and alpn[-1].isalnum():
        a = alpn[0] + alpn[-1]
    else:
        h = alpn.encode("latin-1").hex()
        a = h[0] + h[-1]
    part_a = f"{proto}{ver}{'d' if ch.sni else 'i'}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{a}"
    part_b = _sha12(",".join(sorted(f"{c:04x}" for c in ciphers)))
    ext_txt = ",".join(sorted(f"{e:04x}" for e in exts if e not in (0x0000, 0x0010)))
    sig = ",".join(f"{s:04x}" for s in ch.sig_algs if not is_grease(s))
    part_c = _sha12(ext_txt + ("_" + sig if sig else "")) if ext_txt else "000000000000"
    return f"{part_a}_{part_b}_{part_c}"
