"""DNS (RFC 1035) over UDP and TCP, NetBIOS name service, mDNS and LLMNR, as Zeek's dns.log.

Messages are paired per transaction id as Zeek does: a query waits for its
reply (and the other way round); a pair is one row, and whatever is still
waiting when the session ends is a row of its own. Only answer-section records
fill ``answers``/``ttls`` (Zeek's defaults skip authority and additional
records), each rendered as Zeek renders it (``TXT <len> <text>``, ``RRSIG
<type> <signer>``, ...). Name decompression is bounded (RFC 1035 §4.1.4
pointers may loop in hostile input): a loop or an overlong name is a warning,
not a hang.

DNS over UDP also has a compiled bulk path (:func:`bulk_udp`, :func:`bulk_table`)
that the second pass runs over a whole batch of sessions: it gives exactly the
rows :func:`parse` gives, and leaves to :func:`parse` every session it cannot
vouch for (a message that does not decode, NetBIOS, ...).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from forensics.protocols import register
from forensics.protocols._base import Session

__all__ = ["DnsError", "Message", "bulk_ready", "bulk_table", "bulk_udp", "detect", "parse", "parse_message"]

DNS_PORTS = frozenset({53, 137, 5353, 5355})
MAX_MESSAGES = 100_000
MAX_RRS = 1000
MAX_JUMPS = 32

QTYPES = {
    1: "A",
    2: "NS",
    3: "MD",
    4: "MF",
    5: "CNAME",
    6: "SOA",
    7: "MB",
    8: "MG",
    9: "MR",
    10: "NULL",
    11: "WKS",
    12: "PTR",
    13: "HINFO",
    14: "MINFO",
    15: "MX",
    16: "TXT",
    17: "RP",
    18: "AFSDB",
    19: "X25",
    20: "ISDN",
    21: "RT",
    22: "NSAP",
    23: "NSAP-PTR",
    24: "SIG",
    25: "KEY",
    26: "PX",
    27: "GPOS",
    28: "AAAA",
    29: "LOC",
    30: "NXT",
    31: "EID",
    32: "NIMLOC",
    33: "SRV",
    34: "ATMA",
    35: "NAPTR",
    36: "KX",
    37: "CERT",
    38: "A6",
    39: "DNAME",
    40: "SINK",
    41: "OPT",
    42: "APL",
    43: "DS",
    44: "SSHFP",
    45: "IPSECKEY",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    49: "DHCID",
    50: "NSEC3",
    51: "NSEC3PARAM",
    52: "TLSA",
    53: "SMIMEA",
    55: "HIP",
    59: "CDS",
    60: "CDNSKEY",
    61: "OPENPGPKEY",
    62: "CSYNC",
    63: "ZONEMD",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    100: "UINFO",
    101: "UID",
    102: "GID",
    103: "UNSPEC",
    249: "TKEY",
    250: "TSIG",
    251: "IXFR",
    252: "AXFR",
    253: "MAILB",
    254: "MAILA",
    255: "*",
    256: "URI",
    257: "CAA",
    32768: "TA",
    32769: "DLV",
}
CLASSES = {1: "C_INTERNET", 2: "C_CSNET", 3: "C_CHAOS", 4: "C_HESIOD", 254: "C_NONE", 255: "C_ANY"}
RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSet",
    9: "NOTAUTH",
    10: "NOTZONE",
    11: "DSOTYPENI",
    16: "BADVERS",
    17: "BADKEY",
    18: "BADTIME",
    19: "BADMODE",
    20: "BADNAME",
    21: "BADALG",
    22: "BADTRUNC",
    23: "BADCOOKIE",
}
# Answer types Zeek reports through their own events rather than as answers (OPT, TKEY, TSIG).
_NO_REPLY = frozenset({41, 249, 250})
OPCODES = {0: "query", 1: "inverse-query", 2: "status", 4: "notify", 5: "dynamic-update"}


_ODD = re.compile(rb"[^\x21-\x7e]")  # a label byte shown escaped, as Zeek does


class DnsError(ValueError):
    """A message that cannot be read (truncated, a compression loop, ...)."""


@dataclass
class Message:
    """A decoded DNS message (only what dns.log needs)."""

    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    z: int
    rcode: int
    qdcount: int
    questions: list[tuple[str, str, int, int]] = field(default_factory=list)  # (name, original, type, class)
    answers: list[tuple[str, str, int]] = field(default_factory=list)  # (owner, rendered, ttl)
    ancount: int = 0


def _name(buf: bytes, pos: int, memo: dict[int, str] | None = None) -> tuple[str, int]:
    """Read a (possibly compressed) name; returns it and the offset after it in place.

    ``memo`` maps offsets already decoded in this message to the name found
    there, so a compression pointer to the question name is a dictionary lookup.
    """
    labels: list[str] = []
    start, end, jumps, total = pos, -1, 0, 0
    tail = ""
    while True:
        if pos >= len(buf):
            raise DnsError("name runs past the end of the message")
        n = buf[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:  # RFC 1035 §4.1.4 pointer
            if pos + 1 >= len(buf):
                raise DnsError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DnsError("compression pointer loop")
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | buf[pos + 1]
            if memo is not None and pos in memo:
                tail = memo[pos]
                break
            continue
        if n & 0xC0:
            raise DnsError(f"unsupported label type {n >> 6}")
        label = buf[pos + 1 : pos + 1 + n]
        if len(label) < n:
            raise DnsError("label runs past the end of the message")
        total += n + 1
        if total > 255:
            raise DnsError("name longer than 255 bytes")
        labels.append(
            label.decode("ascii")
            if not _ODD.search(label)
            else "".join(chr(c) if 0x20 < c < 0x7F else f"\\x{c:02x}" for c in label)
        )
        pos += 1 + n
    if tail:
        labels.append(tail)
    name = ".".join(labels)
    if memo is not None:
        memo[start] = name
    return name, (end if end >= 0 else pos)


def _rdata(buf: bytes, t: int, pos: int, rdlen: int, memo: dict[int, str]) -> str:
    rd = buf[pos : pos + rdlen]
    if len(rd) < rdlen:
        raise DnsError("record data runs past the end of the message")
    if t == 1 and rdlen == 4:
        return socket.inet_ntoa(rd)
    if t == 28 and rdlen == 16:
        return str(ipaddress.IPv6Address(rd))
    if t in (2, 5, 12, 39, 6):
        return _name(buf, pos, memo)[0].lower()
    if t == 15:
        return _name(buf, pos + 2, memo)[0].lower()
    if t == 33:
        return _name(buf, pos + 6, memo)[0].lower()
    if t in (16, 99):
        parts, p = [], 0
        while p < rdlen:
            n = rd[p]
            s = rd[p + 1 : p + 1 + n].decode("latin-1")
            parts.append(f"{'TXT' if t == 16 else 'SPF'} {len(s)} {s}")
            p += 1 + n
        return " ".join(parts)
    if t == 46 and rdlen >= 18:
        return f"RRSIG {struct.unpack_from('>H', rd)[0]} {_name(buf, pos + 18)[0].lower()}"
    if t == 48 and rdlen >= 4:
        return f"DNSKEY {rd[3]}"
    if t == 43 and rdlen >= 4:
        return f"DS {rd[2]} {rd[3]}"
    if t == 47:
        return f"NSEC {_name(buf, pos)[0].lower()}"
    if t == 50:
        return "NSEC3"
    if t == 65534:
        return "BIND9 signing signal"
    if t == 257 and rdlen >= 2:
        tl = rd[1]
        return f"{rd[0]} {rd[2 : 2 + tl].decode('latin-1')} {rd[2 + tl :].decode('latin-1')}"
    if t == 44 and rdlen >= 2:
        return f"SSHFP: {rd[2:].hex()}"
    return f"<unknown type={t}>"


def parse_message(buf: bytes) -> Message:
    """Decode a DNS message.

    Raises:
        DnsError: the message is truncated or malformed.
    """
    if len(buf) < 12:
        raise DnsError(f"message of {len(buf)} bytes is shorter than a header")
    mid, flags, qd, an, _ns, _ar = struct.unpack_from(">HHHHHH", buf)
    m = Message(
        mid,
        bool(flags & 0x8000),
        (flags >> 11) & 15,
        bool(flags & 0x400),
        bool(flags & 0x200),
        bool(flags & 0x100),
        bool(flags & 0x80),
        (flags >> 4) & 7,
        flags & 15,
        qd,
        ancount=an,
    )
    pos = 12
    memo: dict[int, str] = {}
    for _ in range(min(qd, MAX_RRS)):
        name, pos = _name(buf, pos, memo)
        if pos + 4 > len(buf):
            raise DnsError("question runs past the end of the message")
        qt, qc = struct.unpack_from(">HH", buf, pos)
        pos += 4
        m.questions.append((name.lower(), name, qt, qc))
    for _ in range(min(an, MAX_RRS)):
        owner, pos = _name(buf, pos, memo)
        if pos + 10 > len(buf):
            raise DnsError("answer runs past the end of the message")
        t, _c, ttl, rdlen = struct.unpack_from(">HHIH", buf, pos)
        pos += 10
        if t not in _NO_REPLY:
            m.answers.append((owner.lower(), _rdata(buf, t, pos, rdlen, memo), ttl))
        pos += rdlen
    return m


def _plausible(data: bytes, s: Session | None = None) -> bool:
    """A DNS header with sane counts whose message decodes (kept for the parser)."""
    if len(data) < 12:
        return False
    _mid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", data)
    if (flags >> 11) & 15 not in (0, 1, 2, 4, 5) or qd > 16 or an + ns + ar > 512:
        return False
    try:
        m = parse_message(data)
    except (DnsError, ValueError, IndexError, struct.error):
        return False
    if s is not None:
        s.state["dns_first"] = (data, m)
    return bool(m.questions or m.answers)


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A plausible DNS message (TCP: behind its 2-byte length) on a DNS port, or a strict one anywhere."""
    tcp = s.data.proto == 6
    dns_port = bool({s.info["orig_p"], s.info["resp_p"]} & DNS_PORTS)
    for head in (orig, resp):
        if not head:
            continue
        msg = head[2:] if tcp else head
        if tcp and (len(head) < 2 or struct.unpack_from(">H", head)[0] < 12):
            continue
        if not _plausible(msg, s):
            continue
        if dns_port:
            return True
        m = s.state["dns_first"][1]
        if (
            not tcp
            and len(msg) == len(head)
            and len(m.questions) == 1
            and (m.qr or not m.answers)
            and m.questions[0][3] in CLASSES
        ):
            return True
    return False


