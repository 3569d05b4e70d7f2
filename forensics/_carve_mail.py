"""SMTP carving: each message sent (RFC 5321 DATA, RFC 3030 BDAT) and the files inside it.

The client's side of the session is walked command by command; the content
of DATA runs to the ``<CRLF>.<CRLF>`` that ends it and has its dot-stuffing
undone (RFC 5321 §4.5.2), BDAT chunks are taken by their byte counts, and
nothing after STARTTLS is read (it is TLS). Each message is stored whole (an
``.eml``, what tshark exports) and then walked as MIME over the stored copy:
every leaf part, base64 or quoted-printable decoded, becomes a file whose
parent is the message (what Zeek extracts), named from Content-Disposition
or Content-Type (RFC 2231 and RFC 2047 names decoded). Nesting and part
counts are capped.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

from forensics import _carve_mime as mime
from forensics._carve_base import WINDOW, Missing, Sink, read_ranges
from forensics.filestore import FileRecord
from forensics.reassembly.stream import Direction, SessionData

__all__ = ["carve_session"]

MAX_MESSAGES = 10_000
_MAX_LINE = 8192
_END = b"\r\n.\r\n"


def _find_end(d: Direction, start: int, stop: int) -> int:
    """Offset of the ``<CRLF>.<CRLF>`` ending a message whose content starts at ``start`` (-1: none)."""
    pos = max(0, start - 2)  # the CRLF of the DATA line: an empty message ends right away
    while pos < stop:
        data = d.read(pos, min(stop, pos + WINDOW), fill=b"\0")
        i = data.find(_END)
        if i >= 0:
            return pos + i
        if pos + len(data) >= stop:
            return -1
        pos += len(data) - len(_END) + 1
    return -1


def _unstuffed(d: Direction, start: int, end: int, limit: int) -> Iterator[bytes]:
    """Message content ``[start, end)`` with leading dots of lines removed, a window at a time."""
    pos, carry, line_start, given = start, b"", True, 0
    while pos < end or carry:
        data = carry + d.read(pos, min(end, pos + WINDOW), fill=b"\0") if pos < end else carry
        pos = min(end, pos + WINDOW)
        nl = data.rfind(b"\n")
        if pos < end and nl >= 0:
            data, carry = data[:nl + 1], data[nl + 1:]
        else:
            carry = b""
        if line_start and data[:1] == b".":
            data = data[1:]
        data = data.replace(b"\n.", b"\n")
        line_start = data[-1:] == b"\n"
        if given + len(data) > limit:
            yield data[:limit - given]
            return
        given += len(data)
        yield data


def _accepted(resp: Direction) -> int | None:
    """How many ``354`` replies (go ahead with DATA) the server sent; None when its side is missing."""
    end = int(resp.end[-1]) if resp.end.size else 0
    if not end:
        return None
    n, pos = 0, 0
    while pos < end:
        data = resp.read(pos, min(end, pos + WINDOW), fill=b"\0")
        n += data.count(b"\n354") + (pos == 0 and data.startswith(b"354"))
        pos += len(data) - 3 if pos + len(data) < end else len(data)
    return n


def _commands(d: Direction, sink: Sink, uid: str, go: int | None) -> Iterator[tuple[str, int, int, bool]]:
    """(kind, content start, content end, complete) of each message: ``data`` or a ``bdat`` chunk.

    A DATA that the server did not answer with 354 (``go`` counts those; None when the
    server's side was not captured) carries no message unless its end is found.
    """
    end = int(d.end[-1]) if d.end.size else 0
    pos, count, datas = 0, 0, 0
    while pos < end and count < MAX_MESSAGES:
        line = d.read(pos, min(end, pos + _MAX_LINE), fill=b"\0")
        nl = line.find(b"\n")
        if nl < 0:
            return
        words = line[:nl].strip().split()
        verb = words[0].upper() if words else b""
        pos += nl + 1
        if verb == b"DATA":
            stop = _find_end(d, pos, end)
            count += 1
            datas += 1
            if stop < 0 and go is not None and datas > go:
                sink.warn(uid, "carve_smtp_refused", "DATA without 354 from the server and without an end: "
                          "no message", d=d, offset=pos, severity="info")
                continue
            if stop < 0:
                sink.warn(uid, "carve_smtp_unterminated", "DATA without its final <CRLF>.<CRLF>: the message "
                          "is kept as far as it was captured", d=d, offset=pos)
                yield "data", pos, end, False
                return
            yield "data", pos, stop + 2, True  # the CRLF before the dot ends the last line
            pos = stop + len(_END)
        elif verb == b"BDAT" and len(words) >= 2 and words[1].isdigit():
            n = int(words[1])
            last = len(words) > 2 and words[2].upper() == b"LAST"
            yield ("bdat_last" if last else "bdat"), pos, pos + n, pos + n <= end
            count += 1
            pos += n
        elif verb == b"STARTTLS":
            return  # the rest is TLS


def _gaps(d: Direction, start: int, end: int, at: int, missing: Missing) -> None:
    """Never-captured bytes of ``[start, end)`` (placed at message offset ``at``; dots not counted)."""
    for gs, ge in (d.gaps.tolist() if d.gaps.size else []):
        if gs < end and ge > start:
            missing.add(at + max(gs, start) - start, at + min(ge, end) - start)
    cap = int(d.end[-1]) if d.end.size else 0
    if end > cap:
        missing.add(at + max(cap, start) - start, at + end - start)


def carve_session(sink: Sink, uid: str, sd: SessionData, smtp_rows: list[dict[str, Any]]) -> None:
    """Carve the messages of one SMTP session and the files they carry.

    Args:
        sink: where files go.
        uid: the session.
        sd: its reassembled directions.
        smtp_rows: its ``smtp`` rows, for their part file ids (``smtp.fuids``).
    """
    d = sd.orig
    rows = sorted((r for r in smtp_rows if r.get("body_len")), key=lambda r: r.get("trans_depth") or 0)
    pending: list[tuple[int, int]] = []
    n = 0
    for kind, start, end, _complete in _commands(d, sink, uid, _accepted(sd.resp)):
        if kind == "bdat":
            pending.append((start, end))
            continue
        ranges = [*pending, (start, end)] if kind == "bdat_last" else [(start, end)]
        pending = []
        row = rows[n] if n < len(rows) else {}
        if sink.full(uid):
            return
        _message(sink, uid, d, ranges, kind == "data", n, row)
        n += 1
    if pending:  # BDAT chunks without LAST: kept as an incomplete message
        _message(sink, uid, d, pending, False, n, rows[n] if n < len(rows) else {})


def _message(sink: Sink, uid: str, d: Direction, ranges: list[tuple[int, int]], stuffed: bool,
             n: int, row: dict[str, Any]) -> None:
    """Store one message (DATA content or BDAT chunks), then its MIME leaves.

    A DATA message cut by the end of the capture has no known size: it is kept
    with ``complete`` unknown (the warning says where it stops); BDAT announces
    its sizes, so bytes it lacks are missing.
    """
    lim = sink.limits
    missing = Missing()
    base = 0
    for s, e in ranges:
        _gaps(d, s, e, base, missing)
        base += e - s

    def chunks() -> Iterator[bytes]:
        given = 0
        for s, e in ranges:
            if stuffed:
                for c in _unstuffed(d, s, e, lim.max_message - given):
                    given += len(c)
                    yield c
            else:
                for c in read_ranges(d, [(s, min(e - s, lim.max_message - given))]):
                    given += len(c)
                    yield c
            if given >= lim.max_message:
                sink.warn(uid, "carve_message_cap", f"message longer than {lim.max_message} bytes: cut",
                          d=d, offset=s)
                return

    start = ranges[0][0]
    ts, end_ns = d.ts_at(start), d.ts_at(max(start, ranges[-1][1] - 1))
    common: dict[str, Any] = {"uid": uid, "protocol": "smtp", "direction": "upload", "is_orig": True,
                              "record_offset": d.file_offset_at(start), "record_id": d.frame_at(start),
                              "ts_ns": ts, "end_ns": end_ns}
    msg = sink.store(chunks(), key=("message", n, start), missing=missing, mime_type="message/rfc822",
                     depth=n + 1, source_row=("smtp", {"uid": uid, "trans_depth": row.get("trans_depth")})
                     if row else None, expected_size=None if stuffed else base, **common)
    _explode(sink, uid, msg, n, start, list(row.get("fuids") or []), common, 0)


def _explode(sink: Sink, uid: str, msg: FileRecord, n: int, start: int, fuids: list[str],
             common: dict[str, Any], level: int) -> None:
    """Store the MIME leaves of a stored message; an attached message (message/rfc822) is opened too.

    ``fuids`` are the SMTP parser's file ids of the leaves (``smtp.fuids``), used when
    the parser saw as many leaves as here, so that ``files`` joins ``smtp`` as in Zeek.
    """
    lim = sink.limits
    if msg.size == 0:
        return
    with msg.path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        he, bs = mime.split_head(buf, 0, msg.size)
        top = mime.parse_headers(bytes(buf[:he]))
        ctype = mime.header(top, "CONTENT-TYPE") or "text/plain"

        def warn(code: str, message: str, offset: int) -> None:
            sink.warn(uid, f"carve_{code}", f"message {msg.fuid} at byte {offset}: {message}")

        if ctype.lower().startswith("multipart/"):
            parts = list(mime.leaves(buf, bs, msg.size, ctype, max_depth=lim.mime_depth - level,
                                     max_parts=lim.mime_parts, warn=warn))
        else:
            parts = [mime.Part(0, 0, top, bs, msg.size)]
        use_theirs = len(fuids) == len(parts)
        for part in parts:
            if part.end <= part.start or sink.full(uid):
                continue
            cte = mime.header(part.headers, "CONTENT-TRANSFER-ENCODING")
            leaf = sink.store(mime.decode_body(buf, part.start, part.end, cte),
                              key=("part", n, start, msg.fuid, part.index),
                              fuid=fuids[part.index] if use_theirs else None, parent_fuid=msg.fuid,
                              claimed_name=mime.file_name(part.headers), depth=n + 1, **common)
            ptype = (mime.header(part.headers, "CONTENT-TYPE") or "").lower()
            if ptype.startswith("message/rfc822") and part.depth + level + 2 < lim.mime_depth:
                _explode(sink, uid, leaf, n, start, [], common, level + part.depth + 2)
