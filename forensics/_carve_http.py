"""HTTP carving: every message body, both ways, as the file it carries.

The HTTP parser located each body in its stream (``http_bodies``); here the
bytes are read back, the chunked framing (RFC 9112 §7.1) taken off and the
content coding (gzip, x-gzip, deflate with or without its zlib header; RFC
9110 §8.4) undone with an output cap against decompression bombs. A body
that will not decode, or decodes past the cap, is also kept as sent. A
multipart body (form uploads, RFC 7578; ``multipart/mixed``) is kept whole
(what tshark exports) and each leaf part becomes a file of its own with the
body as its parent (what Zeek extracts). A ``206 Partial Content`` piece
(``Content-Range``, or the parts of a ``multipart/byteranges`` body) is kept
as it came, and the pieces of one resource are put together at their
offsets into one file, the holes named as missing ranges. A body is named
by its Content-Disposition, or else (as Suricata and tshark do) by the last
segment of the request's path.
"""

from __future__ import annotations

import mmap
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from forensics import _carve_mime as mime
from forensics._carve_base import Missing, Sink, read_ranges
from forensics.reassembly.stream import Direction, SessionData

__all__ = ["RangePiece", "assemble_ranges", "carve_session"]

_MAX_HEAD = 64 * 1024
# (possessive runs of blanks: see forensics.protocols.http._REQ)
_REQ_LINE = re.compile(
    rb"(?:^|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}[ \t]++\S*[ \t]*+(?:HTTP/\d(?:\.\d)?)?\r?\n")
_STATUS_LINE = re.compile(rb"(?:^|\n)HTTP/\d(?:\.\d)?[ \t]+\d{3}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d{1,18})\s*-\s*(\d{1,18})\s*/\s*(\d{1,18}|\*)", re.I)
_GZIP = ("gzip", "x-gzip")
_CODINGS = (*_GZIP, "deflate", "identity", "")


@dataclass
class RangePiece:
    """One piece of a resource fetched in ranges, as stored (kept until all sessions are carved).

    Attributes:
        start: offset of the piece in the resource.
        length: its bytes.
        path: the stored file holding it.
        offset: where the piece starts in that file.
        uid: session it came in.
        ts_ns: time of its first byte.
        name: claimed name of the resource.
        total: resource size from ``Content-Range`` (None for ``*``).
        missing: never-captured ranges inside the piece (piece offsets).
    """

    start: int
    length: int
    path: Path
    offset: int
    uid: str
    ts_ns: int | None
    name: str | bytes | None
    total: int | None
    missing: tuple[tuple[int, int], ...] = ()


@dataclass
class _Decode:
    """What decoding a body did."""

    consumed: int = 0
    produced: int = 0
    error: str | None = None
    capped: bool = False


@dataclass
class _Body:
    """One ``http_bodies`` row with what the carver adds."""

    row: dict[str, Any]
    d: Direction
    headers: list[tuple[str, str]] = field(default_factory=list)
    fuids: list[str] = field(default_factory=list)


def _head(d: Direction, body_start: int, is_orig: bool) -> list[tuple[str, str]]:
    """The header fields of the message whose body starts at ``body_start`` (read back, not re-parsed).

    The start line is the last one before the body: the message's own head lies
    between the previous body and this one.
    """
    lo = max(0, body_start - _MAX_HEAD)
    raw = d.read(lo, body_start, fill=b"\0")
    pat = _REQ_LINE if is_orig else _STATUS_LINE
    last = None
    for m in pat.finditer(raw):
        last = m
    if last is None:
        return []
    start = last.start() + (1 if raw[last.start():last.start() + 1] == b"\n" else 0)
    block = raw[start:]
    line_end = block.find(b"\n")
    return mime.parse_headers(block[line_end + 1:]) if line_end >= 0 else []


