"""Full ingest with TCP reassembly and protocol parsing, timed beside tcpflow (``make bench``).

Generates the deterministic benchmark capture (tests/bench/gen_capture.py), then
times, each in its own process:

* ``tcpflow -r`` (stream reconstruction only, a file per flow written to a scratch folder),
* ``breachbook ingest`` with reassembly and the protocol parsers (HTTP, DNS, TLS,
  SMB, ...) but no file carving (``ingest --no-carve``): the work the target is
  about;
* Breachbook's default ingest, which also carves every file the sessions carried
  into the case's store (hashed three ways, entropy, a file each).

and prints wall time, CPU time, peak memory and the ratios (target: no slower
than 2x tcpflow), with the Breachbook time cut into its parts (start-up, the
packet pass and the commit; the second pass: reassembly, protocols and carving,
timed around the engine's own step). tcpflow's time varies a lot between runs
on some machines (its kernel time creating a file per flow): compare the runs.
The tools alternate ``--repeat`` times (default 3) so that all see the same
machine load, and each one's median run is reported.

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

from _measure import compile_bytecode, measure, median_run  # noqa: E402
from gen_capture import _parse_size as parse_size  # noqa: E402
from gen_capture import generate  # noqa: E402

# The Breachbook run: the ``breachbook ingest`` command in its own process, exactly as the console
# script runs it (its process settings, the evidence hash begun before the engine loads, a quick
# exit at the end), with the engine's second pass (reassembly, protocols, carving, staging their
# tables) timed around its own ``_second_pass`` step; the rest is start-up, the packet pass and the
# commit. Rows are counted afterwards, outside the timing.
_RUN = (
    "import json, os, sys, time\n"
    "t = time.perf_counter()\n"
    "from forensics import _prehash, cli\n"
    "cli.ingest_process()  # as the console script (forensics.cli.run) does\n"
    "_prehash.start([sys.argv[2]])  # as forensics.cli._run does, before the engine loads\n"
    "import forensics.ingest as fi\n"
    "second = [0.0]\n"
    "inner = fi._second_pass\n"
    "def timed(*a, **k):\n"
    "    t = time.perf_counter()\n"
    "    try:\n"
    "        return inner(*a, **k)\n"
    "    finally:\n"
    "        second[0] += time.perf_counter() - t\n"
    "fi._second_pass = timed\n"
    "argv = ['ingest', '-q', *([] if sys.argv[3] == 'carve' else ['--no-carve']), sys.argv[1], sys.argv[2]]\n"
    "rc = cli._run(cli.build_parser().parse_args(argv), console=True)\n"
    "print(json.dumps({'ingest_s': time.perf_counter() - t, 'second_s': second[0]}))\n"
    "sys.stdout.flush()\n"
    "os._exit(rc)  # as forensics.cli.run does after an ingest\n"
)
_COUNT = (
    "import json, sys, forensics\n"
    "with forensics.open_case(sys.argv[1], read_only=True) as c:\n"
    "    print(json.dumps({t: int(c.sql(f'SELECT count(*) AS n FROM {t}')['n'][0]) for t in "
    "('http', 'dns', 'tls', 'smb_files', 'stream_gaps', 'carved_files')}))\n"
)
TOOLS = ("tcpflow", "breachbook --no-carve", "breachbook")


def warm() -> None:
    """Compile (or load) every numba kernel once, and the modules' bytecode, so no timed run pays for it."""
    compile_bytecode()
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
        "import forensics.apps\n"
        "getattr(forensics.apps, 'load_kernels', lambda: None)()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def bench_one(capture: Path, work: Path, repeat: int = 1) -> dict:
    """Time tcpflow and Breachbook's ingest (without and with carving) on one capture.

    With ``repeat`` > 1 the three alternate, so all see the same machine load, and
    each one's median run (by wall time) is reported, every run kept under ``runs``.
    """
    res: dict = {"file": str(capture), "bytes": capture.stat().st_size}
    runs: dict[str, list[dict]] = {t: [] for t in TOOLS}
    for _ in range(repeat):
        if shutil.which("tcpflow"):
            flows = work / "tcpflow-out"
            shutil.rmtree(flows, ignore_errors=True)
            flows.mkdir()
            runs["tcpflow"].append(measure(["tcpflow", "-r", str(capture), "-o", str(flows)], sync=True))
            shutil.rmtree(flows, ignore_errors=True)
        for tool, mode in (("breachbook --no-carve", "no-carve"), ("breachbook", "carve")):
            case = work / "case"
            shutil.rmtree(case, ignore_errors=True)
            m = measure([sys.executable, "-c", _RUN, str(case), str(capture), mode], output=True, sync=True)
            m["packet_s"] = m["ingest_s"] - m["second_s"]
            m["rows"] = json.loads(subprocess.run([sys.executable, "-c", _COUNT, str(case)], check=True,
                                                  capture_output=True, text=True).stdout)
            runs[tool].append(m)
            shutil.rmtree(case, ignore_errors=True)
    for tool, rs in runs.items():
        if rs:
            res[tool] = median_run(rs)
    res["runs"] = runs
    if "tcpflow" in res:
        res["ratio"] = {t: res[t]["seconds"] / res["tcpflow"]["seconds"] for t in TOOLS[1:]}
    return res


def main() -> int:
    """Generate the capture, run both tools, print the table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="capture size (K/M/G)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating; medians reported")
    ap.add_argument("--capture", type=Path, help="time this capture instead of generating one")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warm()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        if args.capture:
            cap, packets = args.capture, 0
        else:
            cap = work / "bench.pcap"
            packets = generate(cap, parse_size(args.size), seed=args.seed)["packets"]
        r = bench_one(cap, work, max(1, args.repeat))
        r["packets"] = packets
    mb = r["bytes"] / 1e6
    n = len(r["runs"]["breachbook"])
    print(
        f"{'tool':>22} {'seconds':>8} {'cpu s':>7} {'peak MiB':>9} {'MB/s':>7}   "
        f"({mb:.0f} MB, {r['packets']:,} packets; median of {n} run{'s' if n > 1 else ''})"
    )
    for tool in TOOLS:
        if tool in r:
            m = r[tool]
            print(
                f"{tool:>22} {m['seconds']:>8.2f} {m['cpu_s']:>7.2f} {m['peak_mib']:>9.0f} "
                f"{mb / m['seconds']:>7.0f}"
            )
    for tool in TOOLS[1:]:
        b = r[tool]
        print(f"{tool}: start-up, packet pass and commit {b['packet_s']:.2f} s, "
              f"second pass {b['second_s']:.2f} s, interpreter start {b['seconds'] - b['ingest_s']:.2f} s")
    if n > 1:
        for tool in TOOLS:
            if r["runs"][tool]:
                print(f"{tool + ' runs':>28} " + " ".join(f"{x['seconds']:.2f}" for x in r["runs"][tool]))
    print(f"rows: {r['breachbook']['rows']}")
    for tool, ratio in r.get("ratio", {}).items():
        verdict = "within" if ratio <= 2 else "OVER"
        print(f"{tool} takes {ratio:.2f}x tcpflow's time ({verdict} the 2x target)")
    (out / "bench_reassembly.json").write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
