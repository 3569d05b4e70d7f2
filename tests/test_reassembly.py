"""TCP reassembly, conversations and pcap export, on captures built in code and on tshark's view.

The synthetic cases pin one behaviour each (order, retransmission, conflicting
overlap, gap, mid-stream start, sequence wrap, snaplen cut, port reuse, a
pathological flood of tiny overlapping segments). The oracle test compares
per-direction byte counts with ``tshark -z follow,tcp,raw`` on every TCP
stream of the suricata-verify captures that has no gap.
"""

from __future__ import annotations

import collections
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _protobuild import A, Conv, ingest, udp, write
from conftest import shared_path

from forensics.reassembly import _kernel as k
from forensics.reassembly import conversation, export_pcap

REQ = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n"
BODY = bytes(range(256)) * 20


def _one(case, path: Path):  # type: ignore[no-untyped-def]
    ingest(case, path)
    uid = case.sql("SELECT uid FROM sessions WHERE proto = 'tcp' ORDER BY first_frame LIMIT 1")["uid"][0]
    return conversation(case, uid)


def test_in_order_session_reads_back(case, tmp_path):
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5120\r\n\r\n" + BODY
    c = Conv().send(True, REQ).send(False, resp, mss=500).close()
    with _one(case, write(tmp_path / "a.pcap", c)) as conv:
        assert conv.read("orig") == REQ
        assert conv.read("resp") == resp
        assert [t.direction for t in conv.turns] == ["orig", "resp"]
        assert conv.read(conv.turns[1]) == resp
        assert conv.orig.gaps.size == 0 and conv.resp.missing == 0
        assert conv.turns[0].first_frame == 4


def test_out_of_order_and_retransmission(case, tmp_path):
    data = bytes(range(200)) * 10
    c = Conv()
    c.seg(True, 1000, data[1000:1500]).seg(True, 0, data[:500]).seg(True, 500, data[500:1000])
    c.seg(True, 500, data[500:1000])  # exact retransmission
    c.seg(True, 1500, data[1500:])
    with _one(case, write(tmp_path / "o.pcap", c)) as conv:
        assert conv.read(True) == data
        assert conv.orig.out_of_order
        assert conv.orig.overlap_bytes == 500
        assert conv.orig.conflicts == []


def test_conflicting_overlap_keeps_first_copy_and_is_recorded(case, tmp_path):
    c = Conv().seg(True, 0, b"AAAAAAAAAA").seg(True, 5, b"BBBBBCCCCC")
    path = write(tmp_path / "x.pcap", c)
    with _one(case, path) as conv:
        assert conv.read(True) == b"AAAAAAAAAACCCCC"
        (cf,) = conv.orig.conflicts
        assert (cf.start, cf.end, cf.differing) == (5, 10, 5)
        assert cf.first_frame == 4 and cf.later_frame == 5
    rows = case.sql("SELECT * FROM stream_conflicts")
    assert rows[["stream_start", "stream_end", "differing"]].values.tolist() == [[5, 10, 5]]
    assert "tcp_overlap_conflict" in set(case.warnings()["code"])


def test_gap_recorded_and_filled_on_request(case, tmp_path):
    c = Conv().seg(True, 0, b"0123456789").seg(True, 20, b"abcdefghij")
    with _one(case, write(tmp_path / "g.pcap", c)) as conv:
        assert conv.orig.gaps.tolist() == [[10, 20]]
        assert conv.read(True) == b"0123456789abcdefghij"
        assert conv.read(True, fill=b"\0") == b"0123456789" + b"\0" * 10 + b"abcdefghij"
        assert conv.turns[0].gaps == ((10, 20),)
    assert case.sql("SELECT stream_start, stream_end, length FROM stream_gaps").values.tolist() == [
        [10, 20, 10]
    ]
    assert case.sql("SELECT missed_bytes FROM sessions WHERE proto='tcp'")["missed_bytes"][0] >= 10


def test_midstream_start_without_syn(case, tmp_path):
    c = Conv(handshake=False).seg(True, 100, b"second half").seg(False, 0, b"reply").seg(True, 111, b"!")
    with _one(case, write(tmp_path / "m.pcap", c)) as conv:
        assert conv.read(True) == b"second half!"
        assert conv.orig.isn is None
        assert conv.read(False) == b"reply"


