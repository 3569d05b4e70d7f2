"""How closely the pcap protocol tables reproduce Zeek's own logs (``make conformance``).

Truth: the http.log, dns.log, ssl.log, smb_files.log, smb_mapping.log,
ftp.log and smtp.log baselines under ``zeek/testing/btest/Baseline`` of the
shared test data. For each baseline log the Zeek run that wrote it is read
from ``BASELINE_PROVENANCE.tsv`` (following ``mv``/``cp`` renames); logs whose
trace is not in the shared data, or that the test's own script reshapes
(:data:`SKIPPED`), are left out with the reason. Each trace is ingested into a
scratch case and reconstructed; rows are matched by connection 4-tuple plus a
per-table key (HTTP ``trans_depth``, DNS ``trans_id`` and query, in file order
otherwise), and a Zeek row counts as reproduced when every compared field
(:data:`FIELDS`) is equal (``-`` is NULL, ``(empty)`` an empty set, times and
intervals to the microsecond).

    python -m forensics.conformance [--testdata ../shared/testdata] [--diffs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from forensics.conformance._fields import FIELDS, PREFIX, RENAME, REQUIRED, SKIPPED, TABLE_OF
from forensics.conformance._zeeklog import plan, read_zeek_log

__all__ = [
    "FIELDS",
    "REQUIRED",
    "SKIPPED",
    "TABLE_OF",
    "Result",
    "compare",
    "main",
    "plan",
    "read_zeek_log",
    "run",
    "shares",
]


@dataclass
class Result:
    """Outcome for one baseline log."""

    log: str
    table: str
    trace: Path
    rows: int = 0
    match: int = 0
    extra: int = 0
    diffs: dict[tuple, str] = field(default_factory=dict)


def _ours_val(v: Any, ztype: str) -> Any:
    try:
        import pandas as pd

        if v is None or (not isinstance(v, list | tuple) and pd.isna(v)):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "tolist"):
        v = v.tolist()
    if ztype.startswith(("set[", "vector[")):
        inner = ztype[ztype.index("[") + 1 : -1]
        items = tuple(_ours_val(x, inner) for x in v)
        return tuple(sorted(items, key=str)) if ztype.startswith("set[") else items
    if isinstance(v, datetime):
        return round(v.timestamp(), 6)
    if ztype in ("interval", "double") or (ztype == "time" and isinstance(v, int | float)):
        return round(float(v), 6)
    if ztype in ("count", "int", "port"):
        return int(v)
    if ztype == "bool":
        return bool(v)
    return v


def _key(zpath: str, r: dict[str, Any]) -> tuple:
    k: tuple = (r.get("orig_h"), r.get("orig_p"), r.get("resp_h"), r.get("resp_p"))
    if zpath in ("http", "smtp"):
        k += (r.get("trans_depth"),)
    elif zpath == "dns":
        k += (r.get("trans_id"), r.get("query"))
    elif zpath == "ftp":
        k += (r.get("command"),)
    elif zpath == "smb_files":
        k += (r.get("action"),)
    elif zpath == "kerberos":
        k += (r.get("request_type"),)
    elif zpath == "dce_rpc":
        k += (r.get("operation"),)
    return k


def _col(zfield: str) -> str:
    return RENAME.get(zfield, zfield.replace(".", "_").rstrip("?"))


def compare(lid: str, zpath: str, types: dict[str, str], zeek: list[dict], ours: list[dict]) -> Result:
    """Pair rows by key (in order within a key) and count the Zeek rows reproduced field for field."""
    res = Result(lid, TABLE_OF[zpath], Path())
    mine: dict[tuple, list[dict]] = defaultdict(list)
    # Zeek logs only FTP::logged_commands and SMB::logged_file_actions (tests widen them);
    # we keep every command and action, so only the kinds Zeek logged are compared.
    kind = {"ftp": "command", "smb_files": "action"}.get(zpath)
    if kind:
        logged = {z.get(kind) for z in zeek}
        ours = [o for o in ours if o.get(kind) in logged]
    for o in ours:
        conv = {
            f: _ours_val(o.get(_col(f)), types.get(f.rstrip("?"), "string"))
            for f in FIELDS[zpath] + ("orig_h", "orig_p", "resp_h", "resp_p")
        }
        mine[_key(zpath, conv)].append(conv)
    used: dict[tuple, int] = defaultdict(int)
    for z in zeek:
        res.rows += 1
        k = _key(zpath, z)
        if used[k] >= len(mine[k]):
            res.diffs[(lid, *k, "row")] = "missing on our side"
            continue
        o = mine[k][used[k]]
        used[k] += 1
        bad = []
        for f in FIELDS[zpath]:
            zv: Any
            ov: Any
            if f.endswith("?"):  # compared for presence only
                zv, ov = z.get(f[:-1]) is not None, o.get(f) is not None
            else:
                zv, ov = z.get(f), o.get(f)
                if f in PREFIX and isinstance(zv, str) and isinstance(ov, str) and ov.startswith(zv):
                    ov = zv
            if zv != ov:
                bad.append(f)
                res.diffs[(lid, *k, f)] = f"zeek={zv!r} ours={ov!r}"
        res.match += not bad
    for k, v in mine.items():
        if len(v) > used[k]:
            res.extra += len(v) - used[k]
            res.diffs[(lid, *k, "extra")] = f"{len(v) - used[k]} extra row(s) on our side"
    return res


def run(testdata: Path, work: Path) -> tuple[list[Result], dict[str, str]]:
    """Ingest and reconstruct every trace of the plan; compare each baseline log."""
    import forensics
    from forensics.apps import reconstruct_case

    use, skip = plan(testdata)
    cache: dict[Path, tuple[Any, str]] = {}
    results = []
    for lid, zpath, trace in use:
        if trace not in cache:
            case = forensics.open_case(work / f"case{len(cache)}")
            (res,) = case.ingest(trace)
            reconstruct_case(case, res.evidence_id)  # idempotent: replaces the pcap rows of the ingest
            cache[trace] = (case, str(res.evidence_id))
        case, eid = cache[trace]
        types, zrows = read_zeek_log(testdata / "zeek/testing/btest/Baseline" / lid)
        df = case.sql(
            f"SELECT * FROM {TABLE_OF[zpath]} WHERE evidence_id = ? AND source = 'pcap' "
            "ORDER BY ts, record_id",
            [eid],
        )
        ours = df.astype(object).where(df.notna(), None).to_dict("records")
        r = compare(lid, zpath, types, zrows, ours)
        r.trace = trace
        results.append(r)
    for case, _ in cache.values():
        case.close()
    return results, skip


def shares(results: list[Result]) -> dict[str, tuple[int, int]]:
    """(rows, matching rows) per table."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        out[r.table][0] += r.rows
        out[r.table][1] += r.match
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the share of Zeek rows reproduced per baseline log and per table."""
    ap = argparse.ArgumentParser(description="Compare pcap-derived protocol tables with Zeek's baselines.")
    ap.add_argument(
        "--testdata", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "testdata"
    )
    ap.add_argument("--diffs", action="store_true", help="list every differing field")
    args = ap.parse_args(argv)
    if not (args.testdata / "zeek").exists():
        print(f"no Zeek baselines under {args.testdata}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        results, skip = run(args.testdata, Path(tmp))
    print(f"{'baseline log':<72} {'table':<10} {'rows':>5} {'match':>7} {'extra':>5}")
    for r in results:
        print(f"{r.log:<72} {r.table:<10} {r.rows:>5} {r.match / max(r.rows, 1):>7.1%} {r.extra:>5}")
    print()
    print(f"{'table':<12} {'zeek rows':>9} {'reproduced':>10} {'share':>7}")
    total = [0, 0]
    sh = shares(results)
    for t in [*REQUIRED, *sorted(set(sh) - set(REQUIRED))]:
        if t not in sh:
            print(f"{t:<12} {'-':>9} {'-':>10} {'-':>7}  (no baseline in the shared data)")
            continue
        n, m = sh[t]
        print(f"{t:<12} {n:>9} {m:>10} {m / max(n, 1):>7.1%}{'' if t in REQUIRED else '  (extra)'}")
        if t in REQUIRED:
            total[0] += n
            total[1] += m
    print(f"{'required':<12} {total[0]:>9} {total[1]:>10} {total[1] / max(total[0], 1):>7.1%}")
    if skip:
        print("\nnot compared:")
        for k, v in sorted(skip.items()):
            print(f"  {k}: {v}")
    if args.diffs:
        print("\ndifferences:")
        for r in results:
            for key, text in sorted(r.diffs.items(), key=str):
                print(f"  {key}: {text}")
    return 0
