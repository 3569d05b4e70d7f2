"""SMTP (RFC 5321, RFC 3030 BDAT, RFC 3207 STARTTLS), as Zeek's smtp.log plus attachment names.

Client commands and server replies are replayed in capture order with Zeek's
rules: a transaction is written when the server acknowledges the end of its
data (or when a new MAIL FROM arrives unacknowledged, or at the end), only if
the client did something (MAIL, RCPT, STARTTLS); header fields come from the
message's top-level headers (RFC 5322 unfolding, values as sent); the
Received path starts with the responder and originator. Message content is
read for its MIME structure (part types and attachment file names) up to
:data:`MAX_MIME` bytes. After STARTTLS the rest of the session is handed to
the TLS parser.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from forensics.protocols import register, tls
from forensics.protocols._base import Reader, Session

__all__ = ["MAX_MIME", "detect", "parse"]

MAX_MIME = 16 << 20  # message bytes read for MIME structure
MAX_LINES = 200_000
_CLIENT_FIRST = (b"EHLO", b"HELO", b"LHLO")
_EMAIL = re.compile(r"(?<![^\s<>\"',;:@])[^\s<>\"',;:@]+@[^\s<>\"',;:@]+")  # a run from its start only
_IP = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A client greeting (EHLO/HELO/LHLO), or a server banner naming SMTP when the client is unseen."""
    first = orig.split(b"\n", 1)[0].strip()[:4].upper()
    if first in _CLIENT_FIRST:
        return True
    banner = resp.split(b"\n", 1)[0].upper()
    return banner[:3] == b"220" and b"SMTP" in banner and not orig


@dataclass
class _Info:
    trans_depth: int
    helo: str | None
    path: list[str]
    ts: int | None = None
    frame: int | None = None
    foff: int | None = None
    f: dict[str, Any] = field(default_factory=dict)
    rcptto: list[str] = field(default_factory=list)
    activity: bool = False


