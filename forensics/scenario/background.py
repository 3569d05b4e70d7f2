"""Background activity: the normal working day the attack hides in.

Users logged on before the capture starts (their Kerberos tickets and
interactive logons are in the logs, their traffic is not); during the capture
each workstation browses (mostly TLS), sends mail through GW01, opens files on
FS01 and uses the ERP web application on LNX01, as a Poisson process with a
lunch dip. The IT admin does maintenance. LNX01's cron writes to auth.log.
Noise ``high`` adds decoys: a benign installer download, admin SSH with sudo,
and mistyped passwords.
"""

from __future__ import annotations

import functools
import random

from forensics.scenario import artifacts as A
from forensics.scenario.activities import (
    HttpReq,
    http_session,
    rdp_session,
    smb_visit,
    smtp_send,
    ssh_session,
    web_visit,
)
from forensics.scenario.hosts import NETBIOS, Host
from forensics.scenario.profiles import NOISE
from forensics.scenario.world import World

__all__ = ["setup"]

_WINDOWS = "Microsoft® Windows® Operating System"
_KINDS = (("web", 0.62), ("erp", 0.14), ("smb", 0.12), ("smtp", 0.08), ("wpad", 0.04))


def setup(w: World) -> dict[str, object]:
    """Create the pre-capture logons and schedule the day's background activity.

    Returns:
        Facts about the background for the answer key (decoys, admin sessions).
    """
    mult, decoys = NOISE[w.noise]
    facts: dict[str, object] = {"activity_per_workstation_hour": w.profile.activity * mult}
    lnx = w.host("LNX01")
    w.zone["erp.acme.local"] = (lnx.ip, 1200)
    _morning(w)
    _cron(w)
    if mult > 0:
        for h in w.company.workstations:
            _arrivals(w, h, w.profile.activity * mult)
        t = w.start + int(0.15 * (w.end - w.start)) + w.stream("bg:admin").randrange(60_000_000)
        adm = w.company.users["adm-mkoch"]
        w.at(t, lambda t2: rdp_session(w, w.host("WS01"), w.host("FS01"), adm, t2,
                                       int(min(600, 0.04 * w.profile.duration_s)) * 1_000_000,
                                       w.stream("bg:admin-rdp")))
        facts["admin_rdp"] = {"src": "WS01", "dst": "FS01", "account": "adm-mkoch", "time": t,
                              "benign": True}
    if decoys:
        facts["decoys"] = _decoys(w)
    return facts


def _morning(w: World) -> None:
    rng = w.stream("bg:morning")
    dc = w.host("DC01")
    for h in w.company.workstations:
        u = h.user
        if u is None:
            continue
        t = w.start - rng.randrange(5, 40) * 60_000_000 - rng.randrange(0, 60_000_000)
        port = rng.randrange(49700, 60000)
        w.win.tgt(t - 400_000, dc, u, h.ip, port)
        w.win.tgs(t - 250_000, dc, u, f"{h.name}$", h.ip, port + 1)
        lid = w.win.logon(t, h, u, 2, ip="127.0.0.1", port="0", workstation=h.name, auth="Negotiate")
        user = f"{NETBIOS}\\{u.account}"
        userinit = w.win.process(t + 900_000, h, "C:\\Windows\\System32\\userinit.exe",
                                 "C:\\Windows\\system32\\userinit.exe", user=user, logon_id=lid,
                                 describe=("10.0.19041.1", "Userinit Logon Application", _WINDOWS))
        explorer = w.win.process(t + 1_400_000, h, "C:\\Windows\\explorer.exe", "C:\\Windows\\Explorer.EXE",
                                 user=user, logon_id=lid, parent=userinit,
                                 describe=("10.0.19041.3636", "Windows Explorer", _WINDOWS))
        w.sessions[h.name] = (u, lid, explorer)
        for k, (img, cmd) in enumerate((
                ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
                 '"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe" --no-startup-window'),
                ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
                 '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"'))):
            w.win.process(t + (5 + 40 * k) * 1_000_000 + rng.randrange(0, 9_000_000), h, img, cmd,
                          user=user, logon_id=lid, parent=explorer)


