"""Host identity: which names and addresses are the same machine, and when.

Logs name hosts (``WS04.acme.local``, ``WS04$``, ``WORKSTATION6``), captures
give addresses, and one machine may have several names (DNS aliases) and
several addresses over time (DHCP). Everything that lateral movement and scope
say about "a host" goes through :class:`HostMap`, built from what the case
holds:

- the hosts that wrote the logs (``events.host``, ``logons.host``);
- logons that give a workstation name with its address (4624 WorkstationName +
  IpAddress), and logons whose source port matches a captured session (the
  session's responder is then the logging host's address);
- Sysmon network connections (event 3): the logging host's own side of each
  connection is one of its addresses;
- DNS answers (``dns``) for names in the case's own domains, NTLM workstation
  names (``ntlm``), SMB tree paths (``smb_mapping``), RDP client names (``rdp``);
- the asset inventory (``assets``), when loaded.

A host's id is its short name in upper case (``WS04``), or its address when no
name is known. Names learned only from DNS are aliases of the host that owns
the address; two names that hosts logged under are never merged.
"""

from __future__ import annotations

import bisect
import difflib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["INTERNAL_DEFAULT", "HostMap", "build_host_map", "canonical_host", "is_address", "is_internal",
           "normalize_address", "parse_networks"]

INTERNAL_DEFAULT = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
_LOCAL = {"", "-", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "*", ".", "unknown"}
# Bindings learned from these sources name a real machine (never merged with each other).
_PRIMARY = {"log_host", "inventory", "logon", "sysmon", "session_port", "session_time", "ntlm", "rdp",
            "smb_mapping"}


def normalize_address(value: str) -> str | None:
    """An IP address in canonical text (IPv4-mapped IPv6 as IPv4, zone id dropped), else None."""
    v = value.strip().strip("[]")
    if "%" in v:
        v = v.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def is_address(value: Any) -> bool:
    """Whether ``value`` is an IP address (v4 or v6)."""
    return isinstance(value, str) and normalize_address(value) is not None


def canonical_host(value: Any) -> str | None:
    """The canonical form of a host reference; None for empty, local or loopback references.

    Addresses are normalised (:func:`normalize_address`); names lose a UNC
    prefix, a trailing ``$`` (machine account) and their domain, and are upper
    case: ``ws04.acme.local`` -> ``WS04``, ``WORKSTATION6$`` -> ``WORKSTATION6``.
    """
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    v = str(value).strip().strip("\\").strip()
    if v.lower() in _LOCAL:
        return None
    addr = normalize_address(v)
    if addr is not None:
        ip = ipaddress.ip_address(addr)
        return None if ip.is_loopback or ip.is_unspecified else addr
    v = v.split("\\", 1)[0].split("/", 1)[0]
    v = v.rstrip("$").split(".", 1)[0].strip()
    if not v or v.lower() in _LOCAL or " " in v:
        return None
    return v.upper()