def _netbios_name(name: str) -> str:
    """First-level decoding of a NetBIOS name (RFC 1001 §14.1), suffix byte dropped."""
    first = name.split(".", 1)[0]
    if len(first) != 32 or any(not ("a" <= c <= "p") for c in first.lower()):
        return name
    raw = bytes(
        ((ord(a) - 65) << 4) | (ord(b) - 65)
        for a, b in zip(first[::2].upper(), first[1::2].upper(), strict=True)
    )
    return raw[:15].decode("latin-1").rstrip(" ")


def _messages(s: Session) -> list[tuple[int, int, int, bytes]]:
    """(ts, frame, file offset, message) in capture order (TCP: split by length prefixes)."""
    if s.data.proto == 17:
        return [(g.ts, g.frame, g.file_offset, g.data) for g in s.data.datagrams][:MAX_MESSAGES]
    from forensics.protocols._base import Reader

    out: list[tuple[int, int, int, bytes]] = []
    for is_orig in (True, False):
        r = Reader(s.direction(is_orig))
        pos = 0
        while pos + 2 <= r.end and len(out) < MAX_MESSAGES:
            n = struct.unpack(">H", r.get(pos, 2))[0]
            data = r.get(pos + 2, n)
            if len(data) < n:
                s.warn("dns_truncated", f"TCP message of {n} bytes cut short", is_orig=is_orig, offset=pos)
                break
            d = s.direction(is_orig)
            out.append((d.ts_at(pos) or 0, d.frame_at(pos) or 0, d.file_offset_at(pos) or 0, data))
            pos += 2 + n
    out.sort(key=lambda m: (m[0], m[1]))
    return out


