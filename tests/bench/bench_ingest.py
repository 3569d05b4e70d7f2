"""Ingest speed and memory beside peer tools, in the same run (``make bench``).

Generates deterministic captures (tests/bench/gen_capture.py), then times:

* ``breachbook ingest`` (packet index + sessions into a fresh case),
* ``tshark -q -z conv,tcp`` (the issue's reference),

each as its own process, reporting wall time, peak resident memory and the
ratio. Run at two sizes to show that memory does not grow with the file. The
tools alternate ``--repeat`` times (default 3) so that all see the same machine
load, and each one's median run is reported.

    python tests/bench/bench_ingest.py --size 1G --small 100M --out bench-out
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


def bench_one(capture: Path, work: Path, repeat: int = 1) -> dict:
    """Time breachbook and its peers on one capture.

    With ``repeat`` > 1 the tools alternate, so all see the same machine load, and
    each one's median run (by wall time) is reported, every run kept under ``runs``.
    """
    size = capture.stat().st_size
    res: dict = {"file": str(capture), "bytes": size}
    case = work / f"case-{capture.stem}"
    # The packet index and sessions (tshark conv's job); reassembly and protocols are
    # timed beside tcpflow by bench_reassembly.py.
    bb = [sys.executable, "-m", "forensics.cli", "ingest", "-q", "--packets-only", str(case),
          str(capture)]
    # tcpflow, the peer of reassembly, is timed by bench_reassembly.py: deleting the hundreds
    # of thousands of files it writes here slowed the runs that came after it.
    runs: dict[str, list[dict]] = {"breachbook": [], "tshark_conv_tcp": []}
    for _ in range(repeat):
        shutil.rmtree(case, ignore_errors=True)
        runs["breachbook"].append(measure(bb, sync=True))
        shutil.rmtree(case, ignore_errors=True)
        if shutil.which("tshark"):
            runs["tshark_conv_tcp"].append(
                measure(["tshark", "-q", "-r", str(capture), "-z", "conv,tcp"], sync=True))
    for tool, rs in runs.items():
        if rs:  # the median run's time, and the highest peak memory of all runs
            res[tool] = {**median_run(rs), "peak_mib": max(r["peak_mib"] for r in rs)}
    res["runs"] = {tool: [r["seconds"] for r in rs] for tool, rs in runs.items() if rs}
    if "tshark_conv_tcp" in res:
        res["ratio_tshark"] = res["tshark_conv_tcp"]["seconds"] / res["breachbook"]["seconds"]
    return res


def main() -> int:
    """Generate the captures, run the comparison, print a table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="large capture size (K/M/G)")
    ap.add_argument("--small", default="100M", help="small capture size, for the memory comparison")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--keep", action="store_true", help="keep the generated captures")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating; medians reported")
    ap.add_argument("--no-interactive", dest="interactive", action="store_false",
                    help="skip the small-packet (interactive) capture")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Compile the kernels once so no measured run pays for it.
    compile_bytecode()  # as installed (see _measure.compile_bytecode)
    subprocess.run([sys.executable, "-c", "import forensics.net; forensics.net.warmup()"], check=True)
    results = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        runs = [("bulk", "small", args.small), ("bulk", "large", args.size)]
        if args.interactive:
            runs.append(("interactive", "large", args.size))
        for mix, label, size in runs:
            cap = work / f"bench-{mix}-{label}.pcap"
            summary = generate(cap, parse_size(size), seed=1, mix=mix)
            r = bench_one(cap, work, max(1, args.repeat))
            r["label"], r["mix"], r["packets"] = label, mix, summary["packets"]
            results.append(r)
            if args.keep:
                shutil.copy(cap, out / cap.name)
            cap.unlink()
    head = ("mix", "capture", "packets", "tool", "seconds", "peak MiB", "MB/s")
    print("{:>12} {:>9} {:>10} {:>16} {:>8} {:>9} {:>7}".format(*head))
    for r in results:
        mb = r["bytes"] / 1e6
        for tool in ("breachbook", "tshark_conv_tcp"):
            if tool in r:
                m = r[tool]
                print(f"{r['mix']:>12} {mb:>7.0f}MB {r['packets']:>10,} {tool:>16} {m['seconds']:>8.2f} "
                      f"{m['peak_mib']:>9.0f} {mb / m['seconds']:>7.0f}")
        runs = "; ".join(f"{t} " + ", ".join(f"{x:.2f}" for x in xs) for t, xs in r["runs"].items())
        print(f"{'':>33} runs (s): {runs}")
        if "ratio_tshark" in r:
            print(f"{'':>33} breachbook is {r['ratio_tshark']:.1f}x faster than tshark -z conv,tcp "
                  f"(medians of {len(r['runs']['breachbook'])})")
    (out / "bench_ingest.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
