"""Kerberos 5 (RFC 4120) AS and TGS exchanges over UDP and TCP, as Zeek's kerberos.log.

Requests (KDC-REQ §5.4.1) give the client and service principals, the ticket
times and options asked for and the encryption types offered (a request for
RC4 only is the Kerberoasting tell); the reply (KDC-REP §5.4.2) or error
(KRB-ERROR §5.9.1) completes the row with success, the ticket's encryption
type or the error name. DER is read with bounds checks; a message that does
not decode is a warning.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from forensics.protocols import register
from forensics.protocols._base import Reader, Session
from forensics.protocols._x509 import DerError, _children, _tlv

__all__ = ["ERRORS", "ETYPES", "ap_request", "detect", "parse", "parse_message"]

ETYPES = {
    1: "des-cbc-crc",
    2: "des-cbc-md4",
    3: "des-cbc-md5",
    16: "des3-cbc-sha1",
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
    23: "rc4-hmac",
    24: "rc4-hmac-exp",
    25: "camellia128-cts-cmac",
    26: "camellia256-cts-cmac",
    -128: "rc4-hmac-old",
    -135: "rc4-hmac-old-exp",
}
ERRORS = {
    0: "KDC_ERR_NONE",
    6: "KDC_ERR_C_PRINCIPAL_UNKNOWN",
    7: "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    12: "KDC_ERR_POLICY",
    13: "KDC_ERR_BADOPTION",
    14: "KDC_ERR_ETYPE_NOSUPP",
    16: "KDC_ERR_PADATA_TYPE_NOSUPP",
    18: "KDC_ERR_CLIENT_REVOKED",
    23: "KDC_ERR_KEY_EXPIRED",
    24: "KDC_ERR_PREAUTH_FAILED",
    25: "KDC_ERR_PREAUTH_REQUIRED",
    31: "KRB_AP_ERR_BAD_INTEGRITY",
    32: "KRB_AP_ERR_TKT_EXPIRED",
    34: "KRB_AP_ERR_REPEAT",
    37: "KRB_AP_ERR_SKEW",
    41: "KRB_AP_ERR_MODIFIED",
    52: "KRB_ERR_RESPONSE_TOO_BIG",
    60: "KRB_ERR_GENERIC",
    68: "KDC_ERR_WRONG_REALM",
}
# Error texts that are a normal step of an exchange, not its outcome (as Zeek's KRB::ignored_errors).
IGNORED_ERRORS = frozenset({"NEEDED_PREAUTH", "Need to use PA-ENC-TIMESTAMP/PA-PK-AS-REQ"})
_APP = {0x6A: "AS-REQ", 0x6B: "AS-REP", 0x6C: "TGS-REQ", 0x6D: "TGS-REP", 0x6E: "AP-REQ", 0x7E: "KRB-ERROR"}


def _int(b: bytes, s: int, e: int) -> int:
    _t, vs, ve = _tlv(b, s, e)
    return int.from_bytes(b[vs:ve], "big", signed=True)


def _str(b: bytes, s: int, e: int) -> str:
    _t, vs, ve = _tlv(b, s, e)
    return b[vs:ve].decode("utf-8", "replace")


def _ctx(b: bytes, s: int, e: int) -> dict[int, tuple[int, int]]:
    """Context-tagged fields [n] of a SEQUENCE: tag number -> (start, end) of the inner element."""
    _t, vs, ve = _tlv(b, s, e)
    return {t & 0x1F: (cs, ce) for t, cs, ce in _children(b, vs, ve) if t & 0xE0 == 0xA0}


def _principal(b: bytes, s: int, e: int) -> str:
    f = _ctx(b, s, e)
    if 1 not in f:
        return ""
    _t, vs, ve = _tlv(b, *f[1])
    return "/".join(b[ns:ne].decode("utf-8", "replace") for _t2, ns, ne in _children(b, vs, ve))


def _time(b: bytes, s: int, e: int) -> int | None:
    txt = _str(b, s, e).rstrip("Z")
    try:
        return int(datetime.strptime(txt[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()) * 10**9
    except ValueError:
        return None


def parse_message(b: bytes) -> dict[str, Any]:
    """Decode one Kerberos message (its fields that kerberos.log needs).

    Raises:
        DerError: the DER is malformed or is not a Kerberos message.
    """
    t, vs, ve = _tlv(b, 0, len(b))
    kind = _APP.get(t)
    if kind is None:
        raise DerError(f"application tag {t:#x} is not a Kerberos message")
    out: dict[str, Any] = {"kind": kind}
    f = _ctx(b, vs, ve)
    if kind in ("AS-REQ", "TGS-REQ") and 4 in f:
        body = _ctx(b, *f[4])
        if 0 in body:
            _t, os_, oe = _tlv(b, *body[0])
            bits = b[os_ + 1 : oe]  # after the unused-bits octet
            word = int.from_bytes(bits[:4].ljust(4, b"\0"), "big")
            out["forwardable"] = bool(word & (1 << 30))
            out["renewable"] = bool(word & (1 << 23))
        if 2 in body:
            out["realm"] = _str(b, *body[2])
        if 1 in body:
            out["cname"] = _principal(b, *body[1])
        if 3 in body:
            out["sname"] = _principal(b, *body[3])
        if 4 in body:
            out["from"] = _time(b, *body[4])
        if 5 in body:
            out["till"] = _time(b, *body[5])
        if 8 in body:
            _t, es, ee = _tlv(b, *body[8])
            out["etypes"] = [
                int.from_bytes(b[xs:xe], "big", signed=True) for _t2, xs, xe in _children(b, es, ee)
            ]
    elif kind in ("AS-REP", "TGS-REP"):
        if 3 in f:
            out["crealm"] = _str(b, *f[3])
        if 4 in f:
            out["cname"] = _principal(b, *f[4])
        if 5 in f:  # Ticket ::= [APPLICATION 1] SEQUENCE { ..., enc-part [3] EncryptedData }
            _t, ts_, te = _tlv(b, *f[5])
            tk = _ctx(b, ts_, te)
            if 3 in tk:
                ep = _ctx(b, *tk[3])
                if 0 in ep:
                    out["etype"] = _int(b, *ep[0])
    elif kind == "AP-REQ" and 3 in f:  # RFC 4120 §5.5.1: the ticket names the service in clear
        _t, ts_, te = _tlv(b, *f[3])
        tk = _ctx(b, ts_, te)
        if 1 in tk:
            out["realm"] = _str(b, *tk[1])
        if 2 in tk:
            out["sname"] = _principal(b, *tk[2])
        if 3 in tk:
            ep = _ctx(b, *tk[3])
            if 0 in ep:
                out["etype"] = _int(b, *ep[0])
    elif kind == "KRB-ERROR":
        if 6 in f:
            out["error_code"] = _int(b, *f[6])
        if 9 in f:
            out["realm"] = _str(b, *f[9])
        if 10 in f:
            out["sname"] = _principal(b, *f[10])
        if 8 in f:
            out["cname"] = _principal(b, *f[8])
        if 7 in f:
            out["crealm"] = _str(b, *f[7])
        if 11 in f:
            out["e_text"] = _str(b, *f[11])
    return out


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """An AS-REQ or TGS-REQ from the client (TCP: after its 4-byte record mark): tag, SEQUENCE, pvno 5."""
    h = orig
    if s.data.proto == 6:
        if len(orig) < 4 or struct.unpack_from(">I", orig)[0] & 0x80000000:
            return False
        h = orig[4:]
    if len(h) < 12 or h[0] not in (0x6A, 0x6C):
        return False
    try:
        _t, vs, _ve = _tlv(h, 0, 1 << 30)  # the detector sees only the head: lengths are not checked
        t2, ss, _se = _tlv(h, vs, 1 << 30)
        return t2 == 0x30 and h[ss : ss + 5] == b"\xa1\x03\x02\x01\x05"
    except (DerError, IndexError):
        return False


def _messages(s: Session) -> list[tuple[bool, int | None, int | None, int | None, bytes]]:
    if s.data.proto == 17:
        return [(g.is_orig, g.ts, g.frame, g.file_offset, g.data) for g in s.data.datagrams]
    out: list[tuple[bool, int | None, int | None, int | None, bytes]] = []
    for is_orig in (True, False):
        d = s.direction(is_orig)
        r = Reader(d)
        pos = 0
        while pos + 4 <= r.end and len(out) < 10_000:
            n = struct.unpack(">I", r.get(pos, 4))[0]
            if n & 0x80000000 or n > 1 << 20:
                s.warn("krb_bad_length", f"record mark {n:#x}", is_orig=is_orig, offset=pos)
                break
            out.append((is_orig, d.ts_at(pos), d.frame_at(pos), d.file_offset_at(pos), r.get(pos + 4, n)))
            pos += 4 + n
    out.sort(key=lambda m: (m[1] or 0, m[2] or 0))
    return out


@register("krb", "udp", detect, order=35)
def parse(s: Session) -> None:
    """Emit the ``kerberos`` row of the connection (Zeek: one per connection, the first exchange)."""
    row: dict[str, Any] | None = None
    for _is_orig, ts, frame, foff, data in _messages(s):
        try:
            m = parse_message(data)
        except (DerError, ValueError, IndexError) as exc:
            s.warn("krb_malformed", f"Kerberos message not decoded: {exc}", file_offset=foff)
            continue
        if m["kind"] in ("AS-REQ", "TGS-REQ"):
            realm = m.get("realm", "")
            if row is None:
                row = {"ts": ts, "frame": frame, "file_offset": foff}
            row.update(
                {
                    "request_type": m["kind"][:-4],
                    "client": f"{m['cname']}/{realm}" if m.get("cname") else None,
                    "service": m.get("sname") or None,
                    "from": m.get("from"),
                    "till": m.get("till"),
                    "forwardable": m.get("forwardable"),
                    "renewable": m.get("renewable"),
                    "req_etypes": [ETYPES.get(e, str(e)) for e in m.get("etypes", [])] or None,
                    "realm": realm or None,
                }
            )
        elif m["kind"] in ("AS-REP", "TGS-REP", "KRB-ERROR"):
            if row is None:
                row = {
                    "ts": ts,
                    "frame": frame,
                    "file_offset": foff,
                    "request_type": "AS"
                    if m["kind"] == "AS-REP"
                    else "TGS"
                    if m["kind"] == "TGS-REP"
                    else None,
                }
            if m["kind"] == "KRB-ERROR":
                code = m.get("error_code")
                if m.get("e_text") in IGNORED_ERRORS:
                    row = None  # a normal step of the exchange, not an outcome (Zeek's KRB::ignored_errors)
                    continue
                # The KDC's own text when it sent one (as Zeek logs it), else the RFC name.
                row.update(
                    success=False,
                    error_code=code,
                    error_msg=m.get("e_text") or ERRORS.get(code or -1, f"unknown-{code}"),
                )
            else:
                row.update(success=True, cipher=ETYPES.get(m.get("etype", 0), f"unknown-{m.get('etype')}"))
            if m.get("cname") and m.get("crealm") and not row.get("client"):
                row["client"] = f"{m['cname']}/{m['crealm']}"
            s.emit("kerberos", **row)
            return
    if row is not None:
        s.emit("kerberos", **row)


register("krb_tcp", "tcp", detect, order=35)(parse)


def ap_request(
    s: Session, blob: bytes, success: bool | None, ts: int | None, frame: int | None, foff: int | None
) -> bool:
    """A Kerberos AP-REQ inside a GSS-API blob (SMB session setup): a ``kerberos`` row of type AP."""
    i = blob.find(b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02")  # krb5 mechanism OID 1.2.840.113554.1.2.2
    if i < 0:
        return False
    j = blob.find(b"\x6e", i)
    while 0 <= j < len(blob):
        try:
            m = parse_message(blob[j:])
        except (DerError, ValueError, IndexError):
            j = blob.find(b"\x6e", j + 1)
            continue
        s.emit(
            "kerberos",
            ts=ts,
            frame=frame,
            file_offset=foff,
            request_type="AP",
            client=f"/{m.get('realm', '')}",
            service=m.get("sname") or None,
            success=success,
            cipher=ETYPES.get(m.get("etype", 0), str(m.get("etype"))),
            realm=m.get("realm"),
        )
        if "krb" not in s.services:
            s.services.append("krb")
        return True
    return False
