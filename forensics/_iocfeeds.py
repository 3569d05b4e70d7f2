"""Reading threat-intelligence feeds into normalised indicators (private to :mod:`forensics.ioc`).

Formats: plain lists (one indicator per line, hosts-file lines too), CSV with
a header naming the columns, STIX 2.1 bundles (indicators with STIX patterns)
and MISP JSON events (attributes and object attributes). Every value is
normalised so that matching is a plain comparison: addresses in canonical
form, networks with host bits cleared, names lower-case without a trailing
dot, hashes lower-case, URLs with lower-case scheme and host and no default
port or fragment. Defanged values (``hxxp``, ``[.]``) are refanged.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Indicator", "Parsed", "classify", "parse", "url_key"]

TYPES = ("ip", "cidr", "domain", "url", "md5", "sha1", "sha256", "ja3")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z][a-z0-9-]{0,62}$")
_HASH_LEN = {32: "md5", 40: "sha1", 64: "sha256"}
_US = timedelta(microseconds=1)


@dataclass
class Indicator:
    """One normalised indicator."""

    type: str
    value: str
    raw: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    labels: list[str] = field(default_factory=list)
    description: str | None = None
    ref: str | None = None
    to_ids: bool | None = None


@dataclass
class Parsed:
    """A feed read: its format, version, description, indicators and what was skipped."""

    format: str
    version: str | None = None
    description: str | None = None
    indicators: list[Indicator] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def _refang(s: str) -> str:
    s = s.strip().strip("\"'")
    s = re.sub(r"^hxxp", "http", s, flags=re.IGNORECASE)
    for a, b in (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[:]", ":"), ("[://]", "://"), ("[dot]", ".")):
        s = s.replace(a, b)
    return s


def _domain(s: str) -> str | None:
    d = s.strip().rstrip(".").lower()
    d = d.removeprefix("*.")
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return d if _DOMAIN.match(d) else None


def url_key(url: str) -> str | None:
    """A URL without its scheme, as matching compares them: ``host[:port]/path?query``.

    The scheme is left out because the same URL is logged as http by a sensor
    and https by a proxy or web server; default ports (80, 443) are dropped.
    """
    try:
        u = urlsplit(url.strip())
        host = (u.hostname or "").rstrip(".").lower()
        port = u.port
    except ValueError:
        return None
    if not host:
        return None
    scheme = u.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port and not (port == 80 and scheme in ("http", "")) and not (port == 443 and scheme == "https"):
        netloc += f":{port}"
    return netloc + (u.path or "/") + (f"?{u.query}" if u.query else "")


def _url(s: str) -> str | None:
    try:
        u = urlsplit(s.strip())
        host = (u.hostname or "").rstrip(".").lower()
        port = u.port
    except ValueError:
        return None
    if not u.scheme or not host:
        return None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urlunsplit((u.scheme.lower(), netloc, u.path or "/", u.query, ""))


def classify(raw: str, hint: str | None = None) -> tuple[str, str]:
    """Type and normalised value of one indicator.

    Args:
        raw: the value as the feed wrote it (defanged values are accepted).
        hint: the type the feed states (``ip``, ``domain``, ``url``, ``md5``,
            ``sha1``, ``sha256``, ``ja3``, ``cidr``) or None to tell from the value.

    Returns:
        ``(type, value)``.

    Raises:
        ValueError: the value is not an indicator of a supported type.
    """
    s = _refang(raw)
    if not s:
        raise ValueError("empty")
    if hint in (None, "ip", "cidr", "domain"):  # a "host" column may hold addresses
        try:
            if "/" in s:
                net = ipaddress.ip_network(s, strict=False)
                if net.prefixlen == net.max_prefixlen:
                    return "ip", str(net.network_address)
                return "cidr", str(net)
            return "ip", str(ipaddress.ip_address(s))
        except ValueError:
            if hint in ("ip", "cidr"):
                raise ValueError(f"not an address or network: {raw!r}") from None
    if hint in ("md5", "sha1", "sha256", "ja3") or (hint is None and _HEX.match(s) and len(s) in _HASH_LEN):
        h = s.lower()
        if not _HEX.match(h) or len(h) not in _HASH_LEN:
            raise ValueError(f"not a hash: {raw!r}")
        kind = hint or _HASH_LEN[len(h)]
        if kind != "ja3" and _HASH_LEN[len(h)] != kind:
            raise ValueError(f"{raw!r} is not a {kind} (length {len(h)})")
        if kind == "ja3" and len(h) != 32:
            raise ValueError(f"a JA3 is an MD5 (32 hex digits): {raw!r}")
        return kind, h
    if hint == "url" or (hint is None and "://" in s):
        u = _url(s if "://" in s else f"http://{s}")
        if u is None:
            raise ValueError(f"not a URL: {raw!r}")
        return "url", u
    if hint in (None, "domain"):
        d = _domain(s)
        if d is not None:
            return "domain", d
    raise ValueError(f"not a supported indicator: {raw!r}")


def _time(v: Any) -> datetime | None:
    """A UTC datetime from ISO 8601 text or epoch seconds (as MISP writes them)."""
    if v in (None, ""):
        return None
    try:
        if isinstance(v, (int, float)) or (isinstance(v, str) and v.strip().isdigit()):
            return datetime.fromtimestamp(int(v), UTC)
        t = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# ---- plain lists ------------------------------------------------------------------------

_SINKS = {"0.0.0.0", "127.0.0.1", "::", "::1"}


# Blanks then # or //: a comment after the indicator (a run of blanks tried once, from its start).
_COMMENT = re.compile(r"(?<!\s)\s+(?:#|//)")


def parse_plain(text: str, kind: str | None = None) -> Parsed:
    """One indicator per line; ``#``, ``//`` and ``;`` start comments; hosts-file lines work."""
    out = Parsed("plain")
    for n, line in enumerate(text.splitlines(), 1):
        line = _COMMENT.split(line.strip(), maxsplit=1)[0].strip()
        if not line or line.startswith(("#", "//", ";")):
            continue
        tokens = line.split()
        token = tokens[1] if len(tokens) > 1 and tokens[0] in _SINKS else tokens[0]
        hint = kind
        m = re.match(r"^(ip|cidr|domain|url|md5|sha1|sha256|ja3):(?!//)(.+)$", token, re.IGNORECASE)
        if m and hint is None:
            hint, token = m.group(1).lower(), m.group(2)
        try:
            t, v = classify(token, hint)
        except ValueError:
            out.skipped["malformed or unsupported value"] += 1
            continue
        out.indicators.append(Indicator(t, v, token, ref=f"line {n}"))
    return out