@register("dns", "udp", detect, order=30)
def parse(s: Session) -> None:
    """Emit ``dns`` rows (Zeek's pairing of queries and replies)."""
    proto = "udp" if s.data.proto == 17 else "tcp"
    nb = s.info["resp_p"] == 137 and proto == "udp"
    queries: dict[int, deque[dict]] = {}
    replies: dict[int, deque[dict]] = {}
    done: list[dict] = []
    first = s.state.pop("dns_first", None)
    for ts, frame, foff, data in _messages(s):
        try:
            m = first[1] if first is not None and first[0] == data else parse_message(data)
        except (DnsError, ValueError, IndexError, struct.error) as exc:
            s.warn("dns_malformed", f"DNS message not decoded: {exc}", file_offset=foff)
            continue
        mine, other = (replies, queries) if m.qr else (queries, replies)
        if other.get(m.id):
            info = other[m.id].popleft()
        else:
            info = {
                "ts": ts,
                "frame": frame,
                "foff": foff,
                "trans_id": m.id,
                "rd": False,
                "tc": False,
                "aa": False,
                "ra": False,
                "z": 0,
                "rejected": False,
                "answers": [],
                "ttls": [],
            }
            mine.setdefault(m.id, deque()).append(info)
        info.setdefault("opcode", m.opcode)
        if not m.qr:
            info["saw_query"] = True
            info.update(rd=m.rd, tc=m.tc, z=m.z)
            if m.questions:
                name, orig_name, qt, qc = m.questions[0]
                info.update(query=_netbios_name(name) if nb else name, qtype=qt, qclass=qc)
                info.setdefault("original_query", orig_name)
        else:
            info["saw_reply"] = True
            info.setdefault("rcode", m.rcode)
            if m.rcode != 0 and m.qdcount == 0:
                info["rejected"] = True
            if m.opcode == 0 and m.answers:
                if "query" not in info:
                    info["query"] = m.answers[0][0]
                info.update(aa=m.aa, ra=m.ra)
                if "rtt" not in info and ts > info["ts"]:
                    info["rtt"] = (ts - info["ts"]) / 1e9
                for _owner, text, ttl in m.answers:
                    if text:
                        info["answers"].append(text)
                        info["ttls"].append(str(ttl))
        # A matched info has left its queue; it is complete once both sides were seen.
        if info.get("saw_query") and info.get("saw_reply"):
            done.append(info)
    for q in (queries, replies):
        for infos in q.values():
            done.extend(infos)
    for info in done:
        _emit(s, info, proto, nb)


def _emit(s: Session, info: dict, proto: str, nb: bool) -> None:
    qt, qc, rc, op = info.get("qtype"), info.get("qclass"), info.get("rcode"), info.get("opcode", 0)
    qtype_name = None
    if qt is not None:
        qtype_name = QTYPES.get(qt, f"query-{qt}")
        if nb and qtype_name == "SRV":
            qtype_name = "NBSTAT"
    opname = OPCODES.get(op, f"opcode-{op}")
    s.emit(
        "dns",
        ts=info["ts"],
        frame=info["frame"],
        file_offset=info["foff"],
        proto=proto,
        trans_id=info["trans_id"],
        rtt=info.get("rtt"),
        query=info.get("query"),
        qclass=qc,
        qclass_name=CLASSES.get(qc, f"unknown-{qc}") if qc is not None else None,
        qtype=qt,
        qtype_name=qtype_name,
        rcode=rc,
        rcode_name=RCODES.get(rc, f"rcode-{rc}") if rc is not None else None,
        aa=info["aa"],
        tc=info["tc"],
        rd=info["rd"],
        ra=info["ra"],
        z=info["z"],
        answers=info["answers"] or None,
        ttls=info["ttls"] or None,
        rejected=info["rejected"],
        opcode=op,
        opcode_name=("netbios-" + opname) if nb else opname,
    )


# DNS over TCP: the same parser behind RFC 1035 §4.2.2 length prefixes.
register("dns", "tcp", detect, order=60)(parse)


# --------------------------------------------------------------------------------------------
# The bulk path: DNS over UDP decoded and paired for a whole batch of sessions in one compiled
# pass. It gives exactly the rows :func:`parse` gives, and takes only sessions it can vouch
# for; every other session (a message that does not decode, a record type it does not render,
# NetBIOS, a payload not in the evidence file, ...) is left to :func:`parse` as before.
# --------------------------------------------------------------------------------------------

_OK, _ERR, _UNSUP = 0, 1, 2
_SCR_CAP = 1 << 20  # rendered-name bytes per session
_ANS_CAP = 1 << 16  # answer records per session
_BULK_MAX_MESSAGES = MAX_MESSAGES
_HEAD = 1024  # bytes of a datagram the detectors see (forensics.protocols.HEAD)
_TS_NULL = np.iinfo(np.int64).min

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@njit(cache=True)
def _k_put(scr: np.ndarray, n: int, s: bytes) -> int:
    for i in range(len(s)):
        scr[n + i] = s[i]
    return n + len(s)


@njit(cache=True)
def _k_uint(scr: np.ndarray, n: int, v: int) -> int:
    """Decimal digits of ``v >= 0``."""
    if v == 0:
        scr[n] = 48
        return n + 1
    k = 0
    t = v
    while t > 0:
        k += 1
        t //= 10
    for i in range(k):
        scr[n + k - 1 - i] = 48 + v % 10
        v //= 10
    return n + k


@njit(cache=True)
def _k_latin1(scr: np.ndarray, n: int, m: np.ndarray, a: int, b: int) -> int:
    """Bytes ``m[a:b]`` decoded as Latin-1, written as UTF-8."""
    for i in range(a, b):
        c = m[i]
        if c < 0x80:
            scr[n] = c
            n += 1
        else:
            scr[n] = 0xC0 | (c >> 6)
            scr[n + 1] = 0x80 | (c & 0x3F)
            n += 2
    return n


