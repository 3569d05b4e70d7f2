"""Renders the attack steps of :mod:`forensics.scenario.story` as packets and log records."""

from __future__ import annotations

import base64
import random
from typing import Any

from forensics.scenario import artifacts as A
from forensics.scenario import rpc, smb
from forensics.scenario.activities import (
    HttpReq,
    http_session,
    rdp_session,
    run_steps,
    ssh_session,
    tls_session,
)
from forensics.scenario.hosts import NETBIOS, Host, User
from forensics.scenario.story import Hop, Plan
from forensics.scenario.world import World

__all__ = ["dump", "exfil_dns", "exfil_http", "helpdesk", "initial_access", "lateral", "probe",
           "scan", "stage"]

IMPLANT_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko"
SYSTEM_USER = "NT AUTHORITY\\SYSTEM"
_SCAN_PORTS = (445, 135, 3389, 22, 80)


def _sysmon_hashes(d: dict[str, Any]) -> str:
    return f"SHA1={d['sha1'].upper()},MD5={d['md5'].upper()},SHA256={d['sha256'].upper()}"


def _actor(w: World, pl: Plan, host: Host) -> tuple[User, str, str]:
    """Who the attacker's code runs as on ``host``: (user, logon id, Sysmon user string)."""
    if host is pl.p0:
        lid = w.sessions[host.name][1] if host.name in w.sessions else "0x3e7"
        return pl.p0_user, lid, f"{NETBIOS}\\{pl.p0_user.account}"
    machine = User(f"{host.name}$", f"{host.name} machine account", "-", 0, fixed_sid="S-1-5-18")
    return machine, "0x3e7", SYSTEM_USER


def _implant(pl: Plan, host: Host) -> tuple[int, str, str, str]:
    """The attacker's process on ``host`` as a Sysmon parent (a shell if no implant runs there)."""
    if host.name not in pl.implants:
        return 4, "{00000000-0000-0000-0000-000000000000}", "C:\\Windows\\System32\\cmd.exe", "cmd.exe"
    pid, guid, image = pl.implants[host.name]
    return pid, guid, image, image


def _connect_event(w: World, pl: Plan, src: Host, t: int, sport: int, dst_ip: str, dport: int) -> None:
    """Sysmon 3 for a connection the attacker's process on ``src`` opened (if one runs there)."""
    if src.name in pl.implants:
        w.win.netconn(t, src, _implant(pl, src), _actor(w, pl, src)[2], src.ip, sport, dst_ip, dport)


def _file(pl: Plan, data: bytes, **kw: Any) -> dict[str, Any]:
    text = data.decode("latin-1")
    hits = [rule for marker, rule in A.YARA_RULES.items() if marker in text]
    entry = {**kw, **A.digests(data), "yara": hits}
    pl.files.append(entry)
    return entry


# ---- initial access and command and control -----------------------------------------


def helpdesk(w: World, pl: Plan, t: int) -> None:
    """Benign: the IT admin helps patient zero's user over RDP with his admin account."""
    rng = w.stream("helpdesk")
    ws01 = w.host("WS01")
    adm = w.company.users["adm-mkoch"]
    sess = w.sessions.get("WS01")
    if sess:
        mstsc = w.win.process(t - 400_000, ws01, "C:\\Windows\\System32\\mstsc.exe",
                              f"\"C:\\Windows\\System32\\mstsc.exe\" /v:{pl.p0.fqdn}",
                              user=f"{NETBIOS}\\mkoch", logon_id=sess[1], parent=sess[2])
        w.win.explicit(t - 200_000, ws01, w.company.admin, sess[1], adm, pl.p0.fqdn, mstsc[2], mstsc[0])
    rdp_session(w, ws01, pl.p0, adm, t, int(min(480, 0.05 * w.profile.duration_s)) * 1_000_000, rng)


