"""DNS (RFC 1035) over UDP and TCP, NetBIOS name service, mDNS and LLMNR, as Zeek's dns.log.

Messages are paired per transaction id as Zeek does: a query waits for its
reply (and the other way round); a pair is one row, and whatever is still
waiting when the session ends is a row of its own. Only answer-section records
fill ``answers``/``ttls`` (Zeek's defaults skip authority and additional
records), each rendered as Zeek renders it (``TXT <len> <text>``, ``RRSIG
<type> <signer>``, ...). Name decompression is bounded (RFC 1035 §4.1.4
pointers may loop in hostile input): a loop or an overlong name is a warning,
not a hang.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections import deque
from dataclasses import dataclass, field

from forensics.protocols import register
from forensics.protocols._base import Session

__all__ = ["DnsError", "Message", "detect", "parse", "parse_message"]

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
