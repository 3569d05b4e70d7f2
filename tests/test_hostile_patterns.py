"""Regular expressions on attacker-chosen bytes: same matches as before, and no backtracking
that grows faster than the input.

Found by auditing every pattern of the package against adversarial inputs: runs of blanks
in an HTTP request line (the time grew with the cube of the run: 46 s for 4,000 spaces), a
MAIL FROM of 64 KiB without an @ (7 s), a PASV reply of digits, RDP cookies one after
another. The rewrites (possessive and atomic groups, a run matched from its start only)
keep every match; those checks are here, on ordinary and on long inputs.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys

from forensics import _carve_http
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"]
