"""What the SessionReplay widget shows: conversation, hex, HTTP, protocol summaries, timing strip.

Each function renders one view of a reassembled session
(:class:`forensics.reassembly.Conversation`) as HTML built only through
:mod:`widgets._html`, so payload text is escaped, binary is hex and images are
re-encoded. Gaps (bytes never captured) and retransmission conflicts (a byte
sent twice with different content) are marked inline where they occur and on
the timing strip.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from widgets._html import (
    CLIENT,
    SERVER,
    esc,
    fmt_bytes,
    fmt_ts,
    hex_html,
    kv_table,
    looks_text,
    png_img,
    pre,
    safe_png,
    table,
    text_of,
)

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.reassembly import Conversation, Turn

__all__ = ["HttpMessage", "conversation_html", "http_html", "parse_http", "protocol_html", "timing_svg",
           "turn_hex_html"]

TURN_TEXT = 2048  # bytes of a turn shown in the conversation view (all of it in the Hex tab)
TURNS_SHOWN = 12  # turns kept in the conversation view: the latest, so the current one stays in sight
HTTP_READ = 2 << 20  # bytes of a turn read for the HTTP view
BODY_CAP = 1 << 20  # decoded body bytes kept (decompression bombs)
BODY_TEXT = 16384  # body bytes shown as text
BODY_HEX = 2048  # body bytes shown as hex
_START = re.compile(rb"^(?:[A-Z][A-Z_-]{1,19} \S+ HTTP/\d(?:\.\d)?|HTTP/\d(?:\.\d)? \d{3}(?: [^\r\n]*)?)\r?$")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "application/xhtml+xml", "image/svg+xml")
PROTOCOL_TABLES = {  # table: columns shown (lineage left out)
    "http": ["ts", "trans_depth", "method", "host", "uri", "status_code", "status_msg", "user_agent",
             "request_body_len", "response_body_len", "resp_mime_types", "username"],
    "smb_mapping": ["ts", "path", "share_type", "status", "smb_version"],
    "smb_files": ["ts", "action", "path", "name", "size", "data_len", "prev_name", "named_pipe"],
    "ntlm": ["ts", "domainname", "username", "hostname", "server_nb_computer_name", "success", "status"],
    "dce_rpc": ["ts", "endpoint", "operation", "named_pipe", "rtt"],
    "ftp": ["ts", "user", "command", "arg", "reply_code", "reply_msg", "file_size", "data_uid"],
    "smtp": ["ts", "helo", "mailfrom", "rcptto", "from", "to", "subject", "filenames", "last_reply"],
    "dns": ["ts", "query", "qtype_name", "rcode_name", "answers"],
    "tls": ["ts", "version", "server_name", "subject", "issuer", "ja3", "established"],
    "ssh": ["ts", "client", "server", "auth_success", "hassh"],
    "kerberos": ["ts", "request_type", "client", "service", "success", "error_msg"],
    "rdp": ["ts", "cookie", "result", "security_protocol", "client_name"],
}


# ---- conversation and hex -------------------------------------------------------------------


def _marks(conv: Conversation, t: Turn) -> list[tuple[int, int, str]]:
    """Gaps and conflicts inside a turn as (stream start, stream end, description), in order."""
    marks = [(s, e, f"gap: {e - s} byte(s) never captured (stream offset {s})") for s, e in t.gaps]
    for c in conv.direction(t.is_orig).conflicts:
        if t.start <= c.start < t.end:
            marks.append((c.start, c.start, f"retransmission conflict at stream offset {c.start}-{c.end}: "
                          f"{c.differing} byte(s) differed; frame {c.first_frame} kept, frame "
                          f"{c.later_frame} discarded"))
    return sorted(marks)


def _mark(text: str) -> str:
    return (f'<div style="background:#fff3cd;color:#7a4d00;border-left:4px solid #e0a800;padding:1px 6px;'
            f'font-family:sans-serif;font-size:12px">⚠ {esc(text)}</div>')


def turn_body_html(conv: Conversation, t: Turn, limit: int = TURN_TEXT) -> str:
    """One turn's bytes as escaped text, with gaps and conflicts marked where they fall."""
    d = conv.direction(t.is_orig)
    stop = min(t.end, t.start + limit)
    out, pos = [], t.start
    for s, e, what in _marks(conv, t):
        if s >= stop:
            break
        if s > pos:
            out.append(pre(text_of(d.read(pos, min(s, stop)))))
        out.append(_mark(what))
        pos = max(pos, min(e, stop))
    if pos < stop:
        out.append(pre(text_of(d.read(pos, stop))))
    if t.end > stop:
        out.append(f"<small>… {t.end - stop} more byte(s) in this turn (see Hex)</small>")
    return "".join(out)


