"""EVTX: record and warning counts against the reference parser, logons from ATT&CK samples.

Truth:

* ``evtx/EXPECTED_FROM_UPSTREAM_TESTS.shared.tsv``: how many records the
  reference parser (the Rust evtx crate's own tests) yields as Ok and as Err
  for each damaged or unusual sample. We must load every Ok record and write
  one warning row per Err (warnings of severity ``info``, such as the count of
  record headers carved from chunk slack, are not errors and are not counted).
  Samples without a reference count are checked against python-evtx, an
  independent parser, where it reads the file whole; :data:`PYEVTX_SHORT`
  lists the files where python-evtx loses records, and a listed file where it
  no longer does fails the test.
* EVTX-ATTACK-SAMPLES: the file name is the label (technique, event ids,
  target/source side). :data:`LATERAL` says, for every Lateral Movement file,
  which ``logons`` or ``events`` rows the label implies; a new file without an
  entry fails the test.

Without ``../shared`` the damage tests still run on the small MIT-licensed
sample in ``tests/fixtures/logs`` (cut short, chunk magic zeroed, a record
body overwritten).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import FIXTURES, shared_path

pytest.importorskip("evtx", reason="needs the evtx package (pip install 'breachbook[logs]')")

SAMPLE = FIXTURES / "logs" / "Security_short_selected.evtx"

# python-evtx's record count differs from the reference parser here (it walks the
# chunk count stored in the file header, which is stale in these dirty files).
PYEVTX_SHORT = {
    "sysmon.evtx": "python-evtx stops at the header's chunk count: 41 of 358 records",
    "system.evtx": "python-evtx stops at the header's chunk count: 326 of 1881 records",
    "2-vss_0-Microsoft-Windows-RemoteDesktopServices-RdpCoreTS%4Operational.evtx":
        "python-evtx counts the 2 records the reference parser cannot decode (Err) as records",
}


def _counts(case, path: Path) -> tuple[int, int]:
    res = case.ingest(path, fmt="evtx")[0]
    assert res.error is None, res.error
    eid = res.evidence_id
    n = case.sql("SELECT count(*) n FROM events WHERE evidence_id = ?", [eid])["n"][0]
    w = case.sql("SELECT coalesce(sum(count), 0) n FROM ingest_warnings "
                 "WHERE evidence_id = ? AND severity <> 'info'", [eid])["n"][0]
    return int(n), int(w)


def _reference() -> dict[str, tuple[int, int]]:
    tsv = shared_path("evtx", "EXPECTED_FROM_UPSTREAM_TESTS.shared.tsv")
    rows = [r for r in tsv.read_text().splitlines() if r and not r.startswith("#")]
    out = {}
    for r in csv.DictReader(rows[: next(i for i, x in enumerate(rows) if x.startswith("snapshot"))],
                            delimiter="\t"):
        out[Path(r["sample"]).name] = (int(r["expected_ok"]), int(r["expected_err"]))
    return out


def _samples() -> list[str]:
    root = Path(__file__).resolve().parent.parent.parent / "shared/testdata/evtx/samples"
    return sorted(p.name for p in root.glob("*.evtx")) or ["<absent>"]


@pytest.mark.shared
@pytest.mark.parametrize("name", _samples())
def test_counts_match_reference_parser(case, name):
    ref = _reference()
    path = shared_path("evtx", "samples", name)
    loaded, warnings = _counts(case, path)
    if name in ref:
        assert (loaded, warnings) == ref[name], f"{name}: loaded/warnings vs reference Ok/Err"
        return
    evtx_mod = pytest.importorskip("Evtx.Evtx", reason="python-evtx cross-check")
    with evtx_mod.Evtx(str(path)) as log:
        theirs = sum(1 for _ in log.records())
    if name in PYEVTX_SHORT:
        assert theirs != loaded, f"listed exception no longer happens: {PYEVTX_SHORT[name]}"
    else:
        assert (loaded, warnings) == (theirs, 0)


@pytest.mark.shared
def test_reference_table_is_fully_used():
    names = set(_samples())
    assert set(_reference()) <= names


def test_clean_fixture_loads_with_lineage(case):
    res = case.ingest(SAMPLE, strict=True)[0]
    assert res.format == "evtx"
    ev = case.sql("SELECT * FROM events ORDER BY record_offset")
    # record_id is the event's EventRecordID (as Windows shows it); record_offset the header's byte.
    assert list(ev["record_offset"]) == [o for o, _ in RECORDS]
    assert ev["record_id"].notna().all() and ev["record_id"].is_monotonic_increasing
    assert ev["ts"].notna().all() and str(ev["ts"].dt.tz) == "UTC"
    assert set(ev["type"].dropna()) >= {"logon_failed", "ntlm_validation"}
    lg = case.sql("SELECT * FROM logons ORDER BY record_id")
    failed = lg[lg.event_id == 4625].iloc[0]
    assert (failed.user, failed.success, failed.dst_host) == ("Administrator", False, "temporal")
    assert failed.status == "0xc000006d/0xc000006a"


def _damaged(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / f"{name}.evtx"
    p.write_bytes(data)
    return p


# Record headers of the fixture's one chunk (offset, size), from a walk of the file.
RECORDS = [(4608, 2272), (6880, 720), (7600, 664), (8264, 1880), (10144, 448), (10592, 1184),
           (11776, 1104)]


@pytest.mark.parametrize("name, cut, expect_rows, expect_codes", [
    ("cut_mid_record", RECORDS[3][0] + 50, 3, {"evtx_truncated_chunk"}),
    ("cut_between_records", RECORDS[4][0], 4, {"evtx_truncated_chunk"}),
    ("header_only", 4096, 0, set()),
])
def test_truncated_chunk_keeps_complete_records(case, tmp_path, name, cut, expect_rows, expect_codes):
    p = _damaged(tmp_path, name, SAMPLE.read_bytes()[:cut])
    case.ingest(p)
    assert int(case.sql("SELECT count(*) n FROM events")["n"][0]) == expect_rows
    codes = set(case.warnings()["code"]) - {"evtx_carved_headers"}
    assert codes == expect_codes
    if expect_rows:
        offs = case.sql("SELECT record_offset FROM events ORDER BY 1")["record_offset"]
        assert list(offs) == [o for o, _ in RECORDS[:expect_rows]]


def test_bad_chunk_magic_is_one_warning(case, tmp_path):
    data = SAMPLE.read_bytes()
    p = _damaged(tmp_path, "bad_magic", data[:4096] + b"\0" * 8 + data[4104:])
    case.ingest(p)
    w = case.warnings()
    assert list(w[w.severity != "info"]["code"]) == ["evtx_record"]
    assert int(w[w.code == "evtx_record"]["offset"].iloc[0]) == 4096  # chunk 0, by byte offset


def test_bad_record_body_is_one_warning_rest_loads(case, tmp_path):
    data = SAMPLE.read_bytes()
    at = RECORDS[2][0]
    p = _damaged(tmp_path, "bad_body", data[: at + 30] + b"\xff" * 40 + data[at + 70:])
    case.ingest(p)
    offs = list(case.sql("SELECT record_offset FROM events ORDER BY 1")["record_offset"])
    assert offs == [o for i, (o, _) in enumerate(RECORDS) if i != 2]
    w = case.warnings()
    bad = w[w.code == "evtx_record"]
    assert len(bad) == 1 and (int(bad["offset"].iloc[0]), bad["unit"].iloc[0]) == (3, "record")


def test_strict_raises_on_damage(case, tmp_path):
    from forensics.errors import CorruptRecord

    data = SAMPLE.read_bytes()
    p = _damaged(tmp_path, "strict", data[:4096] + b"\0" * 8 + data[4104:])
    with pytest.raises(CorruptRecord):
        case.ingest(p, strict=True)


def test_sniff_is_precise():
    from forensics.sources import get

    src = get("evtx")
    assert src.sniff(SAMPLE.read_bytes()[:4096])
    assert not src.sniff(b"ElfChnk\x00" + b"\0" * 100)
    assert not src.sniff(b"")


# ---- EVTX-ATTACK-SAMPLES: what each Lateral Movement file name says -----------------------

L, E = "logons", "events"
LATERAL: dict[str, list[tuple[str, dict[str, object]]]] = {
    "LM_WMI_4624_4688_TargetHost.evtx": [
        (L, {"event_id": 4624, "logon_type": 3, "user": "Administrator", "src_ip": "10.0.2.17",
             "dst_host": "WIN-77LTAPHIQ1R%", "success": True}),
        (E, {"type": "process_start", "process": "%WmiPrvSE.exe"})],
    "LM_4624_mimikatz_sekurlsa_pth_source_machine.evtx": [
        (L, {"event_id": 4624, "logon_type": 9, "user": "user01", "logon_process": "seclogo",
             "dst_host": "PC01%"})],
    "LM_WMIC_4648_rpcss.evtx": [
        (L, {"action": "explicit_credentials", "user": "administrator", "subject_user": "user01",
             "src_host": "PC01%", "dst_host": "WIN-77LTAPHIQ1R%", "service": "RPCSS/%"})],
    "LM_5145_Remote_FileCopy.evtx": [
        (L, {"action": "share_access", "user": "Administrator", "src_ip": "10.0.2.15",
             "service": "\\\\*\\C$"})],
    "LM_REMCOM_5145_TargetHost.evtx": [
        (L, {"action": "share_access", "user": "IEUser", "src_ip": "10.0.2.16",
             "service": "\\\\*\\ADMIN$"}),
        (E, {"event_id": 5145, "object": "%RemComSvc.exe"})],
    "spoolsample_5145.evtx": [
        (L, {"action": "share_access", "src_ip": "10.0.2.17", "service": "\\\\*\\IPC$"}),
        (E, {"object": "%spoolss"})],
    "dfir_rdpsharp_target_RdpCoreTs_168_68_131.evtx": [
        (L, {"action": "rdp_connect", "src_ip": "10.0.2.16", "auth_package": "RDP"})],
    "LM_Remote_Service02_7045.evtx": [
        (E, {"type": "service_install", "object": "spoolfool", "command_line": "cmd.exe"})],
    "RemotePowerShell_MS_Windows-Remote_Management_EventID_169.evtx": [
        (L, {"action": "winrm_auth", "user": "ieuser", "domain": "iewin7", "auth_package": "NTLM"})],
    "LM_DCOM_MSHTA_LethalHTA_Sysmon_3_1.evtx": [
        (E, {"type": "process_start", "command_line": "%mshta.exe -Embedding"}),
        (E, {"type": "network_connect", "process": "%mshta.exe", "src_ip": "10.0.2.16"})],
    "LM_wmiexec_impacket_sysmon_whoami.evtx": [
        (E, {"type": "process_start", "command_line": "%whoami%", "parent_process": "%cmd.exe"}),
        (E, {"type": "network_connect", "dst_port": 45616, "src_port": 445})],
    "LM_sysmon_3_12_13_1_SharpRDP.evtx": [
        (E, {"type": "network_connect", "dst_port": 3389, "src_ip": "192.168.56.1"}),
        (E, {"type": "process_start"}), (E, {"type": "registry"})],
    "smbmap_upload_exec_sysmon.evtx": [
        (E, {"type": "network_connect", "src_ip": "10.0.2.15", "dst_port": 445}),
        (E, {"type": "process_start", "command_line": "cmd.exe /Q /c %"})],
    "LM_sysmon_psexec_smb_meterpreter.evtx": [
        (E, {"type": "pipe_connected"}), (E, {"type": "network_connect"}),
        (E, {"type": "process_start"})],
    "lm_sysmon_18_remshell_over_namedpipe.evtx": [
        (E, {"type": "pipe_connected"}), (E, {"type": "process_start", "process": "%whoami.exe"})],
    "LM_winrm_exec_sysmon_1_winrshost.evtx": [
        (E, {"type": "process_start", "parent_process": "%winrshost.exe"})],
    "LM_typical_IIS_webshell_sysmon_1_10_traces.evtx": [
        (E, {"type": "process_start", "parent_process": "%w3wp.exe"})],
    "lm_remote_registry_sysmon_1_13_3.evtx": [
        (E, {"type": "registry"}), (E, {"type": "network_connect"})],
    "LM_ImageLoad_NFSH_Sysmon_7.evtx": [(E, {"type": "image_load"})],
    "LM_NewShare_Added_Sysmon_12_13.evtx": [(E, {"type": "registry", "object": "%Shares%"})],
    "LM_add_new_namedpipe_tp_nullsession_registry_turla_like_ttp.evtx": [
        (E, {"type": "registry", "object": "%NullSessionPipes"})],
    "LM_tsclient_startup_folder.evtx": [
        (E, {"type": "file_create", "process": "%mstsc.exe", "object": "%Startup%"})],
    "LM_xp_cmdshell_MSSQL_Events.evtx": [(E, {"event_id": 33205, "channel": "Application"})],
    "net_share_drive_5142.evtx": [(E, {"type": "share_added"})],
}
OTHER_TACTICS = {
    "Command and Control/DE_RDP_Tunneling_TerminalServices-RemoteConnectionManagerOperational_1149.evtx":
        [(L, {"action": "rdp_auth", "user": "administrator", "src_ip": "10.0.2.16"})],
    "Credential Access/CA_4624_4625_LogonType2_LogonProc_chrome.evtx":
        [(L, {"event_id": 4625, "logon_type": 2, "success": False, "logon_process": "Chrome"})],
    "Credential Access/kerberos_pwd_spray_4771.evtx":
        [(L, {"action": "kerberos_preauth_failed", "src_ip": "172.16.66.1", "success": False})],
    "Privilege Escalation/4624 LT3 AnonymousLogon Localhost - JuicyPotato.evtx":
        [(L, {"logon_type": 3, "user": "ANONYMOUS LOGON", "src_ip": "127.0.0.1",
              "auth_package": "NTLM"})],
    "Privilege Escalation/Runas_4624_4648_Webshell_CreateProcessAsUserA.evtx":
        [(L, {"action": "explicit_credentials", "subject_user": "svc01", "user": "IEUser",
              "process": "%w3wp.exe"})],
}


def _lateral_files() -> list[str]:
    root = Path(__file__).resolve().parent.parent.parent / "shared/testdata/EVTX-ATTACK-SAMPLES"
    found = sorted(f"Lateral Movement/{p.name}" for p in (root / "Lateral Movement").glob("*.evtx"))
    return (found + sorted(OTHER_TACTICS)) if found else ["<absent>"]


def _match(case, eid: str, table: str, want: dict[str, object]) -> int:
    where, params = ["evidence_id = ?"], [eid]
    for col, val in want.items():
        if isinstance(val, str) and "%" in val:
            where.append(f'"{col}" LIKE ?')
        else:
            where.append(f'"{col}" = ?')
        params.append(val)
    q = f"SELECT count(*) n FROM {table} WHERE " + " AND ".join(where)
    return int(case.sql(q, params)["n"][0])


@pytest.mark.shared
@pytest.mark.parametrize("rel", _lateral_files())
def test_attack_samples_logons_match_file_names(case, rel):
    path = shared_path("EVTX-ATTACK-SAMPLES", *rel.split("/"))
    expect = LATERAL.get(path.name) or OTHER_TACTICS.get(rel)
    assert expect, f"{rel}: add what its name says to LATERAL"
    res = case.ingest(path, strict=True)[0]
    assert res.error is None and res.format == "evtx"
    for table, want in expect:
        assert _match(case, res.evidence_id, table, want) >= 1, f"{rel}: no {table} row with {want}"
    assert int(case.sql("SELECT count(*) n FROM events WHERE ts IS NULL")["n"][0]) == 0
