"""Content MIME sniffing: one combined pattern picks what trying every signature picks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _fresh import fresh_python

from forensics.protocols import _mime

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def _reference(head: bytes) -> str | None:
    """Every signature tried; the highest strength wins, the first listed among equals."""
    if not head:
        return None
    best: tuple[int, str] | None = None
    for strength, mime, pat in _mime._SIGS:
        if (best is None or strength > best[0]) and pat.match(head):
            best = (strength, mime)
    return best[1] if best else None


SAMPLES = [
    b'<!DOCTYPE html><html>',
    b'  <html><head>',
    b"<?xml version='1.0'?><rss>",
    b"<?xml version='1.0'?><a/>",
    b'{"a": 1}',
    b'[1, 2]',
    b'{}',
    b'[]\n',
    b'\xef\xbb\xbf{"k":true}',
    b'#!/bin/sh\necho',
    b'#!/usr/bin/env python3',
    b'#!/usr/bin/perl',
    b'<?php echo 1;',
    b'hello <?php',
    b'-----BEGIN CERTIFICATE-----\nMII',
    b'\x89PNG\r\n\x1a\n\x00\x00',
    b'GIF89a',
    b'\xff\xd8\xff\xe0',
    b'\x00\x00\x01\x00',
    b'BM\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00(\x00\x00\x00',
    b'RIFF\x00\x00\x00\x00WEBP',
    b'%PDF-1.7',
    b'PK\x03\x04\x14\x00',
    b'PK\x03\x04\x14\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x14\x00abMETA-INF/MANIFEST.MF',
    b'\x1f\x8b\x08',
    b'BZh91',
    b"7z\xbc\xaf'\x1c",
    b'Rar!\x1a\x07\x00',
    b'MSCF\x00\x00\x00\x00',
    b'MZ\x90\x00',
    b'\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00',
    b'\x7fELF\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03',
    b'\xcf\xfa\xed\xfe',
    b'\xca\xfe\xba\xbe\x00\x00\x004',
    b'CWS\n',
    b'\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1',
    b'\xd4\xc3\xb2\xa1',
    b'0\x82\x01\x020\x82\x01\x00\xa0\x03\x02\x01\x02',
    b'ID3\x04',
    b'\x00\x00\x00\x18ftypisom',
    b'plain text line here',
    b'short',
    b'\x00\x01\x02',
    b"<script type='text/javascript'>",
    b'<!-- c --><html>',
    b'\xfe\xffplain text ascii here',
]


def _corpus() -> list[bytes]:
    rng = random.Random(11)
    heads = list(SAMPLES)
    heads += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(2000)]
    for s in SAMPLES:  # each signature cut short, and followed by noise
        heads += [s[:k] for k in range(1, len(s))]
        heads.append(s + bytes(rng.randrange(256) for _ in range(40)))
    for root in (Path(__file__).parent / "fixtures", SHARED):
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file())[:3000]
            heads += [p.read_bytes()[:1024] for p in files]
    return heads


def test_one_pattern_picks_what_every_signature_picks():
    heads = _corpus()
    got = [_mime.sniff(h) for h in heads]
    assert got == [_reference(h) for h in heads]
    found = {g for g in got if g}
    assert len(found) >= 30, sorted(found)  # the corpus reaches most signatures


@pytest.mark.parametrize(("head", "mime"), [
    (b"<html><body>", "text/html"), (b"MZ\x90\x00", "application/x-dosexec"),
    (b"", None), (b"\x00\x01", None),
])
def test_known_types(head, mime):
    assert _mime.sniff(head) == mime


def test_long_runs_of_whitespace_and_comments_are_sniffed_at_once():
    """A body is the sender's choice: 40 spaces and a letter, or 24 empty comments, kept the
    old patterns (whitespace, comment, whitespace, repeated; then whitespace or comment,
    repeated) backtracking for longer than anyone waits, and with them the ingest; the time
    doubled with each comment. Run apart, so that a regression fails instead of hanging."""
    code = ("from forensics.protocols import _mime\n"
            "print(_mime.sniff(b' ' * 1000 + b'x'), _mime.sniff(b'\\n\\t ' * 300 + b'<html>'),"
            " _mime.sniff(b'<!--' + b' ' * 1000), _mime.sniff(b'<!---->' * 140 + b'x'),"
            " _mime.sniff(b'<!---->' * 140 + b'<html>'), _mime.sniff(b'<?xml ?><!---->' * 60 + b'<rss'))\n")
    stdout = fresh_python(code, timeout=120)
    assert stdout.split() == ["text/plain", "text/html", "text/plain", "text/plain", "text/html", "text/rss"]


def test_http_body_of_spaces_does_not_stop_the_ingest(tmp_path):
    """End to end: a response body that opens with a long run of whitespace is typed and the
    ingest goes on (it hung in the MIME sniffing before)."""
    from _pcapbuild import eth, handshake_session, write_pcap

    body = b" " * 600 + b"plain words follow"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    cap = write_pcap(tmp_path / "ws.pcap", [eth(p) for p in handshake_session(
        request=b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n", response=resp)])
    code = ("import forensics\n"
            f"c = forensics.open_case({str(tmp_path / 'case')!r})\n"
            f"c.ingest({str(cap)!r})\n"
            "print(list(c.sql('SELECT resp_mime_types FROM http')['resp_mime_types'][0]))\n")
    stdout = fresh_python(code)
    assert stdout.strip().splitlines()[-1] == "['text/plain']"