def _chunk_ranges(d: Direction, start: int, stop: int, sink: Sink,
                  uid: str) -> tuple[list[tuple[int, int]], bool]:
    """Data ranges ``(stream offset, length)`` of a chunked body, and whether its last chunk came."""
    out: list[tuple[int, int]] = []
    pos = start
    cap = sink.limits.max_pieces
    while pos < stop:
        line = d.read(pos, min(stop, pos + 1024), fill=b"\0")
        nl = line.find(b"\n")
        if nl < 0:
            return out, False
        size_txt = line[:nl].split(b";", 1)[0].strip()
        try:
            size = int(size_txt, 16)
        except ValueError:
            sink.warn(uid, "carve_bad_chunk", f"bad chunk size line {line[:nl][:40]!r}: body cut here",
                      d=d, offset=pos)
            return out, False
        pos += nl + 1
        if size == 0:
            return out, True
        out.append((pos, max(0, min(size, stop - pos))))
        if len(out) >= cap:
            sink.warn(uid, "carve_piece_cap", f"more than {cap} chunks: body cut here", d=d, offset=pos)
            return out, False
        pos += size
        tail = d.read(pos, min(stop, pos + 2), fill=b"\0")
        pos += 2 if tail == b"\r\n" else 1 if tail[:1] == b"\n" else 0
    return out, False


def _inflate(chunks: Iterable[bytes], coding: str, sink: Sink, st: _Decode) -> Iterator[bytes]:
    """Content decoding of a body, capped (decompression bombs) and stopping at the first error."""
    lim = sink.limits
    d: Any = None
    for data in chunks:
        st.consumed += len(data)
        while data:
            if d is None:
                if coding in _GZIP:
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:  # deflate: a zlib stream (RFC 1950), or raw deflate as many servers send
                    zlib_hdr = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
                    d = zlib.decompressobj(zlib.MAX_WBITS if zlib_hdr else -zlib.MAX_WBITS)
            try:
                out = d.decompress(data, 1 << 20)
            except zlib.error as exc:
                st.error = str(exc)
                return
            st.produced += len(out)
            if st.produced > lim.max_decoded or (
                    st.produced > (1 << 20) and st.produced > lim.max_ratio * max(1, st.consumed)):
                st.capped = True
                yield out[: max(0, len(out) - (st.produced - lim.max_decoded))] if (
                    st.produced > lim.max_decoded) else out
                return
            if out:
                yield out
            data = d.unconsumed_tail
            if d.eof:
                rest = d.unused_data
                d = None
                # gzip members may follow one another (RFC 1952 §2.2); anything else is trailing junk
                data = rest if coding in _GZIP and rest[:2] == b"\x1f\x8b" else b""


def _name_from_uri(uri: str | None) -> str | None:
    if not uri:
        return None
    path = urlsplit(uri).path if "://" in uri else uri.split("?", 1)[0]
    last = path.rsplit("/", 1)[-1]
    return unquote_to_bytes(last).decode("utf-8", "backslashreplace") or None


def _ts(d: Direction, start: int, end: int) -> tuple[int | None, int | None]:
    return d.ts_at(start), d.ts_at(max(start, end - 1))


def carve_session(sink: Sink, uid: str, sd: SessionData, bodies: list[dict[str, Any]],
                  http: dict[int, dict[str, Any]], pieces: dict[tuple, list[RangePiece]]
                  ) -> dict[tuple[int, bool], list[str]]:
    """Carve the bodies of one session.

    Args:
        sink: where files go.
        uid: the session.
        sd: its reassembled directions.
        bodies: its ``http_bodies`` rows.
        http: its ``http`` rows by ``trans_depth``.
        pieces: range pieces found, by resource (filled in).

    Returns:
        File ids per ``(trans_depth, is_orig)``, for ``http.orig_fuids``/``resp_fuids``.
    """
    fuids: dict[tuple[int, bool], list[str]] = {}
    for row in sorted(bodies, key=lambda r: (not r["is_orig"], r["stream_start"])):
        if sink.full(uid):
            break
        d = sd.orig if row["is_orig"] else sd.resp
        b = _Body(row, d, _head(d, int(row["stream_start"]), bool(row["is_orig"])))
        _carve_body(sink, uid, b, http.get(int(row["trans_depth"] or 0), {}), pieces)
        fuids.setdefault((int(row["trans_depth"] or 0), bool(row["is_orig"])), []).extend(b.fuids)
    return fuids


