"""The demo case: a generated breach scenario, ingested and reported on.

``make demo`` calls :func:`build_demo`. The evidence is generated (never
committed): a standard training scenario with a fixed seed, so every demo shows
the same breach and its report can be checked against the answer key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from forensics.case import open_case
from forensics.report import render_report

__all__ = ["build_demo"]


def build_demo(case_dir: Path, report: Path, *, seed: int = 7, profile: str = "standard") -> Path:
    """Generate the demo evidence, ingest it into ``case_dir`` and render ``report``.

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
    evidence = case_dir.parent / f"{case_dir.name}-evidence"
    shutil.rmtree(case_dir, ignore_errors=True)
    shutil.rmtree(evidence, ignore_errors=True)
    scenario.generate(evidence, seed=seed, profile=profile)
    with open_case(case_dir) as case:
        # The answer key and inventory sit beside evidence/, not in it: the case
        # sees only what an analyst would receive.
        results = case.ingest(evidence / "evidence", progress=True)
        failed = [r for r in results if r.error and not r.path.name.endswith((".json", ".csv", ".md"))]
        for r in failed:
            print(f"not ingested: {r.path.name}: {r.error}")
    return render_report(case_dir, report, {"title": "Demo breach: post-incident report"})
