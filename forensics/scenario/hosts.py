"""The company: hosts, users, addresses, the internet sites they use and the attacker's kit.

ACME is a small firm: workstations in 10.10.10.0/24, servers (domain controller,
file server, Linux ERP server) in 10.10.20.0/24 and the internet gateway (web
proxy and mail relay) in 10.10.0.0/24. Internet names use Microsoft's
fictitious company domains for benign sites and invented names for the
attacker; internet addresses are public-looking, fixed per seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from forensics.scenario.network import Node

__all__ = ["Company", "Host", "Infra", "User", "build_company"]

DOMAIN = "acme.local"
NETBIOS = "ACME"
MAIL_DOMAIN = "acme-corp.example"
DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"

_PEOPLE = (
    ("aberg", "Anna Berg", "Finance"), ("bhall", "Ben Hall", "Sales"),
    ("cdiaz", "Carla Diaz", "Finance"), ("dng", "David Ng", "Logistics"),
    ("elund", "Eva Lund", "HR"), ("fkhan", "Farid Khan", "Sales"),
    ("grossi", "Gina Rossi", "Purchasing"), ("hmeyer", "Hugo Meyer", "Logistics"),
    ("ijansen", "Ida Jansen", "Management"), ("jdoe", "Jonas Doe", "Finance"),
)
_SITES = ("contoso.com", "fabrikam.com", "northwindtraders.com", "adventure-works.com",
          "wingtiptoys.com", "tailspintoys.com", "litwareinc.com", "proseware.com",
          "woodgrovebank.com", "fourthcoffee.com", "alpineskihouse.com", "treyresearch.net",
          "lucernepublishing.com", "margiestravel.com", "wideworldimporters.com")
_SUBS = ("www", "cdn", "login", "api", "static", "portal", "news", "docs")
_PUBLIC = (13, 20, 23, 31, 34, 40, 51, 52, 62, 80, 87, 104, 142, 151, 152, 157, 172, 176, 199)
_BAD_WORDS = ("cloud", "sync", "metrics", "cdn", "update", "telemetry", "edge", "static",
              "secure", "portal", "share", "files", "azure", "office", "doc", "invoice")
_BAD_TLDS = ("net", "com", "top", "xyz", "info", "online")


@dataclass
class User:
    """A domain account and the person behind it."""

    account: str
    name: str
    department: str
    rid: int
    admin: bool = False
    workstation: str = ""
    fixed_sid: str = ""

    @property
    def sid(self) -> str:
        """The account's SID in the ACME domain (or a well-known SID such as SYSTEM's)."""
        return self.fixed_sid or f"{DOMAIN_SID}-{self.rid}"

    @property
    def email(self) -> str:
        """The mail address (``first.last@acme-corp.example``)."""
        return self.name.lower().replace(" ", ".") + "@" + MAIL_DOMAIN


@dataclass
class Host:
    """A company host with its inventory data."""

    name: str
    role: str
    os: str
    node: Node
    owner: str
    business_process: str
    damage_level: int
    value_eur: int
    user: User | None = None

    @property
    def ip(self) -> str:
        """IPv4 address."""
        return self.node.ip

    @property
    def fqdn(self) -> str:
        """Fully qualified name in the AD domain."""
        return f"{self.name.lower()}.{DOMAIN}"

    @property
    def windows(self) -> bool:
        """True for Windows hosts (they write Windows event logs)."""
        return self.os.startswith("Windows")


@dataclass
class Infra:
    """The attacker's internet infrastructure."""

    phish_domain: str
    phish_ip: str
    c2_domain: str
    c2_ip: str
    exfil_domain: str
    exfil_ip: str
    dns_domain: str
    nodes: dict[str, Node] = field(default_factory=dict)


@dataclass
class Company:
    """Everything about the network that does not change during the story."""

    hosts: dict[str, Host]
    users: dict[str, User]
    sites: list[tuple[str, str, str]]  # (name, ip, kind: tls|http)
    infra: Infra
    resolver: Node
    internet: dict[str, Node]
    admin: User
    service: User

    def host(self, name: str) -> Host:
        """A host by name."""
        return self.hosts[name]

    def by_ip(self, ip: str) -> Host | None:
        """The company host with this address, if any."""
        for h in self.hosts.values():
            if h.ip == ip:
                return h
        return None

    @property
    def workstations(self) -> list[Host]:
        """Workstations in name order."""
        return [h for h in self.hosts.values() if h.role == "workstation"]

    def inet(self, ip: str) -> Node:
        """The internet node for an address (created on first use)."""
        return self.internet[ip]


def _mac(i: int) -> bytes:
    return bytes([0x00, 0x50, 0x56, 0xA1, (i >> 8) & 0xFF, i & 0xFF])


