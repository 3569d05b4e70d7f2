"""Hostile and damaged captures: warnings with offsets, never a crash, hang or silent loss.

Each damaged file is built from a known-good one, so the test knows exactly
which packets must survive and where the damage is.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time

import pytest
from _pcapbuild import T0, eth, handshake_session, udp_pkt, write_pcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forensics
from forensics.errors import CorruptRecord, UnsupportedSource

FRAMES = [eth(p) for p in handshake_session()]


def _good(tmp_path):
    return write_pcap(tmp_path / "good.pcap", FRAMES)


def _offsets(frames):
    """File offset of each record header in a classic pcap written by write_pcap."""
    out, pos = [], 24
    for f in frames:
        out.append(pos)
        pos += 16 + len(f)
    return out


def _codes(case):
    return dict(zip(case.warnings()["code"], case.warnings()["offset"], strict=True))


def test_truncated_last_record_keeps_the_rest(case, tmp_path):
    data = _good(tmp_path).read_bytes()
    bad = tmp_path / "trunc.pcap"
    bad.write_bytes(data[:-7])
    (res,) = case.ingest(bad)
    assert res.records == len(FRAMES) - 1
    codes = _codes(case)
    assert codes["truncated_record"] == _offsets(FRAMES)[-1]


def test_record_length_past_end_resynchronises(case, tmp_path):
    """A corrupt caplen in the middle: the packets after it are still found."""
    data = bytearray(_good(tmp_path).read_bytes())
    off = _offsets(FRAMES)[4]
    data[off + 8:off + 12] = struct.pack("<I", 0x7FFFFFF0)
    bad = tmp_path / "len.pcap"
    bad.write_bytes(bytes(data))
    case.ingest(bad)
    codes = _codes(case)
    assert codes["bad_record_length"] == off
    assert "garbage_skipped" in codes
    frames = case.sql("SELECT file_offset FROM packets ORDER BY frame")["file_offset"].tolist()
    good = [o + 16 for o in _offsets(FRAMES)]
    # Every record except the damaged one is recovered, at its true offset.
    assert frames == good[:4] + good[5:]


def test_zero_length_snaplen_and_unknown_linktype(case, tmp_path):
    frames = [FRAMES[0], b"", FRAMES[1][:40]]
    p = write_pcap(tmp_path / "z.pcap", frames, wirelens=[len(FRAMES[0]), 60, len(FRAMES[1])])
    (res,) = case.ingest(p)
    assert res.records == 3
    codes = set(case.warnings()["code"])
    assert {"decode_6", "snaplen_cut"} <= codes
    p2 = write_pcap(tmp_path / "lt.pcap", FRAMES[:2], linktype=147)  # USER0
    (res2,) = case.ingest(p2)
    assert res2.records == 2
    w = case.warnings(res2.evidence_id)
    assert "decode_2" in set(w["code"]) and "147" in w["message"].iloc[0]


def test_bad_ip_header_length_and_time_backwards(case, tmp_path):
    ip = bytearray(udp_pkt("10.0.0.1", "10.0.0.2", 1, 2, b"x").pack())
    ip[0] = 0x43  # IHL 3 words: shorter than the minimum header
    frames = [FRAMES[0], eth(bytes(ip)), FRAMES[1]]
    times = [(T0, 500000), (T0, 600000), (T0 - 10, 0)]
    (res,) = case.ingest(write_pcap(tmp_path / "ip.pcap", frames, times=times))
    assert res.records == 3
    w = case.warnings()
    assert {"decode_3", "time_backwards"} <= set(w["code"])
    assert w[w.code == "time_backwards"]["offset"].iloc[0] == _offsets(frames)[2] + 16


def test_not_a_capture_is_a_clear_error(case, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a capture\n")
    (res,) = case.ingest(junk)
    assert res.error and "not a format Breachbook reads" in res.error
    with pytest.raises(UnsupportedSource):
        case.ingest(junk, strict=True)
    with pytest.raises(UnsupportedSource):
        case.ingest(_good(tmp_path), fmt="pcapng", strict=True)


def test_strict_mode_raises_on_damage(case, tmp_path):
    data = _good(tmp_path).read_bytes()
    bad = tmp_path / "t.pcap"
    bad.write_bytes(data[:-3])
    with pytest.raises(CorruptRecord):
        case.ingest(bad, strict=True)
    # The failed ingest left nothing behind and can be redone leniently.
    assert case.sql("SELECT count(*) AS n FROM sessions").n[0] == 0
    (res,) = case.ingest(bad)
    assert res.records == len(FRAMES) - 1


def test_evidence_is_byte_identical_after_ingest(case, tmp_path):
    p = _good(tmp_path)
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    mtime = p.stat().st_mtime_ns
    case.ingest(p)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
    assert p.stat().st_mtime_ns == mtime
    ev = case.evidence().iloc[0]
    assert ev.sha256 == before and ev["size"] == p.stat().st_size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(24, 1000))
def test_random_corruption_never_crashes(tmp_path_factory, edits, cut):
    """Flip bytes and cut the file anywhere: ingest ends quickly, with warnings at most."""
    tmp = tmp_path_factory.mktemp("fuzz")
    data = bytearray(_good(tmp).read_bytes())
    for pos, val in edits:
        data[pos % len(data)] = val
    p = tmp / "fuzz.pcap"
    p.write_bytes(bytes(data[: max(24, cut % (len(data) + 1))]))
    with forensics.open_case(tmp / "c") as c:
        t0 = time.perf_counter()
        results = c.ingest(p)
        assert time.perf_counter() - t0 < 20
        for r in results:
            assert r.error is None or "not a format" in r.error
        c.sql("SELECT * FROM sessions")


def test_pcapng_bad_block_length_resyncs(case, tmp_path):
    from _pcapbuild import pcapng_epb, pcapng_idb, pcapng_shb

    blocks = [pcapng_epb(0, T0 * 10**6 + i, f) for i, f in enumerate(FRAMES)]
    head = pcapng_shb() + pcapng_idb(1)
    data = bytearray(head + b"".join(blocks))
    bad_at = len(head) + len(blocks[0]) + len(blocks[1])
    data[bad_at + 4:bad_at + 8] = struct.pack("<I", 13)  # not a multiple of 4
    p = tmp_path / "bad.pcapng"
    p.write_bytes(bytes(data))
    (res,) = case.ingest(p)
    assert res.records == len(FRAMES) - 1
    assert _codes(case)["bad_block"] == bad_at
    assert os.path.getsize(p) == len(data)
