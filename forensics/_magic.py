"""File type by magic number: a small table, not libmagic.

Why a table of our own: the answer must not change with the libmagic version
installed on the analyst's machine (rows are compared across cases and with
Zeek), libmagic is a large C parser of hostile input, and python-magic would be
one more dependency. The table covers what crosses networks in incidents:
executables, archives, office documents, images, and text. MIME strings are the
ones Zeek's files.log and libmagic report (``application/x-dosexec``,
``text/plain``), so ``files.mime_type`` compares directly with Zeek's rows.
``filetype`` is the short name YARA rule sets test in their ``filetype``
external variable (THOR's convention: ``EXE``, ``ELF``, ``MACH-O``, ...).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["HEAD_SIZE", "FileType", "sniff"]

HEAD_SIZE = 8192  # bytes of the file the sniffer looks at


class FileType(NamedTuple):
    """What the first bytes say a file is."""

    mime: str
    filetype: str  # short name for YARA's ``filetype`` external ("" when none fits)
    description: str


# Fixed signatures at offset 0, longest first where one is a prefix of another.
_SIGNATURES: tuple[tuple[bytes, FileType], ...] = (
    (b"%PDF-", FileType("application/pdf", "PDF", "PDF document")),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
     FileType("application/vnd.ms-office", "OLE", "OLE2 compound document")),
    (b"Rar!\x1a\x07", FileType("application/x-rar", "RAR", "RAR archive")),
    (b"7z\xbc\xaf\x27\x1c", FileType("application/x-7z-compressed", "7Z", "7-Zip archive")),
    (b"\x1f\x8b", FileType("application/x-gzip", "GZIP", "gzip compressed data")),
    (b"BZh", FileType("application/x-bzip2", "BZIP2", "bzip2 compressed data")),
    (b"\xfd7zXZ\x00", FileType("application/x-xz", "XZ", "XZ compressed data")),
    (b"\x28\xb5\x2f\xfd", FileType("application/zstd", "ZSTD", "Zstandard compressed data")),
    (b"MSCF\x00\x00\x00\x00", FileType("application/vnd.ms-cab-compressed", "CAB", "Microsoft Cabinet")),
    (b"\x7fELF", FileType("application/x-executable", "ELF", "ELF executable")),
    (b"\x89PNG\r\n\x1a\n", FileType("image/png", "PNG", "PNG image")),
    (b"\xff\xd8\xff", FileType("image/jpeg", "JPEG", "JPEG image")),
    (b"GIF87a", FileType("image/gif", "GIF", "GIF image")),
    (b"GIF89a", FileType("image/gif", "GIF", "GIF image")),
    (b"BM", FileType("image/bmp", "BMP", "BMP image")),  # checked further below
    (b"{\\rtf", FileType("text/rtf", "RTF", "Rich Text Format document")),
    (b"MDMP\x93\xa7", FileType("application/x-dmp", "MDMP", "Windows minidump")),
    (b"PMDM", FileType("application/x-dmp", "MDMP", "Windows minidump")),
    (b"\x4c\x00\x00\x00\x01\x14\x02\x00", FileType("application/x-ms-shortcut", "LNK", "Windows shortcut")),
    (b"regf", FileType("application/x-ms-registry", "REGISTRY", "Windows registry hive")),
    (b"\xd4\xc3\xb2\xa1", FileType("application/vnd.tcpdump.pcap", "PCAP", "pcap capture")),
    (b"\xa1\xb2\xc3\xd4", FileType("application/vnd.tcpdump.pcap", "PCAP", "pcap capture")),
    (b"\x0a\x0d\x0d\x0a", FileType("application/x-pcapng", "PCAPNG", "pcapng capture")),
    (b"SQLite format 3\x00", FileType("application/x-sqlite3", "SQLITE", "SQLite database")),
    (b"dex\n", FileType("application/vnd.android.dex", "DEX", "Android Dalvik executable")),
    (b"OggS", FileType("audio/ogg", "OGG", "Ogg container")),
    (b"ID3", FileType("audio/mpeg", "MP3", "MP3 audio")),
    (b"-----BEGIN CERTIFICATE-----", FileType("application/x-x509-ca-cert", "PEM", "PEM certificate")),
    (b"-----BEGIN ", FileType("application/x-pem-file", "PEM", "PEM data")),
)

_MACHO = {b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe"}
_ZIP = FileType("application/zip", "ZIP", "Zip archive")
_OOXML = {
    b"word/": FileType("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                       "DOCX", "Microsoft Word document (OOXML)"),
    b"xl/": FileType("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                     "XLSX", "Microsoft Excel workbook (OOXML)"),
    b"ppt/": FileType("application/vnd.openxmlformats-officedocument.presentationml.presentation",
                      "PPTX", "Microsoft PowerPoint presentation (OOXML)"),
}
_EMPTY = FileType("application/x-empty", "", "empty")
_BINARY = FileType("application/octet-stream", "", "data")
_TEXT_MARKERS: tuple[tuple[bytes, FileType], ...] = (
    (b"<!doctype html", FileType("text/html", "HTML", "HTML document")),
    (b"<html", FileType("text/html", "HTML", "HTML document")),
    (b"<?xml", FileType("text/xml", "XML", "XML document")),
    (b"<?php", FileType("text/x-php", "PHP", "PHP script")),
    (b"#!", FileType("text/x-shellscript", "SCRIPT", "script with an interpreter line")),
    (b"<%@", FileType("text/x-asp", "ASP", "ASP/JSP page")),
)


def _pe(head: bytes) -> FileType | None:
    """An MZ header whose e_lfanew points at the PE signature (else plain DOS MZ)."""
    if len(head) < 0x40:
        return FileType("application/x-dosexec", "EXE", "MS-DOS executable")
    (lfanew,) = struct.unpack_from("<I", head, 0x3C)
    if lfanew + 24 <= len(head) and head[lfanew:lfanew + 4] == b"PE\0\0":
        (characteristics,) = struct.unpack_from("<H", head, lfanew + 22)
        if characteristics & 0x2000:
            return FileType("application/x-dosexec", "EXE", "PE DLL")  # THOR calls DLLs EXE too
        return FileType("application/x-dosexec", "EXE", "PE executable")
    return FileType("application/x-dosexec", "EXE", "MS-DOS executable")


def _zip(head: bytes) -> FileType:
    """Zip, or the OOXML/JAR/APK flavour named by the member names in the head."""
    for marker, ft in _OOXML.items():
        if b"PK\x03\x04" in head and marker in head and b"[Content_Types].xml" in head:
            return ft
    if b"META-INF/" in head:
        if b"AndroidManifest.xml" in head or b"classes.dex" in head:
            return FileType("application/vnd.android.package-archive", "APK", "Android package")
        return FileType("application/java-archive", "JAR", "Java archive")
    if b"AndroidManifest.xml" in head:
        return FileType("application/vnd.android.package-archive", "APK", "Android package")
    return _ZIP


def _text(head: bytes) -> FileType | None:
    """Text when the head decodes as UTF-8 (or UTF-16 with a BOM) and has few control bytes."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return FileType("text/plain", "TEXT", "UTF-16 text")
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    if b"\0" in body:
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the head is still text.
        if exc.start < len(body) - 3:
            return None
    controls = sum(1 for b in body if b < 0x20 and b not in (9, 10, 12, 13, 27))
    if controls > len(body) // 100:
        return None
    low = body.lstrip()[:64].lower()
    for marker, ft in _TEXT_MARKERS:
        if low.startswith(marker):
            return ft
    if low[:1] in (b"{", b"[") and body.rstrip()[-1:] in (b"}", b"]"):
        return FileType("text/json", "JSON", "JSON data")
    return FileType("text/plain", "TEXT", "text")