# ---- CSV ---------------------------------------------------------------------------------

_VALUE_COLS = ("indicator", "ioc", "value", "observable", "ioc_value")
_TYPED_COLS = {
    "ip": "ip", "ip_address": "ip", "ipaddress": "ip", "dst_ip": "ip", "src_ip": "ip", "ipv4": "ip",
    "ipv6": "ip", "cidr": "cidr", "network": "cidr", "domain": "domain", "hostname": "domain",
    "host": "domain", "fqdn": "domain", "url": "url", "md5": "md5", "md5_hash": "md5", "sha1": "sha1",
    "sha1_hash": "sha1", "sha256": "sha256", "sha256_hash": "sha256", "ja3": "ja3", "ja3_md5": "ja3",
    "ja3_fingerprint": "ja3",
}
_TYPE_COLS = ("type", "indicator_type", "ioc_type", "kind")
_FROM_COLS = ("valid_from", "validfrom", "valid_since")
_UNTIL_COLS = ("valid_until", "validuntil", "valid_to", "expiration", "expires", "expiry")
_DESC_COLS = ("description", "comment", "threat", "malware", "reason", "listingreason", "title")
_LABEL_COLS = ("tags", "labels", "label", "category")


def type_hint(name: str) -> str | None:
    """A feed's type name (``IPv4``, ``FileHash-SHA256``, ``ip-dst``, ``hostname``) as ours."""
    k = re.sub(r"[^a-z0-9]", "", name.lower())
    if k in ("ip", "ipv4", "ipv6", "ipv4addr", "ipv6addr", "ipdst", "ipsrc", "ipaddress", "address"):
        return "ip"
    if k in ("cidr", "network", "subnet", "ipnetwork"):
        return "cidr"
    if k in ("domain", "hostname", "fqdn", "domainname", "host"):
        return "domain"
    if k in ("url", "uri", "link"):
        return "url"
    for h in ("sha256", "sha1", "md5"):
        if k.endswith(h) and "ja3" not in k:
            return h
    if "ja3" in k and "ja3s" not in k:
        return "ja3"
    return None