def turn_header(conv: Conversation, t: Turn) -> str:
    """A line of plain text about a turn: who spoke, when, how much, which frames."""
    who = "client → server" if t.is_orig else "server → client"
    t0 = conv.turns[0].first_ts if conv.turns else None
    rel = f" (+{(t.first_ts - t0).total_seconds():.3f} s)" if t.first_ts and t0 else ""
    miss = f", {t.missing} missing" if t.missing else ""
    return (f"turn {t.index + 1} of {len(conv.turns)} · {who} · {fmt_ts(t.first_ts)}{rel} · "
            f"{t.length} byte(s){miss} · frames {t.first_frame}–{t.last_frame}")


def conversation_html(conv: Conversation, position: int, cache: dict[int, str] | None = None) -> str:
    """The turns played so far (``position`` of them), client and server told apart by colour and side."""
    if not conv.turns:
        return "<p><i>This session carried no payload.</i></p>"
    if position <= 0:
        return "<p><i>Press Play or Step to replay the conversation.</i></p>"
    first = max(0, position - TURNS_SHOWN)
    parts = [f"<p><small>{first} earlier turn(s) not shown</small></p>"] if first else []
    for t in conv.turns[first:position]:
        body = cache.get(t.index) if cache is not None else None
        if body is None:
            body = turn_body_html(conv, t)
            if cache is not None:
                cache[t.index] = body
        colour, bg = (CLIENT, "#fdecea") if t.is_orig else (SERVER, "#e8effa")
        current = t.index == position - 1
        margin = "margin:4px 20% 4px 0" if t.is_orig else "margin:4px 0 4px 20%"
        outline = "box-shadow:0 0 0 2px #333;" if current else ""
        parts.append(
            f'<div class="bb-turn bb-{t.direction}{" bb-current" if current else ""}" '
            f'style="{margin};border-left:4px solid {colour};background:{bg};color:{colour};padding:4px 8px;'
            f'{outline}font-family:monospace;font-size:12px"><div style="font-family:sans-serif;color:#555">'
            f"{esc(turn_header(conv, t))}</div>{body}</div>")
    return "".join(parts)


def turn_hex_html(conv: Conversation, t: Turn, limit: int = 8192) -> str:
    """A turn's bytes as a hex dump (stream offsets), gaps and conflicts listed above it."""
    d = conv.direction(t.is_orig)
    stop = min(t.end, t.start + limit)
    marks = "".join(_mark(m) for _, _, m in _marks(conv, t))
    data = d.read(t.start, stop, fill=b"\0") if t.gaps else d.read(t.start, stop)
    note = "<small>gap bytes are shown as 00</small>" if t.gaps else ""
    head = f"<div><b>{esc(turn_header(conv, t))}</b></div>"
    more = f"<small>… {t.end - stop} more byte(s) not shown</small>" if t.end > stop else ""
    return head + marks + note + hex_html(data, t.start, limit) + more


# ---- HTTP ----------------------------------------------------------------------------------------


