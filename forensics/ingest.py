"""The ingest engine: evidence file in, rows of the case out.

Ingest has two stages, so that the heavy one can run anywhere:

1. :func:`parse_file` (pure: file in, staged Parquet out, no database): pick the
   source by sniffing, hash the file on another core, stream the source's
   batches through the right pipeline (frames through
   :mod:`forensics.net.pipeline`; record batches straight to staged tables), and
   record warnings. It runs in this process, in a process pool, or on a Dask
   worker (:mod:`forensics.parallel`).
2. :func:`commit_staged` (the one writer): register the evidence, stamp
   provenance, bulk-load the staged tables and publish the packet-index
   partition, all in one transaction per file; an interrupted ingest leaves the
   case as it was before that file, and a half-written partition is never visible.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forensics import _arrow as A
from forensics import _prehash
from forensics.case import hash_file
from forensics.errors import CorruptRecord, UnsupportedSource
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.net.pipeline import NetPipeline

log = logging.getLogger(__name__)

__all__ = ["IngestContext", "IngestResult", "Staged", "commit_staged", "parse_file"]

MAX_WARNINGS_PER_CODE = 1000  # past this, one aggregated row counts the rest


@dataclass
class IngestContext:
    """What a source sees of the engine while it reads one file.

    Attributes:
        path: the evidence file.
        evidence_id: its id in the case.
        strict: raise instead of warning (tests use this to prove clean reads).
        progress: called with the number of bytes read so far.
        options: source options from the analyst, e.g. ``{"year": 2025, "tz": "Europe/Berlin"}``
            for year-less or zone-less log times.
    """

    path: Path
    evidence_id: str
    strict: bool = False
    progress: Callable[[int], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
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

    def warning_rows(self) -> list[dict[str, Any]]:
        """All warnings so far, as ``ingest_warnings`` rows."""
        # Warnings may come before the hash (and so the evidence id) is known.
        rows = [{**w, "evidence_id": self.evidence_id} for w in self.warnings]
        for code, (n, first) in self._overflow.items():
            rows.append({
                "evidence_id": self.evidence_id, "path": str(self.path), "offset": first,
                "unit": "byte", "severity": "warning", "code": code,
                "message": f"{n} more '{code}' warnings not listed one by one (first at this offset)",
                "count": n,
            })
        return rows

    def warning_table(self) -> pa.Table:
        """All warnings so far as a table conforming to ``ingest_warnings``."""
        return A.table_from_rows(self.warning_rows(), TABLES["ingest_warnings"].arrow_schema())


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


@dataclass
class Staged:
    """One parsed evidence file, waiting to be committed.

    Attributes:
        path: the evidence file.
        format: the source that read it.
        sha256: its SHA-256; size: its size in bytes.
        work: the staging folder (inside the case) holding the outputs.
        packets: staged packet index (captures), or None.
        tables: staged Parquet files per table (sessions, events, ...).
        held: tables kept in memory instead (the second pass's, when the file is
            committed by the process that parsed it: no Parquet round trip).
        warnings: warning rows (dicts for ``ingest_warnings``).
        records: packets or records read.
        seconds: parse time.
        skipped: the evidence was already in the case (nothing staged).
        md5: the file's MD5 when asked for.
    """

    path: Path
    format: str
    sha256: str
    size: int
    work: Path
    packets: Path | None = None
    tables: dict[str, list[Path]] = field(default_factory=dict)
    held: dict[str, list[pa.Table]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0
    skipped: bool = False
    md5: str | None = None


class _AlreadyIngested(Exception):
    """Raised inside a parse once the hash shows the evidence is already in the case."""


class _TableStager:
    """Record batches per table, written to Parquet as they come (bounded memory)."""

    def __init__(self, work: Path):
        self.work = work
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.paths: dict[str, list[Path]] = {}
        self.rows: dict[str, int] = {}

    def add(self, name: str, tbl: pa.Table) -> None:
        if name not in TABLES:
            raise KeyError(f"a source produced rows for undeclared table {name!r}")
        spec = TABLES[name]
        tbl = spec.conform(tbl)
        if name not in self.writers:
            path = self.work / f"{name}.parquet"
            self.writers[name] = pq.ParquetWriter(path, spec.arrow_schema(), compression="lz4")
            self.paths[name] = [path]
        self.writers[name].write_table(tbl)
        self.rows[name] = self.rows.get(name, 0) + tbl.num_rows

    def records(self) -> int:
        """Records read: every log record is an event; otherwise the largest table."""
        return self.rows.get("events") or max(self.rows.values(), default=0)

    def close(self) -> dict[str, list[Path]]:
        for w in self.writers.values():
            w.close()
        self.writers = {}
        return self.paths


def detect_source(path: Path, fmt: str | None = None) -> Any:
    """The source for a file (sniffed, or the forced ``fmt`` checked against the bytes).

    Raises:
        UnsupportedSource: no source reads it, or it is not ``fmt``.
    """
    from forensics import sources

    src = sources.get(fmt) if fmt else sources.detect(path)
    if fmt:
        with path.open("rb") as fh:
            if not src.sniff(fh.read(sources.SNIFF_BYTES)):
                raise UnsupportedSource(f"file is not {fmt}", str(path), 0)
    return src


def parse_file(
    path: Path, work: Path, *, fmt: str | None = None, strict: bool = False,
    known: frozenset[str] = frozenset(), progress: Callable[[int], None] | None = None,
    md5: bool = False, net: NetPipeline | None = None, final: bool = True,
    options: dict[str, Any] | None = None, protocols: bool = True, carve: bool = True,
    hold: bool = False,
) -> Staged:
    """Parse one evidence file into staged Parquet under ``work`` (no database).

    Args:
        path: the evidence file (opened read-only).
        work: an empty staging folder inside the case directory.
        fmt: force a format instead of sniffing.
        strict: raise on the first damaged record.
        known: SHA-256s already in the case; parsing stops early for those.
        progress: called with bytes read so far.
        md5: also compute the MD5.
        net: the packet pass to continue (a stream of rotated captures); a new one if None.
        final: with ``net``, the stream ends with this file.
        options: source options (see :class:`IngestContext`).
        protocols: reassemble TCP streams and parse application protocols (HTTP,
            DNS, TLS, SMB, ...) after the packet pass; False for the packet index
            and sessions only.
        carve: with ``protocols``, carve the files the sessions carried into the
            store of the case that holds ``work``.
        hold: keep the second pass's tables in memory (``Staged.held``) rather
            than staging them as Parquet: for a caller that commits in this process.

    Returns:
        What was staged.

    Raises:
        UnsupportedSource: the file is not in a format Breachbook reads.
    """
    from forensics.net.pipeline import NetPipeline
    from forensics.sources._frames import FrameBatch

    t0 = time.perf_counter()
    src = detect_source(path, fmt)
    work.mkdir(parents=True, exist_ok=True)
    # SHA-256 (which keys the evidence) runs beside the parse on another core; MD5,
    # for hash lists that still use it, is optional: it costs twice as much.
    # (The command line may have begun it already, while the engine was being imported.)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash")
    sha_future = _prehash.take(path) or pool.submit(hash_file, path)
    md5_future = pool.submit(hash_file, path, "md5") if md5 else None
    ctx = IngestContext(path=path, evidence_id="", strict=strict, progress=progress,
                        options=dict(options or {}))
    stager = _TableStager(work)
    started_net = False

    def check_known() -> None:
        if sha_future.done():
            sha = sha_future.result()[0]
            ctx.evidence_id = sha[:16]
            if sha in known:
                raise _AlreadyIngested

    try:
        for item in src.read(path, ctx):
            check_known()
            if isinstance(item, FrameBatch):
                if not started_net:
                    net = net or NetPipeline()
                    net.begin_file(ctx, sha_future, work)
                    started_net = True
                assert net is not None
                net.process(item)
                if progress and len(item):
                    progress(item.base + int(item.off[-1]))
            else:
                stager.add(*item)
        sha, size = sha_future.result()
        ctx.evidence_id = sha[:16]
        if sha in known:
            raise _AlreadyIngested
        staged = Staged(path=path, format=src.name, sha256=sha, size=size, work=work)
        if started_net and net is not None:
            staged.packets, sessions = net.end_file(final=final)
            if sessions is not None:
                if protocols:
                    staged.held = _second_pass(ctx, path, staged.packets, sessions, stager, carve=carve,
                                               hold=hold)
                if "sessions" not in staged.held:
                    stager.paths.setdefault("sessions", []).append(sessions)
            staged.records = net.frames
        staged.tables = stager.close()
        staged.records = staged.records or stager.records()
        staged.warnings = ctx.warning_rows()
        staged.md5 = md5_future.result()[0] if md5_future else None
        staged.seconds = time.perf_counter() - t0
        return staged
    except _AlreadyIngested:
        stager.close()
        if started_net and net is not None:
            net.abort()
        sha, size = sha_future.result()
        return Staged(path=path, format=src.name, sha256=sha, size=size, work=work, skipped=True)
    except BaseException:
        stager.close()
        if started_net and net is not None:
            net.abort()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _second_pass(
    ctx: IngestContext, path: Path, packets: Path, sessions: Path, stager: _TableStager, *,
    carve: bool = True, hold: bool = False,
) -> dict[str, list[pa.Table]]:
    """Reassembly, protocol parsing and carving over the staged packet index (no database).

    Returns:
        With ``hold``, its tables (``sessions`` with ``service`` filled in among
        them), kept in memory; otherwise nothing: they are staged.
    """
    from forensics.apps import reconstruct
    from forensics.net.pipeline import SESSIONS_STAGING

    app = reconstruct(None, ctx.evidence_id, ctx, packets=packets,
                      sessions=pq.ParquetFile(sessions).read(), evidence_path=path, carve=carve)
    if hold:
        return {name: [TABLES[name].conform(tbl)] for name, tbl in app.items()}
    pq.write_table(app.pop("sessions"), sessions, **SESSIONS_STAGING)  # service filled in
    for name, tbl in app.items():
        stager.add(name, tbl)
    return {}


def commit_staged(case: Case, staged: Staged) -> IngestResult:
    """Write one staged file into the case in a single transaction (the one writer).

    Registers the evidence, loads every staged table with ``evidence_id``
    stamped, inserts the warnings, publishes the packet-index partition by an
    atomic rename, and marks the evidence ingested. Evidence already ingested
    adds nothing.
    """
    result = IngestResult(path=staged.path, format=staged.format, bytes=staged.size,
                          records=staged.records, seconds=staged.seconds)
    started = case._now()
    ev = case._register_digest(staged.path.resolve(), staged.sha256, staged.size, staged.format)
    eid = result.evidence_id = ev["evidence_id"]
    if staged.skipped or ev["status"] == "ingested":
        result.skipped, result.records = True, 0
        shutil.rmtree(staged.work, ignore_errors=True)
        return result
    case._begin_ingest(eid)
    try:
        counts: dict[str, int] = {}
        # Sessions carry their own evidence (a stream's connection may have started in an
        # earlier file); everything else is stamped here.
        for name, paths in staged.tables.items():
            for p in paths:
                stamp = None if name == "sessions" else eid
                counts[name] = counts.get(name, 0) + case._insert_parquet(name, p, evidence_id=stamp)
        for name, tbls in staged.held.items():
            for tbl in tbls:
                case._insert(name, tbl if name == "sessions" else _stamp(tbl, eid))
                counts[name] = counts.get(name, 0) + tbl.num_rows
        if staged.warnings:
            warnings = A.table_from_rows(staged.warnings, TABLES["ingest_warnings"].arrow_schema())
            case._insert("ingest_warnings", _stamp(warnings, eid))
        result.warnings = len(staged.warnings)
        result.sessions = counts.get("sessions", 0)
        result.tables = counts
        if staged.packets is not None:
            final_dir = case.parquet_dir("packets", eid)
            final_dir.mkdir(parents=True, exist_ok=True)
            staged.packets.replace(final_dir / "part-0.parquet")
        case._finish_ingest(eid, result, started, md5=staged.md5)
    except BaseException:
        case._abort_ingest(eid)
        raise
    finally:
        shutil.rmtree(staged.work, ignore_errors=True)
    return result


def _stamp(tbl: pa.Table, evidence_id: str) -> pa.Table:
    """Provenance: every row of a record batch names the evidence it came from."""
    if "evidence_id" not in tbl.column_names:
        return tbl
    i = tbl.column_names.index("evidence_id")
    col = A.strings(np.full(tbl.num_rows, evidence_id.encode())).cast(tbl.schema.field(i).type)
    return tbl.set_column(i, tbl.schema.field(i), col)
