"""YARA over the file store: bundled rules, public rule sets compiled per file, hostile rules and files."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
from pathlib import Path

import dpkt
import pytest
from conftest import shared_path

pytest.importorskip("yara")

from forensics import scenario, triage, yarascan
from forensics.filestore import store
from forensics.scenario import artifacts

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"

# Yara-Rules @ 0f935701: the files that do not compile with yara-python 4.5, and why.
YARA_RULES_FAILING = {
    "rules/malware/MALW_AZORULT.yar": 'invalid field name "sync"',
    "rules/malware/MALW_Httpsd_ELF.yar": 'undefined identifier "is__elf"',
    "rules/malware/MALW_Mirai_Okiru_ELF.yar": 'undefined identifier "is__elf"',
    "rules/malware/MALW_Mirai_Satori_ELF.yar": 'undefined identifier "is__elf"',
    "rules/malware/MALW_Rebirth_Vulcan_ELF.yar": 'undefined identifier "is__elf"',
    "rules/malware/MALW_TinyShell_Backdoor_gen.yar": 'undefined identifier "is__elf"',
    "rules/malware/MALW_Torte_ELF.yar": 'undefined identifier "is__elf"',
    "rules/malware/TOOLKIT_Mandibule.yar": 'undefined identifier "is__elf"',
    # index files that include MALW_AZORULT.yar: reported, not fatal
    "rules/index.yar": "includes rule files that do not compile: rules/malware/MALW_AZORULT.yar",
    "rules/index_w_mobile.yar": "includes rule files that do not compile: rules/malware/MALW_AZORULT.yar",
    "rules/malware_index.yar": "includes rule files that do not compile: rules/malware/MALW_AZORULT.yar",
}


def _hits(case) -> set[tuple[str, str]]:
    return set(case.sql("SELECT sha256, rule FROM yara_hits").itertuples(index=False, name=None))


def test_eicar_is_hit_by_the_bundled_rule(case):
    rec = store(case, EICAR, claimed_name="eicar.com", protocol="http")
    assert rec.md5 == EICAR_MD5 and rec.size == 68
    report = yarascan.scan(case)
    assert report.failed_rule_files == [] and report.files_scanned == 1
    hit = case.sql("SELECT * FROM yara_hits").iloc[0]
    assert (hit.sha256, hit.rule, hit.namespace) == (
        rec.sha256, "EICAR_Test_File", "rules/breachbook-training.yar")
    assert json.loads(hit.strings) == [{"identifier": "$eicar", "offset": 0, "length": 68}]
    assert json.loads(hit.meta)["description"] == "EICAR anti-virus test file"
    assert hit.filename == "eicar.com" and hit.run_id == report.run_id
    runs = case.sql("SELECT kind, status, namespace FROM yara_runs WHERE run_id = ?", [report.run_id])
    assert runs.values.tolist() == [["rule_file", "compiled", "rules/breachbook-training.yar"]]


def test_rescanning_adds_no_duplicates(case):
    store(case, EICAR, claimed_name="eicar.com")
    yarascan.scan(case)
    yarascan.scan(case)
    assert len(case.sql("SELECT * FROM yara_hits")) == 1


def _http_body(pcap: Path, server: str, sport: int, cport: int) -> bytes:
    """The response body of one HTTP download (stand-in for the carver in this test)."""
    segs: dict[int, bytes] = {}
    with pcap.open("rb") as fh:
        for _, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                t = ip.data
                if socket.inet_ntoa(ip.src) == server and t.sport == sport and t.dport == cport and t.data:
                    segs[t.seq] = t.data
    stream = b"".join(segs[k] for k in sorted(segs))
    return stream.split(b"\r\n\r\n", 1)[1]


def test_training_dropper_is_hit_and_triaged(case, tmp_path):
    pytest.importorskip("pefile")
    key = scenario.generate(tmp_path / "scn", profile="small", noise="none", parts=["phishing"])
    dropper = next(f for f in key["files"] if f["role"] == "dropper")
    body = _http_body(tmp_path / "scn" / "evidence" / "capture.pcap", dropper["src_ip"], dropper["src_port"],
                      dropper["dst_port"])
    rec = store(case, body, claimed_name=dropper["name"], protocol="http", direction="download",
                expected_size=dropper["size"])
    assert rec.sha256 == dropper["sha256"] and rec.complete and rec.mime_type == "application/x-dosexec"
    yarascan.scan(case, [Path(yarascan.DEFAULT_RULES) / "breachbook-training.yar"])
    assert (dropper["sha256"], key["dropper_yara_rule"]) in _hits(case)
    rep = triage.triage(case, workers=1)
    assert rep.status == {"ok": 1}
    pe = case.sql("SELECT * FROM pe_info").iloc[0]
    assert (pe.machine, bool(pe.is_64bit), bool(pe.is_dll), pe.subsystem, bool(pe.signed)) == (
        "AMD64", True, False, "CONSOLE", False)
    assert [s["name"] for s in json.loads(pe.sections)] == [".text", ".rdata"]
    assert json.loads(pe.sections)[1]["entropy"] > 7.5 and pe.entry_section == ".text"
    assert pe.compile_time is not None and pe.imphash is None


def test_hostile_pe_and_non_pe_are_reported(case):
    pytest.importorskip("pefile")
    store(case, b"MZ" + b"\xff" * 200, claimed_name="broken.exe")
    rep = triage.triage(case, workers=1)
    assert rep.status == {"not_pe": 1}
    rep = triage.triage(case, workers=1, max_size=10)
    assert rep.status == {"too_large": 1}


def test_triage_kills_a_worker_that_overruns(case):
    pytest.importorskip("pefile")
    rng = random.Random(3)
    for i in range(2):
        store(case, artifacts.pe_stub(rng, None, f"x{i}", 4096, 1_700_000_000), claimed_name=f"{i}.exe")
    # No worker can even start within a millisecond: each file ends as a timeout and
    # its worker is killed; the run still finishes and records both.
    rep = triage.triage(case, timeout=0.001, workers=1)
    assert rep.status == {"timeout": 2}
    assert case.sql("SELECT count(*) AS n FROM pe_info WHERE status = 'timeout'")["n"][0] == 2


def test_signed_pe_is_recognised(case):
    pefile = pytest.importorskip("pefile")
    data = bytearray(artifacts.pe_stub(random.Random(5), None, "signed", 4096, 1_700_000_000))
    pe = pefile.PE(data=bytes(data), fast_load=True)
    off = pe.OPTIONAL_HEADER.DATA_DIRECTORY[4].get_file_offset()
    cert = (16).to_bytes(4, "little") + (0x0200).to_bytes(2, "little") + (2).to_bytes(2, "little") + b"\0" * 8
    data[off:off + 8] = len(data).to_bytes(4, "little") + len(cert).to_bytes(4, "little")
    store(case, bytes(data) + cert, claimed_name="signed.exe")
    triage.triage(case, workers=1)
    row = case.sql("SELECT signed, signature_size, overlay_size FROM pe_info").iloc[0]
    assert (bool(row.signed), row.signature_size, row.overlay_size) == (True, 16, 16)


def _rules(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_broken_and_endless_rules_are_bounded(case, tmp_path):
    rules = _rules(tmp_path / "r", {
        "good.yar": 'rule Good { strings: $a = "needle" condition: $a }',
        "syntax.yar": "rule Broken { condition: this is not yara }",
        "endless.yar": "rule Endless { condition: for all i in (0..filesize - 1) : "
                       "(for all j in (0..filesize - 1) : (uint8(i) + uint8(j) >= 0)) }",
        "my_index.yar": 'include "syntax.yar"\ninclude "good.yar"\n',
    })
    big = store(case, b"needle" + b"\0" * 200_000, claimed_name="big.bin")
    small = store(case, b"needle", claimed_name="small.bin")
    empty = store(case, b"", claimed_name="empty.bin")
    report = yarascan.scan(case, [rules], timeout=1)
    status = {f.namespace: (f.status, f.message) for f in report.rule_files}
    assert status["r/good.yar"] == ("compiled", None)
    assert status["r/syntax.yar"][0] == "failed" and "syntax.yar(1)" in status["r/syntax.yar"][1]
    assert status["r/my_index.yar"][0] == "failed" and "r/syntax.yar" in status["r/my_index.yar"][1]
    assert report.timeouts == [big.sha256]  # the endless rule on the 200 KB file
    assert (small.sha256, "Good") in _hits(case) and (small.sha256, "Endless") in _hits(case)
    assert report.errors == [] and report.files_scanned == 3  # the empty file scanned cleanly
    assert not {h for h in _hits(case) if h[0] == empty.sha256}
    logged = case.sql("SELECT kind, status, sha256 FROM yara_runs WHERE kind = 'file'")
    assert logged.values.tolist() == [["file", "timeout", big.sha256]]


def test_too_many_matches_is_noted_and_offsets_capped(case, tmp_path):
    rules = _rules(tmp_path / "many", {"many.yar": 'rule Many { strings: $x = "x" condition: #x > 10 }'})
    rec = store(case, b"x" * 1_100_000, claimed_name="xs")
    report = yarascan.scan(case, [rules])
    assert report.warnings == [(rec.sha256, "too many matches of $x in rule Many (many/many.yar): "
                                            "later matches not recorded")]
    strings = json.loads(case.sql("SELECT strings FROM yara_hits")["strings"][0])
    assert len(strings) == yarascan.MAX_OFFSETS
    assert strings[1] == {"identifier": "$x", "offset": 1, "length": 1}
    assert case.sql("SELECT status FROM yara_runs WHERE kind = 'file'")["status"].tolist() == ["warning"]


def test_only_broken_rules_scans_nothing(case, tmp_path):
    store(case, EICAR)
    rules = _rules(tmp_path / "bad", {"x.yar": "rule {"})
    report = yarascan.scan(case, [rules])
    assert [f.status for f in report.rule_files] == ["failed"] and report.files_scanned == 0


def test_external_variables_come_from_the_carved_file(case, tmp_path):
    rules = _rules(tmp_path / "ext", {"ext.yar": """
        rule Ext { condition: filename == "setup.exe" and extension == ".exe" and filetype == "EXE"
                   and filepath == "\\\\\\\\FS01\\\\ADMIN$\\\\setup.exe" and owner == "" }
        rule NulName { condition: filename contains "evil" and extension == ".dll" }
    """})
    pe = store(case, b"MZ" + b"\0" * 100, claimed_name="\\\\FS01\\ADMIN$\\setup.exe", protocol="smb")
    nul = store(case, b"hello", claimed_name=b"evil\x00.dll")
    yarascan.scan(case, [rules])
    assert _hits(case) == {(pe.sha256, "Ext"), (nul.sha256, "NulName")}
    assert yarascan.externals_for("a/b\\C.TAR.GZ", None) == {
        "filename": "C.TAR.GZ", "filepath": "a/b\\C.TAR.GZ", "extension": ".gz", "filetype": "", "owner": ""}
    assert yarascan.externals_for(".bashrc", "TEXT")["extension"] == ""


@pytest.mark.shared
def test_signature_base_compiles_per_file_and_hits_eicar(case):
    sigbase = shared_path("signature-base", "yara")
    store(case, EICAR, claimed_name="eicar.com")
    report = yarascan.scan(case, [sigbase])
    assert len(report.rule_files) == len([p for p in sigbase.rglob("*") if p.suffix in (".yar", ".yara")])
    assert report.failed_rule_files == []  # all compile once the external variables are defined
    assert "SUSP_Just_EICAR" in {r for _, r in _hits(case)}


@pytest.mark.shared
def test_yara_rules_failures_are_reported_and_the_rest_compiled():
    root = shared_path("rules")
    compiled = yarascan.compile_rules([root])
    failed = {f.namespace: f.message for f in compiled.failed}
    assert set(failed) == set(YARA_RULES_FAILING)
    for ns, reason in YARA_RULES_FAILING.items():
        assert reason in failed[ns], (ns, failed[ns])
    statuses = {f.status for f in compiled.files}
    assert statuses == {"compiled", "failed", "skipped"}
    skipped = {f.namespace for f in compiled.files if f.status == "skipped"}
    assert skipped and all(ns.endswith("_index.yar") for ns in skipped)
    assert compiled.rules is not None
    n_compiled = sum(f.status == "compiled" for f in compiled.files)
    assert n_compiled == len(compiled.files) - len(failed) - len(skipped)


@pytest.mark.shared
def test_yara_rules_eicar_rule_hits(case):
    root = shared_path("rules", "malware", "MALW_Eicar.yar")
    store(case, EICAR)
    yarascan.scan(case, [root])
    assert {r for _, r in _hits(case)} == {"eicar"}


def test_same_hits_as_the_yara_command_line(case, tmp_path):
    if not Path("/usr/bin/yara").exists():
        pytest.skip("needs the yara command-line tool (apt-get install yara)")
    store(case, EICAR, claimed_name="e.com")
    store(case, b"MZ needle BREACHBOOK-TRAINING-DROPPER", claimed_name="d.exe")
    rules = Path(yarascan.DEFAULT_RULES) / "breachbook-training.yar"
    yarascan.scan(case, [rules])
    out = subprocess.run(["/usr/bin/yara", "-r", str(rules), str(case.path / "carved")], capture_output=True,
                         text=True, check=True, env=os.environ | {"LC_ALL": "C"}).stdout
    cli = {(Path(line.split()[1]).name, line.split()[0]) for line in out.splitlines() if line.strip()}
    assert cli == _hits(case)