@dataclass
class HttpMessage:
    """One HTTP message found in a turn (for display, not a parser of record).

    Attributes:
        turn: index of the turn it starts in.
        is_orig: a request (True) or a response.
        start_line: the request or status line, as text.
        headers: header fields in order, as text.
        body: the body after de-chunking and content decoding (at most :data:`BODY_CAP`).
        notes: what was done to the body or what went wrong.
    """

    turn: int
    is_orig: bool
    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    notes: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """Last value of a header (case-insensitive)."""
        for k, v in reversed(self.headers):
            if k.lower() == name.lower():
                return v
        return None

    @property
    def content_type(self) -> str:
        """The media type of the body, lower case, without parameters."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()


def _dechunk(data: bytes, notes: list[str]) -> tuple[bytes, int]:
    out, pos = bytearray(), 0
    while pos < len(data) and len(out) < BODY_CAP:
        eol = data.find(b"\n", pos)
        if eol < 0:
            break
        try:
            n = int(data[pos:eol].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            notes.append("bad chunk header")
            break
        pos = eol + 1
        if n == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            return bytes(out), (end + 4 if end >= 0 else len(data))
        out += data[pos:pos + n]
        pos += n + 2
    return bytes(out[:BODY_CAP]), len(data)


def _decode(body: bytes, coding: str, notes: list[str]) -> bytes:
    coding = coding.lower().strip()
    if coding not in ("gzip", "x-gzip", "deflate"):
        if coding and coding != "identity":
            notes.append(f"content encoding {coding} not decoded")
        return body
    for wbits in ((47,) if "gzip" in coding else (15, -15)):
        try:
            z = zlib.decompressobj(wbits)
            out = z.decompress(body, BODY_CAP)
            if z.unconsumed_tail:
                notes.append(f"decoded body cut at {BODY_CAP} bytes")
            notes.append(f"{coding} decoded ({len(body)} → {len(out)} bytes)")
            return out
        except zlib.error:
            continue
    notes.append(f"{coding} body could not be decoded")
    return body


def parse_http(data: bytes, turn: int, is_orig: bool) -> list[HttpMessage]:
    """HTTP/1.x messages in one turn's bytes (pipelined ones too); [] when it does not start with one."""
    msgs: list[HttpMessage] = []
    pos = 0
    while pos < len(data) and len(msgs) < 50:
        end = data.find(b"\r\n\r\n", pos, pos + 65536)
        sep = 4
        if end < 0:
            end, sep = data.find(b"\n\n", pos, pos + 65536), 2
        head = data[pos:end if end >= 0 else len(data)]
        lines = head.split(b"\n")
        if not _START.match(lines[0]):
            break
        m = HttpMessage(turn, is_orig, text_of(lines[0].rstrip(b"\r")))
        for ln in lines[1:]:
            k, _, v = ln.rstrip(b"\r").partition(b":")
            m.headers.append((text_of(k.strip()), text_of(v.strip())))
        msgs.append(m)
        if end < 0:
            m.notes.append("header block incomplete")
            break
        pos = end + sep
        status = m.start_line.split(" ")[1] if not is_orig and " " in m.start_line else ""
        if status[:1] == "1" or status in ("204", "304"):
            continue
        if "chunked" in (m.header("transfer-encoding") or "").lower():
            body, used = _dechunk(data[pos:], m.notes)
            m.notes.append("chunked")
        else:
            try:
                n = int(m.header("content-length") or "")
            except ValueError:
                n = -1 if not is_orig else 0
            used = len(data) - pos if n < 0 else min(n, len(data) - pos)
            body = data[pos:pos + min(used, BODY_CAP)]
            if 0 <= len(data) - pos < n:
                m.notes.append(f"{n - (len(data) - pos)} body byte(s) not in this turn")
        m.body = _decode(body, m.header("content-encoding") or "", m.notes)
        pos += used
    return msgs


def body_html(m: HttpMessage) -> str:
    """A body the safe way: raster images re-encoded, text escaped, anything else as hex."""
    if not m.body:
        return "<small>(no body)</small>"
    ct = m.content_type
    if ct.startswith("image/") and ct != "image/svg+xml":
        png = safe_png(m.body)
        if png is not None:
            return png_img(png, f"{ct} body, re-encoded") + f"<br><small>{esc(ct)} re-encoded as PNG</small>"
        return f"<small>{esc(ct)} that could not be decoded; hex:</small>" + hex_html(m.body, 0, BODY_HEX)
    if ct.startswith(_TEXT_TYPES) or (not ct and looks_text(m.body)):
        more = f"<small>… {len(m.body) - BODY_TEXT} more byte(s)</small>" if len(m.body) > BODY_TEXT else ""
        return pre(text_of(m.body[:BODY_TEXT]), "background:#f7f7f7;padding:4px") + more
    note = f"<small>{esc(ct or 'binary')} body, {len(m.body)} bytes; hex:</small>"
    return note + hex_html(m.body, 0, BODY_HEX)


