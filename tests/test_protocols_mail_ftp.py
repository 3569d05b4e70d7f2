"""FTP with its data channels tied back, and SMTP transactions with attachments and STARTTLS."""

from __future__ import annotations

import pytest
from _protobuild import Conv, ingest, write
from conftest import shared_path


def test_ftp_passive_and_active_data_channels(case, tmp_path):
    ctl = Conv("10.0.0.5", "10.0.0.21", 40000, 21)
    ctl.send(False, b"220 demo FTP server ready\r\n").send(True, b"USER alice\r\n")
    ctl.send(False, b"331 Password required\r\n").send(True, b"PASS hunter2\r\n").send(False, b"230 OK\r\n")
    ctl.send(True, b"CWD /pub\r\n").send(False, b"250 CWD ok\r\n")
    ctl.send(True, b"PASV\r\n").send(False, b"227 Entering Passive Mode (10,0,0,21,200,10)\r\n")
    ctl.send(True, b"RETR notes.txt\r\n").send(False, b"150 Opening (13 bytes)\r\n")
    pasv = Conv("10.0.0.5", "10.0.0.21", 40001, 200 * 256 + 10).send(False, b"hello, world!").close()
    ctl.send(False, b"226 Transfer complete\r\n")
    ctl.send(True, b"PORT 10,0,0,5,156,64\r\n").send(False, b"200 PORT ok\r\n")
    ctl.send(True, b"STOR up.bin\r\n").send(False, b"150 go\r\n")
    active = Conv("10.0.0.21", "10.0.0.5", 20, 156 * 256 + 64).send(False, b"MZ" + b"\0" * 100).close()
    ctl.send(False, b"226 done\r\n").send(True, b"QUIT\r\n").send(False, b"221 Bye\r\n").close()
    ingest(case, write(tmp_path / "f.pcap", ctl, pasv, active))
    rows = case.sql("SELECT * FROM ftp ORDER BY ts").to_dict("records")
    by = {r["command"]: r for r in rows}
    assert [r["command"] for r in rows] == ["USER", "PASS", "CWD", "PASV", "RETR", "PORT", "STOR", "QUIT"]
    assert by["PASS"]["password"] == "hunter2" and by["RETR"]["user"] == "alice"
    assert by["RETR"]["arg"] == "ftp://10.0.0.21/pub/notes.txt"
    assert by["RETR"]["file_size"] == 13 and by["RETR"]["mime_type"] == "text/plain"
    assert (by["PASV"]["data_channel_resp_h"], by["PASV"]["data_channel_resp_p"]) == ("10.0.0.21", 51210)
    assert by["PORT"]["data_channel_passive"] is False or not by["PORT"]["data_channel_passive"]
    uids = dict(case.sql("SELECT orig_p, uid FROM sessions").itertuples(index=False, name=None))
    assert by["RETR"]["data_uid"] == by["PASV"]["data_uid"] == uids[40001]
    assert by["STOR"]["data_uid"] == uids[20] and by["STOR"]["mime_type"] == "application/x-dosexec"
    svc = dict(case.sql("SELECT orig_p, service FROM sessions").itertuples(index=False, name=None))
    assert (svc[40000], svc[40001], svc[20]) == ("ftp", "ftp-data", "ftp-data")


MAIL = (
    b'From: "Alice" <alice@example.com>\r\nTo: bob@example.org, "Carol, C" <carol@example.org>\r\n'
    b"Subject: report\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
    b"Received: from mx.example.com ([192.0.2.7]) by relay\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BB"\r\n\r\n'
    b"--BB\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b'--BB\r\nContent-Type: application/pdf; name="q3.pdf"\r\n'
    b'Content-Disposition: attachment; filename="q3.pdf"\r\n\r\nJVBERi0xLjQK\r\n--BB--\r\n.\r\n'
)


def test_smtp_transaction_with_attachment_then_starttls(case, tmp_path):
    c = Conv("10.0.0.5", "10.0.0.25", 40000, 25).send(False, b"220 mx ESMTP\r\n")
    for cmd, reply in (
        (b"EHLO client.example\r\n", b"250-mx\r\n250 PIPELINING\r\n"),
        (b"MAIL FROM:<alice@example.com>\r\n", b"250 ok\r\n"),
        (b"RCPT TO:<bob@example.org>\r\n", b"250 ok\r\n"),
        (b"DATA\r\n", b"354 go\r\n"),
    ):
        c.send(True, cmd).send(False, reply)
    c.send(True, MAIL).send(False, b"250 queued as 42\r\n")
    c.send(True, b"STARTTLS\r\n").send(False, b"220 ready\r\n")
    c.send(True, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00").close()
    ingest(case, write(tmp_path / "m.pcap", c))
    rows = case.sql("SELECT * FROM smtp ORDER BY trans_depth").to_dict("records")
    assert len(rows) == 2
    m, t = rows
    assert (m["helo"], m["mailfrom"], list(m["rcptto"])) == (
        "client.example",
        "alice@example.com",
        ["bob@example.org"],
    )
    assert m["subject"] == "report" and m["from"] == '"Alice" <alice@example.com>'
    assert sorted(m["to"]) == ['"Carol, C" <carol@example.org>', "bob@example.org"]
    assert list(m["filenames"]) == ["q3.pdf"] and list(m["mime_types"]) == ["text/plain", "application/pdf"]
    assert list(m["path"]) == ["10.0.0.25", "10.0.0.5", "192.0.2.7"]
    assert m["last_reply"] == "250 queued as 42" and not m["tls"]
    assert t["trans_depth"] == 2 and t["tls"] and t["last_reply"] == "220 ready"
    assert case.sql("SELECT service FROM sessions")["service"][0] == "smtp,ssl"


@pytest.mark.shared
def test_smtp_one_side_only_capture(case):
    ingest(case, shared_path("zeek", "testing/btest/Traces/smtp-one-side-only.pcap"))
    df = case.sql("SELECT subject, rcptto FROM smtp ORDER BY ts")
    assert df["subject"].tolist() == ["Hello1!", "Hello2!"]