def parse_csv(text: str, kind: str | None = None) -> Parsed:
    """CSV with a header; commented header lines (abuse.ch style ``# ja3_md5,...``) count."""
    out = Parsed("csv")
    lines = text.splitlines()
    header: list[str] | None = None
    body_start = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        cells = [c.strip().lstrip("#").strip().lower() for c in next(csv.reader([stripped.lstrip("#")]))]
        known = set(cells) & (set(_VALUE_COLS) | set(_TYPED_COLS) | set(_TYPE_COLS))
        if known:
            header, body_start = cells, i + 1
            if not stripped.startswith("#"):
                break
        elif not stripped.startswith("#"):
            break
    if header is None:
        first = [next(csv.reader([ln]), [""])[0] for ln in lines if ln.strip() and not ln.startswith("#")]
        res = parse_plain("\n".join(first), kind)
        res.format = "csv"
        return res
    col = {name: j for j, name in enumerate(header)}

    def cell(row: list[str], names: tuple[str, ...]) -> str | None:
        for nm in names:
            j = col.get(nm)
            if j is not None and j < len(row) and row[j].strip():
                return row[j].strip()
        return None

    reader = csv.reader(io.StringIO("\n".join(lines[body_start:])))
    for n, row in enumerate(reader, body_start + 1):
        if not row or row[0].lstrip().startswith("#"):
            continue
        pairs: list[tuple[str, str | None]] = []
        generic = cell(row, _VALUE_COLS)
        if generic is not None:
            t = cell(row, _TYPE_COLS)
            pairs.append((generic, type_hint(t) if t else kind))
            if t and type_hint(t) is None:
                out.skipped[f"unsupported type {t}"] += 1
                continue
        else:
            for name, j in col.items():
                if name in _TYPED_COLS and j < len(row) and row[j].strip():
                    pairs.append((row[j].strip(), kind or _TYPED_COLS[name]))
        labels = [s.strip() for s in re.split(r"[;,|]", cell(row, _LABEL_COLS) or "") if s.strip()]
        for raw, hint in pairs:
            try:
                t, v = classify(raw, hint)
            except ValueError:
                out.skipped["malformed or unsupported value"] += 1
                continue
            out.indicators.append(Indicator(
                t, v, raw, _time(cell(row, _FROM_COLS)), _time(cell(row, _UNTIL_COLS)), labels,
                cell(row, _DESC_COLS), f"line {n}"))
    return out


# ---- STIX 2.1 ----------------------------------------------------------------------------

_COMPARISON = re.compile(
    r"(?<![a-z0-9-])(?P<path>[a-z0-9-]+:[A-Za-z0-9_.\-'\[\]*]+)\s*(?P<op>!=|=|ISSUBSET|ISSUPERSET|LIKE|MATCHES|IN|>=|<=|>|<)"
    r"\s*(?P<val>'(?:[^'\\]|\\.)*'|\([^)]*\))", re.IGNORECASE)
_STRONG = ("md5", "sha1", "sha256")


def _stix_path_type(path: str) -> str | None:
    obj, _, prop = path.partition(":")
    low = prop.lower().replace("'", "")
    if "ja3" in low or "ja3" in obj:
        return "ja3" if "ja3s" not in low else None
    if obj in ("ipv4-addr", "ipv6-addr") and low == "value":
        return "ip"
    if obj == "network-traffic" and low in ("dst_ref.value", "src_ref.value"):
        return "ip"
    if obj == "domain-name" and low == "value":
        return "domain"
    if obj == "url" and low == "value":
        return "url"
    if obj in ("file", "artifact") and low.startswith("hashes."):
        return type_hint(low.removeprefix("hashes."))
    return None


def stix_pattern(pattern: str) -> tuple[list[tuple[str, str]], str | None]:
    """Indicators a STIX pattern names, or why none are taken.

    Comparisons joined by ``OR`` each give an indicator. In a pattern that
    needs several things at once (``AND``, ``FOLLOWEDBY``, ``REPEATS``) only
    file hashes are taken, as a hash alone already identifies the file; other
    parts of such a pattern cannot be matched one by one, so they are skipped.
    """
    outside = re.sub(r"'(?:[^'\\]|\\.)*'", "''", pattern)
    compound = re.search(r"\b(AND|FOLLOWEDBY|REPEATS)\b", outside) is not None
    if re.search(r"\bNOT\b", outside):
        return [], "negated pattern"
    found: list[tuple[str, str]] = []
    for m in _COMPARISON.finditer(pattern):
        kind = _stix_path_type(m.group("path"))
        op = m.group("op").upper()
        vals = re.findall(r"'((?:[^'\\]|\\.)*)'", m.group("val"))
        if kind is None or op not in ("=", "ISSUBSET", "IN") or (compound and kind not in _STRONG):
            continue
        for v in vals:
            found.append((kind, re.sub(r"\\(.)", r"\1", v)))
    if not found:
        return [], "compound pattern without a file hash" if compound else "no supported comparison"
    return found, None