def test_sequence_wraparound(case, tmp_path):
    data = bytes(range(256)) * 8
    c = Conv(isn_c=0xFFFFFF00).send(True, data, mss=300)
    with _one(case, write(tmp_path / "w.pcap", c)) as conv:
        assert conv.read(True) == data
        assert conv.orig.gaps.size == 0


def test_snaplen_cut_payload_is_a_gap(case, tmp_path):
    from _pcapbuild import write_pcap
    from _protobuild import eth_frames

    c = Conv().seg(True, 0, b"x" * 100).seg(True, 100, b"y" * 100)
    frames = eth_frames(c.frames)
    cut = [f[:-60] if i == 3 else f for i, f in enumerate(frames)]
    path = write_pcap(tmp_path / "s.pcap", cut, wirelens=[len(f) for f in frames])
    with _one(case, path) as conv:
        assert conv.orig.gaps.tolist() == [[40, 100]]
        assert conv.read(True) == b"x" * 40 + b"y" * 100


def test_port_reuse_gives_two_conversations(case, tmp_path):
    a = Conv(isn_c=1000).send(True, b"first").close()
    b = Conv(isn_c=900000).send(True, b"second").close()
    ingest(case, write(tmp_path / "r.pcap", a, b))
    uids = case.sql("SELECT uid FROM sessions WHERE proto='tcp' ORDER BY first_frame")["uid"].tolist()
    assert len(uids) == 2
    got = []
    for u in uids:
        with conversation(case, u) as conv:
            got.append(conv.read(True))
    assert got == [b"first", b"second"]


def test_udp_conversation_turns(case, tmp_path):
    pk = [
        udp("10.0.0.1", "10.0.0.9", 5000, 6000, b"ping"),
        udp("10.0.0.9", "10.0.0.1", 6000, 5000, b"pong"),
        udp("10.0.0.1", "10.0.0.9", 5000, 6000, b"again"),
    ]
    ingest(case, write(tmp_path / "u.pcap", udp=pk))
    uid = case.sql("SELECT uid FROM sessions WHERE proto='udp'")["uid"][0]
    with conversation(case, uid) as conv:
        assert [conv.read(t) for t in conv.turns] == [b"ping", b"pong", b"again"]
        assert len(conv.datagrams) == 3


def test_pathological_overlaps_stay_linear():
    """Two million 2-byte segments, each overlapping the one before: no quadratic blow-up."""
    n = 2_000_000
    seq = (1000 + np.arange(n, dtype=np.int64)) & 0xFFFFFFFF
    flags = np.full(n, A, np.int64)
    plen = np.full(n, 2, np.int64)
    t = time.perf_counter()
    out = k.reassemble(np.array([0, n], np.int64), seq[::-1].copy(), flags, plen, plen.copy(), 1 << 16)
    dt = time.perf_counter() - t
    assert out[15][0] & k.G_OVERLAP_TRUNC  # the overlap budget ran out and says so
    assert int(out[2][-1] - out[1][0]) == n + 1  # every byte owned once
    assert dt < 20, dt


def test_pathological_session_warns(case, tmp_path):
    c = Conv()
    for i in range(3000):
        c.seg(True, i, b"ab")
    c.seg(True, 0, b"Z" * 3001)  # overlaps every earlier segment
    from forensics.reassembly import stream

    old = stream.OVERLAP_BUDGET_MIN, stream.OVERLAP_BUDGET_PER_ROW
    stream.OVERLAP_BUDGET_MIN, stream.OVERLAP_BUDGET_PER_ROW = 100, 0
    try:
        ingest(case, write(tmp_path / "p.pcap", c))
    finally:
        stream.OVERLAP_BUDGET_MIN, stream.OVERLAP_BUDGET_PER_ROW = old
    assert "tcp_overlap_budget" in set(case.warnings()["code"])


def test_export_pcap_reads_back_in_tshark(case, tmp_path, tshark):
    a = Conv().send(True, REQ).send(False, b"HTTP/1.1 204 No Content\r\n\r\n").close()
    b = Conv(cport=40001).send(True, b"other").close()
    ingest(case, write(tmp_path / "e.pcap", a, b))
    uid = case.sql("SELECT uid FROM sessions WHERE orig_p = 40000")["uid"][0]
    out = tmp_path / "out.pcap"
    info = export_pcap(case, [uid], out)
    assert info["frames"] == len(a.frames) and info["format"] == "pcap"
    fields = [
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.len",
        "-e",
        "tcp.seq_raw",
    ]
    mine = subprocess.run([tshark, "-r", str(out), *fields], capture_output=True, text=True).stdout
    orig = subprocess.run(
        [tshark, "-r", str(tmp_path / "e.pcap"), "-Y", "tcp.port == 40000", *fields],
        capture_output=True,
        text=True,
    ).stdout
    assert mine.splitlines() == orig.splitlines()


