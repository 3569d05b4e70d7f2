"""SSH (RFC 4253): banners, negotiated algorithms, host key and HASSH, as Zeek's ssh.log.

Everything a passive observer can see comes before NEWKEYS: the identification
strings (§4.2), both KEXINIT messages (§7.1; the algorithm chosen in each list
is the client's first that the server also offers) and the server's host key
in its key-exchange reply (shown as Zeek shows it, ``SHA256:`` and unpadded
base64). HASSH and HASSHServer (Salesforce) are MD5s of
``kex;ciphers;macs;compression`` of the client's and the server's KEXINIT.
Whether authentication succeeded is not guessed (Zeek infers it from the
sizes of encrypted packets).
"""

from __future__ import annotations

import base64
import hashlib
import struct

from forensics.protocols import register
from forensics.protocols._base import Reader, Session

__all__ = ["detect", "hassh", "parse"]

MAX_PACKETS = 16  # cleartext packets read per direction before NEWKEYS
MAX_PACKET = 256 * 1024


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """An SSH identification string from either side."""
    return orig.startswith(b"SSH-") or resp.startswith(b"SSH-")


def _namelists(payload: bytes) -> list[list[str]]:
    """The ten name-lists of a KEXINIT payload (after the type byte and the 16-byte cookie)."""
    p, out = 17, []
    for _ in range(10):
        n = struct.unpack_from(">I", payload, p)[0]
        if p + 4 + n > len(payload):
            raise ValueError("name-list runs past the packet")
        out.append([x for x in payload[p + 4 : p + 4 + n].decode("latin-1").split(",") if x])
        p += 4 + n
    return out


def hassh(lists: list[list[str]], server: bool) -> tuple[str, str]:
    """(HASSH, the string it hashes) of a KEXINIT's name-lists."""
    i = (3, 5, 7) if server else (2, 4, 6)
    text = ";".join(",".join(lists[k]) for k in (0, i[0], i[1], i[2]))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(), text


def _packets(r: Reader, pos: int) -> list[tuple[int, bytes]]:
    """(message type, payload) of the cleartext binary packets (§6) from ``pos`` up to NEWKEYS."""
    out: list[tuple[int, bytes]] = []
    while pos + 5 <= r.end and len(out) < MAX_PACKETS:
        ln, pad = struct.unpack(">IB", r.get(pos, 5))
        if ln < 5 or ln > MAX_PACKET or pad >= ln:
            break
        payload = r.get(pos + 5, ln - pad - 1)
        if not payload:
            break
        out.append((payload[0], payload))
        pos += 4 + ln
        if payload[0] == 21:  # SSH_MSG_NEWKEYS: what follows is encrypted
            break
    return out


def _chosen(client: list[str], server: list[str]) -> str | None:
    return next((a for a in client if a in server), None)


@register("ssh", "tcp", detect, order=15)
def parse(s: Session) -> None:
    """Emit one ``ssh`` row for the session."""
    banners: dict[bool, str | None] = {}
    kex: dict[bool, list[list[str]]] = {}
    host_key = None
    for is_orig in (True, False):
        r = Reader(s.direction(is_orig))
        pos, banner = 0, None
        for _ in range(20):  # RFC 4253 §4.2: other lines may precede the identification string
            ln = r.line(pos, 512)
            if ln is None:
                break
            pos = ln[1]
            if ln[0].startswith(b"SSH-"):
                banner = ln[0].decode("utf-8", "backslashreplace")
                break
        banners[is_orig] = banner
        if banner is None or not banner.startswith(("SSH-2.", "SSH-1.99")):
            continue
        try:
            packets = _packets(r, pos)
            for mtype, payload in packets:
                if mtype == 20 and is_orig not in kex:
                    kex[is_orig] = _namelists(payload)
            if not is_orig and kex.get(True) and kex.get(False):
                # The server's host key (K_S) opens its key-exchange reply: message 33 for
                # group exchange (RFC 4419 §3), 31 for the fixed groups and ECDH (RFC 5656 §4).
                gex = (_chosen(kex[True][0], kex[False][0]) or "").startswith("diffie-hellman-group-exchange")
                reply = 33 if gex else 31
                for mtype, payload in packets:
                    if mtype == reply and len(payload) >= 5:
                        n = struct.unpack_from(">I", payload, 1)[0]
                        blob = payload[5 : 5 + n]
                        if len(blob) == n and n:
                            digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
                            host_key = "SHA256:" + digest
                        break
        except (ValueError, struct.error, IndexError) as exc:
            s.warn("ssh_bad_packet", f"cleartext SSH packet not decoded: {exc}", is_orig=is_orig, offset=pos)
    c, sv = kex.get(True), kex.get(False)
    client, server = banners.get(True), banners.get(False)
    # Version 2 only when both sides speak it (SSH-1.99 means "1 or 2", RFC 4253 §5.1).
    seen = [b for b in (client, server) if b]
    version = (2 if all(b.startswith(("SSH-2.", "SSH-1.99")) for b in seen) else 1) if seen else None
    row = {"version": version, "client": client, "server": server, "host_key": host_key}
    if c and sv:
        row.update(
            kex_alg=_chosen(c[0], sv[0]),
            host_key_alg=_chosen(c[1], sv[1]),
            cipher_alg=_chosen(c[2], sv[2]),
            mac_alg=_chosen(c[4], sv[4]),
            compression_alg=_chosen(c[6], sv[6]),
        )
    if c:
        row["hassh"], row["hassh_algorithms"] = hassh(c, False)
    if sv:
        row["hassh_server"], row["hassh_server_algorithms"] = hassh(sv, True)
    start = s.orig if s.orig.captured else s.resp
    s.emit_at("ssh", start is s.orig, 0, **row)
