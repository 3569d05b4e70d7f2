"""MIME for the carvers: header blocks, file names (RFC 2231, RFC 2047), multipart leaves, body decoding.

Multipart bodies (RFC 2046 §5.1) are walked in place over a buffer (a
memory-mapped stored file), so a large upload or message is never copied
whole: delimiters are found with ``find``, each leaf part is a ``(start,
end)`` range, and its content is decoded (base64, quoted-printable) a window
at a time. As RFC 2046 says, the line break before a delimiter belongs to
the delimiter, not to the part. Nesting and the number of parts are capped.
"""

from __future__ import annotations

import binascii
import contextlib
import email
import email.errors
import email.header
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Part", "decode_body", "file_name", "header", "leaves", "param", "parse_headers", "split_head"]

MAX_HEAD = 64 * 1024  # bytes of one header block read
_WINDOW = 1 << 20
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NOT_B64 = bytes(b for b in range(256) if b not in _B64)
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))""", re.I)

Buffer = Any  # bytes, bytearray, memoryview or mmap: has find() and slicing


@dataclass
class Part:
    """One leaf part of a MIME body.

    Attributes:
        index: position among the leaves (0-based, depth-first).
        depth: multipart nesting level (0 for a part of the outermost multipart).
        headers: the part's header fields, names upper-case.
        start: buffer offset of its content.
        end: buffer offset one past it.
    """

    index: int
    depth: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    start: int = 0
    end: int = 0


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def parse_headers(raw: bytes) -> list[tuple[str, str]]:
    """Header fields of a block (RFC 5322 §2.2: unfolded), names upper-case, values stripped."""
    out: list[tuple[str, str]] = []
    for ln in raw[:MAX_HEAD].split(b"\n"):
        ln = ln.rstrip(b"\r")
        if ln[:1] in (b" ", b"\t") and out:
            k, v = out[-1]
            out[-1] = (k, v + " " + _text(ln.strip()))
            continue
        name, sep, value = ln.partition(b":")
        if sep and name.strip() and b" " not in name.strip():
            out.append((_text(name.strip()).upper(), _text(value.strip())))
    return out


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The last value of a header (name upper-case), or None."""
    for k, v in reversed(headers):
        if k == name:
            return v
    return None


def param(value: str | None, name: str) -> str | None:
    """A parameter of a structured header value (``boundary`` of Content-Type, ...)."""
    if not value:
        return None
    if name == "boundary":
        m = _BOUNDARY.search(value)
        return (m.group(1) or m.group(2)) if m else None
    m = re.search(rf"""(?:^|;)\s*{re.escape(name)}\s*=\s*(?:"([^"]*)"|([^\s;]*))""", value, re.I)
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else None


def split_head(buf: Buffer, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the content) of an entity in ``buf[start:end]``.

    An entity that starts with a blank line has no headers; one without a blank
    line within :data:`MAX_HEAD` bytes is all content.
    """
    lim = min(end, start + MAX_HEAD)
    if buf[start:start + 2] == b"\r\n":
        return start, start + 2
    if buf[start:start + 1] == b"\n":
        return start, start + 1
    a = buf.find(b"\r\n\r\n", start, lim)
    b = buf.find(b"\n\n", start, lim)
    cands = [(a, a + 4)] if a >= 0 else []
    if b >= 0:
        cands.append((b, b + 2))
    if not cands:
        return start, start
    return min(cands)


def file_name(headers: list[tuple[str, str]]) -> str | bytes | None:
    """The file name a part (or an HTTP message) gives: Content-Disposition, then Content-Type ``name``.

    RFC 2231 parameters (``filename*=utf-8''...``, continuations ``filename*0*``)
    and RFC 2047 encoded words (``=?utf-8?B?...?=``) are decoded. The result is
    data for display, never a path.
    """
    wanted = [(k, v) for k, v in headers
              if k == "CONTENT-DISPOSITION" or (k == "CONTENT-TYPE" and "name" in v.lower())]
    if not wanted:  # the common case, without the cost of the email parser
        return None
    block = "".join(f"{k}: {v}\r\n" for k, v in wanted)
    msg = email.message_from_bytes(block.encode("utf-8", "surrogateescape") + b"\r\n",
                                   policy=email.policy.compat32)
    try:
        name = msg.get_filename()
    except (ValueError, LookupError, TypeError):
        name = None
    if name is None:
        return None
    if "=?" in name:
        with contextlib.suppress(ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
            name = str(email.header.make_header(email.header.decode_header(name)))
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in name):  # undecodable bytes: give the exact bytes
        return name.encode("utf-8", "surrogateescape")
    return name


def _delims(buf: Buffer, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(line start, offset after the delimiter line, is the close delimiter) of each delimiter."""
    dash = b"--" + boundary
    pos = start
    while pos < end:
        if pos == start and buf[pos:pos + len(dash)] == dash:
            i = pos
        else:
            j = buf.find(b"\n" + dash, pos, end)
            if j < 0:
                return
            i = j + 1
        after = i + len(dash)
        tail = buf[after:after + 2]
        if tail[:1] not in (b"-", b"\r", b"\n", b" ", b"\t", b""):
            pos = after  # a longer boundary that starts like this one
            continue
        close = tail == b"--"
        nl = buf.find(b"\n", after, min(end, after + 1024))
        nxt = end if nl < 0 else nl + 1
        yield i, nxt, close
        if close:
            return
        pos = nxt


