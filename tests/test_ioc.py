"""Threat-intel feeds (plain, CSV, STIX 2.1, MISP) matched against a small case: exact hits."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from _pcapbuild import eth, handshake_session, write_pcap

from forensics import ioc
from forensics._iocfeeds import classify, stix_pattern, url_key
from forensics._rowref import row_keys
from forensics.errors import BreachbookError
from forensics.filestore import store
from forensics.scan_cli import add_parser

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_SHA1 = hashlib.sha1(EICAR).hexdigest()
EICAR_SHA256 = hashlib.sha256(EICAR).hexdigest()
JA3 = "e7d705a3286e19ea42f587b344ee6865"
T = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # when the capture's sessions happen
EV = "ev00000000000001"

SESSIONS = [  # client, server, client port, server port
    ("10.0.0.5", "203.0.113.7", 40001, 80),
    ("10.0.0.5", "198.51.100.20", 40002, 443),
    ("10.0.0.6", "192.0.2.55", 40003, 8080),
    ("10.0.0.6", "10.0.0.2", 40004, 445),
]


def _lineage(offset: int) -> dict:
    return {"evidence_id": EV, "record_offset": offset, "member": None, "source": "test", "ts": T}


@pytest.fixture
def small_case(case, tmp_path):
    frames = []
    for c, s, cp, sp in SESSIONS:
        frames += [eth(p) for p in handshake_session(client=c, server=s, cport=cp, sport=sp)]
    # Sessions only: the dns/http/tls rows the hits are asserted on are inserted below.
    case.ingest(write_pcap(tmp_path / "net.pcap", frames), protocols=False)
    assert len(case.sessions()) == 4
    ins = case._insert
    ins("dns", pa.Table.from_pylist([
        {**_lineage(100), "query": "cdn.evil.example", "answers": ["198.51.100.20", "alias.notevil.example"]},
        {**_lineage(200), "query": "notevil.example", "answers": ["192.0.2.1"]},
    ]))
    ins("http", pa.Table.from_pylist([
        {**_lineage(300), "host": "www.bad.example", "uri": "/payload/dropper.exe", "orig_h": "10.0.0.5",
         "resp_h": "203.0.113.7"},
        {**_lineage(400), "host": "www.good.example:8080", "uri": "/index.html", "orig_h": "10.0.0.5",
         "resp_h": "198.51.100.99"},
    ]))
    ins("tls", pa.Table.from_pylist([
        {**_lineage(500), "server_name": "login.evil.example", "ja3": JA3},
        {**_lineage(600), "server_name": "ok.example", "ja3": "0" * 32},
    ]))
    ins("logons", pa.Table.from_pylist([{**_lineage(800), "src_ip": "192.0.2.55", "dst_ip": "10.0.0.2"}]))
    ins("events", pa.Table.from_pylist([{**_lineage(900), "dst": "c2.evil.example"}]))
    store(case, EICAR, claimed_name="eicar.com", protocol="http", evidence_id=EV, record_offset=700, ts=T)
    return case


def _stix_indicator(n: int, pattern: str, **kw) -> dict:
    return {"type": "indicator", "spec_version": "2.1", "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
            "created": "2023-10-01T00:00:00.000Z", "modified": f"2023-10-0{n % 9 + 1}T00:00:00.000Z",
            "name": f"indicator {n}", "indicator_types": ["malicious-activity"], "pattern": pattern,
            "pattern_type": "stix", "valid_from": "2023-01-01T00:00:00Z", **kw}


def stix_bundle() -> dict:
    """A STIX 2.1 bundle per the OASIS spec (indicators with STIX patterns, a report)."""
    return {"type": "bundle", "id": "bundle--11111111-1111-4111-8111-111111111111", "objects": [
        {"type": "report", "spec_version": "2.1", "id": "report--22222222-2222-4222-8222-222222222222",
         "created": "2023-10-01T00:00:00Z", "modified": "2023-10-01T00:00:00Z", "name": "Operation Test",
         "published": "2023-10-01T00:00:00Z", "object_refs": []},
        _stix_indicator(1, "[ipv4-addr:value = '203.0.113.7']"),
        _stix_indicator(2, "[ipv4-addr:value ISSUBSET '198.51.100.0/24']"),
        _stix_indicator(3, "[domain-name:value = 'evil.example']"),
        _stix_indicator(4, "[url:value = 'http://www.bad.example/payload/dropper.exe']"),
        _stix_indicator(5, f"[file:hashes.'SHA-256' = '{EICAR_SHA256}' AND file:name = 'eicar.com']"),
        _stix_indicator(6, "[ipv4-addr:value = '192.0.2.55']", valid_from="2020-01-01T00:00:00Z",
                        valid_until="2021-01-01T00:00:00Z"),  # expired long before the capture
        _stix_indicator(7, "[ipv4-addr:value = '10.0.0.5']", revoked=True),
        _stix_indicator(8, "alert tcp any any -> any any (msg:\"x\";)", pattern_type="snort"),
        _stix_indicator(9, "[ipv4-addr:value = '10.0.0.2'] OR [domain-name:value = 'www.bad.example']"),
    ]}


def misp_event() -> dict:
    """A MISP event in MISP's JSON export format (Event, Attribute, Object, Tag)."""
    def attr(n: int, typ: str, value: str, **kw) -> dict:
        return {"id": str(n), "uuid": f"5f000000-0000-4000-8000-{n:012d}", "type": typ,
                "category": "Network activity", "value": value, "to_ids": True, "deleted": False,
                "timestamp": "1699000000", "comment": "", **kw}

    return {"Event": {
        "id": "42", "uuid": "5f000000-0000-4000-8000-000000000042", "info": "Test intrusion set",
        "date": "2023-11-10", "timestamp": "1699999999", "publish_timestamp": "1700000000", "published": True,
        "threat_level_id": "1", "analysis": "2", "Tag": [{"name": "tlp:green"}],
        "Attribute": [
            attr(1, "ip-dst|port", "192.0.2.55|8080", first_seen="2023-11-01T00:00:00.000000+00:00",
                 last_seen="2023-12-01T00:00:00.000000+00:00"),
            attr(2, "domain|ip", "c2.evil.example|203.0.113.7"),
            attr(3, "md5", EICAR_MD5, category="Payload delivery"),
            attr(4, "ja3-fingerprint-md5", JA3),
            attr(5, "link", "https://blog.example/report"),
            attr(6, "ip-dst", "10.0.0.6", deleted=True),
            attr(7, "filename|sha256", f"eicar.com|{EICAR_SHA256}", to_ids=False),
            attr(8, "hostname", "login.evil.example", last_seen="2023-11-14T00:00:00+00:00"),  # ended before
        ],
        "Object": [{"name": "file", "uuid": "5f000000-0000-4000-8000-0000000000f1", "Attribute": [
            attr(9, "sha1", EICAR_SHA1, category="Payload delivery"),
            attr(10, "filename", "eicar.com"),
        ]}],
    }}


