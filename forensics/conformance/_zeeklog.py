"""Zeek baseline logs: which trace each was written from, and their rows as Python values."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path
from typing import Any

from forensics.conformance._fields import SKIPPED, TABLE_OF

__all__ = ["plan", "read_zeek_log"]


def _runs(execs: str) -> dict[str, str]:
    """Log file name -> trace of the zeek run that wrote it (as btest-diff saw it), following renames."""
    owner: dict[str, str] = {}
    diffed: dict[str, str] = {}
    for cmd in (c.strip().removeprefix("@TEST-EXEC:").strip() for c in execs.split(" || ")):
        for part in (p.strip() for p in cmd.split("&&")):
            try:
                argv = shlex.split(part)
            except ValueError:
                continue
            while argv and "=" in argv[0] and not argv[0].startswith("-"):
                argv = argv[1:]  # VAR=value prefixes
            if not argv:
                continue
            if argv[0] == "zeek":
                trace = None
                for i, a in enumerate(argv):
                    if re.fullmatch(r"-[A-Za-z]*r", a) and i + 1 < len(argv):
                        trace = argv[i + 1].removeprefix("$TRACES/")
                if trace is not None:
                    for name in TABLE_OF:
                        owner[f"{name}.log"] = ("BPF:" if "-f" in argv else "") + trace
            elif argv[0] in ("mv", "cp") and len(argv) == 3 and argv[1] in owner:
                owner[argv[2]] = owner[argv[1]]
                if argv[0] == "mv":
                    del owner[argv[1]]
            elif argv[0] == "btest-diff" and len(argv) >= 2 and argv[-1] in owner:
                diffed[argv[-1]] = owner[argv[-1]]
    return {**owner, **diffed}


def plan(testdata: Path) -> tuple[list[tuple[str, str, Path]], dict[str, str]]:
    """Baseline logs to compare as (log id, Zeek path, trace), and the skipped ones with reasons."""
    zeek = testdata / "zeek"
    base, traces = zeek / "testing/btest/Baseline", zeek / "testing/btest/Traces"
    with (zeek / "BASELINE_PROVENANCE.tsv").open(newline="") as fh:
        prov = {r[0]: r for r in csv.reader(fh, delimiter="\t")}
    use, skip = [], {}
    for log in sorted(base.glob("*/*.log")):
        head = log.read_text(errors="replace").split("\n", 12)
        path = next((ln.split("\t", 1)[1] for ln in head if ln.startswith("#path\t")), None)
        if path not in TABLE_OF:
            continue
        lid = f"{log.parent.name}/{log.name}"
        if lid in SKIPPED:
            skip[lid] = SKIPPED[lid]
            continue
        trace = _runs(prov[log.parent.name][3]).get(log.name) if log.parent.name in prov else None
        if trace is None:
            skip[lid] = "no zeek run in the provenance wrote it"
        elif trace.startswith("BPF:"):
            skip[lid] = "BPF filter (-f): Zeek saw only part of the trace"
        elif not (traces / trace).exists():
            skip[lid] = f"trace {trace} is not in the shared test data"
        else:
            use.append((lid, path, traces / trace))
    return use, skip


def _unescape(v: str) -> str:
    r"""Zeek's ASCII escapes undone: ``\\xNN`` bytes (UTF-8 when they form it) and ``\\\\``."""
    if "\\" not in v:
        return v
    raw = re.sub(
        rb"\\x([0-9a-fA-F]{2})|\\\\",
        lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"\\",
        v.encode("utf-8"),
    )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _zval(v: str, ztype: str) -> Any:
    if v == "-":
        return None
    if v == "(empty)":
        return ()
    if ztype.startswith(("set[", "vector[")):
        inner = ztype[ztype.index("[") + 1 : -1]
        items = tuple(_zval(x, inner) for x in v.split(","))
        return tuple(sorted(items, key=str)) if ztype.startswith("set[") else items
    if ztype in ("count", "int", "port"):
        return int(v)
    if ztype == "bool":
        return v == "T"
    if ztype in ("time", "interval", "double"):
        return None if v.startswith("XXX") else round(float(v), 6)
    return _unescape(v)


def read_zeek_log(path: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Types by field and rows of a Zeek ASCII log (the btest header line dropped)."""
    lines = path.read_text(errors="replace").splitlines()
    if lines and lines[0].startswith("### BTest"):
        lines = lines[1:]
    fields: list[str] = []
    types: list[str] = []
    rows = []
    for ln in lines:
        if ln.startswith("#fields"):
            fields = [f.removeprefix("id.") for f in ln.split("\t")[1:]]
        elif ln.startswith("#types"):
            types = ln.split("\t")[1:]
        elif ln and not ln.startswith("#"):
            rows.append({f: _zval(v, t) for f, v, t in zip(fields, ln.split("\t"), types, strict=True)})
    return dict(zip(fields, types, strict=True)), rows
