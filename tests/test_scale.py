"""Scale: rotated captures as one stream, parallel and distributed ingest, kill and resume.

Truth here is the uninterrupted, single-file ingest of the same packets: a
split capture must give the same sessions (one uid per connection), the same
packet bytes, and the same row counts whichever way it is ingested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _pcapbuild import eth, handshake_session, split_pcap, tcp_pkt, write_pcap

import forensics

COLS = ("orig_h, orig_p, resp_h, resp_p, proto, orig_bytes, resp_bytes, orig_pkts, resp_pkts, "
        "orig_ip_bytes, resp_ip_bytes, conn_state, history")


def _long_session() -> tuple[list[bytes], bytes]:
    """One TCP connection carrying 30 segments of known bytes, plus a short one."""
    A, S, F, P = 0x10, 0x02, 0x01, 0x08
    c, s = 7000, 9000
    body = bytes(range(256)) * 12  # 3072 bytes, 30 segments of ~102
    seg = [body[i:i + 102] for i in range(0, len(body), 102)]
    pk = [tcp_pkt("10.1.1.1", "10.1.1.2", 50000, 445, S, c),
          tcp_pkt("10.1.1.2", "10.1.1.1", 445, 50000, S | A, s, c + 1),
          tcp_pkt("10.1.1.1", "10.1.1.2", 50000, 445, A, c + 1, s + 1)]
    off = 0
    for chunk in seg:
        pk.append(tcp_pkt("10.1.1.1", "10.1.1.2", 50000, 445, P | A, c + 1 + off, s + 1, chunk))
        off += len(chunk)
    pk += [tcp_pkt("10.1.1.1", "10.1.1.2", 50000, 445, F | A, c + 1 + off, s + 1),
           tcp_pkt("10.1.1.2", "10.1.1.1", 445, 50000, F | A, s + 1, c + 2 + off),
           tcp_pkt("10.1.1.1", "10.1.1.2", 50000, 445, A, c + 2 + off, s + 2)]
    frames = [eth(bytes(p)) for p in pk] + [eth(p) for p in handshake_session(cport=40100)]
    return frames, body


@pytest.fixture
def whole(tmp_path):
    frames, body = _long_session()
    return write_pcap(tmp_path / "whole.pcap", frames), body


def _sessions(case) -> list[tuple]:
    rows = case.sql(f"SELECT {COLS} FROM sessions").itertuples(index=False)
    return sorted((tuple(r) for r in rows), key=str)


def _stream_bytes(case) -> bytes:
    """The client's payload bytes, read back from the evidence files via the packet index."""
    rows = case.sql("""
        SELECT e.path, p.payload_offset, p.payload_len, p.seq FROM packets p
        JOIN evidence e USING (evidence_id)
        WHERE p.src = '10.1.1.1' AND p.src_p = 50000 AND p.payload_len > 0 ORDER BY p.seq""")
    out = b""
    for r in rows.itertuples():
        with open(r.path, "rb") as fh:
            fh.seek(r.payload_offset)
            out += fh.read(r.payload_len)
    return out


@pytest.mark.parametrize("cuts", [[12], [8, 20]], ids=["two-files", "three-files"])
def test_session_spanning_rotated_files_is_one_session(tmp_path, whole, cuts):
    path, body = whole
    with forensics.open_case(tmp_path / "ref") as ref:
        ref.ingest(path)
        expected = _sessions(ref)
    files = split_pcap(path, tmp_path / "sensor1", cuts)
    with forensics.open_case(tmp_path / "c") as c:
        res = c.ingest(tmp_path / "sensor1")
        assert [r.evidence_id is not None for r in res] == [True] * len(files)
        assert _sessions(c) == expected
        uids = c.sql("SELECT DISTINCT uid FROM packets WHERE src_p = 50000 OR dst_p = 50000")
        assert len(uids) == 1
        assert _stream_bytes(c) == body
        # The session's lineage names the file it started in.
        first = c.sql("SELECT e.name FROM sessions s JOIN evidence e USING (evidence_id) "
                      "WHERE s.orig_p = 50000").name.tolist()
        assert first == [files[0].name]


def test_overlapping_files_in_one_folder_are_not_chained(tmp_path):
    """Two sensors saw the same connection at the same time (files overlap in time):
    chaining them would double every packet into one session; they stay apart."""
    (tmp_path / "s").mkdir()
    frames = [eth(p) for p in handshake_session(cport=1111)]
    write_pcap(tmp_path / "s" / "a.pcap", frames)
    write_pcap(tmp_path / "s" / "b.pcap", frames, snaplen=9000)  # same packets, another file
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(tmp_path / "s")
        s = c.sql("SELECT orig_pkts, resp_pkts, conn_state FROM sessions")
        assert s.values.tolist() == [[5, 4, "SF"], [5, 4, "SF"]]


def _sensor_folders(tmp_path: Path) -> Path:
    root = tmp_path / "evidence"
    for k in range(3):
        frames, _ = _long_session()
        frames = [f.replace(b"\x0a\x01\x01", bytes([10, 1 + k, 1])) for f in frames]
        p = write_pcap(tmp_path / f"s{k}.pcap", frames)
        split_pcap(p, root / f"sensor{k}", [10, 25])
    return root


def _counts(case) -> dict[str, int]:
    t = case.tables()
    return {n: int(r) for n, r in zip(t["table"], t["rows"], strict=True)
            if n in ("sessions", "packets", "evidence", "ingest_warnings")}


def test_parallel_and_dask_match_serial(tmp_path):
    root = _sensor_folders(tmp_path)
    results = {}
    for name, kw in (("serial", {}), ("process", {"workers": 2, "executor": "process"}),
                     ("dask", {"workers": 2, "executor": "dask"})):
        if name == "dask":
            pytest.importorskip("dask.distributed", reason="needs dask[distributed] (test extra)")
        with forensics.open_case(tmp_path / name) as c:
            c.ingest(root, **kw)
            results[name] = (_counts(c), _sessions(c),
                             sorted(c.sql("SELECT uid FROM sessions").uid))
    assert results["serial"][0]["evidence"] == 9
    assert results["process"] == results["serial"]
    assert results["dask"] == results["serial"]


def test_killed_ingest_resumes_to_the_same_rows(tmp_path):
    root = _sensor_folders(tmp_path)
    with forensics.open_case(tmp_path / "ref") as ref:
        ref.ingest(root)
        expected = (_counts(ref), _sessions(ref))
    case_dir = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal, forensics
        c = forensics.open_case({str(case_dir)!r})
        seen = []
        def progress(path, done):
            if path not in seen:
                seen.append(path)
            if len(seen) == 5:  # part way through the second sensor
                os.kill(os.getpid(), signal.SIGKILL)
        c.ingest({str(root)!r}, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with forensics.open_case(case_dir) as c:  # the case always opens
        partial = _counts(c)
        assert 0 < partial["evidence"] <= 9
        done_before = set(c.sql("SELECT path FROM evidence WHERE status = 'ingested'").path)
        c.ingest(root)
        assert _counts(c) == expected[0]
        assert _sessions(c) == expected[1]
        runs = c.sql("SELECT e.path FROM ingest_runs r JOIN evidence e USING (evidence_id)").path
        # Committed files were not read again.
        assert all(list(runs).count(p) == 1 for p in done_before)
    assert not list((case_dir / ".staging").glob("*/*"))
    assert os.path.exists(case_dir / "case.duckdb")
