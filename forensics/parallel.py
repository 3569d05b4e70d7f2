"""Ingest at scale: rotated captures as one stream, process pools, Dask, resume.

Planning groups the files to ingest into *tasks*:

* the capture files of one folder are one sensor's rotated captures: they are
  sorted by their first timestamp and read as one continuous stream, so a
  connection that spans files stays one session with one uid (files whose times
  overlap are not chained: their connections are ended at the file boundary);
* every other file is a task of its own.

A task is pure work (files in, staged Parquet out, see
:func:`forensics.ingest.parse_file`) and runs in this process, in a process
pool, or on a Dask cluster. The coordinator (this process, the only writer)
commits each file as soon as it and the files before it in its stream are
staged. After each committed file of a stream, the connection state at the
boundary is kept in ``state/after-<evidence_id>.npz``, so a killed ingest
resumes where it stopped: committed files are not read again, and the case
always opens.

When to switch: one process reads ~400 MB/s of capture on this hardware; a
process pool helps once a case has several sensors (folders) or many log files;
Dask helps when the evidence is larger than one machine should read, with the
case directory on storage every worker can reach (a shared mount).
"""

from __future__ import annotations

import contextlib
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forensics.errors import UnsupportedSource
from forensics.ingest import IngestResult, Staged, commit_staged, detect_source, parse_file

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["Task", "ingest_parallel", "plan", "run_task"]

CAPTURE_FORMATS = ("pcap", "pcapng")
OVERLAP_TOLERANCE_NS = 1_000_000_000


@dataclass
class Task:
    """Files read together, in order: one file, or one sensor's rotated captures.

    Attributes:
        files: the files, in time order.
        first_ts: first packet time of each file (ns; None when unknown).
        resume: a connection-state checkpoint to continue the stream from.
        fmt: forced format, if any.
    """

    files: list[Path]
    first_ts: list[int | None] = field(default_factory=list)
    resume: Path | None = None
    fmt: str | None = None
    current: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    protocols: bool = True
    carve: bool = True


