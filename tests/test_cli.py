"""The breachbook command: ingest, info, sql, verify."""

from __future__ import annotations

import json

from _pcapbuild import eth, handshake_session, write_pcap

from forensics.cli import main


def test_ingest_info_sql_verify(tmp_path, capsys):
    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    case = str(tmp_path / "case")
    assert main(["ingest", "-q", case, str(cap)]) == 0
    out = capsys.readouterr().out
    assert "packets" in out and "9" in out and "sessions" in out
    assert main(["info", case]) == 0
    assert "sessions" in capsys.readouterr().out
    assert main(["sql", case, "SELECT orig_h, resp_p, conn_state FROM sessions", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"orig_h": "10.0.0.1", "resp_p": 80, "conn_state": "SF"}]
    assert main(["sql", case, "SELECT count(*) AS n FROM packets", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "9"]
    assert main(["verify", case]) == 0
    cap.write_bytes(b"changed")
    assert main(["verify", case]) == 1


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["sql", str(tmp_path / "none"), "SELECT 1"]) == 1
    assert "no case" in capsys.readouterr().err
    assert main(["ingest", "-q", str(tmp_path / "c"), str(tmp_path / "missing.pcap")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_console_script_ingest_hashes_early_and_exits_cleanly(tmp_path):
    """``breachbook ingest`` as its own process: the evidence hash begun before the engine is
    loaded is the file's SHA-256, the summary is printed in full, and the case opens."""
    import hashlib
    import subprocess
    import sys

    import forensics

    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    case = tmp_path / "case"
    out = subprocess.run([sys.executable, "-m", "forensics.cli", "ingest", "-q", str(case), str(cap)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "packets" in out.stdout and "sessions" in out.stdout and "warnings" in out.stdout
    with forensics.open_case(case, read_only=True) as c:
        ev = c.sql("SELECT sha256, status FROM evidence").to_dict("records")
        assert ev == [{"sha256": hashlib.sha256(cap.read_bytes()).hexdigest(), "status": "ingested"}]
        assert c.sql("SELECT count(*) AS n FROM packets")["n"][0] == 9


def test_prehash_is_taken_once_and_never_for_a_changed_file(tmp_path):
    import hashlib
    import os
    import time

    from forensics import _prehash

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(os.urandom(1 << 20))
    b.write_bytes(b"b" * 1000)
    assert _prehash.start([tmp_path]) == 2
    queued = _prehash._pending[_prehash._key(a)]
    while not (queued.running() or queued.done()):  # taken once begun (the engine's imports take longer)
        time.sleep(0.001)
    fut = _prehash.take(a)
    assert fut is not None and fut.result() == (hashlib.sha256(a.read_bytes()).hexdigest(), 1 << 20)
    assert _prehash.take(a) is None  # handed out once
    _prehash.start([b])  # already queued: not queued twice
    st = b.stat()
    b.write_bytes(b"c" * 1000)  # changed after it was queued: not taken, hashed afresh by the caller
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert _prehash.take(b) is None
    assert _prehash.take(tmp_path / "never.bin") is None


def test_prehash_not_begun_is_withdrawn(tmp_path):
    from concurrent.futures import Future

    from forensics import _prehash

    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    fut: Future = Future()  # queued behind other files: not begun
    _prehash._pending[_prehash._key(f)] = fut
    assert _prehash.take(f) is None and fut.cancelled()  # the caller hashes it; the queue skips it


def test_output_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """``breachbook ... | head``: when the reader goes away, no traceback; an ingest has
    committed before it prints its summary."""
    import os
    import subprocess
    import sys

    import forensics

    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    case = tmp_path / "case"
    for cmd in (["ingest", "-q", str(case), str(cap)],
                ["sql", str(case), "SELECT range AS n FROM range(200000)", "--format", "csv"]):
        r, w = os.pipe()
        os.close(r)  # nobody will read: the first write breaks the pipe
        p = subprocess.run([sys.executable, "-m", "forensics.cli", *cmd], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=300)
        os.close(w)
        assert "Traceback" not in p.stderr, p.stderr
        assert p.returncode == 141, (cmd, p.returncode, p.stderr)
    with forensics.open_case(case, read_only=True) as c:
        assert c.sql("SELECT status FROM evidence")["status"].tolist() == ["ingested"]