def parse_stix(doc: dict[str, Any]) -> Parsed:
    """Indicators (``pattern_type`` stix) of a STIX 2.1 bundle; revoked ones are skipped."""
    out = Parsed("stix2.1")
    objs = [o for o in doc.get("objects", []) if isinstance(o, dict)]
    modified = [o.get("modified") or o.get("created") for o in objs if o.get("type") == "indicator"]
    out.version = max((str(m) for m in modified if m), default=None)
    named = next((o for o in objs if o.get("type") in ("report", "grouping") and o.get("name")), None)
    out.description = named.get("name") if named else None
    for o in objs:
        if o.get("type") != "indicator":
            continue
        if o.get("revoked"):
            out.skipped["revoked"] += 1
            continue
        if (o.get("pattern_type") or "stix") != "stix":
            out.skipped[f"pattern_type {o.get('pattern_type')}"] += 1
            continue
        pairs, why = stix_pattern(str(o.get("pattern", "")))
        if why:
            out.skipped[why] += 1
        labels = [str(x) for x in (o.get("indicator_types") or []) + (o.get("labels") or [])]
        desc = o.get("name") or o.get("description")
        for hint, raw in pairs:
            try:
                t, v = classify(raw, hint)
            except ValueError:
                out.skipped["malformed or unsupported value"] += 1
                continue
            out.indicators.append(Indicator(t, v, raw, _time(o.get("valid_from")),
                                            _time(o.get("valid_until")), labels, desc, o.get("id")))
    return out


# ---- MISP --------------------------------------------------------------------------------

_MISP_TYPES = {
    "ip-src": ("ip",), "ip-dst": ("ip",), "ip-src|port": ("ip", None), "ip-dst|port": ("ip", None),
    "domain": ("domain",), "hostname": ("domain",), "hostname|port": ("domain", None),
    "domain|ip": ("domain", "ip"), "url": ("url",), "md5": ("md5",), "sha1": ("sha1",),
    "sha256": ("sha256",), "filename|md5": (None, "md5"), "filename|sha1": (None, "sha1"),
    "filename|sha256": (None, "sha256"), "ja3-fingerprint-md5": ("ja3",),
}


def _misp_events(doc: Any) -> Iterator[dict[str, Any]]:
    if isinstance(doc, list):
        for d in doc:
            yield from _misp_events(d)
    elif isinstance(doc, dict):
        if "Event" in doc:
            yield doc["Event"]
        elif "response" in doc:
            yield from _misp_events(doc["response"])
        elif "Attribute" in doc and "info" in doc:
            yield doc


def parse_misp(doc: Any) -> Parsed:
    """Attributes (and object attributes) of MISP JSON events; deleted ones are skipped.

    An attribute's ``first_seen``/``last_seen`` are its validity window
    (``last_seen`` included: it is stored one microsecond later, as the end of
    a window is exclusive).
    """
    out = Parsed("misp")
    stamps: list[datetime] = []
    infos: list[str] = []
    for ev in _misp_events(doc):
        t = _time(ev.get("timestamp")) or _time(ev.get("publish_timestamp"))
        if t:
            stamps.append(t)
        if ev.get("info"):
            infos.append(str(ev["info"]))
        ev_tags = [str(x.get("name")) for x in ev.get("Tag", []) or [] if isinstance(x, dict)]
        attrs = list(ev.get("Attribute", []) or [])
        for obj in ev.get("Object", []) or []:
            attrs += [a | {"_object": obj.get("name")} for a in obj.get("Attribute", []) or []]
        for a in attrs:
            if a.get("deleted"):
                out.skipped["deleted"] += 1
                continue
            kinds = _MISP_TYPES.get(str(a.get("type")))
            if kinds is None:
                out.skipped[f"type {a.get('type')}"] += 1
                continue
            parts = str(a.get("value", "")).split("|") if len(kinds) > 1 else [str(a.get("value", ""))]
            labels = [*ev_tags, *(str(x.get("name")) for x in a.get("Tag", []) or [] if isinstance(x, dict))]
            if a.get("category"):
                labels.append(str(a["category"]))
            for hint, raw in zip(kinds, parts, strict=False):
                if hint is None:
                    continue
                try:
                    typ, v = classify(raw, hint)
                except ValueError:
                    out.skipped["malformed or unsupported value"] += 1
                    continue
                to_ids = a.get("to_ids")
                last = _time(a.get("last_seen"))
                out.indicators.append(Indicator(
                    typ, v, raw, _time(a.get("first_seen")), last + _US if last else None, labels,
                    a.get("comment") or ev.get("info"), a.get("uuid"),
                    bool(to_ids) if to_ids is not None else None))
    out.version = max(stamps).isoformat() if stamps else None
    out.description = "; ".join(infos) or None
    return out


def parse(data: bytes, suffix: str = "", kind: str | None = None) -> Parsed:
    """Read a feed of any supported format (told from its content, then its file suffix).

    Raises:
        ValueError: JSON that is neither a STIX bundle nor MISP events.
    """
    text = data.decode("utf-8-sig", "replace")
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and (doc.get("type") == "bundle" or "objects" in doc):
            return parse_stix(doc)
        if doc is not None:
            if any(True for _ in _misp_events(doc)):
                return parse_misp(doc)
            raise ValueError("JSON feed is neither a STIX 2.1 bundle nor MISP events")
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if suffix.lower() in (".csv", ".tsv") or "," in first:
        return parse_csv(text, kind)
    return parse_plain(text, kind)
