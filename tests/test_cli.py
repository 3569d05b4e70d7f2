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