@njit(cache=True)
def _k_name(m, a, ln, pos, use_memo, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn):
    """:func:`_name` (lower-cased), rendered into ``scr`` at ``sn``.

    Returns:
        ``(status, text_start, text_end, next_pos, nmemo)``.
    """
    cap = scr.shape[0]
    if sn + 1400 > cap:
        return _UNSUP, 0, 0, 0, nmemo
    out0 = sn
    start = pos
    end = -1
    jumps = 0
    total = 0
    nlab = 0
    tail_a = -1
    tail_b = -1
    while True:
        if pos >= ln:
            return _ERR, 0, 0, 0, nmemo
        c = np.int64(m[a + pos])
        if c == 0:
            pos += 1
            break
        if c & 0xC0 == 0xC0:
            if pos + 1 >= ln:
                return _ERR, 0, 0, 0, nmemo
            jumps += 1
            if jumps > MAX_JUMPS:
                return _ERR, 0, 0, 0, nmemo
            if end < 0:
                end = pos + 2
            pos = ((c & 0x3F) << 8) | np.int64(m[a + pos + 1])
            if use_memo and memo_at[pos] >= 0:
                e = memo_at[pos]
                tail_a = memo_off[e]
                tail_b = tail_a + memo_len[e]
                break
            continue
        if c & 0xC0:
            return _ERR, 0, 0, 0, nmemo
        if pos + 1 + c > ln:
            return _ERR, 0, 0, 0, nmemo
        total += c + 1
        if total > 255:
            return _ERR, 0, 0, 0, nmemo
        if nlab:
            scr[sn] = 46
            sn += 1
        for i in range(a + pos + 1, a + pos + 1 + c):
            x = m[i]
            if 0x20 < x < 0x7F:
                if 65 <= x <= 90:
                    x += 32
                scr[sn] = x
                sn += 1
            else:
                scr[sn] = 92
                scr[sn + 1] = 120
                scr[sn + 2] = _HEX[x >> 4]
                scr[sn + 3] = _HEX[x & 15]
                sn += 4
        nlab += 1
        pos += 1 + c
    if tail_b > tail_a:
        if sn + 1 + (tail_b - tail_a) > cap:
            return _UNSUP, 0, 0, 0, nmemo
        if nlab:
            scr[sn] = 46
            sn += 1
        for i in range(tail_a, tail_b):
            scr[sn] = scr[i]
            sn += 1
    if use_memo:
        e = memo_at[start]
        if e < 0:
            e = nmemo
            memo_keys[nmemo] = start
            memo_at[start] = e
            nmemo += 1
        memo_off[e] = out0
        memo_len[e] = sn - out0
    return _OK, out0, sn, (end if end >= 0 else pos), nmemo


@njit(cache=True)
def _k_ipv6(scr: np.ndarray, n: int, m: np.ndarray, p: int) -> int:
    """An IPv6 address as Python's ipaddress prints it (longest zero run of 2+ groups as ::)."""
    best_s = -1
    best_l = 0
    cur_s = -1
    cur_l = 0
    for i in range(8):
        h = (np.int64(m[p + 2 * i]) << 8) | np.int64(m[p + 2 * i + 1])
        if h == 0:
            cur_l += 1
            if cur_s < 0:
                cur_s = i
            if cur_l > best_l:
                best_l = cur_l
                best_s = cur_s
        else:
            cur_l = 0
            cur_s = -1
    if best_l < 2:
        best_s = -1
    i = 0
    while i < 8:
        if i == best_s:
            scr[n] = 58
            scr[n + 1] = 58
            n += 2
            i += best_l
            continue
        if i > 0 and i != best_s + best_l:
            scr[n] = 58
            n += 1
        h = (np.int64(m[p + 2 * i]) << 8) | np.int64(m[p + 2 * i + 1])
        started = False
        for sh in (12, 8, 4, 0):
            d = (h >> sh) & 15
            if d or started or sh == 0:
                scr[n] = _HEX[d]
                n += 1
                started = True
        i += 1
    return n


