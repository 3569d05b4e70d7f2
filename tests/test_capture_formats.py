"""pcap and pcapng readers and the link/network decoders, on captures built in code.

Every expected value here follows from the bytes the test wrote (dpkt builds
and checksums the packets), so each assertion is independent of our reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import numpy as np
import pytest
from _pcapbuild import (
    T0,
    eth,
    handshake_session,
    ip6,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    tcp_pkt,
    udp_pkt,
    write_pcap,
)

import forensics


def _one(case, path: Path, **kw) -> forensics.IngestResult:
    (res,) = case.ingest(path, strict=kw.pop("strict", True), **kw)
    assert res.error is None, res.error
    return res


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions(case, tmp_path, big_endian, nanos):
    frames = [eth(p) for p in handshake_session()]
    times = [(T0 + i, 123456789 if nanos else 123457) for i in range(len(frames))]
    path = write_pcap(tmp_path / "x.pcap", frames, big_endian=big_endian, nanos=nanos, times=times)
    res = _one(case, path)
    assert res.format == "pcap" and res.records == 9 and res.sessions == 1
    pk = case.sql("SELECT frame, ts_ns, caplen, src_p, dst_p FROM packets ORDER BY frame")
    assert pk["frame"].tolist() == list(range(1, 10))
    # ns files keep every digit; µs files keep six.
    first = T0 * 10**9 + (123456789 if nanos else 123457000)
    assert int(pk["ts_ns"][0]) == first
    assert pk["caplen"].tolist() == [len(f) for f in frames]
    s = case.sessions().iloc[0]
    assert (s.orig_h, s.orig_p, s.resp_h, s.resp_p, s.proto) == ("10.0.0.1", 40000, "10.0.0.2", 80, "tcp")
    assert s.conn_state == "SF" and s.history == "ShADadFf"
    assert (s.orig_pkts, s.resp_pkts) == (5, 4)
    assert (s.orig_bytes, s.resp_bytes) == (18, 24)


def test_pcapng_multi_interface_linktypes_and_resolutions(case, tmp_path):
    """Two interfaces: Ethernet at µs, raw IP at ns; a section in big-endian after it."""
    a = eth(udp_pkt("10.1.0.1", "10.1.0.2", 1111, 53, b"q" * 10).pack())
    b = udp_pkt("10.2.0.1", "10.2.0.2", 2222, 53, b"r" * 20).pack()
    body = (pcapng_shb() + pcapng_idb(1) + pcapng_idb(101, tsresol=9)
            + pcapng_epb(0, T0 * 10**6 + 5, a)
            + pcapng_epb(1, T0 * 10**9 + 9007, b)
            # an unknown block type is skipped
            + struct.pack("<II", 0x0BAD, 16) + b"\0" * 4 + struct.pack("<I", 16)
            + pcapng_shb(">") + pcapng_idb(101, tsresol=0x80 | 10, e=">")
            + pcapng_epb(0, (T0 + 1) * 1024 + 512, b, e=">"))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(body)
    res = _one(case, path)
    assert res.format == "pcapng" and res.records == 3
    pk = case.sql("SELECT frame, ts_ns, linktype, interface, src FROM packets ORDER BY frame")
    assert pk["linktype"].tolist() == [1, 101, 101]
    assert pk["interface"].tolist() == [0, 1, 0]
    assert pk["ts_ns"].tolist() == [T0 * 10**9 + 5000, T0 * 10**9 + 9007, (T0 + 1) * 10**9 + 500_000_000]
    assert pk["src"].tolist() == ["10.1.0.1", "10.2.0.1", "10.2.0.1"]


def _udp_frames_for(linktype: int) -> bytes:
    ip = udp_pkt("192.0.2.1", "192.0.2.2", 5000, 6000, b"payload").pack()
    if linktype == 0:  # BSD null, host (little-endian) order
        return struct.pack("<I", 2) + ip
    if linktype == 108:  # OpenBSD loop, network order
        return struct.pack(">I", 2) + ip
    if linktype == 101:
        return ip
    if linktype == 113:  # Linux cooked v1: 16 bytes, protocol last
        return struct.pack(">HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + ip
    if linktype == 276:  # Linux cooked v2: protocol first, 20 bytes
        return struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8) + ip
    raise AssertionError(linktype)


@pytest.mark.parametrize("linktype", [0, 108, 101, 113, 276])
def test_link_types(case, tmp_path, linktype):
    path = write_pcap(tmp_path / "l.pcap", [_udp_frames_for(linktype)] * 2, linktype=linktype)
    _one(case, path)
    pk = case.sql("SELECT src, dst, src_p, dst_p, payload_len FROM packets")
    assert pk.iloc[0].tolist() == ["192.0.2.1", "192.0.2.2", 5000, 6000, 7]


def test_vlan_qinq_mpls_pppoe(case, tmp_path):
    ip = udp_pkt("198.51.100.1", "198.51.100.2", 1234, 4321, b"x").pack()
    dot1q = b"\x00" * 12 + struct.pack(">HHH", 0x8100, 100, 0x0800) + ip
    qinq = b"\x00" * 12 + struct.pack(">HHHHH", 0x88A8, 200, 0x8100, 300, 0x0800) + ip
    mpls = b"\x00" * 12 + struct.pack(">H", 0x8847) + struct.pack(">I", (16 << 12) | (1 << 8) | 64) + ip
    pppoe = b"\x00" * 12 + struct.pack(">HBBHHH", 0x8864, 0x11, 0, 1, len(ip) + 2, 0x21) + ip
    _one(case, write_pcap(tmp_path / "v.pcap", [dot1q, qinq, mpls, pppoe]))
    pk = case.sql("SELECT vlan, inner_vlan, src_p FROM packets ORDER BY frame")
    assert pk["vlan"].fillna(-1).tolist() == [100, 200, -1, -1]
    assert pk["inner_vlan"].fillna(-1).tolist() == [-1, 300, -1, -1]
    assert pk["src_p"].tolist() == [1234] * 4


def test_ipv6_extension_headers_and_fragments(case, tmp_path):
    """Hop-by-hop + destination options, then a UDP datagram split in two fragments."""
    udp = dpkt.udp.UDP(sport=7, dport=9, data=b"A" * 100)
    udp.ulen = 108
    payload = bytes(udp)
    hbh = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # next: dest opts; PadN
    dst = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # next: fragment
    src6, dst6 = ip6("2001:db8::1"), ip6("2001:db8::2")

    def frag(off: int, more: bool, data: bytes) -> bytes:
        fh = struct.pack(">BBHI", 17, 0, off | int(more), 0xABCD)
        body = hbh + dst + fh + data
        hdr = struct.pack(">IHBB16s16s", 6 << 28, len(body), 0, 64, src6, dst6)
        return eth(hdr + body, 0x86DD)

    frames = [frag(64, False, payload[64:]), frag(0, True, payload[:64])]  # out of order
    _one(case, write_pcap(tmp_path / "f6.pcap", frames))
    s = case.sessions().iloc[0]
    assert (s.proto, s.orig_h, s.orig_p, s.resp_p) == ("udp", "2001:db8::1", 7, 9)
    assert s.orig_pkts == 1  # one reassembled datagram, as Zeek counts it
    assert s.orig_ip_bytes == 40 + 108
    pk = case.sql("SELECT frame, frag, uid FROM packets ORDER BY frame")
    assert set(pk["uid"]) == {s.uid}  # both fragments point at the session


def test_packet_index_statistics_tell_the_second_pass_about_rebuilt_datagrams(case, tmp_path):
    """A capture with a datagram rebuilt from fragments is not split over processes (the
    rebuilt datagrams are numbered in the order they are rebuilt); the packet index's
    ``frag`` statistics say so without reading the column, and say the opposite for a
    capture without fragments."""
    import pyarrow.parquet as pq

    from forensics import apps

    data = b"C" * 48
    udp = struct.pack(">HHHH", 5, 6, 8 + len(data), 0) + data

    def frag(off8: int, more: bool, chunk: bytes) -> bytes:
        hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), 78,
                          (0x2000 if more else 0) | off8, 64, 17, 0, b"\x0a\0\0\x01", b"\x0a\0\0\x02")
        return eth(hdr + chunk)

    plain = [eth(udp_pkt("10.0.0.3", "10.0.0.4", 7, 9, b"x").pack())]
    for name, frames, expected in (("frag", [frag(0, True, udp[:32]), frag(4, False, udp[32:])], True),
                                   ("plain", plain, False)):
        res = _one(case, write_pcap(tmp_path / f"{name}.pcap", frames), protocols=False)
        pf = pq.ParquetFile(case.parquet_dir("packets", res.evidence_id) / "part-0.parquet")
        i = pf.schema_arrow.get_field_index("frag")
        stats = [pf.metadata.row_group(g).column(i).statistics for g in range(pf.metadata.num_row_groups)]
        assert all(st is not None and st.has_min_max for st in stats)
        assert apps._may_rebuild(pf) is expected


def test_ipv4_fragment_overlap_conflict_is_reported(case, tmp_path):
    data = b"B" * 48
    def frag(off8: int, more: bool, chunk: bytes) -> bytes:
        hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), 77,
                          (0x2000 if more else 0) | off8, 64, 17, 0, b"\x0a\0\0\x01", b"\x0a\0\0\x02")
        return eth(hdr + chunk)
    udp = struct.pack(">HHHH", 1, 2, 8 + len(data), 0) + data
    frames = [frag(0, True, udp[:32]), frag(2, True, b"X" * 16), frag(4, False, udp[32:])]
    res = _one(case, write_pcap(tmp_path / "o.pcap", frames), strict=False)
    w = case.warnings()
    assert "fragment_overlap_conflict" in set(w["code"]), w
    assert res.sessions == 1


def test_vxlan_inner_and_outer_sessions(case, tmp_path):
    inner = eth(udp_pkt("10.9.0.1", "10.9.0.2", 1000, 2000, b"in").pack())
    vx = b"\x08\0\0\0\0\0\x01\0" + inner
    outer = eth(udp_pkt("192.168.56.12", "192.168.56.11", 38071, 4789, vx).pack())
    _one(case, write_pcap(tmp_path / "vx.pcap", [outer]))
    s = case.sql("SELECT uid, orig_h, resp_p, tunnel, tunnel_parents FROM sessions "
                 "ORDER BY first_frame, resp_p")
    outer_row = s[s.resp_p == 4789].iloc[0]
    inner_row = s[s.resp_p == 2000].iloc[0]
    assert inner_row.tunnel == "vxlan" and list(inner_row.tunnel_parents) == [outer_row.uid]
    assert case.sql("SELECT count(*) AS n FROM packets").n[0] == 2


def test_packet_index_columns_equal_dpkt_decoding(tmp_path):
    """Every header column of the packet index, checked frame by frame against dpkt's own
    decoding of the same capture (802.1Q, QinQ, TCP with options of all kinds, UDP, IPv6,
    a frame that is not IP)."""
    import glob

    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    frames: list[bytes] = []
    for i in range(60):
        kind = i % 5
        if kind == 4:
            frames.append(b"\xff" * 6 + b"\x66\x77\x88\x99\xaa\xbb" + b"\x08\x06" + bytes(28))  # ARP
            continue
        if kind == 3:
            t = dpkt.tcp.TCP(sport=1000 + i, dport=443, flags=int(rng.integers(0, 64)) | 16,
                             seq=int(rng.integers(0, 2**32)), ack=int(rng.integers(0, 2**32)),
                             win=int(rng.integers(0, 65536)), data=bytes(int(rng.integers(0, 50))))
            p6 = dpkt.ip6.IP6(src=bytes(15) + b"\x01", dst=bytes(15) + b"\x02", nxt=6, hlim=64, data=t)
            p6.plen = len(bytes(t))
            frames.append(eth(bytes(p6), 0x86DD))
            continue
        if kind == 2:
            ip = bytes(udp_pkt("10.1.0.1", "10.1.0.2", 5353, 53 + i, bytes(i)))
        else:
            ip = bytes(tcp_pkt("10.0.0.1", "10.0.0.2", 40000 + i, 80, int(rng.integers(1, 512)),
                               seq=int(rng.integers(0, 2**32)), ack=int(rng.integers(0, 2**32)),
                               win=int(rng.integers(0, 65536)), data=bytes(int(rng.integers(0, 300)))))
        tags = [b"\x81\x00" + struct.pack(">H", 100 + i)] * (kind == 1)
        if i % 10 == 1:  # QinQ
            tags = [b"\x88\xa8" + struct.pack(">H", 7), b"\x81\x00" + struct.pack(">H", 100 + i)]
        frames.append(b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb" + b"".join(tags)
                      + b"\x08\x00" + ip)
    cap = write_pcap(tmp_path / "mix.pcap", frames)
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(cap, protocols=False)
        part = glob.glob(str(tmp_path / "c" / "parquet" / "packets" / "*" / "part-0.parquet"))[0]
    got = {r["frame"]: r for r in pq.read_table(part).to_pylist() if r["tunnel_depth"] == 0}
    offset = 24
    for n, (_ts, buf) in enumerate(dpkt.pcap.Reader(cap.open("rb")), start=1):
        r = got[n]
        e = dpkt.ethernet.Ethernet(buf)
        tags = getattr(e, "vlan_tags", [])
        vlans = [t.id for t in tags]
        want = {"caplen": len(buf), "wirelen": len(buf), "file_offset": offset + 16,
                "vlan": vlans[0] if vlans else None, "inner_vlan": vlans[1] if len(vlans) > 1 else None,
                "ethertype": tags[-1].type if tags else e.type,  # the last one seen, inside the tags
                "linktype": 1, "interface": 0, "tunnel_depth": 0}
        offset += 16 + len(buf)
        ip = e.data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            v6 = isinstance(ip, dpkt.ip6.IP6)
            l4 = ip.data
            want |= {"ip_version": 6 if v6 else 4, "ip_proto": ip.nxt if v6 else ip.p,
                     "ip_len": 40 + ip.plen if v6 else ip.len, "src_p": l4.sport, "dst_p": l4.dport,
                     "payload_len": len(l4.data), "payload_wire_len": len(l4.data), "frag": 0,
                     "payload_offset": offset - len(l4.data)}
            if isinstance(l4, dpkt.tcp.TCP):
                want |= {"tcp_flags": l4.flags, "seq": l4.seq, "ack": l4.ack, "window": l4.win}
            else:
                want |= {"tcp_flags": None, "seq": None, "ack": None, "window": None}
        else:
            want |= {k: None for k in ("ip_version", "ip_proto", "ip_len", "src_p", "dst_p", "tcp_flags",
                                       "seq", "ack", "window", "payload_offset")}
        assert {k: r[k] for k in want} == want, n
    assert len(got) == len(frames)
