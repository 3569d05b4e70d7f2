"""The attack story: who is patient zero, when each step happens, and the facts for the key.

:func:`plan` decides the timeline from the seed and profile (nothing is
written yet); :func:`schedule` hands each step to the world, where
:mod:`forensics.scenario.attack` renders it as packets and log records. The
timeline scales with the capture length ``D`` (times are fractions of it):

- 0.03 D  helpdesk: the IT admin RDPs to patient zero with ``adm-mkoch``
  (benign; it leaves the admin's credentials in memory there)
- 0.10 D  phishing download of the dropper over HTTP; executed a minute later,
  C2 beacons (HTTP) start
- 0.18 D  TCP connect scan of the internal subnets
- 0.22 D  LSASS dump on patient zero (``adm-mkoch`` compromised)
- 0.25 D  failed logons, then share probes with ``adm-mkoch``
- 0.30-0.68 D  lateral hops (PsExec, WMI, RDP, SSH); PsExec'd hosts beacon over TLS
- after FS01 falls, ``svc_backup`` is dumped there
- 0.74 D  staging of a zip on FS01; 0.77 D HTTP POST exfiltration; 0.82 D DNS exfiltration
"""

from __future__ import annotations

import functools
import random
import string
from dataclasses import dataclass, field
from typing import Any

from forensics.scenario.hosts import Host, User
from forensics.scenario.world import World

__all__ = ["Hop", "Plan", "plan"]


@dataclass
class Hop:
    """One lateral movement step."""

    technique: str
    src: Host
    dst: Host
    account: User
    t: int
    service: str = ""
    exe: str = ""
    wmi_port: int = 0
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """The decided timeline (times in µs since the epoch)."""

    parts: frozenset[str]
    p0: Host
    p0_user: User
    t_helpdesk: int
    t_download: int
    t_exec: int
    dropper_name: str
    t_scan: int
    t_dump: int
    t_probe: int
    probe_targets: list[Host]
    hops: list[Hop]
    t_harvest: int
    harvest_host: Host
    stage_host: Host
    t_stage: int
    t_exfil_http: int
    t_exfil_dns: int
    archive_name: str
    dns_file_name: str
    dns_encoding: str
    compromised: dict[str, tuple[int, str]] = field(default_factory=dict)  # host -> (time, how)
    accounts: dict[str, tuple[int, str]] = field(default_factory=dict)  # account -> (time, how)
    files: list[dict[str, Any]] = field(default_factory=list)
    exfil: dict[str, Any] = field(default_factory=dict)
    c2: dict[str, Any] = field(default_factory=dict)
    implants: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # host -> pid, guid, image


def _hop(w: World, pl: Plan, hop: Hop, t: int) -> None:
    from forensics.scenario import attack

    attack.lateral(w, pl, hop, t)


def _rand_name(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(n))


