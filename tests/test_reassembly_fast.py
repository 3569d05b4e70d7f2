"""The fast paths of the second pass give exactly what the plain ones give.

* DNS over UDP decoded in bulk (forensics.protocols.dns.bulk_udp) against the
  per-session parser, on varied and hostile messages;
* the pass shared out over forked processes (forensics.apps) against one pass,
  rows, warnings and services in the same order.
"""

from __future__ import annotations

import random
from pathlib import Path

import dpkt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _pcapbuild import T0, eth, udp_pkt, write_pcap
from _protobuild import Conv

import forensics.apps as apps
import forensics.reassembly._index as index
from forensics.ingest import IngestContext, parse_file
from forensics.protocols import dns

NAMES = ["www.example.com", "WWW.Example.COM", "a.b.c.example.org", "x", "ab\x01c.weird", "sp ace.example",
         "_ldap._tcp.dc._msdcs.corp.local", "fhepfcelehfcepfffacacacacacacabn", "1.0.0.127.in-addr.arpa"]


def _rr(rng: random.Random, name: str) -> dpkt.dns.DNS.RR:
    kind = rng.choice(["A", "AAAA", "AAAA4", "CNAME", "MX", "TXT", "PTR", "SRV", "SOA", "OPT", "RAW"])
    ttl = rng.choice([0, 60, 86400, 2**32 - 1])
    if kind == "A":
        return dpkt.dns.DNS.RR(name=name, type=1, ttl=ttl, rdata=bytes(rng.randrange(256) for _ in range(4)))
    if kind in ("AAAA", "AAAA4"):
        raw = bytes(10) + b"\xff\xff\x01\x02\x03\x04" if kind == "AAAA4" else bytes(14) + b"\0\1"
        return dpkt.dns.DNS.RR(name=name, type=28, ttl=ttl, rdata=raw)
    if kind == "OPT":
        return dpkt.dns.DNS.RR(name="", type=41, ttl=0, rdata=b"")
    if kind == "RAW":
        t = rng.choice([99, 257, 44, 46, 48, 43, 47, 50, 65534, 999])
        return dpkt.dns.DNS.RR(name=name, type=t, ttl=ttl, rdata=bytes(rng.randrange(256) for _ in range(20)))
    types = {"CNAME": 5, "MX": 15, "TXT": 16, "PTR": 12, "SRV": 33, "SOA": 6}
    r = dpkt.dns.DNS.RR(name=name, type=types[kind], ttl=ttl)
    target = rng.choice(NAMES)
    if kind == "CNAME":
        r.cname = target
    elif kind == "MX":
        r.mxname, r.preference = target, 10
    elif kind == "TXT":
        r.text = [b"v=spf1", b"", b"\xff-all"][: rng.randrange(1, 4)]
    elif kind == "PTR":
        r.ptrname = target
    elif kind == "SRV":
        r.srvname, r.priority, r.weight, r.port = target, 1, 2, 389
    else:
        r.mname, r.rname = target, "hostmaster.x"
        r.serial = r.refresh = r.retry = r.expire = r.minimum = 1
    return r


def _message(rng: random.Random, qid: int, reply: bool) -> bytes:
    name = rng.choice(NAMES)
    qd = [] if rng.random() < 0.05 else [dpkt.dns.DNS.Q(name=name, type=rng.choice([1, 28, 33]))]
    d = dpkt.dns.DNS(id=qid, qd=qd)
    d.op = (dpkt.dns.DNS_QR | dpkt.dns.DNS_RA if reply else 0) | dpkt.dns.DNS_RD
    if reply:
        d.rcode = rng.choice([0, 0, 3, 2])
        d.an = [_rr(rng, name) for _ in range(rng.choice([0, 1, 2, 4]))]
    b = bytearray(bytes(d))
    r = rng.random()
    if r < 0.05 and len(b) > 12:
        del b[rng.randrange(12, len(b)):]  # truncated
    elif r < 0.10:
        b[rng.randrange(len(b))] = rng.randrange(256)  # a flipped byte
    elif r < 0.12 and len(b) > 14:
        b[12:14] = b"\xc0\x0c"  # a pointer to itself
    return bytes(b)


