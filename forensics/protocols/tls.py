"""TLS and DTLS handshakes (RFC 5246, RFC 8446, RFC 6347), as Zeek's ssl.log plus fingerprints.

Records are walked on each reassembled direction (TLS) or datagram (DTLS);
handshake messages are put together across records until that side's
ChangeCipherSpec (after which its handshake is encrypted). From the clear
part come the version and cipher chosen, the key-exchange curve, SNI, ALPN,
certificates (TLS 1.2 and earlier: subject, issuer, serial, validity,
SHA-256 of each), Zeek's ``ssl_history`` letters (upper case: client) and the
JA3, JA3S and JA4 fingerprints (:mod:`forensics.protocols._tlsfp`). Truncated
records and absurd lengths end the walk of that direction with a warning.
"""

from __future__ import annotations

import struct
from typing import Any

from dpkt.ssl_ciphersuites import BY_CODE

from forensics.protocols import _tlsfp as fp
from forensics.protocols import register
from forensics.protocols._base import Reader, Session
from forensics.protocols._x509 import DerError, parse_certificate

__all__ = ["detect", "parse", "parse_from"]

MAX_RECORD = (1 << 14) + 2048  # RFC 5246 §6.2.3: ciphertext fragment limit
MAX_HANDSHAKE = 1 << 20  # handshake bytes kept per direction
MAX_RECORDS = 200_000

VERSIONS = {
    0x0002: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "TLSv10",
    0x0302: "TLSv11",
    0x0303: "TLSv12",
    0x0304: "TLSv13",
    0xFEFF: "DTLSv10",
    0xFEFD: "DTLSv12",
    0xFEFC: "DTLSv13",
}
# Zeek's ssl_history letters per handshake type and record type.
_HS_LETTER = {
    0: "h",
    1: "c",
    2: "s",
    3: "v",
    4: "t",
    5: "e",
    6: "j",
    8: "o",
    11: "x",
    12: "k",
    13: "r",
    14: "n",
    15: "y",
    16: "g",
    20: "f",
    21: "w",
    22: "u",
    23: "a",
    24: "p",
    254: "m",
}
CURVES = {
    19: "secp192r1",
    21: "secp224r1",
    22: "secp256k1",
    23: "secp256r1",
    24: "secp384r1",
    25: "secp521r1",
    26: "brainpoolP256r1",
    27: "brainpoolP384r1",
    28: "brainpoolP512r1",
    29: "x25519",
    30: "x448",
    256: "ffdhe2048",
    257: "ffdhe3072",
    258: "ffdhe4096",
    259: "ffdhe6144",
    260: "ffdhe8192",
    0x6399: "X25519Kyber768Draft00",
    0x11EC: "X25519MLKEM768",
}
ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


