"""File carving from captures built in code: HTTP, SMB2, FTP and SMTP, and hostile input."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import random
import zlib
from pathlib import Path

import pytest
from _protobuild import Conv, write

from forensics import carve, yarascan
from forensics.scenario.smb import Smb2Client

# The EICAR test file, assembled so that this source file is not itself the test file.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _files(case):  # type: ignore[no-untyped-def]
    return case.sql("SELECT f.*, c.claimed_name, c.claimed_name_raw, c.complete, c.truncated, "
                    "c.missing_ranges, c.expected_size, c.protocol, c.direction, c.path FROM files f "
                    "JOIN carved_files c USING (fuid) ORDER BY f.ts, f.fuid").to_dict("records")


def _by_sha(case) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {r["sha256"]: r for r in _files(case)}


def _ingest(case, tmp_path: Path, *convs: Conv, name: str = "c.pcap") -> None:  # type: ignore[no-untyped-def]
    (res,) = case.ingest(write(tmp_path / name, *convs))
    assert res.error is None, res.error


def _tree(root: Path) -> set[str]:
    return {str(Path(dp) / n) for dp, dns, fns in os.walk(root) for n in dns + fns}


# ---- HTTP ------------------------------------------------------------------------------------------


def test_http_download_upload_and_lineage(case, tmp_path):
    req = b"PUT /drop/tool.exe HTTP/1.1\r\nHost: h\r\nContent-Length: 68\r\n\r\n" + EICAR
    req += b"GET /files/report.pdf?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 20
    resp = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    resp += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(pdf), pdf)
    _ingest(case, tmp_path, Conv().send(True, req, mss=20).send(False, resp).close())
    files = _by_sha(case)
    up, down = files[_sha(EICAR)], files[_sha(pdf)]
    assert len(files) == 2  # the empty 201 body is not a file
    assert up["md5"] == EICAR_MD5 and up["direction"] == "upload" and up["is_orig"]
    assert up["claimed_name"] == "tool.exe" and up["complete"] and up["depth"] == 1
    assert down["claimed_name"] == "report.pdf" and down["mime_type"] == "application/pdf"
    assert (down["seen_bytes"], down["total_bytes"], down["missing_bytes"]) == (len(pdf), len(pdf), 0)
    assert down["file_source"] == "HTTP" and down["source"] == "carve" and down["depth"] == 2
    assert Path(case.path / down["path"]).read_bytes() == pdf
    # lineage: the frame of the first body byte, and Zeek's join from http to files
    http = case.sql("SELECT trans_depth, orig_fuids, resp_fuids FROM http ORDER BY trans_depth")
    assert list(http["orig_fuids"][0]) == [up["fuid"]] and list(http["resp_fuids"][1]) == [down["fuid"]]
    assert down["record_offset"] > 0 and down["record_id"] > 0
    report = yarascan.scan(case)
    assert report.files_scanned >= 1
    hits = case.sql("SELECT sha256, rule FROM yara_hits")
    assert (_sha(EICAR), "EICAR_Test_File") in set(hits.itertuples(index=False, name=None))


def test_http_chunked_gzip_deflate_and_raw_deflate(case, tmp_path):
    text = b"<html>" + b"carved " * 3000 + b"</html>"
    gz = gzip.compress(text)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(gz[i:i + 500]), gz[i:i + 500])
                       for i in range(0, len(gz), 500))
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    rawdef = raw.compress(b"raw " * 999) + raw.flush()
    req = b"".join(b"GET /%s HTTP/1.1\r\nHost: h\r\n\r\n" % x for x in (b"a", b"b", b"c"))
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked
            + b"0\r\n\r\n"
            + b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(rawdef)
            + rawdef
            + b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
            % len(zlib.compress(b"zlib " * 99)) + zlib.compress(b"zlib " * 99))
    _ingest(case, tmp_path, Conv().send(True, req).send(False, resp).close())
    files = _by_sha(case)
    assert {_sha(text), _sha(b"raw " * 999), _sha(b"zlib " * 99)} <= set(files)
    assert files[_sha(text)]["mime_type"] == "text/html"


def test_decompression_bomb_is_capped_flagged_and_kept_raw(case, tmp_path):
    bomb = gzip.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB: a ratio near 1000
    resp = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
    _ingest(case, tmp_path, Conv().send(True, b"GET /z HTTP/1.1\r\nHost: h\r\n\r\n").send(False, resp)
            .close())
    rows = _files(case)
    dec = [r for r in rows if r["truncated"]]
    assert len(dec) == 1 and dec[0]["extracted_cutoff"] and dec[0]["state"] == "TRUNCATED"
    assert dec[0]["complete"] is False and dec[0]["seen_bytes"] < (64 << 20)
    assert _sha(bomb) in {r["sha256"] for r in rows}  # what was sent is kept too
    codes = case.warnings()
    msg = codes[codes["code"] == "carve_decompression_cap"]["message"].tolist()
    assert msg and "session " in msg[0] and "stream offset" in msg[0]


def test_multipart_upload_parts_and_path_traversal_name(case, tmp_path):
    evil = "../../../../../../tmp/breachbook-evil.sh"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"" + evil.encode() + b"\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + EICAR + b"\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"g\";"
            b" filename*=UTF-8''%E2%82%AC%20rapport.txt\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"euro " * 50) + b"\r\n"
            b"--XyZ--\r\n")
    req = (b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    before = _tree(tmp_path)
    _ingest(case, tmp_path, Conv().send(True, req).send(False, b"HTTP/1.1 204 No Content\r\n\r\n").close())
    new = {Path(p) for p in _tree(tmp_path) - before}
    assert {p for p in new if not p.is_relative_to(case.path)} == {tmp_path / "c.pcap"}
    files = _by_sha(case)
    whole, part = files[_sha(body)], files[_sha(EICAR)]
    assert part["parent_fuid"] == whole["fuid"] and part["claimed_name"] == evil
    assert files[_sha(b"hello")]["parent_fuid"] == whole["fuid"]
    assert files[_sha(b"euro " * 50)]["claimed_name"] == "€ rapport.txt"
    assert not Path("/tmp/breachbook-evil.sh").exists()
    for r in files.values():  # every stored path is a content address inside the case
        p = (case.path / r["path"]).resolve()
        assert p.is_relative_to((case.path / "carved").resolve()) and p.name == r["sha256"]
    http = case.sql("SELECT orig_fuids FROM http").to_dict("records")[0]
    assert set(http["orig_fuids"]) == {r["fuid"] for r in files.values()}


def test_segmented_reordered_and_overlapping_eicar(case, tmp_path):
    head = (b"HTTP/1.1 200 OK\r\nContent-Length: 68\r\nContent-Disposition: attachment; filename=e.com"
            b"\r\n\r\n")
    data = head + EICAR
    c = Conv().send(True, b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n")
    offs = list(range(0, len(data), 3))
    random.Random(7).shuffle(offs)
    for o in offs:  # 3-byte segments, out of order, each sent twice, with overlaps of 5 bytes
        c.seg(False, o, data[o:o + 5])
        c.seg(False, o, data[o:o + 3])
    c.seg(False, len(head) + 10, b"JUNKJUNK")  # a late conflicting copy: the first copy wins
    _ingest(case, tmp_path, c.close())
    files = _by_sha(case)
    assert files[_sha(EICAR)]["md5"] == EICAR_MD5 and files[_sha(EICAR)]["claimed_name"] == "e.com"


def test_gap_gives_missing_ranges_and_huge_claimed_size_is_only_compared(case, tmp_path):
    body = bytes(range(256)) * 40
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    c = Conv().send(True, b"GET /g HTTP/1.1\r\nHost: h\r\n\r\nGET /h HTTP/1.1\r\nHost: h\r\n\r\n")
    c.seg(False, 0, head + body[:4000]).seg(False, len(head) + 5000, body[5000:])
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999\r\n\r\nshort"
    c.seg(False, len(head) + len(body), huge)
    _ingest(case, tmp_path, c.close())
    rows = {r["total_bytes"]: r for r in _files(case)}
    r = rows[len(body)]
    assert r["complete"] is False and r["state"] == "INCOMPLETE"
    assert json.loads(r["missing_ranges"]) == [[4000, 5000]] and r["missing_bytes"] == 1000
    got = (case.path / r["path"]).read_bytes()
    assert got[:4000] == body[:4000] and got[4000:5000] == bytes(1000) and got[5000:] == body[5000:]
    h = rows[999999999999999]
    assert h["seen_bytes"] == 5 and h["missing_bytes"] == 999999999999999 - 5 and h["complete"] is False


def test_content_range_pieces_assembled(case, tmp_path):
    blob = random.Random(1).randbytes(30000)
    convs = []
    for i, (a, b) in enumerate([(0, 9999), (20000, 29999), (9000, 12999)]):
        resp = (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/40000\r\nETag: \"v1\"\r\n"
                b"Content-Length: %d\r\n\r\n" % (a, b, b - a + 1) + blob[a:b + 1])
        req = b"GET /big.iso HTTP/1.1\r\nHost: h\r\nRange: bytes=%d-%d\r\n\r\n" % (a, b)
        convs.append(Conv(cport=41000 + i).send(True, req).send(False, resp).close())
    _ingest(case, tmp_path, *convs)
    rows = [r for r in _files(case) if r["total_bytes"] == 40000]
    assert len(rows) == 1
    r = rows[0]
    got = (case.path / r["path"]).read_bytes()
    assert len(got) == 30000 and got[:13000] == blob[:13000] and got[20000:] == blob[20000:]
    assert json.loads(r["missing_ranges"]) == [[13000, 20000], [30000, 40000]]
    assert r["claimed_name"] == "big.iso" and r["complete"] is False


# ---- SMB2 ------------------------------------------------------------------------------------------


def _smb_conv(pairs: list[tuple[bytes, bytes]]) -> Conv:
    c = Conv("10.1.1.5", "10.1.1.20", 49700, 445)
    for q, r in pairs:
        c.send(True, q).send(False, r)
    return c.close()


def test_smb2_writes_reads_versions_and_holes(case, tmp_path):
    cl = Smb2Client(random.Random(3), "FS01", "10.1.1.20", "corp.example", "CORP", 1_700_000_000_000_000)
    pairs = [cl.negotiate()]
    tc, tree = cl.tree_connect("ADMIN$")
    ipc, ipc_tree = cl.tree_connect("IPC$")
    pairs += [tc, ipc]
    exe = b"MZ" + random.Random(2).randbytes(200_000)
    cr, fid = cl.create(tree, "svc\\payload.exe", write=True)
    pairs.append(cr)
    pairs += [cl.write(tree, fid, exe[o:o + 65536], o) for o in range(0, len(exe), 65536)]
    pairs.append(cl.write(tree, fid, b"PATCHED!", 1000))  # a rewrite: the first version is kept
    pairs.append(cl.close(tree, fid))
    doc = random.Random(4).randbytes(50_000)
    cr2, fid2 = cl.create(tree, "docs\\q3.xlsx", size=len(doc))
    pairs += [cr2, cl.read(tree, fid2, doc[:10000], 0), cl.read(tree, fid2, doc[30000:], 30000),
              cl.close(tree, fid2)]
    pcr, pfid = cl.create(ipc_tree, "svcctl", pipe=True)
    pairs += [pcr, cl.write(ipc_tree, pfid, b"\x05\x00\x0b\x03" + b"\0" * 68, 0), cl.close(ipc_tree, pfid)]
    big, bfid = cl.create(tree, "sparse.bin", write=True)
    pairs += [big, cl.write(tree, bfid, b"far away", 1 << 40), cl.close(tree, bfid)]
    _ingest(case, tmp_path, _smb_conv(pairs))
    files = _by_sha(case)
    v2 = exe[:1000] + b"PATCHED!" + exe[1008:]
    assert _sha(exe) in files and _sha(v2) in files  # both versions
    assert files[_sha(v2)]["claimed_name"] == "svc\\payload.exe" and files[_sha(v2)]["direction"] == "upload"
    assert files[_sha(exe)]["mime_type"] == "application/x-dosexec"
    smb_fuids = set(case.sql("SELECT fuid FROM smb_files WHERE fuid IS NOT NULL")["fuid"])
    assert files[_sha(exe)]["fuid"] in smb_fuids  # files joins smb_files as in Zeek
    want = doc[:10000] + bytes(20000) + doc[30000:]
    r = files[_sha(want)]
    assert json.loads(r["missing_ranges"]) == [[10000, 30000]] and r["direction"] == "download"
    assert (r["seen_bytes"], r["total_bytes"], r["complete"]) == (30000, 50000, False)
    assert not [f for f in files.values() if f["claimed_name"] == "svcctl"]  # a named pipe is not a file
    assert not [f for f in files.values() if f["claimed_name"] == "sparse.bin"]
    assert "carve_smb_offset" in set(case.warnings()["code"])


# ---- FTP -------------------------------------------------------------------------------------------


def test_ftp_data_channel_named_from_retr(case, tmp_path):
    ctl = Conv("10.0.0.5", "10.0.0.21", 40000, 21)
    ctl.send(False, b"220 ready\r\n").send(True, b"USER a\r\n").send(False, b"331 pw\r\n")
    ctl.send(True, b"PASS b\r\n").send(False, b"230 ok\r\n")
    ctl.send(True, b"CWD /pub\r\n").send(False, b"250 ok\r\n")
    ctl.send(True, b"PASV\r\n").send(False, b"227 Entering Passive Mode (10,0,0,21,200,10)\r\n")
    ctl.send(True, b"RETR tool.exe\r\n").send(False, b"150 Opening (68 bytes)\r\n")
    data = Conv("10.0.0.5", "10.0.0.21", 40001, 200 * 256 + 10).send(False, EICAR, mss=30).close()
    ctl.send(False, b"226 done\r\n").send(True, b"QUIT\r\n").send(False, b"221 bye\r\n").close()
    _ingest(case, tmp_path, ctl, data)
    f = _by_sha(case)[_sha(EICAR)]
    assert f["claimed_name"] == "/pub/tool.exe" and f["direction"] == "download" and f["complete"]
    assert f["file_source"] == "FTP_DATA"
    ftp = case.sql("SELECT fuid, data_uid FROM ftp WHERE command = 'RETR'").to_dict("records")[0]
    assert (f["fuid"], f["uid"]) == (ftp["fuid"], ftp["data_uid"])


# ---- SMTP ------------------------------------------------------------------------------------------


def _mail(conv: Conv, message: bytes) -> Conv:
    conv.send(False, b"220 mx ESMTP\r\n").send(True, b"EHLO c\r\n").send(False, b"250 ok\r\n")
    conv.send(True, b"MAIL FROM:<a@x.org>\r\n").send(False, b"250 ok\r\n")
    conv.send(True, b"RCPT TO:<b@y.org>\r\n").send(False, b"250 ok\r\n")
    conv.send(True, b"DATA\r\n").send(False, b"354 go\r\n").send(True, message + b".\r\n")
    return conv.send(False, b"250 queued\r\n").send(True, b"QUIT\r\n").send(False, b"221 bye\r\n").close()


def test_smtp_message_attachments_qp_nested_and_rfc2231(case, tmp_path):
    pdf = b"%PDF-1.7\n" + bytes(range(200)) * 10
    qp_text = b"caf\xc3\xa9 = cheap\r\n.leading dot line"  # the CRLF before a delimiter is its own
    msg = (b"From: a@x.org\r\nTo: b@y.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n"
           b"--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
           b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"caf=C3=A9 =3D cheap\r\n..leading dot line\r\n"
           b"--inner\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--inner--\r\n"
           b"--outer\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment;\r\n filename*0*=utf-8''Rapport%20;\r\n"
           b" filename*1=\"final.pdf\"\r\n\r\n"
           + base64.encodebytes(pdf).replace(b"\n", b"\r\n") +
           b"--outer\r\nContent-Type: application/octet-stream; name=\"=?utf-8?B?w6ljYXIuY29t?=\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(EICAR) + b"\r\n--outer--\r\n")
    _ingest(case, tmp_path, _mail(Conv("10.2.2.2", "10.2.2.25", 40100, 25), msg))
    files = _by_sha(case)
    eml = files[_sha(msg.replace(b"\r\n..", b"\r\n."))]  # dot-stuffing undone, the final CRLF kept
    assert eml["mime_type"] == "message/rfc822" and eml["file_source"] == "SMTP"
    assert files[_sha(qp_text)]["parent_fuid"] == eml["fuid"]
    assert files[_sha(pdf)]["claimed_name"] == "Rapport final.pdf"
    assert files[_sha(EICAR)]["claimed_name"] == "écar.com" and files[_sha(EICAR)]["md5"] == EICAR_MD5
    assert files[_sha(b"<p>hi</p>")]["parent_fuid"] == eml["fuid"]
    smtp_fuids = set(case.sql("SELECT unnest(fuids) AS f FROM smtp")["f"])
    assert {files[_sha(pdf)]["fuid"], files[_sha(EICAR)]["fuid"]} <= smtp_fuids  # smtp.fuids join files


def test_mime_nesting_bomb_is_capped(case, tmp_path):
    depth = 60
    msg = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
    for i in range(1, depth):
        msg += b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n" % (i - 1, i)
    msg += b"--b%d\r\nContent-Type: text/plain\r\n\r\nbottom\r\n" % (depth - 1)
    _ingest(case, tmp_path, _mail(Conv("10.2.2.2", "10.2.2.25", 40100, 25), msg))
    assert "carve_mime_depth_cap" in set(case.warnings()["code"])
    assert len(_files(case)) == 2  # the message, and the too-deep multipart kept as one part


# ---- the pipeline ----------------------------------------------------------------------------------


def test_reconstruct_case_and_carve_case_add_no_duplicates(case, tmp_path):
    from forensics.apps import reconstruct_case

    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 68\r\n\r\n" + EICAR
    _ingest(case, tmp_path, Conv().send(True, b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n").send(False, resp)
            .close())
    first = _files(case)
    eid = case.sql("SELECT evidence_id FROM evidence")["evidence_id"][0]
    reconstruct_case(case, eid)
    assert carve.carve_case(case) == {eid: 1}
    again = _files(case)
    assert [r["fuid"] for r in again] == [r["fuid"] for r in first]  # deterministic ids, no duplicates
    assert len(case.sql("SELECT * FROM carved_files")) == 1


def test_limits_bound_files_per_session(case, tmp_path, monkeypatch):
    limits = carve.Limits
    monkeypatch.setattr(carve, "Limits", lambda: limits(files_per_session=3))
    req = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(6))
    resp = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%02d" % i for i in range(6))
    _ingest(case, tmp_path, Conv().send(True, req).send(False, resp).close())
    assert len(_files(case)) == 3
    assert "carve_file_cap" in set(case.warnings()["code"])


@pytest.mark.parametrize("coding", ["br", "compress"])
def test_unknown_content_coding_kept_as_sent(case, tmp_path, coding):
    resp = (b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: 5\r\n\r\n" % coding.encode()
            + b"\x1b\x01\x02\x03\x04")
    _ingest(case, tmp_path, Conv().send(True, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").send(False, resp)
            .close())
    assert _sha(b"\x1b\x01\x02\x03\x04") in _by_sha(case)


def test_attached_message_is_opened_too(case, tmp_path):
    inner = (b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n"
             b"Content-Type: application/octet-stream; name=inner.bin\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"inner attachment")
             + b"\r\n--in--\r\n")
    msg = (b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n"
           b"Content-Type: text/plain\r\n\r\nsee below\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n"
           + inner + b"--out--\r\n")
    _ingest(case, tmp_path, _mail(Conv("10.2.2.2", "10.2.2.25", 40100, 25), msg))
    files = _by_sha(case)
    attached = files[_sha(inner[:-2])]  # the CRLF before the delimiter is the delimiter's
    assert files[_sha(b"inner attachment")]["parent_fuid"] == attached["fuid"]
    assert files[_sha(b"inner attachment")]["claimed_name"] == "inner.bin"


def test_sequence_jump_is_not_filled_with_gigabytes_of_zeros(case, tmp_path):
    ctl = Conv("10.0.0.5", "10.0.0.21", 40000, 21)
    ctl.send(False, b"220 ready\r\n").send(True, b"USER a\r\n").send(False, b"331 pw\r\n")
    ctl.send(True, b"PASS b\r\n").send(False, b"230 ok\r\n")
    ctl.send(True, b"PASV\r\n").send(False, b"227 Entering Passive Mode (10,0,0,21,200,10)\r\n")
    ctl.send(True, b"RETR big.iso\r\n").send(False, b"150 Opening\r\n")
    data = Conv("10.0.0.5", "10.0.0.21", 40001, 200 * 256 + 10)
    data.seg(False, 0, b"A" * 100).seg(False, 1 << 30, b"B" * 100).close()  # 1 GiB never seen
    ctl.send(False, b"226 done\r\n").close()
    _ingest(case, tmp_path, ctl, data)
    (f,) = _files(case)
    assert f["seen_bytes"] == 100 and f["extracted_size"] == 100 and f["complete"] is False
    assert f["missing_bytes"] >= 1 << 30
    assert "carve_fill_cap" in set(case.warnings()["code"])


def test_ingest_without_carving_then_breachbook_carve(tmp_path, capsys):
    from forensics import open_case
    from forensics.cli import main

    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 68\r\n\r\n" + EICAR
    conv = Conv().send(True, b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n").send(False, resp).close()
    cap = write(tmp_path / "c.pcap", conv)
    case_dir = tmp_path / "case"
    assert main(["ingest", "-q", "--no-carve", str(case_dir), str(cap)]) == 0
    with open_case(case_dir) as case:
        assert case.sql("SELECT count(*) AS n FROM carved_files")["n"][0] == 0
        assert case.sql("SELECT count(*) AS n FROM http_bodies")["n"][0] == 1  # protocols were parsed
        assert case.sql("SELECT resp_fuids IS NULL AS none FROM http")["none"][0]
    assert not any(p.is_file() for p in (case_dir / "carved").rglob("*"))
    capsys.readouterr()
    assert main(["carve", str(case_dir)]) == 0
    assert "1 file(s) carved from 1 capture(s)" in capsys.readouterr().out
    with open_case(case_dir) as case:
        (row,) = _files(case)
        assert row["md5"] == EICAR_MD5
        assert (case_dir / row["path"]).read_bytes() == EICAR
        assert case.sql("SELECT resp_fuids FROM http")["resp_fuids"][0].tolist() == [row["fuid"]]
