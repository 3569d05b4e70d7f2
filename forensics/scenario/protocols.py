"""Application-layer messages in wire format: DNS, HTTP, TLS 1.3, SMTP, SSH, RDP, DER.

Only what the scenario needs, but every message is well formed for its
dissector (Wireshark/tshark shows no malformed packets): lengths, counts and
name encodings are right, and anything encrypted on the real wire (TLS
records after the ServerHello, SSH packets after NEWKEYS) is random bytes of a
plausible size inside correct framing.
"""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime

__all__ = [
    "der", "der_oid", "dns_query", "dns_response", "http_date", "http_request", "http_response",
    "rdp_connection_confirm", "rdp_connection_request", "smtp_dialog", "ssh_banner",
    "ssh_encrypted", "ssh_kex_client", "ssh_kex_server", "tls_app_data", "tls_client_finish",
    "tls_client_hello", "tls_records", "tls_server_flight",
]

# ---- DER (X.690) for SPNEGO and friends -------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    """One DER TLV (X.690 §8.1) with a definite length."""
    n = len(content)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = b"\x82" + n.to_bytes(2, "big")
    return bytes([tag]) + ln + content


def der_oid(dotted: str) -> bytes:
    """A DER OBJECT IDENTIFIER (X.690 §8.19) from its dotted form."""
    arcs = [int(x) for x in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(chunk))
    return der(0x06, bytes(out))


# ---- DNS (RFC 1035) ---------------------------------------------------------------


def _qname(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    """A recursive query (RFC 1035 §4.1): one question, RD set."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(qid: int, name: str, qtype: int, answers: list[tuple[int, int, bytes]],
                 rcode: int = 0, authoritative: bool = False) -> bytes:
    """A response echoing the question; answers are ``(type, ttl, rdata)`` for the name.

    Answers point back to the question name with a compression pointer
    (RFC 1035 §4.1.4, offset 12). Use rdata from :func:`dns_rdata_name` for names.
    """
    flags = 0x8180 | (0x0400 if authoritative else 0) | rcode
    out = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0)
    out += _qname(name) + struct.pack("!HH", qtype, 1)
    for typ, ttl, rdata in answers:
        out += struct.pack("!HHHIH", 0xC00C, typ, 1, ttl, len(rdata)) + rdata
    return out


def dns_rdata_name(name: str) -> bytes:
    """Uncompressed domain name for CNAME/PTR rdata."""
    return _qname(name)


# ---- HTTP/1.1 (RFC 9112) ----------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(t_us: int) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7) of a capture time."""
    d = datetime.fromtimestamp(t_us // 1_000_000, UTC)
    return (f"{_DAYS[d.weekday()]}, {d.day:02d} {_MONTHS[d.month - 1]} {d.year} "
            f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} GMT")


def http_request(method: str, target: str, host: str, headers: list[tuple[str, str]],
                 body: bytes = b"") -> bytes:
    """Request line, ``Host`` first, the given headers, ``Content-Length`` for a body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_response(status: int, reason: str, t_us: int, headers: list[tuple[str, str]],
                  body: bytes = b"", server: str = "nginx") -> bytes:
    """Status line, ``Date``, ``Server``, the given headers and ``Content-Length``."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {http_date(t_us)}", f"Server: {server}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- TLS 1.3 (RFC 8446) -----------------------------------------------------------

_SUITES = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
           0xC014, 0x009C, 0x009D, 0x002F, 0x0035)


def _ext(typ: int, body: bytes) -> bytes:
    return struct.pack("!HH", typ, len(body)) + body


def _vec16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _handshake(typ: int, body: bytes) -> bytes:
    return bytes([typ]) + len(body).to_bytes(3, "big") + body


def _record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def tls_client_hello(rng: random.Random, sni: str | None, alpn: tuple[str, ...] = ("h2", "http/1.1"),
                     ) -> tuple[bytes, bytes]:
    """A TLS 1.3 ClientHello record (RFC 8446 §4.1.2) with SNI (RFC 6066 §3).

    Returns:
        The record and the legacy session id (the ServerHello echoes it).
    """
    sid = rng.randbytes(32)
    exts = b""
    if sni:
        name = sni.encode("ascii")
        exts += _ext(0, _vec16(b"\0" + _vec16(name)))
    exts += _ext(23, b"")  # extended_master_secret
    exts += _ext(65281, b"\0")  # renegotiation_info
    exts += _ext(10, _vec16(struct.pack("!HHH", 0x001D, 0x0017, 0x0018)))  # supported_groups
    exts += _ext(11, b"\x01\x00")  # ec_point_formats: uncompressed
    exts += _ext(35, b"")  # session_ticket
    if alpn:
        protos = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        exts += _ext(16, _vec16(protos))
    exts += _ext(5, b"\x01\x00\x00\x00\x00")  # status_request (OCSP)
    sigalgs = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
    exts += _ext(13, _vec16(b"".join(struct.pack("!H", s) for s in sigalgs)))
    exts += _ext(51, _vec16(struct.pack("!HH", 0x001D, 32) + rng.randbytes(32)))  # key_share
    exts += _ext(45, b"\x01\x01")  # psk_key_exchange_modes: psk_dhe_ke
    exts += _ext(43, b"\x04\x03\x04\x03\x03")  # supported_versions: TLS 1.3, 1.2
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + bytes([32]) + sid
            + _vec16(b"".join(struct.pack("!H", s) for s in _SUITES)) + b"\x01\x00" + _vec16(exts))
    return _record(22, _handshake(1, body), 0x0301), sid


