"""The case store: custody, idempotent re-ingest, deterministic ids, read-only sharing."""

from __future__ import annotations

import shutil

import pytest
from _fresh import fresh_python
from _pcapbuild import eth, handshake_session, write_pcap

import forensics
from forensics.errors import CaseError, EvidenceChangedError, QueryError, UnsupportedSource


@pytest.fixture
def capture(tmp_path):
    frames = [eth(p) for p in handshake_session()]
    frames += [eth(p) for p in handshake_session(cport=40001, sport=443)]
    return write_pcap(tmp_path / "two.pcap", frames)


def _counts(c):
    return {t: int(n) for t, n in zip(c.tables()["table"], c.tables()["rows"], strict=True)}


def test_reingest_adds_nothing_and_reopen_keeps_everything(tmp_path, capture):
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(capture)
        first = _counts(c)
        (again,) = c.ingest(capture)
        assert again.skipped
        assert _counts(c) == first
    with forensics.open_case(tmp_path / "c") as c:
        assert _counts(c) == first
        assert first["sessions"] == 2 and first["packets"] == 18 and first["evidence"] == 1


def test_same_evidence_same_uids_in_another_case(tmp_path, capture):
    uids = []
    for name in ("a", "b"):
        copy = tmp_path / f"{name}.pcap"
        shutil.copy(capture, copy)  # another path, same bytes
        with forensics.open_case(tmp_path / name) as c:
            c.ingest(copy)
            uids.append(c.sql("SELECT uid FROM sessions ORDER BY uid")["uid"].tolist())
    assert uids[0] == uids[1] and len(set(uids[0])) == 2


def test_every_packet_traces_back_to_evidence_bytes(tmp_path, capture):
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(capture)
        pk = c.sql("SELECT p.file_offset, p.caplen, p.payload_offset, p.payload_len, e.path "
                   "FROM packets p JOIN evidence e USING (evidence_id) ORDER BY frame")
    data = capture.read_bytes()
    frames = [eth(p) for p in handshake_session()]
    for row, frame in zip(pk.itertuples(), frames, strict=False):
        assert data[row.file_offset:row.file_offset + row.caplen] == frame
    req = pk.iloc[3]
    assert data[req.payload_offset:req.payload_offset + req.payload_len] == b"GET / HTTP/1.0\r\n\r\n"


def test_read_only_readers_share_a_case(tmp_path, capture):
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(capture)
    r1 = forensics.open_case(tmp_path / "c", read_only=True)
    r2 = forensics.open_case(tmp_path / "c", read_only=True)
    assert len(r1.sessions()) == len(r2.sessions()) == 2
    with pytest.raises(CaseError):
        r1.ingest(capture)
    r1.close()
    r2.close()
    with pytest.raises(CaseError):
        forensics.open_case(tmp_path / "nowhere", read_only=True)


def test_verify_evidence_detects_change_and_loss(tmp_path, capture):
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(capture)
        assert (c.verify_evidence()["status"] == "ok").all()
        capture.write_bytes(capture.read_bytes() + b"\0")
        assert c.verify_evidence()["status"].tolist() == ["changed"]
        with pytest.raises(EvidenceChangedError):
            c.verify_evidence(raise_on_change=True)
        capture.unlink()
        assert c.verify_evidence()["status"].tolist() == ["missing"]


def test_interrupted_ingest_leaves_the_case_as_it_was(tmp_path, capture, monkeypatch):
    from forensics.net.pipeline import NetPipeline

    with forensics.open_case(tmp_path / "c") as c:
        real = NetPipeline.process
        def boom(self, batch):
            real(self, batch)
            raise KeyboardInterrupt
        monkeypatch.setattr(NetPipeline, "process", boom)
        with pytest.raises(KeyboardInterrupt):
            c.ingest(capture)
        assert c.sql("SELECT count(*) AS n FROM sessions").n[0] == 0
        assert c.evidence()["status"].tolist() == ["failed"]
        assert not list((tmp_path / "c" / "parquet").rglob("*.parquet"))
        monkeypatch.setattr(NetPipeline, "process", real)
        (res,) = c.ingest(capture)
        assert res.sessions == 2 and c.evidence()["status"].tolist() == ["ingested"]


def test_sessions_filters_and_query_errors(tmp_path, capture):
    with forensics.open_case(tmp_path / "c") as c:
        c.ingest(capture)
        assert len(c.sessions(port=443)) == 1
        assert len(c.sessions(host="10.0.0.2", proto="tcp")) == 2
        assert len(c.sessions(since="2030-01-01")) == 0
        with pytest.raises(QueryError):
            c.sql("SELECT nope FROM sessions")


def test_detecting_a_capture_loads_no_log_source(tmp_path):
    """Detection imports source modules in registration order and stops at the first match:
    a capture is recognised without importing the log parsers."""
    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    code = (
        "import sys\nfrom forensics import sources\n"
        f"print(sources.detect({str(cap)!r}).name)\n"
        "print(sorted(m for m in ('syslog', 'weblog', 'zeek_log', 'suricata_eve', 'winevent_json')"
        " if 'forensics.sources.' + m in sys.modules))\n"
    )
    stdout = fresh_python(code, timeout=120)
    assert stdout.split("\n")[:2] == ["pcap", "[]"]


def test_lazy_detection_picks_what_the_full_registry_picks(shared):
    """The same source, in the same order of precedence, as trying every registered source,
    on every public capture and log in ../shared (and files of no known format)."""
    from forensics import sources

    files = sorted(p for p in shared.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(files) > 500
    names: set[str | None] = set()
    for f in files:
        head = f.read_bytes()[: sources.SNIFF_BYTES]
        want = next((s.name for s in sources.all_sources().values() if s.sniff(head)), None)
        try:
            got = sources.detect(f).name
        except UnsupportedSource:
            got = None
        assert got == want, f
        names.add(got)
    assert {"pcap", "pcapng", "evtx", "suricata_eve", "syslog", None} <= names


def test_ingest_restores_the_settings_it_changes(tmp_path, capture):
    """The bulk load bounds memory and drops insertion order; the connection gets both back
    after each file, and the rows loaded are all there."""
    settings = "SELECT current_setting('memory_limit') m, current_setting('preserve_insertion_order') p"
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(capture.read_bytes()[:-10])  # last record cut short: a warning, not an error
    with forensics.open_case(tmp_path / "c") as c:
        c.con.execute("SET memory_limit = '3GB'")
        before = c.sql(settings).to_dict("records")
        c.ingest(capture)
        assert c.sql(settings).to_dict("records") == before
        c.ingest(cut)
        assert c.sql(settings).to_dict("records") == before
        assert before[0]["p"] is True
        assert c.sql("SELECT count(*) n FROM sessions")["n"][0] == 4
        assert c.sql("SELECT count(*) n FROM ingest_warnings WHERE code = 'truncated_record'")["n"][0] == 1