def http_html(conv: Conversation, position: int, carved: pd.DataFrame | None = None,
              cache: dict[int, list[HttpMessage]] | None = None, max_messages: int = 6) -> str:
    """The HTTP messages of the turns played so far (the latest few), with carved files and their hits."""
    msgs: list[HttpMessage] = []
    for t in conv.turns[:position]:
        got = cache.get(t.index) if cache is not None else None
        if got is None:
            d = conv.direction(t.is_orig)
            got = parse_http(d.read(t.start, min(t.end, t.start + HTTP_READ)), t.index, t.is_orig)
            if cache is not None:
                cache[t.index] = got
        msgs.extend(got)
    by_sha = {}
    if carved is not None and len(carved):
        by_sha = {r["sha256"]: r for r in carved.to_dict("records")}
    if not msgs:
        out = "<p><i>No HTTP message in the turns played so far.</i></p>"
    else:
        shown = msgs[-max_messages:]
        hidden = len(msgs) - len(shown)
        out = f"<p><small>{hidden} earlier message(s) not shown</small></p>" if hidden else ""
        for m in shown:
            colour = CLIENT if m.is_orig else SERVER
            current = m.turn == position - 1
            out += (f'<div class="bb-http" style="border-left:4px solid {colour};padding:4px 8px;'
                    f'margin:6px 0;{"box-shadow:0 0 0 2px #333;" if current else ""}">'
                    f'<div style="font-family:monospace;color:{colour};font-weight:bold">'
                    f"{esc(m.start_line)}</div>"
                    f"{kv_table(m.headers)}"
                    + (f"<div><small>{esc('; '.join(m.notes))}</small></div>" if m.notes else "")
                    + body_html(m))
            hit = by_sha.get(hashlib.sha256(m.body).hexdigest()) if m.body else None
            if hit is not None:
                out += "<div><b>carved:</b> " + _carved_line(hit) + "</div>"
            out += "</div>"
    if by_sha:
        out += "<h4>Files carved from this session</h4>" + "".join(
            f"<div>{_carved_line(r)}</div>" for r in by_sha.values())
    return out


def _items(v: Any) -> list[Any]:
    return [] if v is None or isinstance(v, float | str) else list(v)


def _carved_line(r: dict[str, Any]) -> str:
    yara = ", ".join(str(x) for x in _items(r.get("yara")))
    ioc = ", ".join(str(x) for x in _items(r.get("ioc")))
    return (f"<code>{esc(r.get('claimed_name') or '(no name)')}</code> {esc(fmt_bytes(r.get('size')))} "
            f"{esc(r.get('mime_type'))} · sha256 <code>{esc(r.get('sha256'))}</code> · stored at "
            f"<code>{esc(r.get('path'))}</code> (open it in the Hex tab)"
            + (f' · <b style="color:#b00">YARA: {esc(yara)}</b>' if yara else " · no YARA hit")
            + (f' · <b style="color:#b00">IOC: {esc(ioc)}</b>' if ioc else ""))


# ---- protocol summaries and timing ----------------------------------------------------------------


def protocol_html(case: Case, uid: str) -> str:
    """Rows the protocol tables hold for the session (SMB, FTP incl. data channels, SMTP, DNS, ...)."""
    out = []
    for name, cols in PROTOCOL_TABLES.items():
        cond = "uid = ? OR data_uid = ?" if name == "ftp" else "uid = ?"
        df = case.sql(f"SELECT * FROM {name} WHERE {cond} ORDER BY ts LIMIT 500",
                      [uid, uid] if name == "ftp" else [uid])
        if len(df):
            out.append(f"<h4>{esc(name)} ({len(df)})</h4>" + table(df, cols, max_rows=100))
    for name in ("stream_gaps", "stream_conflicts"):
        df = case.sql(f"SELECT * EXCLUDE (uid, evidence_id) FROM {name} WHERE uid = ? ORDER BY stream_start",
                      [uid])
        if len(df):
            out.append(f"<h4>{esc(name)} ({len(df)})</h4>" + table(df, max_rows=100))
    return "".join(out) or "<p><i>No protocol table has rows for this session.</i></p>"


