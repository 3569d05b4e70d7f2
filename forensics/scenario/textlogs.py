"""Text evidence: LNX01's auth.log, GW01's proxy access log and the asset inventory CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from forensics.scenario.hosts import Company

__all__ = ["write_inventory", "write_lines"]


def write_lines(path: Path, lines: list[tuple[int, int, str]]) -> int:
    """Write ``(time, seq, line)`` entries in time order; returns the line count."""
    lines.sort(key=lambda x: (x[0], x[1]))
    path.write_text("".join(line + "\n" for _, _, line in lines), encoding="utf-8")
    return len(lines)


def write_inventory(path: Path, company: Company) -> int:
    """The asset inventory: one row per company host, damage levels 1-5.

    Columns: ``host, address, role, os, owner, business_process, damage_level, value_eur``.
    """
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["host", "address", "role", "os", "owner", "business_process", "damage_level",
                 "value_eur"])
    rows = sorted(company.hosts.values(), key=lambda h: tuple(int(x) for x in h.ip.split(".")))
    for h in rows:
        wr.writerow([h.name, h.ip, h.role, h.os, h.owner, h.business_process, h.damage_level,
                     h.value_eur])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return len(rows)
