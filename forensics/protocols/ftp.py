"""FTP control sessions (RFC 959, RFC 2428), as Zeek's ftp.log, with data channels tied back.

Every command is a row with the reply that completed it (Zeek logs only
``FTP::logged_commands``; a responder wants all of them, so the table holds
every command). As in Zeek, file commands get an ``ftp://`` URL built from the
working directory, PASV/EPSV replies and PORT/EPRT commands carry the expected
data channel, and a 150 reply gives ``file_size``. After all sessions are
parsed the data channel is found among the sessions (responder address and
port, originator, not before the command): its uid goes into ``data_uid``, its
service becomes ``ftp-data``, and the transfer command gets the content's MIME
type.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forensics.protocols import _mime, register
from forensics.protocols._base import Reader, Session

if TYPE_CHECKING:
    from forensics.apps import Linker

__all__ = ["detect", "parse"]

MAX_COMMANDS = 100_000
MAX_LINE = 8192
_FIRST = {b"USER", b"AUTH", b"FEAT", b"SYST", b"OPTS", b"PASS", b"ACCT", b"HOST", b"CLNT", b"XMKD", b"PWD"}
_FILE_CMDS = {
    "APPE",
    "CWD",
    "DELE",
    "MKD",
    "RETR",
    "RMD",
    "RNFR",
    "RNTO",
    "STOR",
    "STOU",
    "REST",
    "SIZE",
    "MDTM",
}
_TRANSFER = {"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"}


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """An FTP greeting and a login-phase command (or a greeting naming FTP when the client is unseen)."""
    first = orig.split(b"\n", 1)[0].strip().split(b" ", 1)[0].upper()
    greet = resp[:3] in (b"220", b"120") and resp[3:4] in (b" ", b"-")
    if first in _FIRST and (greet or not resp):
        return True
    return greet and not orig and b"FTP" in resp.split(b"\n", 1)[0].upper()


@dataclass
class _Cmd:
    cmd: str
    arg: str
    ts: int | None
    frame: int | None
    foff: int | None
    replies: list[tuple[int, str]] = field(default_factory=list)


def _lines(s: Session, is_orig: bool) -> list[tuple[int, str]]:
    r = Reader(s.direction(is_orig))
    out: list[tuple[int, str]] = []
    pos = 0
    while pos < r.end and len(out) < MAX_COMMANDS:
        ln = r.line(pos, MAX_LINE)
        if ln is None:
            rest = r.get(pos, MAX_LINE)
            if rest.strip():
                out.append((pos, rest.rstrip(b"\r\n").decode("utf-8", "backslashreplace")))
            break
        out.append((pos, ln[0].decode("utf-8", "backslashreplace")))
        pos = ln[1]
    return out


def _replies(s: Session) -> list[tuple[int, bool, str]]:
    """(code, final, text) per reply line (RFC 959 §4.2); lines without a code get code 0."""
    out = []
    for _pos, line in _lines(s, False):
        m = re.match(r"(\d{3})([ -]|$)(.*)", line)
        if m:
            out.append((int(m.group(1)), m.group(2) != "-", m.group(3).strip()))
        else:
            out.append((0, False, line.strip()))
    return out


def compress_path(p: str) -> str:
    """Zeek's ``compress_path``: ``x/..`` dropped, runs of ``/`` and ``/.`` folded, no trailing slash."""
    prev = None
    while prev != p:
        prev = p
        p = re.sub(r"(?:^|/)[^/]+/+\.\.(?:/+|$)", "/", p, count=1)
    p = re.sub(r"(?:/\.?){2,}", "/", p)
    if len(p) > 1 and p.endswith("/"):
        p = p[:-1]
    return p


def _url(resp_h: str, cwd: str, arg: str) -> str:
    path = compress_path(arg if arg.startswith("/") else f"{cwd}/{arg}")
    if not path.startswith("/"):
        path = "/" + path
    host = f"[{resp_h}]" if ":" in resp_h else resp_h
    return f"ftp://{host}{path}"


# From a number's first digit (else a long run of digits is tried again from each of them).
_PASV = re.compile(r"(?<!\d)(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")


def _pasv(code: int, msg: str, resp_h: str) -> tuple[str, int] | None:
    if code == 227:
        m = _PASV.search(msg)
        if m:
            n = [int(x) for x in m.groups()]
            return ".".join(map(str, n[:4])), n[4] * 256 + n[5]
    elif code == 229:
        m = re.search(r"\((.)\1\1(\d+)\1\)", msg)
        if m:
            return resp_h, int(m.group(2))
    return None


def _port(cmd: str, arg: str) -> tuple[str, int] | None:
    if cmd == "PORT":
        m = re.fullmatch(r"\s*(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\s*", arg)
        if m:
            n = [int(x) for x in m.groups()]
            return ".".join(map(str, n[:4])), n[4] * 256 + n[5]
    elif cmd == "EPRT" and len(arg) > 2:
        parts = arg.split(arg[0])
        if len(parts) >= 4 and parts[3].isdigit():
            return parts[2], int(parts[3])
    return None


