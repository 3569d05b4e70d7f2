"""Business context and the risk register, after the audit method our users work with.

An asset inventory (CSV: host or address, owner, business process, damage level
1-5 or a money value) is loaded into ``assets`` (:func:`load_inventory`); rows
that name hosts the case never saw, or carry bad levels, are kept with a
``warning``. The risk register (:func:`risk_register`) gives each asset:

- a **probability** level derived from the breach scope (:mod:`forensics.scope`),
  with the rule that set it (:data:`PROBABILITY_RULES`):
  5 compromise proven, 4 valid credentials used on it from a compromised host,
  3 network contact only from a compromised host, 1 otherwise;
- its **damage** level from the inventory;
- the **risk level** and **acceptability** from the matrices below, the risk
  score ``damage x probability`` and, where a money value is given, the
  quantitative risk ``probability x value``;
- a suggested **treatment** for each unacceptable risk.

Probability levels (:data:`PROBABILITY_LEVELS`): 1 very low [0, 0.25), 2 low
[0.25, 0.5), 3 medium (about 0.5), 4 high (0.5, 0.75], 5 very high (0.75, 1].
Damage levels (:data:`DAMAGE_LEVELS`): 1 small, 2 moderate, 3 medium, 4 large,
5 critical. Risk level (:data:`RISK_LEVEL`), rows damage 1..5, columns
probability 1..5 (L low, M medium, H high)::

    damage 1: L L L M M
    damage 2: L L M M H
    damage 3: L M M H H
    damage 4: M M H H H
    damage 5: M H H H H

Acceptability (:data:`ACCEPTABILITY`), same axes (A acceptable, U unacceptable)::

    damage 1: A A A A A
    damage 2: A A A A U
    damage 3: A A A U U
    damage 4: A A U U U
    damage 5: A U U U U

Treatments (:data:`TREATMENTS`): reduce (added controls), avoid (change
architecture or data flows), transfer (insurance), accept (only once reduced to
acceptable).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._lateral_sql import has_rows, replace_rows
from forensics.errors import BreachbookError, InventoryError
from forensics.hostmap import build_host_map, canonical_host

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.scope import ScopeResult

__all__ = [
    "ACCEPTABILITY",
    "DAMAGE_LEVELS",
    "PROBABILITY_LEVELS",
    "PROBABILITY_RULES",
    "RISK_LEVEL",
    "TREATMENTS",
    "VALUE_LEVELS",
    "InventoryError",
    "acceptability",
    "damage_from_value",
    "load_inventory",
    "probability_level",
    "risk_level",
    "risk_register",
    "treatment",
]

# level -> (name, lower bound, upper bound, interval as written, representative probability)
PROBABILITY_LEVELS: dict[int, tuple[str, float, float, str, float]] = {
    1: ("very low", 0.0, 0.25, "[0, 0.25)", 0.125),
    2: ("low", 0.25, 0.5, "[0.25, 0.5)", 0.375),
    3: ("medium", 0.5, 0.5, "about 0.5", 0.5),
    4: ("high", 0.5, 0.75, "(0.5, 0.75]", 0.625),
    5: ("very high", 0.75, 1.0, "(0.75, 1]", 0.875),
}
DAMAGE_LEVELS: dict[int, str] = {1: "small", 2: "moderate", 3: "medium", 4: "large", 5: "critical"}
# RISK_LEVEL[damage][probability - 1]
RISK_LEVEL: dict[int, tuple[str, ...]] = {
    1: ("L", "L", "L", "M", "M"),
    2: ("L", "L", "M", "M", "H"),
    3: ("L", "M", "M", "H", "H"),
    4: ("M", "M", "H", "H", "H"),
    5: ("M", "H", "H", "H", "H"),
}
ACCEPTABILITY: dict[int, tuple[str, ...]] = {
    1: ("A", "A", "A", "A", "A"),
    2: ("A", "A", "A", "A", "U"),
    3: ("A", "A", "A", "U", "U"),
    4: ("A", "A", "U", "U", "U"),
    5: ("A", "U", "U", "U", "U"),
}
TREATMENTS: dict[str, str] = {
    "reduce": "added controls",
    "avoid": "change architecture or data flows",
    "transfer": "insurance",
    "accept": "only once reduced to acceptable",
}
PROBABILITY_RULES: dict[int, str] = {
    5: "compromise proven: attacker code ran on it (or it is patient zero)",
    4: "reachable from a compromised host with valid credentials observed: a compromised account "
       "authenticated successfully to it from a compromised host",
    3: "network contact only: a compromised host connected to it (TCP SYN or UDP) after its compromise",
    1: "no evidence of contact from a compromised host",
}
# Money value -> damage level when only a value is given: upper bounds of levels 1-4 (level 5 above).
VALUE_LEVELS: tuple[float, float, float, float] = (1_000.0, 10_000.0, 50_000.0, 250_000.0)
_SCOPE_LEVEL = {"patient_zero": 5, "execution": 5, "logon": 4, "contact": 3}


def probability_level(p: float) -> int:
    """The level of a probability: [0, .25) 1, [.25, .5) 2, exactly .5 3, (.5, .75] 4, (.75, 1] 5.

    Raises:
        ValueError: ``p`` is outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p} is outside [0, 1]")
    if p < 0.25:
        return 1
    if p < 0.5:
        return 2
    if p == 0.5:
        return 3
    return 4 if p <= 0.75 else 5