def _stage(path: Path, tmp: Path, row_group: int | None = None) -> tuple[Path, Path]:
    st = parse_file(path, tmp / "stage", protocols=False)
    packets, sessions = st.packets, st.tables["sessions"][0]
    if row_group:  # many small row groups, so that the pass can be shared out
        pq.write_table(pq.read_table(packets), packets, row_group_size=row_group)
    return packets, sessions


def _run(packets: Path, sessions: Path, path: Path, evidence_id: str = "e1") -> tuple[dict, list]:
    ctx = IngestContext(path=path, evidence_id=evidence_id)
    tbl = pq.read_table(sessions)
    out = apps.reconstruct(None, evidence_id, ctx, packets=packets, sessions=tbl, evidence_path=path)
    return out, ctx.warning_rows()


def _same(a: tuple[dict, list], b: tuple[dict, list]) -> None:
    assert sorted(a[0]) == sorted(b[0])
    for name in a[0]:
        assert a[0][name].equals(b[0][name]), name
    assert a[1] == b[1]


def _spy(monkeypatch, owner, name: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Wrap ``owner.name`` so that each call's arguments are appended to the list returned."""
    calls: list[tuple] = []
    inner = getattr(owner, name)

    def spied(*args):  # type: ignore[no-untyped-def]
        calls.append(args)
        return inner(*args)

    monkeypatch.setattr(owner, name, spied)
    return calls


def _no_carving(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    try:
        import forensics.carve as carve
    except ImportError:
        return
    monkeypatch.setattr(carve, "after_reconstruct", lambda *a, **k: {})


def test_dns_bulk_equals_parser(tmp_path, monkeypatch):
    rng = random.Random(5)
    frames, times, t = [], [], 0.0
    for i in range(600):
        c = f"10.1.{i // 250}.{i % 250 + 1}"
        servers = [("10.0.0.53", 53), ("224.0.0.251", 5353), ("10.0.0.9", 137), ("10.0.0.7", 1234)]
        s, dport = rng.choice(servers)
        sport = 137 if dport == 137 else 20000 + i
        ids = [rng.randrange(65536) for _ in range(2)]
        for _ in range(rng.choice([1, 2, 2, 3, 5])):
            reply = rng.random() < 0.5
            m = _message(rng, rng.choice(ids), reply)
            pk = udp_pkt(s, c, dport, sport, m) if reply else udp_pkt(c, s, sport, dport, m)
            t += rng.random() * 0.01
            frames.append(eth(bytes(pk)))
            times.append(T0 + t)
    cap = write_pcap(tmp_path / "dns.pcap", frames, times=times)
    packets, sessions = _stage(cap, tmp_path)
    _no_carving(monkeypatch)
    taken = []
    bulk = dns.bulk_udp

    def counted(*a):  # type: ignore[no-untyped-def]
        res = bulk(*a)
        taken.append(int(res[0].sum()))
        return res

    monkeypatch.setattr(dns, "bulk_udp", counted)
    fast = _run(packets, sessions, cap)
    assert sum(taken) > 200, "the bulk path took (almost) nothing"
    monkeypatch.setattr(dns, "bulk_ready", lambda: False)
    _same(fast, _run(packets, sessions, cap))
    assert fast[0]["dns"].num_rows > 600 and any(w["code"] == "dns_malformed" for w in fast[1])


def _mix(tmp_path: Path, ranges: bool = False) -> Path:
    """HTTP, FTP (data channel tied later), DNS, conflicts and gaps, interleaved in time."""
    rng = random.Random(9)
    convs, udps, edges = [], [], []
    for i in range(120):
        port = 41000 + i
        if i % 10 == 0:  # FTP control and data channel, tied together after all sessions
            data_port = 30000 + i
            ctl = Conv("10.0.0.5", "10.0.0.21", port, 21)
            ctl.send(False, b"220 ready\r\n").send(True, b"USER a\r\n").send(False, b"331 pw\r\n")
            ctl.send(True, b"PASS b\r\n").send(False, b"230 ok\r\n").send(True, b"PASV\r\n")
            pasv = f"227 Entering Passive Mode (10,0,0,21,{data_port >> 8},{data_port & 255})\r\n"
            ctl.send(False, pasv.encode())
            ctl.send(True, b"RETR f.txt\r\n").send(False, b"150 go\r\n")
            cut = len(ctl.frames)
            data = Conv("10.0.0.5", "10.0.0.21", port + 5000, data_port).send(False, b"data " * 50).close()
            ctl.send(False, b"226 done\r\n").close()
            ctl.frames[cut:cut] = data.frames  # the data channel opens after the command
            convs.append(ctl)
        elif ranges and i in (1, 119):  # one resource fetched in two ranges, far apart in the capture
            half = b"0123456789" * 10 if i == 1 else b"abcdefghij" * 10
            first = i == 1
            c = Conv("10.0.0.3", "10.0.0.4", port, 80).send(True, b"GET /big HTTP/1.1\r\nHost: r\r\n\r\n")
            crange = b"bytes 0-99/200" if first else b"bytes 100-199/200"
            c.send(False, b"HTTP/1.1 206 Partial Content\r\nContent-Range: " + crange
                   + b"\r\nContent-Length: 100\r\n\r\n" + half).close()
            edges.append(c)
        elif i % 3 == 0:  # overlapping copies with different bytes: a conflict and its warning
            c = Conv("10.0.0.7", "10.0.0.8", port, 8080)
            c.seg(True, 0, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").seg(True, 4, b"XY")
            c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").close()
            convs.append(c)
        else:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(10, 3000)))
            c = Conv("10.0.0.3", "10.0.0.4", port, 80).send(True, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            if i % 7 == 0:  # a gap in the response
                c.seg(False, 0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                c.sent[False] += 100
            c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body).close()
            convs.append(c)
        q = dpkt.dns.DNS(id=i, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=f"h{i}.example.com", type=1)])
        udps.append(bytes(udp_pkt("10.0.0.3", "10.0.0.53", 50000 + i, 53, bytes(q))))
    # interleave the conversations' frames so that sessions overlap in time
    frames: list[bytes] = list(edges[0].frames) if edges else []
    queues = [list(c.frames) for c in convs] + [[u] for u in udps]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        frames.append(q.pop(0))
    frames += edges[1].frames if edges else []  # the ranges: first and last, so in different shares
    return write_pcap(tmp_path / "mix.pcap", [eth(f) for f in frames])


