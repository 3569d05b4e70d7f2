"""Full ingest with TCP reassembly and protocol parsing, timed beside tcpflow (``make bench``).

Generates the deterministic benchmark capture (tests/bench/gen_capture.py), then
times, each in its own process:

* ``tcpflow -r`` (stream reconstruction only, files written to a scratch folder),
* Breachbook: the packet pass, reassembly of every TCP session and the protocol
  parsers (HTTP, DNS, TLS, SMB, ...), everything committed to a fresh case.

and prints wall time, peak memory and the ratio (target: no slower than 2x
tcpflow). Until the engine runs the reconstruction itself, the Breachbook run
calls :func:`forensics.apps.reconstruct_case` right after the ingest, in the
same process and timing.

    python tests/bench/bench_reassembly.py --size 1G --out bench-out
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_capture import _parse_size as parse_size  # noqa: E402
from gen_capture import generate  # noqa: E402

_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
    "dt = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(dt, rss, r.returncode)\n"
    "sys.stdout.write(r.stdout.decode(errors='replace')[-4000:])\n"
    "sys.stderr.write(r.stderr.decode(errors='replace')[-2000:])\n"
)

# The Breachbook run: ingest, then (until the engine does it) the reconstruction pass.
_RUN = (
    "import json, sys, time\n"
    "from pathlib import Path\n"
    "import forensics, forensics.ingest\n"
    "from forensics.apps import reconstruct_case\n"
    "wired = 'reconstruct' in Path(forensics.ingest.__file__).read_text()\n"
    "t = time.perf_counter()\n"
    "case = forensics.open_case(sys.argv[1])\n"
    "(res,) = case.ingest(sys.argv[2])\n"
    "t1 = time.perf_counter()\n"
    "rows = {} if wired else reconstruct_case(case, res.evidence_id)\n"
    "t2 = time.perf_counter()\n"
    "n = {t: int(case.sql(f'SELECT count(*) AS n FROM {t}')['n'][0]) for t in "
    "('http', 'dns', 'tls', 'smb_files', 'stream_gaps')}\n"
    "print(json.dumps({'ingest_s': t1 - t, 'reconstruct_s': t2 - t1, 'wired': wired, 'rows': n}))\n"
)


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process: wall seconds, peak RSS (MiB) and its last output line."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    dt, rss, rc = lines[0].split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[0]} failed ({rc}): {out.stderr}")
    res: dict = {"seconds": float(dt), "peak_mib": int(rss) / 1024}
    if len(lines) > 1 and lines[-1].startswith("{"):
        res.update(json.loads(lines[-1]))
    return res


def warm() -> None:
    """Compile (or load) every numba kernel once, so no timed run pays for it."""
    code = (
        "import tempfile, forensics.net\n"
        "forensics.net.warmup()\n"
        "from pathlib import Path\n"
        "import forensics\n"
        "from forensics.apps import reconstruct_case\n"
        f"sys_path = {str(HERE.parent)!r}\n"
        "import sys; sys.path.insert(0, sys_path)\n"
        "from _pcapbuild import eth, handshake_session, write_pcap\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    p = write_pcap(Path(d) / 'w.pcap', [eth(f) for f in handshake_session()])\n"
        "    c = forensics.open_case(Path(d) / 'c'); c.ingest(p); reconstruct_case(c)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def bench_one(capture: Path, work: Path) -> dict:
    """Time tcpflow and Breachbook (ingest + reassembly + protocols) on one capture."""
    res: dict = {"file": str(capture), "bytes": capture.stat().st_size}
    if shutil.which("tcpflow"):
        flows = work / "tcpflow-out"
        shutil.rmtree(flows, ignore_errors=True)
        flows.mkdir()
        res["tcpflow"] = measure(["tcpflow", "-r", str(capture), "-o", str(flows)])
        shutil.rmtree(flows, ignore_errors=True)
    case = work / "case"
    shutil.rmtree(case, ignore_errors=True)
    res["breachbook"] = measure([sys.executable, "-c", _RUN, str(case), str(capture)])
    shutil.rmtree(case, ignore_errors=True)
    if "tcpflow" in res:
        res["ratio"] = res["breachbook"]["seconds"] / res["tcpflow"]["seconds"]
    return res


def main() -> int:
    """Generate the capture, run both tools, print the table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="capture size (K/M/G)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warm()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        cap = work / "bench.pcap"
        summary = generate(cap, parse_size(args.size), seed=args.seed)
        r = bench_one(cap, work)
        r["packets"] = summary["packets"]
    mb = r["bytes"] / 1e6
    print(
        f"{'tool':>22} {'seconds':>8} {'peak MiB':>9} {'MB/s':>7}   ({mb:.0f} MB, {r['packets']:,} packets)"
    )
    for tool in ("tcpflow", "breachbook"):
        if tool in r:
            m = r[tool]
            print(f"{tool:>22} {m['seconds']:>8.2f} {m['peak_mib']:>9.0f} {mb / m['seconds']:>7.0f}")
    b = r["breachbook"]
    print(f"{'of which packet pass':>22} {b['ingest_s']:>8.2f}")
    print(
        f"{'reassembly+protocols':>22} {b['reconstruct_s']:>8.2f}"
        + ("  (inside the ingest: engine wired)" if b["wired"] else "")
    )
    print(f"rows: {b['rows']}")
    if "ratio" in r:
        verdict = "within" if r["ratio"] <= 2 else "OVER"
        print(f"breachbook takes {r['ratio']:.2f}x tcpflow's time ({verdict} the 2x target)")
    (out / "bench_reassembly.json").write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
