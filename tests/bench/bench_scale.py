"""Scale benchmark (``make bench-scale``): rotated captures from several sensors,
ingested with 1 and 2 worker processes and on a local Dask cluster.

Each sensor's traffic is generated deterministically (tests/bench/gen_capture.py,
one seed per sensor) and split into rotated files the way ``tcpdump -C`` would.
Prints throughput, the speed-up from 1 to 2 workers, and peak memory of the
coordinator and of the largest worker; also one worker held to one core (CPU
affinity), the baseline when each worker has a core of its own.

    python tests/bench/bench_scale.py --sensors 4 --files-per-sensor 6 --size-per-sensor 256M
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import compile_bytecode  # noqa: E402
from gen_capture import _parse_size as parse_size  # noqa: E402
from gen_capture import generate  # noqa: E402

_RUN = """
import json, resource, sys, time, forensics
case, root, workers, executor = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
with forensics.open_case(case) as c:
    res = c.ingest(root, workers=workers, executor=executor)
    n = int(c.sql("SELECT count(*) AS n FROM packets").n[0])
    s = int(c.sql("SELECT count(*) AS n FROM sessions").n[0])
print(json.dumps({"seconds": time.perf_counter() - t, "files": len(res), "packets": n, "sessions": s,
                  "coordinator_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def rotate(path: Path, out_dir: Path, n_files: int) -> list[Path]:
    """Split a pcap into ``n_files`` of about equal size, like tcpdump -C."""
    out_dir.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    target = max(1, (size - 24) // n_files)
    files, i = [], 0
    with path.open("rb") as src:
        header = src.read(24)
        out = None
        written = target
        while rec := src.read(16):
            caplen = struct.unpack("<I", rec[8:12])[0]
            data = src.read(caplen)
            if written >= target and i < n_files:
                if out:
                    out.close()
                f = out_dir / f"{path.stem}.pcap{i:03d}"
                files.append(f)
                out = f.open("wb")
                out.write(header)
                written, i = 0, i + 1
            assert out is not None
            out.write(rec + data)
            written += 16 + caplen
        if out:
            out.close()
    return files


def main() -> int:
    """Generate the sensors' rotated captures, ingest them three ways, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sensors", type=int, default=4)
    ap.add_argument("--files-per-sensor", type=int, default=6)
    ap.add_argument("--size-per-sensor", default="256M")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compile_bytecode()  # as installed (see _measure.compile_bytecode)
    subprocess.run([sys.executable, "-c", "import forensics.net; forensics.net.warmup()"], check=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        root = Path(tmp) / "evidence"
        total = 0
        for k in range(args.sensors):
            whole = Path(tmp) / f"sensor{k}.pcap"
            generate(whole, parse_size(args.size_per_sensor), seed=100 + k)
            total += whole.stat().st_size
            rotate(whole, root / f"sensor{k}", args.files_per_sensor)
            whole.unlink()
        nfiles = sum(1 for _ in root.rglob("*.pcap*"))
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        plan = [("1 worker", 1, "serial", None), ("2 workers", 2, "process", None),
                ("dask, 2 workers", 2, "dask", None)]
        if len(cpus) >= 2:  # strong scaling: one worker on one core, against two workers on two
            plan.append(("1 worker, 1 core", 1, "serial", {cpus[0]}))
        for label, workers, executor, pin in plan:
            case = Path(tmp) / f"case-{workers}-{executor}-{len(pin or ())}"
            proc = subprocess.run([sys.executable, "-c", _RUN, str(case), str(root), str(workers),
                                   executor], capture_output=True, text=True,
                                  preexec_fn=(lambda pin=pin: os.sched_setaffinity(0, pin)) if pin else None)
            if proc.returncode:
                print(f"{label}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["label"] = label
            rows.append(r)
            shutil.rmtree(case, ignore_errors=True)
    print(f"{args.sensors} sensors x {args.files_per_sensor} rotated files = {nfiles} files, "
          f"{total / 1e6:.0f} MB")
    print(f"{'run':>16} {'seconds':>8} {'MB/s':>7} {'speed-up':>9} {'coord MiB':>10} {'worker MiB':>11}")
    base = rows[0]["seconds"] if rows else 1
    for r in rows:
        print(f"{r['label']:>16} {r['seconds']:>8.2f} {total / 1e6 / r['seconds']:>7.0f} "
              f"{base / r['seconds']:>8.2f}x {r['coordinator_mib']:>10.0f} {r['worker_mib']:>11.0f}")
    one_core = next((r for r in rows if r["label"] == "1 worker, 1 core"), None)
    two = next((r for r in rows if r["label"] == "2 workers"), None)
    if one_core and two:
        print(f"2 workers on 2 cores against 1 worker on 1 core: {one_core['seconds'] / two['seconds']:.2f}x "
              "(on 2 cores the 1-worker run above already keeps a second core busy: the evidence hash, "
              "the Parquet writer and the second pass of large files run beside the parse)")
    if len({(r['packets'], r['sessions']) for r in rows}) > 1:
        print("WARNING: runs disagree on row counts:", [(r['packets'], r['sessions']) for r in rows])
    (out / "bench_scale.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
