"""The content-addressed file store: hashes, magic, completeness, and hostile names and sizes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import zipfile
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from _pcapbuild import eth, handshake_session, write_pcap

import forensics
from forensics._magic import sniff
from forensics.errors import CaseError
from forensics.filestore import content_path, display_name, store
from forensics.scenario import artifacts

# The EICAR test file, assembled so that this source file is not itself the test file.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TS = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (symlinks not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def test_eicar_is_stored_by_content_with_its_hashes(case):
    rec = store(case, EICAR, claimed_name="eicar.com", protocol="http", direction="download", ts=TS,
                expected_size=68)
    assert (rec.md5, rec.sha256, rec.size) == (EICAR_MD5, EICAR_SHA256, 68)
    assert rec.sha1 == hashlib.sha1(EICAR).hexdigest()
    assert rec.path == case.path / "carved" / "27" / EICAR_SHA256 == content_path(case, EICAR_SHA256)
    assert rec.relpath == f"carved/27/{EICAR_SHA256}"
    assert rec.path.read_bytes() == EICAR
    assert not os.access(rec.path, os.W_OK) or os.geteuid() == 0  # read-only (root may write anyway)
    assert rec.path.stat().st_mode & 0o777 == 0o444
    assert rec.complete is True and rec.missing_bytes == 0 and rec.mime_type == "text/plain"
    f = case.sql("SELECT * FROM files").iloc[0]
    assert (f.fuid, f.md5, f.sha256, f.file_source, f.filename, f.state, f.source) == (
        rec.fuid, EICAR_MD5, EICAR_SHA256, "HTTP", "eicar.com", "COMPLETE", "carve")
    assert (f.seen_bytes, f.total_bytes, f.missing_bytes, bool(f.is_orig)) == (68, 68, 0, False)
    c = case.sql("SELECT * FROM carved_files").iloc[0]
    assert (c.fuid, c.path, c.direction, c.protocol, bool(c.complete)) == (
        rec.fuid, rec.relpath, "download", "http", True)
    assert 4.5 < c.entropy < 5.5


def test_same_content_is_written_once_and_same_transfer_recorded_once(case):
    a = store(case, EICAR, claimed_name="a.txt", protocol="http", uid="C1", ts=TS, depth=1)
    b = store(case, EICAR, claimed_name="b.txt", protocol="smb", uid="C2", ts=TS)
    again = store(case, EICAR, claimed_name="a.txt", protocol="http", uid="C1", ts=TS, depth=1)
    assert a.new_content and not b.new_content and not again.new_content
    assert a.fuid != b.fuid and a.fuid == again.fuid
    assert len(case.sql("SELECT * FROM files")) == 2 and len(case.sql("SELECT * FROM carved_files")) == 2
    files = [p for p in (case.path / "carved").rglob("*") if p.is_file()]
    assert files == [a.path]
    assert not any(p.is_file() for p in (case.path / "carved" / ".tmp").rglob("*"))


def test_batch_writes_rows_once_at_the_end(case):
    from forensics.filestore import batch

    with batch(case):
        recs = [store(case, f"file {i}".encode(), claimed_name="same.txt", uid="C1", depth=i)
                for i in range(50)]
        assert recs[0].path.is_file()  # bytes are written at once
        assert len(case.sql("SELECT * FROM files")) == 0  # rows at the end
        again = store(case, b"file 0", claimed_name="same.txt", uid="C1", depth=0)
    assert again.fuid == recs[0].fuid
    assert len(case.sql("SELECT * FROM files")) == len(case.sql("SELECT * FROM carved_files")) == 50


def test_transfers_without_lineage_are_told_apart_by_content(case):
    a = store(case, b"one", claimed_name="index.html", uid="C1", ts=TS)
    b = store(case, b"two", claimed_name="index.html", uid="C1", ts=TS)
    assert a.fuid != b.fuid and len(case.sql("SELECT * FROM files")) == 2


def test_fuid_is_deterministic_across_cases(tmp_path):
    fuids = []
    for name in ("x", "y"):
        with forensics.open_case(tmp_path / name) as c:
            fuids.append(store(c, b"data", claimed_name="n", protocol="ftp", uid="Cabc", ts=TS).fuid)
    assert fuids[0] == fuids[1] and fuids[0].startswith("F") and len(fuids[0]) == 18


def test_chunks_stream_to_the_same_result_as_bytes(case):
    data = random.Random(1).randbytes(300_000)
    whole = store(case, data, claimed_name="w")
    parts = store(case, (data[i:i + 7000] for i in range(0, len(data), 7000)), claimed_name="p")
    assert (whole.sha256, whole.md5, whole.sha1, whole.entropy) == (parts.sha256, parts.md5, parts.sha1,
                                                                   parts.entropy)
    assert whole.sha256 == hashlib.sha256(data).hexdigest() and whole.entropy > 7.99


def test_entropy_bounds(case):
    assert store(case, b"\0" * 4096).entropy == 0.0
    assert store(case, bytes(range(256)) * 16).entropy == pytest.approx(8.0)


def test_completeness_missing_ranges_and_incomplete_files_are_kept(case):
    # 100 bytes seen of 250 claimed: the carver filled a hole at 40..60 with zeros.
    data = b"A" * 40 + b"\0" * 20 + b"B" * 40
    rec = store(case, data, claimed_name="part.bin", expected_size=250, missing_ranges=[(50, 60), (40, 55)])
    assert rec.missing_ranges == ((40, 60), (100, 250))
    assert (rec.missing_bytes, rec.complete, rec.size) == (170, False, 100)
    f = case.sql("SELECT seen_bytes, total_bytes, missing_bytes, state FROM files").iloc[0]
    assert (f.seen_bytes, f.total_bytes, f.missing_bytes, f.state) == (80, 250, 170, "INCOMPLETE")
    c = case.sql("SELECT missing_ranges, complete FROM carved_files").iloc[0]
    assert json.loads(c.missing_ranges) == [[40, 60], [100, 250]] and not c.complete
    assert rec.path.read_bytes() == data  # kept, not dropped

    unknown = store(case, b"xyz", claimed_name="nolen")
    assert unknown.complete is None and unknown.missing_bytes == 0
    over = store(case, b"0123456789", claimed_name="over", expected_size=4)
    assert over.complete is True
    assert case.sql("SELECT state FROM files WHERE fuid = ?", [over.fuid])["state"][0] == "OVERSIZE"


def test_zero_length_file(case):
    rec = store(case, b"", claimed_name="empty.txt", expected_size=0)
    assert (rec.size, rec.sha256, rec.mime_type, rec.entropy, rec.complete) == (
        0, EMPTY_SHA256, "application/x-empty", 0.0, True)
    assert rec.path.is_file() and rec.path.stat().st_size == 0
    none_at_all = store(case, [], claimed_name="no chunks")
    assert none_at_all.sha256 == EMPTY_SHA256


def test_huge_and_endless_content_is_capped_and_flagged(case):
    def endless():
        block = b"\x90" * 65536
        while True:
            yield block

    rec = store(case, endless(), claimed_name="bomb.bin", max_size=1 << 20)
    assert rec.size == 1 << 20 and rec.truncated and rec.complete is False
    assert rec.path.stat().st_size == 1 << 20
    f = case.sql("SELECT state, extracted_cutoff, extracted_size FROM files").iloc[0]
    assert (f.state, bool(f.extracted_cutoff), f.extracted_size) == ("TRUNCATED", True, 1 << 20)


def test_gigantic_and_negative_claimed_sizes(case):
    big = store(case, b"tiny", claimed_name="claims-a-lot", expected_size=10**30)
    assert big.expected_size == (1 << 63) - 1 and big.missing_bytes == (1 << 63) - 1 - 4
    assert big.complete is False
    neg = store(case, b"tiny", claimed_name="negative", expected_size=-5)
    assert neg.expected_size is None and neg.complete is None


HOSTILE_NAMES = [
    "../../etc/passwd",
    "../../../../../../../../tmp/breachbook-pwned",
    "/etc/cron.d/pwned",
    "..\\..\\Windows\\System32\\drivers\\etc\\hosts",
    "C:\\Windows\\evil.dll",
    "\\\\server\\share\\..\\..\\x.exe",
    "name\x00.exe",
    b"\xff\xfe../../bad\x00utf8\x01\x1b[31m",
    "a/" * 3000 + "deep.txt",
    "",
    ".",
    "..",
    "carved/../../escape",
]


def test_hostile_names_never_become_paths(tmp_path):
    root = tmp_path / "around"
    case_dir = root / "one" / "two" / "case"
    outside = root / "outside"
    outside.mkdir(parents=True)
    with forensics.open_case(case_dir) as case:
        before = _tree(root)
        cwd_before = sorted(os.listdir(Path.cwd()))
        names = [*HOSTILE_NAMES, str(outside / "absolute.exe"), str(case_dir.parent / "sibling.exe")]
        for i, name in enumerate(names):
            store(case, f"payload {i}".encode(), claimed_name=name, protocol="http", uid=f"C{i}")
        pe = artifacts.pe_stub(random.Random(2), None, "hostile", 2048, 1_700_000_000)
        store(case, pe, claimed_name="../../../outside/evil.exe", protocol="smb", uid="Cpe")
        _scan_and_triage(case)
        after = _tree(root)
        new = sorted(set(after) - set(before))
        changed = sorted(p for p in before if p in after and before[p] != after[p])
        for p in new + changed:
            assert Path(p).is_relative_to(case_dir), f"written outside the case: {p}"
        stored = [p for p in new if Path(p).is_file() and "/carved/" in p and "/.tmp/" not in p]
        assert len(stored) == len(names) + 1
        assert all(Path(p).name == hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in stored)
        assert not (outside / "absolute.exe").exists() and not (case_dir.parent / "sibling.exe").exists()
        assert sorted(os.listdir(Path.cwd())) == cwd_before
        rows = case.sql("SELECT claimed_name, claimed_name_raw FROM carved_files ORDER BY uid")
        raw = {bytes(r) for r in rows["claimed_name_raw"]}
        assert b"../../etc/passwd" in raw and b"name\x00.exe" in raw
        assert b"\xff\xfe../../bad\x00utf8\x01\x1b[31m" in raw
        assert "name\\x00.exe" in rows["claimed_name"].tolist()
        assert all("\x00" not in n and "\x1b" not in n for n in rows["claimed_name"])
    assert not Path("/tmp/breachbook-pwned").exists()


def _scan_and_triage(case) -> None:
    """YARA and PE triage over the store too, when their libraries are installed."""
    try:
        import pefile  # noqa: F401
        import yara  # noqa: F401
    except ImportError:
        return
    from forensics import triage, yarascan

    assert yarascan.scan(case).errors == []
    assert triage.triage(case, workers=1).status == {"ok": 1}


def test_display_name():
    assert display_name(None) == (None, None)
    assert display_name("ok.txt") == ("ok.txt", b"ok.txt")
    assert display_name(b"a\x00b\xff") == ("a\\x00b\\xff", b"a\x00b\xff")
    text, raw = display_name("x" * 10_000)
    assert len(raw) == 4096 and len(text) == 4096


def test_a_tampered_store_is_refused(case, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = next(d for d in (str(i).encode() for i in range(5000))
                if hashlib.sha256(d).hexdigest()[:2] == "ab")
    (case.path / "carved" / "ab").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CaseError, match="tampered"):
        store(case, data, claimed_name="x")
    assert list(outside.iterdir()) == []
    assert not any(p.is_file() for p in (case.path / "carved" / ".tmp").rglob("*"))


def test_content_path_takes_only_hex():
    with pytest.raises(ValueError):
        content_path(None, "../../etc/passwd" + "0" * 48)  # type: ignore[arg-type]


def test_connection_comes_from_the_session(case, tmp_path):
    pcap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    case.ingest(pcap)
    uid = case.sql("SELECT uid FROM sessions")["uid"][0]
    rec = store(case, b"hello", claimed_name="h.txt", protocol="http", uid=uid, direction="download",
                source_row=("http_bodies", {"evidence_id": "e1", "record_offset": 10, "member": None}))
    f = case.sql("SELECT orig_h, orig_p, resp_h, resp_p, uid FROM files").iloc[0]
    assert (f.orig_h, f.orig_p, f.resp_h, f.resp_p, f.uid) == ("10.0.0.1", 40000, "10.0.0.2", 80, uid)
    c = case.sql("SELECT source_table, source_key FROM carved_files WHERE fuid = ?", [rec.fuid]).iloc[0]
    assert c.source_table == "http_bodies"
    assert c.source_key == '{"evidence_id":"e1","member":null,"record_offset":"10"}'


def _pe(dll: bool = False) -> bytes:
    head = bytearray(0x200)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", head, 0x80 + 22, 0x2022 if dll else 0x0022)
    return bytes(head)


def _zip(names: list[str]) -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in names:
            z.writestr(n, "x")
    return buf.getvalue()


@pytest.mark.parametrize(("data", "mime", "filetype"), [
    (_pe(), "application/x-dosexec", "EXE"),
    (_pe(dll=True), "application/x-dosexec", "EXE"),
    (b"MZ" + b"\0" * 100, "application/x-dosexec", "EXE"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 60, "application/x-executable", "ELF"),
    (b"\xcf\xfa\xed\xfe" + b"\0" * 60, "application/x-mach-o-executable", "MACH-O"),
    (b"%PDF-1.7\n%...", "application/pdf", "PDF"),
    (_zip(["a.txt"]), "application/zip", "ZIP"),
    (_zip(["[Content_Types].xml", "word/document.xml"]),
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "DOCX"),
    (_zip(["META-INF/MANIFEST.MF", "a.class"]), "application/java-archive", "JAR"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 20, "application/x-gzip", "GZIP"),
    (b"Rar!\x1a\x07\x01\x00", "application/x-rar", "RAR"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 50, "application/vnd.ms-office", "OLE"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "image/png", "PNG"),
    (b"<!DOCTYPE html><html></html>", "text/html", "HTML"),
    (b'{"a": 1}', "text/json", "JSON"),
    (b"#!/bin/sh\necho hi\n", "text/x-shellscript", "SCRIPT"),
    (b"{\\rtf1\\ansi hello}", "text/rtf", "RTF"),
    (b"just some words\n", "text/plain", "TEXT"),
    ("grüße\n".encode(), "text/plain", "TEXT"),
    (bytes(range(256)), "application/octet-stream", ""),
    (b"", "application/x-empty", ""),
])
def test_magic(data, mime, filetype):
    ft = sniff(data)
    assert (ft.mime, ft.filetype) == (mime, filetype)


def test_read_only_case_refuses(tmp_path):
    forensics.open_case(tmp_path / "ro").close()
    with forensics.open_case(tmp_path / "ro", read_only=True) as c, pytest.raises(CaseError):
        store(c, b"x")
