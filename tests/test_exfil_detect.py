"""Exfiltration (bytes, files, DNS tunnels) and signature-free detections (beacons, rare, long)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import forensics
from forensics import detect, exfil, scenario

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _t(sec):
    return T0 + timedelta(seconds=sec)


def _ins(case, table, rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    case._insert(table, pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]))


def _session(uid, t, orig, resp, port, ob=100, rb=100, duration=1.0, proto="tcp", **kw):
    return {"uid": uid, "ts": _t(t), "ts_end": _t(t + duration), "duration": duration, "proto": proto,
            "orig_h": orig, "orig_p": 40000 + int(t) % 20000, "resp_h": resp, "resp_p": port,
            "orig_bytes": ob,
            "resp_bytes": rb, "conn_state": "SF", "history": "ShADadFf", "resp_pkts": 3, "source": "pcap",
            **kw}


@pytest.fixture(scope="module")
def scen(tmp_path_factory):
    out = tmp_path_factory.mktemp("exfil_scenario")
    key = scenario.generate(out, seed=1, profile="small")
    case = forensics.open_case(out / "case")
    case.ingest(out / "evidence")  # ingest reassembles and parses protocols
    yield key, case
    case.close()


@pytest.mark.slow
def test_scenario_upload_and_channels(scen):
    key, case = scen
    x = exfil.exfil(case)
    post, c2 = key["exfiltration"]["http_post"], key["c2"]
    up = x[(x["kind"] == "bytes") & (x["dst"] == post["dst_ip"])]
    assert up["bytes"].sum() == pytest.approx(post["bytes"], rel=0.01)
    assert set(up["src"]) == {post["src"]} and set(up["encryption"]) == {"clear"}
    for ch in c2["channels"]:
        m = x[(x["kind"] == "bytes") & (x["src"] == ch["host"]) & (x["dst"] == c2["ip"])]
        assert set(m["channel"]) == {ch["protocol"]}
        assert set(m["encryption"]) == {"encrypted" if ch["protocol"] == "tls" else "clear"}
        assert m["sessions"].sum() == ch["count"]
    hours = x.loc[x["kind"] == "bytes", "hour"]
    assert (hours.dt.minute == 0).all() and (hours.dt.second == 0).all()
    assert case.sql("SELECT count(*) AS n FROM exfil")["n"][0] == len(x)
    rows = json.loads(up["rows"].iloc[0])
    assert rows[0]["table"] == "sessions"


@pytest.mark.slow
def test_internal_ranges_are_configurable(scen):
    key, case = scen
    post = key["exfiltration"]["http_post"]
    x = exfil.exfil_bytes(case, internal=["10.10.10.0/24"])  # the servers' subnet is now "outside"
    assert not len(x[x["src_addr"] == post["src_ip"]])
    assert len(x[x["src_addr"] == key["patient_zero"]["ip"]])


@pytest.mark.slow
def test_scenario_detections(scen):
    key, case = scen
    d = detect.detect(case)
    c2 = key["c2"]
    beacons = d[d["kind"] == "beacon"]
    for ch in c2["channels"]:
        m = beacons[(beacons["src_addr"] == ch["ip"]) & (beacons["dst"] == c2["ip"])
                    & (beacons["dst_port"] == ch["port"])]
        assert len(m) == 1, beacons[["src", "dst", "dst_port", "score"]]
        assert m["score"].iloc[0] >= 0.6 and m["count"].iloc[0] == ch["count"]
        interval = float(m["detail"].iloc[0].split("every ")[1].split(" s")[0])
        assert interval == pytest.approx(c2["beacon_interval_s"], rel=0.2)
    assert set(beacons["dst"]) == {c2["ip"]}  # nothing in the background beacons
    rare = d[d["kind"] == "rare_destination"]
    assert key["exfiltration"]["http_post"]["dst_ip"] in set(rare["dst"])
    assert case.sql("SELECT count(*) AS n FROM detections")["n"][0] == len(d)


def test_label_payload_bytes():
    assert exfil.label_payload_bytes(["00ff" * 8]) == 16  # hex: 4 bits a character
    assert exfil.label_payload_bytes(["mfrggzdfmztwq2lk"]) == 10  # base32: 5 bits
    assert exfil.label_payload_bytes(["aGVsbG8gd29ybGQh"]) == 12  # base64-like: 6 bits
    assert exfil.label_payload_bytes(["0001", "www"]) == 0  # short labels are counters


def test_dns_tunnel_decoded_bytes(case):
    payload = bytes(range(256)) * 9 + b"tail-of-the-file"  # 2320 bytes
    chunks = [payload[i:i + 31] for i in range(0, len(payload), 31)]
    rows = []
    for i, c in enumerate(chunks):
        q = f"{i:04x}.{c.hex()}.t.portal-secure-dns.info"
        base = {"query": q, "qtype_name": "TXT", "proto": "udp", "resp_p": 53, "source": "pcap",
                "evidence_id": "p1"}
        rows.append({**base, "ts": _t(i), "uid": f"Cq{i}", "orig_h": "10.1.20.20", "orig_p": 50000 + i,
                     "resp_h": "10.1.20.10", "record_offset": 2 * i})
        rows.append({**base, "ts": _t(i + 0.01), "uid": f"Cf{i}", "orig_h": "10.1.20.10", "orig_p": 60000 + i,
                     "resp_h": "9.9.9.9", "record_offset": 2 * i + 1})  # forwarded by the resolver
        rows.append({**base, "ts": _t(i + 0.5), "uid": f"Cw{i}", "orig_h": "10.1.10.11", "orig_p": 52000 + i,
                     "resp_h": "10.1.20.10", "query": "www.example.com", "record_offset": 1000 + i})
    _ins(case, "dns", rows)
    t = exfil.dns_tunnels(case)
    assert list(t["dst"]) == ["t.portal-secure-dns.info"]
    assert t["src_addr"].iloc[0] == "10.1.20.20"  # the client, not the resolver that forwarded
    assert t["bytes"].iloc[0] == pytest.approx(len(payload), rel=0.01)
    assert t["sessions"].iloc[0] == len(chunks) and t["score"].iloc[0] >= 0.5


def test_files_leaving(case):
    base = {"file_source": "HTTP", "evidence_id": "e", "source": "zeek"}
    _ins(case, "files", [
        {**base, "ts": _t(0), "fuid": "F1", "uid": "C1", "orig_h": "10.0.0.5", "resp_h": "203.0.113.9",
         "is_orig": True, "filename": "loot.zip", "total_bytes": 5000, "sha256": "ab", "record_offset": 1},
        {**base, "ts": _t(1), "fuid": "F2", "uid": "C2", "orig_h": "10.0.0.5", "resp_h": "203.0.113.9",
         "is_orig": False, "filename": "update.exe", "seen_bytes": 900, "record_offset": 2},
        {**base, "ts": _t(2), "fuid": "F3", "uid": "C3", "orig_h": "10.0.0.5", "resp_h": "10.0.0.9",
         "is_orig": True, "filename": "internal.docx", "seen_bytes": 100, "record_offset": 3},
    ])
    f = exfil.files_out(case)
    assert list(f["detail"].str.split().str[0]) == ["loot.zip"] and list(f["bytes"]) == [5000]


def test_beacon_long_and_rare_on_synthetic_sessions(case):
    rows = [_session(f"B{i}", 60 * i, "10.0.0.5", "198.51.100.7", 443) for i in range(30)]
    rows += [_session(f"N{i}", t, "10.0.0.6", "198.51.100.8", 443) for i, t in
             enumerate([5, 7, 90, 400, 410, 900, 1300, 1310, 1700, 1750])]
    rows.append(_session("L1", 500, "10.0.0.7", "198.51.100.9", 22, duration=7200))
    rows.append(_session("S1", 100, "10.0.0.7", "198.51.100.10", 22, duration=60))
    rows.append(_session("Int", 100, "10.0.0.7", "10.0.0.8", 445, duration=9000))  # internal: not counted
    _ins(case, "sessions", rows)
    b = detect.beacons(case)
    assert list(b["dst"]) == ["198.51.100.7"] and b["score"].iloc[0] == pytest.approx(1.0)
    long = detect.long_connections(case)
    assert list(long["dst"]) == ["198.51.100.9"]
    assert long["score"].iloc[0] == pytest.approx(0.5 + 0.5 / 3, abs=1e-3)
    rare = detect.rare_destinations(case)
    assert "198.51.100.9" in set(rare["dst"]) and "198.51.100.7" not in set(rare["dst"])  # B started at t=0
    assert set(json.loads(long["rows"].iloc[0])[0]["key"]) == {"uid"}
