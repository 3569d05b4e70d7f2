"""Log-reader speed beside the usual alternatives, on the same input in the same run.

* EVTX records/s: our ``evtx`` source (the Rust evtx crate plus our mapping to
  ``events``/``logons`` rows) against python-evtx (pure Python), which
  only renders each record's XML (less work than ours).
* Zeek conn.log rows/s: our vectorised TSV reader (typed ``sessions`` rows)
  against ``pandas.read_csv`` (zat's reader, where installed, is pandas too).

Usage::

    .venv/bin/python tests/bench/bench_logs.py [--evtx FILE] [--conn-rows 1000000]

Not a test: it prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "testdata"
sys.path.insert(0, str(ROOT))


def _ctx(path: Path):
    from forensics.ingest import IngestContext

    return IngestContext(path=path, evidence_id="bench")


def bench_evtx(path: Path, repeat: int) -> tuple[float, float, int]:
    """(our records/s, python-evtx records/s, records) on ``path``."""
    from forensics.sources import get

    src = get("evtx")
    best = float("inf")
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = sum(tbl.num_rows for name, tbl in src.read(path, _ctx(path)) if name == "events")
        best = min(best, time.perf_counter() - t)
    ours = n / best
    try:
        import Evtx.Evtx as pyevtx
    except ImportError:
        return ours, float("nan"), n
    t = time.perf_counter()
    m = 0
    with pyevtx.Evtx(str(path)) as log:
        for rec in log.records():
            rec.xml()
            m += 1
    theirs = m / (time.perf_counter() - t)
    return ours, theirs, n


CONN_HEAD = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#open\t2024-01-01-00-00-00\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto"
    "\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes"
    "\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring"
    "\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n")


def make_conn_log(path: Path, rows: int) -> None:
    """A conn.log of ``rows`` plausible rows (Zeek's TSV layout, '-' and '(empty)' included)."""
    rnd = random.Random(7)
    states = ["SF", "S0", "REJ", "RSTO", "OTH", "SH"]
    services = ["http", "dns", "ssl", "-", "smb", "-"]
    with path.open("w") as fh:
        fh.write(CONN_HEAD)
        ts = 1_700_000_000.0
        for i in range(rows):
            ts += rnd.random() / 100
            proto = "udp" if i % 3 == 0 else "tcp"
            dur = f"{rnd.random() * 30:.6f}" if i % 5 else "-"
            ob = str(rnd.randrange(0, 100000)) if dur != "-" else "-"
            fh.write(f"{ts:.6f}\tC{i:017d}\t10.{i % 250}.{(i >> 8) % 250}.{i % 200 + 1}\t"
                     f"{rnd.randrange(1024, 65535)}\t192.0.2.{i % 250}\t{rnd.choice([53, 80, 443, 445])}"
                     f"\t{proto}\t{rnd.choice(services)}\t{dur}\t{ob}\t{ob}\t{rnd.choice(states)}"
                     f"\tT\tF\t0\tShADadFf\t{rnd.randrange(1, 90)}\t{rnd.randrange(40, 9000)}"
                     f"\t{rnd.randrange(0, 90)}\t{rnd.randrange(0, 9000)}\t(empty)\n")
        fh.write("#close\t2024-01-01-01-00-00\n")


def bench_conn(path: Path, rows: int, repeat: int) -> tuple[float, float]:
    """(our rows/s, pandas rows/s) reading the conn.log at ``path``."""
    import pandas as pd

    from forensics.sources import get

    src = get("zeek")
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        n = sum(tbl.num_rows for name, tbl in src.read(path, _ctx(path)) if name == "sessions")
        best = min(best, time.perf_counter() - t)
        assert n == rows, n
    names = CONN_HEAD.split("#fields\t")[1].split("\n")[0].split("\t")
    best_pd = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        df = pd.read_csv(path, sep="\t", comment="#", header=None, names=names,
                         na_values=["-", "(empty)"], keep_default_na=False, low_memory=False)
        df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
        best_pd = min(best_pd, time.perf_counter() - t)
        assert len(df) == rows
    return rows / best, rows / best_pd


def main() -> None:
    """Run both benchmarks and print the numbers and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evtx", type=Path, default=SHARED / "evtx" / "samples" / "security.evtx")
    ap.add_argument("--conn-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"EVTX: {args.evtx}")
    ours, theirs, n = bench_evtx(args.evtx, args.repeat)
    print(f"  breachbook evtx source : {ours:12,.0f} records/s ({n} records)")
    print(f"  python-evtx (xml)      : {theirs:12,.0f} records/s")
    print(f"  ratio                  : {ours / theirs:12.1f}x")
    with tempfile.TemporaryDirectory() as tmp:
        conn = Path(tmp) / "conn.log"
        make_conn_log(conn, args.conn_rows)
        size = conn.stat().st_size / 1e6
        print(f"Zeek conn.log: {args.conn_rows:,} rows, {size:.0f} MB (synthetic)")
        ours_c, pd_c = bench_conn(conn, args.conn_rows, args.repeat)
        print(f"  breachbook zeek reader : {ours_c:12,.0f} rows/s")
        print(f"  pandas.read_csv        : {pd_c:12,.0f} rows/s")
        print(f"  ratio                  : {ours_c / pd_c:12.1f}x")


if __name__ == "__main__":
    main()
