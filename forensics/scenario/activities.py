"""Network activities with their log side effects: web, mail, file shares, RDP, SSH.

Each function writes the packets of one user action and the log lines the
involved hosts would write about it (proxy access log, Windows logons on the
server, auth.log on LNX01), so every log entry has its traffic and vice versa.
"""

from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass, field
from typing import Any

from forensics.scenario import protocols as P
from forensics.scenario import smb
from forensics.scenario.hosts import NETBIOS, Host, User
from forensics.scenario.network import Node, TcpConn
from forensics.scenario.world import World

__all__ = ["HttpReq", "http_session", "rdp_session", "run_steps", "smb_visit", "smtp_send",
           "ssh_session", "tls_session", "web_visit"]

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/122.0.0.0 Safari/537.36 Edg/122.0.2365.66")
_WORDS = ("order", "invoice", "delivery", "report", "meeting", "budget", "customer", "supplier",
          "quarter", "project", "review", "update", "shipment", "contract", "schedule", "team")


def run_steps(conn: TcpConn, steps: list[tuple[bool, bytes, int]]) -> list[int]:
    """Play ``(from_client, bytes, think_us)`` steps; returns each step's last capture time."""
    return [conn.send(data, fc, think) for fc, data, think in steps]


def size(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    """A log-normal size clipped to ``[lo, hi]``."""
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def text(rng: random.Random, n: int) -> str:
    """About ``n`` characters of office prose."""
    out: list[str] = []
    total = 0
    while total < n:
        w = rng.choice(_WORDS)
        out.append(w)
        total += len(w) + 1
    return " ".join(out)[:n]


def html(rng: random.Random, n: int) -> bytes:
    """An HTML page of about ``n`` bytes."""
    body = "".join(f"<p>{text(rng, 300)}</p>\n" for _ in range(max(1, n // 310)))
    head = f"<!DOCTYPE html>\n<html><head><title>{text(rng, 30)}</title></head>\n"
    return f"{head}<body>\n{body}</body></html>\n".encode()


@dataclass
class HttpReq:
    """One HTTP request and the response it gets."""

    method: str
    path: str
    status: int = 200
    ctype: str = "text/html; charset=utf-8"
    resp: bytes = b""
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    think_us: int = 0
    proc_us: int = 20_000
    reason: str = "OK"


def http_session(w: World, client: Host, server: Node, host_header: str, t: int,
                 rng: random.Random, reqs: list[HttpReq], *, ua: str = UA, port: int = 80,
                 log: bool = True, server_sw: str = "nginx") -> tuple[TcpConn, int]:
    """One keep-alive HTTP/1.1 connection; requests to the internet go to the proxy log.

    Returns:
        The connection and the capture time of its last packet.
    """
    conn = w.net.tcp(client.node, server, port, t, rng=rng, impair=w.profile.impair).open()
    for r in reqs:
        target = r.path
        hdrs = [("User-Agent", ua), ("Accept", "*/*"), ("Accept-Language", "en-US,en;q=0.9"),
                ("Connection", "keep-alive"), *r.headers]
        t_req = conn.send(P.http_request(r.method, target, host_header, hdrs, r.body), True,
                          r.think_us)
        resp_h = ([("Content-Type", r.ctype)] if r.resp or r.status == 200 else []) + r.resp_headers
        conn.send(P.http_response(r.status, r.reason, t_req, resp_h, r.resp, server_sw), False,
                  r.proc_us)
        if log and not server.internal:
            referer = next((v for k, v in r.headers if k == "Referer"), "-")
            w.proxy(t_req, client.ip, f"{r.method} http://{host_header}{r.path} HTTP/1.1", r.status,
                    len(r.resp), ua, referer)
    end = conn.close(by_client=rng.random() < 0.7, think_us=rng.randrange(50_000, 5_000_000))
    return conn, end


def tls_session(w: World, client: Host, server: Node, sni: str | None, t: int, rng: random.Random,
                exchanges: list[tuple[int, int, int]], *, port: int = 443, log: bool = True,
                ua: str = UA, linger_us: int | None = None) -> tuple[TcpConn, int]:
    """A TLS 1.3 connection: handshake, then ``(request, response, think_us)`` plaintext sizes."""
    conn = w.net.tcp(client.node, server, port, t, rng=rng, impair=w.profile.impair).open()
    hello, sid = P.tls_client_hello(rng, sni)
    t0 = conn.send(hello, True)
    conn.send(P.tls_server_flight(rng, sid, rng.randrange(2400, 4800)), False, rng.randrange(300, 3000))
    first = True
    total = 0
    for req, resp, think in exchanges:
        data = P.tls_app_data(rng, req)
        if first:
            data = P.tls_client_finish(rng) + data
            first = False
        conn.send(data, True, think)
        conn.send(P.tls_app_data(rng, resp), False, rng.randrange(2_000, 60_000))
        total += resp
    if log and not server.internal:
        w.proxy(t0, client.ip, f"CONNECT {sni or server.ip}:{port} HTTP/1.1", 200, total, ua)
    linger = linger_us if linger_us is not None else rng.randrange(200_000, 20_000_000)
    if rng.random() < 0.1:
        end = conn.reset(True, linger)
    else:
        end = conn.close(by_client=rng.random() < 0.8, think_us=linger)
    return conn, end


def web_visit(w: World, host: Host, t: int, rng: random.Random) -> None:
    """A user opens a page on one of the benign sites (TLS mostly, some plain HTTP)."""
    sites = w.company.sites
    name, ip, kind = sites[min(len(sites) - 1, int(rng.paretovariate(1.2)) - 1)]
    got, t = w.resolve(host, name, t, rng)
    if got is None:
        return
    node = w.inet(ip)
    if kind == "tls":
        n = rng.randrange(1, 6)
        ex = [(size(rng, 600, 0.5, 200, 4000), size(rng, 15_000, 1.4, 300, 2_000_000),
               rng.randrange(1_000, 3_000_000)) for _ in range(n)]
        tls_session(w, host, node, name, t, rng, ex)
        return
    reqs = [HttpReq("GET", "/" + "/".join(rng.sample(_WORDS, 2)) + ".html",
                    resp=html(rng, size(rng, 12_000, 1.0, 500, 300_000)))]
    for _ in range(rng.randrange(0, 4)):
        if rng.random() < 0.5:
            reqs.append(HttpReq("GET", f"/assets/{rng.getrandbits(32):08x}.bin",
                                ctype="application/octet-stream",
                                resp=rng.randbytes(size(rng, 20_000, 1.3, 200, 800_000)),
                                think_us=rng.randrange(2_000, 200_000)))
        else:
            doc = f'{{"id": {rng.randrange(10**6)}, "status": "{rng.choice(_WORDS)}"}}'
            reqs.append(HttpReq("GET", f"/api/{rng.choice(_WORDS)}?id={rng.randrange(10**6)}",
                                ctype="application/json", resp=doc.encode(),
                                think_us=rng.randrange(50_000, 2_000_000)))
    http_session(w, host, node, name, t, rng, reqs)


def smtp_send(w: World, host: Host, t: int, rng: random.Random) -> None:
    """The user sends a mail through the relay on GW01 (plain SMTP on port 25)."""
    user = host.user
    if user is None:
        return
    gw = w.host("GW01")
    _, t = w.resolve(host, gw.fqdn, t, rng)
    to = [f"{rng.choice(_WORDS)}@{rng.choice(w.company.sites)[0].split('.', 1)[1]}"]
    body = text(rng, size(rng, 900, 0.8, 100, 8000))
    msg = (f"From: {user.name} <{user.email}>\r\nTo: <{to[0]}>\r\nSubject: {text(rng, 30)}\r\n"
           f"Date: {P.http_date(t).replace('GMT', '+0000')}\r\nMessage-ID: <{rng.getrandbits(64):016x}@"
           f"{host.fqdn}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    lines = [body[i:i + 76] for i in range(0, len(body), 76)]
    data = (msg + "\r\n".join(lines) + "\r\n").encode()
    if rng.random() < 0.3:
        raw = rng.randbytes(size(rng, 60_000, 1.0, 2_000, 900_000))
        att = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        b = f"b{rng.getrandbits(48):012x}"
        data = (msg.replace("text/plain; charset=utf-8", f'multipart/mixed; boundary="{b}"')
                + f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body[:600]}\r\n"
                f"--{b}\r\nContent-Type: application/octet-stream; name=\"{rng.choice(_WORDS)}.xlsx\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + att + f"--{b}--\r\n".encode()
    conn = w.net.tcp(host.node, gw.node, 25, t, rng=rng, impair=w.profile.impair).open()
    run_steps(conn, P.smtp_dialog("gw01.acme-corp.example", host.fqdn, user.email, to, data,
                                  f"{rng.getrandbits(40):010X}"))
    conn.close(by_client=True, think_us=200)


def smb_visit(w: World, host: Host, user: User, t: int, rng: random.Random, *,
              files: list[tuple[str, bytes, bool]] | None = None, share: str | None = None,
              server: str = "FS01") -> tuple[int, int]:
    """The user opens or saves files on a share; FS01 logs the network logon, DC01 the NTLM check.

    Returns:
        The time of the logon (last SESSION_SETUP response) and of the last packet.
    """
    fs = w.host(server)
    _, t = w.resolve(host, fs.fqdn, t, rng)
    share = share or rng.choice(("Finance", "HR", "Projects", "Public"))
    if files is None:
        files = []
        for _ in range(rng.randrange(1, 4)):
            n = size(rng, 90_000, 1.3, 2_000, 4_000_000)
            files.append((f"{rng.choice(_WORDS)}\\{rng.choice(_WORDS)}_{rng.randrange(100)}.xlsx",
                          rng.randbytes(n), rng.random() < 0.2))
    conn = w.net.tcp(host.node, fs.node, 445, t, rng=rng, impair=w.profile.impair).open()
    client = smb.Smb2Client(rng, fs.name, fs.ip, "acme.local", NETBIOS, t)
    steps = smb.file_access_steps(client, smb.SmbLogon(NETBIOS, user.account, host.name), share,
                                  files, rng)
    times = run_steps(conn, steps)
    t_logon = times[5]
    end = conn.close(by_client=True, think_us=rng.randrange(1_000_000, 30_000_000))
    lid = w.win.logon(t_logon, fs, user, 3, ip=host.ip, port=str(conn.port[0]), workstation=host.name)
    w.win.ntlm_check(t_logon - 800, w.host("DC01"), user.account, host.name)
    w.win.logoff(end, fs, user, lid, 3)
    w.auth(t_logon, host.ip, fs, user.account, True, "smb")
    return t_logon, end


def rdp_session(w: World, src: Host, dst: Host, user: User, t: int, duration_us: int,
                rng: random.Random) -> dict[str, Any]:
    """An RDP session with NLA (CredSSP inside TLS) and its logons on ``dst``."""
    _, t = w.resolve(src, dst.fqdn, t, rng)
    conn = w.net.tcp(src.node, dst.node, 3389, t, rng=rng, impair=w.profile.impair).open()
    # Wireshark does not decode TLS on 3389 after the X.224 exchange, so every
    # segment starts at a TLS record (no heuristic dissector misreads a record's middle).
    def rec(n: int) -> list[bytes]:
        return P.tls_records(rng, n)

    conn.send(P.rdp_connection_request(user.account), True)
    conn.send(P.rdp_connection_confirm(), False, 900)
    hello, sid = P.tls_client_hello(rng, None, alpn=())
    conn.send(hello, True, 300)
    conn.send(P.tls_server_flight(rng, sid, 1100), False, 1500)
    conn.send([P.tls_client_finish(rng) + rec(60)[0]], True)
    conn.send(rec(330), False, 3000)  # CredSSP NTLM challenge
    t_cred = conn.send(rec(700), True, 200)  # CredSSP authenticate
    conn.send(rec(120), False, 40_000)
    conn.send(rec(1900), True, 300)  # MCS connect initial (encrypted)
    t_logon = conn.send(rec(2400), False, 1_500_000)
    stop = t_logon + duration_us
    while conn.t < stop:
        conn.send(rec(size(rng, 80, 0.6, 20, 900)), True, rng.randrange(50_000, 3_000_000))
        conn.send(rec(size(rng, 4000, 1.4, 60, 60_000)), False, rng.randrange(2_000, 30_000))
    end = conn.close(by_client=True, think_us=100_000)
    dc = w.host("DC01")
    w.win.ntlm_check(t_cred + 200, dc, user.account, src.name)
    lid3 = w.win.logon(t_cred + 500, dst, user, 3, ip=src.ip, port="0", workstation=src.name)
    lid = w.win.logon(t_logon, dst, user, 10, ip=src.ip, port="0", workstation=dst.name,
                      auth="Negotiate")
    w.win.logoff(t_cred + 2_000_000, dst, user, lid3, 3)
    w.win.process(t_logon + 3_000_000, dst, "C:\\Windows\\System32\\rdpclip.exe", "rdpclip",
                  user=f"{NETBIOS}\\{user.account}", logon_id=lid)
    w.win.logoff(end, dst, user, lid, 10)
    w.auth(t_cred, src.ip, dst, user.account, True, "rdp")
    return {"t": conn.t0, "logon": t_logon, "end": end, "sport": conn.port[0], "logon_id": lid}


def ssh_session(w: World, src: Host, dst: Host, account: str, t: int, rng: random.Random, *,
                failures: tuple[str, ...] = (), commands: tuple[str, ...] = (),
                duration_us: int = 60_000_000) -> dict[str, int]:
    """An SSH login to LNX01 with password authentication, as OpenSSH logs it to auth.log."""
    _, t = w.resolve(src, dst.fqdn, t, rng)
    conn = w.net.tcp(src.node, dst.node, 22, t, rng=rng, impair=w.profile.impair).open()
    sport = conn.port[0]
    pid = rng.randrange(2000, 60000)
    conn.send(P.ssh_banner(False), False, 2000)
    conn.send(P.ssh_banner(True), True, 500)
    kex_c, ecdh, newkeys = P.ssh_kex_client(rng)
    kex_s, reply = P.ssh_kex_server(rng)
    conn.send(kex_c, True, 200)
    conn.send(kex_s, False, 300)
    conn.send(ecdh, True, 400)
    conn.send(reply, False, 4000)
    conn.send(newkeys, True, 300)
    conn.send(P.ssh_encrypted(rng, 28), True, 200)  # SERVICE_REQUEST ssh-userauth
    conn.send(P.ssh_encrypted(rng, 28), False, 500)
    for bad in failures:
        t_try = conn.send(P.ssh_encrypted(rng, 60 + len(bad)), True, rng.randrange(1_500_000, 6_000_000))
        conn.send(P.ssh_encrypted(rng, 44), False, 2_000_000)
        w.syslog(t_try + 1_900_000, "sshd", pid, f"Failed password for {bad} from {src.ip} port {sport} ssh2")
    t_ok = conn.send(P.ssh_encrypted(rng, 70 + len(account)), True, rng.randrange(1_500_000, 6_000_000))
    conn.send(P.ssh_encrypted(rng, 4), False, 60_000)
    w.syslog(t_ok + 60_000, "sshd", pid, f"Accepted password for {account} from {src.ip} port {sport} ssh2")
    w.syslog(t_ok + 64_000, "sshd", pid,
             f"pam_unix(sshd:session): session opened for user {account}(uid=1001) by (uid=0)")
    session = rng.randrange(3, 400)
    w.syslog(t_ok + 70_000, "systemd-logind", 412, f"New session {session} of user {account}.")
    w.auth(t_ok, src.ip, dst, account, True, "ssh")
    stop = t_ok + duration_us
    cmds = list(commands)
    while conn.t < stop or cmds:
        if cmds and rng.random() < 0.4:
            cmd = cmds.pop(0)
            t_cmd = conn.send(P.ssh_encrypted(rng, 40 + len(cmd)), True, rng.randrange(2_000_000, 9_000_000))
            if cmd == "sudo -l":
                w.syslog(t_cmd + 300_000, "sudo", None,
                         f"{account} : TTY=pts/0 ; PWD=/home/{account} ; USER=root ; COMMAND=list")
            elif cmd.startswith("sudo "):
                sp = rng.randrange(2000, 60000)
                w.syslog(t_cmd + 300_000, "sudo", None,
                         f"{account} : TTY=pts/0 ; PWD=/home/{account} ; USER=root ; COMMAND={cmd[5:]}")
                w.syslog(t_cmd + 302_000, "sudo", sp, "pam_unix(sudo:session): session opened for "
                         f"user root(uid=0) by {account}(uid=1001)")
                w.syslog(t_cmd + rng.randrange(2_000_000, 20_000_000), "sudo", sp,
                         "pam_unix(sudo:session): session closed for user root")
            conn.send(P.ssh_encrypted(rng, size(rng, 900, 1.2, 40, 30_000)), False, 300_000)
        else:
            conn.send(P.ssh_encrypted(rng, 36), True, rng.randrange(100_000, 1_500_000))
            conn.send(P.ssh_encrypted(rng, size(rng, 120, 1.0, 36, 4000)), False, 2_000)
    end = conn.close(by_client=True, think_us=200_000)
    w.syslog(end, "sshd", pid, f"Received disconnect from {src.ip} port {sport}:11: disconnected by user")
    w.syslog(end + 200, "sshd", pid, f"Disconnected from user {account} {src.ip} port {sport}")
    w.syslog(end + 900, "sshd", pid, f"pam_unix(sshd:session): session closed for user {account}")
    w.syslog(end + 2000, "systemd-logind", 412,
             f"Session {session} logged out. Waiting for processes to exit.")
    w.syslog(end + 9000, "systemd-logind", 412, f"Removed session {session}.")
    return {"t": conn.t0, "logon": t_ok, "end": end, "sport": sport}