def packets(case: Case, session: dict[str, Any]) -> pd.DataFrame:
    """The session's packets for the timing strip: frame, time (ns), side, payload length."""
    lo, hi = pd.Timestamp(session["ts"]), pd.Timestamp(session.get("ts_end") or session["ts"])
    pk = case.sql("SELECT frame, ts_ns, is_orig, payload_len, tunnel_depth FROM packets WHERE uid = ? "
                  "AND ts_ns BETWEEN ? AND ? ORDER BY ts_ns, frame",
                  [session["uid"], lo.value - 1, hi.value + 1])
    # A tunnelled session has a row per layer: keep the layer the session was tracked at.
    return pk[pk["tunnel_depth"] == pk["tunnel_depth"].min()] if len(pk) else pk


def timing_base(pk: pd.DataFrame, conv: Conversation, width: int = 900) -> dict[str, Any]:
    """Precomputed columns of the timing strip (one per pixel column, whatever the packet count)."""
    if not len(pk):
        return {"width": width, "t0": 0, "span": 1, "body": ""}
    ts = pk["ts_ns"].to_numpy(np.int64)
    t0, span = int(ts.min()), max(int(ts.max() - ts.min()), 1)
    col = ((ts - t0) * (width - 1) // span).astype(np.int64)
    size = np.log1p(pk["payload_len"].fillna(0).to_numpy(np.float64))
    scale = 22.0 / max(float(size.max()), 1.0)
    body = []
    for side, y, colour in ((True, 26, CLIENT), (False, 30, SERVER)):
        m = pk["is_orig"].fillna(False).to_numpy(bool) == side
        if not m.any():
            continue
        hmax = np.zeros(width)
        np.maximum.at(hmax, col[m], np.maximum(size[m] * scale, 2.0))
        for px in np.flatnonzero(hmax).tolist():
            h = float(hmax[px])
            yy = y - h if side else y
            body.append(f'<rect x="{px}" y="{yy:.1f}" width="1" height="{h:.1f}" fill="{colour}"/>')
    frame_ts = dict(zip(pk["frame"].tolist(), ts.tolist(), strict=False))
    for d in (conv.orig, conv.resp):
        for c in d.conflicts:
            t = frame_ts.get(c.later_frame)
            if t is not None:
                x = int((t - t0) * (width - 1) // span)
                body.append(f'<path d="M{x} 2 l-4 0 l4 7 l4 -7 z" fill="#e0a800"/>')
        for s, _e in d.gaps.tolist():
            t = d.ts_at(int(s))
            if t is not None:
                x = int((t - t0) * (width - 1) // span)
                body.append(f'<rect x="{x - 1}" y="4" width="3" height="48" fill="#e0a800" opacity="0.7"/>')
    return {"width": width, "t0": t0, "span": span, "body": "".join(body)}


def timing_svg(base: dict[str, Any], at_ns: int | None, n_packets: int) -> str:
    """The strip: client packets up, server packets down, gaps and conflicts in amber, a cursor at ``at_ns``.

    Only numbers from our own computation go into the SVG (no evidence text).
    """
    w = int(base["width"])
    cursor = ""
    if at_ns is not None and base["body"]:
        x = (int(at_ns) - int(base["t0"])) * (w - 1) // int(base["span"])
        cursor = f'<line x1="{x}" y1="0" x2="{x}" y2="56" stroke="#000" stroke-width="2"/>'
    dur = int(base["span"]) / 1e9 if base["body"] else 0.0
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="58" style="background:#fafafa">'
            f'<line x1="0" y1="28" x2="{w}" y2="28" stroke="#ccc"/>{base["body"]}{cursor}</svg>'
            f"<div><small>{int(n_packets)} packet(s) over {dur:.3f} s · client above, server below · "
            "amber: gaps (bar) and retransmission conflicts (triangle) · black: replay position"
            "</small></div>")