def _hits(case) -> set[tuple]:
    df = case.sql('SELECT feed, type, value, table_name, "column", matched FROM ioc_hits')
    return set(df.itertuples(index=False, name=None))


def test_stix_and_misp_exact_hits(small_case, tmp_path):
    case = small_case
    (tmp_path / "stix.json").write_text(json.dumps(stix_bundle()))
    (tmp_path / "misp.json").write_text(json.dumps(misp_event()))
    s = ioc.import_feed(case, tmp_path / "stix.json", "stix")
    m = ioc.import_feed(case, tmp_path / "misp.json", "misp")
    assert (s.format, s.indicators) == ("stix2.1", 8)
    assert dict(s.skipped) == {"revoked": 1, "pattern_type snort": 1}
    assert s.version == "2023-10-09T00:00:00.000Z"
    assert (m.format, m.indicators) == ("misp", 8)
    assert dict(m.skipped) == {"type link": 1, "deleted": 1, "type filename": 1}
    assert m.version == "2023-11-14T22:13:19+00:00"
    rep = ioc.match(case)
    expected = {
        ("stix", "ip", "203.0.113.7", "sessions", "resp_h", "203.0.113.7"),
        ("stix", "ip", "203.0.113.7", "http", "resp_h", "203.0.113.7"),
        ("stix", "cidr", "198.51.100.0/24", "sessions", "resp_h", "198.51.100.20"),
        ("stix", "cidr", "198.51.100.0/24", "dns", "answers", "198.51.100.20"),
        ("stix", "cidr", "198.51.100.0/24", "http", "resp_h", "198.51.100.99"),
        ("stix", "domain", "evil.example", "dns", "query", "cdn.evil.example"),
        ("stix", "domain", "evil.example", "tls", "server_name", "login.evil.example"),
        ("stix", "domain", "evil.example", "events", "dst", "c2.evil.example"),
        ("stix", "url", "http://www.bad.example/payload/dropper.exe", "http", "uri",
         "www.bad.example/payload/dropper.exe"),
        ("stix", "sha256", EICAR_SHA256, "files", "sha256", EICAR_SHA256),
        ("stix", "ip", "10.0.0.2", "sessions", "resp_h", "10.0.0.2"),
        ("stix", "ip", "10.0.0.2", "logons", "dst_ip", "10.0.0.2"),
        ("stix", "domain", "www.bad.example", "http", "host", "www.bad.example"),
        ("misp", "ip", "192.0.2.55", "sessions", "resp_h", "192.0.2.55"),
        ("misp", "ip", "192.0.2.55", "logons", "src_ip", "192.0.2.55"),
        ("misp", "domain", "c2.evil.example", "events", "dst", "c2.evil.example"),
        ("misp", "ip", "203.0.113.7", "sessions", "resp_h", "203.0.113.7"),
        ("misp", "ip", "203.0.113.7", "http", "resp_h", "203.0.113.7"),
        ("misp", "md5", EICAR_MD5, "files", "md5", EICAR_MD5),
        ("misp", "sha1", EICAR_SHA1, "files", "sha1", EICAR_SHA1),
        ("misp", "sha256", EICAR_SHA256, "files", "sha256", EICAR_SHA256),
        ("misp", "ja3", JA3, "tls", "ja3", JA3),
    }
    assert _hits(case) == expected
    assert rep.hits == len(expected) and rep.skipped == []
    # Not hit: notevil.example (not a subdomain), 192.0.2.55 in the expired STIX window,
    # login.evil.example in MISP (its last_seen is before the TLS row), revoked 10.0.0.5.
    uid = case.sessions(host="192.0.2.55")["uid"][0]
    hit = case.sql("SELECT * FROM ioc_hits WHERE table_name = 'sessions' AND value = '192.0.2.55'").iloc[0]
    assert hit.uid == uid and hit.row_key == row_keys("sessions", uid)[1][0]
    tls = case.sql("SELECT row_key FROM ioc_hits WHERE type = 'ja3'")["row_key"][0]
    assert tls == row_keys("tls", {"evidence_id": EV, "record_offset": 500, "member": None})[1][0]
    feeds = case.sql("SELECT feed, version, format, description FROM ioc_feeds ORDER BY feed")
    assert feeds.values.tolist() == [["misp", m.version, "misp", "Test intrusion set"],
                                     ["stix", s.version, "stix2.1", "Operation Test"]]
    ind = case.sql("SELECT to_ids, labels FROM ioc_indicators "
                   "WHERE feed = 'misp' AND type = 'sha256'").iloc[0]
    assert not ind.to_ids and "tlp:green" in list(ind.labels)


