"""Text logs: syslog/auth.log and web server logs, against loghub's parsed fields and by construction.

Truth: loghub's ``OpenSSH_2k.log_structured.csv`` and ``Apache_2k.log_structured.csv``
give, for every line of the raw log, the fields a reference parser (Drain, checked
by hand) extracted. We reproduce the fields we parse:

* OpenSSH: Date/Day/Time (our ``ts``), Component (our ``host``: loghub's name for
  the RFC 3164 HOSTNAME), Pid (``pid``) and Content (``message``). loghub strips
  trailing blanks from Content, and so do we.
* Apache (an error log): Time (``ts``), Level (``severity``), Content (``message``).

Every field must match on every line (share 100 %); ``pytest -s`` prints the shares.
"""

from __future__ import annotations

import csv
import gzip
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_path


def _read(src_name: str, path: Path, options: dict | None = None):
    """Rows per table and the context (warnings) of reading ``path`` with one source."""
    import pyarrow as pa

    from forensics.ingest import IngestContext
    from forensics.sources import get

    ctx = IngestContext(path=path, evidence_id="t")
    if options:
        ctx.options = options  # type: ignore[attr-defined]
    parts: dict[str, list] = {}
    for name, tbl in get(src_name).read(path, ctx):
        parts.setdefault(name, []).append(tbl)
    return {k: pa.concat_tables(v).to_pylist() for k, v in parts.items()}, ctx


def _shares(pairs: dict[str, list[bool]]) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in pairs.items()}


# ---- loghub ---------------------------------------------------------------------------


@pytest.mark.shared
def test_loghub_openssh_field_for_field(case):
    log = shared_path("loghub", "OpenSSH", "OpenSSH_2k.log")
    truth = list(csv.DictReader(shared_path("loghub", "OpenSSH",
                                            "OpenSSH_2k.log_structured.csv").open(newline="")))
    res = case.ingest(log, strict=True)[0]
    assert res.format == "syslog"
    ev = case.sql("SELECT * FROM events ORDER BY line").to_dict("records")
    assert len(ev) == len(truth) == 2000
    ok: dict[str, list[bool]] = {f: [] for f in ("LineId", "Date", "Day", "Time", "Component",
                                                 "Pid", "Content")}
    for row, t in zip(ev, truth, strict=True):
        ts = row["ts"].to_pydatetime()
        ok["LineId"].append(row["line"] == int(t["LineId"]))
        ok["Date"].append(ts.strftime("%b") == t["Date"])
        ok["Day"].append(ts.day == int(t["Day"]))
        ok["Time"].append(ts.strftime("%H:%M:%S") == t["Time"])
        ok["Component"].append(row["host"] == t["Component"])
        ok["Pid"].append(row["pid"] == int(t["Pid"]))
        ok["Content"].append(row["message"] == t["Content"])
    shares = _shares(ok)
    print("OpenSSH_2k field shares:", shares)
    assert all(v == 1.0 for v in shares.values()), shares
    # The auth lines become logons: every Accepted/Failed/Invalid user line, and nothing else.
    n_auth = sum(1 for t in truth if t["EventId"] in {"E1", "E8", "E9", "E10", "E13", "E14"})
    assert int(case.sql("SELECT count(*) n FROM logons")["n"][0]) == n_auth
    acc = case.sql("SELECT * FROM logons WHERE success").iloc[0]
    assert (acc.user, acc.src_ip, acc.src_port, acc.auth_package, acc.dst_host) == (
        "fztu", "119.137.62.142", 49116, "password", "LabSZ")


@pytest.mark.shared
def test_loghub_apache_field_for_field(case):
    log = shared_path("loghub", "Apache", "Apache_2k.log")
    truth = list(csv.DictReader(shared_path("loghub", "Apache",
                                            "Apache_2k.log_structured.csv").open(newline="")))
    res = case.ingest(log, strict=True)[0]
    assert res.format == "weblog"
    ev = case.sql("SELECT * FROM events ORDER BY line").to_dict("records")
    assert len(ev) == len(truth) == 2000
    ok: dict[str, list[bool]] = {"Time": [], "Level": [], "Content": []}
    for row, t in zip(ev, truth, strict=True):
        ok["Time"].append(row["ts"].to_pydatetime().strftime("%a %b %d %H:%M:%S %Y") == t["Time"])
        ok["Level"].append(row["severity"] == t["Level"])
        ok["Content"].append(row["message"] == t["Content"])
    shares = _shares(ok)
    print("Apache_2k field shares:", shares)
    assert all(v == 1.0 for v in shares.values()), shares
    clients = case.sql("SELECT count(*) n FROM events WHERE src_ip IS NOT NULL")["n"][0]
    assert clients == sum(1 for t in truth if "[client " in t["Content"])