@pytest.mark.parametrize("own", [True, False], ids=["sessions-of-this-file", "sessions-of-a-stream"])
def test_shared_pass_equals_one_pass(tmp_path, monkeypatch, own):
    """Shares after the first pick up the sessions still open where they start, from the
    sessions' first frames when the sessions are this file's, and from the first row group
    when they may have begun in an earlier file of a capture stream (another evidence)."""
    cap = _mix(tmp_path)
    packets, sessions = _stage(cap, tmp_path, row_group=97)
    eid = pq.read_table(sessions).column("evidence_id")[0].as_py() if own else "e1"
    log = tmp_path / "starts.txt"  # the later shares run in forked processes: they write it down
    first_live = index._first_live_group

    def spied(*a):  # type: ignore[no-untyped-def]
        g = first_live(*a)
        with log.open("a") as fh:
            fh.write(f"{g}\n")
        return g

    monkeypatch.setattr(index, "_first_live_group", spied)
    _no_carving(monkeypatch)
    monkeypatch.setattr(index, "BATCH_ROWS", 200)
    monkeypatch.setattr(index, "MIN_BATCH_ROWS", 200)
    monkeypatch.setattr(apps, "SPLIT_MIN_ROWS", 0)
    run_shares_calls = _spy(monkeypatch, apps, "_run_shares")
    monkeypatch.setattr(apps, "_split", lambda p: 3)
    shared = _run(packets, sessions, cap, eid)
    monkeypatch.setattr(apps, "_split", lambda p: 1)
    one = _run(packets, sessions, cap, eid)
    assert [args[0] for args in run_shares_calls] == [3, 1]
    _same(shared, one)
    starts = log.read_text().split() if log.exists() else []
    assert len(starts) == 2  # shares 1 and 2 each looked for their first row group
    out = one[0]
    assert {"http", "ftp", "dns", "stream_gaps", "stream_conflicts"} <= set(out)
    assert out["ftp"].column("data_uid").null_count < out["ftp"].num_rows
    assert "ftp-data" in out["sessions"].column("service").to_pylist()