def _record_start(h: bytes, dtls: bool) -> bool:
    if dtls:  # RFC 6347 §4.1: type, version, epoch 0, sequence, length, then the handshake header
        return (
            len(h) >= 25
            and h[0] == 22
            and h[1] == 0xFE
            and h[2] in (0xFF, 0xFD, 0xFC)
            and h[3:5] == b"\0\0"
            and h[13] in (1, 2, 3)
            and struct.unpack_from(">H", h, 11)[0] + 13 <= len(h)
        )
    if len(h) >= 9 and h[0] == 22 and h[1] == 3 and h[2] <= 4 and h[5] in (1, 2):
        rec = struct.unpack_from(">H", h, 3)[0]
        return 4 <= rec <= MAX_RECORD and int.from_bytes(h[6:9], "big") < (1 << 17)
    # SSLv2-framed ClientHello (RFC 6101 appendix E.2)
    return (
        len(h) >= 11
        and bool(h[0] & 0x80)
        and h[2] == 1
        and h[3] in (0, 3)
        and h[4] <= 4
        and (((h[0] & 0x7F) << 8) | h[1]) >= 9
    )


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A handshake record (ClientHello or ServerHello) at the start of either direction."""
    dtls = s.data.proto == 17
    return _record_start(orig, dtls) or _record_start(resp, dtls)


def _cipher_name(c: int) -> str:
    cs = BY_CODE.get(c)
    return cs.name if cs is not None else f"unknown-{c}"


class _State:
    """What the handshake has shown so far."""

    def __init__(self, dtls: bool):
        self.dtls = dtls
        self.events: list[tuple[tuple[int, int, int], str]] = []
        self.f: dict[str, Any] = {}
        self.ccs = {True: False, False: False}
        self.appdata = {True: False, False: False}
        self.tls13 = False
        self.client_sid = b""
        self.certs: dict[bool, list] = {True: [], False: []}
        self.seen_seq: dict[bool, set[int]] = {True: set(), False: set()}

    def event(self, key: tuple[int, int, int], is_orig: bool, letter: str) -> None:
        self.events.append((key, letter.upper() if is_orig else letter))


def _handshake(
    st: _State,
    s: Session,
    is_orig: bool,
    mtype: int,
    body: bytes,
    key: tuple[int, int, int],
    where: int | None,
) -> None:
    st.event(key, is_orig, _HS_LETTER.get(mtype, "z"))
    f = st.f
    try:
        if mtype == 1 and is_orig and "client" not in f:
            ch = fp.parse_client_hello(body)
            f["client"] = ch
            st.client_sid = ch.session_id
        elif mtype == 2 and not is_orig and "server" not in f:
            sh = fp.parse_server_hello(body)
            f["server"] = sh
            if sh.version == 0x0304:
                st.tls13 = True
        elif mtype == 11 and not st.tls13:
            data = body[3:]
            p = 0
            while p + 3 <= len(data) and len(st.certs[is_orig]) < 32:
                n = int.from_bytes(data[p : p + 3], "big")
                der = data[p + 3 : p + 3 + n]
                if len(der) < n:
                    raise ValueError("certificate runs past the message")
                try:
                    st.certs[is_orig].append(parse_certificate(der))
                except DerError as exc:
                    s.warn(
                        "tls_bad_certificate",
                        f"certificate not parsed: {exc}",
                        is_orig=is_orig,
                        offset=where,
                        severity="info",
                    )
                    import hashlib

                    from forensics.protocols._x509 import Certificate

                    st.certs[is_orig].append(
                        Certificate(hashlib.sha256(der).hexdigest(), hashlib.sha1(der).hexdigest())
                    )
                p += 3 + n
        elif mtype == 12 and not is_orig and body[:1] == b"\x03" and len(body) >= 3:
            f.setdefault("curve", CURVES.get(struct.unpack_from(">H", body, 1)[0]))
    except (ValueError, IndexError, struct.error) as exc:
        s.warn(
            "tls_bad_handshake", f"handshake message {mtype} not parsed: {exc}", is_orig=is_orig, offset=where
        )


def _walk_tls(st: _State, s: Session, is_orig: bool, start: int) -> None:
    d = s.direction(is_orig)
    r = Reader(d)
    pos, hs, n = start, bytearray(), 0
    hs_end: list[tuple[int, int]] = []  # (end in hs, stream offset of that record's end)
    while pos + 5 <= r.end and n < MAX_RECORDS:
        hdr = r.get(pos, 5)
        n += 1
        if hdr[0] & 0x80 and n == 1 and is_orig:  # SSLv2 ClientHello
            ln = ((hdr[0] & 0x7F) << 8) | hdr[1]
            st.event((d.ts_at(pos) or 0, d.frame_at(pos) or 0, pos), True, "c")
            st.f.setdefault("client_v2", r.get(pos + 2, ln))
            pos += 2 + ln
            continue
        ctype, ver, ln = hdr[0], struct.unpack_from(">H", hdr, 1)[0], struct.unpack_from(">H", hdr, 3)[0]
        if ctype not in (20, 21, 22, 23, 24) or hdr[1] != 3 or ln > MAX_RECORD:
            s.warn(
                "tls_bad_record",
                f"not a TLS record (type {ctype}, version {ver:#06x}, length {ln}); "
                "rest of the direction skipped",
                is_orig=is_orig,
                offset=pos,
            )
            return
        body = r.get(pos + 5, ln)
        end = pos + 5 + ln
        if len(body) < ln:
            s.warn(
                "tls_truncated_record",
                f"record of {ln} bytes cut short at the end of the stream",
                is_orig=is_orig,
                offset=pos,
                severity="info",
            )
        key = (d.ts_at(end - 1) or 0, d.frame_at(end - 1) or 0, end)
        _record(st, s, is_orig, ctype, body, key, pos, hs, hs_end)
        pos = end


def _record(
    st: _State,
    s: Session,
    is_orig: bool,
    ctype: int,
    body: bytes,
    key: tuple[int, int, int],
    where: int,
    hs: bytearray,
    hs_end: list,
) -> None:
    if ctype == 20:
        st.ccs[is_orig] = True
        st.event(key, is_orig, "i")
    elif ctype == 21:
        if not st.ccs[is_orig] and len(body) >= 2:
            st.event(key, is_orig, "l")
            st.f["last_alert"] = ALERTS.get(body[1], f"unknown-{body[1]}")
    elif ctype == 23:
        st.appdata[is_orig] = True
    elif ctype == 24:
        st.event(key, is_orig, "b")
    elif ctype == 22 and not st.ccs[is_orig]:
        if len(hs) + len(body) > MAX_HANDSHAKE:
            s.warn(
                "tls_handshake_too_large",
                "handshake bytes past the cap; rest ignored",
                is_orig=is_orig,
                offset=where,
            )
            st.ccs[is_orig] = True
            return
        hs.extend(body)
        while len(hs) >= 4:
            mlen = int.from_bytes(hs[1:4], "big")
            if len(hs) < 4 + mlen:
                break
            _handshake(st, s, is_orig, hs[0], bytes(hs[4 : 4 + mlen]), key, where)
            del hs[: 4 + mlen]
            if st.tls13 and not is_orig:
                hs.clear()  # what follows the ServerHello is encrypted
                break


def _walk_dtls(st: _State, s: Session) -> None:
    frags: dict[tuple[bool, int], bytearray] = {}
    for g in s.data.datagrams:
        data, pos = g.data, 0
        while pos + 13 <= len(data):
            ctype, _ver, epoch, ln = (
                data[pos],
                data[pos + 1 : pos + 3],
                struct.unpack_from(">H", data, pos + 3)[0],
                struct.unpack_from(">H", data, pos + 11)[0],
            )
            body = data[pos + 13 : pos + 13 + ln]
            key = (g.ts, g.frame, pos)
            pos += 13 + ln
            if ctype != 22 or epoch:
                _record(
                    st,
                    s,
                    g.is_orig,
                    ctype if not (ctype == 22 and epoch) else 23,
                    body,
                    key,
                    g.file_offset,
                    bytearray(),
                    [],
                )
                continue
            p = 0
            while p + 12 <= len(body):
                mtype, mlen = body[p], int.from_bytes(body[p + 1 : p + 4], "big")
                seq = struct.unpack_from(">H", body, p + 4)[0]
                foff, flen = (
                    int.from_bytes(body[p + 6 : p + 9], "big"),
                    int.from_bytes(body[p + 9 : p + 12], "big"),
                )
                chunk = body[p + 12 : p + 12 + flen]
                p += 12 + flen
                if seq in st.seen_seq[g.is_orig] or mlen > MAX_HANDSHAKE:
                    continue
                buf = frags.setdefault((g.is_orig, seq), bytearray(mlen))
                buf[foff : foff + len(chunk)] = chunk
                if foff + len(chunk) >= mlen:
                    st.seen_seq[g.is_orig].add(seq)
                    _handshake(st, s, g.is_orig, mtype, bytes(buf[:mlen]), key, g.file_offset)


def parse_from(s: Session, orig_start: int = 0, resp_start: int = 0) -> None:
    """Parse a TLS session whose records start at the given stream offsets (STARTTLS, CONNECT)."""
    dtls = s.data.proto == 17
    st = _State(dtls)
    if dtls:
        _walk_dtls(st, s)
    else:
        _walk_tls(st, s, True, orig_start)
        _walk_tls(st, s, False, resp_start)
    if "client" not in st.f and "server" not in st.f and "client_v2" not in st.f:
        return
    st.events.sort(key=lambda e: e[0])
    _emit(s, st, dtls, orig_start)


def _emit(s: Session, st: _State, dtls: bool, orig_start: int) -> None:
    ch, sh = st.f.get("client"), st.f.get("server")
    version = cipher = curve = alpn = None
    resumed = False
    if sh is not None:
        version = VERSIONS.get(sh.version, f"unknown-{sh.version}")
        cipher = _cipher_name(sh.cipher)
        curve = st.f.get("curve") or (CURVES.get(sh.key_share) if sh.key_share is not None else None)
        alpn = sh.alpn
        # TLS 1.3 echoes the client's session id in every handshake (RFC 8446 §4.1.3):
        # only an accepted pre-shared key means resumption there.
        resumed = sh.psk if sh.version == 0x0304 else (bool(sh.session_id) and sh.session_id == st.client_sid)
    elif "client_v2" in st.f:
        version = "SSLv2"
    established = (st.ccs[True] and st.ccs[False]) or (st.tls13 and st.appdata[True] and st.appdata[False])
    server_certs, client_certs = st.certs[False], st.certs[True]
    leaf = server_certs[0] if server_certs else None
    sni = ch.sni if ch else None
    if dtls:
        first = s.data.datagrams[0] if s.data.datagrams else None
        loc: dict[str, Any] = (
            {"ts": first.ts, "frame": first.frame, "file_offset": first.file_offset} if first else {}
        )
        row = s.emit("tls", **loc)
    else:
        row = s.emit_at("tls", True, orig_start) if s.orig.captured else s.emit("tls")
    row.update(
        version=version,
        cipher=cipher,
        curve=curve,
        server_name=sni,
        resumed=resumed,
        last_alert=st.f.get("last_alert"),
        next_protocol=alpn,
        established=bool(established),
        ssl_history="".join(e[1] for e in st.events)[:100],
        cert_chain_fps=[c.sha256 for c in server_certs] if server_certs or client_certs else None,
        client_cert_chain_fps=[c.sha256 for c in client_certs] if server_certs or client_certs else None,
        sni_matches_cert=leaf.matches(sni) if leaf is not None and sni else None,
        subject=leaf.subject if leaf else None,
        issuer=leaf.issuer if leaf else None,
        serial=leaf.serial if leaf else None,
        not_valid_before=leaf.not_valid_before if leaf else None,
        not_valid_after=leaf.not_valid_after if leaf else None,
        ja3=fp.ja3(ch) if ch else None,
        ja3s=fp.ja3s(sh) if sh else None,
        ja4=fp.ja4(ch, "d" if dtls else "t") if ch else None,
    )


@register("ssl", "tcp", detect, order=10)
def parse(s: Session) -> None:
    """Emit one ``tls`` row for the session's handshake."""
    parse_from(s)


register("ssl", "udp", detect, order=10)(parse)
