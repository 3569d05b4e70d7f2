"""MIME type of content from its first bytes, with the strengths Zeek's file signatures use.

Zeek (and so its http.log ``*_mime_types``) picks the matching signature with
the highest strength; plain text is the weakest. The common types are
covered: markup, JSON, scripts, images, archives, documents and executables.
"""

from __future__ import annotations

import re

__all__ = ["sniff"]

_BOM = rb"(?:\xef\xbb\xbf)?"
_WS = rb"[\r\n \t]*"
# Whitespace and comments in any order, an XML declaration or not, then whitespace and
# comments again: what Zeek writes as (whitespace, a comment or not, whitespace) repeated.
# Zeek matches that with an automaton; a backtracking engine tries every way of cutting a
# run of spaces in three, or a run of comments into comments (``.*?`` may hold ``-->``),
# which takes for ever on a few dozen. The same language, in one pass: comments one after
# another read as one comment (its ``.*`` holds the ones between), and possessive and
# atomic groups leave the engine nothing to try twice. Comments before an XML
# declaration end at the first ``-->`` the declaration follows, and the other way round.
_W = rb"[\r\n \t]*+"
_GAP = _W + rb"(?:<!--.*-->" + _W + rb")?"
_XP = rb"<\?xml (?:(?>.*?\?>" + _W + rb"(?=<!--))<!--.*-->" + _W + rb"|.*\?>" + _W + rb")"
_CP = rb"<!--(?:(?>.*?-->" + _W + rb"(?=<\?xml ))" + _XP + rb"|.*-->" + _W + rb")"
_LEAD = _BOM + _W + rb"(?:" + _CP + rb"|" + _XP + rb")?"

# (strength, mime, pattern); matched from the start of the content.
_SIGS: list[tuple[int, str, re.Pattern[bytes]]] = [
    (s, m, re.compile(p, re.S))
    for s, m, p in (
        (
            -20,
            "text/plain",
            rb"(?:\xef\xbb\xbf|(?:\x00\x00)?\xfe\xff|\xff\xfe(?:\x00\x00)?)?[\s\x20-\x7e]{10}",
        ),
        (
            1,
            "text/json",
            _BOM
            + _WS
            + rb"\{"
            + _WS
            + rb"(?:\"[^\"]+\"|[a-zA-Z][a-zA-Z0-9\\_]*)"
            + _WS
            + rb":"
            + _WS
            + rb"(?:\"|\[|\{|[0-9]|true|false)",
        ),
        (
            1,
            "text/json",
            _BOM
            + _WS
            + rb"\["
            + _WS
            + rb"(?:(?:(?:\"[^\"]+\"|[0-9]+(?:\.[0-9]+)?|true|false)"
            + _WS
            + rb",)|\{|\[)",
        ),
        (0, "text/json", _BOM + _WS + rb"(?:\[\]|\{\})" + _WS + rb"$"),
        (10, "application/xml", _BOM + _GAP + rb"<\?xml "),
        (
            100,
            "text/html",
            _LEAD + rb"<(?:![dD][oO][cC][tT][yY][pP][eE] +[hH][tT][mM][lL]|[hH][tT][mM][lL]"
            rb"|[mM][eE][tT][aA] +[hH][tT][tT][pP]-[eE][qQ][uU][iI][vV])",
        ),
        (
            20,
            "text/html",
            _LEAD + rb"<(?:[hH][eE][aA][dD]|[hH][tT][mM][lL]|[tT][iI][tT][lL][eE]|[bB][oO][dD][yY])",
        ),
        (90, "text/rss", _LEAD + rb"<[rR][sS][sS]"),
        (
            60,
            "application/javascript",
            _WS + rb"<[sS][cC][rR][iI][pP][tT][ \t]+(?:type|language)=['\"]?"
            rb"(?:text/)?javascript",
        ),
        (250, "text/x-shellscript", rb"#![^\n]{1,15}bin/(?:env\s+)?(?:ba|tc|c|z|fa|ae|k)?sh"),
        (60, "text/x-python", rb"#![^\n]{1,15}bin/(?:env\s+)?python"),
        (60, "text/x-perl", rb"#![^\n]{1,15}bin/(?:env\s+)?perl"),
        (40, "text/x-php", rb".*<\?php"),
        (-1, "application/x-pem", rb"-----BEGIN CERTIFICATE-----"),
        (70, "image/png", rb"\x89PNG\r\n\x1a\n"),
        (70, "image/gif", rb"GIF8[79]a"),
        (52, "image/jpeg", rb"\xff\xd8\xff"),
        (70, "image/x-icon", rb"\x00\x00\x01\x00"),
        (64, "image/bmp", rb"BM.{12}[\x0c\x28\x40\x6c\x7c]\x00\x00\x00"),
        (70, "image/webp", rb"RIFF.{4}WEBP"),
        (70, "application/pdf", rb"%PDF"),
        (10, "application/zip", rb"PK\x03\x04.{2}"),
        (100, "application/java-archive", rb"PK\x03\x04.{1,200}\x14\x00..META-INF/MANIFEST\.MF"),
        (100, "application/x-gzip", rb"\x1f\x8b"),
        (90, "application/x-bzip2", rb"BZh"),
        (90, "application/x-7z-compressed", rb"7z\xbc\xaf\x27\x1c"),
        (90, "application/x-rar", rb"Rar!\x1a\x07"),
        (100, "application/vnd.ms-cab-compressed", rb"MSCF\x00\x00\x00\x00"),
        (70, "application/x-dosexec", rb"MZ"),
        (50, "application/x-executable", rb"\x7fELF[\x01\x02](?:\x01.{10}\x02\x00|\x02.{10}\x00\x02)"),
        (50, "application/x-sharedlib", rb"\x7fELF[\x01\x02](?:\x01.{10}\x03\x00|\x02.{10}\x00\x03)"),
        (100, "application/x-mach-o-executable", rb"[\xce\xcf]\xfa\xed\xfe"),
        (71, "application/x-java-applet", rb"\xca\xfe\xba\xbe...[\x2d-\x34]"),
        (60, "application/x-shockwave-flash", rb"[FCZ]WS"),
        (80, "application/msword", rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
        (70, "application/vnd.tcpdump.pcap", rb"(?:\xa1\xb2\xc3\xd4|\xd4\xc3\xb2\xa1)"),
        (70, "application/x-x509-ca-cert", rb"\x30\x82..\x30\x82..\xa0\x03\x02\x01\x02"),
        (50, "audio/mpeg", rb"ID3"),
        (70, "video/mp4", rb"....ftyp(?:isom|mp4|M4V|avc1|dash)"),
    )
]


# Every signature in one pattern, strongest first (list order among equals): the first
# alternative that matches is the one of highest strength, found in one call.
_STRONGEST_FIRST = sorted(range(len(_SIGS)), key=lambda i: -_SIGS[i][0])
_ANY = re.compile(b"|".join(b"(?P<s%d>%s)" % (i, _SIGS[i][2].pattern) for i in _STRONGEST_FIRST), re.S)


def sniff(head: bytes) -> str | None:
    """The MIME type of content starting with ``head`` (None when nothing matches).

    The matching signature of highest strength; of equal ones, the first listed.
    """
    if not head:
        return None
    m = _ANY.match(head)
    return _SIGS[int(m.lastgroup[1:])][1] if m is not None and m.lastgroup else None
