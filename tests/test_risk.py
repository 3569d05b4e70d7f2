"""Risk register: the issue's tables reproduced exactly, inventory warnings, register rows."""

from __future__ import annotations

import pandas as pd
import pytest

from forensics import risk
from forensics.errors import BreachbookError
from forensics.scope import ScopeResult

# The tables exactly as written in issue 7 ("rows = damage 1..5, columns = probability 1..5").
ISSUE_RISK_LEVEL = """
damage 1: L L L M M
damage 2: L L M M H
damage 3: L M M H H
damage 4: M M H H H
damage 5: M H H H H
"""
ISSUE_ACCEPTABILITY = """
damage 1: A A A A A
damage 2: A A A A U
damage 3: A A A U U
damage 4: A A U U U
damage 5: A U U U U
"""
ISSUE_PROBABILITY = [(1, "very low", "[0, 0.25)"), (2, "low", "[0.25, 0.5)"), (3, "medium", "about 0.5"),
                     (4, "high", "(0.5, 0.75]"), (5, "very high", "(0.75, 1]")]
ISSUE_DAMAGE = [(1, "small"), (2, "moderate"), (3, "medium"), (4, "large"), (5, "critical")]
ISSUE_TREATMENTS = [("reduce", "added controls"), ("avoid", "change architecture or data flows"),
                    ("transfer", "insurance"), ("accept", "only once reduced to acceptable")]


def _matrix(text):
    out = {}
    for line in text.strip().splitlines():
        head, cells = line.split(":")
        out[int(head.split()[1])] = cells.split()
    return out


def _cases(text):
    return [(d, p, cell) for d, row in _matrix(text).items() for p, cell in enumerate(row, 1)]


@pytest.mark.parametrize(("damage", "probability", "expected"), _cases(ISSUE_RISK_LEVEL))
def test_risk_level_matrix(damage, probability, expected):
    assert risk.risk_level(damage, probability) == expected


@pytest.mark.parametrize(("damage", "probability", "expected"), _cases(ISSUE_ACCEPTABILITY))
def test_acceptability_matrix(damage, probability, expected):
    assert risk.acceptability(damage, probability) == expected


def test_matrices_are_the_declared_tables():
    assert {d: list(v) for d, v in risk.RISK_LEVEL.items()} == _matrix(ISSUE_RISK_LEVEL)
    assert {d: list(v) for d, v in risk.ACCEPTABILITY.items()} == _matrix(ISSUE_ACCEPTABILITY)


@pytest.mark.parametrize(("level", "name", "interval"), ISSUE_PROBABILITY)
def test_probability_levels(level, name, interval):
    got_name, lo, hi, got_interval, rep = risk.PROBABILITY_LEVELS[level]
    assert (got_name, got_interval) == (name, interval)
    assert risk.probability_level(rep) == level
    assert lo <= rep <= hi


@pytest.mark.parametrize(("p", "level"), [(0.0, 1), (0.2499, 1), (0.25, 2), (0.4999, 2), (0.5, 3), (0.5001,
                                                                                                    4),
                                          (0.75, 4), (0.7501, 5), (1.0, 5)])
def test_probability_interval_bounds(p, level):
    assert risk.probability_level(p) == level


def test_probability_outside_unit_interval_is_an_error():
    with pytest.raises(ValueError):
        risk.probability_level(1.2)


@pytest.mark.parametrize(("level", "name"), ISSUE_DAMAGE)
def test_damage_levels(level, name):
    assert risk.DAMAGE_LEVELS[level] == name


def test_treatments_as_written():
    assert list(risk.TREATMENTS.items()) == ISSUE_TREATMENTS


@pytest.mark.parametrize(("damage", "probability", "value", "first", "options"), [
    (1, 5, None, "accept", []),
    (3, 4, None, "reduce", ["reduce"]),
    (5, 2, None, "reduce", ["reduce", "avoid"]),
    (4, 5, 45000.0, "reduce", ["reduce", "avoid", "transfer"]),
])
def test_treatment_suggestions(damage, probability, value, first, options):
    t, text = risk.treatment(damage, probability, value)
    assert t == first
    for o in options:
        assert text.count(f"{o} (") == 1, text
    if first == "reduce":
        assert "accept (only once reduced to acceptable)" in text
    assert ("transfer" in text) == (value is not None)