def _fuid(uid: str, sid: int) -> str:
    return "F" + hashlib.sha1(f"{uid}:{sid}".encode(), usedforsecurity=False).hexdigest()[:17]


@register("ftp", "tcp", detect, order=70)
def parse(s: Session) -> None:
    """Emit one ``ftp`` row per command, with its final reply."""
    cmds: list[_Cmd] = []
    d = s.orig
    for pos, line in _lines(s, True):
        verb, _, arg = line.strip().partition(" ")
        if not verb:
            continue
        if not re.fullmatch(r"[A-Za-z]{3,5}", verb):
            s.warn(
                "ftp_bad_command",
                f"not an FTP command: {line[:40]!r}",
                is_orig=True,
                offset=pos,
                severity="info",
            )
            continue
        cmds.append(_Cmd(verb.upper(), arg.strip(), d.ts_at(pos), d.frame_at(pos), d.file_offset_at(pos)))
    # Replies answer commands in order; the greeting answers a pseudo-command (Zeek's "<init>").
    pending = [_Cmd("<init>", "", None, None, None), *cmds]
    k = 0
    for code, final, msg in _replies(s):
        if k >= len(pending):
            break
        if code:  # Zeek skips continuation lines that carry no code
            pending[k].replies.append((code, msg))
        if code >= 200 and final:
            k += 1
    _emit(s, cmds)


def _emit(s: Session, cmds: list[_Cmd]) -> None:
    i = s.info
    user: str | None = "<unknown>"
    password: str | None = None
    cwd = "."
    channel: dict[str, Any] | None = None
    linker: Linker | None = s.out.linker
    for c in cmds:
        code, msg = c.replies[-1] if c.replies else (None, None)
        if c.cmd == "USER":
            user = c.arg
        elif c.cmd == "PASS":
            password = c.arg
        row: dict[str, Any] = {
            "user": user,
            "password": password,
            "command": c.cmd,
            "arg": (_url(i["resp_h"], cwd, c.arg) if c.cmd in _FILE_CMDS else c.arg) or None,
            "reply_code": code,
            "reply_msg": msg,
        }
        for rc, rmsg in c.replies:
            if (rc == 150 and c.cmd == "RETR") or (rc == 213 and c.cmd == "SIZE"):
                nums = re.findall(r"\d+", rmsg)
                if nums:
                    row["file_size"] = int(nums[-1])
            if rc in (227, 229) and c.cmd in ("PASV", "EPSV") and (hp := _pasv(rc, rmsg, i["resp_h"])):
                channel = {"passive": True, "orig_h": i["orig_h"], "resp_h": hp[0], "resp_p": hp[1]}
                row.update(
                    data_channel_passive=True,
                    data_channel_orig_h=i["orig_h"],
                    data_channel_resp_h=hp[0],
                    data_channel_resp_p=hp[1],
                )
            if c.cmd == "CWD" and rc == 250 and "cwd_done" not in row:
                row["cwd_done"] = True
                cwd = compress_path(c.arg if c.arg.startswith("/") else f"{cwd}/{c.arg}")
            elif c.cmd == "CDUP" and rc in (200, 250) and "cwd_done" not in row:
                row["cwd_done"] = True
                cwd = compress_path(f"{cwd}/..")
            elif c.cmd in ("PWD", "XPWD") and rc == 257 and (m := re.search(r'"(.*?)"', rmsg)):
                cwd = m.group(1)
        row.pop("cwd_done", None)
        if c.cmd in ("PORT", "EPRT") and (hp := _port(c.cmd, c.arg)):
            channel = {"passive": False, "orig_h": i["resp_h"], "resp_h": hp[0], "resp_p": hp[1]}
            row.update(
                data_channel_passive=False,
                data_channel_orig_h=i["resp_h"],
                data_channel_resp_h=hp[0],
                data_channel_resp_p=hp[1],
            )
        out = s.emit("ftp", ts=c.ts, frame=c.frame, file_offset=c.foff, **row)
        if (
            channel is not None
            and linker is not None
            and (c.cmd in _TRANSFER or "data_channel_resp_p" in row)
        ):
            chan = channel
            if c.cmd in _TRANSFER:
                channel = None
            linker.later(_later(s.uid, chan, [out], c.ts or 0, c.cmd))


def _later(
    uid: str, chan: dict[str, Any], rows: list[dict[str, Any]], after: int, cmd: str
) -> Callable[[Linker], None]:
    def run(lk: Linker) -> None:
        _link(lk, uid, chan, rows, after, cmd)

    return run


def _link(
    lk: Linker, uid: str, chan: dict[str, Any], rows: list[dict[str, Any]], after: int, cmd: str
) -> None:
    sid = lk.find(chan["orig_h"], chan["resp_h"], chan["resp_p"], after)
    if sid is None:
        return
    lk.add_service(sid, "ftp-data")
    for r in rows:
        r["data_uid"] = lk.uid(sid)
        if cmd in ("RETR", "STOR", "STOU", "APPE"):
            head, size = lk.first_bytes(sid)
            if size:
                r["fuid"] = _fuid(uid, sid)
                r["mime_type"] = _mime.sniff(head)
                if r.get("file_size") is None:
                    r["file_size"] = size
