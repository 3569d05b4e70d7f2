"""Windows events as JSON lines: NXLog, Winlogbeat, evtx_dump, Log Analytics; zip/gz; hostile input.

Truth for the shared part: the Security-Datasets (Mordor) lateral-movement runs,
whose ``_metadata/*.yaml`` name the technique, the tool and (in the adversary
view) the source and target hosts and account; the README of the shared test
data adds that in the Empire runs the source is WORKSTATION5 172.18.39.5 (user
THESHIRE\\pgustavo), the target WORKSTATION6 172.18.39.6, and the PsExec
service is "Updater". :data:`DATASETS` turns each dataset's description into
the ``logons``/``events`` rows it implies.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_path

# One NXLog im_msvistalog record (shortened from the Empire PsExec run): EventTime
# is the collector's local time (EDT), @timestamp Logstash's UTC.
NXLOG_4624 = {
    "EventTime": "2020-09-20 12:16:56", "EventReceivedTime": "2020-09-20 12:16:58",
    "@timestamp": "2020-09-20T16:16:58.212Z", "Hostname": "WORKSTATION6.theshire.local",
    "SourceName": "Microsoft-Windows-Security-Auditing", "Channel": "security", "EventID": 4624,
    "RecordNumber": 717708, "Keywords": -9214364837600034816, "EventType": "AUDIT_SUCCESS",
    "TargetUserName": "pgustavo", "TargetDomainName": "THESHIRE.LOCAL", "LogonType": "3",
    "IpAddress": "172.18.39.5", "IpPort": "56608", "AuthenticationPackageName": "Kerberos",
    "TargetLogonId": "0x2990d17", "WorkstationName": "-", "LogonProcessName": "Kerberos",
    "Message": "An account was successfully logged on.",
}
WINLOGBEAT_4625 = {
    "@timestamp": "2023-01-05T10:00:01.123Z", "message": "An account failed to log on.",
    "event": {"code": "4625", "outcome": "failure", "provider": "Microsoft-Windows-Security-Auditing"},
    "host": {"name": "dc01.corp.local"}, "log": {"level": "information"},
    "winlog": {"channel": "Security", "computer_name": "DC01.corp.local", "event_id": "4625",
               "provider_name": "Microsoft-Windows-Security-Auditing", "record_id": 99,
               "keywords": ["Audit Failure"],
               "event_data": {"TargetUserName": "admin", "TargetDomainName": "CORP",
                              "LogonType": "10", "IpAddress": "203.0.113.9", "IpPort": "0",
                              "Status": "0xc000006d", "SubStatus": "0xc0000064",
                              "AuthenticationPackageName": "NTLM", "WorkstationName": "KALI"}},
}
EVTX_DUMP_SYSMON3 = {"Event": {"System": {
    "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}, "EventID": 3,
    "TimeCreated": {"#attributes": {"SystemTime": "2019-05-01T10:00:00.1234567Z"}},
    "EventRecordID": 7, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "WS1"},
    "EventData": {"Image": "C:\\Windows\\System32\\mshta.exe", "User": "CORP\\bob",
                  "SourceIp": "10.0.0.5", "SourcePort": "49168", "DestinationIp": "10.0.0.9",
                  "DestinationPort": "443", "ProcessId": "1932"}}}
ANALYTICS_7045 = {
    "TimeGenerated": "2022-05-13T08:54:06.347Z", "Computer": "WORKSTATION5", "EventID": 7045,
    "Channel": "System", "Provider": "Service Control Manager",
    "EventData": json.dumps({"ServiceName": "Updater", "ImagePath": "%COMSPEC% /C start x"}),
}


def _write(path: Path, records: list[object], extra: list[bytes] = ()) -> Path:
    lines = [json.dumps(r).encode() if not isinstance(r, bytes) else r for r in records]
    path.write_bytes(b"\n".join([*lines, *extra]) + b"\n")
    return path


def test_nxlog_logon_and_zone_inference(case, tmp_path):
    p = _write(tmp_path / "nx.json", [NXLOG_4624])
    case.ingest(p, strict=True)
    lg = case.sql("SELECT * FROM logons").iloc[0]
    assert (lg.user, lg.domain, lg.logon_type, lg.src_ip, lg.src_port) == (
        "pgustavo", "THESHIRE.LOCAL", 3, "172.18.39.5", 56608)
    assert lg.dst_host == "WORKSTATION6.theshire.local" and lg.success
    assert lg.auth_package == "Kerberos" and lg.logon_id == "0x2990d17"
    # 12:16:56 EDT: the offset comes from EventReceivedTime vs @timestamp (UTC-4).
    assert str(lg.ts) == "2020-09-20 16:16:56+00:00"
    ev = case.sql("SELECT * FROM events").iloc[0]
    assert (ev.type, ev.line, ev.record_offset, ev.record_id) == ("logon", 1, 0, 717708)
    assert json.loads(ev.raw)["EventID"] == 4624
    assert ev.message == "An account was successfully logged on."


def test_tz_option_and_assumed_utc(tmp_path):
    from forensics.ingest import IngestContext
    from forensics.sources import get

    rec = {k: v for k, v in NXLOG_4624.items() if k != "@timestamp"}
    p = _write(tmp_path / "nx.json", [rec])
    src = get("winevent_json")
    ctx = IngestContext(path=p, evidence_id="t")
    rows = next(t for name, t in src.read(p, ctx) if name == "events").to_pylist()
    assert rows[0]["ts"].isoformat() == "2020-09-20T12:16:56+00:00"
    assert [w["code"] for w in ctx.warnings] == ["assumed_utc"]
    assert ctx.warnings[0]["severity"] == "info"
    ctx = IngestContext(path=p, evidence_id="t")
    ctx.options = {"tz": "America/New_York"}  # type: ignore[attr-defined]
    rows = next(t for name, t in src.read(p, ctx) if name == "events").to_pylist()
    assert rows[0]["ts"].isoformat() == "2020-09-20T16:16:56+00:00" and not ctx.warnings


def test_winlogbeat_failed_rdp_logon(case, tmp_path):
    case.ingest(_write(tmp_path / "wlb.ndjson", [WINLOGBEAT_4625]), strict=True)
    lg = case.sql("SELECT * FROM logons").iloc[0]
    assert (lg.action, lg.success, lg.logon_type, lg.user, lg.src_ip, lg.src_host) == (
        "logon", False, 10, "admin", "203.0.113.9", "KALI")
    assert pd.isna(lg.src_port)  # port 0 means none
    assert lg.status == "0xc000006d/0xc0000064" and lg.record_id == 99
    assert str(lg.ts) == "2023-01-05 10:00:01.123000+00:00"


def test_evtx_dump_and_log_analytics_shapes(case, tmp_path):
    case.ingest(_write(tmp_path / "a.jsonl", [EVTX_DUMP_SYSMON3, ANALYTICS_7045]), strict=True)
    ev = case.sql("SELECT * FROM events ORDER BY line")
    s3, svc = ev.iloc[0], ev.iloc[1]
    assert (s3.type, s3.user, s3.domain, s3.src_ip, s3.src_port, s3.dst, s3.dst_port, s3.pid) == (
        "network_connect", "bob", "CORP", "10.0.0.5", 49168, "10.0.0.9", 443, 1932)
    assert str(s3.ts) == "2019-05-01 10:00:00.123456+00:00"
    assert (svc.type, svc.object, svc.command_line, svc.host) == (
        "service_install", "Updater", "%COMSPEC% /C start x", "WORKSTATION5")


def test_zip_and_gzip_are_read_directly(case, tmp_path):
    lines = (json.dumps(NXLOG_4624) + "\n" + json.dumps(WINLOGBEAT_4625) + "\n").encode()
    gz = tmp_path / "events.json.gz"
    gz.write_bytes(gzip.compress(lines))
    zp = tmp_path / "events.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/part1.json", lines)
        z.writestr("a/part2.json", json.dumps(EVTX_DUMP_SYSMON3) + "\n")
    res = case.ingest(gz, zp, strict=True)
    assert [r.format for r in res] == ["winevent_json", "winevent_json"]
    ev = case.sql("SELECT member, line, record_offset, event_id FROM events "
                  "ORDER BY member NULLS FIRST, line")
    assert list(ev["event_id"]) == [4624, 4625, 4624, 4625, 3]
    assert list(ev["member"].fillna("-")) == ["-", "-", "a/part1.json", "a/part1.json",
                                              "a/part2.json"]
    assert list(ev["record_offset"])[:2] == [0, len(json.dumps(NXLOG_4624)) + 1]


def test_hostile_lines_warn_and_the_rest_loads(case, tmp_path):
    long_line = b'{"EventID": 1, "x": "' + b"A" * (1 << 20) + b'"}'
    p = _write(tmp_path / "hostile.json", [NXLOG_4624, b"this is not json", long_line,
                                           b"\x00\x01\x02\x03\x04\x05\x06\x07" * 8, b"[1, 2]",
                                           b'{"foo": "bar"}', WINLOGBEAT_4625])
    res = case.ingest(p)[0]
    assert res.error is None
    assert list(case.sql("SELECT event_id FROM events ORDER BY line")["event_id"]) == [4624, 4625]
    w = case.warnings()
    assert list(zip(w["offset"], w["code"], w["unit"], strict=True)) == [
        (2, "not_json", "line"), (3, "line_too_long", "line"), (4, "binary_data", "line"),
        (5, "not_event", "line"), (6, "not_event", "line")]
    assert (w["path"] == str(p.resolve())).all() or (w["path"] == str(p)).all()


def test_sniff_is_precise():
    from forensics.sources import get

    src = get("winevent_json")
    assert src.sniff(json.dumps(NXLOG_4624).encode() + b"\n")
    assert src.sniff(json.dumps(WINLOGBEAT_4625).encode())
    assert not src.sniff(b'{"timestamp": "2020", "event_type": "alert"}\n')
    assert not src.sniff(b'{"ts": 1.5, "uid": "C1", "id.orig_h": "1.2.3.4"}\n')
    assert not src.sniff(b"")


# ---- Security-Datasets: the runs' metadata, as logons ---------------------------------

L, E = "logons", "events"
PGUSTAVO_TO_WS6 = (L, {"action": "logon", "logon_type": 3, "user": "pgustavo",
                       "domain": "THESHIRE%", "src_ip": "172.18.39.5",
                       "dst_host": "WORKSTATION6%", "success": True})
DATASETS: dict[str, list[tuple[str, dict[str, object]]]] = {
    # SDWIN-190518210652 Empire Invoke PsExec: service "Updater" created on WORKSTATION6.
    "empire_psexec_dcerpc_tcp_svcctl": [
        PGUSTAVO_TO_WS6,
        (E, {"type": "service_install", "object": "Updater", "host": "WORKSTATION6%",
             "command_line": "%powershell -noP -sta -w 1 -enc%"}),
        (L, {"action": "kerberos_service_ticket", "user": "pgustavo", "src_ip": "172.18.39.5",
             "dst_host": "WORKSTATION6"})],
    # SDWIN-200921001437 Empire Invoke WMI: WmiPrvSE on WORKSTATION6 starts the stager.
    "empire_wmi_dcerpc_wmi_IWbemServices_ExecMethod": [
        PGUSTAVO_TO_WS6,
        (E, {"type": "process_start", "host": "WORKSTATION6%", "parent_process": "%WmiPrvSE.exe"})],
    # SDWIN-200806015757 Covenant remote file copy to \\WORKSTATION6\C$\ProgramData\GruntHTTP.exe.
    "covenant_copy_smb_CreateRequest": [
        PGUSTAVO_TO_WS6,
        (L, {"action": "share_access", "user": "pgustavo", "src_ip": "172.18.39.5",
             "dst_host": "WORKSTATION6%", "service": "\\\\*\\C$"}),
        (E, {"event_id": 5145, "object": "%ProgramData\\GruntHTTP.exe"})],
    # SDWIN-200806115603 Covenant PowerShell remoting to WORKSTATION6 as pgustavo.
    "covenant_psremoting_command": [
        (L, {"action": "explicit_credentials", "user": "pgustavo", "src_host": "WORKSTATION5%",
             "dst_host": "WORKSTATION6", "service": "HTTP/WORKSTATION6"}),
        (L, {"action": "logon", "logon_type": 3, "user": "pgustavo", "dst_host": "WORKSTATION6%"})],
    # SDWIN-200805034820 Covenant sc.exe query over SMB svcctl. The metadata's adversary view
    # names \\WORKSTATION6, but the recorded run queried MORDORDC (its own 4688/Sysmon 1
    # command lines say so): the events are the truth here.
    "covenant_sc_query_dcerpc_smb_svcctl": [
        (L, {"action": "logon", "logon_type": 3, "user": "pgustavo", "src_ip": "172.18.39.5",
             "dst_host": "MORDORDC%"}),
        (L, {"action": "kerberos_service_ticket", "user": "pgustavo", "src_ip": "172.18.39.5",
             "dst_host": "MORDORDC"}),
        (L, {"action": "share_access", "src_ip": "172.18.39.5", "service": "\\\\*\\IPC$"}),
        (E, {"type": "process_start", "host": "WORKSTATION5%",
             "command_line": "sc.exe%\\\\MORDORDC%query IKEEXT"})],
    # SDWIN-201022042947 PurpleSharp: spray 7 users (LogonUser, NTLM), kerberoast, WinRM to 3 hosts.
    "purplesharp_ad_playbook_I": [
        (L, {"event_id": 4625, "logon_type": 2, "user": "lrodriguez", "success": False,
             "dst_host": "WORKSTATION5%"}),
        (L, {"action": "ntlm_validation", "user": "sysmonsvc", "success": False,
             "dst_host": "MORDORDC%"}),
        (L, {"action": "kerberos_service_ticket", "user": "pgustavo", "service": "sysmonsvc"}),
        PGUSTAVO_TO_WS6,
        (L, {"action": "logon", "logon_type": 3, "user": "pgustavo", "src_ip": "172.18.39.5",
             "dst_host": "WORKSTATION7%"})],
}
SPRAYED = {"lrodriguez", "pgustavo", "sysmonsvc", "sbeavers", "mscott", "pbeesly", "nxlogsvc"}


def _host_dir() -> Path | None:
    p = Path(__file__).resolve().parent.parent.parent / (
        "shared/testdata/Security-Datasets/datasets/atomic/windows/lateral_movement/host")
    return p if p.is_dir() else None


def _metadata() -> dict[str, str]:
    """zip stem -> metadata id, from the links in ``_metadata/*.yaml``."""
    meta = shared_path("Security-Datasets", "datasets", "atomic", "_metadata")
    out = {}
    for y in sorted(meta.glob("*.yaml")):
        text = y.read_text()
        for link in re.findall(r"link:\s*(\S+/host/(\S+)\.zip)", text):
            out[link[1]] = y.stem
    return out


def _datasets() -> list[str]:
    d = _host_dir()
    return sorted(p.stem for p in d.glob("*.zip")) if d else ["<absent>"]


def _match(case, eid: str, table: str, want: dict[str, object]) -> int:
    where, params = ["evidence_id = ?"], [eid]
    for col, val in want.items():
        where.append(f'"{col}" LIKE ?' if isinstance(val, str) and "%" in val else f'"{col}" = ?')
        params.append(val)
    return int(case.sql(f"SELECT count(*) n FROM {table} WHERE " + " AND ".join(where),
                        params)["n"][0])


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("stem", _datasets())
def test_security_datasets_logons_match_metadata(case, stem):
    path = shared_path("Security-Datasets", "datasets", "atomic", "windows", "lateral_movement",
                       "host", f"{stem}.zip")
    assert stem in _metadata(), f"{stem}: no _metadata yaml links this host zip"
    assert stem in DATASETS, f"{stem}: add what its metadata describes to DATASETS"
    res = case.ingest(path, strict=True)[0]
    assert res.format == "winevent_json" and res.error is None
    with zipfile.ZipFile(path) as z, z.open(z.namelist()[0]) as member:
        lines = sum(1 for _ in member)
    assert res.tables["events"] == lines  # every record of the run loads
    for table, want in DATASETS[stem]:
        assert _match(case, res.evidence_id, table, want) >= 1, f"{stem}: no {table} row with {want}"
    assert int(case.sql("SELECT count(*) n FROM events WHERE ts IS NULL")["n"][0]) == 0
    if stem.startswith("purplesharp"):
        got = set(case.sql("SELECT DISTINCT user FROM logons WHERE event_id = 4625")["user"])
        assert got == SPRAYED
