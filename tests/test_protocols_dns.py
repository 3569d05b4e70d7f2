"""DNS from UDP datagrams and TCP streams: Zeek's pairing, answer rendering, hostile names."""

from __future__ import annotations

import struct
import time

import dpkt
from _protobuild import Conv, ingest, udp, write

from forensics.protocols.dns import DnsError, parse_message


def _query(qid: int, name: str, qtype: int = 1) -> dpkt.dns.DNS:
    return dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])


def _answer(q: dpkt.dns.DNS, rrs: list) -> bytes:
    q.op = dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA
    q.an = rrs
    return bytes(q)


def test_query_and_reply_pair(case, tmp_path):
    q = _query(0x1234, "WWW.Example.COM")
    a = dpkt.dns.DNS.RR(name="www.example.com", type=dpkt.dns.DNS_A, ttl=300, rdata=bytes([10, 1, 2, 3]))
    cn = dpkt.dns.DNS.RR(name="www.example.com", type=dpkt.dns.DNS_CNAME, ttl=60)
    cn.cname = "Edge.Example.NET"
    txt = dpkt.dns.DNS.RR(name="www.example.com", type=dpkt.dns.DNS_TXT, ttl=5)
    txt.text = [b"v=spf1", b"-all"]
    pk = [
        udp("10.0.0.1", "10.0.0.53", 5555, 53, bytes(q)),
        udp("10.0.0.53", "10.0.0.1", 53, 5555, _answer(_query(0x1234, "WWW.Example.COM"), [cn, a, txt])),
        udp("10.0.0.1", "10.0.0.53", 5555, 53, bytes(_query(0x9999, "lonely.example"))),
    ]
    ingest(case, write(tmp_path / "d.pcap", udp=pk))
    df = case.sql("SELECT * FROM dns ORDER BY trans_id").to_dict("records")
    assert len(df) == 2
    r = next(x for x in df if x["trans_id"] == 0x1234)
    assert r["query"] == "www.example.com" and r["qtype_name"] == "A" and r["rcode_name"] == "NOERROR"
    assert list(r["answers"]) == ["edge.example.net", "10.1.2.3", "TXT 6 v=spf1 TXT 4 -all"]
    assert list(r["ttls"]) == ["60", "300", "5"]
    assert r["rd"] and r["ra"] and r["proto"] == "udp" and r["rtt"] is not None
    lone = next(x for x in df if x["trans_id"] == 0x9999)
    assert lone["rcode"] is None and lone["answers"] is None


def test_dns_over_tcp(case, tmp_path):
    q = bytes(_query(7, "tcp.example", dpkt.dns.DNS_AAAA))
    a = dpkt.dns.DNS.RR(name="tcp.example", type=dpkt.dns.DNS_AAAA, ttl=1, rdata=bytes(15) + b"\x01")
    r = _answer(_query(7, "tcp.example", dpkt.dns.DNS_AAAA), [a])
    c = (
        Conv(sport=53)
        .send(True, struct.pack(">H", len(q)) + q)
        .send(False, struct.pack(">H", len(r)) + r)
        .close()
    )
    ingest(case, write(tmp_path / "t.pcap", c))
    (row,) = case.sql("SELECT * FROM dns").to_dict("records")
    assert row["proto"] == "tcp" and list(row["answers"]) == ["::1"]


def test_compression_loop_is_an_error_not_a_hang():
    msg = struct.pack(">HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    t = time.perf_counter()
    try:
        parse_message(msg)
        raise AssertionError("a self-pointing name must not decode")
    except DnsError as exc:
        assert "loop" in str(exc)
    assert time.perf_counter() - t < 1


def test_malformed_datagram_warns(case, tmp_path):
    good = bytes(_query(1, "a.example"))
    loop = struct.pack(">HHHHHH", 2, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    pk = [
        udp("10.0.0.1", "10.0.0.53", 5555, 53, good),
        udp("10.0.0.1", "10.0.0.53", 5555, 53, loop),
        udp("10.0.0.1", "10.0.0.53", 5555, 53, good[:15]),
    ]
    ingest(case, write(tmp_path / "m.pcap", udp=pk))
    assert case.sql("SELECT count(*) AS n FROM dns")["n"][0] == 1
    w = case.warnings()
    assert (w["code"] == "dns_malformed").sum() == 2
