"""The simulation state shared by background and attack: time, randomness, DNS, logs, facts.

Activities are scheduled with :meth:`World.at` and run in time order by
:meth:`World.run`, so stateful parts (DNS caches, ephemeral ports) see the
same history the capture shows. Each part of the story draws from its own
named random stream (:meth:`World.stream`), so switching one part off does not
change the bytes of the others.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from forensics.scenario import protocols as P
from forensics.scenario.hosts import DOMAIN, Company, Host, User, build_company
from forensics.scenario.network import Capture, Net, Node
from forensics.scenario.profiles import Profile
from forensics.scenario.winlogs import WinLog

__all__ = ["Auth", "World", "iso"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def iso(t_us: int) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (the answer key's time format)."""
    d = datetime.fromtimestamp(t_us // 1_000_000, UTC).replace(microsecond=t_us % 1_000_000)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Auth:
    """A network authentication the story produced (for the risk register)."""

    t: int
    src_ip: str
    dst: str
    account: str
    success: bool
    via: str


class World:
    """Everything one generation run accumulates."""

    def __init__(self, seed: int, profile: Profile, noise: str, start_us: int):
        self.seed, self.profile, self.noise = seed, profile, noise
        self.start = start_us
        self.end = start_us + profile.duration_s * 1_000_000
        self.company: Company = build_company(self.stream("company"), profile.workstations)
        self.capture = Capture()
        self.net = Net(self.capture, self.stream("net"))
        self.win = WinLog(self.stream("winlog"))
        self.auth_log: list[tuple[int, int, str]] = []
        self.proxy_log: list[tuple[int, int, str]] = []
        self.auths: list[Auth] = []
        # Interactive session per host: user, logon id, explorer.exe as a Sysmon parent.
        self.sessions: dict[str, tuple[User, str, tuple[int, str, str, str]]] = {}
        self._queue: list[tuple[int, int, Callable[[int], object]]] = []
        self._seq = 0
        self._host_cache: dict[tuple[str, str], int] = {}
        self._dc_cache: dict[str, int] = {}
        self.zone: dict[str, tuple[str, int]] = {}
        c = self.company
        for h in c.hosts.values():
            self.zone[h.fqdn] = (h.ip, 1200)
        for name, ip, _ in c.sites:
            self.zone[name] = (ip, 300)
        inf = c.infra
        self.zone[inf.phish_domain] = (inf.phish_ip, 600)
        self.zone[inf.c2_domain] = (inf.c2_ip, 300)
        self.zone[inf.exfil_domain] = (inf.exfil_ip, 600)

    # ---- randomness and scheduling --------------------------------------------------

    def stream(self, name: str) -> random.Random:
        """An independent random stream for one part of the scenario."""
        return random.Random(f"breachbook-scenario:{self.seed}:{self.profile.name}:{name}")

    def at(self, t: int, fn: Callable[[int], object]) -> None:
        """Run ``fn(t)`` when the simulation reaches ``t``."""
        heapq.heappush(self._queue, (t, self._seq, fn))
        self._seq += 1

    def run(self) -> None:
        """Run every scheduled activity in time order (activities may schedule more)."""
        while self._queue:
            t, _, fn = heapq.heappop(self._queue)
            fn(t)

    # ---- names ----------------------------------------------------------------------

    def host(self, name: str) -> Host:
        """A company host by name."""
        return self.company.hosts[name]

    def inet(self, ip: str) -> Node:
        """The internet node at ``ip``."""
        return self.company.internet[ip]

    # ---- DNS ------------------------------------------------------------------------

    def _answer(self, name: str) -> tuple[str | None, int]:
        if name in self.zone:
            return self.zone[name]
        if name.endswith("." + self.company.infra.dns_domain):
            return "127.0.0.1", 0  # the attacker's name server acknowledges every chunk
        return None, 300

    def resolve(self, client: Host, name: str, t: int, rng: random.Random) -> tuple[str | None, int]:
        """Look ``name`` up from ``client`` at ``t`` through DC01 (which forwards to 9.9.9.9).

        Uses and fills the client's and the DNS server's caches (RFC 1035 §7.4 TTLs).

        Returns:
            The address (None for NXDOMAIN) and the time the client has the answer.
        """
        ip, ttl = self._answer(name)
        key = (client.ip, name)
        if self._host_cache.get(key, 0) > t:
            return ip, t
        dc = self.host("DC01")
        cn, dn = client.node, dc.node
        qid = rng.getrandbits(16)
        sport = self.net.ephemeral_port(cn)
        query = P.dns_query(qid, name)
        local = name.endswith("." + DOMAIN)
        if client is dc:
            t_resp = self._forward(dc, name, t, rng, ip, ttl)
            self._host_cache[key] = t_resp + ttl * 1_000_000
            return ip, t_resp
        self.net.note_udp(t, cn, dn, sport, 53)
        self.net.udp(t, cn, dn, sport, 53, query)
        t_dc = t + 2 * dn.delay_us + rng.randrange(80, 400)
        if not local and self._dc_cache.get(name, 0) <= t_dc:
            t_dc = self._forward(dc, name, t_dc, rng, ip, ttl)
            self._dc_cache[name] = t_dc + ttl * 1_000_000
        answers = [] if ip is None else [(1, ttl, bytes(int(x) for x in ip.split(".")))]
        self.net.udp(t_dc, dn, cn, 53, sport,
                     P.dns_response(qid, name, 1, answers, rcode=0 if ip else 3, authoritative=local))
        done = t_dc + 2 * cn.delay_us + 50
        if ttl:
            self._host_cache[key] = done + ttl * 1_000_000
        return ip, done

    def _forward(self, dc: Host, name: str, t: int, rng: random.Random, ip: str | None,
                 ttl: int) -> int:
        up = self.company.resolver
        qid = rng.getrandbits(16)
        sport = rng.randrange(49152, 65535)  # the Windows DNS server randomises its ports
        self.net.note_udp(t, dc.node, up, sport, 53)
        self.net.udp(t, dc.node, up, sport, 53, P.dns_query(qid, name))
        t2 = t + 2 * up.delay_us + rng.randrange(500, 40_000)
        answers = [] if ip is None else [(1, ttl, bytes(int(x) for x in ip.split(".")))]
        self.net.udp(t2, up, dc.node, 53, sport, P.dns_response(qid, name, 1, answers,
                                                               rcode=0 if ip else 3))
        return t2 + 2 * dc.node.delay_us + rng.randrange(40, 200)

    # ---- text logs ------------------------------------------------------------------

    def syslog(self, t: int, prog: str, pid: int | None, msg: str) -> None:
        """One RFC 3164 line of LNX01's auth.log (year-less local time = UTC)."""
        d = datetime.fromtimestamp(t // 1_000_000, UTC)
        tag = f"{prog}[{pid}]" if pid is not None else prog
        line = f"{_MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S} lnx01 {tag}: {msg}"
        self.auth_log.append((t, len(self.auth_log), line))

    def proxy(self, t: int, client_ip: str, request: str, status: int, nbytes: int, ua: str,
              referer: str = "-") -> None:
        """One Apache combined-format line of GW01's proxy access log."""
        d = datetime.fromtimestamp(t // 1_000_000, UTC)
        line = (f'{client_ip} - - [{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} +0000] '
                f'"{request}" {status} {nbytes} "{referer}" "{ua}"')
        self.proxy_log.append((t, len(self.proxy_log), line))

    # ---- facts ----------------------------------------------------------------------

    def auth(self, t: int, src_ip: str, dst: Host, account: str, success: bool, via: str) -> None:
        """Remember a network authentication to a company host."""
        self.auths.append(Auth(t, src_ip, dst.name, account, success, via))