def _cron(w: World) -> None:
    rng = w.stream("bg:cron")
    t = w.start - w.start % 600_000_000  # cron ticks on the wall clock
    while t < w.end:
        t += 600_000_000
        if t >= w.end:
            break
        jobs = [("erp", 1002)] + ([("root", 0)] if (t // 60_000_000) % 60 == 10 else [])
        for user, uid in jobs:
            pid = rng.randrange(3000, 60000)
            w.syslog(t + 1_000_000, "CRON", pid,
                     f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)")
            w.syslog(t + rng.randrange(1_200_000, 9_000_000), "CRON", pid,
                     f"pam_unix(cron:session): session closed for user {user}")


def _arrivals(w: World, h: Host, per_hour: float) -> None:
    rng = w.stream(f"bg:{h.name}")
    rate = per_hour / 3600e6
    t = w.start + int(rng.expovariate(rate))
    kinds = [k for k, _ in _KINDS]
    weights = [p for _, p in _KINDS]
    while t < w.end - 60_000_000:
        clock = (t // 60_000_000) % 1440
        if 720 <= clock < 765 and rng.random() < 0.7:  # lunch, 12:00-12:45 UTC
            t += int(rng.expovariate(rate))
            continue
        kind = rng.choices(kinds, weights)[0]
        w.at(t, functools.partial(_activity, w, h, kind, rng=random.Random(rng.getrandbits(64))))
        t += int(rng.expovariate(rate))


def _activity(w: World, h: Host, kind: str, t: int, *, rng: random.Random) -> None:
    if kind == "web":
        web_visit(w, h, t, rng)
    elif kind == "smtp":
        smtp_send(w, h, t, rng)
    elif kind == "smb" and h.user is not None:
        smb_visit(w, h, h.user, t, rng)
    elif kind == "wpad":
        w.resolve(h, "wpad.acme.local", t, rng)
    elif kind == "erp":
        lnx = w.host("LNX01")
        _, t = w.resolve(h, "erp.acme.local", t, rng)
        reqs = []
        for _ in range(rng.randrange(1, 5)):
            n = rng.randrange(1, 40)
            rows = ",".join(f'{{"order":{rng.randrange(10**5, 10**6)},"qty":{rng.randrange(1, 99)}}}'
                            for _ in range(n))
            if rng.random() < 0.2:
                order = f'{{"order":{rng.randrange(10**6)},"qty":{rng.randrange(1, 9)}}}'
                reqs.append(HttpReq("POST", "/erp/api/orders", ctype="application/json",
                                    resp=b'{"ok":true}', body=order.encode(),
                                    headers=[("Content-Type", "application/json")],
                                    think_us=rng.randrange(500_000, 20_000_000)))
            else:
                reqs.append(HttpReq("GET", f"/erp/api/orders?page={rng.randrange(1, 50)}",
                                    ctype="application/json", resp=f'{{"rows":[{rows}]}}'.encode(),
                                    think_us=rng.randrange(500_000, 20_000_000)))
        http_session(w, h, lnx.node, "erp.acme.local", t, rng, reqs, server_sw="Apache/2.4.57 (Debian)")


def _decoys(w: World) -> list[dict[str, object]]:
    rng = w.stream("bg:decoys")
    out: list[dict[str, object]] = []
    ws = [h for h in w.company.workstations if h.name != "WS01"]
    # A benign installer download: an .exe over HTTP that no YARA rule flags.
    h = rng.choice(ws)
    name = "download.litwareinc.com"
    ip = next(i for n, i, _ in w.company.sites if n.endswith("litwareinc.com"))
    w.zone[name] = (ip, 300)
    exe = A.pe_stub(rng, None, "benign viewer setup", 60_000, (w.start // 1_000_000) - 86400 * 40)
    t = w.start + int(rng.uniform(0.2, 0.6) * (w.end - w.start))

    def dl(t2: int) -> None:
        _, t3 = w.resolve(h, name, t2, rng)
        http_session(w, h, w.inet(ip), name, t3, rng,
                     [HttpReq("GET", "/tools/ViewerSetup_x64.exe", ctype="application/octet-stream",
                              resp=exe)])

    w.at(t, dl)
    out.append({"kind": "benign_download", "host": h.name, "name": "ViewerSetup_x64.exe",
                "time": t, **A.digests(exe)})
    # The admin's own SSH maintenance on LNX01.
    t = w.start + int(0.35 * (w.end - w.start))
    w.at(t, lambda t2: ssh_session(w, w.host("WS01"), w.host("LNX01"), "mkoch", t2,
                                   w.stream("bg:admin-ssh"),
                                   commands=("sudo /usr/bin/apt-get update", "uptime"),
                                   duration_us=120_000_000))
    out.append({"kind": "admin_ssh", "src": "WS01", "dst": "LNX01", "account": "mkoch", "time": t})
    # Mistyped passwords at the lock screen.
    for _ in range(3):
        h = rng.choice(ws)
        if h.user is None:
            continue
        t = w.start + int(rng.uniform(0.05, 0.95) * (w.end - w.start))
        w.win.failed(t, h, h.user.account, 7, ip="127.0.0.1", port="0", workstation=h.name)
        out.append({"kind": "typo_logon_failure", "host": h.name, "account": h.user.account, "time": t})
    return out
