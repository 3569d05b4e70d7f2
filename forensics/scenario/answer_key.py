"""The answer key: what a perfect investigation of the generated evidence concludes.

Everything in it is derived from what the generator actually wrote (flows,
authentications, files), not restated from the plan, so the key and the
evidence cannot disagree. Times are ISO 8601 UTC strings with milliseconds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from forensics.scenario.hosts import DOMAIN, MAIL_DOMAIN, NETBIOS
from forensics.scenario.story import Plan
from forensics.scenario.world import World, iso

__all__ = ["FORMAT", "build", "manifest_entry", "risk_register"]

FORMAT = "breachbook-scenario-key/1"
RULES = "data/rules/breachbook-training.yar"
PROBABILITY = ("5 compromised (attacker code ran there); 4 a compromised account authenticated "
               "successfully to it from a compromised host after both were compromised; 3 a "
               "compromised host opened a connection (TCP SYN or UDP) to it after its own "
               "compromise; 1 otherwise. risk = damage_level * probability_level")


def manifest_entry(out: Path, path: Path, kind: str, fmt: str, description: str, records: int,
                   host: str | None = None) -> dict[str, Any]:
    """One manifest row: relative path, what it is, its SHA-256, size and record count."""
    data = path.read_bytes()
    return {"path": path.relative_to(out).as_posix(), "kind": kind, "format": fmt, "host": host,
            "description": description, "records": records, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _times(d: dict[str, Any]) -> dict[str, Any]:
    """Turn µs integers under time-like keys into ISO strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, int) and not isinstance(v, bool) and k in (
                "time", "first", "last", "t", "logon", "end", "service_started"):
            out[k] = iso(v)
        elif isinstance(v, dict):
            out[k] = _times(v)
        else:
            out[k] = v
    return out


def risk_register(w: World, pl: Plan) -> list[dict[str, Any]]:
    """Expected risk-register rows, one per inventory host.

    Probability levels: 5 compromised (attacker code ran there); 4 a compromised
    account authenticated successfully to it from a compromised host after both
    were compromised; 3 a compromised host opened a connection (TCP SYN or UDP)
    to it after its own compromise; 1 otherwise. ``risk = damage * probability``.
    """
    c = w.company
    comp = {name: t for name, (t, _) in pl.compromised.items()}
    comp_ip = {c.hosts[n].ip: t for n, t in comp.items()}
    accts = {a: t for a, (t, _) in pl.accounts.items()}
    rows = []
    for h in sorted(c.hosts.values(), key=lambda x: tuple(int(p) for p in x.ip.split("."))):
        if h.name in comp:
            prob, why = 5, f"compromised ({pl.compromised[h.name][1]})"
        else:
            creds = sorted((a for a in w.auths if a.success and a.dst == h.name and a.account in accts
                            and a.src_ip in comp_ip and a.t >= max(accts[a.account], comp_ip[a.src_ip])),
                           key=lambda a: a.t)
            contact = sorted((f for f in w.net.flows if f.src in comp_ip and f.dst == h.ip
                              and f.t >= comp_ip[f.src]), key=lambda f: f.t)
            if creds:
                a = creds[0]
                prob, why = 4, f"valid credentials used: {a.account} from {a.src_ip} ({a.via}) at {iso(a.t)}"
            elif contact:
                f = contact[0]
                prob, why = 3, f"network contact only: {f.src} -> {f.dst}:{f.dport}/{f.proto} at {iso(f.t)}"
            else:
                prob, why = 1, "no contact from compromised hosts"
        rows.append({"host": h.name, "address": h.ip, "damage_level": h.damage_level,
                     "probability_level": prob, "risk": h.damage_level * prob,
                     "value_eur": h.value_eur, "reason": why})
    return rows


