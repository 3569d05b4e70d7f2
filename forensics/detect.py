"""Signature-free detections: beaconing, first-seen rare destinations, unusually long connections.

Each detection has a score from 0 to 1 and the session rows behind it (``rows``):

- **beacon**: connections from one host to one destination and port at regular
  intervals. The interval is the median gap between connection starts; the
  jitter is the median absolute deviation of the gaps relative to it (±20 %
  uniform jitter gives about 0.1). Score: ``regularity x volume`` where
  regularity falls from 1 at no jitter to 0 at ``max_jitter`` and volume grows
  to 1 at 20 connections.
- **rare_destination**: an external address first contacted after the baseline
  (the first ``baseline`` fraction of the case's time span) and by at most
  ``max_hosts`` internal hosts. Score: ``1 / hosts``, halved for destinations also
  seen in the baseline (those are only reported when ``include_baseline``).
- **long_connection**: a session lasting at least ``long_seconds``. Score 0.5 at
  that length, 1.0 at eight times it (log scale).

Destinations are external by default (``external_only``); internal ranges
default to RFC 1918 and RFC 4193.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics._lateral_sql import query, replace_rows, row_key
from forensics.hostmap import HostMap, build_host_map, is_internal

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["COLUMNS", "beacons", "detect", "long_connections", "rare_destinations"]

COLUMNS = ["detection_id", "kind", "src", "src_addr", "dst", "dst_name", "dst_port", "score", "first", "last",
           "count", "detail", "rows"]
_MAX_ROWS = 200


def _sessions(case: Case, internal: Iterable[str] | None,
              external_only: bool) -> tuple[pd.DataFrame, HostMap]:
    hm = build_host_map(case, internal)
    df = query(case, "SELECT uid, ts, ts_end, duration, orig_h, resp_h, resp_p, proto FROM sessions",
               ["uid", "ts", "ts_end", "duration", "orig_h", "resp_h", "resp_p", "proto"], ("sessions",))
    if len(df):
        keep = [is_internal(o, hm.internal_nets) and not (external_only and is_internal(r, hm.internal_nets))
                for o, r in zip(df["orig_h"], df["resp_h"], strict=True)]
        df = df[keep]
        df = df.assign(ts=pd.to_datetime(df["ts"], utc=True))
    return df, hm


def _row(kind: str, hm: HostMap, src_addr: str, dst: str, port: Any, score: float, g: pd.DataFrame,
         detail: str) -> dict[str, object]:
    first, last = g["ts"].min(), g["ts"].max()
    ident = f"{kind}|{src_addr}|{dst}|{port}|{first.isoformat()}"
    return {"detection_id": "D" + hashlib.sha1(ident.encode()).hexdigest()[:16], "kind": kind,
            "src": hm.resolve(src_addr, first), "src_addr": src_addr, "dst": dst, "dst_name": None,
            "dst_port": None if port is None or pd.isna(port) else int(port), "score": round(float(score), 3),
            "first": first, "last": last, "count": len(g), "detail": detail,
            "rows": json.dumps([json.loads(row_key("sessions", uid=u)) for u in g["uid"][:_MAX_ROWS]],
                               separators=(",", ":"))}


def beacons(case: Case, *, internal: Iterable[str] | None = None, external_only: bool = True,
            min_count: int = 8, max_jitter: float = 0.5, min_score: float = 0.5) -> pd.DataFrame:
    """Regular connections from a host to a destination and port (see the module docstring).

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193).
        external_only: only destinations outside the internal networks.
        min_count: fewest connections that can make a beacon.
        max_jitter: relative jitter at which regularity reaches 0.
        min_score: lowest score reported.

    Returns:
        One row per beacon (columns :data:`COLUMNS`).
    """
    df, hm = _sessions(case, internal, external_only)
    rows = []
    for (o, r, p, proto), g in df.groupby(["orig_h", "resp_h", "resp_p", "proto"], dropna=False):
        if len(g) < min_count:
            continue
        t = g["ts"].sort_values()
        gaps = t.diff().dt.total_seconds().dropna()
        gaps = gaps[gaps >= 1.0]  # several connections per check-in count once
        if len(gaps) < min_count - 1:
            continue
        med = float(gaps.median())
        if med <= 0:
            continue
        jitter = float((gaps - med).abs().median()) / med
        regularity = max(0.0, 1.0 - jitter / max_jitter)
        score = regularity * min(1.0, len(g) / 20)
        if score < min_score:
            continue
        rows.append(_row("beacon", hm, o, r, p, score, g.sort_values("ts"),
                         f"{len(g)} {proto} connections every {med:.1f} s, jitter {jitter * 100:.0f}% "
                         f"(median absolute deviation of the gaps)"))
    return pd.DataFrame(rows, columns=COLUMNS)


def rare_destinations(case: Case, *, internal: Iterable[str] | None = None, max_hosts: int = 1,
                      baseline: float = 0.1, include_baseline: bool = False) -> pd.DataFrame:
    """External destinations few internal hosts contacted, first seen after the baseline.

    Args:
        case: the case.
        internal: internal networks as CIDRs.
        max_hosts: most internal hosts that may have contacted a rare destination.
        baseline: fraction of the case's time span that is the baseline.
        include_baseline: also report rare destinations first seen in the baseline (half score).

    Returns:
        One row per destination (columns :data:`COLUMNS`).
    """
    df, hm = _sessions(case, internal, True)
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    t0, t1 = df["ts"].min(), df["ts"].max()
    cut = t0 + (t1 - t0) * baseline
    rows = []
    for r, g in df.groupby("resp_h"):
        hosts = g["orig_h"].nunique()
        first = g["ts"].min()
        new = first > cut
        if hosts > max_hosts or not (new or include_baseline):
            continue
        score = (1.0 / hosts) * (1.0 if new else 0.5)
        src = g.loc[g["ts"].idxmin(), "orig_h"]
        ports = sorted({int(x) for x in g["resp_p"].dropna()})
        rows.append(_row("rare_destination", hm, src, r, ports[0] if len(ports) == 1 else None, score,
                         g.sort_values("ts"),
                         f"first seen {first.isoformat()} ({'after' if new else 'within'} the baseline "
                         f"ending {cut.isoformat()}); {hosts} internal host(s); {len(g)} connection(s); "
                         f"ports {','.join(map(str, ports[:8]))}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def long_connections(case: Case, *, internal: Iterable[str] | None = None, external_only: bool = True,
                     long_seconds: float = 3600.0) -> pd.DataFrame:
    """Sessions lasting at least ``long_seconds``.

    Args:
        case: the case.
        internal: internal networks as CIDRs.
        external_only: only connections to destinations outside the internal networks.
        long_seconds: the shortest duration reported.

    Returns:
        One row per session (columns :data:`COLUMNS`).
    """
    df, hm = _sessions(case, internal, external_only)
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    df = df[df["duration"].fillna(0) >= long_seconds]
    rows = []
    for r in df.itertuples(index=False):
        score = min(1.0, 0.5 + 0.5 * math.log2(r.duration / long_seconds) / 3)
        g = pd.DataFrame({"uid": [r.uid], "ts": [r.ts]})
        rows.append(_row("long_connection", hm, r.orig_h, r.resp_h, r.resp_p, score, g,
                         f"{r.proto} session lasted {r.duration:.0f} s ({r.duration / 3600:.1f} h)"))
    return pd.DataFrame(rows, columns=COLUMNS)


def detect(case: Case, *, internal: Iterable[str] | None = None, external_only: bool = True,
           long_seconds: float = 3600.0, persist: bool = True) -> pd.DataFrame:
    """Run every detection and write them to the ``detections`` table, highest score first.

    Args:
        case: the case.
        internal: internal networks as CIDRs (default RFC 1918 and RFC 4193).
        external_only: only connections from internal to external addresses.
        long_seconds: duration from which a connection counts as long.
        persist: replace the ``detections`` table's rows.
    """
    parts = [beacons(case, internal=internal, external_only=external_only),
             rare_destinations(case, internal=internal),
             long_connections(case, internal=internal, external_only=external_only,
                              long_seconds=long_seconds)]
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    if len(df):
        df = df.sort_values(["score", "first"], ascending=[False, True]).reset_index(drop=True)
    if persist and not case.read_only:
        replace_rows(case, {"detections": df})
    return df