def initial_access(w: World, pl: Plan, t: int) -> None:
    """Phishing download of the dropper, its execution, and the start of HTTP beaconing."""
    rng = w.stream("initial")
    inf = w.company.infra
    size = 18_000 + 4_000 * w.profile.workstations
    dropper = A.pe_stub(rng, A.DROPPER_MARKER, f"scenario seed={w.seed} profile={w.profile.name} "
                        "role=dropper", size, (w.start // 1_000_000) - 86400 * 3)
    user = pl.p0_user
    image = f"C:\\Users\\{user.account}\\Downloads\\{pl.dropper_name}"
    if "phishing" in pl.parts:
        _, t1 = w.resolve(pl.p0, inf.phish_domain, t, rng)
        path = f"/s/{rng.getrandbits(40):010x}/{pl.dropper_name}"
        req = HttpReq("GET", path, ctype="application/octet-stream", resp=dropper, proc_us=90_000,
                      resp_headers=[("Content-Disposition", f'attachment; filename="{pl.dropper_name}"')],
                      headers=[("Referer", "https://mail.acme-corp.example/")])
        conn, _ = http_session(w, pl.p0, w.inet(inf.phish_ip), inf.phish_domain, t1, rng, [req],
                               server_sw="Apache/2.4.58 (Ubuntu)")
        _file(pl, dropper, name=pl.dropper_name, role="dropper", protocol="http", direction="in",
              src_ip=inf.phish_ip, src_port=80, dst=pl.p0.name, dst_ip=pl.p0.ip,
              dst_port=conn.port[0], time=t1,
              url=f"http://{inf.phish_domain}{path}")
    else:
        image = f"E:\\{pl.dropper_name}"
        _file(pl, dropper, name=pl.dropper_name, role="dropper", protocol="none", direction="in",
              src_ip=None, dst=pl.p0.name, dst_ip=pl.p0.ip, time=pl.t_exec, url=None)
    sess = w.sessions.get(pl.p0.name)
    proc = w.win.process(pl.t_exec, pl.p0, image, f'"{image}"', user=f"{NETBIOS}\\{user.account}",
                         logon_id=sess[1] if sess else "0x3e7", parent=sess[2] if sess else None,
                         hashes=_sysmon_hashes(A.digests(dropper)), integrity="High")
    pl.implants[pl.p0.name] = (proc[0], proc[1], image)
    if "c2" in pl.parts:
        pl.c2 = {"domain": inf.c2_domain, "ip": inf.c2_ip, "beacon_interval_s": w.profile.beacon_s,
                 "jitter": 0.2, "channels": {}}
        first = pl.t_exec + rng.randrange(5, 20) * 1_000_000
        w.at(first, lambda t2: beacon(w, pl, pl.p0, "http", t2, w.stream(f"beacon:{pl.p0.name}")))


def beacon(w: World, pl: Plan, host: Host, kind: str, t: int, rng: random.Random) -> None:
    """One C2 check-in (HTTP GET, or a short TLS session), then the next one is scheduled."""
    inf = w.company.infra
    _, t1 = w.resolve(host, inf.c2_domain, t, rng)
    node = w.inet(inf.c2_ip)
    if kind == "http":
        task = rng.random() < 0.08
        body = (f'{{"id":"{rng.getrandbits(32):08x}","t":"'
                + (base64.b64encode(rng.randbytes(rng.randrange(600, 3000))).decode() if task else "")
                + '"}').encode()
        path = f"/api/v2/{rng.choice(('status', 'sync', 'poll'))}?sid={host.name.lower()}{w.seed:04x}"
        req = HttpReq("GET", path, ctype="application/json", resp=body,
                      proc_us=rng.randrange(30_000, 120_000),
                      headers=[("Cookie", "session=" + base64.b64encode(rng.randbytes(24)).decode())])
        conn, _ = http_session(w, host, node, inf.c2_domain, t1, rng, [req], ua=IMPLANT_UA,
                               server_sw="Microsoft-IIS/10.0")
    else:
        conn, _ = tls_session(w, host, node, inf.c2_domain, t1, rng,
                              [(rng.randrange(180, 400), rng.randrange(60, 900), 0)],
                              ua="-", linger_us=rng.randrange(50_000, 400_000))
    user = _actor(w, pl, host)[2]
    w.win.netconn(conn.t0, host, _implant(pl, host), user, host.ip, conn.port[0], inf.c2_ip,
                  conn.port[1])
    ch = pl.c2["channels"].setdefault(host.name, {"host": host.name, "ip": host.ip, "protocol": kind,
                                                  "port": conn.port[1], "first": t1, "count": 0})
    ch["count"] += 1
    ch["last"] = t1
    interval = w.profile.beacon_s * 1_000_000
    nxt = t + int(interval * rng.uniform(0.8, 1.2))
    if nxt < w.end - 5_000_000:
        w.at(nxt, lambda t2: beacon(w, pl, host, kind, t2, rng))


# ---- discovery and credentials -------------------------------------------------------


def scan(w: World, pl: Plan, t: int) -> None:
    """A TCP connect scan from patient zero over both internal /24s (and the gateway)."""
    rng = w.stream("scan")
    live = {h.ip: h for h in w.company.hosts.values()}
    targets = [f"10.10.{net}.{i}" for net in (10, 20) for i in range(1, 41)] + ["10.10.0.1"]
    probes = [(ip, port) for port in _SCAN_PORTS for ip in targets if ip != pl.p0.ip]
    rng.shuffle(probes)
    from forensics.scenario.network import Node

    first = t
    for ip, port in probes:
        t += rng.randrange(3_000, 25_000)
        h = live.get(ip)
        if h is None:
            if ip.rsplit(".", 1)[0] == pl.p0.node.subnet:
                continue  # ARP finds nobody on the local segment: no SYN leaves
            node = Node("", ip)
            conn = w.net.tcp(pl.p0.node, node, port, t, rng=rng)
            conn.unanswered(retries=1)
            continue
        conn = w.net.tcp(pl.p0.node, h.node, port, t, rng=rng)
        if port in _open_ports(h):
            conn.open()
            conn.reset(True, 200)
        else:
            conn.refused()
    pl.exfil.setdefault("_scan", {"src": pl.p0.name, "first": first, "last": t,
                                  "ports": list(_SCAN_PORTS), "targets": len(targets) - 1})


def _open_ports(h: Host) -> tuple[int, ...]:
    if h.role == "linux_server":
        return (22, 80)
    if h.role == "gateway":
        return (22, 80)
    return (135, 445, 3389)


def dump(w: World, pl: Plan, t: int, host: Host, account: str) -> None:
    """Credential dumping (LSASS minidump through comsvcs.dll) on ``host``."""
    rng = w.stream(f"dump:{host.name}")
    user, lid, sysmon_user = _actor(w, pl, host)
    out = f"C:\\Windows\\Temp\\{rng.getrandbits(24):06x}.dmp"
    w.win.process(t, host, "C:\\Windows\\System32\\rundll32.exe",
                  "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump "
                  f"{rng.randrange(600, 900)} {out} full",
                  user=sysmon_user, logon_id=lid, parent=_implant(pl, host), integrity="High")
    del user, account


def probe(w: World, pl: Plan, t: int) -> None:
    """Password guesses against FS01, then admin-share checks with the stolen admin account."""
    rng = w.stream("probe")
    p0, fs, dc = pl.p0, w.host("FS01"), w.host("DC01")
    subject, lid, _ = _actor(w, pl, p0)
    for _ in range(3):
        t = _smb_probe(w, pl, p0, fs, "administrator", False, t, rng) + rng.randrange(1, 4) * 1_000_000
    adm = w.company.users["adm-mkoch"]
    for target in pl.probe_targets:
        img = _implant(pl, p0)
        w.win.explicit(t - 50_000, p0, subject, lid, adm, target.fqdn, img[2], img[0])
        t = _smb_probe(w, pl, p0, target, adm.account, True, t, rng) + rng.randrange(3, 15) * 1_000_000
    del dc


def _smb_probe(w: World, pl: Plan, src: Host, dst: Host, account: str, ok: bool, t: int,
               rng: random.Random) -> int:
    conn = w.net.tcp(src.node, dst.node, 445, t, rng=rng).open()
    client = smb.Smb2Client(rng, dst.name, dst.ip, "acme.local", NETBIOS, t)
    times = run_steps(conn, smb.share_probe_steps(client, smb.SmbLogon(NETBIOS, account, src.name, ok)))
    t_auth = times[5]
    end = conn.close(True, 1000) if ok else conn.close(True, 30_000)
    dc = w.host("DC01")
    w.win.ntlm_check(t_auth - 900, dc, account, src.name, ok)
    w.auth(t_auth, src.ip, dst, account, ok, "smb")
    if ok:
        user = w.company.users[account]
        lid = w.win.logon(t_auth, dst, user, 3, ip=src.ip, port=str(conn.port[0]), workstation=src.name)
        w.win.logoff(end, dst, user, lid, 3)
    else:
        w.win.failed(t_auth, dst, account, 3, ip=src.ip, port=str(conn.port[0]), workstation=src.name)
    _connect_event(w, pl, src, conn.t0, conn.port[0], dst.ip, 445)
    return end


# ---- lateral movement ----------------------------------------------------------------


def lateral(w: World, pl: Plan, hop: Hop, t: int) -> None:
    """One hop of the chain, by technique."""
    rng = w.stream(f"hop:{hop.dst.name}")
    src, dst = hop.src, hop.dst
    subject, lid, _ = _actor(w, pl, src)
    img = pl.implants.get(src.name)
    if img and hop.technique != "ssh":
        w.win.explicit(t - 30_000, src, subject, lid, hop.account, dst.fqdn, img[2], img[0])
    {"psexec": _psexec, "wmi": _wmi, "rdp": _rdp, "ssh": _ssh}[hop.technique](w, pl, hop, t, rng)


def _psexec(w: World, pl: Plan, hop: Hop, t: int, rng: random.Random) -> None:
    src, dst, acct = hop.src, hop.dst, hop.account
    exe = A.pe_stub(rng, A.IMPLANT_MARKER, f"scenario seed={w.seed} role=service host={dst.name}",
                    30_000 + 1_000 * len(pl.hops), (w.start // 1_000_000) - 86400 * 2)
    _, t = w.resolve(src, dst.fqdn, t, rng)
    conn = w.net.tcp(src.node, dst.node, 445, t, rng=rng, impair=w.profile.impair).open()
    client = smb.Smb2Client(rng, dst.name, dst.ip, "acme.local", NETBIOS, t)
    steps = smb.psexec_steps(client, smb.SmbLogon(NETBIOS, acct.account, src.name), rng, hop.exe, exe,
                             hop.service, dst.name)
    times = run_steps(conn, steps)
    chunks = (len(exe) + smb.CHUNK - 1) // smb.CHUNK
    i_write = 6 + 4 + 2 + 2 * chunks - 1
    i_start = i_write + 4 + 2 + 4 * 3 + 3
    t_logon, t_written, t_start = times[5], times[i_write], times[i_start]
    end = conn.close(True, 2000)
    w.win.ntlm_check(t_logon - 700, w.host("DC01"), acct.account, src.name)
    dlid = w.win.logon(t_logon, dst, acct, 3, ip=src.ip, port=str(conn.port[0]), workstation=src.name)
    w.win.service_install(t_start - 20_000, dst, acct, hop.service, f"%systemroot%\\{hop.exe}")
    image = f"C:\\Windows\\{hop.exe}"
    proc = w.win.process(t_start + 30_000, dst, image, image, user=SYSTEM_USER, logon_id="0x3e7",
                         parent=(700, "{00000000-0000-0000-0000-0000000002bc}",
                                 "C:\\Windows\\System32\\services.exe",
                                 "C:\\Windows\\system32\\services.exe"),
                         integrity="System", hashes=_sysmon_hashes(A.digests(exe)))
    w.win.logoff(end, dst, acct, dlid, 3)
    _connect_event(w, pl, src, conn.t0, conn.port[0], dst.ip, 445)
    w.auth(t_logon, src.ip, dst, acct.account, True, "psexec")
    _file(pl, exe, name=hop.exe, role="service_binary", protocol="smb2", direction="lateral",
          src=src.name, src_ip=src.ip, src_port=conn.port[0], dst=dst.name, dst_ip=dst.ip,
          dst_port=445, time=t_written,
          path=f"\\\\{dst.name}\\ADMIN$\\{hop.exe}")
    pl.implants[dst.name] = (proc[0], proc[1], image)
    hop.result = {"t": conn.t0, "logon": t_logon, "sport": conn.port[0], "dport": 445,
                  "service_started": t_start, "end": end}
    if "c2" in pl.parts and pl.c2:
        w.at(t_start + rng.randrange(10, 30) * 1_000_000,
             lambda t2: beacon(w, pl, dst, "tls", t2, w.stream(f"beacon:{dst.name}")))


def _wmi(w: World, pl: Plan, hop: Hop, t: int, rng: random.Random) -> None:
    src, dst, acct = hop.src, hop.dst, hop.account
    _, t = w.resolve(src, dst.fqdn, t, rng)
    dc = w.host("DC01")
    logons = []
    c1 = w.net.tcp(src.node, dst.node, 135, t, rng=rng).open()
    chal, info = rpc.ntlm_challenge(rng, NETBIOS, dst.name, "acme.local", t)
    c1.send(rpc.rpc_bind(1, rpc.ISYSTEMACTIVATOR, rpc.ntlm_negotiate()), True, 300)
    c1.send(rpc.rpc_bind_ack(1, "135", rng.randrange(1, 1 << 20), chal), False, 600)
    ta = c1.send(rpc.rpc_auth3(1, rpc.ntlm_authenticate(rng, NETBIOS, acct.account, src.name, info, t,
                                                         f"RPCSS/{dst.ip}")), True, 300)
    logons.append((ta + 2_000, c1.port[0]))
    c1.send(rpc.rpc_request(2, 4, rng.randbytes(rng.randrange(900, 1300)), rng, 0), True, 200)
    c1.send(rpc.rpc_response(2, rng.randbytes(rng.randrange(1500, 2100)), rng, 0), False, 9_000)
    e1 = c1.close(True, 3_000)
    c2 = w.net.tcp(src.node, dst.node, hop.wmi_port, c1.t + 4_000, rng=rng).open()
    chal, info = rpc.ntlm_challenge(rng, NETBIOS, dst.name, "acme.local", c2.t0)
    c2.send(rpc.rpc_bind(1, rpc.IWBEMLEVEL1LOGIN, rpc.ntlm_negotiate()), True, 300)
    c2.send(rpc.rpc_bind_ack(1, str(hop.wmi_port), rng.randrange(1, 1 << 20), chal), False, 600)
    tb = c2.send(rpc.rpc_auth3(1, rpc.ntlm_authenticate(rng, NETBIOS, acct.account, src.name, info,
                                                         c2.t0, f"RPCSS/{dst.ip}")), True, 300)
    logons.append((tb + 2_000, c2.port[0]))
    obj = rng.randbytes(16)
    c2.send(rpc.rpc_request(2, 6, rng.randbytes(160), rng, 0, obj=obj), True, 200)
    c2.send(rpc.rpc_response(2, rng.randbytes(260), rng, 0), False, 40_000)
    c2.send(rpc.rpc_bind(3, rpc.IWBEMSERVICES, alter=True), True, 300)
    c2.send(rpc.rpc_bind_ack(3, "", 0, alter=True), False, 500)
    cmds = ("whoami /all", 'net group "Domain Admins" /domain',
            "reg save HKLM\\SECURITY C:\\Windows\\Temp\\sec.hiv /y")
    t_cmds = []
    for k, cmd in enumerate(cmds):
        tc = c2.send(rpc.rpc_request(4 + k, 24, rng.randbytes(700 + 2 * len(cmd)), rng, 1 + k, obj=obj),
                     True, rng.randrange(1_000_000, 8_000_000))
        c2.send(rpc.rpc_response(4 + k, rng.randbytes(rng.randrange(300, 500)), rng, 1 + k), False, 300_000)
        t_cmds.append((tc, cmd))
    e2 = c2.close(True, 5_000)
    lids = []
    for (tl, sport), end in zip(logons, (e1, e2), strict=True):
        w.win.ntlm_check(tl - 1_000, dc, acct.account, src.name)
        lid = w.win.logon(tl, dst, acct, 3, ip=src.ip, port=str(sport), workstation=src.name)
        lids.append(lid)
        w.win.logoff(end, dst, acct, lid, 3)
        w.auth(tl, src.ip, dst, acct.account, True, "wmi")
    prv = w.win.process(tb + 60_000, dst, "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
                        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding",
                        user="NT AUTHORITY\\NETWORK SERVICE", logon_id="0x3e4", integrity="System",
                        parent=(812, "{00000000-0000-0000-0000-00000000032c}",
                                "C:\\Windows\\System32\\svchost.exe",
                                "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p"))
    for tc, cmd in t_cmds:
        w.win.process(tc + 150_000, dst, "C:\\Windows\\System32\\cmd.exe", f"cmd.exe /Q /c {cmd}",
                      user=f"{NETBIOS}\\{acct.account}", logon_id=lids[1], parent=prv, integrity="High")
    for c in (c1, c2):
        _connect_event(w, pl, src, c.t0, c.port[0], dst.ip, c.port[1])
    hop.result = {"t": c1.t0, "logon": logons[0][0], "sport": c1.port[0], "dport": 135,
                  "dynamic_port": hop.wmi_port, "dynamic_sport": c2.port[0], "end": e2,
                  "commands": list(cmds)}


def _rdp(w: World, pl: Plan, hop: Hop, t: int, rng: random.Random) -> None:
    src, dst, acct = hop.src, hop.dst, hop.account
    user, lid, sysmon_user = _actor(w, pl, src)
    img = pl.implants.get(src.name)
    mstsc = w.win.process(t - 300_000, src, "C:\\Windows\\System32\\mstsc.exe",
                          f"mstsc.exe /v:{dst.ip}", user=sysmon_user, logon_id=lid,
                          parent=_implant(pl, src) if img else None)
    dur = int(min(900, 0.05 * w.profile.duration_s)) * 1_000_000
    info = rdp_session(w, src, dst, acct, t, dur, rng)
    w.win.netconn(info["t"], src, mstsc, sysmon_user, src.ip, info["sport"], dst.ip, 3389)
    shell = w.win.process(info["logon"] + 20_000_000, dst, "C:\\Windows\\System32\\cmd.exe",
                          "\"C:\\Windows\\system32\\cmd.exe\"", user=f"{NETBIOS}\\{acct.account}",
                          logon_id=info["logon_id"], integrity="High")
    if dst.role == "domain_controller":
        w.win.process(info["logon"] + 60_000_000, dst, "C:\\Windows\\System32\\ntdsutil.exe",
                      'ntdsutil.exe "ac i ntds" "ifm" "create full C:\\PerfLogs\\ifm" q q',
                      user=f"{NETBIOS}\\{acct.account}", logon_id=info["logon_id"], parent=shell,
                      integrity="High")
    hop.result = {"t": info["t"], "logon": info["logon"], "sport": info["sport"], "dport": 3389,
                  "end": info["end"]}
    del user


def _ssh(w: World, pl: Plan, hop: Hop, t: int, rng: random.Random) -> None:
    src, dst, acct = hop.src, hop.dst, hop.account
    _, lid, sysmon_user = _actor(w, pl, src)
    img = pl.implants.get(src.name)
    ssh = w.win.process(t - 200_000, src, "C:\\Windows\\System32\\OpenSSH\\ssh.exe",
                        f"ssh.exe {acct.account}@{dst.fqdn}", user=sysmon_user, logon_id=lid,
                        parent=_implant(pl, src) if img else None)
    info = ssh_session(w, src, dst, acct.account, t, rng, failures=("root",),
                       commands=("id", "sudo -l",
                                 "sudo /usr/bin/tar czf /tmp/.cache/erp_db.tgz /var/lib/erp/db",
                                 "ls -la /tmp/.cache"),
                       duration_us=int(min(300, 0.03 * w.profile.duration_s)) * 1_000_000)
    w.win.netconn(info["t"], src, ssh, sysmon_user, src.ip, info["sport"], dst.ip, 22)
    hop.result = {"t": info["t"], "logon": info["logon"], "sport": info["sport"], "dport": 22,
                  "end": info["end"], "failed_accounts": ["root"]}


# ---- staging and exfiltration --------------------------------------------------------


def _archive(w: World, pl: Plan) -> tuple[bytes, list[str]]:
    d = w.start // 1_000_000
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(pl.t_stage // 1_000_000, UTC)
    del d
    return A.stolen_archive(w.stream("archive"), w.profile.archive_bytes,
                            (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second - dt.second % 2))


def stage(w: World, pl: Plan, t: int) -> None:
    """The attacker zips share data on the staging host."""
    host = pl.stage_host
    _, lid, sysmon_user = _actor(w, pl, host)
    data, members = _archive(w, pl)
    path = f"C:\\ProgramData\\Microsoft\\Crypto\\{pl.archive_name}"
    w.win.process(t, host, "C:\\Program Files\\7-Zip\\7z.exe",
                  f'"C:\\Program Files\\7-Zip\\7z.exe" a -tzip -mx0 {path} '
                  "D:\\Shares\\Finance D:\\Shares\\HR D:\\Shares\\Projects",
                  user=sysmon_user, logon_id=lid, parent=_implant(pl, host), integrity="High")
    pl.exfil["staging"] = {"host": host.name, "time": t, "path": path, "members": members,
                           **A.digests(data)}


def exfil_http(w: World, pl: Plan, t: int) -> None:
    """Upload of the staged archive with one HTTP POST to the attacker's storage host."""
    rng = w.stream("exfil_http")
    host = pl.stage_host
    inf = w.company.infra
    data, _ = _archive(w, pl)
    _, t1 = w.resolve(host, inf.exfil_domain, t, rng)
    path = f"/upload/{rng.getrandbits(48):012x}"
    req = HttpReq("POST", path, ctype="application/json", resp=b'{"status":"ok"}', body=data,
                  headers=[("Content-Type", "application/octet-stream"), ("X-File-Name", pl.archive_name)],
                  proc_us=250_000)
    conn, end = http_session(w, host, w.inet(inf.exfil_ip), inf.exfil_domain, t1, rng, [req],
                             ua=IMPLANT_UA)
    w.win.netconn(conn.t0, host, _implant(pl, host), _actor(w, pl, host)[2], host.ip, conn.port[0],
                  inf.exfil_ip, 80)
    _file(pl, data, name=pl.archive_name, role="exfil_archive", protocol="http", direction="out",
          src=host.name, src_ip=host.ip, src_port=conn.port[0], dst_ip=inf.exfil_ip, dst_port=80,
          time=t1, url=f"http://{inf.exfil_domain}{path}")
    pl.exfil["http_post"] = {"bytes": len(data), "requests": 1, "src": host.name, "src_ip": host.ip,
                             "dst_ip": inf.exfil_ip, "host": inf.exfil_domain, "url": path,
                             "first": t1, "last": end, "sport": conn.port[0]}


def exfil_dns(w: World, pl: Plan, t: int) -> None:
    """A CSV leaves in DNS query names (one chunk per query, via DC01's forwarder)."""
    rng = w.stream("exfil_dns")
    host = pl.stage_host
    data = A.stolen_table(rng, w.profile.dns_bytes, "accounts")
    step = 35 if pl.dns_encoding == "base32" else 31
    names = []
    for i in range(0, len(data), step):
        chunk = data[i:i + step]
        label = (base64.b32encode(chunk).decode().rstrip("=").lower() if pl.dns_encoding == "base32"
                 else chunk.hex())
        names.append(f"{i // step:04x}.{label}.{w.company.infra.dns_domain}")
    _file(pl, data, name=pl.dns_file_name, role="exfil_dns_file", protocol="dns", direction="out",
          src=host.name, src_ip=host.ip, dst_ip=w.company.resolver.ip, time=t, url=None)
    info = {"bytes_encoded": len(data), "queries": len(names), "encoding": pl.dns_encoding,
            "chunk_bytes": step, "domain": w.company.infra.dns_domain, "src": host.name,
            "src_ip": host.ip, "resolver": w.host("DC01").ip, "first": t,
            "qname_chars": sum(len(n) for n in names), "example_query": names[0]}
    pl.exfil["dns"] = info

    def one(k: int, tk: int) -> None:
        w.resolve(host, names[k], tk, rng)
        info["last"] = tk
        if k + 1 < len(names):
            w.at(tk + rng.randrange(200_000, 1_500_000), lambda t2: one(k + 1, t2))

    one(0, t)
