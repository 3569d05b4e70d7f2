"""HTTP/1.x (RFC 9112): request/response pairs, bodies located and decoded with a cap.

Each direction is parsed as a sequence of messages (pipelining included);
responses are paired with requests in order, a 1xx response giving the next
final response's ``info_code``. Bodies are framed as RFC 9112 §6.3 says
(chunked, Content-Length, or until close for a response) and are never held
in memory whole: chunk headers are read to walk them and content decoding
(gzip, deflate, raw deflate without a zlib header) streams through zlib with
an output cap (:data:`DECODE_CAP`) against decompression bombs. Values follow
Zeek's http.log: ``host`` without a port, ``version`` of the response when
there is one, ``<empty>`` for a missing reason phrase, body lengths after
content decoding.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass, field

from forensics.protocols import _mime, register
from forensics.protocols._base import Reader, Session

__all__ = ["DECODE_CAP", "MAX_HEADER", "detect", "parse"]

MAX_HEADER = 64 * 1024  # a header block past this is absurd: the stream is not parsed further
MAX_HEADERS = 500
MAX_MESSAGES = 100_000
DECODE_CAP = 64 * 1024 * 1024  # decoded body bytes counted at most (decompression bombs)
_CHUNK_LIMIT = 1 << 40

_METHODS = frozenset(
    b"""GET POST HEAD PUT DELETE OPTIONS CONNECT TRACE PATCH PROPFIND PROPPATCH
MKCOL COPY MOVE LOCK UNLOCK SEARCH REPORT SUBSCRIBE UNSUBSCRIBE NOTIFY M-SEARCH POLL BPROPFIND
BPROPPATCH BCOPY BMOVE BDELETE MKWORKSPACE UPDATE LABEL MERGE VERSION-CONTROL CHECKIN CHECKOUT
UNCHECKOUT MKACTIVITY RPC_IN_DATA RPC_OUT_DATA PURGE LINK UNLINK""".split()
)
# Possessive runs of blanks: with plain ones a request line of a few thousand spaces took
# the engine seconds to minutes (every way of sharing the blanks out between the three runs).
_REQ = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,32})[ \t]++(\S*)[ \t]*+(?:HTTP/(\d+(?:\.\d+)?))?[ \t]*+$")
_RESP = re.compile(rb"HTTP/(\d+(?:\.\d+)?)[ \t]+(\d{3})(?:[ \t]+(.*))?$", re.S)
# Zeek's proxy headers (base/protocols/http/main.zeek).
_PROXY = frozenset(
    {
        "FORWARDED",
        "X-FORWARDED-FOR",
        "X-FORWARDED-FROM",
        "CLIENT-IP",
        "VIA",
        "XROXY-CONNECTION",
        "PROXY-CONNECTION",
    }
)


def detect(orig: bytes, resp: bytes, s: Session) -> bool:
    """A request line at the start of the originator's bytes, or a status line from the responder."""
    first = orig.split(b"\n", 1)[0].rstrip(b"\r")
    m = _REQ.match(first)
    if m and (m.group(3) or m.group(1) in _METHODS) and (m.group(1) in _METHODS or m.group(3)):
        return True
    return resp.startswith((b"HTTP/1.", b"HTTP/0.9"))


@dataclass
class Message:
    """One parsed HTTP message (header fields upper-cased as Zeek names them)."""

    start: int
    method: str | None = None
    uri: str | None = None
    version: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_start: int = 0
    body_end: int = 0
    wire_len: int = 0
    body_len: int = 0
    missing: int = 0
    decoded: bool = False
    truncated: bool = False
    complete: bool = True
    mime: str | None = None

    def header(self, name: str) -> str | None:
        """Last value of a header (names upper-case)."""
        for k, v in reversed(self.headers):
            if k == name:
                return v
        return None


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _unescape_uri(raw: bytes) -> bytes:
    """%XX decoded as Zeek's http.log ``uri`` shows it; malformed escapes are kept as they are."""
    if b"%" not in raw:
        return raw
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def _head_end(r: Reader, pos: int) -> tuple[int, int] | None:
    """(end of header block, offset of the body) for the message at ``pos``."""
    data = r.get(pos, 4096)  # most heads are short: look there before reading the cap
    if b"\n\r\n" not in data and b"\n\n" not in data and len(data) == 4096:
        data = r.get(pos, MAX_HEADER)
    a = data.find(b"\r\n\r\n")
    b = data.find(b"\n\n")
    cands = [(a, a + 4) if a >= 0 else None, (b, b + 2) if b >= 0 else None]
    best = min((c for c in cands if c), default=None)
    if best is None:
        return None
    return pos + best[0], pos + best[1]