def tls_server_flight(rng: random.Random, sid: bytes, cert_bytes: int = 2800) -> bytes:
    """ServerHello, ChangeCipherSpec and the encrypted rest of the server's first flight."""
    exts = _ext(43, b"\x03\x04") + _ext(51, struct.pack("!HH", 0x001D, 32) + rng.randbytes(32))
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + bytes([len(sid)]) + sid
            + struct.pack("!H", 0x1301) + b"\0" + _vec16(exts))
    return (_record(22, _handshake(2, body)) + _record(20, b"\x01")
            + tls_app_data(rng, cert_bytes))


def tls_client_finish(rng: random.Random) -> bytes:
    """The client's ChangeCipherSpec and encrypted Finished."""
    return _record(20, b"\x01") + tls_app_data(rng, 36)


def tls_app_data(rng: random.Random, n: int) -> bytes:
    """``n`` plaintext bytes as TLS 1.3 application_data records (16 KiB each at most).

    Each record adds the inner content type and a 16-byte AEAD tag (RFC 8446 §5.2).
    """
    out = []
    n = max(n, 1)
    while n > 0:
        k = min(n, 16384)
        out.append(_record(23, rng.randbytes(k + 17)))
        n -= k
    return b"".join(out)


def tls_records(rng: random.Random, n: int, max_plain: int = 1400) -> list[bytes]:
    """``n`` plaintext bytes as application_data records that each fit one TCP segment.

    For protocols Wireshark does not decode as TLS on their port (RDP after
    the X.224 negotiation): every segment then starts at a record boundary.
    """
    out = []
    n = max(n, 1)
    while n > 0:
        k = min(n, max_plain)
        out.append(_record(23, rng.randbytes(k + 17)))
        n -= k
    return out


# ---- SMTP (RFC 5321) --------------------------------------------------------------


def smtp_dialog(server: str, client: str, mail_from: str, rcpts: list[str], message: bytes,
                queue_id: str) -> list[tuple[bool, bytes, int]]:
    """The steps of one mail submission: ``(from_client, bytes, think_us)``."""
    body = message.replace(b"\r\n.", b"\r\n..")  # RFC 5321 §4.5.2 dot-stuffing
    steps: list[tuple[bool, bytes, int]] = [
        (False, f"220 {server} ESMTP Postfix (Debian/GNU)\r\n".encode(), 400),
        (True, f"EHLO {client}\r\n".encode(), 2000),
        (False, (f"250-{server}\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
                 "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n").encode(), 300),
        (True, f"MAIL FROM:<{mail_from}> SIZE={len(message)}\r\n".encode(), 1500),
        (False, b"250 2.1.0 Ok\r\n", 300),
    ]
    for r in rcpts:
        steps += [(True, f"RCPT TO:<{r}>\r\n".encode(), 800), (False, b"250 2.1.5 Ok\r\n", 300)]
    steps += [
        (True, b"DATA\r\n", 800),
        (False, b"354 End data with <CR><LF>.<CR><LF>\r\n", 300),
        (True, body + b"\r\n.\r\n", 1000),
        (False, f"250 2.0.0 Ok: queued as {queue_id}\r\n".encode(), 8000),
        (True, b"QUIT\r\n", 1200),
        (False, b"221 2.0.0 Bye\r\n", 300),
    ]
    return steps


