"""The demo case: a generated breach scenario, investigated and reported on.

``make demo`` calls :func:`build_demo`. The evidence is generated (never
committed): a standard training scenario with a fixed seed, so every demo shows
the same breach and its report can be checked against the answer key.

After ingest the demo plays the analyst, as a playbook would: it scans the
carved files with the bundled YARA rules, loads the asset inventory, computes
the breach scope from patient zero (taken from the answer key, as a trainer
would hand it to a trainee who found it), builds the risk register, records a
confirmed finding for the dropper and its C2, and accepts the control ratings
the evidence suggests. Then the report notebook renders it all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from forensics.case import Case, open_case
from forensics.report import render_report

__all__ = ["build_demo", "investigate"]

ANALYST = "demo analyst"


def build_demo(case_dir: Path, report: Path, *, seed: int = 7, profile: str = "standard") -> Path:
    """Generate the demo evidence, ingest it into ``case_dir``, investigate and render ``report``.

    Args:
        case_dir: the case directory (rebuilt from scratch).
        report: the HTML report to write.
        seed: scenario seed (the same seed gives byte-identical evidence).
        profile: scenario size (``small``, ``standard``, ``large``).

    Returns:
        The report path.
    """
    from forensics import scenario

    case_dir = Path(case_dir)
    out = case_dir.parent / f"{case_dir.name}-evidence"
    shutil.rmtree(case_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    key = scenario.generate(out, seed=seed, profile=profile)
    with open_case(case_dir) as case:
        # The answer key and inventory sit beside evidence/, not in it: the case
        # sees only what an analyst would receive.
        for r in case.ingest(out / "evidence", progress=True):
            if r.error:
                print(f"not ingested: {r.path.name}: {r.error}")
        investigate(case, key, out / "inventory.csv")
    return render_report(case_dir, report, {"title": "Demo breach: post-incident report"})


def investigate(case: Case, key: dict, inventory: Path) -> None:
    """The analyst's steps on the demo case (see the module docstring)."""
    from forensics import controls, findings, yarascan
    from forensics.risk import load_inventory, risk_register

    yarascan.scan(case)
    load_inventory(case, inventory)
    pz = key["patient_zero"]
    result = case.scope(pz["host"], since=pz["time"])
    risk_register(case, result)
    c2 = case.sql("SELECT uid FROM sessions WHERE resp_h = ? ORDER BY ts", [key["c2"]["ip"]])["uid"].tolist()
    if c2:
        findings.tag(case, "sessions", c2, "c2", author=ANALYST)
    ran = case.sql("SELECT evidence_id, record_offset, member FROM events "
                   "WHERE type = 'process_start' AND process ILIKE ?", ["%" + pz["dropper"]])
    rows: dict[str, list] = {"sessions": c2[:5]}
    if len(ran):
        rows["events"] = ran.to_dict("records")
    fid = findings.finding(
        case, f"Phishing dropper {pz['dropper']} ran on {pz['host']} and beaconed to {key['c2']['domain']}",
        "critical", rows=rows, author=ANALYST,
        description=json.dumps({"url": pz["url"], "c2": key["c2"]["domain"]}))
    findings.update_finding(case, fid, status="confirmed",
                            comment="process start, proxy log and C2 beacons agree", author=ANALYST)
    controls.accept_suggestions(case, documentary="partly", author=ANALYST)