@njit(cache=True)
def _k_rdata(m, a, ln, t, pos, rdlen, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn):
    """:func:`_rdata` rendered into ``scr``: ``(status, start, end, nmemo)``."""
    if pos + rdlen > ln:
        return _ERR, 0, 0, nmemo
    cap = scr.shape[0]
    if sn + 12 * rdlen + 2000 > cap:
        return _UNSUP, 0, 0, nmemo
    s0 = sn
    r = a + pos
    if t == 1 and rdlen == 4:
        for i in range(4):
            if i:
                scr[sn] = 46
                sn += 1
            sn = _k_uint(scr, sn, np.int64(m[r + i]))
        return _OK, s0, sn, nmemo
    if t == 28 and rdlen == 16:
        mapped = m[r + 10] == 0xFF and m[r + 11] == 0xFF
        for i in range(10):
            if m[r + i] != 0:
                mapped = False
        if mapped:  # printed differently across Python versions: leave it to parse()
            return _UNSUP, 0, 0, nmemo
        return _OK, s0, _k_ipv6(scr, sn, m, r), nmemo
    if t == 2 or t == 5 or t == 12 or t == 39 or t == 6 or t == 15 or t == 33:
        off = 2 if t == 15 else (6 if t == 33 else 0)
        st, na, nb, _p, nmemo = _k_name(
            m, a, ln, pos + off, True, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
        )
        return st, na, nb, nmemo
    if t == 16 or t == 99:
        p = 0
        while p < rdlen:
            c = np.int64(m[r + p])
            e = p + 1 + c
            if e > rdlen:
                e = rdlen
            if p:
                scr[sn] = 32
                sn += 1
            sn = _k_put(scr, sn, b"TXT " if t == 16 else b"SPF ")
            sn = _k_uint(scr, sn, e - (p + 1))
            scr[sn] = 32
            sn += 1
            sn = _k_latin1(scr, sn, m, r + p + 1, r + e)
            p += 1 + c
        return _OK, s0, sn, nmemo
    if t == 46 and rdlen >= 18:
        st, na, nb, _p, nmemo = _k_name(
            m, a, ln, pos + 18, False, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
        )
        if st != _OK:
            return st, 0, 0, nmemo
        # "RRSIG <type covered> <signer>": the name was rendered first; move it behind the prefix
        k = nb - na
        pre = np.empty(32, np.uint8)
        q = _k_put(pre, 0, b"RRSIG ")
        q = _k_uint(pre, q, (np.int64(m[r]) << 8) | np.int64(m[r + 1]))
        pre[q] = 32
        q += 1
        for i in range(k - 1, -1, -1):
            scr[na + q + i] = scr[na + i]
        for i in range(q):
            scr[na + i] = pre[i]
        return _OK, na, na + q + k, nmemo
    if t == 48 and rdlen >= 4:
        sn = _k_put(scr, sn, b"DNSKEY ")
        return _OK, s0, _k_uint(scr, sn, np.int64(m[r + 3])), nmemo
    if t == 43 and rdlen >= 4:
        sn = _k_put(scr, sn, b"DS ")
        sn = _k_uint(scr, sn, np.int64(m[r + 2]))
        scr[sn] = 32
        return _OK, s0, _k_uint(scr, sn + 1, np.int64(m[r + 3])), nmemo
    if t == 47:
        sn = _k_put(scr, sn, b"NSEC ")
        st, na, nb, _p, nmemo = _k_name(
            m, a, ln, pos, False, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
        )
        if st != _OK:
            return st, 0, 0, nmemo
        return _OK, s0, nb, nmemo
    if t == 50:
        return _OK, s0, _k_put(scr, sn, b"NSEC3"), nmemo
    if t == 65534:
        return _OK, s0, _k_put(scr, sn, b"BIND9 signing signal"), nmemo
    if t == 257 and rdlen >= 2:
        tl = np.int64(m[r + 1])
        sn = _k_uint(scr, sn, np.int64(m[r]))
        scr[sn] = 32
        sn += 1
        e = 2 + tl if 2 + tl < rdlen else rdlen
        sn = _k_latin1(scr, sn, m, r + 2, r + e)
        scr[sn] = 32
        sn += 1
        if 2 + tl < rdlen:
            sn = _k_latin1(scr, sn, m, r + 2 + tl, r + rdlen)
        return _OK, s0, sn, nmemo
    if t == 44 and rdlen >= 2:
        sn = _k_put(scr, sn, b"SSHFP: ")
        for i in range(r + 2, r + rdlen):
            scr[sn] = _HEX[m[i] >> 4]
            scr[sn + 1] = _HEX[m[i] & 15]
            sn += 2
        return _OK, s0, sn, nmemo
    sn = _k_put(scr, sn, b"<unknown type=")
    sn = _k_uint(scr, sn, t)
    scr[sn] = 62
    return _OK, s0, sn + 1, nmemo


@njit(cache=True)
def _k_message(m, a, ln, memo_at, memo_off, memo_len, memo_keys, scr, sn, hdr, ans, nans0):
    """:func:`parse_message` of ``m[a:a+ln]``.

    Fills ``hdr`` (id, flags, qdcount, ancount, nscount, arcount, q0 start, q0 end,
    q0 type, q0 class, first answer, answers) and appends the answers that count
    (owner start/end, text start/end, ttl) to ``ans`` from row ``nans0``.

    Returns:
        ``(status, sn)``: status and the scratch bytes used so far.
    """
    nmemo = 0
    st = _OK
    if ln < 12:
        return _ERR, sn
    for i in range(6):
        hdr[i] = (np.int64(m[a + 2 * i]) << 8) | np.int64(m[a + 2 * i + 1])
    qd, an = hdr[2], hdr[3]
    hdr[6] = -1
    hdr[7] = -1
    hdr[8] = -1
    hdr[9] = -1
    hdr[10] = nans0
    nans = nans0
    pos = 12
    for qi in range(min(qd, MAX_RRS)):
        st, na, nb, pos, nmemo = _k_name(
            m, a, ln, pos, True, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
        )
        if st != _OK:
            break
        sn = nb
        if pos + 4 > ln:
            st = _ERR
            break
        if qi == 0:
            hdr[6] = na
            hdr[7] = nb
            hdr[8] = (np.int64(m[a + pos]) << 8) | np.int64(m[a + pos + 1])
            hdr[9] = (np.int64(m[a + pos + 2]) << 8) | np.int64(m[a + pos + 3])
        pos += 4
    if st == _OK:
        for _ai in range(min(an, MAX_RRS)):
            st, oa, ob, pos, nmemo = _k_name(
                m, a, ln, pos, True, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
            )
            if st != _OK:
                break
            sn = ob
            if pos + 10 > ln:
                st = _ERR
                break
            b = a + pos
            t = (np.int64(m[b]) << 8) | np.int64(m[b + 1])
            ttl = (
                (np.int64(m[b + 4]) << 24)
                | (np.int64(m[b + 5]) << 16)
                | (np.int64(m[b + 6]) << 8)
                | np.int64(m[b + 7])
            )
            rdlen = (np.int64(m[b + 8]) << 8) | np.int64(m[b + 9])
            pos += 10
            if t != 41 and t != 249 and t != 250:
                st, ta, tb, nmemo = _k_rdata(
                    m, a, ln, t, pos, rdlen, memo_at, memo_off, memo_len, memo_keys, nmemo, scr, sn
                )
                if st != _OK:
                    break
                if tb > sn:
                    sn = tb
                if nans >= ans.shape[0]:
                    st = _UNSUP
                    break
                ans[nans, 0] = oa
                ans[nans, 1] = ob
                ans[nans, 2] = ta
                ans[nans, 3] = tb
                ans[nans, 4] = ttl
                nans += 1
            pos += rdlen
    for i in range(nmemo):
        memo_at[memo_keys[i]] = -1
    hdr[11] = nans - nans0
    return st, sn


