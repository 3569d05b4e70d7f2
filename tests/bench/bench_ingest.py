"""Ingest speed and memory beside peer tools, in the same run (``make bench``).

Generates deterministic captures (tests/bench/gen_capture.py), then times:

* ``breachbook ingest`` (packet index + sessions into a fresh case),
* ``tshark -q -z conv,tcp`` (the issue's reference), and ``tcpflow`` when installed,

each as its own process, reporting wall time, peak resident memory and the
ratio. Run at two sizes to show that memory does not grow with the file.

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

from _measure import measure  # noqa: E402
from gen_capture import _parse_size as parse_size  # noqa: E402
from gen_capture import generate  # noqa: E402


def bench_one(capture: Path, work: Path) -> dict:
    """Time breachbook and its peers on one capture."""
    size = capture.stat().st_size
    res: dict = {"file": str(capture), "bytes": size}
    case = work / f"case-{capture.stem}"
    shutil.rmtree(case, ignore_errors=True)
    # The packet index and sessions (tshark conv's job); reassembly and protocols are
    # timed beside tcpflow by bench_reassembly.py.
    bb = [sys.executable, "-m", "forensics.cli", "ingest", "-q", "--packets-only", str(case),
          str(capture)]
    res["breachbook"] = measure(bb)
    if shutil.which("tshark"):
        res["tshark_conv_tcp"] = measure(["tshark", "-q", "-r", str(capture), "-z", "conv,tcp"])
        res["ratio_tshark"] = res["tshark_conv_tcp"]["seconds"] / res["breachbook"]["seconds"]
    if shutil.which("tcpflow"):
        flows = work / f"tcpflow-{capture.stem}"
        shutil.rmtree(flows, ignore_errors=True)
        flows.mkdir()
        res["tcpflow"] = measure(["tcpflow", "-r", str(capture), "-o", str(flows)])
        res["ratio_tcpflow"] = res["tcpflow"]["seconds"] / res["breachbook"]["seconds"]
        shutil.rmtree(flows, ignore_errors=True)
    shutil.rmtree(case, ignore_errors=True)
    return res


def main() -> int:
    """Generate the captures, run the comparison, print a table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="large capture size (K/M/G)")
    ap.add_argument("--small", default="100M", help="small capture size, for the memory comparison")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--keep", action="store_true", help="keep the generated captures")
    ap.add_argument("--no-interactive", dest="interactive", action="store_false",
                    help="skip the small-packet (interactive) capture")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Compile the kernels once so no measured run pays for it.
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
            r = bench_one(cap, work)
            r["label"], r["mix"], r["packets"] = label, mix, summary["packets"]
            results.append(r)
            if args.keep:
                shutil.copy(cap, out / cap.name)
            cap.unlink()
    head = ("mix", "capture", "packets", "tool", "seconds", "peak MiB", "MB/s")
    print("{:>12} {:>9} {:>10} {:>16} {:>8} {:>9} {:>7}".format(*head))
    for r in results:
        mb = r["bytes"] / 1e6
        for tool in ("breachbook", "tshark_conv_tcp", "tcpflow"):
            if tool in r:
                m = r[tool]
                print(f"{r['mix']:>12} {mb:>7.0f}MB {r['packets']:>10,} {tool:>16} {m['seconds']:>8.2f} "
                      f"{m['peak_mib']:>9.0f} {mb / m['seconds']:>7.0f}")
        if "ratio_tshark" in r:
            print(f"{'':>33} breachbook is {r['ratio_tshark']:.1f}x faster than tshark -z conv,tcp")
        if "ratio_tcpflow" in r:
            print(f"{'':>33} breachbook is {r['ratio_tcpflow']:.2f}x tcpflow's speed")
    (out / "bench_ingest.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