def test_validity_can_be_ignored(small_case, tmp_path):
    (tmp_path / "stix.json").write_text(json.dumps(stix_bundle()))
    ioc.import_feed(small_case, tmp_path / "stix.json", "stix")
    ioc.match(small_case, honour_validity=False)
    assert ("stix", "ip", "192.0.2.55", "sessions", "resp_h", "192.0.2.55") in _hits(small_case)


def test_reimport_and_rematch_replace(small_case, tmp_path):
    (tmp_path / "misp.json").write_text(json.dumps(misp_event()))
    ioc.import_feed(small_case, tmp_path / "misp.json", "misp")
    ioc.match(small_case)
    first = small_case.sql("SELECT count(*) AS n FROM ioc_hits")["n"][0]
    ioc.import_feed(small_case, tmp_path / "misp.json", "misp")
    ioc.match(small_case)
    ioc.match(small_case, ["misp"])
    assert small_case.sql("SELECT count(*) AS n FROM ioc_hits")["n"][0] == first == 9
    assert small_case.sql("SELECT count(*) AS n FROM ioc_indicators")["n"][0] == 8


def test_plain_and_csv_feeds(small_case, tmp_path):
    (tmp_path / "bad.txt").write_text(
        "# blocklist v3\n203.0.113.0/28\n0.0.0.0 cdn.evil.example\nhxxp://www[.]bad[.]example/payload/dropper.exe\n"
        f"ja3:{JA3}  # a JA3\n{EICAR_MD5}\nnot an indicator!\n")
    (tmp_path / "ja3.csv").write_text(
        "################\n# abuse.ch SSLBL JA3\n# ja3_md5,Firstseen,Lastseen,Listingreason\n"
        f"{JA3},2023-01-01,2023-12-01,Test C2\n")
    (tmp_path / "typed.csv").write_text(
        "type,value,valid_from,valid_until,description\nIPv4,192.0.2.55,2023-11-14T00:00:00Z,,c2\n"
        f"FileHash-SHA1,{EICAR_SHA1},,,eicar\nemail,x@example.com,,,\n")
    plain = ioc.import_feed(small_case, tmp_path / "bad.txt")
    assert (plain.feed, plain.format, plain.indicators, dict(plain.skipped)) == (
        "bad", "plain", 5, {"malformed or unsupported value": 1})
    ja3 = ioc.import_feed(small_case, tmp_path / "ja3.csv", "sslbl")
    assert (ja3.format, ja3.indicators) == ("csv", 1)
    typed = ioc.import_feed(small_case, tmp_path / "typed.csv")
    assert typed.indicators == 2 and dict(typed.skipped) == {"unsupported type email": 1}
    ioc.match(small_case)
    assert _hits(small_case) == {
        ("bad", "cidr", "203.0.113.0/28", "sessions", "resp_h", "203.0.113.7"),
        ("bad", "cidr", "203.0.113.0/28", "http", "resp_h", "203.0.113.7"),
        ("bad", "domain", "cdn.evil.example", "dns", "query", "cdn.evil.example"),
        ("bad", "url", "http://www.bad.example/payload/dropper.exe", "http", "uri",
         "www.bad.example/payload/dropper.exe"),
        ("bad", "ja3", JA3, "tls", "ja3", JA3),
        ("bad", "md5", EICAR_MD5, "files", "md5", EICAR_MD5),
        ("sslbl", "ja3", JA3, "tls", "ja3", JA3),
        ("typed", "ip", "192.0.2.55", "sessions", "resp_h", "192.0.2.55"),
        ("typed", "ip", "192.0.2.55", "logons", "src_ip", "192.0.2.55"),
        ("typed", "sha1", EICAR_SHA1, "files", "sha1", EICAR_SHA1),
    }