def _parse_head(raw: bytes, msg: Message, s: Session, is_orig: bool) -> bool:
    lines = raw.split(b"\n")
    first = lines[0].rstrip(b"\r")
    if is_orig:
        m = _REQ.match(first)
        if not m:
            return False
        msg.method, msg.uri = _text(m.group(1)), _text(_unescape_uri(m.group(2)))
        msg.version = _text(m.group(3)) if m.group(3) else "0.9"
    else:
        m = _RESP.match(first)
        if not m:
            return False
        msg.version, msg.status = _text(m.group(1)), int(m.group(2))
        msg.reason = _text(m.group(3).strip()) if m.group(3) and m.group(3).strip() else "<empty>"
    bad = 0
    for ln in lines[1 : MAX_HEADERS + 1]:
        ln = ln.rstrip(b"\r")
        if not ln:
            continue
        if ln[:1] in (b" ", b"\t") and msg.headers:  # obsolete line folding (RFC 9112 §5.2)
            k, v = msg.headers[-1]
            msg.headers[-1] = (k, v + " " + _text(ln.strip()))
            continue
        name, sep, value = ln.partition(b":")
        if not sep or not name.strip():
            bad += 1
            continue
        msg.headers.append((_text(name.strip()).upper(), _text(value.strip())))
    if bad:
        s.warn(
            "http_bad_header",
            f"{bad} header line(s) without a name and colon skipped",
            is_orig=is_orig,
            offset=msg.start,
        )
    if len(lines) > MAX_HEADERS + 1:
        s.warn(
            "http_too_many_headers",
            f"{len(lines) - 1} header lines; only {MAX_HEADERS} read",
            is_orig=is_orig,
            offset=msg.start,
        )
    return True


def _content_length(msg: Message, s: Session, is_orig: bool) -> int | None:
    vals = {v.strip() for k, v in msg.headers if k == "CONTENT-LENGTH"}
    if not vals:
        return None
    if len(vals) == 1:
        v = next(iter(vals))
        if v.isdigit() and len(v) <= 15:
            return int(v)
    s.warn(
        "http_bad_content_length",
        f"unusable Content-Length {sorted(vals)[:3]}",
        is_orig=is_orig,
        offset=msg.start,
    )
    return -1


def _chunks(r: Reader, pos: int, s: Session, is_orig: bool) -> tuple[list[tuple[int, int]], int, bool]:
    """Data ranges of a chunked body (RFC 9112 §7.1), the offset after it, and completeness."""
    out: list[tuple[int, int]] = []
    while True:
        ln = r.line(pos, 1024)
        if ln is None:
            return out, min(pos, r.end), False
        size_txt = ln[0].split(b";", 1)[0].strip()
        try:
            size = int(size_txt, 16)
        except ValueError:
            size = -1
        if size < 0 or size > _CHUNK_LIMIT or not size_txt:
            s.warn("http_bad_chunk", f"bad chunk size line {ln[0][:40]!r}", is_orig=is_orig, offset=pos)
            return out, pos, False
        pos = ln[1]
        if size == 0:
            while True:  # trailer fields up to the empty line
                ln = r.line(pos, 8192)
                if ln is None:
                    return out, min(pos, r.end), True
                pos = ln[1]
                if not ln[0]:
                    return out, pos, True
        out.append((pos, size))
        pos += size
        tail = r.get(pos, 2)
        if tail == b"\r\n":
            pos += 2
        elif tail[:1] == b"\n":
            pos += 1
        elif pos < r.end:
            s.warn("http_bad_chunk", "chunk data not followed by CRLF", is_orig=is_orig, offset=pos)
        if pos >= r.end and pos > r.d.extent:
            return out, pos, False


def _decode(
    r: Reader, ranges: list[tuple[int, int]], coding: str, msg: Message, s: Session, is_orig: bool
) -> None:
    """Count (and sniff) the body after content decoding, with the output cap."""
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[coding]
    d = zlib.decompressobj(wbits)
    total, head, first = 0, b"", True
    for start, n in ranges:
        p = start
        while p < start + n:
            data = r.get(p, min(1 << 16, start + n - p))
            if not data:
                break
            p += len(data)
            if first and coding == "deflate" and data[:1] and (data[0] & 0x0F) != 8:
                d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header (common)
            first = False
            try:
                while data:
                    out = d.decompress(data, 1 << 20)
                    total += len(out)
                    if len(head) < 1024:
                        head += out[: 1024 - len(head)]
                    if total > DECODE_CAP:
                        msg.truncated = True
                        s.warn(
                            "http_decompression_cap",
                            f"{coding} body decodes past {DECODE_CAP} bytes; "
                            "counting stopped (decompression bomb?)",
                            is_orig=is_orig,
                            offset=start,
                        )
                        msg.body_len, msg.decoded = total, True
                        return
                    data = d.unconsumed_tail
            except zlib.error as exc:
                s.warn(
                    "http_bad_encoding",
                    f"{coding} body does not decode: {exc}",
                    is_orig=is_orig,
                    offset=start,
                    severity="info",
                )
                msg.body_len = total
                msg.mime = _mime.sniff(head) if head else None
                return
    msg.body_len, msg.decoded = total, True
    msg.mime = _mime.sniff(head) if head else None