@njit(cache=True)
def _k_plausible(hdr: np.ndarray) -> bool:
    """:func:`_plausible` on a message that decoded (its header checks and content)."""
    op = (hdr[1] >> 11) & 15
    if not (op == 0 or op == 1 or op == 2 or op == 4 or op == 5):
        return False
    if hdr[2] > 16 or hdr[3] + hdr[4] + hdr[5] > 512:
        return False
    return hdr[2] > 0 or hdr[11] > 0


@njit(cache=True)
def bulk_udp(buf, at, ok, orig, ts, frame, poff, sstart, orig_p, resp_p, dns_port):
    """Decode and pair the DNS messages of many UDP sessions (see :func:`parse`).

    Args:
        buf: the payload bytes; datagram ``i`` is ``buf[at[i]:at[i+1]]`` when ``ok[i]``.
        at: payload starts (len = datagrams + 1).
        ok: payload present in ``buf``.
        orig: per datagram, sent by the originator.
        ts: per datagram, capture time (ns).
        frame: per datagram, its frame.
        poff: per datagram, evidence offset of its payload.
        sstart: CSR offsets of each session's datagrams (capture order inside).
        orig_p: per session, originator port.
        resp_p: per session, responder port.
        dns_port: per session, a port is one of :data:`DNS_PORTS`.

    Returns:
        ``(taken, r_sess, r_int, r_rtt, r_ans0, ans_txt, ans_ttl, txt)``: per session
        whether this path took it (its rows are these; False: run :func:`parse`);
        per row (sessions in order) its session, integer fields (ts, frame, file
        offset, trans_id, query start, query end, qclass, qtype, rcode, aa, tc, rd,
        ra, z, rejected, opcode; -1 for NULL) and rtt (NaN for NULL); CSR offsets of
        each row's answers, answer text spans and TTLs; the text bytes.
    """
    ns = sstart.shape[0] - 1
    taken = np.zeros(ns, np.bool_)
    nd = at.shape[0] - 1
    memo_at = np.full(1 << 16, -1, np.int64)
    memo_off = np.zeros(4 * MAX_RRS + 8, np.int64)
    memo_len = np.zeros(4 * MAX_RRS + 8, np.int64)
    memo_keys = np.zeros(4 * MAX_RRS + 8, np.int64)
    scr = np.empty(_SCR_CAP, np.uint8)
    ans = np.empty((_ANS_CAP, 5), np.int64)
    maxm = 1
    for s in range(ns):
        c = sstart[s + 1] - sstart[s]
        if c > maxm:
            maxm = c
    if maxm > _BULK_MAX_MESSAGES:
        maxm = _BULK_MAX_MESSAGES
    hdrs = np.empty((maxm, 12), np.int64)
    # per info (at most one per message)
    inf = np.empty((maxm, 20), np.int64)
    i_rtt = np.empty(maxm, np.float64)
    nxt = np.empty(maxm, np.int64)
    qhead = np.full((2, 1 << 16), -1, np.int64)
    qtail = np.full((2, 1 << 16), -1, np.int64)
    seen = np.zeros((2, 1 << 16), np.bool_)
    korder = np.empty((2, maxm), np.int64)
    done = np.empty(maxm, np.int64)
    # outputs (grown as needed)
    cap_r = max(16, nd)
    r_sess = np.empty(cap_r, np.int64)
    r_int = np.empty((cap_r, 16), np.int64)
    r_rtt = np.empty(cap_r, np.float64)
    r_ans0 = np.zeros(cap_r + 1, np.int64)
    cap_a = max(16, 2 * nd)
    ans_txt = np.empty((cap_a, 2), np.int64)
    ans_ttl = np.empty(cap_a, np.int64)
    cap_t = max(1024, 48 * nd)
    txt = np.empty(cap_t, np.uint8)
    nr = 0
    na_out = 0
    nt = 0
    for s in range(ns):
        d0, d1 = sstart[s], sstart[s + 1]
        nm = d1 - d0
        if nm > _BULK_MAX_MESSAGES or resp_p[s] == 137:
            continue
        good = True
        for d in range(d0, d1):
            if not ok[d] or ts[d] == _TS_NULL:
                good = False
                break
        if not good:
            continue
        # heads: the first datagram each way, as the detectors see it
        ho, hr = -1, -1
        for d in range(d0, d1):
            if orig[d]:
                if ho < 0:
                    ho = d
            elif hr < 0:
                hr = d
            if ho >= 0 and hr >= 0:
                break
        for h in (ho, hr):
            if h >= 0:
                hl = at[h + 1] - at[h]
                if hl > _HEAD:
                    good = False
                # a DTLS record start (the ssl analyzer runs first): leave it to the analyzers
                if hl >= 2 and buf[at[h]] == 22 and buf[at[h] + 1] == 0xFE:
                    good = False
        if not good:
            continue
        # decode every message
        sn = 0
        nans = 0
        for j in range(nm):
            d = d0 + j
            st, sn = _k_message(
                buf, at[d], at[d + 1] - at[d], memo_at, memo_off, memo_len, memo_keys,
                scr, sn, hdrs[j], ans, nans,
            )
            if st != _OK:
                good = False
                break
            nans += hdrs[j, 11]
        if not good:
            continue
        # detect(): the orig head, then the resp head
        hit = False
        for h in (ho, hr):
            if h < 0 or at[h + 1] == at[h]:
                continue
            hd = hdrs[h - d0]
            if not _k_plausible(hd):
                continue
            if dns_port[s]:
                hit = True
                break
            qr = (hd[1] >> 15) & 1
            qc = hd[9]
            if (
                hd[2] == 1
                and (qr == 1 or hd[11] == 0)
                and (qc == 1 or qc == 2 or qc == 3 or qc == 4 or qc == 254 or qc == 255)
            ):
                hit = True
                break
        if not hit:
            continue
        # pair queries and replies (parse())
        ni = 0
        nk0 = 0
        nk1 = 0
        nd_ = 0
        for j in range(nm):
            hd = hdrs[j]
            d = d0 + j
            mid = hd[0]
            fl = hd[1]
            qr = (fl >> 15) & 1
            mine = 1 if qr else 0
            other = 1 - mine
            if qhead[other, mid] >= 0:
                info = qhead[other, mid]
                qhead[other, mid] = nxt[info]
                if nxt[info] < 0:
                    qtail[other, mid] = -1
            else:
                info = ni
                ni += 1
                # ts, frame, foff, trans_id, q start, q end, qclass, qtype, rcode, aa, tc, rd, ra, z,
                # rejected, opcode, saw_query, saw_reply, answers from message, has rtt
                inf[info, 0] = ts[d]
                inf[info, 1] = frame[d]
                inf[info, 2] = poff[d]
                inf[info, 3] = mid
                inf[info, 4] = -1
                inf[info, 5] = -1
                inf[info, 6] = -1
                inf[info, 7] = -1
                inf[info, 8] = -1
                for f in range(9, 15):
                    inf[info, f] = 0
                inf[info, 15] = (fl >> 11) & 15
                inf[info, 16] = 0
                inf[info, 17] = 0
                inf[info, 18] = -1
                inf[info, 19] = 0
                i_rtt[info] = np.nan
                nxt[info] = -1
                if not seen[mine, mid]:
                    seen[mine, mid] = True
                    if mine == 0:
                        korder[0, nk0] = mid
                        nk0 += 1
                    else:
                        korder[1, nk1] = mid
                        nk1 += 1
                if qtail[mine, mid] >= 0:
                    nxt[qtail[mine, mid]] = info
                else:
                    qhead[mine, mid] = info
                qtail[mine, mid] = info
            if not qr:
                inf[info, 16] = 1
                inf[info, 11] = (fl >> 8) & 1  # rd
                inf[info, 10] = (fl >> 9) & 1  # tc
                inf[info, 13] = (fl >> 4) & 7  # z
                if hd[2] > 0:
                    inf[info, 4] = hd[6]
                    inf[info, 5] = hd[7]
                    inf[info, 7] = hd[8]
                    inf[info, 6] = hd[9]
            else:
                inf[info, 17] = 1
                if inf[info, 8] < 0:
                    inf[info, 8] = fl & 15
                if (fl & 15) != 0 and hd[2] == 0:
                    inf[info, 14] = 1
                if ((fl >> 11) & 15) == 0 and hd[11] > 0:
                    if inf[info, 4] < 0:
                        a0 = hd[10]
                        inf[info, 4] = ans[a0, 0]
                        inf[info, 5] = ans[a0, 1]
                    inf[info, 9] = (fl >> 10) & 1  # aa
                    inf[info, 12] = (fl >> 7) & 1  # ra
                    if inf[info, 19] == 0 and ts[d] > inf[info, 0]:
                        i_rtt[info] = (ts[d] - inf[info, 0]) / 1e9
                        inf[info, 19] = 1
                    inf[info, 18] = j
            if inf[info, 16] and inf[info, 17]:
                done[nd_] = info
                nd_ += 1
        # leftovers: queries by id in first-seen order, then replies
        for mine in range(2):
            nk = nk0 if mine == 0 else nk1
            for kk in range(nk):
                mid = korder[mine, kk]
                info = qhead[mine, mid]
                while info >= 0:
                    done[nd_] = info
                    nd_ += 1
                    info = nxt[info]
                qhead[mine, mid] = -1
                qtail[mine, mid] = -1
                seen[mine, mid] = False
        # emit
        if nr + nd_ > cap_r:
            cap_r = 2 * (nr + nd_)
            r_sess = _grow1(r_sess, cap_r)
            r_int = _grow2(r_int, cap_r)
            r_rtt = _grow1(r_rtt, cap_r)
            r_ans0 = _grow1(r_ans0, cap_r + 1)
        for x in range(nd_):
            info = done[x]
            r_sess[nr] = s
            for f in range(16):
                r_int[nr, f] = inf[info, f]
            r_rtt[nr] = i_rtt[info]
            # the query text moves from the scratch to the output
            qa, qb = inf[info, 4], inf[info, 5]
            need = qb - qa if qa >= 0 else 0
            if nt + need > cap_t:
                cap_t = 2 * (nt + need)
                txt = _grow1(txt, cap_t)
            if qa >= 0:
                for i in range(qa, qb):
                    txt[nt + i - qa] = scr[i]
                r_int[nr, 4] = nt
                r_int[nr, 5] = nt + qb - qa
                nt += qb - qa
            j = inf[info, 18]
            if j >= 0:
                hd = hdrs[j]
                a0, a1 = hd[10], hd[10] + hd[11]
                if na_out + (a1 - a0) > cap_a:
                    cap_a = 2 * (na_out + a1 - a0)
                    ans_txt = _grow2(ans_txt, cap_a)
                    ans_ttl = _grow1(ans_ttl, cap_a)
                for e in range(a0, a1):
                    ta, tb = ans[e, 2], ans[e, 3]
                    if tb <= ta:
                        continue  # an empty rendering is not listed
                    if nt + (tb - ta) > cap_t:
                        cap_t = 2 * (nt + tb - ta)
                        txt = _grow1(txt, cap_t)
                    for i in range(ta, tb):
                        txt[nt + i - ta] = scr[i]
                    ans_txt[na_out, 0] = nt
                    ans_txt[na_out, 1] = nt + tb - ta
                    ans_ttl[na_out] = ans[e, 4]
                    nt += tb - ta
                    na_out += 1
            r_ans0[nr + 1] = na_out
            nr += 1
        taken[s] = True
    return (
        taken,
        r_sess[:nr],
        r_int[:nr],
        r_rtt[:nr],
        r_ans0[: nr + 1],
        ans_txt[:na_out],
        ans_ttl[:na_out],
        txt[:nt],
    )


