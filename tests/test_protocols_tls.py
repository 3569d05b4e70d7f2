"""TLS handshakes built byte by byte: version, cipher, SNI, ALPN, certificate, history, JA3/JA3S/JA4."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

import pytest
from _protobuild import Conv, ingest, write
from conftest import shared_path

from forensics.protocols import _tlsfp
from forensics.protocols._x509 import parse_certificate

GREASE = 0x2A2A
# The example ClientHello of the JA4 specification (FoxIO): 15 ciphers, 16 extensions, h2.
CIPHERS = [
    GREASE,
    0x1301,
    0x1302,
    0x1303,
    0xC02B,
    0xC02F,
    0xC02C,
    0xC030,
    0xCCA9,
    0xCCA8,
    0xC013,
    0xC014,
    0x009C,
    0x009D,
    0x002F,
    0x0035,
]
SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def _ext(t: int, body: bytes) -> bytes:
    return struct.pack(">HH", t, len(body)) + body


def _vec16(items: list[int]) -> bytes:
    return struct.pack(">H", 2 * len(items)) + b"".join(struct.pack(">H", i) for i in items)


def client_hello(sni: str = "www.example.com") -> bytes:
    name = sni.encode()
    exts = [
        _ext(GREASE, b""),
        _ext(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name),
        _ext(0x0017, b""),
        _ext(0xFF01, b"\0"),
        _ext(0x000A, _vec16([GREASE, 29, 23, 24])),
        _ext(0x000B, b"\x01\x00"),
        _ext(0x0023, b""),
        _ext(0x0010, b"\x00\x0c\x02h2\x08http/1.1"),
        _ext(0x0005, b"\x01\x00\x00\x00\x00"),
        _ext(0x000D, _vec16(SIGALGS)),
        _ext(0x0012, b""),
        _ext(0x0033, b"\x00\x00"),
        _ext(0x002D, b"\x01\x01"),
        _ext(0x002B, b"\x06" + struct.pack(">HHH", GREASE, 0x0304, 0x0303)),
        _ext(0x001B, b"\x00\x02\x00\x02"),
        _ext(0x4469, b""),
        _ext(0x0015, b"\x00" * 8),
    ]
    ext = b"".join(exts)
    body = (
        struct.pack(">H", 0x0303)
        + b"\x11" * 32
        + b"\x20"
        + b"\x22" * 32
        + _vec16(CIPHERS)
        + b"\x01\x00"
        + struct.pack(">H", len(ext))
        + ext
    )
    return _handshake(1, body)


def _handshake(t: int, body: bytes) -> bytes:
    return bytes([t]) + len(body).to_bytes(3, "big") + body


def _record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body)) + body


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    ln = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + ln + body


def _name(*rdns: tuple[bytes, str]) -> bytes:
    return _der(
        0x30, b"".join(_der(0x31, _der(0x30, _der(0x06, oid) + _der(0x0C, v.encode()))) for oid, v in rdns)
    )


CN, ORG, C = b"\x55\x04\x03", b"\x55\x04\x0a", b"\x55\x04\x06"


def certificate() -> bytes:
    alg = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")
    san = _der(0x30, _der(0x06, b"\x55\x1d\x11") + _der(0x04, _der(0x30, _der(0x82, b"*.example.com"))))
    tbs = _der(
        0x30,
        _der(0xA0, _der(0x02, b"\x02"))
        + _der(0x02, bytes.fromhex("00a1b2c3d4"))
        + alg
        + _name((C, "US"), (ORG, "Example, Inc"), (CN, "Example CA"))
        + _der(0x30, _der(0x17, b"240101000000Z") + _der(0x17, b"350101000000Z"))
        + _name((CN, "www.example.com"))
        + _der(0x30, alg + _der(0x03, b"\x00\x01\x02"))
        + _der(0xA3, _der(0x30, san)),
    )
    return _der(0x30, tbs + alg + _der(0x03, b"\x00" + b"\x5a" * 16))


def server_flight(cert: bytes) -> bytes:
    exts = _ext(0xFF01, b"\0") + _ext(0x0010, b"\x00\x03\x02h2") + _ext(0x000B, b"\x01\x00")
    sh = (
        struct.pack(">H", 0x0303)
        + b"\x33" * 32
        + b"\x00"
        + struct.pack(">HB", 0xC02F, 0)
        + struct.pack(">H", len(exts))
        + exts
    )
    certs = len(cert).to_bytes(3, "big") + cert
    ske = b"\x03" + struct.pack(">H", 23) + b"\x41" + b"\x04" * 65
    return _record(
        22,
        _handshake(2, sh)
        + _handshake(11, len(certs).to_bytes(3, "big") + certs)
        + _handshake(12, ske)
        + _handshake(14, b""),
    )


def test_ja4_of_the_specification_example():
    ch = _tlsfp.parse_client_hello(client_hello()[4:])
    assert _tlsfp.ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    ja3_text = (
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
        "0-23-65281-10-11-35-16-5-13-18-51-45-43-27-17513-21,29-23-24,0"
    )
    assert _tlsfp.ja3(ch) == hashlib.md5(ja3_text.encode()).hexdigest()


def test_tls12_handshake_row(case, tmp_path):
    cert = certificate()
    c = Conv(sport=8443).send(True, _record(22, client_hello(), 0x0301)).send(False, server_flight(cert))
    c.send(True, _record(22, _handshake(16, b"\x00" * 66)) + _record(20, b"\x01") + _record(22, b"\xee" * 40))
    c.send(False, _record(20, b"\x01") + _record(22, b"\xee" * 40) + _record(23, b"\xaa" * 100))
    c.send(True, _record(23, b"\xbb" * 50)).close()
    ingest(case, write(tmp_path / "t.pcap", c))
    (r,) = case.sql("SELECT * FROM tls").to_dict("records")
    assert (r["version"], r["cipher"], r["curve"]) == (
        "TLSv12",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "secp256r1",
    )
    assert (r["server_name"], r["next_protocol"], r["established"]) == ("www.example.com", "h2", True)
    assert r["ssl_history"] == "CsxknGIi"
    assert list(r["cert_chain_fps"]) == [hashlib.sha256(cert).hexdigest()]
    assert list(r["client_cert_chain_fps"]) == []
    assert r["subject"] == "CN=www.example.com"
    assert r["issuer"] == "CN=Example CA,O=Example\\, Inc,C=US"
    assert r["serial"] == "A1B2C3D4"
    assert r["not_valid_after"].to_pydatetime() == datetime(2035, 1, 1, tzinfo=UTC)
    assert bool(r["sni_matches_cert"])
    assert r["ja4"] == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert r["ja3s"] == hashlib.md5(b"771,49199,65281-16-11").hexdigest()
    assert case.sql("SELECT service FROM sessions WHERE proto='tcp'")["service"][0] == "ssl"


def test_truncated_and_bogus_records_are_bounded(case, tmp_path):
    hello = _record(22, client_hello())
    c = Conv(sport=443).send(True, hello[:60]).send(False, b"\x16\x03\x03\xff\xff" + b"junk" * 10).close()
    ingest(case, write(tmp_path / "x.pcap", c))
    assert case.sql("SELECT count(*) AS n FROM tls")["n"][0] == 0  # no hello ever completed
    assert {"tls_truncated_record", "tls_bad_record"} <= set(case.warnings()["code"])


def test_certificate_parser_rejects_garbage():
    from forensics.protocols._x509 import DerError

    with pytest.raises(DerError):
        parse_certificate(b"\x30\x84\xff\xff\xff\xff")
    assert parse_certificate(certificate()).san_dns == ["*.example.com"]


@pytest.mark.shared
def test_issuer_and_serial_of_suricata_tls_cert_test(case):
    ingest(case, shared_path("suricata-verify", "tests", "tls", "tls-cert-issuer", "tls.pcap"))
    df = case.sql("SELECT issuer, serial, resumed FROM tls WHERE serial IS NOT NULL")
    # suricata-verify expects issuerdn "C=FR, ST=IDF, L=Paris, O=Stamus, CN=SELKS" and serial 00:97:E6:...:B4
    assert set(df["issuer"]) == {"CN=SELKS,O=Stamus,L=Paris,ST=IDF,C=FR"}
    assert set(df["serial"]) == {"97E647098EEAC9B4"}
    assert case.sql("SELECT count(*) AS n FROM tls WHERE resumed")["n"][0] == 1