def plan(w: World, parts: frozenset[str]) -> Plan:
    """Decide the attack timeline for this seed, profile and set of story parts."""
    rng = w.stream("plan")
    c = w.company
    d = w.end - w.start
    s = w.start

    def at(frac: float, jitter: float = 0.01) -> int:
        return s + int(d * (frac + rng.uniform(-jitter, jitter))) + rng.randrange(1_000_000)

    ws = c.workstations
    p0 = rng.choice(ws[1:])
    others = [h for h in ws[1:] if h is not p0]
    rng.shuffle(others)
    roles: dict[str, Host] = {"p0": p0}
    for k, h in zip(("ws_a", "ws_b", "ws_c"), others, strict=False):
        roles[k] = h
    for name in ("FS01", "DC01", "LNX01"):
        roles[name] = w.host(name)
    accounts = {"admin": c.users["adm-mkoch"], "service": c.service}
    p0_user = p0.user
    assert p0_user is not None
    t_download = at(0.10)
    t_exec = t_download + rng.randrange(40, 150) * 1_000_000
    pl = Plan(
        parts=parts, p0=p0, p0_user=p0_user, t_helpdesk=at(0.03, 0.005), t_download=t_download,
        t_exec=t_exec,
        dropper_name=rng.choice(("Invoice_March_2026.exe", "Remittance_Advice.exe",
                                 "DHL_Delivery_Note.exe", "Scan_0302_signed.exe")),
        t_scan=at(0.18), t_dump=at(0.22, 0.005), t_probe=at(0.25, 0.005), probe_targets=[],
        hops=[], t_harvest=0, harvest_host=p0, stage_host=p0, t_stage=at(0.74),
        t_exfil_http=at(0.77, 0.005), t_exfil_dns=at(0.82, 0.005),
        archive_name=f"{rng.choice(('bkp', 'arc', 'data', 'tmp'))}_{rng.randrange(1000, 9999)}.zip",
        dns_file_name=rng.choice(("accounts_export.csv", "ad_users_dump.csv")),
        dns_encoding=rng.choice(("base32", "hex")),
    )
    pl.compromised[p0.name] = (t_exec, "phishing" if "phishing" in parts else "initial_access")
    pl.accounts[p0_user.account] = (t_exec, f"session of patient zero's user on {p0.name}")
    if "credentials" in parts:
        pl.accounts["adm-mkoch"] = (pl.t_dump, f"LSASS dump on {p0.name} (helpdesk logon)")
    else:
        pl.accounts["adm-mkoch"] = (pl.t_dump, f"credentials taken on {p0.name}")

    hops_cfg = [h for h in w.profile.hops if h[0] in parts]
    n = max(1, len(hops_cfg) - 1)
    for i, (tech, src_r, dst_r, acct_r) in enumerate(hops_cfg):
        t = s + int(d * (0.30 + 0.38 * i / n)) + rng.randrange(-60_000_000, 60_000_000)
        dst = roles[dst_r]
        src = roles[src_r]
        if src.name not in pl.compromised or pl.compromised[src.name][0] > t:
            src = p0
        if dst.name in pl.compromised:
            continue
        acct = accounts[acct_r]
        if acct_r == "service" and "service" not in pl.accounts:
            # The service account must be stolen first: on FS01 if it fell, else on patient zero.
            host = w.host("FS01") if "FS01" in pl.compromised else p0
            pl.t_harvest = max(pl.compromised[host.name][0], pl.t_dump) + int(0.02 * d)
            pl.harvest_host = host
            pl.accounts["svc_backup"] = (pl.t_harvest, f"LSASS dump on {host.name}")
            t = max(t, pl.t_harvest + int(0.01 * d))
        hop = Hop(tech, src, dst, acct, t)
        if tech == "psexec":
            hop.service = _rand_name(rng, 4)
            hop.exe = _rand_name(rng, 8) + ".exe"
        if tech == "wmi":
            hop.wmi_port = rng.randrange(49664, 49700)
        pl.hops.append(hop)
        pl.compromised[dst.name] = (t, tech)
    if "FS01" in pl.compromised:
        pl.stage_host = w.host("FS01")
    pl.t_stage = max(pl.t_stage, pl.compromised[pl.stage_host.name][0] + 60_000_000)
    pl.t_exfil_http = max(pl.t_exfil_http, pl.t_stage + 90_000_000)
    pl.t_exfil_dns = max(pl.t_exfil_dns, pl.t_exfil_http + 60_000_000)
    used = {p0.name, "WS01"} | {h.dst.name for h in pl.hops}
    pl.probe_targets = [h for h in ws if h.name == "WS01" or h.name not in used][:3]
    return pl


def schedule(w: World, pl: Plan) -> None:
    """Queue every step of the plan in the world (rendered by :mod:`attack`)."""
    from forensics.scenario import attack

    rng = w.stream("story")
    w.at(pl.t_helpdesk, lambda t: attack.helpdesk(w, pl, t))
    w.at(pl.t_download, lambda t: attack.initial_access(w, pl, t))
    if "scan" in pl.parts:
        w.at(pl.t_scan, lambda t: attack.scan(w, pl, t))
    if "credentials" in pl.parts:
        w.at(pl.t_dump, lambda t: attack.dump(w, pl, t, pl.p0, "adm-mkoch"))
        w.at(pl.t_probe, lambda t: attack.probe(w, pl, t))
    if pl.t_harvest:
        w.at(pl.t_harvest, lambda t: attack.dump(w, pl, t, pl.harvest_host, "svc_backup"))
    for hop in pl.hops:
        w.at(hop.t, functools.partial(_hop, w, pl, hop))
    if "staging" in pl.parts:
        w.at(pl.t_stage, lambda t: attack.stage(w, pl, t))
    if "exfil_http" in pl.parts:
        w.at(pl.t_exfil_http, lambda t: attack.exfil_http(w, pl, t))
    if "exfil_dns" in pl.parts:
        w.at(pl.t_exfil_dns, lambda t: attack.exfil_dns(w, pl, t))
    del rng