def _check(damage: int, probability: int) -> None:
    if damage not in DAMAGE_LEVELS or probability not in PROBABILITY_LEVELS:
        raise ValueError(f"levels must be 1-5 (damage {damage}, probability {probability})")


def risk_level(damage: int, probability: int) -> str:
    """L, M or H for a damage level (row) and probability level (column), from :data:`RISK_LEVEL`."""
    _check(damage, probability)
    return RISK_LEVEL[damage][probability - 1]


def acceptability(damage: int, probability: int) -> str:
    """A (acceptable) or U (unacceptable), from :data:`ACCEPTABILITY`."""
    _check(damage, probability)
    return ACCEPTABILITY[damage][probability - 1]


def damage_from_value(value: float, bounds: Sequence[float] = VALUE_LEVELS) -> int:
    """Damage level of a money value: the first of ``bounds`` it does not exceed, else 5."""
    for level, hi in enumerate(bounds, 1):
        if value <= hi:
            return level
    return 5


def treatment(damage: int, probability: int, value: float | None = None) -> tuple[str, str]:
    """(suggested treatment, the options that apply with why) for one risk.

    An acceptable risk is accepted. An unacceptable one is reduced first (added
    controls); avoiding it (changing architecture or data flows) is offered when
    compromise is proven or the damage is critical; transfer (insurance) when a
    money value is known; accepting only once it has been reduced to acceptable.
    """
    if acceptability(damage, probability) == "A":
        return "accept", "accept: the risk is acceptable"
    opts = [f"reduce ({TREATMENTS['reduce']}): bring probability or damage down until acceptable"]
    if probability == 5 or damage == 5:
        opts.append(f"avoid ({TREATMENTS['avoid']}): "
                    + ("compromise is proven" if probability == 5 else "the damage would be critical"))
    if value is not None and not pd.isna(value):
        opts.append(f"transfer ({TREATMENTS['transfer']}): a money value of {value:,.0f} is at stake")
    opts.append(f"accept ({TREATMENTS['accept']})")
    return "reduce", "; ".join(opts)


_COLS = {
    "host": ("host", "hostname", "host_name", "name", "asset", "computer"),
    "address": ("address", "ip", "ip_address", "addr", "ipv4"),
    "owner": ("owner", "asset_owner"),
    "business_process": ("business_process", "process", "business", "business_function"),
    "damage_level": ("damage_level", "damage", "impact", "impact_level"),
    "role": ("role", "type"),
}