def test_missing_tables_are_skipped(small_case, tmp_path):
    small_case.con.execute("DROP TABLE tls")
    small_case.con.execute("DROP TABLE events")
    (tmp_path / "misp.json").write_text(json.dumps(misp_event()))
    ioc.import_feed(small_case, tmp_path / "misp.json", "misp")
    rep = ioc.match(small_case)
    assert set(rep.skipped) == {"tls.server_name", "tls.ja3", "events.src_ip", "events.dst"}
    assert rep.hits == 7


def test_unsupported_feed(case, tmp_path):
    (tmp_path / "x.json").write_text('{"hello": "world"}')
    with pytest.raises(BreachbookError, match="neither"):
        ioc.import_feed(case, tmp_path / "x.json")
    with pytest.raises(BreachbookError, match="no such"):
        ioc.import_feed(case, tmp_path / "missing.txt")


@pytest.mark.parametrize(("raw", "hint", "expected"), [
    ("1.2.3.4", None, ("ip", "1.2.3.4")),
    ("1.2.3.4/32", None, ("ip", "1.2.3.4")),
    ("10.1.2.3/8", None, ("cidr", "10.0.0.0/8")),
    ("2001:DB8::1", None, ("ip", "2001:db8::1")),
    ("Evil.Example.", None, ("domain", "evil.example")),
    ("*.evil.example", "domain", ("domain", "evil.example")),
    ("bücher.example", None, ("domain", "xn--bcher-kva.example")),
    ("evil[.]example", None, ("domain", "evil.example")),
    ("HTTP://Evil.Example:80/a?b=1#frag", None, ("url", "http://evil.example:80/a?b=1")),
    ("D41D8CD98F00B204E9800998ECF8427E", None, ("md5", "d41d8cd98f00b204e9800998ecf8427e")),
    ("d41d8cd98f00b204e9800998ecf8427e", "ja3", ("ja3", "d41d8cd98f00b204e9800998ecf8427e")),
    ("192.0.2.1", "domain", ("ip", "192.0.2.1")),
])
def test_classify(raw, hint, expected):
    assert classify(raw, hint) == expected


