"""Regular expressions on attacker-chosen bytes and text: same matches as before, and no
backtracking that grows faster than the input.

Found by auditing every pattern of the package against adversarial inputs: runs of blanks
in an HTTP request line (the time grew with the cube of the run: 46 s for 4,000 spaces), a
MAIL FROM of 64 KiB without an @ (7 s), a PASV reply of digits, RDP cookies one after
another; and in logs and feeds, command lines that repeat a tool's name (1.4-3 s per 64 KiB
line) and IOC lines with long blank or letter runs. The rewrites (possessive and atomic
groups, a run matched from its start only) keep every match; those checks are here, on
ordinary and on long inputs.
"""

from __future__ import annotations

import random
import re

from _fresh import fresh_python

from forensics import _carve_http, _iocfeeds, _lateral_obs, _lateral_rules
from forensics.protocols import ftp, http, rdp, smtp

# The patterns as they were, the reference for what must still match.
OLD_REQ = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,32})[ \t]+(\S*)[ \t]*(?:HTTP/(\d+(?:\.\d+)?))?[ \t]*$")
OLD_REQ_LINE = re.compile(
    rb"(?:^|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}[ \t]+\S*[ \t]*(?:HTTP/\d(?:\.\d)?)?\r?\n")
OLD_EMAIL = re.compile(r"[^\s<>\"',;:@]+@[^\s<>\"',;:@]+")
OLD_PASV = re.compile(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")
OLD_COOKIE = re.compile(rb"Cookie: mstshash=([^\r\n]*)\r\n")

RNG = random.Random(21)


def _mix(parts: list, n: int) -> list:
    return [parts[0][:0].join(RNG.choice(parts) for _ in range(RNG.randrange(0, 16))) for _ in range(n)]


def _same(a: re.Match | None, b: re.Match | None) -> bool:
    return (a is None) == (b is None) and (a is None or (a.span(), a.groups()) == (b.span(), b.groups()))


def test_request_line_patterns_match_as_before():
    parts = [b" ", b"\t", b"GET", b"HTTP/", b"1", b".", b"1.1", b"a", b"/x", b"\r", b"\n", b"H", b"-"]
    lines = [*_mix(parts, 20000), b"GET / HTTP/1.1", b"POST  /a?b   HTTP/1.0  ", b"GET" + b" " * 3000 + b"/"]
    assert all(_same(OLD_REQ.match(x), http._REQ.match(x)) for x in lines)
    new_line = _carve_http._REQ_LINE
    for x in lines:
        assert [m.span() for m in OLD_REQ_LINE.finditer(x)] == [m.span() for m in new_line.finditer(x)]


def test_address_pasv_and_cookie_patterns_match_as_before():
    addr = ["a", "b", "@", " ", "<", ">", '"', "'", ",", ";", ":", ".", "ORCPT=rfc822;"]
    for x in [*_mix(addr, 20000), "<a@b.example> SIZE=1", "a" * 5000 + "@" + "b" * 10]:
        assert OLD_EMAIL.findall(x) == smtp._EMAIL.findall(x)
    digits = ["1", ",", "2", " ", "(", "300"]
    for x in [*_mix(digits, 20000), "Entering Passive Mode (10,0,0,21,117,49)", "1" * 3000 + ",2,3,4,5,6"]:
        assert _same(OLD_PASV.search(x), ftp._PASV.search(x))
    assert ftp._pasv(227, "Entering Passive Mode (10,0,0,21,117,49)", "h") == ("10.0.0.21", 117 * 256 + 49)
    cookie = [b"Cookie: mstshash=", b"\r", b"\n", b"\r\n", b"a", b"Cookie", b" "]
    for x in [*_mix(cookie, 20000), b"Cookie: mstshash=admin\r\n", b"Cookie: mstshash=" * 500 + b"\r\n"]:
        a, b = OLD_COOKIE.search(x), rdp._COOKIE.search(x)
        assert (a is None) == (b is None) and (a is None or (a.group(1), a.end()) == (b.group(1), b.end()))


def test_hostile_request_lines_are_read_at_once():
    """20,000 blanks in a request line: the old patterns would take hours (cubic). Run apart,
    so that a regression fails instead of hanging the suite."""
    code = (
        "from forensics import _carve_http\n"
        "from forensics.protocols import http\n"
        "line = b'GET' + b' ' * 20000 + b'a b'\n"
        "print(http._REQ.match(line) is None, len(list(_carve_http._REQ_LINE.finditer(b'\\n' + line))))\n"
    )
    stdout = fresh_python(code, timeout=120)
    assert stdout.split() == ["True", "0"]


# As they were (forensics/_lateral_rules.py, forensics/_iocfeeds.py before the rewrite).
OLD_SOURCE = [
    r"\bwmic(?:\.exe)?\b.*?/node:\s*\"?([^\s\"/]+)",
    r"\bpsexec(?:64)?(?:\.exe)?\b.*?\\\\([^\s\\]+)",
    r"\bsc(?:\.exe)?\s+\\\\([^\s\\]+)\s+create\b",
    r"\bsc(?:\.exe)?\s+\\\\([^\s\\]+)",
    r"\bschtasks(?:\.exe)?\b.*?/s\s+\"?([^\s\"]+)",
    r"\bat(?:\.exe)?\s+\\\\([^\s\\]+)",
    r"\bmstsc(?:\.exe)?\b.*?/v:\s*\"?([^\s\":]+)",
    r"\bwinrs(?:\.exe)?\b.*?-r(?:emote)?:\s*\"?(?:https?://)?([^\s\":/]+)",
    r"(?:Enter-PSSession|Invoke-Command|New-PSSession)\b.*?-ComputerName\s+\"?([^\s\";,]+)",
    r"\bssh(?:\.exe)?\s+(?:-\S+\s+)*(?:[^\s@]+@)?([A-Za-z0-9][\w.-]*)\s*$",
]
OLD_DUMP = re.compile(r"comsvcs(\.dll)?[\s,]+#?(minidump|24)|procdump.*lsass|sekurlsa|lsass\.dmp|"
                      r"nanodump|lsassy|mimikatz|out-minidump", re.I)


def test_command_line_patterns_match_as_before():
    words = ["wmic ", "wmic.exe", "/node:", '"', "x", " ", "\n", "psexec", "64", ".exe", "\\\\", "\\",
             "schtasks", "/s ", "mstsc", "/v:", "winrs", "-r:", "-remote:", "http://", "Invoke-Command",
             "Enter-PSSession", "-ComputerName ", ";", ",", "/", ":", "a", "-", "sc ", "at ", "create",
             "ssh "]
    lines = [*_mix(words, 30000), "wmic " * 3000 + "/node:h",
             "c:\\x\\wmic.exe process call /node:\"dc01\" get"]
    old = [(re.compile(p, re.I), tech) for p, (_new, tech) in zip(OLD_SOURCE, _lateral_rules.SOURCE_COMMANDS,
                                                                    strict=True)]

    def before(line: str) -> tuple[str, str] | None:
        for pat, tech in old:
            if m := pat.search(line):
                return tech, m.group(1)
        return None

    assert all(before(x) == _lateral_rules.source_command(x) for x in lines)
    dump = ["procdump", "lsass", "\n", " ", "comsvcs", ".dll", ",", "#", "minidump", "24", "x", "sekurlsa",
            "mimikatz"]
    for x in [*_mix(dump, 30000), "procdump " * 5000 + "lsass"]:
        assert (OLD_DUMP.search(x) is None) == (_lateral_rules.CREDENTIAL_DUMP.search(x) is None)


def test_ioc_feed_patterns_match_as_before():
    old_split = re.compile(r"\s+#|\s+//")
    old_cmp = re.compile(_iocfeeds._COMPARISON.pattern.replace("(?<![a-z0-9-])", "", 1), re.I)
    for x in [*_mix(["a", " ", "\t", "#", "/", "//", "x"], 30000), "a" + " " * 5000 + "b"]:
        old = old_split.split(x.strip(), maxsplit=1)[0].strip()
        new = _iocfeeds._COMMENT.split(x.strip(), maxsplit=1)[0].strip()
        assert old == new
    parts = ["a", "b", "-", ":", "file", ":hashes.md5", " ", "=", "IN", "'x'", "'", "\\", "(", ")", "LIKE",
             "[", "]", "A", "9"]
    for x in [*_mix(parts, 30000), "a" * 5000, "a:" + "b" * 5000]:
        assert [(m.span(), m.groups()) for m in old_cmp.finditer(x)] == \
               [(m.span(), m.groups()) for m in _iocfeeds._COMPARISON.finditer(x)]


def test_share_at_the_end_of_an_object_name_as_before():
    """The share pattern on Windows share events, searched on the one line a match can end
    on; an object name of 11,000 shares and a newline took it 2 s before."""
    old = re.compile(r"\\(admin\$|ipc\$|[a-z]\$)(?:\\+(.*))?$", re.I)
    parts = ["\\\\", "c$", "C$", "ipc$", "ADMIN$", "\n", "x", " ", "dir", "$", "a"]
    for x in [*_mix(parts, 40000), "\\\\dc01\\C$\\Windows\\Temp\n", "x\n\\\\h\\ADMIN$"]:
        a, b = old.search(x), _lateral_obs._SHARE_TAIL.search(_lateral_obs._last_line(x))
        assert (a is None) == (b is None) and (a is None or a.groups() == b.groups()), repr(x)
    assert _lateral_obs._SHARE_TAIL.search(_lateral_obs._last_line("\\\\c$" * 11000 + "\nx")) is None
