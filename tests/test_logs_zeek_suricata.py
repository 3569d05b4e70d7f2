"""Zeek logs (TSV and JSON) and Suricata eve.json into the shared concept tables.

Truth for Zeek: the logs Zeek itself wrote in ``zeek/testing/btest/Baseline`` (BSD).
Each conn/dns/http/ssl/files baseline (first ``### BTest`` line stripped) is
loaded and compared field for field with its own text: every Zeek column we
store must hold the value the text holds, typed by the ``#types`` header
(``-`` and ``(empty)`` NULL, counts integers, bools booleans, sets/vectors
lists); the baselines' masked times (``XXXXXXXXXX.XXXXXX``) must be NULL with
one counted ``bad_value`` warning.

Truth for Suricata: the eve records in this file follow Suricata's "EVE JSON
Format" documentation (common header plus one object per event type; dns in
eve versions 1, 2 and 3), and suricata-verify's ``output-eve-fileinfo``
expected eve.json (MIT) is one real record with its ``test.yaml`` check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_path

BASELINE = Path(__file__).resolve().parent.parent.parent / "shared/testdata/zeek/testing/btest/Baseline"
TABLE = {"conn": "sessions", "dns": "dns", "http": "http", "ssl": "tls", "files": "files"}


def _baselines() -> list[str]:
    out = []
    for log in TABLE:
        out += sorted(f"{p.parent.name}/{p.name}" for p in BASELINE.glob(f"*/{log}.log"))
    return out or ["<absent>"]


def _strip(src: Path, dst: Path) -> Path:
    text = src.read_text(errors="surrogateescape")
    dst.write_text(text.split("\n", 1)[1] if text.startswith("### BTest") else text,
                   errors="surrogateescape")
    return dst


def _expected(text: str, ztype: str, set_sep: str):
    if text in ("-", "(empty)"):
        return None
    if ztype in ("count", "int", "port"):
        return int(text)
    if ztype in ("interval", "double"):
        return float(text)
    if ztype == "bool":
        return text == "T"
    if ztype.startswith(("set[", "vector[")):
        return text.split(set_sep)
    return text


def _column(field: str, log: str) -> str:
    name = field.removeprefix("id.")
    name = {"AA": "aa", "TC": "tc", "RD": "rd", "RA": "ra", "Z": "z", "TTLs": "ttls"}.get(name, name)
    return "file_source" if (log, name) == ("files", "source") else name


@pytest.mark.shared
@pytest.mark.parametrize("rel", _baselines())
def test_zeek_baseline_field_for_field(case, tmp_path, rel):
    src = shared_path("zeek", "testing", "btest", "Baseline", *rel.split("/"))
    log = src.stem
    p = _strip(src, tmp_path / src.name)
    if not p.read_bytes().startswith(b"#separator"):
        pytest.skip("btest-diff-cut baseline: a few columns without Zeek's header, not a Zeek log")
    res = case.ingest(p)[0]
    assert res.format == "zeek" and res.error is None
    lines = p.read_text(errors="surrogateescape").split("\n")
    head = {ln.split("\t", 1)[0][1:]: ln.split("\t")[1:] for ln in lines if ln.startswith("#")}
    fields, types = head["fields"], head["types"]
    set_sep = head.get("set_separator", [","])[0]
    data = [(i + 1, ln.split("\t")) for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    table = TABLE[log]
    rows = case.sql(f"SELECT * FROM {table}").to_dict("records")
    assert len(rows) == len(data), f"{rel}: {len(rows)} rows, the log has {len(data)}"
    if table != "sessions":
        rows.sort(key=lambda r: r["line"])
        assert [r["line"] for r in rows] == [n for n, _ in data]
    else:
        rows.sort(key=lambda r: [n for n, v in data].index(
            next(n for n, v in data if v[fields.index("uid")] == r["uid"])))
    checked = 0
    masked = 0
    for r, (_n, values) in zip(rows, data, strict=True):
        assert r["source"] == "zeek"
        for f, t, v in zip(fields, types, values, strict=True):
            col = _column(f, log)
            if col not in r or col == "source":
                continue
            want = _expected(v, t, set_sep)
            got = r[col]
            if t == "time":
                if v.startswith("X"):
                    masked += 1
                    assert pd.isna(got), f"{rel} {f}: masked time must be NULL"
                else:
                    assert abs(got.timestamp() - float(v)) < 1e-6, f"{rel} {f}"
                continue
            if want is None:
                assert got is None or (not isinstance(got, list | tuple) and pd.isna(got)) or \
                    (hasattr(got, "__len__") and len(got) == 0 and v == "(empty)"), f"{rel} {f}={got!r}"
            elif isinstance(want, list):
                assert list(got) == want, f"{rel} {f}"
            elif isinstance(want, float):
                assert got == pytest.approx(want), f"{rel} {f}"
            else:
                assert got == want, f"{rel} {f}: {got!r} != {want!r}"
            checked += 1
    assert checked
    if masked:
        w = case.warnings()
        assert int(w[w.code == "bad_value"]["count"].sum()) == masked


@pytest.mark.shared
def test_zeek_kerberos_and_events(case, tmp_path):
    p = _strip(shared_path("zeek", "testing", "btest", "Baseline",
                           "scripts.base.protocols.krb.kinit", "kerberos.log"),
               tmp_path / "kerberos.log")
    case.ingest(p)
    lg = case.sql("SELECT * FROM logons ORDER BY line")
    assert len(lg) and (lg["action"] == "kerberos_tgt").any()
    first = lg.iloc[0]
    assert (first.user, first.domain, first.src_ip, first.dst_ip, first.auth_package) == (
        "valid_client_principal", "VLADG.NET", "192.168.1.31", "192.168.1.32", "Kerberos")
    from forensics.sources.zeek_log import target_table

    if target_table("kerberos"):  # a protocol table of that name (filled by pcap parsers too)
        kt = case.sql("SELECT * FROM kerberos ORDER BY line")
        assert list(kt["line"]) == list(lg["line"]) and set(kt["source"]) == {"zeek"}
        assert kt["request_type"].iloc[0] == "AS"
        assert int(case.sql("SELECT count(*) n FROM events")["n"][0]) == 0
    else:
        ev = case.sql("SELECT * FROM events ORDER BY line")
        assert len(ev) == len(lg) and set(ev["channel"]) == {"kerberos"}
        assert json.loads(ev["raw"].iloc[0])["request_type"] == "AS"


CONN_JSON = [
    {"_path": "conn", "ts": 1591367999.305988, "uid": "CMdzit1AMNsmfAIiQc", "id.orig_h": "192.168.4.76",
     "id.orig_p": 36844, "id.resp_h": "192.168.4.1", "id.resp_p": 53, "proto": "udp",
     "service": "dns", "duration": 0.06685185432434082, "orig_bytes": 62, "resp_bytes": 141,
     "conn_state": "SF", "missed_bytes": 0, "history": "Dd", "orig_pkts": 2,
     "orig_ip_bytes": 118, "resp_pkts": 2, "resp_ip_bytes": 197, "local_orig": True},
    {"_path": "conn", "ts": "2020-06-05T14:40:00.500000Z", "uid": "C2", "id.orig_h": "10.0.0.1",
     "id.orig_p": 1, "id.resp_h": "10.0.0.2", "id.resp_p": 2, "proto": "tcp", "conn_state": "S0"},
    {"_path": "weird", "ts": 1591367999.5, "name": "bad_TCP_checksum", "notice": False,
     "peer": "zeek", "id.orig_h": "10.0.0.1"},
]


def test_zeek_json_lines(case, tmp_path):
    p = tmp_path / "zeek.json"
    p.write_text("\n".join(json.dumps(r) for r in CONN_JSON) + "\nnot json\n")
    res = case.ingest(p)[0]
    assert res.format == "zeek"
    s = case.sql("SELECT * FROM sessions ORDER BY ts").to_dict("records")
    assert [r["uid"] for r in s] == ["CMdzit1AMNsmfAIiQc", "C2"]
    a, b = s
    assert str(a["ts"]) == "2020-06-05 14:39:59.305988+00:00"
    assert str(a["ts_end"]) == "2020-06-05 14:39:59.372840+00:00"
    assert (a["orig_bytes"], a["resp_ip_bytes"], a["conn_state"], a["service"]) == (62, 197, "SF", "dns")
    assert str(b["ts"]) == "2020-06-05 14:40:00.500000+00:00"
    assert pd.isna(b["duration"]) and pd.isna(b["ts_end"]) and pd.isna(b["orig_bytes"])
    ev = case.sql("SELECT * FROM events").iloc[0]
    assert (ev.channel, ev.object, ev.src_ip, ev.line) == ("weird", "bad_TCP_checksum", "10.0.0.1", 3)
    w = case.warnings()
    assert set(w["code"]) == {"not_json", "zeek_columns_not_stored"}


def test_zeek_tsv_hostile_lines(case, tmp_path):
    head = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
            "#path\tdns\n#fields\tts\tuid\tquery\ttrans_id\tanswers\n"
            "#types\ttime\tstring\tstring\tcount\tvector[string]\n")
    good = "1300475167.096535\tC1\texample.com\t42\ta.example,1.2.3.4\n"
    body = (head + good
            + "1300475167.1\tC2\ttoo\tfew\n"
            + "1300475167.2\tC3\tbin\x01ary\t1\t-\n"
            + "1300475167.3\tC4\t" + "x" * (1 << 20) + "\t1\t-\n"
            + "notatime\tC5\texample.org\tnotacount\t(empty)\n")
    data = body.encode() + b"1300475167.4\tC6\t\xff\xfe\t1\t-\n"
    data += (head.replace("trans_id", "rcode").encode()
             + b"1300475168.0\tC7\texample.net\t3\t-\n#close\t2011-03-18-19-06-08\n")
    p = tmp_path / "dns.log"
    p.write_bytes(data)
    res = case.ingest(p)[0]
    assert res.error is None
    d = case.sql("SELECT * FROM dns ORDER BY line").to_dict("records")
    assert [r["uid"] for r in d] == ["C1", "C5", "C7"]
    assert list(d[0]["answers"]) == ["a.example", "1.2.3.4"] and d[0]["trans_id"] == 42
    assert pd.isna(d[1]["ts"]) and pd.isna(d[1]["trans_id"]) and d[1]["answers"] is None
    assert d[2]["rcode"] == 3 and pd.isna(d[2]["trans_id"])
    w = case.warnings()
    got = sorted(zip(w["offset"], w["code"], w["count"], strict=True))
    assert got == [(9, "bad_line", 1), (10, "bad_line", 1), (11, "bad_line", 1),
                   (12, "bad_value", 1), (12, "bad_value", 1), (13, "bad_encoding", 1)]


def test_zeek_sniff_is_precise():
    from forensics.sources import get

    src = get("zeek")
    assert src.sniff(b"#separator \\x09\n#set_separator\t,\n")
    assert src.sniff(json.dumps(CONN_JSON[0]).encode() + b"\n")
    assert not src.sniff(b'{"timestamp": "x", "event_type": "flow", "uid": "1", "ts": 1}\n')
    assert not src.sniff(b"#Software: Microsoft Internet Information Services 10.0\n")


# ---- Suricata eve ---------------------------------------------------------------------

HDR = {"flow_id": 1140233548838587, "in_iface": "eth0", "src_ip": "10.0.0.1", "src_port": 49162,
       "dest_ip": "10.0.0.2", "dest_port": 80, "proto": "TCP", "host": "sensor1"}
EVE = [
    HDR | {"timestamp": "2017-07-06T11:52:44.562215+0000", "event_type": "alert", "pcap_cnt": 7,
           "direction": "to_server", "app_proto": "http",
           "alert": {"action": "allowed", "gid": 1, "signature_id": 2100498, "rev": 7,
                     "signature": "GPL ATTACK_RESPONSE id check returned root",
                     "category": "Potentially Bad Traffic", "severity": 2,
                     "metadata": {"created_at": ["2010_09_23"]}}},
    HDR | {"timestamp": "2017-07-06T11:52:44.562215+0000", "event_type": "http", "tx_id": 0,
           "http": {"hostname": "example.com", "url": "/index.html", "http_user_agent": "curl/7.52",
                    "http_content_type": "text/html", "http_method": "GET",
                    "protocol": "HTTP/1.1", "status": 200, "length": 612,
                    "http_refer": "http://a.example/"}},
    HDR | {"timestamp": "2017-07-06T11:52:44.700000+0000", "event_type": "fileinfo",
           "src_ip": "10.0.0.2", "src_port": 80, "dest_ip": "10.0.0.1", "dest_port": 49162,
           "app_proto": "http", "fileinfo": {"filename": "/index.html", "magic": "HTML document",
                                            "state": "CLOSED", "md5": "d41d8cd98f00b204e9800998ecf8427e",
                                            "stored": False, "size": 612, "tx_id": 0, "file_id": 3}},
    HDR | {"timestamp": "2017-07-06T11:52:45.000000+0000", "event_type": "flow", "app_proto": "http",
           "flow": {"pkts_toserver": 6, "pkts_toclient": 4, "bytes_toserver": 500,
                    "bytes_toclient": 1200, "start": "2017-07-06T11:52:44.500000+0000",
                    "end": "2017-07-06T11:52:44.700000+0000", "age": 0, "state": "closed",
                    "reason": "timeout", "alerted": True}},
    {"timestamp": "2017-07-06T11:52:43.000000+0000", "flow_id": 22, "event_type": "dns",
     "src_ip": "10.0.0.1", "src_port": 53000, "dest_ip": "8.8.8.8", "dest_port": 53, "proto": "UDP",
     "dns": {"type": "query", "id": 1234, "rrname": "example.com", "rrtype": "A", "tx_id": 0}},
    {"timestamp": "2017-07-06T11:52:43.010000+0000", "flow_id": 22, "event_type": "dns",
     "src_ip": "8.8.8.8", "src_port": 53, "dest_ip": "10.0.0.1", "dest_port": 53000, "proto": "UDP",
     "dns": {"version": 2, "type": "answer", "id": 1234, "flags": "8180", "qr": True, "rd": True,
             "ra": True, "rrname": "example.com", "rrtype": "A", "rcode": "NOERROR",
             "answers": [{"rrname": "example.com", "rrtype": "A", "ttl": 300,
                          "rdata": "93.184.216.34"}]}},
    {"timestamp": "2024-01-01T00:00:00.000000+0000", "flow_id": 23, "event_type": "dns",
     "src_ip": "10.0.0.1", "src_port": 53001, "dest_ip": "8.8.4.4", "dest_port": 53, "proto": "UDP",
     "dns": {"version": 3, "type": "response", "id": 7, "rcode": "NXDOMAIN", "rd": True,
             "queries": [{"rrname": "nope.example", "rrtype": "AAAA"}]}},
    {"timestamp": "2024-01-01T00:00:01.000000+0000", "flow_id": 24, "event_type": "tls",
     "src_ip": "10.0.0.1", "src_port": 50000, "dest_ip": "1.1.1.1", "dest_port": 443, "proto": "TCP",
     "tls": {"subject": "CN=one.one.one.one", "issuerdn": "CN=DigiCert", "serial": "0F:1A",
             "fingerprint": "aa:bb", "sni": "one.one.one.one", "version": "TLS 1.3",
             "notbefore": "2023-01-01T00:00:00", "notafter": "2024-01-01T23:59:59",
             "ja3": {"hash": "e7d705a3286e19ea42f587b344ee6865", "string": "771,..."},
             "ja3s": {"hash": "f4febc55ea12b31ae17cfb7e614afda8"}}},
    {"timestamp": "2024-01-01T00:00:02.000000+0000", "flow_id": 25, "event_type": "krb5",
     "src_ip": "10.0.0.5", "src_port": 50001, "dest_ip": "10.0.0.10", "dest_port": 88, "proto": "TCP",
     "krb5": {"msg_type": "KRB_TGS_REQ", "cname": "alice", "realm": "CORP.LOCAL",
              "sname": "cifs/fs01.corp.local", "encryption": "aes256-cts-hmac-sha1-96",
              "weak_encryption": False, "failed_request": "", "error_code": ""}},
    {"timestamp": "2024-01-01T00:00:03.000000+0000", "flow_id": 26, "event_type": "smb",
     "src_ip": "10.0.0.5", "src_port": 50002, "dest_ip": "10.0.0.11", "dest_port": 445, "proto": "TCP",
     "smb": {"id": 2, "dialect": "2.10", "command": "SMB2_COMMAND_SESSION_SETUP",
             "status": "STATUS_SUCCESS", "ntlmssp": {"domain": "CORP", "user": "bob", "host": "WS5"}}},
    {"timestamp": "2024-01-01T00:00:04.000000+0000", "event_type": "anomaly", "src_ip": "10.0.0.9",
     "anomaly": {"type": "decode", "event": "ipv4.trunc_pkt"}},
    {"timestamp": "2024-01-01T00:00:05.000000+0000", "event_type": "stats", "stats": {"uptime": 1}},
]


def _eve(tmp_path: Path, extra: list[bytes] = ()) -> Path:
    p = tmp_path / "eve.json"
    p.write_bytes(b"\n".join([*(json.dumps(r).encode() for r in EVE), *extra]) + b"\n")
    return p


def test_eve_mapping(case, tmp_path):
    res = case.ingest(_eve(tmp_path), strict=True)[0]
    assert res.format == "suricata_eve"
    a = case.sql("SELECT * FROM alerts").iloc[0]
    assert (a.signature_id, a.rev, a.gid, a.severity, a.category, a.action, a.uid, a.sensor,
            a.pcap_cnt, a.proto, a.line) == (
        2100498, 7, 1, 2, "Potentially Bad Traffic", "allowed", "1140233548838587", "sensor1", 7,
        "tcp", 1)
    assert json.loads(a.metadata) == {"created_at": ["2010_09_23"]}
    h = case.sql("SELECT * FROM http").iloc[0]
    assert (h.host, h.uri, h.method, h.version, h.status_code, h.response_body_len, h.user_agent,
            h.referrer, h.content_type, h.trans_depth, h.source) == (
        "example.com", "/index.html", "GET", "1.1", 200, 612, "curl/7.52", "http://a.example/",
        "text/html", 1, "suricata")
    f = case.sql("SELECT * FROM files").iloc[0]
    # The fileinfo record is logged server -> client; the row is in client -> server order.
    assert (f.orig_h, f.orig_p, f.resp_h, f.resp_p) == ("10.0.0.1", 49162, "10.0.0.2", 80)
    assert (f.fuid, f.file_source, f.seen_bytes, f.md5, f.magic, f.stored) == (
        "1140233548838587:3", "HTTP", 612, "d41d8cd98f00b204e9800998ecf8427e", "HTML document", False)
    s = case.sql("SELECT * FROM sessions").iloc[0]
    assert (s.uid, s.proto, s.ip_proto, s.orig_pkts, s.resp_pkts, s.service, s.source) == (
        "1140233548838587", "tcp", 6, 6, 4, "http", "suricata")
    assert s.duration == pytest.approx(0.2) and str(s.ts) == "2017-07-06 11:52:44.500000+00:00"
    assert pd.isna(s.orig_bytes) and pd.isna(s.orig_ip_bytes) and s.conn_state is None
    d = case.sql("SELECT * FROM dns ORDER BY ts").to_dict("records")
    assert [(r["orig_h"], r["resp_h"], r["resp_p"], r["query"], r["qtype_name"]) for r in d] == [
        ("10.0.0.1", "8.8.8.8", 53, "example.com", "A")] * 2 + [
        ("10.0.0.1", "8.8.4.4", 53, "nope.example", "AAAA")]
    assert d[0]["answers"] is None and list(d[1]["answers"]) == ["93.184.216.34"]
    assert list(d[1]["ttls"]) == ["300"] and d[1]["rcode_name"] == "NOERROR" and d[1]["ra"]
    assert d[2]["rcode_name"] == "NXDOMAIN" and d[2]["trans_id"] == 7
    t = case.sql("SELECT * FROM tls").iloc[0]
    assert (t.version, t.server_name, t.subject, t.issuer, t.ja3, t.ja3s) == (
        "TLSv13", "one.one.one.one", "CN=one.one.one.one", "CN=DigiCert",
        "e7d705a3286e19ea42f587b344ee6865", "f4febc55ea12b31ae17cfb7e614afda8")
    assert str(t.not_valid_after) == "2024-01-01 23:59:59+00:00"
    lg = case.sql("SELECT * FROM logons ORDER BY ts").to_dict("records")
    assert [(r["action"], r["user"], r["domain"], r["service"], r["src_ip"], r["success"])
            for r in lg] == [
        ("kerberos_service_ticket", "alice", "CORP.LOCAL", "cifs/fs01.corp.local", "10.0.0.5", None),
        ("ntlm", "bob", "CORP", "smb", "10.0.0.5", True)]
    ev = case.sql("SELECT type FROM events ORDER BY line")
    assert list(ev["type"]) == ["krb5", "smb", "anomaly"]
    w = case.warnings()
    assert list(w["code"]) == ["eve_stats_skipped"] and w["severity"].iloc[0] == "info"


def test_eve_hostile_lines(case, tmp_path):
    p = _eve(tmp_path, [b"{not json", b'{"timestamp": "2024-01-01T00:00:00Z", "x": 1}',
                        b'{"event_type": "alert", "timestamp": "' + b"9" * (1 << 20) + b'"}',
                        b"\x00\xff" * 40, b'{"event_type": "alert", "timestamp": "yesterday"}'])
    res = case.ingest(p)[0]
    assert res.error is None
    assert int(case.sql("SELECT count(*) n FROM alerts")["n"][0]) == 2
    w = case.warnings()
    w = w[w.severity != "info"]
    n = len(EVE)
    assert list(zip(w["offset"], w["code"], strict=True)) == [
        (n + 1, "not_json"), (n + 2, "not_eve"), (n + 3, "line_too_long"), (n + 4, "binary_data"),
        (n + 5, "bad_time")]
    assert pd.isna(case.sql("SELECT ts FROM alerts ORDER BY line")["ts"].iloc[1])


@pytest.mark.shared
def test_suricata_verify_fileinfo_expected_eve(case):
    d = shared_path("suricata-verify", "tests", "output-eve-fileinfo")
    # test.yaml: exactly one event with fileinfo.filename eicar.com.
    yaml = (d / "test.yaml").read_text()
    assert re.search(r"count:\s*1\s*\n\s*match:\s*\n\s*fileinfo.filename:\s*eicar.com", yaml)
    res = case.ingest(d / "expected" / "eve.json", strict=True)[0]
    assert res.format == "suricata_eve"
    f = case.sql("SELECT * FROM files")
    assert len(f) == 1
    r = f.iloc[0]
    assert (r.filename, r.seen_bytes, r.state, r.file_source) == ("eicar.com", 68, "CLOSED", "HTTP")
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p) == ("10.16.1.11", 59908, "188.40.238.250", 80)
    assert str(r.ts) == "2016-06-08 20:01:52.875791+00:00"


def test_eve_sniff_is_precise():
    from forensics.sources import get

    src = get("suricata_eve")
    assert src.sniff(json.dumps(EVE[0]).encode() + b"\n")
    assert not src.sniff(json.dumps(CONN_JSON[0]).encode() + b"\n")
    assert not src.sniff(b'{"EventID": 4624, "Channel": "Security"}\n')
