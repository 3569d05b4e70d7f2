"""Escaping, text and hex rendering shared by the widgets: the one way evidence meets HTML.

Everything a capture or a log holds (payload bytes, headers, URIs, file names,
user names) is hostile. It reaches the browser only through these helpers:
text is escaped with :func:`html.escape` (quotes too, so it is safe inside
attributes), binary is shown as a hex dump, and images are decoded and
re-encoded as PNG (:func:`safe_png`) so the browser never parses bytes an
attacker chose. The ipywidgets ``HTML`` widget sets ``innerHTML`` without
sanitising, so nothing else may build markup from evidence.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CLIENT",
    "SERVER",
    "esc",
    "fmt_bytes",
    "fmt_ts",
    "hex_html",
    "hexdump",
    "kv_table",
    "looks_text",
    "png_img",
    "pre",
    "printable",
    "safe_png",
    "table",
    "text_of",
]

CLIENT = "#b3261e"  # Wireshark's Follow Stream colours: client red, server blue
SERVER = "#1a4fa0"
_PRINTABLE = bytes(c if 0x20 <= c < 0x7F or c in (9, 10) else 0x2E for c in range(256))
_HEX_ASCII = bytes(c if 0x20 <= c < 0x7F else 0x2E for c in range(256))  # one line per row
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # decoders allowed for re-encoding
MAX_IMAGE_PIXELS = 40_000_000  # refuse larger images before decoding (decompression bombs)


def esc(value: Any) -> str:
    """HTML-escape any value as text (None and missing values become empty)."""
    if value is None:
        return ""
    try:
        if isinstance(value, float) and math.isnan(value):
            return ""
    except TypeError:
        pass
    return html.escape(str(value), quote=True)


def printable(data: bytes) -> str:
    """Bytes as text the way Wireshark's ASCII view shows them: non-printables become dots."""
    return data.replace(b"\r\n", b"\n").translate(_PRINTABLE).decode("ascii")


def looks_text(data: bytes, sample: int = 2048) -> bool:
    """Whether the bytes read as text (UTF-8 or mostly printable ASCII)."""
    head = data[:sample]
    if not head:
        return True
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a character cut by the sample
            return True
    ok = sum(1 for c in head if 0x20 <= c < 0x7F or c in (9, 10, 13))
    return ok / len(head) > 0.9


def text_of(data: bytes) -> str:
    """Bytes as readable text: UTF-8 when valid (control characters as dots), else printable ASCII."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return printable(data)
    return "".join(c if c in "\t\n" or (c >= " " and c != "\x7f") else "." for c in s.replace("\r\n", "\n"))


def hexdump(data: bytes, base: int = 0, width: int = 16) -> str:
    """A plain-text hex dump (offset, hex bytes, ASCII), as ``xxd`` or Wireshark show it."""
    lines = []
    for i in range(0, len(data), width):
        chunk = data[i:i + width]
        hx = " ".join(f"{b:02x}" for b in chunk)
        lines.append(f"{base + i:08x}  {hx:<{width * 3 - 1}}  {chunk.translate(_HEX_ASCII).decode('ascii')}")
    return "\n".join(lines)


def fmt_bytes(n: Any) -> str:
    """A byte count for people: ``1.2 MB`` (empty when unknown)."""
    try:
        v = float(n)
    except (TypeError, ValueError):
        return ""
    if math.isnan(v):
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(v) < 1000 or unit == "GB":
            return f"{int(v)} B" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{v:.1f} TB"  # pragma: no cover - unreachable


def fmt_ts(ts: Any, *, ms: bool = True) -> str:
    """A UTC time as ``2026-03-04 08:04:29.136`` (empty when missing)."""
    import pandas as pd

    if ts is None:
        return ""
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        return esc(ts)
    if pd.isna(t):
        return ""
    if t.tzinfo is not None:
        t = t.tz_convert("UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else t.strftime("%Y-%m-%d %H:%M:%S")


def table(df: pd.DataFrame, columns: Iterable[str] | None = None, *, max_rows: int = 200,
          empty: str = "none") -> str:
    """A DataFrame as an escaped HTML table (pandas escapes cells and headers)."""
    if df is None or not len(df):
        return f"<p><i>{esc(empty)}</i></p>"
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    more = len(df) - max_rows
    df = df.head(max_rows)
    df = df.astype(object).where(df.notna(), "")  # None, NaN, NaT and <NA> all show as empty
    body = df.to_html(escape=True, index=False, na_rep="", border=0, classes="bb-table")
    if more > 0:
        body += f"<p><small>… {more} more row(s) not shown</small></p>"
    return body


def kv_table(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """Name/value pairs as an escaped two-column table."""
    pairs = items.items() if isinstance(items, Mapping) else items
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{esc(k)}</th><td>{esc(v)}</td></tr>"
                   for k, v in pairs)
    return f"<table class='bb-kv'>{rows}</table>"


def safe_png(data: bytes, max_side: int = 480) -> bytes | None:
    """Decode an image and re-encode it as a fresh PNG, or None when that is not possible.

    Only raster formats in :data:`IMAGE_FORMATS` are decoded (never SVG, which
    can carry script); images over :data:`MAX_IMAGE_PIXELS` are refused before
    decoding; the first frame is kept and scaled to ``max_side``. The browser
    gets pixels we produced, never the bytes from the capture.
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as im:
            w, h = im.size
            if w <= 0 or h <= 0 or w * h > MAX_IMAGE_PIXELS:
                return None
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size
            frame = im.convert("RGBA")
            frame.thumbnail((max_side, max_side))
            out = io.BytesIO()
            frame.save(out, format="PNG")
            return out.getvalue()
    except Exception:  # any decoder failure means "not shown as an image"
        return None


def png_img(png: bytes, alt: str = "image") -> str:
    """An ``<img>`` tag for PNG bytes we produced (a data URI; ``alt`` is escaped)."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}" style="max-width:100%">'


def pre(text: str, style: str = "") -> str:
    """Escaped preformatted text."""
    return f'<pre style="margin:0;white-space:pre-wrap;word-break:break-all;{style}">{esc(text)}</pre>'


def hex_html(data: bytes, base: int = 0, limit: int = 4096) -> str:
    """An escaped hex dump of at most ``limit`` bytes, with a note when cut."""
    body = pre(hexdump(data[:limit], base), "font-family:monospace;font-size:12px")
    if len(data) > limit:
        body += f"<small>… {len(data) - limit} more byte(s) not shown</small>"
    return body
