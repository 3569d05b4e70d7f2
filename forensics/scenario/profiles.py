"""Scenario profiles (size and story) and noise levels.

A profile fixes how many workstations there are, how long the capture runs,
how busy the users are, how big the stolen data is and which lateral hops the
attacker makes. Hops name hosts by role: ``p0`` (patient zero, a random
workstation other than the admin's WS01), ``ws_a``/``ws_b``/``ws_c`` (other
random workstations), or a server name; accounts are ``admin`` (the IT admin's
privileged account) or ``service`` (the backup service account).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NOISE", "PARTS", "PROFILES", "Profile"]

# Story parts that can be switched off with ``generate(..., parts=...)``.
PARTS = ("phishing", "c2", "credentials", "scan", "psexec", "wmi", "rdp", "ssh", "staging",
         "exfil_http", "exfil_dns")

# Background multiplier and extra decoys per noise level.
NOISE = {
    "none": (0.0, False),
    "low": (0.4, False),
    "normal": (1.0, False),
    "high": (2.0, True),
}


@dataclass(frozen=True)
class Profile:
    """Size and story of a scenario.

    Attributes:
        name: profile name.
        workstations: number of workstations (WS01 is the IT admin's).
        duration_s: capture length in seconds (the story scales to it).
        activity: background sessions per workstation-hour at noise ``normal``.
        beacon_s: C2 beacon interval in seconds (jitter ±20 %).
        archive_bytes: approximate size of the archive exfiltrated over HTTP.
        dns_bytes: size of the file exfiltrated over DNS.
        hops: lateral movement as ``(technique, src role, dst role, account role)``.
        impair: probability that a multi-segment message is lost or reordered once.
    """

    name: str
    workstations: int
    duration_s: int
    activity: float
    beacon_s: int
    archive_bytes: int
    dns_bytes: int
    hops: tuple[tuple[str, str, str, str], ...]
    impair: float = 0.03


PROFILES: dict[str, Profile] = {
    "small": Profile(
        "small", workstations=4, duration_s=45 * 60, activity=14.0, beacon_s=30,
        archive_bytes=240_000, dns_bytes=2_400,
        hops=(("psexec", "p0", "FS01", "admin"), ("wmi", "p0", "ws_a", "admin"),
              ("rdp", "FS01", "DC01", "service"), ("ssh", "FS01", "LNX01", "service")),
        impair=0.08),
    "standard": Profile(
        "standard", workstations=6, duration_s=6 * 3600, activity=22.0, beacon_s=60,
        archive_bytes=3_000_000, dns_bytes=12_000,
        hops=(("psexec", "p0", "ws_a", "admin"), ("psexec", "ws_a", "FS01", "admin"),
              ("wmi", "ws_a", "ws_b", "admin"), ("rdp", "FS01", "DC01", "service"),
              ("ssh", "FS01", "LNX01", "service"))),
    "large": Profile(
        "large", workstations=8, duration_s=10 * 3600, activity=30.0, beacon_s=60,
        archive_bytes=16_000_000, dns_bytes=40_000,
        hops=(("psexec", "p0", "ws_a", "admin"), ("psexec", "ws_a", "FS01", "admin"),
              ("wmi", "ws_a", "ws_b", "admin"), ("psexec", "FS01", "ws_c", "admin"),
              ("rdp", "FS01", "DC01", "service"), ("ssh", "FS01", "LNX01", "service"))),
}
