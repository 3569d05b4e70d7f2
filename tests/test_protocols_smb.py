"""SMB2/SMB1, NTLM and DCE/RPC on public captures with known content, and on hostile SMB lengths."""

from __future__ import annotations

import struct

import pytest
from _protobuild import Conv, ingest, write
from conftest import shared_path

pytestmark = pytest.mark.shared


def _counts(case, table: str, col: str) -> dict:  # type: ignore[no-untyped-def]
    df = case.sql(f"SELECT {col} AS k, count(*) AS n FROM {table} GROUP BY 1")
    return dict(zip(df["k"], df["n"], strict=True))


def test_psexec_lateral_movement_is_visible(case):
    ingest(case, shared_path("PCAP-ATTACK", "Lateral Movement", "LM_psexec_smb_dcerpc_epm_svcctl.pcapng"))
    shares = set(case.sql("SELECT path FROM smb_mapping WHERE status = 'SUCCESS'")["path"])
    assert shares == {"\\\\172.16.66.36\\ADMIN$", "\\\\172.16.66.36\\IPC$"}
    writes = case.sql("SELECT name, named_pipe FROM smb_files WHERE action = 'SMB::FILE_WRITE'")
    assert set(writes["name"]) == {"PSEXESVC.exe"} and not writes["named_pipe"].any()
    ops = _counts(case, "dce_rpc", "endpoint || ' ' || operation")
    assert {"svcctl OpenSCManagerW", "svcctl CreateServiceWOW64W", "svcctl StartServiceW"} <= set(ops)
    users = case.sql("SELECT DISTINCT username, domainname, hostname FROM ntlm").values.tolist()
    assert ["backdoor", "3B", "02694W-WIN10"] in users
    assert "dce_rpc_bad_pdu" not in set(case.warnings()["code"])  # PSEXESVC pipes are not DCE/RPC
    services = set(case.sql("SELECT service FROM sessions")["service"].dropna())
    assert {"smb,ntlm", "dce_rpc,ntlm"} <= services


def test_zeek_smb2_read_write_fuids(case):
    ingest(case, shared_path("zeek", "testing/btest/Traces/smb/smb2readwrite.pcap"))
    df = case.sql("SELECT action, name, fuid, data_len, size FROM smb_files ORDER BY ts, record_id")
    reads = df[df["action"] == "SMB::FILE_READ"]
    assert reads["fuid"].isna().tolist() == [True, False]  # Zeek's two READ rows: before and after data
    writes = df[df["action"] == "SMB::FILE_WRITE"]
    assert writes["data_len"].max() == 7000


def test_suricata_psexec_svcctl_calls(case):
    ingest(
        case,
        shared_path(
            "suricata-verify",
            "tests",
            "dcerpc",
            "dcerpc-dce-iface-01",
            "20171220_smb_psexec_mimikatz_ticket_dump-s2.pcap",
        ),
    )
    ops = _counts(case, "dce_rpc", "operation")
    assert ops.get("CloseServiceHandle") == 6  # suricata-verify expects six such transactions
    assert set(case.sql("SELECT endpoint FROM dce_rpc")["endpoint"]) == {"svcctl"}


def test_suricata_eicar_over_smb(case):
    ingest(case, shared_path("suricata-verify", "tests", "smb-eicar-file", "input.pcap"))
    names = set(case.sql("SELECT name FROM smb_files")["name"])
    assert any(n.endswith("eicar") for n in names), names


def test_smb_lengths_past_the_buffer_are_bounded(case, tmp_path):
    hdr = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, 0, 5, 1, 0, 9999, 1, 0, 1, 0, b"\0" * 16)
    create = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0, 0, 7, 1, 0, 0xFFF0, 0xFFFF, 0, 0)
    msg = hdr + create
    c = Conv(sport=445).send(True, b"\x00" + len(msg).to_bytes(3, "big") + msg)
    c.send(True, b"\x00\xff\xff\xff" + b"\xfeSMB" + b"\0" * 60).close()
    ingest(case, write(tmp_path / "s.pcap", c))
    codes = set(case.warnings()["code"])
    assert codes & {"smb_bad_length", "smb_bad_message"}