def _public_ip(rng: random.Random, used: set[str]) -> str:
    while True:
        ip = f"{rng.choice(_PUBLIC)}.{rng.randrange(1, 255)}.{rng.randrange(0, 255)}.{rng.randrange(2, 254)}"
        if ip not in used:
            used.add(ip)
            return ip


def _inet_node(name: str, ip: str, rng: random.Random) -> Node:
    linux = rng.random() < 0.7
    hops = rng.randrange(8, 20)
    return Node(name, ip, ttl=(64 if linux else 128) - hops, delay_us=rng.randrange(6_000, 45_000),
                bw=rng.choice((2.5, 4.0, 6.0)), internal=False, linux=linux)


def _bad_name(rng: random.Random, extra: str = "") -> str:
    a, b = rng.sample(_BAD_WORDS, 2)
    return f"{a}-{b}{extra}.{rng.choice(_BAD_TLDS)}"


def build_company(rng: random.Random, n_workstations: int) -> Company:
    """Create the company network for one scenario.

    Args:
        rng: the scenario's "company" random stream.
        n_workstations: how many workstations (WS01 is the IT admin's).

    Returns:
        The :class:`Company`.
    """
    people = list(_PEOPLE)
    rng.shuffle(people)
    users: dict[str, User] = {}
    admin = User("mkoch", "Martin Koch", "IT", 1105)
    users[admin.account] = admin
    users["adm-mkoch"] = User("adm-mkoch", "Martin Koch (admin)", "IT", 1106, admin=True)
    service = User("svc_backup", "Backup Service", "IT", 1107, admin=True)
    users[service.account] = service
    hosts: dict[str, Host] = {}
    for i in range(n_workstations):
        name = f"WS{i + 1:02d}"
        ip = f"10.10.10.{11 + i}"
        node = Node(name, ip, _mac(0x100 + i), 128, rng.randrange(60, 160), 100.0)
        if i == 0:
            u = admin
            dl, proc, val = 3, "IT administration", 4_000
        else:
            acct, full, dept = people[i - 1]
            u = User(acct, full, dept, 1110 + i)
            users[acct] = u
            dl = 3 if dept in ("Finance", "HR", "Management") else 2
            proc, val = f"{dept} office work", 2_500
        u.workstation = name
        hosts[name] = Host(name, "workstation", "Windows 10 Enterprise 22H2", node, u.name, proc,
                           dl, val, u)
    srv = (
        ("DC01", "domain_controller", "Windows Server 2019", "10.10.20.10", 5, 60_000,
         "Identity and access (Active Directory, DNS)"),
        ("FS01", "file_server", "Windows Server 2019", "10.10.20.20", 4, 45_000,
         "File shares: Finance, HR, Projects"),
        ("LNX01", "linux_server", "Debian 12", "10.10.20.30", 4, 50_000,
         "ERP application and database"),
        ("GW01", "gateway", "Debian 12", "10.10.0.1", 3, 15_000,
         "Internet access: web proxy and mail relay"),
    )
    for j, (name, role, os_, ip, dl, val, proc) in enumerate(srv):
        linux = os_.startswith("Debian")
        node = Node(name, ip, _mac(0x200 + j), 64 if linux else 128, rng.randrange(40, 90), 120.0,
                    linux=linux)
        hosts[name] = Host(name, role, os_, node, "IT (Martin Koch)", proc, dl, val)

    used: set[str] = set()
    internet: dict[str, Node] = {}
    sites = []
    for dom in _SITES:
        for sub in rng.sample(_SUBS, 2):
            name = f"{sub}.{dom}"
            ip = _public_ip(rng, used)
            kind = "http" if sub in ("news", "static") and rng.random() < 0.7 else "tls"
            sites.append((name, ip, kind))
            internet[ip] = _inet_node(name, ip, rng)
    resolver = Node("resolver", "9.9.9.9", ttl=57, delay_us=4_000, bw=6.0, internal=False)
    internet[resolver.ip] = resolver
    phish = _bad_name(rng, "-" + rng.choice(("docs", "mail", "invoices")))
    c2 = _bad_name(rng)
    while c2.split(".")[0] == phish.split(".")[0]:
        c2 = _bad_name(rng)
    infra = Infra(
        phish_domain="files." + phish, phish_ip=_public_ip(rng, used),
        c2_domain=rng.choice(("api", "cdn", "update", "sync")) + "." + c2,
        c2_ip=_public_ip(rng, used),
        exfil_domain="upload." + _bad_name(rng, "-storage"), exfil_ip=_public_ip(rng, used),
        dns_domain=rng.choice(("ns", "t", "q")) + "." + _bad_name(rng, "-dns"),
    )
    for label, ip in (("phish", infra.phish_ip), ("c2", infra.c2_ip), ("exfil", infra.exfil_ip)):
        node = _inet_node(label, ip, rng)
        internet[ip] = node
        infra.nodes[label] = node
    return Company(hosts, users, sites, infra, resolver, internet, admin, service)