@pytest.mark.parametrize("raw", ["", "not valid", "12345", "a" * 40 + "z", "http://"])
def test_classify_rejects(raw):
    with pytest.raises(ValueError):
        classify(raw)


def test_url_key_ignores_scheme_and_default_port():
    assert url_key("http://a.example:80/x") == url_key("https://A.example/x") == "a.example/x"
    assert url_key("http://a.example:8080") == "a.example:8080/"


def test_stix_patterns():
    assert stix_pattern("[ipv4-addr:value = '1.2.3.4' OR ipv6-addr:value = '::1']")[0] == [
        ("ip", "1.2.3.4"), ("ip", "::1")]
    assert stix_pattern("[network-traffic:dst_ref.value = '1.2.3.4' AND network-traffic:dst_port = 80]") == (
        [], "compound pattern without a file hash")
    assert stix_pattern("[file:hashes.MD5 = 'ab' AND file:size = 3]")[0] == [("md5", "ab")]
    assert stix_pattern("[NOT domain-name:value = 'x.example']") == ([], "negated pattern")
    assert stix_pattern("[url:value = 'http://x.example/it\\'s']")[0] == [("url", "http://x.example/it's")]
    assert stix_pattern("[ipv4-addr:value IN ('1.1.1.1', '2.2.2.2')]")[0] == [
        ("ip", "1.1.1.1"), ("ip", "2.2.2.2")]


def test_cli(small_case, tmp_path, capsys):
    import argparse

    (tmp_path / "stix.json").write_text(json.dumps(stix_bundle()))
    path = small_case.path
    small_case.close()
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["ioc", str(path), str(tmp_path / "stix.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "feed stix (stix2.1" in out and "hits: 13" in out and "sessions.resp_h" in out
    args = p.parse_args(["scan", str(path), "--timeout", "5", "--workers", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "EICAR_Test_File" in out and "1 compiled, 0 failed" in out