def _lines(r: Reader) -> list[tuple[int, int, bytes]]:
    """(start, end, line without its end) for every line of a direction."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < r.end and len(out) < MAX_LINES:
        ln = r.line(pos, 1 << 16)
        if ln is None:
            out.append((pos, r.end, r.get(pos, 1 << 16).rstrip(b"\r\n")))
            break
        out.append((pos, ln[1], ln[0]))
        pos = ln[1]
    return out


def _headers(raw: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for ln in raw.split(b"\n"):
        ln = ln.rstrip(b"\r")
        if ln[:1] in (b" ", b"\t") and out:
            k, v = out[-1]
            out[-1] = (k, v + ln.decode("utf-8", "backslashreplace"))
            continue
        name, sep, value = ln.partition(b":")
        if sep and name.strip() and b" " not in name.strip():
            out.append(
                (name.strip().decode("latin-1").upper(), value.strip().decode("utf-8", "backslashreplace"))
            )
    return out


def _split_addrs(v: str) -> list[str]:
    """Comma-separated addresses, commas inside quotes or angle brackets kept (Zeek's split)."""
    parts, cur, quote, angle = [], "", False, 0
    for ch in v:
        if ch == '"':
            quote = not quote
        elif ch == "<":
            angle += 1
        elif ch == ">":
            angle = max(0, angle - 1)
        if ch == "," and not quote and not angle:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def _mime(data: bytes, ctype: str, depth: int = 0) -> list[tuple[str | None, str | None, int]]:
    """(content type, file name, bytes) of each leaf part of a MIME body (RFC 2046 §5.1)."""
    m = re.search(r'boundary="?([^";\s]+)"?', ctype, re.I)
    if not ctype.lower().startswith("multipart/") or not m or depth > 5:
        return []
    out = []
    for part in data.split(b"--" + m.group(1).encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, _sep, body = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        hs = dict(_headers(head))
        ct = hs.get("CONTENT-TYPE", "text/plain")
        if ct.lower().startswith("multipart/"):
            out.extend(_mime(body, ct, depth + 1))
            continue
        name = None
        for hv in (hs.get("CONTENT-DISPOSITION", ""), ct):
            fm = re.search(r"""(?:file)?name\*?=(?:[\w-]*'[\w-]*')?"?([^";]+)"?""", hv, re.I)
            if fm:
                name = fm.group(1).strip()
                break
        out.append((ct.split(";")[0].strip().lower() or None, name, len(body)))
    return out


@register("smtp", "tcp", detect, order=65)
def parse(s: Session) -> None:
    """Emit ``smtp`` rows (one per transaction, Zeek's rules) and hand STARTTLS to TLS."""
    ro, rr = Reader(s.orig), Reader(s.resp)
    events: list[tuple[tuple[int, int, int], str, Any]] = []
    cl = _lines(ro)
    i = 0
    while i < len(cl):
        start, end, line = cl[i]
        i += 1
        verb, _, arg = line.decode("utf-8", "backslashreplace").strip().partition(" ")
        verb = verb.upper()
        key = (s.orig.ts_at(start) or 0, s.orig.frame_at(start) or 0, 0)
        events.append((key, "cmd", (verb, arg.strip(), start, end)))
        if verb == "DATA":
            j = i
            while j < len(cl) and cl[j][2] != b".":
                j += 1
            body_start = cl[i][0] if i < len(cl) else end
            body_end = cl[j][0] if j < len(cl) else ro.end
            events.append(
                (
                    (
                        s.orig.ts_at(max(body_end - 1, body_start)) or 0,
                        s.orig.frame_at(max(body_end - 1, body_start)) or 0,
                        1,
                    ),
                    "data",
                    (body_start, body_end, True, False),
                )
            )
            i = j + 1
        elif verb == "BDAT":
            size_txt, _, last = arg.strip().partition(" ")
            n = int(size_txt) if size_txt.isdigit() else 0
            events.append(((key[0], key[1], 1), "data", (end, end + n, last.strip().upper() == "LAST", True)))
            while i < len(cl) and cl[i][0] < end + n:  # skip the chunk's bytes
                i += 1
            if i < len(cl) and cl[i][0] != end + n:
                cl.insert(i, (end + n, cl[i][1], ro.get(end + n, cl[i][1] - end - n).rstrip(b"\r\n")))
        elif verb == "STARTTLS":
            break
    for start, _end, line in _lines(rr):
        m = re.match(rb"(\d{3})([ -]?)(.*)", line)
        if not m:
            continue
        key = (s.resp.ts_at(start) or 0, s.resp.frame_at(start) or 0, 2)
        events.append(
            (
                key,
                "reply",
                (
                    int(m.group(1)),
                    m.group(2) != b"-",
                    m.group(3).decode("utf-8", "backslashreplace").strip(),
                    _end,
                ),
            )
        )
    events.sort(key=lambda e: e[0])
    _replay(s, ro, events)


def _replay(s: Session, ro: Reader, events: list) -> None:
    i = s.info
    transferred = 0
    helo: str | None = None
    pending: list[str] = ["<init>"]
    cur = _Info(1, None, [i["resp_h"], i["orig_h"]])
    tls_at: tuple[int, int] | None = None

    def flush() -> None:
        nonlocal cur
        if cur.activity:
            _write(s, cur)
            cur = _Info(transferred + 1, helo, [i["resp_h"], i["orig_h"]])

    for key, kind, ev in events:
        if cur.ts is None and kind == "cmd":
            cur.ts, cur.frame, cur.foff = key[0], key[1], s.orig.file_offset_at(ev[2])
        if kind == "cmd":
            verb, arg, start, end = ev
            pending.append(verb)
            if verb in ("HELO", "EHLO", "LHLO"):
                helo = cur.helo = arg
            elif verb == "RCPT" and arg[:3].upper() == "TO:":
                for a in _EMAIL.findall(arg):
                    a = a.replace("ORCPT=rfc822;", "")
                    if a not in cur.rcptto:
                        cur.rcptto.append(a)
                cur.activity = True
            elif verb == "MAIL" and arg[:5].upper() == "FROM:":
                flush()
                found = _EMAIL.findall(arg)
                if found:
                    cur.f["mailfrom"] = found[0]
                cur.activity = True
            elif verb == "STARTTLS":
                tls_at = (end, -1)
        elif kind == "data":
            start, end, last, bdat = ev
            _message(s, ro, cur, start, end)
            if last and bdat and "BDAT" in pending:  # RFC 3030: the reply to BDAT LAST ends the message
                pending[len(pending) - 1 - pending[::-1].index("BDAT")] = "."
            elif last and not bdat:
                pending.append(".")
        else:
            code, final, msg, rend = ev
            cur.f["last_reply"] = f"{code} {msg}"
            if not final:
                continue
            cmd = pending.pop(0) if pending else None
            if cmd == "STARTTLS" and code == 220 and tls_at is not None:
                cur.f["tls"] = True
                cur.activity = True
                tls_at = (tls_at[0], rend)
                break
            if cmd == ".":
                transferred += 1
                flush()
                cur = _Info(transferred + 1, helo, [i["resp_h"], i["orig_h"]])
    if cur.activity:
        _write(s, cur)
    if tls_at is not None and tls_at[1] >= 0:
        if "ssl" not in s.services:
            s.services.append("ssl")
        tls.parse_from(s, tls_at[0], tls_at[1])


def _message(s: Session, ro: Reader, cur: _Info, start: int, end: int) -> None:
    data = ro.get(start, min(end - start, MAX_MIME))
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    hs = _headers(head)
    f = cur.f
    for name, value in hs:
        if name == "MESSAGE-ID":
            f["msg_id"] = value
        elif name == "RECEIVED":
            if "first_received" in f:
                f["second_received"] = f["first_received"]
            f["first_received"] = value
            ips = _IP.findall(value)
            ip = ips[1] if len(ips) > 1 else (ips[0] if ips else None)
            if ip and cur.path[-1] != ip:
                cur.path.append(ip)
        elif name == "IN-REPLY-TO":
            f["in_reply_to"] = value
        elif name == "SUBJECT":
            f["subject"] = value
        elif name == "FROM":
            f["from"] = value
        elif name == "REPLY-TO":
            f["reply_to"] = value
        elif name == "DATE":
            f["date"] = value
        elif name in ("TO", "CC"):
            lst = f.setdefault(name.lower(), [])
            lst.extend(a for a in _split_addrs(value) if a not in lst)
        elif name == "X-ORIGINATING-IP":
            ips = _IP.findall(value)
            if ips:
                f["x_originating_ip"] = ips[0]
        elif name in ("X-MAILER", "USER-AGENT", "X-USER-AGENT"):
            f["user_agent"] = value
    ctype = dict(hs).get("CONTENT-TYPE", "text/plain")
    parts = _mime(body, ctype) or [(ctype.split(";")[0].strip().lower(), None, len(body))]
    f["body_len"] = f.get("body_len", 0) + (end - start)
    f.setdefault("parts", []).extend(parts)


def _write(s: Session, cur: _Info) -> None:
    f = cur.f
    parts = f.pop("parts", [])
    fuids = [
        "F" + hashlib.sha1(f"{s.uid}:{cur.trans_depth}:{k}".encode(), usedforsecurity=False).hexdigest()[:17]
        for k in range(len(parts))
    ]
    s.emit(
        "smtp",
        ts=cur.ts,
        frame=cur.frame,
        file_offset=cur.foff,
        trans_depth=cur.trans_depth,
        helo=cur.helo,
        rcptto=cur.rcptto or None,
        path=cur.path,
        tls=f.pop("tls", False),
        fuids=fuids,
        filenames=[p[1] for p in parts if p[1]] or None,
        mime_types=[p[0] for p in parts if p[0]] or None,
        **f,
    )
