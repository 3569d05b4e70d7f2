"""Breach scope: time-respecting reachability, confidence, clock skew, and the scenario's answer key.

The end-to-end tests generate scenarios (``forensics.scenario.generate``), ingest
their evidence, load the inventory, build the graph, compute the scope from
patient zero and compare with ``answer_key.json``: every hop of the lateral
chain is an edge with the right technique, account and time; the compromised
hosts and accounts are equal; exfiltrated bytes are within 1 % where the
needed tables exist; the risk register rows are equal.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import forensics
from forensics import exfil, lateral, lateral_cli, risk, scenario
from forensics._lateral_sql import has_rows
from forensics.errors import BreachbookError
from forensics.scope import ScopeError, clock_skew, scope

SEEDS = [1, 2, 3, 4, 5]
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _t(sec):
    return T0 + timedelta(seconds=sec)


# ---- rules, on hand-made edges ------------------------------------------------------------

def _edge(i, t, src, dst, technique, level, account, success=True, explicit=False):
    return {"edge_id": f"L{i:04d}", "ts": _t(t), "ts_end": _t(t), "src": src, "dst": dst, "account": account,
            "technique": technique, "family": technique, "level": level, "success": success,
            "explicit": explicit, "proof": "host_log", "n_rows": 1, "summary": f"{technique} {src}->{dst}",
            "rows": "[]"}


@pytest.fixture
def edge_case(case):
    edges = [
        _edge(1, 10, "A", "B", "psexec", "execution", "u1"),
        _edge(2, 5, "B", "C", "wmi", "execution", "u1"),        # before B fell: not followed
        _edge(3, 20, "B", "D", "rdp", "execution", "u3"),
        _edge(4, 30, "A", "E", "network_logon", "logon", "u2"),  # account not held: contact only
        _edge(5, 31, "A", "F", "network_logon", "logon", "u1"),  # held account: credentials proven
        _edge(6, 32, "A", "G", "network_logon", "logon", "u1", success=False),
        _edge(7, 40, "X", "H", "winrm", "execution", "pz"),      # patient-zero account from anywhere
        _edge(8, 9.6, "B", "I", "wmi", "execution", "u1"),       # 0.4 s before B fell: within the slack
        _edge(9, 50, "A", "J", "network_logon", "logon", "u9", explicit=True),  # 4648 from a held host
    ]
    case._insert("lateral_edges", pa.Table.from_pylist(edges))
    return case


def test_time_respecting_reachability(edge_case):
    r = scope(edge_case, ["A", "account:pz"], _t(0), contact=False)
    n = r.nodes.set_index("node")
    assert "C" not in n.index
    assert r.compromised_hosts() == ["A", "B", "D", "H", "I"]
    assert n.loc["D", "chain"] == ["L0001", "L0003"] and n.loc["D", "depth"] == 2
    assert list(r.chain("D")["edge_id"]) == ["L0001", "L0003"]
    assert n.loc["B", "reached_at"] == _t(10)
    assert (n.loc["E", "confidence"], n.loc["F", "confidence"], n.loc["G", "confidence"]) == (
        "contact", "credentials", "contact")
    assert n.loc["J", "confidence"] == "credentials"  # explicit credentials from a compromised host
    assert r.compromised_accounts() == ["pz", "u1", "u3", "u9"]
    assert n.loc["pz", "level"] == "patient_zero" and n.loc["u1", "level"] == "used"
    stored = edge_case.sql("SELECT * FROM scope WHERE run_id = ?", [r.run_id])
    assert len(stored) == len(r.nodes)


def test_slack_can_be_turned_off(edge_case):
    r = scope(edge_case, "A", _t(0), slack=0.0, contact=False)
    assert "I" not in r.hosts()


def test_start_after_the_movement_reaches_nothing(edge_case):
    r = scope(edge_case, "A", _t(1000), contact=False)
    assert r.hosts() == ["A"]


def test_unknown_start_lists_near_matches(edge_case):
    with pytest.raises(ScopeError) as exc:
        scope(edge_case, "DD", _t(0))
    assert "D" in exc.value.near and "near matches" in str(exc.value)
    with pytest.raises(ScopeError, match="no similar host or account"):
        scope(edge_case, "zzzzzz", _t(0))


# ---- the scenario, end to end --------------------------------------------------------------

def _ingest(out: Path, case_dir: Path):
    case = forensics.open_case(case_dir)
    case.ingest(out / "evidence")  # ingest reassembles and parses protocols
    risk.load_inventory(case, out / "inventory.csv")
    lateral.build_lateral(case)
    return case


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    cache = {}

    def get(seed):
        if seed not in cache:
            out = tmp_path_factory.mktemp(f"scenario{seed}")
            key = scenario.generate(out, seed=seed, profile="small")
            case = _ingest(out, out / "case")
            p0 = key["patient_zero"]
            res = scope(case, [p0["host"], f"account:{p0['account']}"], p0["time"])
            cache[seed] = (key, case, res, out)
        return cache[seed]

    yield get
    for _, case, _, _ in cache.values():
        case.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_lateral_chain(scenarios, seed):
    key, case, res, _ = scenarios(seed)
    edges = lateral.lateral_edges(case)
    for hop in key["lateral_chain"]:
        m = edges[(edges["src"] == hop["src"]) & (edges["dst"] == hop["dst"])
                  & (edges["technique"] == hop["technique"]) & (edges["account"] == hop["account"])]
        assert len(m), f"hop {hop['step']} {hop['technique']} {hop['src']}->{hop['dst']} missing"
        dt = (m["ts"] - pd.Timestamp(hop["time"])).abs().min()
        assert dt <= pd.Timedelta(milliseconds=1), (hop, m["ts"].tolist())
        assert (m["proof"] == "both").any() and (m["level"] == "execution").all()
        used = {e for c in res.nodes["chain"] for e in c}
        assert used >= set(m["edge_id"]) or hop["dst"] in res.start_hosts


WIRE = {"psexec": ("dce_rpc", "smb_files", "smb_mapping"), "wmi": ("dce_rpc",), "rdp": ("rdp",),
        "ssh": ("ssh",)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_wire_proofs(scenarios, seed):
    """Each hop's edge carries the protocol rows of its connection (the capture-side hooks)."""
    key, case, _, _ = scenarios(seed)
    edges = lateral.lateral_edges(case)
    pending = []
    for hop in key["lateral_chain"]:
        want = WIRE[hop["technique"]]
        if not any(has_rows(case, t) for t in want):
            pending.append(f"{'/'.join(want)} (for {hop['technique']})")
            continue
        m = edges[(edges["src"] == hop["src"]) & (edges["dst"] == hop["dst"])
                  & (edges["technique"] == hop["technique"])]
        tables = {r["table"] for rows in m["rows"] for r in json.loads(rows)}
        assert tables & set(want), (hop["technique"], tables)
    if pending:
        pytest.xfail("pending: empty protocol tables (reconstruction pass in progress): "
                     + ", ".join(pending))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_compromised_hosts_and_accounts(scenarios, seed):
    key, _, res, _ = scenarios(seed)
    assert res.compromised_hosts() == sorted(h["host"] for h in key["compromised_hosts"])
    assert res.compromised_accounts() == sorted(a["account"] for a in key["compromised_accounts"])
    n = res.nodes.set_index("node")
    for h in key["compromised_hosts"]:
        if h["host"] not in res.start_hosts:  # patient zero is reached at the start time given
            assert abs(n.loc[h["host"],
                             "reached_at"] - pd.Timestamp(h["time"])) <= pd.Timedelta(milliseconds=1)
    assert not res.warnings


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_risk_register(scenarios, seed):
    key, case, res, out = scenarios(seed)
    reg = risk.risk_register(case, res, inventory=out / "inventory.csv")
    got = {r["host"]: (r["damage_level"], r["probability_level"], r["risk"]) for r in reg.to_dict("records")}
    want = {r["host"]: (r["damage_level"], r["probability_level"], r["risk"]) for r in key["risk_register"]}
    assert got == want
    assert case.sql("SELECT * FROM assets")["warning"].isna().all()  # every inventory host is in the case
    assert (reg.loc[reg["acceptability"] == "U", "treatment"] == "reduce").all()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_exfil_http_bytes(scenarios, seed):
    key, case, _, _ = scenarios(seed)
    post = key["exfiltration"]["http_post"]
    x = exfil.exfil(case)
    m = x[(x["kind"] == "bytes") & (x["src"] == post["src"]) & (x["dst"] == post["dst_ip"])]
    assert set(m["channel"]) == {"http"} and set(m["encryption"]) == {"clear"}
    assert m["bytes"].sum() == pytest.approx(post["bytes"], rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_scenario_exfil_dns_bytes(scenarios, seed):
    key, case, _, _ = scenarios(seed)
    if not has_rows(case, "dns"):
        pytest.xfail("pending: the dns table is empty (the pcap DNS parser is in progress); DNS tunnel "
                     "bytes are decoded from the query names in dns rows")
    dns = key["exfiltration"]["dns"]
    x = exfil.exfil(case)
    m = x[(x["kind"] == "dns_tunnel") & (x["dst"] == dns["domain"])]
    assert len(m) == 1 and m["src"].iloc[0] == dns["src"]
    assert m["bytes"].iloc[0] == pytest.approx(dns["bytes_encoded"], rel=0.01)


# ---- clock skew ----------------------------------------------------------------------------

def _shift(text: str, fmt: str, d: timedelta) -> str:
    return (datetime.strptime(text, fmt).replace(tzinfo=UTC) + d).strftime(fmt)


def _shift_host(src: Path, dst: Path, host: str, seconds: float):
    """Copy NXLog JSON lines, moving one host's clock (every time field) by ``seconds``."""
    d = timedelta(seconds=seconds)
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if str(rec.get("Hostname", "")).upper().startswith(host):
            for k in ("EventTime", "EventReceivedTime"):
                rec[k] = _shift(rec[k], "%Y-%m-%d %H:%M:%S", d)
            rec["@timestamp"] = _shift(rec["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ", d)[:-4] + "Z"
            if "UtcTime" in rec:
                rec["UtcTime"] = _shift(rec["UtcTime"], "%Y-%m-%d %H:%M:%S.%f", d)[:-3]
        out.append(json.dumps(rec))
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_clock_skew_warning_and_offset(tmp_path):
    out = tmp_path / "sc"
    key = scenario.generate(out, seed=1, profile="small")
    skewed = tmp_path / "evidence"
    skewed.mkdir()
    for f in (out / "evidence").iterdir():
        if f.name == "windows_events.json":
            _shift_host(f, skewed / f.name, "FS01", -3600)  # FS01's clock an hour behind
        else:
            (skewed / f.name).write_bytes(f.read_bytes())
    case = forensics.open_case(tmp_path / "case")
    case.ingest(skewed)
    p0 = key["patient_zero"]
    start = [p0["host"], f"account:{p0['account']}"]
    bad = scope(case, start, p0["time"], rebuild=True)
    assert any(w.startswith("FS01") and "3600" in w for w in bad.warnings), bad.warnings
    skew = clock_skew(case)
    assert skew.loc[skew["host"].str.startswith("FS01"), "skewed"].all()
    hop = key["lateral_chain"][0]  # WS04 -> FS01 psexec

    def fused(edges):  # FS01's own 7045 and the capture in one edge, at the capture's time
        m = edges[(edges["src"] == hop["src"]) & (edges["dst"] == hop["dst"]) & (edges["proof"] == "both")
                  & edges["summary"].str.contains("7045")]
        return m[(m["ts"] - pd.Timestamp(hop["time"])).abs() <= pd.Timedelta(milliseconds=1)]

    assert not len(fused(lateral.build_lateral(case, persist=False)))  # the 7045 sits an hour early
    good = scope(case, start, p0["time"], clock_offsets={"FS01": 3600})
    assert not good.warnings
    assert len(fused(lateral.lateral_edges(case))) == 1
    assert good.compromised_hosts() == sorted(h["host"] for h in key["compromised_hosts"])
    case.close()


# ---- command line --------------------------------------------------------------------------

def _cli(argv):
    p = argparse.ArgumentParser(prog="breachbook")
    lateral_cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_cli_scope_and_errors(capsys, tmp_path):
    out = tmp_path / "sc"
    key = scenario.generate(out, seed=1, profile="small")
    _ingest(out, tmp_path / "case").close()  # the commands open the case themselves
    case_dir = str(tmp_path / "case")
    p0 = key["patient_zero"]
    assert _cli(["scope", case_dir, "--from", p0["host"], "--since", p0["time"], "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["node"] for r in rows if r["confidence"] == "compromised"} >= {
        h["host"] for h in key["compromised_hosts"]}
    last = key["lateral_chain"][-1]
    assert _cli(["scope", case_dir, "--from", p0["host"], "--since", p0["time"], "--chain", last["dst"],
                 "--format", "csv"]) == 0
    assert last["technique"] in capsys.readouterr().out
    with pytest.raises(BreachbookError, match="near matches"):
        _cli(["scope", case_dir, "--from", p0["host"][:-1] + "9", "--since", p0["time"]])
    with pytest.raises(BreachbookError, match="SOURCE=SECONDS"):
        _cli(["scope", case_dir, "--from", p0["host"], "--offset", "nonsense"])
    g = tmp_path / "g.graphml"
    assert _cli(["lateral", case_dir, "--graphml", str(g), "--json", str(tmp_path / "g.json")]) == 0
    assert g.stat().st_size > 0
    capsys.readouterr()
    assert _cli(["risk", case_dir, "--inventory", str(out / "inventory.csv"), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(key["risk_register"])
    for cmd in (["exfil", case_dir], ["detect", case_dir]):
        assert _cli(cmd) == 0