def load_inventory(case: Case, path: str | Path, *, value_levels: Sequence[float] = VALUE_LEVELS,
                   persist: bool = True) -> pd.DataFrame:
    """Load an asset inventory CSV into ``assets``; rows with problems keep a ``warning``.

    Columns are matched by name (case-insensitive): host (or hostname, name),
    address (or ip), owner, business_process (or process), damage_level (or
    damage), role, and a money value (``value``, ``value_eur``, ``value_usd``, ...:
    the suffix is the currency). A row with only a value gets its damage level
    from :data:`VALUE_LEVELS`.

    Args:
        case: the case.
        path: the CSV file.
        value_levels: upper bounds of damage levels 1-4 for money values.
        persist: write the ``assets`` table (replacing its rows).

    Returns:
        The assets, one row per inventory line.

    Raises:
        InventoryError: the file is missing or has neither a host nor an address column.
    """
    p = Path(path)
    if not p.is_file():
        raise InventoryError(f"no inventory file at {p}")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {re.sub(r"\W+", "_", (h or "").strip().lower()): h for h in reader.fieldnames or []}
        col = {k: next((header[a] for a in alts if a in header), None) for k, alts in _COLS.items()}
        value_col = next((header[h] for h in header if h.startswith("value") or h in ("money",
                                                                                      "damage_value")),
                         None)
        if not col["host"] and not col["address"]:
            raise InventoryError(f"{p.name}: needs a host or an address column (found: {', '.join(header)})")
        currency = None
        if value_col:
            m = re.search(r"_([a-z]{3})$", re.sub(r"\W+", "_", value_col.lower()))
            currency = m.group(1).upper() if m else None
        lines = list(reader)
    hm = build_host_map(case)
    seen_addrs = _seen_addresses(case)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 2):
        def get(k: str, line: dict[str, Any] = line) -> str | None:
            c = col.get(k)
            v = (line.get(c) or "").strip() if c else ""
            return v or None

        warn = []
        host, addr = get("host"), get("address")
        if not host and not addr:
            warn.append("no host or address")
        dmg, val = None, None
        raw_dmg = get("damage_level")
        if raw_dmg is not None:
            try:
                dmg = int(float(raw_dmg)) if float(raw_dmg).is_integer() else None
            except ValueError:
                dmg = None
            if dmg not in DAMAGE_LEVELS:
                warn.append(f"bad damage level {raw_dmg!r} (must be 1-5)")
                dmg = None
        raw_val = (line.get(value_col) or "").strip() if value_col else ""
        if raw_val:
            try:
                val = float(raw_val.replace(",", "").replace("_", ""))
                if val < 0:
                    raise ValueError(raw_val)
            except ValueError:
                warn.append(f"bad value {raw_val!r}")
                val = None
        if dmg is None and raw_dmg is None:
            if val is not None:
                dmg = damage_from_value(val, value_levels)
            else:
                warn.append("no damage level or value")
        known = [x for x in (host, addr) if x and (hm.is_known(x) or canonical_host(x) in seen_addrs)]
        hid = (hm.resolve(host) or hm.resolve(addr)) if known else None
        if (host or addr) and not known:
            warn.append("unknown host: not seen in the case's evidence")
        ident = canonical_host(host) or canonical_host(addr)
        if ident in seen:
            warn.append(f"duplicate of line {seen[ident]}")
        elif ident:
            seen[ident] = n
        rows.append({"line": n, "host": host, "address": addr, "host_id": hid, "owner": get("owner"),
                     "business_process": get("business_process"), "damage_level": dmg, "value": val,
                     "currency": currency, "role": get("role"), "warning": "; ".join(warn) or None,
                     "source": p.name})
    df = pd.DataFrame(rows, columns=["line", "host", "address", "host_id", "owner", "business_process",
                                     "damage_level", "value", "currency", "role", "warning", "source"])
    df["damage_level"] = df["damage_level"].astype("Int64")
    if persist and not case.read_only:
        replace_rows(case, {"assets": df})
    return df


def _seen_addresses(case: Case) -> set[str]:
    """Addresses the capture or the logs mention (a host may be known by its traffic alone)."""
    parts = []
    if has_rows(case, "sessions"):
        parts += ["SELECT orig_h AS a FROM sessions", "SELECT resp_h FROM sessions"]
    if has_rows(case, "logons"):
        parts.append("SELECT src_ip FROM logons")
    if not parts:
        return set()
    df = case.sql(f"SELECT DISTINCT a FROM ({' UNION ALL '.join(parts)}) WHERE a IS NOT NULL")
    return {h for h in map(canonical_host, df["a"]) if h}