def parse_networks(nets: Iterable[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR strings as networks (default: RFC 1918 and RFC 4193).

    Raises:
        ValueError: a CIDR does not parse.
    """
    return [ipaddress.ip_network(n, strict=False) for n in (nets or INTERNAL_DEFAULT)]


def is_internal(addr: Any, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether an address lies in one of ``nets`` (link-local and loopback count as internal)."""
    if not isinstance(addr, str):
        return False
    a = normalize_address(addr)
    if a is None:
        return False
    ip = ipaddress.ip_address(a)
    if ip.is_link_local or ip.is_loopback:
        return True
    return any(ip.version == n.version and ip in n for n in nets)


@dataclass
class _Binding:
    host: str
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    source: str
    n: int = 1


@dataclass
class HostMap:
    """Names and addresses of the case's hosts, and how to resolve a reference to a host id.

    Build one with :func:`build_host_map`. ``resolve("10.10.20.20", ts)`` gives
    the host that held the address at ``ts``; ``resolve("fs01.acme.local")``
    gives ``FS01``.

    Attributes:
        primary: host names that machines logged or were inventoried under.
        aliases: alias name -> host id.
        addresses: address -> bindings (host, first, last, source, count).
        internal_nets: networks counted as internal.
    """

    primary: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, list[_Binding]] = field(default_factory=lambda: defaultdict(list))
    internal_nets: list[Any] = field(default_factory=lambda: parse_networks(None))
    _names_seen: dict[str, list[_Binding]] = field(default_factory=lambda: defaultdict(list))

    # ---- building ----------------------------------------------------------------
    def add_name(self, name: Any, source: str, first: Any = None, last: Any = None, n: int = 1) -> None:
        """Record that a host named ``name`` exists (from ``source``)."""
        h = canonical_host(name)
        if h is None or is_address(h):
            return
        self._names_seen[h].append(_Binding(h, _ts(first), _ts(last), source, int(n)))
        if source in _PRIMARY:
            p = self.primary.setdefault(h, {"sources": set(), "first": None, "last": None})
            p["sources"].add(source)
            p["first"] = _min(p["first"], _ts(first))
            p["last"] = _max(p["last"], _ts(last) or _ts(first))

    def bind(self, name: Any, address: Any, source: str, first: Any = None, last: Any = None,
             n: int = 1) -> None:
        """Record that ``name`` had ``address`` between ``first`` and ``last`` (from ``source``)."""
        h = canonical_host(name)
        a = canonical_host(address)
        if h is None or a is None or is_address(h) or not is_address(a):
            return
        self.add_name(h, source, first, last, n)
        self.addresses[a].append(_Binding(h, _ts(first), _ts(last) or _ts(first), source, int(n)))

    def finish(self) -> HostMap:
        """Turn DNS-only names into aliases of the host owning their address; call after building."""
        by_name: dict[str, set[str]] = defaultdict(set)
        for addr, bs in self.addresses.items():
            for b in bs:
                by_name[b.host].add(addr)
        for name in list(self._names_seen):
            if name in self.primary:
                continue
            owners = {b.host for a in by_name.get(name,
                                                  ()) for b in self.addresses[a] if b.host in self.primary}
            if len(owners) == 1:
                self.aliases[name] = next(iter(owners))
            else:  # nothing better known: the alias is a host of its own
                self.primary[name] = {"sources": {b.source for b in self._names_seen[name]},
                                      "first": None, "last": None}
        return self

    # ---- resolving ---------------------------------------------------------------
    def resolve(self, value: Any, ts: Any = None) -> str | None:
        """The host id a name or address refers to (at time ``ts`` for addresses).

        Args:
            value: a name (any case, FQDN, ``NAME$``) or an address.
            ts: when the reference was made; picks the right owner of a reused address.

        Returns:
            The host id, the address itself when no name owns it, or None for
            empty, local and loopback references.
        """
        h = canonical_host(value)
        if h is None:
            return None
        if not is_address(h):
            return self.aliases.get(h, h)
        binds = self.addresses.get(h)
        if not binds:
            return h
        owners = {b.host for b in binds}
        if len(owners) == 1:
            return self.aliases.get(next(iter(owners)), next(iter(owners)))
        t = _ts(ts)
        best = _pick(binds, t)
        return self.aliases.get(best, best)

    def names_of(self, host_id: str) -> list[str]:
        """Names (primary and aliases) of a host."""
        out = [host_id] if host_id in self.primary else []
        return out + sorted(a for a, h in self.aliases.items() if h == host_id)

    def addresses_of(self, host_id: str) -> list[str]:
        """Addresses a host was seen with (its id when the id is an address)."""
        out = sorted({a for a,
                      bs in self.addresses.items() if any(self.resolve(b.host) == host_id for b in bs)})
        if is_address(host_id) and host_id not in out:
            out.append(host_id)
        return out

    def known(self) -> list[str]:
        """Every host id, name and address the map knows."""
        return sorted(set(self.primary) | set(self.aliases) | set(self.addresses))

    def suggest(self, value: str, n: int = 5) -> list[str]:
        """Near matches for a reference that resolves to no known host (for error messages)."""
        pool = self.known()
        key = canonical_host(value) or value
        hits = difflib.get_close_matches(key, pool, n=n, cutoff=0.5)
        sub = [p for p in pool if key.lower() in p.lower() or p.lower() in key.lower()]
        return list(dict.fromkeys(hits + sub))[:n]

    def is_known(self, value: Any) -> bool:
        """Whether the reference names a host the case has seen (by name or address)."""
        h = canonical_host(value)
        return h is not None and (h in self.primary or h in self.aliases or h in self.addresses)

    # ---- tables ------------------------------------------------------------------
    def host_names_frame(self) -> pd.DataFrame:
        """One row per (host, name or address, source): the ``host_names`` table."""
        rows: list[dict[str, Any]] = []
        for name, bs in self._names_seen.items():
            hid = self.resolve(name) or name
            kind = "name" if name in self.primary else "alias"
            for src, grp in _group(bs).items():
                rows.append({"host_id": hid, "value": name, "kind": kind, "first_seen": grp[0],
                             "last_seen": grp[1], "source": src, "observations": grp[2]})
        for addr, bs in self.addresses.items():
            by: dict[tuple[str, str], list[_Binding]] = defaultdict(list)
            for b in bs:
                by[(self.aliases.get(b.host, b.host), b.source)].append(b)
            for (hid, src), members in by.items():
                g = _group(members)[src]
                rows.append({"host_id": hid, "value": addr, "kind": "address", "first_seen": g[0],
                             "last_seen": g[1], "source": src, "observations": g[2]})
        return pd.DataFrame(rows, columns=["host_id", "value", "kind", "first_seen", "last_seen", "source",
                                           "observations"])

    def hosts_frame(self, extra: Iterable[str] = (), inventory: Iterable[str] = ()) -> pd.DataFrame:
        """One row per host: the ``hosts`` table (``extra``: host ids seen only in edges)."""
        hn = self.host_names_frame()
        inv = set(inventory)
        ids = sorted(set(hn["host_id"]) | set(extra))
        rows = []
        for hid in ids:
            sub = hn[hn["host_id"] == hid]
            names = sorted(set(sub.loc[sub["kind"] != "address", "value"]))
            addrs = sorted(set(sub.loc[sub["kind"] == "address",
                                       "value"]) | ({hid} if is_address(hid) else set()))
            srcs = sorted(set(sub["source"]))
            rows.append({
                "host_id": hid, "names": names, "addresses": addrs,
                "first_seen": sub["first_seen"].min() if len(sub) else None,
                "last_seen": sub["last_seen"].max() if len(sub) else None,
                "internal": "log_host" in srcs or any(is_internal(a, self.internal_nets) for a in addrs),
                "in_inventory": hid in inv, "sources": srcs})
        return pd.DataFrame(rows, columns=["host_id", "names", "addresses", "first_seen", "last_seen",
                                           "internal",
                                           "in_inventory", "sources"])


def _ts(v: Any) -> pd.Timestamp | None:
    if v is None:
        return None
    try:
        t = pd.Timestamp(v)
    except (TypeError, ValueError):
        return None
    if pd.isna(t):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _min(a: pd.Timestamp | None, b: pd.Timestamp | None) -> pd.Timestamp | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: pd.Timestamp | None, b: pd.Timestamp | None) -> pd.Timestamp | None:
    return b if a is None else a if b is None else max(a, b)