def _carve_body(sink: Sink, uid: str, b: _Body, tx: dict[str, Any],
                pieces: dict[tuple, list[RangePiece]]) -> None:
    row, d = b.row, b.d
    is_orig = bool(row["is_orig"])
    start, stop = int(row["stream_start"]), int(row["stream_end"])
    depth = int(row["trans_depth"] or 0)
    te = (row.get("transfer_encoding") or "").lower()
    chunked = "chunked" in te
    ranges, ended = _chunk_ranges(d, start, stop, sink, uid) if chunked else ([(start, stop - start)], False)
    wire = sum(n for _, n in ranges)
    if not wire:
        return
    codings = [c.strip() for c in (row.get("content_encoding") or "").lower().split(",") if c.strip()]
    coding = codings[-1] if codings else ""
    name = mime.file_name(b.headers)
    if name is None:  # as Suricata and tshark name it: the last segment of the request's path
        name = _name_from_uri(tx.get("uri"))
    ts_ns, end_ns = _ts(d, start, stop)
    common: dict[str, Any] = {
        "uid": uid, "protocol": "http", "claimed_name": name,
        "direction": "upload" if is_orig else "download", "is_orig": is_orig, "depth": depth,
        "ts_ns": ts_ns, "end_ns": end_ns,
        "record_offset": row.get("record_offset"), "record_id": row.get("record_id"),
        "source_row": ("http_bodies", {"uid": uid, "trans_depth": depth, "is_orig": is_orig}),
    }
    if coding not in _CODINGS:
        sink.warn(uid, "carve_unknown_encoding", f"Content-Encoding {coding!r} not decoded: body kept "
                  "as sent", d=d, offset=start, severity="info")
    missing = Missing()
    cl = row.get("content_length")
    if coding in ("", "identity") or coding not in _CODINGS:
        # the size the sender announced: Content-Length, or the chunks up to the last (0) chunk
        expected = (int(cl) if cl is not None and not chunked else wire if chunked and ended else None)
        rec = sink.store(read_ranges(d, ranges, missing), key=("body", is_orig, depth, start),
                         expected_size=expected, missing=missing, **common)
        b.fuids.append(rec.fuid)
        _after(sink, uid, b, rec, common, pieces, tx)
        return
    st = _Decode()
    rec = sink.store(_inflate(read_ranges(d, ranges, missing), coding, sink, st),
                     key=("body", is_orig, depth, start), missing=missing, placed=False, **common)
    b.fuids.append(rec.fuid)
    if st.capped:
        sink.warn(uid, "carve_decompression_cap", f"{coding} body of {wire} bytes decodes past "
                  f"{st.produced} bytes (limit {sink.limits.max_decoded}, ratio {sink.limits.max_ratio}): "
                  f"decoding stopped, file {rec.fuid} flagged truncated (decompression bomb?)",
                  d=d, offset=start)
        sink.rows[rec.fuid][0].update(extracted_cutoff=True, state="TRUNCATED")
        sink.rows[rec.fuid][1].update(truncated=True, complete=False)
    if st.error:
        sink.warn(uid, "carve_bad_encoding", f"{coding} body does not decode after {st.produced} bytes "
                  f"({st.error}); the body is also kept as sent", d=d, offset=start, severity="info")
    if st.error or st.capped:
        raw_missing = Missing()
        raw = sink.store(read_ranges(d, ranges, raw_missing), key=("raw", is_orig, depth, start),
                         missing=raw_missing, **common)
        b.fuids.append(raw.fuid)
    if not st.capped:
        _after(sink, uid, b, rec, common, pieces, tx)


