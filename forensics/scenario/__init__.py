"""Training scenarios: a deterministic synthetic breach of a small company, with its answer key.

Generate one::

    from forensics.scenario import generate
    key = generate("out/acme", seed=7, profile="standard", noise="normal")
    key["patient_zero"], key["lateral_chain"], key["exfiltration"]

The output folder holds the evidence in real formats and the key::

    evidence/capture.pcap          one pcap of the whole day (Ethernet, µs, little-endian)
    evidence/windows_events.json   NXLog JSON lines of every Windows host (Security, System, Sysmon)
    evidence/lnx01_auth.log        LNX01's auth.log (RFC 3164, sshd/sudo/cron)
    evidence/gw01_access.log       GW01's web proxy log (Apache combined)
    inventory.csv                  asset inventory with damage levels 1-5
    answer_key.json                the answers (also returned), with a manifest of the files

The same seed, profile, noise and parts give byte-identical files. Nothing in
the evidence is real malware: the "dropper" and the service binaries are inert
PE stubs carrying a marker string that ``data/rules/breachbook-training.yar``
detects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forensics.scenario.profiles import NOISE, PARTS, PROFILES, Profile

__all__ = ["NOISE", "PARTS", "PROFILES", "Profile", "generate", "start_time"]

_BASE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday, 08:00 UTC


def start_time(seed: int) -> datetime:
    """Capture start for a seed: a weekday at 08:00 UTC in March 2026 (Mon 2 to Fri 27)."""
    k = (seed - 1) % 20
    days = 7 * (k // 5) + k % 5
    return _BASE.replace(day=_BASE.day + days)


def generate(out_dir: str | Path, *, seed: int = 1, profile: str = "standard", noise: str = "normal",
             parts: Iterable[str] | None = None) -> dict[str, Any]:
    """Generate a breach scenario: evidence files plus the answer key.

    Args:
        out_dir: folder to write into (created; existing scenario files are overwritten).
        seed: scenario seed; picks patient zero, the other victims, names, addresses,
            times and every byte of content.
        profile: ``small`` (4 workstations, 45 minutes; seconds to generate),
            ``standard`` (6 workstations, 6 hours) or ``large`` (8 workstations, 10 hours).
        noise: background volume and decoys: ``none``, ``low``, ``normal`` or ``high``.
        parts: story parts to include (default: all of :data:`PARTS`): ``phishing``,
            ``c2``, ``credentials``, ``scan``, ``psexec``, ``wmi``, ``rdp``, ``ssh``,
            ``staging``, ``exfil_http``, ``exfil_dns``.

    Returns:
        The answer key (also written to ``out_dir/answer_key.json``).

    Raises:
        ValueError: unknown profile, noise level or story part.
    """
    from forensics.scenario import background, story
    from forensics.scenario.answer_key import build, manifest_entry
    from forensics.scenario.textlogs import write_inventory, write_lines
    from forensics.scenario.world import World

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if noise not in NOISE:
        raise ValueError(f"unknown noise level {noise!r}; choose one of {', '.join(NOISE)}")
    chosen = frozenset(PARTS if parts is None else parts)
    bad = sorted(chosen - set(PARTS))
    if bad:
        raise ValueError(f"unknown story part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    start = int(start_time(seed).timestamp()) * 1_000_000
    w = World(seed, PROFILES[profile], noise, start)
    facts = background.setup(w)
    pl = story.plan(w, chosen)
    story.schedule(w, pl)
    w.run()

    out = Path(out_dir)
    ev = out / "evidence"
    ev.mkdir(parents=True, exist_ok=True)
    pcap = ev / "capture.pcap"
    n_frames = w.capture.write(pcap)
    winlog = ev / "windows_events.json"
    n_win = w.win.write(winlog)
    auth = ev / "lnx01_auth.log"
    n_auth = write_lines(auth, w.auth_log)
    access = ev / "gw01_access.log"
    n_access = write_lines(access, w.proxy_log)
    inv = out / "inventory.csv"
    n_inv = write_inventory(inv, w.company)
    manifest = [
        manifest_entry(out, pcap, "capture", "pcap",
                       "Full-day capture from a SPAN port on the core switch (Ethernet, "
                       "microsecond timestamps, little-endian classic pcap).", n_frames),
        manifest_entry(out, winlog, "windows_events", "nxlog_json",
                       "Windows event logs of all Windows hosts as NXLog JSON lines (Security, "
                       "System, Sysmon), shaped like the Security-Datasets host logs.", n_win),
        manifest_entry(out, auth, "auth_log", "syslog_rfc3164",
                       "auth.log of the Linux ERP server (sshd, sudo, cron); year-less RFC 3164 "
                       "timestamps in UTC.", n_auth, "LNX01"),
        manifest_entry(out, access, "proxy_log", "apache_combined",
                       "Access log of the transparent web proxy on the internet gateway (Apache "
                       "combined format; CONNECT lines for TLS).", n_access, "GW01"),
        manifest_entry(out, inv, "inventory", "csv",
                       "Asset inventory: host, address, owner, business process, damage level "
                       "1-5 and value in EUR.", n_inv),
    ]
    key = build(w, pl, manifest, facts)
    (out / "answer_key.json").write_text(json.dumps(key, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    return key