# ---- tshark follow,tcp,raw on the suricata-verify captures ----------------------------------------

# Streams whose byte counts differ from tshark's, and why (a listed one that stops differing fails).
TSHARK_DIFFERENCES = {
    (
        "bug-1450-04/tls_DER-incomplete-header.pcap",
        0,
    ): "the capture is damaged at offset 5035: tshark stops reading there, the packet pass "
    "resynchronises and finds the client's last 7 bytes; the SYN-ACK's timestamp 21 years in the "
    "past also splits the connection in two sessions (Zeek semantics), summed here",
}


def _tshark_streams(tshark: str, pcap: Path) -> dict[int, tuple[set[int], str, int, int]]:
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-e", "frame.number", "-e", "tcp.stream", "-Y", "tcp"],
        capture_output=True,
        text=True,
    ).stdout
    frames: dict[int, set[int]] = collections.defaultdict(set)
    for ln in out.splitlines():
        f, s = ([*ln.split("\t"), ""])[:2]
        for st in filter(None, s.split(",")):
            frames[int(st)].add(int(f))
    if not frames:
        return {}
    args = [tshark, "-r", str(pcap), "-q"]
    for st in sorted(frames):
        args += ["-z", f"follow,tcp,raw,{st}"]
    text = subprocess.run(args, capture_output=True, text=True).stdout
    res = {}
    for block in text.split("Follow: tcp,raw")[1:]:
        st = int(re.search(r"Filter: tcp.stream eq (\d+)", block).group(1))  # type: ignore[union-attr]
        node0 = re.search(r"Node 0: (.*)", block).group(1).replace("[", "").replace("]", "")  # type: ignore[union-attr]
        b0 = b1 = 0
        for ln in block.splitlines():
            if re.fullmatch(r"\t?[0-9a-f]+", ln):
                if ln.startswith("\t"):
                    b1 += len(ln.strip()) // 2
                else:
                    b0 += len(ln) // 2
        res[st] = (frames[st], node0, b0, b1)
    return res


@pytest.mark.shared
@pytest.mark.slow
def test_byte_counts_match_tshark_follow(tmp_path, tshark):
    import forensics

    root = shared_path("suricata-verify", "tests")
    pcaps = sorted(root.rglob("*.pcap*"))
    checked, diffs, gaps = 0, {}, 0
    for i, pcap in enumerate(pcaps):
        ts = _tshark_streams(tshark, pcap)
        if not ts:
            continue
        with forensics.open_case(tmp_path / f"c{i}") as case:
            ingest(case, pcap)
            f2u = dict(
                case.sql("SELECT frame, uid FROM packets WHERE ip_proto = 6 AND uid IS NOT NULL").itertuples(
                    index=False, name=None
                )
            )
            for st, (frames, node0, b0, b1) in sorted(ts.items()):
                uids = {f2u[f] for f in frames if f in f2u}
                a = b = missing = 0
                for uid in sorted(uids):
                    with conversation(case, uid) as conv:
                        s = conv.session
                        missing += conv.orig.missing + conv.resp.missing
                        o, r = conv.orig.captured, conv.resp.captured
                    if f"{s['orig_h']}:{s['orig_p']}" == node0:
                        a, b = a + o, b + r
                    else:
                        a, b = a + r, b + o
                if missing:
                    gaps += 1
                    continue  # tshark writes a "[N bytes missing]" marker into gapped streams
                checked += 1
                if (a, b) != (b0, b1):
                    diffs[(str(pcap.relative_to(root)), st)] = f"tshark {b0}/{b1} ours {a}/{b}"
    print(
        f"\n{checked} gap-free TCP streams compared with tshark, {gaps} with gaps skipped; "
        f"{checked - len(diffs)} equal"
    )
    assert checked > 100
    assert set(diffs) == set(TSHARK_DIFFERENCES), diffs