def _body(r: Reader, msg: Message, s: Session, is_orig: bool, req_method: str | None) -> None:
    te = (msg.header("TRANSFER-ENCODING") or "").lower()
    cl = _content_length(msg, s, is_orig)
    pos = msg.body_start
    no_body = (
        not is_orig and ((msg.status or 0) < 200 or msg.status in (204, 304) or req_method == "HEAD")
    ) or (not is_orig and req_method == "CONNECT" and 200 <= (msg.status or 0) < 300)
    ranges: list[tuple[int, int]] = []
    if no_body:
        end = pos
    elif "chunked" in te:
        ranges, end, msg.complete = _chunks(r, pos, s, is_orig)
    elif cl is not None and cl >= 0:
        end = pos + cl
        ranges = [(pos, cl)]
    elif is_orig:
        end = pos
    else:  # until the connection closes (RFC 9112 §6.3 rule 8)
        end = max(r.end, r.d.extent)
        ranges = [(pos, end - pos)]
    stream_end = max(r.end, r.d.extent)
    if end > stream_end:
        msg.complete = False
        ranges = [(a, max(0, min(n, stream_end - a))) for a, n in ranges]
    msg.body_end = min(end, stream_end) if not ranges else max(min(end, stream_end), pos)
    msg.wire_len = sum(n for _, n in ranges)
    msg.missing = sum(r.missing(a, a + n) for a, n in ranges)
    coding = (msg.header("CONTENT-ENCODING") or "").strip().lower()
    if msg.wire_len and coding in ("gzip", "x-gzip", "deflate"):
        _decode(r, ranges, coding, msg, s, is_orig)
    else:
        msg.body_len = msg.wire_len
        ctype = (msg.header("CONTENT-TYPE") or "").lower()
        if msg.wire_len and ctype.startswith("multipart/"):
            msg.mime = _multipart_mime(r, ranges[0], ctype)
        elif msg.wire_len:
            msg.mime = _mime.sniff(r.get(ranges[0][0], min(1024, ranges[0][1])))