def _group(bs: list[_Binding]) -> dict[str, tuple[Any, Any, int]]:
    out: dict[str, tuple[Any, Any, int]] = {}
    for b in bs:
        f, last, n = out.get(b.source, (None, None, 0))
        out[b.source] = (_min(f, b.first), _max(last, b.last or b.first), n + b.n)
    return out


def _pick(binds: list[_Binding], t: pd.Timestamp | None) -> str:
    """The owner of a reused address at time t.

    An observed binding covering t, else the inventory, else the nearest
    observation in time, else the most observed.
    """
    timed = [b for b in binds if b.first is not None]
    if t is not None:
        cover = [b for b in timed if b.first <= t <= (b.last or b.first)]
        if cover:
            return max(cover, key=lambda b: b.n).host
    inv = [b for b in binds if b.source == "inventory"]
    if inv:
        return inv[0].host
    if t is not None and timed:
        starts = sorted(timed, key=lambda b: b.first)  # type: ignore[arg-type,return-value]
        i = bisect.bisect_left([b.first for b in starts], t)
        near = [b for b in starts[max(0, i - 1): i + 1]]

        def dist(b: _Binding) -> float:
            assert b.first is not None
            lo, hi = b.first, b.last or b.first
            return 0.0 if lo <= t <= hi else min(abs((t - lo).total_seconds()), abs((t - hi).total_seconds()))

        return min(near, key=dist).host
    return max(binds, key=lambda b: b.n).host


def build_host_map(case: Case, internal: Iterable[str] | None = None) -> HostMap:
    """Build the host map from everything the case holds (see the module docstring).

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193).

    Returns:
        The :class:`HostMap`.
    """
    from forensics import _lateral_sql as q

    hm = HostMap(internal_nets=parse_networks(internal))
    for r in q.log_hosts(case).itertuples():
        hm.add_name(r.host, "log_host", r.first, r.last, r.n)
    for r in q.inventory_bindings(case).itertuples():
        if r.host and r.address:
            hm.bind(r.host, r.address, "inventory", n=1)
        elif r.host:
            hm.add_name(r.host, "inventory")
    for source, df in q.binding_queries(case):
        for r in df.itertuples():
            hm.bind(r.name, r.address, source, r.first, r.last, r.n)
    domains = q.case_domains(case)
    for r in q.dns_bindings(case).itertuples():
        qname = str(r.name).lower().rstrip(".")
        local = "." not in qname or any(qname.endswith("." + d) for d in domains)
        if local or is_internal(r.address, hm.internal_nets):
            hm.bind(r.name, r.address, "dns", r.first, r.last, r.n)
    return hm.finish()