def _line_start(buf: Buffer, i: int, floor: int) -> int:
    """Where the content before a delimiter at ``i`` ends: its CRLF (or LF) belongs to the delimiter."""
    if i - 1 >= floor and buf[i - 1:i] == b"\n":
        i -= 1
        if i - 1 >= floor and buf[i - 1:i] == b"\r":
            i -= 1
    return i


def leaves(buf: Buffer, start: int, end: int, ctype: str | None, *, max_depth: int, max_parts: int,
           warn: Callable[[str, str, int], None], _depth: int = 0,
           _count: list[int] | None = None) -> Iterator[Part]:
    """Leaf parts of a multipart body in ``buf[start:end]``, depth first.

    Args:
        buf: the bytes (or a memory map).
        start: offset of the body.
        end: one past it.
        ctype: the body's Content-Type.
        max_depth: nesting levels followed; a deeper multipart is one leaf.
        max_parts: leaves given at most.
        warn: ``warn(code, message, offset)`` for caps and malformed bodies.
    """
    count = _count if _count is not None else [0]
    boundary = param(ctype, "boundary")
    if not boundary:
        warn("mime_no_boundary", f"multipart body without a boundary ({(ctype or '')[:60]!r})", start)
        return
    bnd = boundary.encode("latin-1", "replace")
    prev: int | None = None
    closed = False
    for line, nxt, close in _delims(buf, start, end, bnd):
        if prev is not None:
            yield from _part(buf, prev, _line_start(buf, line, prev), max_depth, max_parts, warn, _depth,
                             count)
            if count[0] >= max_parts:
                return
        prev, closed = nxt, close
        if close:
            break
    if prev is None:
        warn("mime_no_delimiter", f"multipart body without its boundary {boundary[:60]!r}", start)
        return
    if not closed:
        if prev < end:
            yield from _part(buf, prev, end, max_depth, max_parts, warn, _depth, count)
        warn("mime_unterminated", "multipart body ends without its close delimiter", start)


def _part(buf: Buffer, start: int, end: int, max_depth: int, max_parts: int,
          warn: Callable[[str, str, int], None], depth: int, count: list[int]) -> Iterator[Part]:
    if count[0] >= max_parts:
        if count[0] == max_parts:
            count[0] += 1
            warn("mime_part_cap", f"more than {max_parts} MIME parts; the rest are not carved", start)
        return
    he, bs = split_head(buf, start, end)
    headers = parse_headers(bytes(buf[start:he])) if he > start else []
    ctype = header(headers, "CONTENT-TYPE") or ""
    if ctype.lower().startswith("multipart/"):
        if depth + 1 < max_depth:
            yield from leaves(buf, bs, end, ctype, max_depth=max_depth, max_parts=max_parts, warn=warn,
                              _depth=depth + 1, _count=count)
            return
        warn("mime_depth_cap", f"MIME nesting deeper than {max_depth} levels: kept as one part", start)
    count[0] += 1
    yield Part(count[0] - 1, depth, headers, bs, end)


def decode_body(buf: Buffer, start: int, end: int, cte: str | None) -> Iterator[bytes]:
    """A part's content with its Content-Transfer-Encoding undone, a window at a time.

    base64 ignores characters outside its alphabet (line breaks, stray bytes);
    quoted-printable is decoded line by line; anything else is given as is.
    """
    enc = (cte or "").strip().lower()
    pos = start
    if enc == "base64":
        carry = b""
        while pos < end:
            raw = bytes(buf[pos:min(end, pos + _WINDOW)])
            pos += len(raw)
            data = carry + raw.translate(None, _NOT_B64)
            k = len(data) // 4 * 4
            carry = data[k:]
            if k:
                yield _b64(data[:k])
        if carry:
            yield _b64(carry + b"=" * (-len(carry) % 4))
    elif enc == "quoted-printable":
        while pos < end:
            stop = min(end, pos + _WINDOW)
            if stop < end:
                nl = buf.rfind(b"\n", pos, stop)
                stop = nl + 1 if nl > pos else stop
            yield binascii.a2b_qp(bytes(buf[pos:stop]))
            pos = stop
    else:
        while pos < end:
            stop = min(end, pos + _WINDOW)
            yield bytes(buf[pos:stop])
            pos = stop


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        # padding inside the data (two encodings glued together): decode 4 at a time
        out = bytearray()
        for i in range(0, len(data) - 3, 4):
            try:
                out += binascii.a2b_base64(data[i:i + 4])
            except binascii.Error:
                continue
        return bytes(out)