@njit(cache=True)
def _grow1(a: np.ndarray, n: int) -> np.ndarray:
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow2(a: np.ndarray, n: int) -> np.ndarray:
    b = np.empty((n, a.shape[1]), a.dtype)
    b[: a.shape[0]] = a
    return b


def bulk_ready() -> bool:
    """True when the bulk path gives what :func:`forensics.protocols.analyze` would.

    That holds while the UDP analyzers that run before DNS are only the DTLS
    detector (whose record starts :func:`bulk_udp` leaves to the analyzers) and
    DNS over UDP is this module's :func:`detect` and :func:`parse`.
    """
    from forensics.protocols import ANALYZERS

    try:
        from forensics.protocols import tls
    except ImportError:
        return False
    for a in ANALYZERS:
        if a.transport != "udp":
            continue
        if a.service == "dns":
            return a.detect is detect and a.parse is parse
        if a.detect is not tls.detect:
            return False
    return False


def _names(codes: np.ndarray, valid: np.ndarray, table: dict[int, str], fmt: str) -> pa.Array:
    """``table.get(code, fmt.format(code))`` per row (NULL where not valid)."""
    uniq, inv = np.unique(codes, return_inverse=True)
    dic = pa.array([table.get(int(c), fmt.format(int(c))) for c in uniq.tolist()], pa.string())
    return pc.take(dic, pa.array(inv.reshape(-1), pa.int64(), mask=~valid))


