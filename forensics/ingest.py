"""The ingest engine: evidence file in, rows of the case out.

For each file the engine registers the evidence (hash first), picks its source
by sniffing, streams the source's batches through the right pipeline (frames
through :mod:`forensics.net.pipeline`; record batches straight to their table),
stamps provenance (``evidence_id`` and the record's offset or frame), records
warnings, and commits everything for that file in one transaction, so an
interrupted ingest leaves the case as it was before that file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from forensics.case import hash_file
from forensics.errors import CorruptRecord, UnsupportedSource
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case

log = logging.getLogger(__name__)

__all__ = ["IngestContext", "IngestResult"]

MAX_WARNINGS_PER_CODE = 1000  # past this, one aggregated row counts the rest
FLUSH_ROWS = 50_000  # record rows buffered per table before they are written


@dataclass
class IngestContext:
    """What a source sees of the engine while it reads one file.

    Attributes:
        path: the evidence file.
        evidence_id: its id in the case.
        strict: raise instead of warning (tests use this to prove clean reads).
        progress: called with the number of bytes read so far.
    """

    path: Path
    evidence_id: str
    strict: bool = False
    progress: Callable[[int], None] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    linktypes: set[int] = field(default_factory=set)
    _per_code: dict[str, int] = field(default_factory=dict)
    _overflow: dict[str, list[int]] = field(default_factory=dict)

    def warn(
        self, offset: int | None, code: str, message: str, *, unit: str = "byte",
        severity: str = "warning", count: int = 1,
    ) -> None:
        """Record that something at ``offset`` was skipped, repaired or looked wrong.

        Args:
            offset: byte offset (or line/record number, see ``unit``) in the file.
            code: short machine-readable kind, e.g. ``"truncated_record"``.
            message: what happened, for the analyst.
            unit: what ``offset`` counts: ``byte``, ``line`` or ``record``.
            severity: ``info``, ``warning`` or ``error``.
            count: how many occurrences this one row stands for.

        Raises:
            CorruptRecord: in strict mode, for anything above ``info``.
        """
        if self.strict and severity != "info":
            raise CorruptRecord(f"[{code}] {message}", str(self.path), offset)
        seen = self._per_code.get(code, 0)
        self._per_code[code] = seen + 1
        if seen >= MAX_WARNINGS_PER_CODE:
            agg = self._overflow.setdefault(code, [0, offset if offset is not None else -1])
            agg[0] += count
            return
        # Recorded in ingest_warnings; logged at INFO so notebooks are not flooded.
        log.info("%s @ %s: [%s] %s", self.path, offset, code, message)
        self.warnings.append({
            "evidence_id": self.evidence_id, "path": str(self.path), "offset": offset,
            "unit": unit, "severity": severity, "code": code, "message": message, "count": count,
        })

    def warning_table(self) -> pa.Table:
        """All warnings so far as a table conforming to ``ingest_warnings``."""
        # Warnings may come before the hash (and so the evidence id) is known.
        rows = [{**w, "evidence_id": self.evidence_id} for w in self.warnings]
        for code, (n, first) in self._overflow.items():
            rows.append({
                "evidence_id": self.evidence_id, "path": str(self.path), "offset": first,
                "unit": "byte", "severity": "warning", "code": code,
                "message": f"{n} more '{code}' warnings not listed one by one (first at this offset)",
                "count": n,
            })
        spec = TABLES["ingest_warnings"]
        if not rows:
            return spec.empty()
        return spec.conform(pa.Table.from_pylist(rows))


@dataclass
class IngestResult:
    """What ingesting one file did.

    Attributes:
        path: the file.
        evidence_id: its id (None if it could not be registered).
        format: the detected format.
        skipped: True when the evidence was already in the case.
        records: records read (packets for captures).
        sessions: sessions written.
        warnings: warning rows written.
        seconds: wall time.
        bytes: file size.
        error: why the file was not ingested, when it was not.
    """

    path: Path
    evidence_id: str | None = None
    format: str | None = None
    skipped: bool = False
    records: int = 0
    sessions: int = 0
    warnings: int = 0
    seconds: float = 0.0
    bytes: int = 0
    error: str | None = None
    tables: dict[str, int] = field(default_factory=dict)


class _AlreadyIngested(Exception):
    """Raised inside a run once the hash shows the evidence is already in the case."""


class _Run:
    """One file's ingest: parse while the SHA-256 is computed on another core.

    Nothing keyed by the evidence (its id, uids, DuckDB rows) is written until the
    hash is known; the packet sink and the session builder wait for it. If the
    hash shows the evidence is already ingested, the run stops early.
    """

    def __init__(self, case: Case, path: Path, fmt: str, sha: Future[tuple[str, int]],
                 ctx: IngestContext, result: IngestResult):
        self.case, self.path, self.fmt, self.sha, self.ctx, self.result = (
            case, path, fmt, sha, ctx, result)
        self.ev: dict[str, Any] | None = None
        self.started = case._now()
        self.buffered: dict[str, list[pa.Table]] = {}
        self.counts: dict[str, int] = {}

    def registered(self) -> dict[str, Any]:
        """Register the evidence (waiting for its hash) and open the transaction."""
        if self.ev is None:
            sha, size = self.sha.result()
            ev = self.case._register_digest(self.path.resolve(), sha, size, self.fmt)
            self.result.evidence_id, self.result.bytes = ev["evidence_id"], ev["size"]
            self.ctx.evidence_id = ev["evidence_id"]
            if ev["status"] == "ingested":
                raise _AlreadyIngested
            self.case._begin_ingest(ev["evidence_id"])
            self.ev = ev
        return self.ev

    def add(self, name: str, tbl: pa.Table) -> None:
        """Buffer record rows for ``name``; written in batches of FLUSH_ROWS."""
        if name not in TABLES:
            raise KeyError(f"source {self.fmt} produced rows for undeclared table {name!r}")
        self.buffered.setdefault(name, []).append(TABLES[name].conform(tbl))
        if sum(t.num_rows for t in self.buffered[name]) >= FLUSH_ROWS:
            self.flush(name)

    def flush(self, name: str) -> None:
        """Write the buffered rows of one table."""
        parts = self.buffered.pop(name, [])
        if parts:
            tbl = _stamp(pa.concat_tables(parts), self.registered()["evidence_id"])
            self.case._insert(name, tbl)
            self.counts[name] = self.counts.get(name, 0) + tbl.num_rows


def ingest_file(
    case: Case, path: Path, *, fmt: str | None = None, strict: bool = False,
    progress: Callable[[int], None] | None = None, md5: bool = False,
) -> IngestResult:
    """Ingest one evidence file into ``case`` (see :meth:`forensics.case.Case.ingest`)."""
    from forensics import sources
    from forensics.net.pipeline import NetPipeline
    from forensics.sources._frames import FrameBatch

    t0 = time.perf_counter()
    result = IngestResult(path=path)
    try:
        src = sources.get(fmt) if fmt else sources.detect(path)
        if fmt:
            with path.open("rb") as fh:
                if not src.sniff(fh.read(sources.SNIFF_BYTES)):
                    raise UnsupportedSource(f"file is not {fmt}", str(path), 0)
    except UnsupportedSource as exc:
        if strict:
            raise
        result.error = str(exc)
        return result
    result.format = src.name
    # SHA-256 (which keys the evidence) runs beside the parse on the other core;
    # MD5, for hash lists that still use it, is optional: it costs twice as much.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash")
    sha_future = pool.submit(hash_file, path)
    md5_future = pool.submit(hash_file, path, "md5") if md5 else None
    ctx = IngestContext(path=path, evidence_id="", strict=strict, progress=progress)
    run = _Run(case, path, src.name, sha_future, ctx, result)
    net: NetPipeline | None = None
    try:
        for item in src.read(path, ctx):
            if sha_future.done():
                run.registered()  # stops early when the evidence is already in the case
            if isinstance(item, FrameBatch):
                if net is None:
                    net = NetPipeline(case, ctx, sha_future)
                net.process(item)
                if progress and len(item):
                    progress(item.base + int(item.off[-1]))
            else:
                run.add(*item)
        ev = run.registered()
        for name in list(run.buffered):
            run.flush(name)
        if net is not None:
            net.finish()
            result.records = net.frames
            staged = net.staged_sessions()
            if staged is not None:
                run.registered()
                result.sessions = case._insert_parquet("sessions", staged)
            run.counts["sessions"] = result.sessions
        warnings = ctx.warning_table()
        if warnings.num_rows:
            case._insert("ingest_warnings", warnings)
        result.warnings = warnings.num_rows
        result.tables = run.counts
        if not result.records:
            result.records = sum(run.counts.values())
        result.seconds = time.perf_counter() - t0
        case._finish_ingest(ev["evidence_id"], net, result, run.started,
                            md5=md5_future.result()[0] if md5_future else None)
    except _AlreadyIngested:
        if net is not None:
            net.abort()
        result.skipped = True
        result.records = 0
    except BaseException:
        if run.ev is not None:
            case._abort_ingest(run.ev["evidence_id"])
        else:
            # Failed before anything was written: still record the evidence as seen
            # (failed), unless hashing it would keep an interrupted user waiting.
            with contextlib.suppress(Exception):
                sha_future.result(timeout=2)
                case._abort_ingest(run.registered()["evidence_id"])
        if net is not None:
            net.abort()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return result


def _stamp(tbl: pa.Table, evidence_id: str) -> pa.Table:
    """Provenance: every row of a record batch names the evidence it came from."""
    if "evidence_id" not in tbl.column_names:
        return tbl
    i = tbl.column_names.index("evidence_id")
    col = pa.array([evidence_id] * tbl.num_rows, tbl.schema.field(i).type)
    return tbl.set_column(i, tbl.schema.field(i), col)
