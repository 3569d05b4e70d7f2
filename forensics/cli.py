"""The ``breachbook`` command line.

::

    breachbook ingest CASE_DIR EVIDENCE...        register and ingest files or folders
    breachbook info CASE_DIR                      evidence, tables and warnings at a glance
    breachbook sql CASE_DIR "SELECT ..."          any query; --format table|csv|json
    breachbook verify CASE_DIR                    re-hash evidence against its registration
    breachbook scenario generate --seed N --out DIR [--profile P] [--noise L]
    breachbook demo --out CASE_DIR --report FILE  build the demo case and its report
    breachbook report CASE_DIR -o report.html     render the post-breach report

Exit codes: 0 success, 1 a command failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forensics import __version__
from forensics._cliout import print_frame
from forensics.errors import BreachbookError

__all__ = ["main"]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


class _Quiet:
    """What ``cmd_ingest`` uses of a tqdm bar, for ``--quiet`` (importing tqdm costs 0.02 s)."""

    n = 0

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, k: float) -> None:
        self.n += int(k)

    def set_postfix_str(self, text: str) -> None:
        pass

    @staticmethod
    def write(text: str, file: Any = None) -> None:
        print(text, file=file)


def cmd_ingest(args: argparse.Namespace) -> int:
    """Register and ingest evidence, with a progress bar and a summary."""
    from forensics import open_case
    from forensics.sources import iter_files

    files = list(iter_files(args.evidence))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise BreachbookError(f"no such file: {', '.join(map(str, missing))}")
    total = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    results = []
    if args.quiet:
        bar: Any = _Quiet()
    else:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest", file=sys.stderr)
    with open_case(args.case) as case, bar:
        done_before = 0
        for i, f in enumerate(files):
            if i and not gc.isenabled():  # the console script's ingest (see run): between files
                gc.collect(1)
            bar.set_postfix_str(f.name[-40:])

            def cb(_f: Path, done: int, base: int = done_before) -> None:
                bar.update(max(0, base + done - bar.n))

            res = case.ingest(f, fmt=args.format, strict=args.strict, progress=cb, md5=args.md5,
                              workers=args.workers, executor=args.executor, scheduler=args.scheduler,
                              options=_options(args), protocols=not args.packets_only,
                              carve=not args.no_carve)
            results.extend(res)
            done_before += f.stat().st_size
            bar.update(done_before - bar.n)
            for r in res:
                if r.error:
                    bar.write(f"skipped {r.path}: {r.error}", file=sys.stderr)
    secs = time.perf_counter() - t0
    packets = sum(r.records for r in results if r.format in ("pcap", "pcapng"))
    records = sum(r.records for r in results if r.format not in ("pcap", "pcapng"))
    sessions = sum(r.sessions for r in results)
    warnings = sum(r.warnings for r in results)
    skipped = sum(r.skipped for r in results)
    failed = sum(bool(r.error) for r in results)
    print(f"{len(results)} file(s), {_fmt_bytes(total)} in {secs:.1f} s "
          f"({_fmt_bytes(total / secs if secs else 0)}/s)")
    print(f"  packets   {packets:>12,}  ({packets / secs if secs else 0:,.0f}/s)")
    if records:
        print(f"  records   {records:>12,}")
    print(f"  sessions  {sessions:>12,}")
    print(f"  warnings  {warnings:>12,}" + ("  (breachbook info shows them)" if warnings else ""))
    if skipped:
        print(f"  already in the case: {skipped}")
    if failed:
        print(f"  not ingested: {failed} (not a format Breachbook reads)")
    return 1 if failed and failed == len(results) else 0


def _options(args: argparse.Namespace) -> dict[str, object]:
    return {k: v for k, v in (("year", args.year), ("tz", args.tz)) if v is not None}


def cmd_info(args: argparse.Namespace) -> int:
    """Print the case's evidence, tables and warnings."""
    from forensics import open_case

    with open_case(args.case, create=False, read_only=True) as case:
        ev = case.evidence()
        print(f"case {case.path}")
        print(f"\nevidence ({len(ev)})")
        for row in ev.itertuples():
            print(f"  {row.evidence_id}  {row.format or '?':8} {row.status:9} {_fmt_bytes(row.size):>10}  "
                  f"sha256 {row.sha256}  {row.path}")
        print("\ntables")
        for row in case.tables().itertuples():
            print(f"  {row.table:18} {row.rows:>12,}  {row.doc}")
        w = case.sql("SELECT code, severity, sum(count) AS n, min(\"offset\") AS first_offset, "
                     "any_value(message) AS example FROM ingest_warnings GROUP BY ALL ORDER BY n DESC")
        if len(w):
            print("\nwarnings")
            for row in w.itertuples():
                print(f"  {row.code:28} {row.severity:8} {int(row.n):>8}  first at {row.first_offset}: "
                      f"{row.example}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Run a query and print the result."""
    from forensics import open_case

    with open_case(args.case, create=False, read_only=True) as case:
        df = case.sql(args.query)
    print_frame(df, args.format, max_rows=args.max_rows, width=200, empty="(no rows)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash evidence; exit 1 when any file changed or vanished."""
    from forensics import open_case

    with open_case(args.case, create=False, read_only=True) as case:
        ev = case.verify_evidence()
    for row in ev.itertuples():
        print(f"{row.status:8} {row.sha256}  {row.path}")
    return 0 if (ev["status"] == "ok").all() else 1


def cmd_scenario(args: argparse.Namespace) -> int:
    """Generate a training scenario with its answer key."""
    from forensics import scenario

    t0 = time.perf_counter()
    parts = [p for p in args.parts.split(",") if p] if args.parts else None
    key = scenario.generate(Path(args.out), seed=args.seed, profile=args.profile, noise=args.noise,
                            parts=parts)
    print(f"scenario seed {args.seed} ({args.profile}) written to {args.out} in "
          f"{time.perf_counter() - t0:.1f} s; answer key: {Path(args.out) / 'answer_key.json'}")
    if args.verbose:
        print(json.dumps(key, indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo case (scenario + ingest) and render its report."""
    from forensics.demo import build_demo

    report = build_demo(Path(args.out), Path(args.report), seed=args.seed)
    print(f"demo case: {args.out}\nreport:    {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render the post-breach report of a case to HTML."""
    from forensics.report import render_report

    params = dict(p.split("=", 1) for p in args.param)
    out = render_report(Path(args.case), Path(args.output), params)
    print(f"report written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    p = argparse.ArgumentParser(prog="breachbook", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"breachbook {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="register and ingest evidence files or folders")
    s.add_argument("case", help="case directory (created if missing)")
    s.add_argument("evidence", nargs="+", help="files or folders")
    s.add_argument("--format", help="force a format instead of detecting it (e.g. pcap)")
    s.add_argument("--strict", action="store_true", help="fail on the first corrupt record")
    s.add_argument("--md5", action="store_true", help="also record MD5 (SHA-256 always is)")
    s.add_argument("--year", type=int, help="year of year-less log times (syslog); inferred if absent")
    s.add_argument("--tz", help="time zone of zone-less log times, e.g. Europe/Berlin (default UTC)")
    s.add_argument("--workers", type=int, default=1, help="parse in this many processes")
    s.add_argument("--packets-only", action="store_true",
                   help="packet index and sessions only: no reassembly or protocol parsing")
    s.add_argument("--no-carve", action="store_true",
                   help="reassemble and parse protocols, but carve no files (later: breachbook carve)")
    s.add_argument("--executor", choices=["auto", "serial", "process", "dask"], default="auto")
    s.add_argument("--scheduler", help="Dask scheduler address (with --executor dask)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("info", help="evidence, tables and warnings of a case")
    s.add_argument("case")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("sql", help="run a SQL query against a case")
    s.add_argument("case")
    s.add_argument("query")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--max-rows", type=int, default=200)
    s.set_defaults(func=cmd_sql)

    s = sub.add_parser("verify", help="re-hash evidence against its registration")
    s.add_argument("case")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("scenario", help="training scenarios")
    ss = s.add_subparsers(dest="action", required=True)
    g = ss.add_parser("generate", help="generate a breach scenario with an answer key")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", required=True)
    g.add_argument("--profile", choices=["small", "standard", "large"], default="standard")
    g.add_argument("--noise", choices=["none", "low", "normal", "high"], default="normal")
    g.add_argument("--parts", help="story parts to include, comma-separated (default: all)")
    g.set_defaults(func=cmd_scenario)

    s = sub.add_parser("demo", help="build the demo case and its report")
    s.add_argument("--out", default="cases/demo")
    s.add_argument("--report", default="reports/demo-report.html")
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("report", help="render the post-breach report (HTML)")
    s.add_argument("case")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--param", action="append", default=[], help="notebook parameter k=v")
    s.set_defaults(func=cmd_report)

    from forensics import findings_cli, lateral_cli, scan_cli

    findings_cli.add_parser(sub)
    scan_cli.add_parser(sub)
    lateral_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``breachbook`` command."""
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace, console: bool = False) -> int:
    if args.command == "ingest" and args.workers <= 1 and args.executor in ("auto", "serial"):
        from forensics import _prehash

        _prehash.start(args.evidence)  # beside the engine's imports, on another core
    if console and args.command == "ingest":  # the process ends with the command (see run)
        from forensics._arrow import arrays_without_pandas

        arrays_without_pandas()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BreachbookError as exc:
        print(f"breachbook: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("breachbook: interrupted; the case keeps what was committed", file=sys.stderr)
        return 130


def ingest_process() -> None:
    """Set up this process for a command-line ingest, as :func:`run` does (and the benches).

    OpenBLAS kept to one thread and automatic garbage collection off (:func:`run`
    says why). Call it before numpy is imported.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported
    gc.disable()


def run() -> None:
    """The ``breachbook`` console script: :func:`main`, then a quick exit after ``ingest``.

    An ingest loads dozens of compiled numba kernels, and tearing them down at
    interpreter exit takes about 0.15 s after the work is done (measured). Once
    the command has returned (the case closed, its files written and renamed)
    and the output is flushed, the process ends at once instead. Other commands,
    which may leave worker processes or notebooks to clean up, exit normally.

    An ingest also keeps numpy's OpenBLAS to one thread (unless
    ``OPENBLAS_NUM_THREADS`` is set): its extra threads spin for about 0.1 s of
    CPU each after start-up, taking a core from the ingest, which does no
    linear algebra (1 GiB capture on 2 cores: 1.9-2.1 s -> 1.8 s, measured).

    And it runs without automatic garbage collection: loading the engine makes
    hundreds of thousands of objects that the collector walks again and again
    (0.05 s of a 1.6 s ingest, measured), while the ingest itself makes few
    reference cycles; the young objects are collected between files instead
    (the second pass collects its own batches, see ``forensics.apps``).

    And pyarrow builds its arrays without importing pandas, which only serves
    to recognise pandas objects an ingest never hands it: 0.1-0.16 s, on one
    core before the second pass forks (1 GiB bench capture, measured).

    Output piped into a reader that stops early (``| head``) ends the command
    quietly with status 141, as for a program ended by SIGPIPE.
    """
    args = build_parser().parse_args(sys.argv[1:])
    if args.command == "ingest":
        ingest_process()
    try:
        rc = _run(args, console=True)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): what the command was asked to do is done
        # (an ingest has committed before it prints). Quiet, as programs ended by SIGPIPE are.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 128 + 13
    if args.command == "ingest" and args.executor != "dask":
        logging.shutdown()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