# ---- syslog by construction ---------------------------------------------------------------


def _lines(tmp_path: Path, name: str, lines: list[str | bytes]) -> Path:
    p = tmp_path / name
    p.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return p


def test_rfc5424_and_iso_layouts(tmp_path):
    p = _lines(tmp_path, "messages", [
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 "
        '[exampleSDID@32473 iut="3" eventSource="App\\]lication"] \ufeff\'su root\' failed for lonvick',
        "2024-03-01T10:00:00.123456+01:00 web1 sshd[123]: Accepted publickey for alice from "
        "192.0.2.4 port 50000 ssh2: ED25519 SHA256:abc",
        "<13>1 - - - - - -",
    ])
    rows, ctx = _read("syslog", p)
    e1, e2, e3 = rows["events"]
    assert (e1["host"], e1["provider"], e1["channel"], e1["severity"]) == (
        "mymachine.example.com", "su", "auth", "crit")
    assert e1["message"] == "'su root' failed for lonvick"
    assert e1["ts"] == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert e2["ts"] == datetime(2024, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert (e2["type"], e2["user"], e2["src_ip"], e2["src_port"]) == (
        "ssh_accepted", "alice", "192.0.2.4", 50000)
    (lg,) = rows["logons"]
    assert (lg["action"], lg["success"], lg["auth_package"], lg["dst_host"]) == (
        "ssh", True, "publickey", "web1")
    assert e3["ts"] is None and e3["host"] is None  # RFC 5424 NILVALUEs
    assert not [w for w in ctx.warnings if w["severity"] != "info"]


def test_year_inference_wrap_and_tz_option(tmp_path):
    p = _lines(tmp_path, "auth.log", [
        "Dec 31 23:59:58 h sshd[1]: Invalid user bob from 198.51.100.7 port 4242",
        "Jan  1 00:00:02 h sshd[1]: Failed password for invalid user bob from 198.51.100.7 "
        "port 4242 ssh2",
    ])
    mtime = datetime(2023, 1, 2, tzinfo=UTC).timestamp()
    os.utime(p, (mtime, mtime))
    rows, ctx = _read("syslog", p)
    assert [r["ts"].year for r in rows["events"]] == [2022, 2023]
    notes = {w["code"]: w["message"] for w in ctx.warnings}
    assert "2022" in notes["syslog_year"] and "1 year wrap" in notes["syslog_year"]
    assert "UTC" in notes["syslog_timezone"]
    rows, ctx = _read("syslog", p, {"year": 2015, "tz": "Europe/Berlin"})
    assert [r["ts"] for r in rows["events"]] == [
        datetime(2015, 12, 31, 22, 59, 58, tzinfo=UTC), datetime(2015, 12, 31, 23, 0, 2, tzinfo=UTC)]
    assert [(r["success"], r["status"]) for r in rows["logons"]] == [
        (False, "invalid user"), (False, "invalid user")]


def test_sudo_su_and_repeats(tmp_path):
    p = _lines(tmp_path, "auth.log", [
        "Mar  3 10:00:00 srv sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
        "COMMAND=/bin/cat /etc/shadow",
        "Mar  3 10:00:01 srv sudo:      eve : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; "
        "USER=root ; COMMAND=/bin/sh",
        "Mar  3 10:00:02 srv su[99]: (to root) alice on pts/0",
        "Mar  3 10:00:03 srv su[98]: FAILED su for root by mallory",
        "Mar  3 10:00:04 srv sshd[5]: message repeated 3 times: [ Failed password for root from "
        "203.0.113.5 port 22 ssh2]",
        "Mar  3 10:00:05 srv sshd[5]: pam_unix(sshd:session): session opened for user alice by (uid=0)",
    ])
    rows, _ = _read("syslog", p, {"year": 2024})
    got = [(r["action"], r["success"], r["user"], r["subject_user"], r["status"])
           for r in rows["logons"]]
    assert got == [
        ("sudo", True, "root", "alice", None),
        ("sudo", False, "root", "eve", "user NOT in sudoers"),
        ("su", True, "root", "alice", None),
        ("su", False, "root", "mallory", None),
        ("ssh", False, "root", None, "repeated 3 times"),
    ]
    ev = rows["events"]
    assert ev[0]["command_line"] == "/bin/cat /etc/shadow" and ev[0]["type"] == "sudo"
    assert ev[5]["type"] == "session_opened" and ev[5]["user"] == "alice"


def test_hostile_syslog_lines(case, tmp_path):
    p = _lines(tmp_path, "syslog", [
        "Mar  3 10:00:00 srv kernel: first",
        b"\x00" * 64,
        b"A" * ((1 << 20) + 10),
        "this line has no syslog header",
        b"Mar  3 10:00:04 srv app: caf\xe9 latin-1",
        "Mar  3 10:00:05 srv kernel: last",
    ])
    res = case.ingest(p)[0]
    assert res.format == "syslog" and res.error is None
    ev = case.sql("SELECT line, ts IS NULL no_ts, message FROM events ORDER BY line")
    assert list(ev["line"]) == [1, 4, 5, 6]
    assert list(ev["no_ts"]) == [False, True, False, False]
    assert ev["message"].iloc[2] == "caf\\xe9 latin-1"
    w = case.warnings()
    w = w[w.severity != "info"]
    assert list(zip(w["offset"], w["code"], strict=True)) == [
        (2, "binary_data"), (3, "line_too_long"), (4, "unparsed_line"), (5, "bad_encoding")]


def test_syslog_gz_and_sniff(case, tmp_path):
    from forensics.sources import get

    body = b"Mar  3 10:00:00 srv sshd[1]: Accepted password for root from 10.1.1.1 port 2 ssh2\n"
    gz = tmp_path / "auth.log.1.gz"
    gz.write_bytes(gzip.compress(body))
    assert case.ingest(gz)[0].format == "syslog"
    assert int(case.sql("SELECT count(*) n FROM logons WHERE success")["n"][0]) == 1
    src = get("syslog")
    assert src.sniff(body) and not src.sniff(b'{"ts": 1}\n') and not src.sniff(b"")
    assert not src.sniff(b"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1\n")


# ---- web logs by construction ---------------------------------------------------------


def test_access_log_shapes_into_http(case, tmp_path):
    p = _lines(tmp_path, "access.log", [
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"',
        '10.0.0.9 - - [10/Oct/2000:13:55:37 -0700] "POST /login HTTP/1.1" 302 - "-" "curl/8"'
        ' "198.51.100.1"',
        'www.example.com:443 10.0.0.10 - - [10/Oct/2000:13:55:38 -0700] "GET /x HTTP/2.0" 404 0',
        '10.0.0.11 - - [10/Oct/2000:13:55:39 -0700] "GET /a?q="><script>x</script> HTTP/1.1" 404 9',
        b'10.0.0.12 - - [10/Oct/2000:13:55:40 -0700] "\x16\x03\x01\x02\x00\x01" 400 -',
        "garbage that is no log line",
    ])
    case.ingest(p)
    h = case.sql("SELECT * FROM http ORDER BY line").to_dict("records")
    assert [r["line"] for r in h] == [1, 2, 3, 4, 5]
    assert (h[0]["orig_h"], h[0]["username"], h[0]["method"], h[0]["uri"], h[0]["version"],
            h[0]["status_code"], h[0]["response_body_len"], h[0]["referrer"], h[0]["source"]) == (
        "127.0.0.1", "frank", "GET", "/apache_pb.gif", "1.0", 200, 2326,
        "http://www.example.com/start.html", "weblog")
    assert str(h[0]["ts"]) == "2000-10-10 20:55:36+00:00"
    assert pd.isna(h[1]["response_body_len"])
    assert h[1]["user_agent"] == "curl/8"
    assert (h[2]["host"], h[2]["resp_p"], h[2]["version"]) == ("www.example.com", 443, "2.0")
    assert h[3]["uri"] == '/a?q="><script>x</script>'
    assert h[4]["uri"] == "\\x16\\x03\\x01\\x02\\x00\\x01" and pd.isna(h[4]["method"])
    codes = list(case.warnings()["code"])
    assert codes == ["control_bytes", "unparsed_line"]


def test_iis_w3c_with_changing_fields(case, tmp_path):
    p = _lines(tmp_path, "u_ex230105.log", [
        "#Software: Microsoft Internet Information Services 10.0",
        "#Version: 1.0",
        "#Date: 2023-01-05 10:00:00",
        "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
        "cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken",
        "2023-01-05 10:00:01 10.0.0.1 GET /owa/auth.owa a=1 443 CORP\\bob 203.0.113.7 "
        "Mozilla/5.0+(Windows+NT+10.0) - 200 0 0 15",
        "2023-01-05 10:00:02 10.0.0.1 POST /aspnet_client/shell.aspx - 443 - 203.0.113.7 - - 200 0 0",
        "#Fields: date time c-ip cs-method cs-uri-stem sc-status sc-bytes",
        "2023-01-05 10:00:03 203.0.113.8 GET /x 404 1234",
    ])
    res = case.ingest(p)[0]
    assert res.format == "weblog"
    h = case.sql("SELECT * FROM http ORDER BY line").to_dict("records")
    assert len(h) == 2
    assert (h[0]["orig_h"], h[0]["resp_h"], h[0]["resp_p"], h[0]["uri"], h[0]["username"],
            h[0]["user_agent"], h[0]["time_taken"]) == (
        "203.0.113.7", "10.0.0.1", 443, "/owa/auth.owa?a=1", "CORP\\bob",
        "Mozilla/5.0 (Windows NT 10.0)", 0.015)
    assert str(h[0]["ts"]) == "2023-01-05 10:00:01+00:00"
    assert (h[1]["orig_h"], h[1]["uri"], h[1]["status_code"], h[1]["response_body_len"]) == (
        "203.0.113.8", "/x", 404, 1234)
    w = case.warnings()
    assert list(zip(w["offset"], w["code"], strict=True)) == [(6, "bad_field_count")]


def test_error_logs_into_events(tmp_path):
    p = _lines(tmp_path, "error.log", [
        "[Thu Jun 27 06:10:32.123456 2019] [core:error] [pid 1234:tid 5678] [client 10.0.0.7:4455]"
        " AH00128: File does not exist: /var/www/html/wp-login.php",
        "2019/06/27 06:10:33 [error] 77#77: *1 open() \"/usr/share/nginx/html/x\" failed (2: No "
        "such file or directory), client: 10.0.0.8, server: localhost, request: \"GET /x HTTP/1.1\"",
    ])
    rows, _ = _read("weblog", p, {"tz": "America/New_York"})
    a, n = rows["events"]
    assert (a["provider"], a["severity"], a["pid"], a["src_ip"], a["src_port"], a["type"]) == (
        "core", "error", 1234, "10.0.0.7", 4455, "http_error")
    assert a["ts"] == datetime(2019, 6, 27, 10, 10, 32, 123456, tzinfo=UTC)
    assert (n["provider"], n["severity"], n["pid"], n["src_ip"]) == ("nginx", "error", 77, "10.0.0.8")
    assert n["message"].startswith("*1 open()")


def test_weblog_sniff_is_precise():
    from forensics.sources import get

    src = get("weblog")
    assert src.sniff(b"#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n")
    assert src.sniff(b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\n")
    assert not src.sniff(b"#separator \\x09\n#set_separator\t,\n")
    assert not src.sniff(b"Dec 10 06:55:46 LabSZ sshd[24200]: hi\n")
    assert not src.sniff(b"")


# ---- every log source: junk never crashes, empty input is not sniffed ---------------------

LOG_SOURCES = ["syslog", "weblog", "winevent_json", "zeek", "suricata_eve"]


@pytest.mark.parametrize("name", LOG_SOURCES)
def test_junk_never_crashes(tmp_path, name):
    import random

    from forensics.sources import get

    src = get(name)
    assert src.__doc__ and not src.sniff(b"")
    rnd = random.Random(name)
    for i in range(20):
        junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 3000)))
        if i % 2:  # mostly text with a little binary
            junk = b"\n".join([b"Mar  3 10:00:00 h app: x", b'{"ts": 1', junk, b"#fields\ta"])
        p = tmp_path / f"junk{i}.log"
        p.write_bytes(junk)
        rows, _ = _read(name, p)
        assert all(isinstance(v, list) for v in rows.values())
