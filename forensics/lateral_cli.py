"""``breachbook scope``, ``lateral``, ``exfil``, ``detect`` and ``risk``: breach scope from a shell.

::

    breachbook scope CASE_DIR --from WS04 --since 2026-03-02T08:04:57Z     hosts and accounts in scope
    breachbook scope CASE_DIR --from WS04 --from account:ijansen --since ... --offset WS04=3600
    breachbook scope CASE_DIR --from WS04 --since ... --chain DC01          how DC01 was reached
    breachbook lateral CASE_DIR [--rebuild] [--graphml g.graphml] [--json g.json]
    breachbook exfil CASE_DIR [--internal 10.0.0.0/8 ...]
    breachbook detect CASE_DIR [--long-seconds 3600]
    breachbook risk CASE_DIR --inventory inventory.csv [--from WS04 --since ...]

``--offset SOURCE=SECONDS`` (repeatable) adds seconds to one source's times: an
evidence id or file name, a logging host, or a reader (``evtx``, ``pcap``, ...).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from forensics._cliout import friendly, print_frame
from forensics.errors import BreachbookError

__all__ = ["add_parser", "parse_offsets"]


def parse_offsets(items: list[str] | None) -> dict[str, float]:
    """``["WS04=3600", "capture.pcap=-1.5"]`` -> ``{"WS04": 3600.0, "capture.pcap": -1.5}``.

    Raises:
        BreachbookError: an item is not ``SOURCE=SECONDS``.
    """
    out: dict[str, float] = {}
    for it in items or []:
        src, sep, secs = it.rpartition("=")
        try:
            if not sep or not src:
                raise ValueError(it)
            out[src] = float(secs)
        except ValueError as exc:
            raise BreachbookError(f"bad --offset {it!r}: use SOURCE=SECONDS, e.g. WS04=3600") from exc
    return out


def _print(df: Any, fmt: str, columns: list[str] | None = None) -> None:
    print_frame(df, fmt, columns, max_rows=1000, width=220, max_colwidth=70)


def _scope(case: Any, args: argparse.Namespace) -> Any:
    from forensics.scope import scope

    res = scope(case, args.start, args.since, clock_offsets=parse_offsets(args.offset),
                tolerance=args.tolerance,
                slack=args.slack, internal=args.internal or None, rebuild=args.rebuild)
    for w in res.warnings:
        print(f"warning: clock skew: {w}", file=sys.stderr)
    return res


@friendly
def cmd_scope(args: argparse.Namespace) -> int:
    """Time-respecting breach scope from patient zero."""
    from forensics import open_case

    with open_case(args.case, create=False) as case:
        res = _scope(case, args)
    if args.chain:
        _print(res.chain(args.chain), args.format,
               ["ts", "src", "dst", "technique", "account", "level", "proof", "summary"])
        return 0
    print(f"scope {res.run_id}: from {', '.join(res.start_hosts + res.start_accounts)} since "
          f"{res.since.isoformat()}: {len(res.compromised_hosts())} compromised host(s), "
          f"{len(res.hosts()) - len(res.compromised_hosts())} more reached, "
          f"{len(res.compromised_accounts())} account(s)", file=sys.stderr)
    _print(res.nodes, args.format,
           ["node", "kind", "confidence", "level", "reached_at", "via_technique", "depth", "reason"])
    return 0


@friendly
def cmd_lateral(args: argparse.Namespace) -> int:
    """Build (or show) the lateral-movement edges; export the graph."""
    from forensics import lateral, open_case

    with open_case(args.case, create=False) as case:
        edges = lateral.lateral_edges(case, rebuild=args.rebuild, internal=args.internal or None,
                                      clock_offsets=parse_offsets(args.offset) or None)
        if args.graphml or args.json:
            g = lateral.to_graph(edges, case.sql("SELECT * FROM hosts ORDER BY host_id"))
            if args.graphml:
                print(f"GraphML written to {lateral.export_graphml(g, args.graphml)}", file=sys.stderr)
            if args.json:
                print(f"JSON written to {lateral.export_json(g, args.json)}", file=sys.stderr)
    _print(edges, args.format, ["ts", "src", "dst", "technique", "account", "success", "level", "proof",
                                "n_rows"])
    return 0


@friendly
def cmd_exfil(args: argparse.Namespace) -> int:
    """Bytes, files and DNS tunnels leaving the network."""
    from forensics import exfil, open_case

    with open_case(args.case, create=False) as case:
        df = exfil.exfil(case, internal=args.internal or None)
    _print(df, args.format, ["kind", "src", "dst", "dst_name", "hour", "channel", "encryption", "bytes",
                             "sessions",
                             "score"])
    return 0


@friendly
def cmd_detect(args: argparse.Namespace) -> int:
    """Beaconing, rare destinations and long connections."""
    from forensics import detect, open_case

    with open_case(args.case, create=False) as case:
        df = detect.detect(case, internal=args.internal or None, long_seconds=args.long_seconds)
    _print(df, args.format, ["kind", "score", "src", "dst", "dst_port", "first", "count", "detail"])
    return 0


@friendly
def cmd_risk(args: argparse.Namespace) -> int:
    """The risk register from the inventory and the breach scope."""
    from forensics import open_case, risk

    with open_case(args.case, create=False) as case:
        if args.inventory:
            inv = risk.load_inventory(case, args.inventory)
            for r in inv[inv["warning"].notna()].itertuples():
                print(f"warning: inventory line {r.line}: {r.warning}", file=sys.stderr)
        res = _scope(case, args) if args.start else None
        df = risk.risk_register(case, res, run_id=args.run)
    _print(df, args.format, ["host", "damage_level", "probability_level", "risk", "risk_level",
                             "acceptability",
                             "treatment", "quantitative_risk", "reason"])
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``scope``, ``lateral``, ``exfil``, ``detect`` and ``risk`` to the ``breachbook`` subparsers."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("case", help="case directory")
        p.add_argument("--internal", action="append", metavar="CIDR",
                       help="internal network (repeatable; default RFC 1918 and RFC 4193)")
        p.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def scope_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--from", dest="start", action="append", required=required, metavar="HOST",
                       help="patient-zero host or account (repeatable; prefix host: or account: "
                            "if ambiguous)")
        p.add_argument("--since", help="when patient zero was compromised (ISO time, UTC if no zone)")
        p.add_argument("--offset", action="append", metavar="SOURCE=SECONDS", help="clock offset of a source")
        p.add_argument("--tolerance", type=float, default=2.0,
                       help="seconds a logon may precede its captured session before a clock-skew warning")
        p.add_argument("--slack", type=float, default=1.0, help="seconds of slack for time ordering")
        p.add_argument("--rebuild", action="store_true", help="build the lateral edges again first")

    s = subparsers.add_parser("scope", help="hosts and accounts reachable from patient zero, in time order")
    common(s)
    scope_args(s, True)
    s.add_argument("--chain", metavar="NODE", help="show the chain of edges that reached NODE")
    s.set_defaults(func=cmd_scope)

    s = subparsers.add_parser("lateral", help="lateral-movement edges; GraphML/JSON export")
    common(s)
    s.add_argument("--rebuild", action="store_true", help="build the edges again")
    s.add_argument("--offset", action="append", metavar="SOURCE=SECONDS", help="clock offset of a source")
    s.add_argument("--graphml", metavar="FILE", help="write the graph as GraphML")
    s.add_argument("--json", metavar="FILE", help="write the graph as node-link JSON")
    s.set_defaults(func=cmd_lateral)

    s = subparsers.add_parser("exfil", help="bytes, files and DNS tunnels leaving the network")
    common(s)
    s.set_defaults(func=cmd_exfil)

    s = subparsers.add_parser("detect", help="beaconing, rare destinations, long connections")
    common(s)
    s.add_argument("--long-seconds", type=float, default=3600.0, help="duration of a long connection")
    s.set_defaults(func=cmd_detect)

    s = subparsers.add_parser("risk", help="risk register from the asset inventory and the breach scope")
    common(s)
    s.add_argument("--inventory", metavar="CSV", help="asset inventory to load first")
    s.add_argument("--run", help="scope run id to use (default: the latest)")
    scope_args(s, False)
    s.set_defaults(func=cmd_risk)