def _scope_nodes(case: Case, result: ScopeResult | None, run_id: str | None) -> tuple[pd.DataFrame,
                                                                                      str | None]:
    if result is not None:
        return result.nodes, result.run_id
    if not has_rows(case, "scope"):
        raise BreachbookError("no breach scope yet: run forensics.scope.scope(case, ...) first")
    if run_id is None:
        run_id = case.sql("SELECT run_id FROM scope ORDER BY computed_at DESC LIMIT 1")["run_id"].iloc[0]
    return case.sql("SELECT * FROM scope WHERE run_id = ?", [run_id]), run_id


def risk_register(case: Case, scope_result: ScopeResult | None = None, *, run_id: str | None = None,
                  inventory: str | Path | None = None, persist: bool = True) -> pd.DataFrame:
    """The risk register: one row per inventory asset, probability from the breach scope.

    Args:
        case: the case.
        scope_result: a :class:`~forensics.scope.ScopeResult`; else the ``scope``
            table's run ``run_id`` (default: the latest run).
        run_id: which stored scope run to use.
        inventory: load this inventory CSV first (else the ``assets`` table is used).
        persist: write the ``risk_register`` table (replacing its rows).

    Returns:
        The register (columns of the ``risk_register`` table), highest risk first.

    Raises:
        BreachbookError: no inventory is loaded or no scope has been computed.
    """
    assets = load_inventory(case, inventory) if inventory else (
        case.sql("SELECT * FROM assets ORDER BY line") if has_rows(case, "assets") else None)
    if assets is None or not len(assets):
        raise BreachbookError("no asset inventory: load one with forensics.risk.load_inventory(case, path)")
    nodes, rid = _scope_nodes(case, scope_result, run_id)
    hm = build_host_map(case)
    hosts = nodes[nodes["kind"] == "host"]
    by_node = {n: r for n, r in zip(hosts["node"], hosts.to_dict("records"), strict=True)}
    rows = []
    for a in assets.to_dict("records"):
        ids = [x for x in (a.get("host_id"), a.get("host"), a.get("address")) if isinstance(x, str)]
        cands = {hm.resolve(x) for x in ids} | {canonical_host(x) for x in ids}
        node = next((by_node[c] for c in cands if c in by_node), None)
        prob = _SCOPE_LEVEL.get(node["level"], 1) if node else 1
        reason = (f"{node['reason']} at {pd.Timestamp(node['reached_at']).isoformat()}" if node
                  else PROBABILITY_RULES[1])
        dmg = a.get("damage_level")
        dmg = None if dmg is None or pd.isna(dmg) else int(dmg)
        val = a.get("value")
        val = None if val is None or pd.isna(val) else float(val)
        p_name, *_, p_rep = PROBABILITY_LEVELS[prob]
        row = {"host": a.get("host"), "address": a.get("address"), "host_id": a.get("host_id"),
               "business_process": a.get("business_process"), "owner": a.get("owner"),
               "probability_level": prob, "probability_label": p_name, "probability": p_rep,
               "probability_rule": PROBABILITY_RULES[prob], "damage_level": dmg,
               "damage_label": DAMAGE_LEVELS.get(dmg) if dmg else None, "value": val,
               "quantitative_risk": p_rep * val if val is not None else None, "reason": reason,
               "scope_run": rid}
        if dmg is not None:
            t, opts = treatment(dmg, prob, val)
            row.update(risk=dmg * prob, risk_level=risk_level(dmg, prob), acceptability=acceptability(dmg,
                                                                                                      prob),
                       treatment=t, treatment_options=opts)
        else:
            row.update(risk=None, risk_level=None, acceptability=None, treatment=None,
                       treatment_options=f"no damage level: {a.get('warning') or 'missing'}")
        rows.append(row)
    df = pd.DataFrame(rows)
    df = df.sort_values(["risk", "probability_level"], ascending=False,
                        na_position="last").reset_index(drop=True)
    for c in ("risk", "damage_level"):
        df[c] = df[c].astype("Int64")
    if persist and not case.read_only:
        replace_rows(case, {"risk_register": df})
    return df