def _strings(txt: pa.Buffer, spans: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Strings cut from one UTF-8 buffer by (start, end) spans (NULL where not valid)."""
    n = spans.shape[0]
    lens = spans[:, 1] - spans[:, 0] if n else np.zeros(0, np.int64)
    if valid is not None:
        lens = np.where(valid, lens, 0)
    if lens.sum() >= 1 << 31:
        raise OverflowError("DNS text past 2 GiB in one batch")
    offs = np.zeros(n + 1, np.int32)
    np.cumsum(lens, out=offs[1:])
    # gather the pieces into one contiguous value buffer
    data = np.frombuffer(txt, np.uint8)
    if n:
        idx = np.repeat(spans[:, 0] - offs[:-1], lens) + np.arange(int(offs[-1]))
        vals = data[idx]
    else:
        vals = np.zeros(0, np.uint8)
    validity = None
    nulls = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = int(n - valid.sum())
    return pa.StringArray.from_buffers(n, pa.py_buffer(offs), pa.py_buffer(vals), validity, nulls)


def bulk_table(res: tuple, conn: dict[str, Any], evidence_id: str) -> tuple[pa.Table, np.ndarray]:
    """The ``dns`` rows of :func:`bulk_udp`'s result, as :func:`parse` would emit them.

    Args:
        res: what :func:`bulk_udp` returned.
        conn: per session of the batch (as passed to it): ``uid``, ``orig_h``,
            ``orig_p``, ``resp_h``, ``resp_p`` (Arrow arrays).
        evidence_id: the evidence.

    Returns:
        The rows (conforming to the ``dns`` table) and, per session, where its rows
        start (CSR, len = sessions + 1).
    """
    taken, r_sess, r_int, r_rtt, r_ans0, ans_txt, ans_ttl, txt = res
    n = r_sess.shape[0]
    ns = taken.shape[0]
    row0 = np.zeros(ns + 1, np.int64)
    np.cumsum(np.bincount(r_sess, minlength=ns), out=row0[1:])
    tbuf = pa.py_buffer(txt)
    sess = pa.array(r_sess, pa.int64())
    from forensics.tables import TABLES

    cols: dict[str, Any] = {}
    # to the nearest microsecond, as Zeek prints times (sessions with no capture time are not taken)
    ts_type = TABLES["dns"].arrow_schema().field("ts").type
    cols["ts"] = pa.array((r_int[:, 0] + 500) // 1000, pa.int64()).cast(ts_type)
    for c in ("uid", "orig_h", "orig_p", "resp_h", "resp_p"):
        cols[c] = conn[c].take(sess)
    cols["proto"] = pa.array(np.full(n, "udp", object), pa.string()) if n else pa.array([], pa.string())
    cols["trans_id"] = pa.array(r_int[:, 3], pa.int32())
    cols["rtt"] = pa.array(r_rtt, pa.float64(), from_pandas=True)
    qv = r_int[:, 4] >= 0
    cols["query"] = _strings(tbuf, r_int[:, 4:6], qv)
    for name, i, table, fmt in (
        ("qclass", 6, CLASSES, "unknown-{}"),
        ("qtype", 7, QTYPES, "query-{}"),
        ("rcode", 8, RCODES, "rcode-{}"),
    ):
        v = r_int[:, i] >= 0
        cols[name] = pa.array(r_int[:, i], pa.int32(), mask=~v)
        cols[f"{name}_name"] = _names(r_int[:, i], v, table, fmt)
    for name, i in (("aa", 9), ("tc", 10), ("rd", 11), ("ra", 12)):
        cols[name] = pa.array(r_int[:, i] != 0, pa.bool_())
    cols["z"] = pa.array(r_int[:, 13], pa.int32())
    cnt = np.diff(r_ans0)
    has = cnt > 0
    lo = pa.array(r_ans0.astype(np.int32), pa.int32())
    mask = pa.array(~has, pa.bool_())
    cols["answers"] = pa.ListArray.from_arrays(lo, _strings(tbuf, ans_txt), mask=mask)
    ttls = pc.cast(pa.array(ans_ttl, pa.int64()), pa.string())
    cols["ttls"] = pa.ListArray.from_arrays(lo, ttls, mask=mask)
    cols["rejected"] = pa.array(r_int[:, 14] != 0, pa.bool_())
    cols["opcode"] = pa.array(r_int[:, 15], pa.int32())
    cols["opcode_name"] = _names(r_int[:, 15], np.ones(n, bool), OPCODES, "opcode-{}")
    cols["source"] = pa.array(np.full(n, "pcap", object), pa.string()) if n else pa.array([], pa.string())
    cols["evidence_id"] = (
        pa.array(np.full(n, evidence_id, object), pa.string()) if n else pa.array([], pa.string())
    )
    cols["record_offset"] = pa.array(r_int[:, 2], pa.int64())
    cols["record_id"] = pa.array(r_int[:, 1], pa.int64())
    return TABLES["dns"].conform(pa.table(cols)), row0