# ---- SSH (RFC 4253) ---------------------------------------------------------------

_KEX_C = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ext-info-c"
_KEX_S = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,kex-strict-s-v00@openssh.com"
_HOSTKEY = "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"
_CIPHER = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes256-gcm@openssh.com"
_MAC = "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-256,hmac-sha1"
_COMP = "none,zlib@openssh.com"


def _sshstr(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!I", len(b)) + b


def _ssh_packet(rng: random.Random, payload: bytes) -> bytes:
    # RFC 4253 §6: total length a multiple of 8, at least 4 bytes of padding.
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + rng.randbytes(pad)


def ssh_banner(client: bool) -> bytes:
    """The identification string (RFC 4253 §4.2)."""
    return b"SSH-2.0-OpenSSH_for_Windows_8.1\r\n" if client else b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def _kexinit(rng: random.Random, kex: str) -> bytes:
    lists = (kex, _HOSTKEY, _CIPHER, _CIPHER, _MAC, _MAC, _COMP, _COMP, "", "")
    payload = bytes([20]) + rng.randbytes(16) + b"".join(_sshstr(x) for x in lists) + b"\0" + b"\0" * 4
    return _ssh_packet(rng, payload)


def ssh_kex_client(rng: random.Random) -> tuple[bytes, bytes, bytes]:
    """Client KEXINIT, KEX_ECDH_INIT (RFC 5656 §4) and NEWKEYS packets."""
    return (_kexinit(rng, _KEX_C), _ssh_packet(rng, bytes([30]) + _sshstr(rng.randbytes(32))),
            _ssh_packet(rng, bytes([21])))


def ssh_kex_server(rng: random.Random) -> tuple[bytes, bytes]:
    """Server KEXINIT, and KEX_ECDH_REPLY followed by NEWKEYS."""
    host_key = _sshstr("ssh-ed25519") + _sshstr(rng.randbytes(32))
    sig = _sshstr("ssh-ed25519") + _sshstr(rng.randbytes(64))
    reply = bytes([31]) + _sshstr(host_key) + _sshstr(rng.randbytes(32)) + _sshstr(sig)
    return _kexinit(rng, _KEX_S), _ssh_packet(rng, reply) + _ssh_packet(rng, bytes([21]))


def ssh_encrypted(rng: random.Random, payload_len: int) -> bytes:
    """One chacha20-poly1305 packet: sealed length, ciphertext, 16-byte Poly1305 tag."""
    pad = 8 - (5 + payload_len) % 8
    if pad < 4:
        pad += 8
    return rng.randbytes(4 + 1 + payload_len + pad + 16)


# ---- RDP connection sequence (MS-RDPBCGR §2.2.1.1, §2.2.1.2) -----------------------


def _tpkt(x224: bytes) -> bytes:
    return struct.pack("!BBH", 3, 0, 4 + len(x224)) + x224


def rdp_connection_request(user: str) -> bytes:
    """TPKT + X.224 Connection Request with the mstshash cookie and RDP_NEG_REQ."""
    var = f"Cookie: mstshash={user}\r\n".encode() + struct.pack("<BBHI", 1, 0, 8, 0x3)
    return _tpkt(bytes([6 + len(var), 0xE0]) + struct.pack("!HHB", 0, 0, 0) + var)


def rdp_connection_confirm() -> bytes:
    """TPKT + X.224 Connection Confirm selecting CredSSP (PROTOCOL_HYBRID)."""
    var = struct.pack("<BBHI", 2, 0x1F, 8, 0x2)
    return _tpkt(bytes([6 + len(var), 0xD0]) + struct.pack("!HHB", 0, 0x1234, 0) + var)
