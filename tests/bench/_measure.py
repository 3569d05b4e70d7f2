"""Timing one command in a fresh process, for the benches: wall and CPU seconds, peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["compile_bytecode", "measure", "median_run"]

# Runs in its own interpreter, so that its resource usage is the command's alone.
# argv: keep ("1": keep the command's output, "0": discard it), then the command.
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "keep = sys.argv[1] == '1'\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE if keep else subprocess.DEVNULL,\n"
    "                   stderr=subprocess.PIPE)\n"
    "dt = time.perf_counter() - t\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(dt, ru.ru_maxrss, r.returncode, ru.ru_utime + ru.ru_stime)\n"
    "if keep:\n"
    "    sys.stdout.write(r.stdout.decode(errors='replace')[-4000:])\n"
    "sys.stderr.write(r.stderr.decode(errors='replace')[-2000:])\n"
)


def compile_bytecode() -> None:
    """Write the bytecode of Breachbook's modules, as installing a package does.

    An editable install leaves only sources; Python writes their bytecode on first
    import, unless PYTHONDONTWRITEBYTECODE is set (as on some CI machines), when
    every run compiles all of them again: about 0.1 s of each ingest's start
    (64 modules, measured). The benches time the tool as installed.
    """
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "forensics")], check=True)


def measure(cmd: list[str], *, output: bool = False, sync: bool = False) -> dict:
    """Run ``cmd`` in a fresh process: wall and CPU seconds and peak RSS (MiB) of its process tree.

    Args:
        cmd: the command.
        output: keep its output, and merge a JSON object on its last line into the result
            (otherwise the output goes to /dev/null, as a user would send a long report).
        sync: write dirty pages out first, so that no run pays for the writes of the one
            before (tcpflow writes a file per flow, the ingest a case).

    Raises:
        RuntimeError: the command failed.
    """
    if sync:
        os.sync()
    out = subprocess.run([sys.executable, "-c", _MEASURE, "1" if output else "0", *cmd],
                         capture_output=True, text=True)
    lines = out.stdout.splitlines()
    dt, rss, rc, cpu = lines[0].split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[0]} failed ({rc}): {out.stderr}")
    res: dict = {"seconds": float(dt), "cpu_s": float(cpu), "peak_mib": int(rss) / 1024}
    if output and len(lines) > 1 and lines[-1].startswith("{"):
        res.update(json.loads(lines[-1]))
    return res


def median_run(runs: list[dict]) -> dict:
    """The median of several :func:`measure` results, by wall time (the upper one of two)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