def first_timestamp(path: Path, fmt: str) -> int | None:
    """Time of the first packet of a capture (ns since the epoch), read from its head."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if fmt == "pcap" and len(head) >= 40:
        from forensics.sources._frames import PCAP_MAGICS

        swap, frac_ns = PCAP_MAGICS[head[:4]]
        sec, frac = struct.unpack((">" if swap else "<") + "II", head[24:32])
        return int(sec * 1_000_000_000 + frac * frac_ns)
    if fmt == "pcapng":
        from forensics.ingest import IngestContext
        from forensics.sources._frames import NO_TS, read_pcapng

        ctx = IngestContext(path=path, evidence_id="")
        with contextlib.suppress(Exception):
            for batch in read_pcapng(path, ctx):
                has = batch.ts_ns[batch.ts_ns != NO_TS]
                return int(has[0]) if has.size else None
    return None


def plan(
    case: Case, paths: list[str | Path], fmt: str | None = None, strict: bool = False
) -> tuple[list[Task], list[IngestResult]]:
    """Group files into tasks; returns the tasks and results for files no source reads."""
    from forensics.sources import iter_files

    groups: dict[tuple[Path, str], list[Path]] = {}
    singles: list[Task] = []
    rejected: list[IngestResult] = []
    for f in iter_files(paths):
        try:
            src = detect_source(f, fmt)
        except UnsupportedSource as exc:
            if strict:
                raise
            rejected.append(IngestResult(path=f, error=str(exc)))
            continue
        if src.name in CAPTURE_FORMATS:
            groups.setdefault((f.parent, src.name), []).append(f)
        else:
            singles.append(Task(files=[f], first_ts=[None], fmt=fmt))
    tasks: list[Task] = []
    ingested = case.ingested_files()
    for (_, kind), files in groups.items():
        # Only a stream of several files needs its order (a single file skips the read).
        stamps = [first_timestamp(f, kind) for f in files] if len(files) > 1 else [None]
        order = sorted(range(len(files)), key=lambda i: (stamps[i] is None, stamps[i] or 0, files[i].name))
        files = [files[i] for i in order]
        stamps = [stamps[i] for i in order]
        # Resume: skip the committed prefix of the stream, continue from its checkpoint.
        k, resume = 0, None
        while k < len(files) and str(files[k].resolve()) in ingested:
            state = case.path / "state" / f"after-{ingested[str(files[k].resolve())]}.npz"
            resume = state if state.exists() else None
            k += 1
        if k < len(files):
            tasks.append(Task(files=files[k:], first_ts=stamps[k:], resume=resume, fmt=fmt))
        else:
            rejected.extend(IngestResult(path=f, skipped=True) for f in files)
    return tasks + singles, rejected


def run_task(task: Task, staging_root: Path, known: frozenset[str], md5: bool = False,
             strict: bool = False,
             progress: Callable[[Path, int], None] | None = None, hold: bool = False) -> Iterator[Staged]:
    """Parse a task's files in order, yielding each staged file (a worker's job).

    Between files of a stream, the connection state is saved next to the
    staged outputs (``state.npz``) for the coordinator to keep at commit.
    With ``hold`` (the caller commits each file in this process before the next
    is parsed), the second pass's tables stay in memory (``Staged.held``).
    """
    from forensics.net.pipeline import NetPipeline

    net = NetPipeline.from_state(task.resume) if task.resume else None
    if net is None and len(task.files) > 1:
        net = NetPipeline()
    for i, path in enumerate(task.files):
        work = staging_root / f"{i:05d}-{path.name[:40].replace('/', '_')}"
        nxt = task.first_ts[i + 1] if i + 1 < len(task.files) else None
        final = nxt is None
        task.current = path
        cb = (lambda done, p=path: progress(p, done)) if progress else None
        staged = parse_file(path, work, fmt=task.fmt, strict=strict, known=known, md5=md5,
                            net=net, final=final, progress=cb, options=task.options,
                            protocols=task.protocols, carve=task.carve, hold=hold)
        if net is not None and not final and not staged.skipped:
            # Files that overlap in time are not one stream: end the connections here.
            if nxt is not None and nxt < net.last_ts - OVERLAP_TOLERANCE_NS:  # (not final: never None)
                net = NetPipeline()
            else:
                net.save_state(work / "state.npz")
        yield staged


def _worker(task: Task, staging_root: str, known: frozenset[str], md5: bool, strict: bool) -> list[Staged]:
    """Process-pool / Dask entry point: a whole task, staged."""
    import forensics.net

    forensics.net.warmup()
    return list(run_task(task, Path(staging_root), known, md5=md5, strict=strict))


def _record_failed(case: Case, path: Path) -> None:
    """Register evidence whose parse failed, as failed (custody: it was seen)."""
    from forensics.case import hash_file

    with contextlib.suppress(Exception):
        if path.stat().st_size < 256 << 20:  # do not keep an interrupted user waiting
            sha, size = hash_file(path)
            eid = case._register_digest(path.resolve(), sha, size, None)["evidence_id"]
            case._abort_ingest(eid)


def _commit(case: Case, staged: Staged) -> IngestResult:
    state = staged.work / "state.npz"
    keep: Path | None = None
    if state.exists():
        keep = case.path / "state" / f"pending-{staged.sha256[:16]}.npz"
        keep.parent.mkdir(exist_ok=True)
        shutil.move(str(state), keep)
    result = commit_staged(case, staged)
    if keep is not None and result.evidence_id:
        keep.replace(case.path / "state" / f"after-{result.evidence_id}.npz")
    return result


def ingest_parallel(
    case: Case, paths: list[str | Path], *, workers: int = 1, executor: str = "auto",
    scheduler: str | None = None, fmt: str | None = None, md5: bool = False, strict: bool = False,
    on_result: Callable[[IngestResult], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
    options: dict[str, Any] | None = None, protocols: bool = True, carve: bool = True,
) -> list[IngestResult]:
    """Plan, parse (serially, in a process pool, or on Dask) and commit evidence.

    Args:
        case: the case (opened for writing).
        paths: files or folders.
        workers: parallel workers for ``process`` (defaults to 1: serial).
        executor: ``serial``, ``process``, ``dask`` or ``auto`` (process when workers > 1).
        scheduler: Dask scheduler address (``tcp://host:8786``); None starts a local cluster.
        fmt: force a format.
        md5: also record MD5.
        strict: fail on the first damaged record.
        on_result: called after each committed file.
        progress: called with (file, bytes read) while parsing in this process.
        options: source options (``year``, ``tz`` for logs without them).
        protocols: reassemble and parse application protocols (default True).
        carve: with ``protocols``, carve the files sessions carried (default True).

    Returns:
        One result per file.
    """
    tasks, results = plan(case, paths, fmt, strict)
    for t in tasks:
        t.options = dict(options or {})
        t.protocols = protocols
        t.carve = carve
    known = case.ingested_sha256()
    if executor == "auto":
        executor = "process" if workers > 1 and len(tasks) > 1 else "serial"

    def done(res: IngestResult) -> None:
        results.append(res)
        if on_result:
            on_result(res)

    if executor == "serial":
        for task in tasks:
            root = case.staging_dir()
            try:
                for staged in run_task(task, root, known, md5=md5, strict=strict, progress=progress,
                                       hold=True):
                    done(_commit(case, staged))
            except BaseException:
                if task.current is not None:
                    _record_failed(case, task.current)
                raise
            finally:
                shutil.rmtree(root, ignore_errors=True)
        return results
    roots = [case.staging_dir() for _ in tasks]
    try:
        if executor == "process":
            _run_pool(case, tasks, roots, known, md5, strict, workers, done)
        elif executor == "dask":
            _run_dask(case, tasks, roots, known, md5, strict, scheduler, workers, done)
        else:
            raise ValueError(f"unknown executor {executor!r}: serial, process or dask")
    finally:
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
    return results


def _run_pool(case: Case, tasks: list[Task], roots: list[Path], known: frozenset[str], md5: bool,
              strict: bool, workers: int, done: Callable[[IngestResult], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the parent has threads (hashing, Parquet) that fork would copy mid-flight.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_worker, t, str(r), known, md5, strict): t
                for t, r in zip(tasks, roots, strict=True)}
        for fut in as_completed(futs):
            for staged in fut.result():
                done(_commit(case, staged))


def _run_dask(case: Case, tasks: list[Task], roots: list[Path], known: frozenset[str], md5: bool,
              strict: bool, scheduler: str | None, workers: int,
              done: Callable[[IngestResult], None]) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError(
            "the dask executor needs dask[distributed]: pip install 'breachbook[dask]'") from exc
    cluster: Any = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futs = [client.submit(_worker, t, str(r), known, md5, strict, pure=False)
                for t, r in zip(tasks, roots, strict=True)]
        for fut in as_completed(futs):
            for staged in fut.result():
                done(_commit(case, staged))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
