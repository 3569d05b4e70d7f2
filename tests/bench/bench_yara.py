"""Benchmark: YARA over a case's carved files, Breachbook vs the ``yara`` command-line tool.

Both scan the same files with the same rule set in the same run, alternately,
and the best of ``--repeat`` runs of each is reported (the machine may be
shared). Breachbook's time is end to end: compiling every rule file (with the
per-file failure report), scanning with per-file external variables and a
timeout, and writing ``yara_hits``. The CLI gets the same rule files (one
namespace each, as Breachbook does), the external variables as empty strings,
and as many threads as Breachbook. Target: within 1.2x of the CLI.

If the case holds fewer than ``--files`` carved files, test files are generated
and stored first: PE stubs like the scenario's (some with the training
markers), EICAR, random (packed-like) blobs, text and CSV, zip archives.

::

    .venv/bin/python tests/bench/bench_yara.py                       # signature-base, 300 files
    .venv/bin/python tests/bench/bench_yara.py --case cases/demo --rules data/rules
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import forensics  # noqa: E402
from forensics import yarascan  # noqa: E402
from forensics.filestore import store  # noqa: E402
from forensics.scenario import artifacts  # noqa: E402

SIGBASE = ROOT.parent / "shared" / "testdata" / "signature-base" / "yara"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def generate(case: forensics.Case, n: int, total_mb: float, seed: int) -> None:
    """Store ``n`` varied files of about ``total_mb`` MB in all into the case."""
    rng = random.Random(seed)
    sizes = [int(1024 * (4096 ** rng.random())) for _ in range(n)]  # log-uniform 1 KB .. 4 MB
    scale = total_mb * 1e6 / sum(sizes)
    for i, size in enumerate(sizes):
        size = max(64, int(size * scale))
        kind = i % 6
        if i == 0:
            data, name = EICAR, "eicar.com"
        elif kind == 0:
            marker = rng.choice([artifacts.DROPPER_MARKER, artifacts.IMPLANT_MARKER, None])
            data = artifacts.pe_stub(rng, marker, f"bench {i}", size, 1_700_000_000)
            name = f"setup_{i}.exe"
        elif kind == 1:
            data, name = rng.randbytes(size), f"blob_{i}.bin"
        elif kind == 2:
            table = rng.choice(["accounts", "suppliers", "salaries"])
            data, name = artifacts.stolen_table(rng, size, table), f"export_{i}.csv"
        elif kind == 3:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
                z.writestr("doc.bin", rng.randbytes(size))
            data, name = buf.getvalue(), f"archive_{i}.zip"
        elif kind == 4:
            words = [b"GET", b"POST", b"/index.php", b"cmd.exe", b"powershell", b"http://", b"<script>",
                     b"SELECT", b"password", b"admin", b"\r\n", b" "]
            data = b" ".join(rng.choice(words) for _ in range(size // 6))
            name = f"page_{i}.html"
        else:
            head = artifacts.pe_stub(rng, None, f"dll {i}", 4096, 1_600_000_000)
            data, name = head + rng.randbytes(max(0, size - len(head))), f"lib_{i}.dll"
        store(case, data, claimed_name=name, protocol="http", uid=f"Cbench{i}", direction="download")


def run_cli(yara: str, rules: list[tuple[Path, str]], target: Path, threads: int) -> tuple[float, set]:
    args = [yara, "-p", str(threads), "-r", "-w"]
    for var in yarascan.EXTERNALS:
        args += ["-d", f"{var}="]
    args += [f"n{i}:{p}" for i, (p, _) in enumerate(rules)]
    t = time.perf_counter()
    out = subprocess.run([*args, str(target)], capture_output=True, text=True, check=True).stdout
    secs = time.perf_counter() - t
    hits = {(Path(parts[1]).name, parts[0]) for parts in (ln.split(maxsplit=1) for ln in out.splitlines())
            if len(parts) == 2}
    return secs, hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", type=Path, help="case to scan (default: a generated one under --out)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--rules", nargs="+", type=Path, default=[SIGBASE])
    ap.add_argument("--files", type=int, default=300, help="generate files up to this many")
    ap.add_argument("--mb", type=float, default=150.0, help="total size of the generated files")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--yara", default=shutil.which("yara") or "/usr/bin/yara")
    args = ap.parse_args()
    if not Path(args.yara).exists():
        print(f"the yara command-line tool is needed ({args.yara}): apt-get install yara", file=sys.stderr)
        return 2
    for r in args.rules:
        if not r.exists():
            print(f"no rules at {r} (signature-base lives in ../shared/testdata)", file=sys.stderr)
            return 2
    case_dir = args.case or args.out / "bench-yara-case"
    with forensics.open_case(case_dir) as case:
        have = int(case.sql("SELECT count(DISTINCT sha256) AS n FROM carved_files")["n"][0])
        if have < args.files:
            t = time.perf_counter()
            generate(case, args.files - have, args.mb, args.seed)
            print(f"stored {args.files - have} generated files in {time.perf_counter() - t:.1f} s")
        files = case.sql("SELECT count(DISTINCT sha256) AS n, sum(size) AS b FROM "
                         "(SELECT DISTINCT sha256, size FROM carved_files)").iloc[0]
        print(f"case {case.path}: {int(files.n)} files, {int(files.b) / 1e6:.1f} MB")
        compiled_files = yarascan.compile_rules(args.rules)
        good = [(f.path, f.namespace) for f in compiled_files.files if f.status == "compiled"]
        print(f"rules: {len(good)} files compiled, {len(compiled_files.failed)} failed "
              f"({', '.join(str(f.path.name) for f in compiled_files.failed) or 'none'})")
        ours: list[tuple[float, float, float]] = []
        cli: list[float] = []
        cli_hits: set = set()
        for _ in range(args.repeat):
            secs, cli_hits = run_cli(args.yara, good, case.path / "carved", args.workers)
            cli.append(secs)
            t = time.perf_counter()
            rep = yarascan.scan(case, args.rules, timeout=60, workers=args.workers)
            ours.append((time.perf_counter() - t, rep.seconds["compile"], rep.seconds["scan"]))
        our_hits = set(case.sql("SELECT sha256, rule FROM yara_hits WHERE run_id = ?",
                                [rep.run_id]).itertuples(index=False, name=None))
        best = min(ours)
        print(f"breachbook scan: {best[0]:.2f} s  (compile {best[1]:.2f} s, scan {best[2]:.2f} s; "
              f"all runs {', '.join(f'{o[0]:.2f}' for o in ours)})  hits {len(our_hits)}")
        print(f"yara CLI {args.yara} -p {args.workers}: {min(cli):.2f} s  "
              f"(all runs {', '.join(f'{c:.2f}' for c in cli)})  hits {len(cli_hits)}")
        ratio = best[0] / min(cli)
        paired = sorted(o[0] / c for o, c in zip(ours, cli, strict=True))
        print(f"ratio breachbook / yara CLI: {ratio:.2f}x best vs best, {paired[len(paired) // 2]:.2f}x "
              f"median of paired runs  (target <= 1.20x)")
        only_ours, only_cli = our_hits - cli_hits, cli_hits - our_hits
        if only_ours or only_cli:
            print(f"hits differ (external variables are per file in Breachbook, empty for the CLI): "
                  f"only Breachbook {sorted(only_ours)[:5]}, only CLI {sorted(only_cli)[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