def test_bad_levels_are_rejected():
    with pytest.raises(ValueError):
        risk.risk_level(0, 3)
    with pytest.raises(ValueError):
        risk.acceptability(3, 6)


def _inventory(tmp_path, text):
    p = tmp_path / "inventory.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_inventory_warning_rows(case, tmp_path):
    p = _inventory(tmp_path, "Host,IP,Owner,Business Process,Damage Level,Value_EUR\n"
                             "GHOST,10.9.9.9,IT,Nothing,3,1000\n"
                             "DB1,,Finance,ERP,7,\n"
                             "DB2,,Finance,ERP,high,\n"
                             ",,Nobody,Nothing,2,\n"
                             "GHOST,,IT,Again,2,\n"
                             "WEB1,,Web,Shop,,12000\n"
                             "OLD1,,Ops,Legacy,,\n")
    df = risk.load_inventory(case, p)
    w = dict(zip(df["line"], df["warning"], strict=True))
    assert "unknown host" in w[2]
    assert "bad damage level '7'" in w[3] and pd.isna(df.loc[1, "damage_level"])
    assert "bad damage level 'high'" in w[4]
    assert "no host or address" in w[5]
    assert "duplicate of line 2" in w[6]
    assert df.loc[5, "damage_level"] == 3 and df.loc[5, "value"] == 12000  # derived from the value
    assert "no damage level or value" in w[8]
    assert set(df["currency"]) == {"EUR"}
    assert case.sql("SELECT count(*) AS n FROM assets")["n"][0] == 7


def test_inventory_without_host_or_address_column(case, tmp_path):
    with pytest.raises(risk.InventoryError, match="host or an address column"):
        risk.load_inventory(case, _inventory(tmp_path, "owner,damage\nIT,3\n"))
    with pytest.raises(risk.InventoryError, match="no inventory file"):
        risk.load_inventory(case, tmp_path / "missing.csv")


def _scope(nodes):
    cols = ["node", "kind", "level", "confidence", "reached_at", "first_contact", "via_edge", "via_technique",
            "chain", "depth", "reason", "start"]
    df = pd.DataFrame([{**{c: None for c in cols}, **n, "reached_at": pd.Timestamp("2026-03-02 08:00",
                                                                                   tz="UTC"),
                        "chain": [], "depth": 0} for n in nodes], columns=cols)
    return ScopeResult("Stest", pd.Timestamp("2026-03-02", tz="UTC"), ["A"], [], df, pd.DataFrame())


def test_register_from_scope(case, tmp_path):
    p = _inventory(tmp_path, "host,address,damage_level,value_eur\nA,,3,1000\nB,,5,60000\nC,,4,\nD,,1,\n")
    res = _scope([{"node": "A", "kind": "host", "level": "patient_zero", "reason": "patient zero"},
                  {"node": "B", "kind": "host", "level": "logon", "reason": "valid credentials"},
                  {"node": "C", "kind": "host", "level": "contact", "reason": "contact"}])
    df = risk.risk_register(case, res, inventory=p).set_index("host")
    assert df.loc["A", ["probability_level", "risk", "risk_level", "acceptability"]].tolist() == [5, 15, "H",
                                                                                                  "U"]
    assert df.loc["B", ["probability_level", "risk", "risk_level", "acceptability"]].tolist() == [4, 20, "H",
                                                                                                  "U"]
    assert df.loc["C", ["probability_level", "risk", "risk_level", "acceptability"]].tolist() == [3, 12, "H",
                                                                                                  "U"]
    assert df.loc["D", ["probability_level", "risk", "risk_level", "acceptability",
                        "treatment"]].tolist() == [
        1, 1, "L", "A", "accept"]
    assert df.loc["B", "quantitative_risk"] == pytest.approx(0.625 * 60000)
    assert pd.isna(df.loc["C", "quantitative_risk"])
    assert df.loc["A", "probability_rule"] == risk.PROBABILITY_RULES[5]
    assert case.sql("SELECT count(*) AS n FROM risk_register")["n"][0] == 4


def test_register_needs_inventory_and_scope(case, tmp_path):
    with pytest.raises(BreachbookError, match="no asset inventory"):
        risk.risk_register(case, _scope([]))
    risk.load_inventory(case, _inventory(tmp_path, "host,damage_level\nA,3\n"))
    with pytest.raises(BreachbookError, match="no breach scope"):
        risk.risk_register(case)