def _multipart_mime(r: Reader, rng: tuple[int, int], ctype: str) -> str | None:
    """MIME type of the first part whose content is recognised (RFC 2046 §5.1): parts are files to Zeek."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        return None
    data = r.get(rng[0], min(rng[1], 1 << 20))
    for part in data.split(b"--" + m.group(1).encode("latin-1"))[1:]:
        _head, sep, body = part.partition(b"\r\n\r\n")
        mime = _mime.sniff(body[:1024]) if sep else None
        if mime:
            return mime
    return None


def _messages(s: Session, is_orig: bool, methods: list[str | None]) -> list[Message]:
    r = Reader(s.direction(is_orig), window=8192)
    out: list[Message] = []
    pos, finals = 0, 0
    while pos < r.end and len(out) < MAX_MESSAGES:
        nxt = r.next_captured(pos)
        if nxt != pos:  # a message lost in a gap: pick up at the next captured byte
            s.warn(
                "http_gap",
                f"{nxt - pos} bytes never captured; parsing resumes after them",
                is_orig=is_orig,
                offset=pos,
                severity="info",
            )
            pos = nxt
            if pos >= r.end:
                break
        lead = r.get(pos, 64)
        skip = len(lead) - len(lead.lstrip(b"\r\n"))
        if skip:
            pos += skip
            if skip == len(lead):
                continue
        he = _head_end(r, pos)
        if he is None:
            if r.end - pos >= MAX_HEADER:
                s.warn(
                    "http_header_too_large",
                    f"no end of header within {MAX_HEADER} bytes; stream not parsed further",
                    is_orig=is_orig,
                    offset=pos,
                )
                break
            msg = Message(pos, complete=False)
            if _parse_head(r.get(pos, min(MAX_HEADER, r.end - pos)), msg, s, is_orig):
                msg.body_start = msg.body_end = r.end
                out.append(msg)
            break
        msg = Message(pos)
        if not _parse_head(r.get(pos, he[0] - pos), msg, s, is_orig):
            nxt = _resync(r, pos + 1, is_orig)
            s.warn(
                "http_bad_start_line",
                f"not an HTTP {'request' if is_orig else 'status'} line: {r.get(pos, 40)!r}",
                is_orig=is_orig,
                offset=pos,
            )
            if nxt < 0:
                break
            pos = nxt
            continue
        msg.body_start = he[1]
        req = methods[finals] if not is_orig and finals < len(methods) else None
        _body(r, msg, s, is_orig, req)
        out.append(msg)
        if not is_orig and (msg.status or 0) >= 200:
            finals += 1
        pos = msg.body_end
        if (
            (is_orig and msg.method == "CONNECT")
            or msg.status == 101
            or (not is_orig and req == "CONNECT" and 200 <= (msg.status or 0) < 300)
        ):
            break  # the rest is another protocol (a tunnel or an upgrade)
        if msg.body_end <= msg.start:
            break
    return out


def _resync(r: Reader, pos: int, is_orig: bool) -> int:
    """Offset of the next line that starts like a message, or -1."""
    data = r.get(pos, MAX_HEADER)
    pat = rb"\n(?:[A-Z][A-Z_-]{2,15} \S+ HTTP/1\.\d)" if is_orig else rb"\nHTTP/1\.\d \d{3}"
    m = re.search(pat, data)
    return pos + m.start() + 1 if m else -1


def _filename(msg: Message) -> str | None:
    cd = msg.header("CONTENT-DISPOSITION")
    if not cd:
        return None
    m = re.search(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", cd, re.I)
    return m.group(1) if m else None


@register("http", "tcp", detect, order=20)
def parse(s: Session) -> None:
    """Emit ``http`` and ``http_bodies`` rows for every request/response pair."""
    reqs = _messages(s, True, [])
    resps = _messages(s, False, [m.method for m in reqs])
    finals: list[tuple[Message | None, Message | None]] = []
    info: Message | None = None
    for m in resps:
        if (m.status or 0) < 200 and m.status != 101:
            info = m
            continue
        finals.append((m, info))
        info = None
    if info is not None:
        finals.append((None, info))
    for i in range(max(len(reqs), len(finals))):
        q = reqs[i] if i < len(reqs) else None
        p, inf = finals[i] if i < len(finals) else (None, None)
        _row(s, i + 1, q, p, inf)


def _row(s: Session, depth: int, q: Message | None, p: Message | None, inf: Message | None) -> None:
    user = password = None
    proxied: list[str] = []
    if q is not None:
        auth = q.header("AUTHORIZATION") or ""
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = (
                    base64.b64decode(auth[6:].strip(), validate=False)
                    .decode("utf-8", "backslashreplace")
                    .partition(":")
                )
            except ValueError:
                s.warn(
                    "http_bad_auth",
                    "Authorization: Basic value is not base64",
                    is_orig=True,
                    offset=q.start,
                    severity="info",
                )
        proxied = [f"{k} -> {v}" for k, v in q.headers if k in _PROXY]
    host = q.header("HOST") if q else None
    first = q if q is not None else p
    assert first is not None
    is_orig = q is not None
    s.emit_at(
        "http",
        is_orig,
        first.start,
        trans_depth=depth,
        method=q.method if q else None,
        host=host.split(":", 1)[0] if host is not None else None,
        uri=q.uri if q else None,
        referrer=q.header("REFERER") if q else None,
        version=(p.version if p else q.version if q else None),
        user_agent=q.header("USER-AGENT") if q else None,
        origin=q.header("ORIGIN") if q else None,
        request_body_len=q.body_len if q else 0,
        response_body_len=p.body_len if p else 0,
        status_code=p.status if p else None,
        status_msg=p.reason if p else None,
        info_code=inf.status if inf else None,
        info_msg=inf.reason if inf else None,
        tags=[],
        username=user or None,
        password=password or None,
        proxied=sorted(set(proxied)) or None,
        orig_mime_types=[q.mime] if q and q.mime else None,
        orig_filenames=[f] if q and (f := _filename(q)) else None,
        resp_mime_types=[p.mime] if p and p.mime else None,
        resp_filenames=[f] if p and (f := _filename(p)) else None,
        content_type=p.header("CONTENT-TYPE") if p else None,
    )
    for m, orig in ((q, True), (p, False)):
        if m is None or m.body_end <= m.body_start:
            continue
        s.emit_at(
            "http_bodies",
            orig,
            m.body_start,
            trans_depth=depth,
            is_orig=orig,
            content_type=m.header("CONTENT-TYPE"),
            content_encoding=m.header("CONTENT-ENCODING"),
            transfer_encoding=m.header("TRANSFER-ENCODING"),
            content_length=int(v) if (v := m.header("CONTENT-LENGTH")) and v.strip().isdigit() else None,
            filename=_filename(m),
            stream_start=m.body_start,
            stream_end=m.body_end,
            wire_len=m.wire_len,
            body_len=m.body_len,
            missing_bytes=m.missing,
            decoded=m.decoded,
            truncated=m.truncated,
        )