def _after(sink: Sink, uid: str, b: _Body, rec: Any, common: dict[str, Any],
           pieces: dict[tuple, list[RangePiece]], tx: dict[str, Any]) -> None:
    """Multipart parts and range pieces of a stored body."""
    ctype = mime.header(b.headers, "CONTENT-TYPE") or b.row.get("content_type") or ""
    crange = mime.header(b.headers, "CONTENT-RANGE")
    key = (tx.get("host"), tx.get("uri"), mime.header(b.headers, "ETAG") or
           mime.header(b.headers, "LAST-MODIFIED"))
    if crange and not b.row["is_orig"]:
        m = _CONTENT_RANGE.match(crange.strip())
        if m and int(m.group(2)) >= int(m.group(1)):
            total = None if m.group(3) == "*" else int(m.group(3))
            n = min(rec.size, int(m.group(2)) - int(m.group(1)) + 1)
            pieces.setdefault((*key, total), []).append(RangePiece(
                int(m.group(1)), n, rec.path, 0, uid, common["ts_ns"], common["claimed_name"], total,
                _within(rec.missing_ranges, 0, n)))
    if not ctype.lower().startswith("multipart/") or rec.size == 0:
        return
    byteranges = ctype.lower().startswith("multipart/byteranges")
    lim = sink.limits
    with rec.path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:

        def warn(code: str, message: str, offset: int) -> None:
            sink.warn(uid, f"carve_{code}", f"body {rec.fuid} at byte {offset}: {message}")

        for part in mime.leaves(buf, 0, rec.size, ctype, max_depth=lim.mime_depth, max_parts=lim.mime_parts,
                                warn=warn):
            if part.end <= part.start:
                continue
            pr = mime.header(part.headers, "CONTENT-RANGE")
            m = _CONTENT_RANGE.match(pr.strip()) if pr else None
            if byteranges and m:  # a fragment of the resource, not a file: assembled below
                total = None if m.group(3) == "*" else int(m.group(3))
                pieces.setdefault((*key, total), []).append(RangePiece(
                    int(m.group(1)), part.end - part.start, rec.path, part.start, uid, common["ts_ns"],
                    common["claimed_name"], total, _within(rec.missing_ranges, part.start, part.end)))
                continue
            if sink.full(uid):
                return
            cte = mime.header(part.headers, "CONTENT-TRANSFER-ENCODING")
            child = sink.store(mime.decode_body(buf, part.start, part.end, cte),
                               key=("part", b.row["is_orig"], common["depth"], rec.fuid, part.index),
                               parent_fuid=rec.fuid,
                               **{**common, "claimed_name": mime.file_name(part.headers),
                                  "source_row": None})
            b.fuids.append(child.fuid)


def _within(ranges: tuple[tuple[int, int], ...], start: int, end: int) -> tuple[tuple[int, int], ...]:
    """The parts of ``ranges`` inside ``[start, end)``, relative to ``start``."""
    return tuple((max(a, start) - start, min(b, end) - start) for a, b in ranges if a < end and b > start)


def _piece_chunks(ps: list[RangePiece], sink: Sink, missing: Missing, uid: str) -> Iterator[bytes]:
    pos, fill = 0, 0
    for p in ps:
        if p.start + p.length <= pos:
            continue
        if p.start > pos:
            hole = p.start - pos
            fill += hole
            if fill > sink.limits.max_fill:
                sink.warn(uid, "carve_fill_cap", f"range pieces leave more than {sink.limits.max_fill} "
                          f"bytes unseen; the assembled file stops at byte {pos}")
                missing.add(pos, pos + hole)
                return
            missing.add(pos, p.start)
            while hole:
                k = min(hole, 1 << 20)
                yield bytes(k)
                hole -= k
            pos = p.start
        skip = pos - p.start
        for a, b in p.missing:
            missing.add(p.start + max(a, skip), p.start + b)
        with p.path.open("rb") as fh:
            fh.seek(p.offset + skip)
            left = p.length - skip
            while left > 0:
                data = fh.read(min(left, 1 << 20))
                if not data:
                    break
                yield data
                left -= len(data)
                pos += len(data)


def assemble_ranges(sink: Sink, pieces: dict[tuple, list[RangePiece]]) -> None:
    """Put the range pieces of each resource together into one file (first copy of a byte wins)."""
    for key, ps in sorted(pieces.items(), key=lambda kv: repr(kv[0])):
        ps.sort(key=lambda p: (p.start, p.ts_ns or 0))
        total = ps[0].total
        if len(ps) == 1 and ps[0].start == 0 and total is not None and ps[0].length >= total:
            continue  # one piece holding the whole resource: it is stored already
        if len(ps) > sink.limits.max_pieces:
            sink.warn(ps[0].uid, "carve_piece_cap", f"more than {sink.limits.max_pieces} range pieces of "
                      f"{key[1]!r}: only the first are assembled")
            ps = ps[: sink.limits.max_pieces]
        if ps[0].start > sink.limits.max_fill:
            sink.warn(ps[0].uid, "carve_fill_cap", f"first range piece of {key[1]!r} starts at byte "
                      f"{ps[0].start}, past the fill limit: pieces kept, not assembled", severity="info")
            continue
        missing = Missing()
        first = min(ps, key=lambda p: p.ts_ns or 0)
        sink.store(_piece_chunks(ps, sink, missing, first.uid), uid=first.uid, protocol="http",
                   key=("ranges", repr(key)), claimed_name=first.name, direction="download", is_orig=False,
                   ts_ns=first.ts_ns, end_ns=max(p.ts_ns or 0 for p in ps) or None, expected_size=total,
                   missing=missing)