def build(w: World, pl: Plan, manifest: list[dict[str, Any]], background: dict[str, Any]) -> dict[str, Any]:
    """Assemble the answer key."""
    c = w.company
    inf = c.infra
    for hop in pl.hops:  # a host counts as compromised from the first packet of its hop
        if "t" in hop.result:
            pl.compromised[hop.dst.name] = (hop.result["t"], hop.technique)
    dropper = next((f for f in pl.files if f["role"] == "dropper"), None)
    chain = []
    for i, hop in enumerate(sorted(pl.hops, key=lambda h: h.result.get("t", h.t)), 1):
        r = hop.result
        row = {"step": i, "src": hop.src.name, "src_ip": hop.src.ip, "dst": hop.dst.name,
               "dst_ip": hop.dst.ip, "technique": hop.technique, "account": hop.account.account,
               "domain": NETBIOS if hop.technique != "ssh" else None,
               "time": iso(r.get("t", hop.t)), "logon_time": iso(r["logon"]) if "logon" in r else None,
               "dst_port": r.get("dport"), "src_port": r.get("sport")}
        if hop.technique == "psexec":
            row.update(service_name=hop.service, service_binary=hop.exe,
                       image_path=f"%systemroot%\\{hop.exe}", service_started=iso(r["service_started"]))
        if hop.technique == "wmi":
            row.update(dynamic_port=hop.wmi_port, dynamic_src_port=r["dynamic_sport"],
                       commands=r["commands"])
        if hop.technique == "ssh":
            row.update(failed_accounts=r["failed_accounts"])
        chain.append(row)
    exfil = {k: _times(v) for k, v in pl.exfil.items() if not k.startswith("_")}
    total = sum(v.get("bytes", v.get("bytes_encoded", 0)) for k, v in exfil.items()
                if k in ("http_post", "dns"))
    exfil["total_bytes"] = total
    c2 = _times({**pl.c2, "channels": sorted(pl.c2.get("channels", {}).values(), key=lambda x: x["first"])}) \
        if pl.c2 else None
    if c2:
        c2["channels"] = [_times(ch) for ch in c2["channels"]]
    first_hop = min((h.t for h in pl.hops), default=w.end)
    probes = sorted((a for a in w.auths if a.via == "smb" and a.src_ip == pl.p0.ip
                     and pl.t_probe - 1 <= a.t < first_hop
                     and a.account in ("administrator", "adm-mkoch")), key=lambda a: a.t)
    return {
        "format": FORMAT,
        "seed": w.seed, "profile": w.profile.name, "noise": w.noise, "parts": sorted(pl.parts),
        "start": iso(w.start), "end": iso(w.end),
        "company": {
            "name": "ACME", "netbios_domain": NETBIOS, "dns_domain": DOMAIN, "mail_domain": MAIL_DOMAIN,
            "subnets": ["10.10.0.0/24", "10.10.10.0/24", "10.10.20.0/24"],
            "dns_server": w.host("DC01").ip, "upstream_resolver": c.resolver.ip,
            "hosts": [{"host": h.name, "ip": h.ip, "mac": h.node.mac.hex(":"), "role": h.role,
                       "os": h.os, "fqdn": h.fqdn, "user": h.user.account if h.user else None}
                      for h in c.hosts.values()],
            "users": [{"account": u.account, "name": u.name, "department": u.department,
                       "workstation": u.workstation or None, "admin": u.admin} for u in c.users.values()],
        },
        "attacker": {"phishing_domain": inf.phish_domain, "phishing_ip": inf.phish_ip,
                     "c2_domain": inf.c2_domain, "c2_ip": inf.c2_ip, "exfil_domain": inf.exfil_domain,
                     "exfil_ip": inf.exfil_ip, "dns_exfil_domain": inf.dns_domain},
        "manifest": manifest,
        "patient_zero": {
            "host": pl.p0.name, "ip": pl.p0.ip, "account": pl.p0_user.account, "domain": NETBIOS,
            "time": iso(dropper["time"]) if dropper else iso(pl.t_exec),
            "download_time": iso(dropper["time"]) if dropper and dropper["protocol"] == "http" else None,
            "execution_time": iso(pl.t_exec), "dropper": pl.dropper_name,
            "url": dropper.get("url") if dropper else None,
        },
        "lateral_chain": chain,
        "compromised_hosts": [{"host": n, "ip": c.hosts[n].ip, "time": iso(t), "via": how}
                              for n, (t, how) in sorted(pl.compromised.items(), key=lambda x: x[1][0])],
        "compromised_accounts": [{"account": a, "domain": NETBIOS, "time": iso(t), "how": how}
                                 for a, (t, how) in sorted(pl.accounts.items(), key=lambda x: x[1][0])],
        "files": [_times(f) for f in sorted(pl.files, key=lambda f: f["time"])],
        "yara_rule_file": RULES,
        "dropper_yara_rule": dropper["yara"][0] if dropper and dropper["yara"] else None,
        "exfiltration": exfil,
        "c2": c2,
        "scan": _times(pl.exfil["_scan"]) if "_scan" in pl.exfil else None,
        "credential_use": [{"time": iso(a.t), "src_ip": a.src_ip, "dst": a.dst, "account": a.account,
                            "success": a.success, "protocol": "smb2"} for a in probes],
        "risk_register": risk_register(w, pl),
        "tcp_without_syn": [],
        "background": _times(background) if background else {},
        "conventions": {
            "times": "ISO 8601 UTC with milliseconds; hosts log in UTC",
            "lateral_time": "capture time of the SYN of the hop's first connection",
            "exfil_http_bytes": "HTTP POST body bytes (Content-Length), once per upload",
            "exfil_dns_bytes": "payload bytes carried in query names (decoded), each chunk once; "
                               "queries go through DC01, which forwards them to the upstream resolver",
            "probability_levels": PROBABILITY,
        },
    }