def sniff(head: bytes) -> FileType:
    """Type of a file from its first bytes (up to :data:`HEAD_SIZE`).

    Args:
        head: the first bytes of the file; fewer for a short file.

    Returns:
        The :class:`FileType`: MIME type, short type name and a description.
    """
    if not head:
        return _EMPTY
    if head[:2] == b"MZ":
        pe = _pe(head)
        if pe is not None:
            return pe
    if head[:4] == b"PK\x03\x04":
        return _zip(head)
    if head[:4] in (b"PK\x05\x06", b"PK\x07\x08"):
        return _ZIP
    if head[:4] in _MACHO:
        return FileType("application/x-mach-o-executable", "MACH-O", "Mach-O executable")
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8:
        # Mach-O universal binaries and Java classes share this magic; a fat header
        # counts architectures (a few), a class file has its version (>= 45) there.
        (n,) = struct.unpack_from(">I", head, 4)
        if n < 40:
            return FileType("application/x-mach-o-executable", "MACH-O", "Mach-O universal binary")
        return FileType("application/x-java-applet", "CLASS", "Java class file")
    if len(head) > 262 and head[257:262] == b"ustar":
        return FileType("application/x-tar", "TAR", "tar archive")
    for magic, ft in _SIGNATURES:
        if head.startswith(magic):
            if magic == b"BM" and not (len(head) >= 14 and head[6:10] == b"\0\0\0\0"):
                continue  # "BM" alone is too common in text
            return ft
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI ", b"WEBP"):
        kind = {b"WAVE": ("audio/x-wav", "WAV"), b"AVI ": ("video/x-msvideo", "AVI"),
                b"WEBP": ("image/webp", "WEBP")}[head[8:12]]
        return FileType(kind[0], kind[1], f"RIFF {kind[1]}")
    if head[4:8] == b"ftyp":
        return FileType("video/mp4", "MP4", "ISO media (MP4)")
    text = _text(head)
    return text if text is not None else _BINARY
