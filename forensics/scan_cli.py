"""``breachbook scan`` and ``breachbook ioc``: YARA and PE triage of carved files, threat-intel matching.

::

    breachbook carve CASE_DIR [--evidence ID]
    breachbook scan CASE_DIR [--rules PATH...] [--timeout S] [--no-triage]
    breachbook ioc CASE_DIR FEED... [--name NAME] [--kind KIND] [--ignore-validity]

``carve`` carves the files of captures ingested with ``--no-carve`` (or again,
replacing their rows; the store keeps one copy of each content). ``scan``
compiles each rule file on its own (the bundled ``data/rules`` when no
``--rules`` is given), lists the ones that fail and why, scans every file in the
case's store, writes ``yara_hits`` and triages the PE files into ``pe_info``.
``ioc`` imports each feed (plain list, CSV, STIX 2.1, MISP JSON) and matches every
imported feed against the case, writing ``ioc_hits``. Both exit 0 when the work
ran, even if some rule files or feed entries were skipped (they are listed).
"""

from __future__ import annotations

import argparse
from typing import Any

from forensics.errors import BreachbookError

__all__ = ["add_parser", "cmd_carve", "cmd_ioc", "cmd_scan"]


def cmd_carve(args: argparse.Namespace) -> int:
    """Carve the files the case's captures carried into its store; print files per capture."""
    from forensics import open_case
    from forensics.carve import carve_case

    with open_case(args.case, create=False) as case:
        counts = carve_case(case, args.evidence)
        names = dict(case.sql("SELECT evidence_id, path FROM evidence").itertuples(index=False))
        for eid, n in counts.items():
            print(f"{n:8,} file(s)  {eid}  {names.get(eid, '')}")
        print(f"{sum(counts.values()):8,} file(s) carved from {len(counts)} capture(s)")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Scan the case's stored files with YARA (and triage PEs); print a summary."""
    from forensics import open_case, triage, yarascan

    with open_case(args.case, create=False) as case:
        report = yarascan.scan(case, args.rules or None, timeout=args.timeout, workers=args.workers)
        compiled = sum(f.status == "compiled" for f in report.rule_files)
        skipped = [f for f in report.rule_files if f.status == "skipped"]
        print(f"rule files: {compiled} compiled, {len(report.failed_rule_files)} failed, "
              f"{len(skipped)} skipped (index files)  [{report.seconds.get('compile', 0):.1f} s]")
        for f in report.failed_rule_files:
            print(f"  failed  {f.path}: {f.message}")
        print(f"files scanned: {report.files_scanned}  hits: {report.hits}  "
              f"timeouts: {len(report.timeouts)}  errors: {len(report.errors)}  "
              f"warnings: {len(report.warnings)}  "
              f"[{report.seconds.get('scan', 0):.1f} s]")
        for sha in report.timeouts:
            print(f"  timeout {sha}")
        for sha, msg in report.errors:
            print(f"  error   {sha}: {msg}")
        hits = case.sql("SELECT h.rule, h.namespace, h.sha256, any_value(c.claimed_name) AS name "
                        "FROM yara_hits h LEFT JOIN carved_files c USING (sha256) WHERE h.run_id = ? "
                        "GROUP BY ALL ORDER BY h.rule, h.sha256", [report.run_id])
        for row in hits.itertuples():
            print(f"  {row.rule:40} {row.sha256}  {row.name or ''}  ({row.namespace})")
        if not args.no_triage:
            tri = triage.triage(case, timeout=args.timeout, workers=args.workers)
            summary = ", ".join(f"{n} {s}" for s, n in sorted(tri.status.items())) or "none"
            print(f"PE triage: {tri.analysed} file(s): {summary}")
    return 0


def cmd_ioc(args: argparse.Namespace) -> int:
    """Import feeds and match every imported feed against the case; print a summary."""
    from forensics import ioc, open_case

    if args.name and len(args.feeds) > 1:
        raise BreachbookError("--name names one feed: give a single FEED with it")
    with open_case(args.case, create=False) as case:
        for feed in args.feeds:
            res = ioc.import_feed(case, feed, args.name, kind=args.kind)
            skipped = ", ".join(f"{n} {why}" for why, n in res.skipped.most_common())
            print(f"feed {res.feed} ({res.format}, version {res.version}): {res.indicators} indicators"
                  + (f"; skipped {skipped}" if skipped else ""))
        rep = ioc.match(case, honour_validity=not args.ignore_validity)
        print(f"hits: {rep.hits}  [{rep.seconds:.1f} s]")
        for target, n in rep.by_target.most_common():
            print(f"  {target:24} {n:>8}")
        if rep.skipped:
            print(f"  not in this case: {', '.join(rep.skipped)}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``carve``, ``scan`` and ``ioc`` to the ``breachbook`` command's subparsers."""
    s = subparsers.add_parser("carve", help="carve the files sessions carried (after ingest --no-carve)")
    s.add_argument("case", help="case directory")
    s.add_argument("--evidence", metavar="ID", help="one evidence id (default: every capture)")
    s.set_defaults(func=cmd_carve)

    s = subparsers.add_parser("scan", help="YARA-scan and triage the case's carved files")
    s.add_argument("case", help="case directory")
    s.add_argument("--rules", nargs="+", metavar="PATH",
                   help="rule files or folders (default: the bundled data/rules)")
    s.add_argument("--timeout", type=int, default=60, help="seconds per file (default 60)")
    s.add_argument("--workers", type=int, help="scanning threads / triage processes (default: CPUs)")
    s.add_argument("--no-triage", action="store_true", help="skip PE triage")
    s.set_defaults(func=cmd_scan)

    s = subparsers.add_parser("ioc", help="import threat-intel feeds and match them against the case")
    s.add_argument("case", help="case directory")
    s.add_argument("feeds", nargs="+", metavar="FEED", help="plain list, CSV, STIX 2.1 bundle or MISP JSON")
    s.add_argument("--name", help="feed name (one FEED only; default: the file name)")
    s.add_argument("--kind", choices=["ip", "cidr", "domain", "url", "md5", "sha1", "sha256", "ja3"],
                   help="type of every value in a plain list (e.g. ja3)")
    s.add_argument("--ignore-validity", action="store_true",
                   help="match rows outside an indicator's validity window too")
    s.set_defaults(func=cmd_ioc)
