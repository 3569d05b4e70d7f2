"""The training scenario generator: determinism, well-formed evidence, and a key that matches it.

Everything runs on the ``small`` profile (a second or so per generation). The
capture is checked against independent tools (tshark, dpkt, yara) and against
Breachbook's own ingest (a consistency check, not ground truth).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import dpkt
import pytest

from forensics.scenario import NOISE, PARTS, PROFILES, generate

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "data" / "rules" / "breachbook-training.yar"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scenario")
    key = generate(out, seed=1, profile="small")
    return out, key


@pytest.fixture(scope="module")
def packets(scenario) -> list[tuple[float, dpkt.ip.IP]]:
    out, _ = scenario
    rows = []
    with (out / "evidence" / "capture.pcap").open("rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            rows.append((ts, dpkt.ethernet.Ethernet(buf).data))
    return rows


def _addr(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _stream(packets, src: str, dst: str, dport: int | None = None, sport: int | None = None) -> bytes:
    """Payload of one direction of a TCP connection, in sequence order, retransmissions once."""
    segs: dict[int, bytes] = {}
    for _, ip in packets:
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
            continue
        if _addr(ip.src) != src or _addr(ip.dst) != dst:
            continue
        if (dport is not None and tcp.dport != dport) or (sport is not None and tcp.sport != sport):
            continue
        segs.setdefault(tcp.seq, bytes(tcp.data))
    out = bytearray()
    nxt = None
    for seq in sorted(segs):
        if nxt is not None and seq != nxt:
            raise AssertionError(f"gap in stream {src} -> {dst} at seq {seq} (expected {nxt})")
        out += segs[seq]
        nxt = seq + len(segs[seq])
    return bytes(out)


def _smb_written_files(stream: bytes) -> dict[bytes, bytes]:
    """Data of every SMB2 WRITE request in a client-to-server stream, by FileId (MS-SMB2 §2.2.21)."""
    files: dict[bytes, bytearray] = defaultdict(bytearray)
    pos = 0
    while pos + 4 <= len(stream):
        n = int.from_bytes(stream[pos + 1:pos + 4], "big")
        msg = stream[pos + 4:pos + 4 + n]
        pos += 4 + n
        if msg[:4] == b"\xfeSMB" and int.from_bytes(msg[12:14], "little") == 9:
            body = msg[64:]
            off = int.from_bytes(body[2:4], "little")
            length = int.from_bytes(body[4:8], "little")
            at = int.from_bytes(body[8:16], "little")
            fid = bytes(body[16:32])
            buf = files[fid]
            buf[at:at + length] = msg[off:off + length]
    return {k: bytes(v) for k, v in files.items()}


def _events(out: Path) -> list[dict]:
    lines = (out / "evidence" / "windows_events.json").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines]


# ---- API and determinism ---------------------------------------------------------------


def test_public_api() -> None:
    assert set(PROFILES) == {"small", "standard", "large"}
    assert "normal" in NOISE and "psexec" in PARTS
    with pytest.raises(ValueError, match="profile"):
        generate("unused", profile="huge")
    with pytest.raises(ValueError, match="noise"):
        generate("unused", noise="deafening")
    with pytest.raises(ValueError, match="part"):
        generate("unused", parts=["psexec", "teleport"])


def test_same_seed_gives_identical_files(scenario, tmp_path: Path) -> None:
    out, key = scenario
    again = generate(tmp_path, seed=1, profile="small")
    assert again == key

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = digests(out), digests(tmp_path)
    assert len(first) == 6
    assert first == second
    for m in key["manifest"]:
        assert first[m["path"]] == m["sha256"]


def test_other_seed_gives_other_story(tmp_path: Path, scenario) -> None:
    _, key = scenario
    other = generate(tmp_path, seed=2, profile="small")
    assert other["start"] != key["start"]
    assert other["manifest"][0]["sha256"] != key["manifest"][0]["sha256"]


# ---- the capture is well formed --------------------------------------------------------


@pytest.mark.tshark
def test_tshark_reports_no_errors(scenario, tshark: str) -> None:
    out, _ = scenario
    res = subprocess.run([tshark, "-r", str(out / "evidence" / "capture.pcap"), "-q", "-z", "expert"],
                         capture_output=True, text=True, check=True, timeout=300)
    assert "Malformed" not in res.stdout
    assert "Errors (" not in res.stdout, res.stdout[:2000]


def test_checksums_are_correct(packets) -> None:
    for n, (_, ip) in enumerate(packets, 1):
        raw = bytes(ip)
        fresh = dpkt.ip.IP(raw)
        want = (fresh.sum, fresh.data.sum)
        fresh.sum = 0
        fresh.data.sum = 0
        again = dpkt.ip.IP(bytes(fresh))
        assert (again.sum, again.data.sum) == want, f"frame {n}"


def test_every_tcp_connection_starts_with_a_syn(packets, scenario) -> None:
    _, key = scenario
    allowed = {tuple(x) for x in key["tcp_without_syn"]}
    first: dict[tuple, int] = {}
    for _, ip in packets:
        tcp = ip.data
        if isinstance(tcp, dpkt.tcp.TCP):
            a, b = (_addr(ip.src), tcp.sport), (_addr(ip.dst), tcp.dport)
            first.setdefault((min(a, b), max(a, b)), tcp.flags)
    assert len(first) > 200
    bad = [k for k, flags in first.items()
           if not (flags & dpkt.tcp.TH_SYN and not flags & dpkt.tcp.TH_ACK) and k not in allowed]
    assert not bad


def test_capture_has_impairments_and_realistic_timing(packets) -> None:
    times = [ts for ts, _ in packets]
    assert times == sorted(times)
    seen: dict[tuple, set[int]] = defaultdict(set)
    retrans = 0
    sizes = set()
    for _, ip in packets:
        tcp = ip.data
        if isinstance(tcp, dpkt.tcp.TCP) and tcp.data:
            k = (ip.src, tcp.sport, ip.dst, tcp.dport)
            retrans += tcp.seq in seen[k]
            seen[k].add(tcp.seq)
            sizes.add(len(tcp.data))
    assert max(sizes) == 1460
    assert retrans == 0  # losses happen before the capture point: one copy, late
    assert times[-1] - times[0] > 0.9 * PROFILES["small"].duration_s


# ---- the key matches the evidence ------------------------------------------------------


def test_dropper_in_capture_matches_key(packets, scenario) -> None:
    _, key = scenario
    dropper = next(f for f in key["files"] if f["role"] == "dropper")
    pz = key["patient_zero"]
    resp = dpkt.http.Response(_stream(packets, dropper["src_ip"], pz["ip"], sport=80,
                                      dport=dropper["dst_port"]))
    assert resp.status == "200"
    assert resp.body[:2] == b"MZ"
    assert hashlib.sha256(resp.body).hexdigest() == dropper["sha256"]
    assert hashlib.md5(resp.body, usedforsecurity=False).hexdigest() == dropper["md5"]
    assert len(resp.body) == dropper["size"]


def test_service_binaries_in_capture_match_key(packets, scenario) -> None:
    _, key = scenario
    pushed = [f for f in key["files"] if f["role"] == "service_binary"]
    assert pushed
    for f in pushed:
        stream = _stream(packets, f["src_ip"], f["dst_ip"], dport=445, sport=f["src_port"])
        exes = [d for d in _smb_written_files(stream).values() if d[:2] == b"MZ"]
        assert [hashlib.sha256(d).hexdigest() for d in exes] == [f["sha256"]]
        assert f["yara"] == ["Breachbook_Training_Implant"]


def test_http_exfiltration_bytes_match_key(packets, scenario) -> None:
    _, key = scenario
    post = key["exfiltration"]["http_post"]
    req = dpkt.http.Request(_stream(packets, post["src_ip"], post["dst_ip"], dport=80, sport=post["sport"]))
    assert req.method == "POST"
    assert len(req.body) == post["bytes"]
    archive = next(f for f in key["files"] if f["role"] == "exfil_archive")
    assert hashlib.sha256(req.body).hexdigest() == archive["sha256"]


def test_dns_exfiltration_decodes_to_the_file(packets, scenario) -> None:
    _, key = scenario
    dns_x = key["exfiltration"]["dns"]
    suffix = "." + dns_x["domain"]
    chunks = {}
    for _, ip in packets:
        udp = ip.data
        if not isinstance(udp, dpkt.udp.UDP) or udp.dport != 53 or _addr(ip.src) != dns_x["src_ip"]:
            continue
        q = dpkt.dns.DNS(bytes(udp.data))
        name = q.qd[0].name
        if name.endswith(suffix):
            seq, label = name[: -len(suffix)].split(".")
            if dns_x["encoding"] == "base32":
                data = base64.b32decode(label.upper() + "=" * (-len(label) % 8))
            else:
                data = bytes.fromhex(label)
            chunks[int(seq, 16)] = data
    assert len(chunks) == dns_x["queries"]
    blob = b"".join(chunks[i] for i in sorted(chunks))
    assert len(blob) == dns_x["bytes_encoded"]
    f = next(x for x in key["files"] if x["role"] == "exfil_dns_file")
    assert hashlib.sha256(blob).hexdigest() == f["sha256"]


def test_windows_logs_record_the_lateral_movement(scenario) -> None:
    out, key = scenario
    events = _events(out)
    assert {e["Channel"] for e in events} == {
        "Security", "System", "Microsoft-Windows-Sysmon/Operational"}
    for e in events:
        assert {"EventTime", "Hostname", "EventID", "Channel", "RecordNumber", "SourceName"} <= e.keys()
    ids = {e["EventID"] for e in events}
    assert {4624, 4625, 4634, 4648, 4672, 4768, 4769, 7045, 1, 3} <= ids
    chain = key["lateral_chain"]
    for hop in (h for h in chain if h["technique"] == "psexec"):
        svc = [e for e in events if e["EventID"] == 7045 and e["ServiceName"] == hop["service_name"]]
        assert len(svc) == 1
        assert svc[0]["Hostname"].split(".")[0] == hop["dst"]
        assert svc[0]["ImagePath"] == hop["image_path"]
    first = chain[0]
    pz = key["patient_zero"]
    assert first["src"] == pz["host"]
    logons = [e for e in events if e["EventID"] == 4624 and e["LogonType"] == "3"
              and e["IpAddress"] == pz["ip"] and e["Hostname"].split(".")[0] == first["dst"]
              and e["TargetUserName"] == first["account"]]
    assert logons
    assert min(e["@timestamp"] for e in logons) >= first["time"]
    wmi = next(h for h in chain if h["technique"] == "wmi")
    children = [e for e in events if e["EventID"] == 1 and e["ParentImage"].endswith("WmiPrvSE.exe")
                and e["Hostname"].split(".")[0] == wmi["dst"]]
    assert len(children) == len(wmi["commands"])
    dropper = next(e for e in events if e["EventID"] == 1 and e["Image"].endswith(pz["dropper"]))
    sha = next(f for f in key["files"] if f["role"] == "dropper")["sha256"]
    assert f"SHA256={sha.upper()}" in dropper["Hashes"]


def test_text_logs_and_inventory(scenario) -> None:
    out, key = scenario
    auth = (out / "evidence" / "lnx01_auth.log").read_text()
    ssh = next(h for h in key["lateral_chain"] if h["technique"] == "ssh")
    assert f"Accepted password for {ssh['account']} from {ssh['src_ip']} port {ssh['src_port']} ssh2" in auth
    assert all(line[:3] == "Mar" and line[15:22] == " lnx01 " for line in auth.splitlines())
    access = (out / "evidence" / "gw01_access.log").read_text()
    assert f'"GET {key["patient_zero"]["url"]} HTTP/1.1" 200' in access
    assert f"POST http://{key['exfiltration']['http_post']['host']}" in access
    with (out / "inventory.csv").open(newline="") as fh:
        inv = {r["host"]: r for r in csv.DictReader(fh)}
    assert set(inv) == {h["host"] for h in key["company"]["hosts"]}
    for row in key["risk_register"]:
        assert int(inv[row["host"]]["damage_level"]) == row["damage_level"]
        assert row["risk"] == row["damage_level"] * row["probability_level"]


def test_risk_levels_follow_the_story(scenario) -> None:
    _, key = scenario
    levels = {r["host"]: r["probability_level"] for r in key["risk_register"]}
    compromised = {h["host"] for h in key["compromised_hosts"]}
    assert compromised == {key["patient_zero"]["host"]} | {h["dst"] for h in key["lateral_chain"]}
    assert all(levels[h] == 5 for h in compromised)
    probed = {c["dst"] for c in key["credential_use"] if c["success"]} - compromised
    assert probed and all(levels[h] == 4 for h in probed)
    assert all(levels[h] >= 3 for h in levels)  # the scan touched everyone
    assert {h["technique"] for h in key["lateral_chain"]} == {"psexec", "wmi", "rdp", "ssh"}


def test_yara_rule_matches_the_dropper(packets, scenario) -> None:
    yara = pytest.importorskip("yara", reason="needs yara-python (pip install yara-python)")
    _, key = scenario
    rules = yara.compile(filepath=str(RULES))
    dropper = next(f for f in key["files"] if f["role"] == "dropper")
    body = dpkt.http.Response(_stream(packets, dropper["src_ip"], key["patient_zero"]["ip"], sport=80,
                                      dport=dropper["dst_port"])).body
    assert [m.rule for m in rules.match(data=body)] == [key["dropper_yara_rule"]]
    archive = next(f for f in key["files"] if f["role"] == "exfil_archive")
    assert archive["yara"] == []
    assert rules.match(data=b"MZ" + b"\0" * 200) == []


def test_ingest_sees_the_lateral_connections(scenario, tmp_path: Path) -> None:
    import forensics

    out, key = scenario
    with forensics.open_case(tmp_path / "case") as case:
        case.ingest(out / "evidence" / "capture.pcap")
        sessions = case.sql("SELECT orig_h, resp_h, resp_p, history FROM sessions WHERE proto = 'tcp'")
    have = {(r.orig_h, r.resp_h, int(r.resp_p)) for r in sessions.itertuples()}
    for hop in key["lateral_chain"]:
        assert (hop["src_ip"], hop["dst_ip"], hop["dst_port"]) in have, hop
        if hop["technique"] == "wmi":
            assert (hop["src_ip"], hop["dst_ip"], hop["dynamic_port"]) in have
    assert all(h.startswith("S") for h in sessions["history"])