def test_open_sessions_at_a_share_start_found_from_first_frames(tmp_path):
    """What a later share holds when it starts, found from the sessions' first frames and
    the frame statistics, equals what reading every row group's uids finds; and with
    conversations one after another, the reading starts close to the cut, not at the top."""
    convs = []
    for i in range(40):
        c = Conv("10.0.0.3", "10.0.0.4", 42000 + i, 80).send(True, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n")
        convs.append(c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").close())
    frames = [f for c in convs for f in c.frames]
    # a last conversation whose opening is in the middle of another one
    frames[200:200] = Conv("10.0.0.5", "10.0.0.6", 43000, 80).send(True, b"GET / HTTP/1.1\r\n\r\n").frames
    cap = write_pcap(tmp_path / "seq.pcap", [eth(f) for f in frames])
    packets, sessions = _stage(cap, tmp_path, row_group=20)
    tbl = pq.read_table(sessions)
    uids = tbl.column("uid").to_pylist()
    sid_of = {u: i for i, u in enumerate(uids)}
    last = tbl.column("last_frame").to_numpy()
    first = tbl.column("first_frame").to_numpy()
    pf = pq.ParquetFile(packets)
    batches = index.read_plan(pf, 40)
    cols = [index.COLUMNS[f] for f in index.INGEST_FIELDS] + ["uid"]
    starts = []
    for cut in range(1, len(batches)):
        want = index._pending_before(pf, batches, cut, sid_of, last, cols)
        got = index._pending_before(pf, batches, cut, sid_of, last, cols, first)
        assert sorted(want) == sorted(got)
        for f in want:
            assert (want[f] == got[f]).all(), (cut, f)
        fr = pf.read_row_group(batches[cut - 1][-1], columns=["frame"]).column("frame")
        upto = [g for b in batches[:cut] for g in b]
        starts.append(index._first_live_group(pf, upto, first, last, int(fr[len(fr) - 1].as_py())))
    groups = sum(len(b) for b in batches)
    assert len(batches) > 5
    assert max(g for g in starts if g is not None) >= groups - 8  # near the end, not at the top


def _unclocked(tbl: pa.Table) -> pa.Table:
    """The table without ``stored_at`` (when the store wrote a file: the wall clock)."""
    return tbl.drop_columns([c for c in ("stored_at",) if c in tbl.column_names])


def test_carving_in_the_pass_equals_carving_after_it(tmp_path, monkeypatch):
    """Files carved while the pass has each session at hand (in one process, or shared out
    over three) are the files a separate carving pass over the packet index finds."""
    import forensics.carve as carve

    cap = _mix(tmp_path, ranges=True)
    case_dir = tmp_path / "case"
    (case_dir / ".staging").mkdir(parents=True)
    (case_dir / "case.duckdb").touch()  # what makes the staging folder a case's (its store: case/carved)
    st = parse_file(cap, case_dir / ".staging" / "s1", protocols=False)
    packets, sessions = st.packets, st.tables["sessions"][0]
    pq.write_table(pq.read_table(packets), packets, row_group_size=97)
    monkeypatch.setattr(index, "BATCH_ROWS", 200)
    monkeypatch.setattr(index, "MIN_BATCH_ROWS", 200)
    monkeypatch.setattr(apps, "SPLIT_MIN_ROWS", 0)
    monkeypatch.setattr(apps, "_split", lambda p: 3)
    shared = _run(packets, sessions, cap)
    monkeypatch.setattr(apps, "_split", lambda p: 1)
    one = _run(packets, sessions, cap)
    _same(*(({k: _unclocked(v) for k, v in r[0].items()}, r[1]) for r in (shared, one)))
    out = one[0]
    # independent of the pass: carve from the packet index afterwards, as carve_case does
    ctx = IngestContext(path=cap, evidence_id="e1")
    after = carve.carve_capture(ctx, {k: v for k, v in out.items() if k not in carve.CARVE_TABLES},
                                packets=packets, sessions=out["sessions"], evidence_path=cap,
                                store_root=case_dir / "carved", evidence_id="e1")
    for name in ("files", "carved_files"):
        got, want = _unclocked(out[name]).sort_by("fuid"), _unclocked(after[name]).sort_by("fuid")
        assert got.equals(want), name
    assert out["http"].equals(after["http"])
    files = out["files"].to_pylist()
    names = {r["fuid"]: r for r in out["carved_files"].to_pylist()}
    assert len(files) > 60 and {"http", "ftp"} <= {r["protocol"] for r in names.values()}
    whole = [r for r in files if r["total_bytes"] == 200]
    assert len(whole) == 1  # the two ranges, from sessions in different shares, put together
    data = (case_dir / names[whole[0]["fuid"]]["path"]).read_bytes()
    assert data == b"0123456789" * 10 + b"abcdefghij" * 10


def test_uid_index_looks_up_as_a_dict_does():
    """The compact uid index gives what a dict from uid to its (last) index gives: for whole
    columns with unknown and NULL uids, uids of another length, and one at a time."""
    from forensics.reassembly._index import UidIndex

    rng = random.Random(3)
    uids = [f"C{rng.getrandbits(64):017x}"[:18] for _ in range(500)]
    uids[7] = uids[300]  # a uid given twice: the later index wins, as in a dict
    d = {u: i for i, u in enumerate(uids)}
    ix = UidIndex(pa.array(uids))
    probe = [*rng.sample(uids, 100), "Cunknown000000000", "", "C" * 30, None]
    assert ix.codes(pa.array(probe)).tolist() == [d.get(u, -1) for u in probe]
    # dictionary-encoded and chunked columns, as the packet index gives them
    enc = pa.chunked_array([pa.array(probe[:50]).dictionary_encode(),
                            pa.array(probe[50:]).dictionary_encode()])
    assert ix.codes(enc).tolist() == [d.get(u, -1) for u in probe]
    assert dict(ix.items()) == d and len(ix) == len(d)
    assert ix.uid(300) == uids[300] and ix[uids[10]] == 10
    with pytest.raises(KeyError):
        ix["Cnot-there"]
    mixed = UidIndex(pa.array(["Ca", "Cbbb", None, "Cc"]))  # not one width: the slow conversion
    assert mixed.codes(pa.array(["Cbbb", "Cc", "Cx", None])).tolist() == [1, 3, -1, -1]


def test_sessions_no_detector_claims_are_never_built(tmp_path, monkeypatch):
    """Detectors run first on the heads the batch read in bulk: sessions nobody claims get no
    Python session at all; a detector that looks past the heads gets the whole session (and
    the same answer), and claimed sessions are parsed as before."""
    from forensics import protocols
    from forensics.reassembly.stream import SessionBatch

    rng = random.Random(4)
    convs = []
    for i in range(6):  # HTTP: claimed by the http detector
        c = Conv("10.0.0.3", "10.0.0.4", 44000 + i, 80).send(True, b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
        convs.append(c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").close())
    for i in range(10):  # random bytes: nobody claims them
        junk = bytes(rng.randrange(1, 256) for _ in range(300))
        convs.append(Conv("10.0.0.5", "10.0.0.6", 45000 + i, 443).send(True, junk).send(False, junk).close())
    for i in range(3):  # claimed by a detector that reads the reassembled direction itself
        convs.append(Conv("10.0.0.7", "10.0.0.8", 46000 + i, 7777).send(True, b"ZZZZ hello").close())
    cap = write_pcap(tmp_path / "probe.pcap", [eth(f) for c in convs for f in c.frames])
    packets, sessions = _stage(cap, tmp_path)
    _no_carving(monkeypatch)

    def zdetect(orig: bytes, resp: bytes, s: protocols.Session) -> bool:
        return s.orig.read(0, 4) == b"ZZZZ"  # past the heads: needs the whole session

    def zparse(s: protocols.Session) -> None:
        s.emit("ssh", client="zzz")  # any declared table will do

    analyzers = [protocols.Analyzer("zzz", "tcp", zdetect, zparse, 0), *protocols.ANALYZERS]
    monkeypatch.setattr(protocols, "ANALYZERS", analyzers)
    built = _spy(monkeypatch, SessionBatch, "tcp_session")
    monkeypatch.setattr(apps, "_split", lambda p: 1)
    out, _warnings = _run(packets, sessions, cap)
    services = out["sessions"].column("service").to_pylist()
    assert sorted(s for s in services if s) == ["http"] * 6 + ["zzz"] * 3
    assert out["http"].num_rows == 6 and out["ssh"].column("client").to_pylist() == ["zzz"] * 3
    # every session was probed; the whole session was built for the claimed and the asked-for ones
    # (the zzz detector comes first, so each of the 19 sessions asks for its whole session once)
    assert len(built) == 19
    monkeypatch.setattr(protocols, "ANALYZERS", analyzers[1:])
    built.clear()
    out, _warnings = _run(packets, sessions, cap)
    assert sorted(s for s in out["sessions"].column("service").to_pylist() if s) == ["http"] * 6
    assert len(built) == 6  # the 13 sessions nobody claims were never built


def test_held_tables_commit_what_staged_parquet_commits(tmp_path, monkeypatch):
    """A serial ingest commits the second pass's tables from memory; staged as Parquet (as a
    worker process stages them) they give the case the same rows."""
    import forensics
    import forensics.ingest as fi
    import forensics.parallel as par

    cap = _mix(tmp_path, ranges=True)
    held: list[set[str]] = []
    second = fi._second_pass

    def spied(*a, **k):  # type: ignore[no-untyped-def]
        out = second(*a, **k)
        held.append(set(out))
        return out

    monkeypatch.setattr(fi, "_second_pass", spied)

    def rows(c) -> dict[str, list]:  # type: ignore[no-untyped-def]
        out = {}
        for t in ("sessions", "http", "dns", "ftp", "files", "carved_files", "stream_gaps",
                  "ingest_warnings"):
            cols = [r for r in c.sql(f"DESCRIBE {t}")["column_name"] if r not in ("stored_at",)]
            sel = ", ".join(f"\"{x}\"" for x in cols)
            out[t] = sorted(map(repr, c.con.execute(f"SELECT {sel} FROM {t}").fetchall()))
        return out

    with forensics.open_case(tmp_path / "held") as c:
        c.ingest(cap)
        from_memory = rows(c)
    run_task = par.run_task
    monkeypatch.setattr(par, "run_task", lambda *a, **k: run_task(*a, **{**k, "hold": False}))
    with forensics.open_case(tmp_path / "staged") as c:
        c.ingest(cap)
        from_parquet = rows(c)
    assert held[0] >= {"sessions", "http", "dns", "ftp", "files", "carved_files"} and held[1] == set()
    assert from_memory == from_parquet
    assert len(from_memory["http"]) > 100 and len(from_memory["sessions"]) > 200
