"""The few X.509 fields a responder needs, read from DER without a crypto library.

Subject and issuer are rendered as Zeek's x509.log writes them (OpenSSL's RFC
2253 form: last RDN first, ``CN=...,O=...,C=...``), the serial as upper-case
hex, validity as UTC nanoseconds. Parsing is bounded: lengths past the buffer,
indefinite lengths and nesting deeper than a certificate needs raise
:class:`DerError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["Certificate", "DerError", "parse_certificate"]

_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber",
    "2.5.4.9": "street",
    "2.5.4.12": "title",
    "2.5.4.4": "SN",
    "2.5.4.42": "GN",
    "2.5.4.15": "businessCategory",
    "2.5.4.17": "postalCode",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "2.5.4.97": "organizationIdentifier",
}


class DerError(ValueError):
    """DER that cannot be read."""


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``pos``."""
    if pos + 2 > end:
        raise DerError("element runs past its container")
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise DerError("bad length")
        n = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise DerError("length past the buffer")
    return tag, pos, pos + n


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        t, s, e = _tlv(buf, start, end)
        out.append((t, s, e))
        start = e
        if len(out) > 4096:
            raise DerError("too many elements")
    return out


def _oid(b: bytes) -> str:
    if not b:
        return ""
    parts = [b[0] // 40, b[0] % 40]
    v = 0
    for c in b[1:]:
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            parts.append(v)
            v = 0
    return ".".join(map(str, parts))


def _string(tag: int, b: bytes) -> str:
    if tag == 0x1E:  # BMPString
        return b.decode("utf-16-be", "replace")
    if tag == 0x1C:  # UniversalString
        return b.decode("utf-32-be", "replace")
    if tag in (0x0C, 0x13, 0x16, 0x1A, 0x14):
        return b.decode("utf-8" if tag == 0x0C else "latin-1", "replace")
    return "#" + (bytes([tag, len(b)]) + b).hex() if len(b) < 128 else b.hex()


def _escape(v: str) -> str:
    # RFC 2253 §2.4
    out = []
    for i, ch in enumerate(v):
        if ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == len(v) - 1 and ch == " "):
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def _name(buf: bytes, s: int, e: int) -> str:
    rdns = []
    for _t, rs, re_ in _children(buf, s, e):  # RDNSequence of SETs
        avas = []
        for _t2, as_, ae in _children(buf, rs, re_):
            kids = _children(buf, as_, ae)
            if len(kids) < 2:
                continue
            _ot, os_, oe = kids[0]
            vt, vs, ve = kids[1]
            oid = _oid(buf[os_:oe])
            avas.append(f"{_NAMES.get(oid, oid)}={_escape(_string(vt, buf[vs:ve]))}")
        rdns.append("+".join(avas))
    return ",".join(reversed(rdns))


def _time(tag: int, b: bytes) -> int | None:
    txt = b.decode("ascii", "replace").rstrip("Z")
    try:
        if tag == 0x17:  # UTCTime: YYMMDDHHMM[SS]
            yy = int(txt[:2])
            year = 1900 + yy if yy >= 50 else 2000 + yy
            rest = txt[2:]
        else:  # GeneralizedTime
            year, rest = int(txt[:4]), txt[4:]
        rest = rest.split(".")[0].ljust(10, "0")
        dt = datetime(
            year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), int(rest[8:10]), tzinfo=UTC
        )
    except (ValueError, IndexError):
        return None
    return int(dt.timestamp()) * 1_000_000_000


@dataclass
class Certificate:
    """What Breachbook keeps of an X.509 certificate."""

    sha256: str
    sha1: str
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_valid_before: int | None = None
    not_valid_after: int | None = None
    san_dns: list[str] = field(default_factory=list)

    @property
    def common_names(self) -> list[str]:
        """CN values of the subject."""
        out = []
        for part in (self.subject or "").split(","):
            if part.startswith("CN="):
                out.append(part[3:].replace("\\", ""))
        return out

    def matches(self, host: str) -> bool:
        """True when ``host`` matches a DNS name of the certificate (one-label wildcards)."""
        host = host.lower().rstrip(".")
        for name in self.san_dns or self.common_names:
            name = name.lower().rstrip(".")
            if name == host:
                return True
            if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
                return True
        return False


def parse_certificate(der: bytes) -> Certificate:
    """Read a DER certificate (hashes always; fields as far as the DER allows).

    Raises:
        DerError: the outer structure is not a certificate.
    """
    cert = Certificate(hashlib.sha256(der).hexdigest(), hashlib.sha1(der).hexdigest())
    t, s, e = _tlv(der, 0, len(der))
    if t != 0x30:
        raise DerError("not a SEQUENCE")
    kids = _children(der, s, e)
    if not kids or kids[0][0] != 0x30:
        raise DerError("no tbsCertificate")
    tbs = _children(der, kids[0][1], kids[0][2])
    i = 1 if tbs and tbs[0][0] == 0xA0 else 0  # [0] version
    if len(tbs) < i + 6:
        raise DerError("short tbsCertificate")
    _t, ss, se = tbs[i]
    raw = der[ss:se].lstrip(b"\0")  # as OpenSSL's BN_bn2hex: whole bytes, leading zero bytes dropped
    cert.serial = raw.hex().upper() or "0"
    cert.issuer = _name(der, tbs[i + 2][1], tbs[i + 2][2])
    val = _children(der, tbs[i + 3][1], tbs[i + 3][2])
    if len(val) == 2:
        cert.not_valid_before = _time(val[0][0], der[val[0][1] : val[0][2]])
        cert.not_valid_after = _time(val[1][0], der[val[1][1] : val[1][2]])
    cert.subject = _name(der, tbs[i + 4][1], tbs[i + 4][2])
    for t2, xs, xe in tbs[i + 6 :]:
        if t2 != 0xA3:
            continue
        for _t3, es, ee in _children(der, *_tlv(der, xs, xe)[1:]):
            ext = _children(der, es, ee)
            if not ext or _oid(der[ext[0][1] : ext[0][2]]) != "2.5.29.17":
                continue
            _t4, os_, oe = ext[-1]
            _t5, qs, qe = _tlv(der, os_, oe)
            for t6, ns, ne in _children(der, qs, qe):
                if t6 == 0x82:  # dNSName
                    cert.san_dns.append(der[ns:ne].decode("latin-1"))
    return cert
