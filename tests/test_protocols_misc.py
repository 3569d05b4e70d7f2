"""SSH (HASSH), Kerberos, RDP, the parser registry, and parsers that must survive garbage."""

from __future__ import annotations

import os
import random
import struct

import pytest
from _protobuild import Conv, ingest, udp, write
from conftest import shared_path

from forensics import protocols
from forensics.protocols import ssh


@pytest.mark.shared
def test_hassh_matches_suricata_verify(case):
    ingest(case, shared_path("suricata-verify", "tests", "ssh-hassh", "input.pcap"))
    (r,) = case.sql("SELECT * FROM ssh").to_dict("records")
    assert r["hassh"] == "2dd6531c7e89d3c925db9214711be76a"
    assert r["hassh_server"] == "6832f1ce43d4397c2c0a3e2f8c94334e"
    assert r["version"] == 2 and r["kex_alg"] and r["host_key"].startswith("SHA256:")


@pytest.mark.shared
def test_kerberoasting_rc4_service_ticket(case):
    ingest(case, shared_path("suricata-verify", "tests", "krb5-kerberoasting", "kerberoast.pcap"))
    df = case.sql("SELECT request_type, cipher, success, service FROM kerberos WHERE request_type = 'TGS'")
    assert (df["cipher"] == "rc4-hmac").sum() == 1 and df["success"].all()


def test_rdp_cookie_and_negotiation(case, tmp_path):
    cookie = b"Cookie: mstshash=CORP\\admin\r\n"
    neg = struct.pack("<BBHI", 1, 0, 8, 3)  # RDP_NEG_REQ: SSL | HYBRID
    x224 = bytes([6 + len(cookie) + len(neg), 0xE0, 0, 0, 0, 0, 0]) + cookie + neg
    cr = b"\x03\x00" + struct.pack(">H", 4 + len(x224)) + x224
    cc_body = bytes([14, 0xD0, 0, 0, 0x12, 0x34, 0]) + struct.pack("<BBHI", 2, 0, 8, 2)
    cc = b"\x03\x00" + struct.pack(">H", 4 + len(cc_body)) + cc_body
    c = Conv(sport=13389).send(True, cr).send(False, cc).close()
    ingest(case, write(tmp_path / "r.pcap", c))
    (r,) = case.sql("SELECT * FROM rdp").to_dict("records")
    assert (r["cookie"], r["result"], r["security_protocol"]) == ("CORP\\admin", "Success", "HYBRID")
    assert sorted(r["requested_protocols"]) == ["HYBRID", "SSL"]


def test_hassh_definition():
    lists = [
        ["k1", "k2"],
        ["ssh-ed25519"],
        ["aes128-ctr"],
        ["aes256-ctr"],
        ["hmac-sha2-256"],
        ["hmac-sha1"],
        ["none"],
        ["zlib"],
        [],
        [],
    ]
    assert ssh.hassh(lists, server=False)[1] == "k1,k2;aes128-ctr;hmac-sha2-256;none"
    assert ssh.hassh(lists, server=True)[1] == "k1,k2;aes256-ctr;hmac-sha1;zlib"


def test_registry_orders_specific_signatures_first():
    names = [(a.service, a.transport) for a in protocols.ANALYZERS]
    assert ("ssl", "tcp") in names and ("dns", "udp") in names and ("smb", "tcp") in names
    orders = [a.order for a in protocols.ANALYZERS]
    assert orders == sorted(orders)


@pytest.mark.parametrize("port", [21, 25, 53, 80, 88, 135, 443, 445, 3389, 22])
def test_random_bytes_never_crash_a_parser(case, tmp_path, port):
    rnd = random.Random(port)
    c = Conv(sport=port)
    for _ in range(40):
        c.send(rnd.random() < 0.5, os.urandom(rnd.randint(1, 3000)))
    pk = [udp("10.0.0.1", "10.0.0.2", 5000 + i, port, os.urandom(rnd.randint(1, 600))) for i in range(20)]
    ingest(case, write(tmp_path / "r.pcap", c.close(), udp=pk))
    errors = case.sql("SELECT * FROM ingest_warnings WHERE code LIKE '%parser_error'")
    assert errors.empty, errors["message"].tolist()


_PREFIXES = {
    "http": (
        80,
        b"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
    ),
    "tls": (
        443,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x16\x03\x03\x00\x60\x02\x00\x00\x5c\x03\x03",
    ),
    "smb": (445, b"\x00\x00\x01\x00\xfeSMB\x40\x00", b"\x00\x00\x01\x00\xfeSMB\x40\x00"),
    "smb1": (445, b"\x00\x00\x01\x00\xffSMBs\x00\x00\x00\x00", b"\x00\x00\x00\x80\xffSMBr\x00\x00\x00\x00"),
    "ssh": (22, b"SSH-2.0-fuzz\r\n\x00\x00\x01\x00\x05\x14", b"SSH-2.0-fuzz\r\n\x00\x00\x02\x00\x08\x1f"),
    "dce": (
        135,
        b"\x05\x00\x0b\x03\x10\x00\x00\x00\x00\x01\x40\x00\x01\x00\x00\x00",
        b"\x05\x00\x0c\x03\x10\x00\x00\x00",
    ),
    "ftp": (21, b"USER anonymous\r\nPASV\r\nRETR ", b"220 FTP\r\n227 Entering Passive Mode (1,2,3"),
    "smtp": (25, b"EHLO x\r\nMAIL FROM:<a@b>\r\nBDAT 99999999 LAST\r\n", b"220 SMTP\r\n250-"),
    "krb": (
        88,
        b"\x00\x00\x01\x00\x6a\x82\x00\xfc\x30\x82\x00\xf8\xa1\x03\x02\x01\x05",
        b"\x00\x00\x00\x40\x7e",
    ),
    "rdp": (
        3389,
        b"\x03\x00\x00\x30\x2b\xe0\x00\x00\x00\x00\x00Cookie: mstshash=",
        b"\x03\x00\x00\x13\x0e\xd0",
    ),
}


@pytest.mark.parametrize("proto", sorted(_PREFIXES))
def test_valid_prefix_then_garbage_is_bounded(case, tmp_path, proto):
    port, po, pr = _PREFIXES[proto]
    rnd = random.Random(proto)
    convs = []
    for i in range(12):
        c = Conv(cport=41000 + i, sport=port)
        c.send(True, po + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 2000))))
        c.send(False, pr + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 2000))))
        convs.append(c.close())
    ingest(case, write(tmp_path / "p.pcap", *convs))
    errors = case.sql("SELECT message FROM ingest_warnings WHERE code LIKE '%parser_error'")
    assert errors.empty, errors["message"].tolist()
