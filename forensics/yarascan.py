"""YARA scanning of the file store: rule sets compiled per file, bounded scans, ``yara_hits``.

Rule sets found in the wild do not all compile: some files use modules or
fields another YARA build lacks (Yara-Rules' ``pe.sync``, the undefined
``is__elf``), and index files (``*_index.yar``) include those. So every rule
file is compiled on its own first; the ones that fail are reported (in the
returned :class:`ScanReport` and in ``yara_runs``) and left out, and the rest
are compiled together, each file in its own namespace, so rules keep the
meaning they have alone. An index file whose includes are all compiled on their
own anyway is skipped rather than compiled twice.

The external variables THOR-style rule sets (signature-base) expect are always
defined: ``filename``, ``filepath``, ``extension``, ``filetype`` and ``owner``,
set per file from what the carver recorded (the claimed name, its extension,
the magic-number type) and empty where unknown. Every file gets a timeout; a
rule that would run forever ends with a ``timeout`` row, and the scan goes on.

Scanning runs in threads (libyara releases the GIL), each with its own copy of
the compiled rules, because yara-python sets per-scan external variables on
the rules object itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from forensics.errors import BreachbookError
from forensics.filestore import content_path

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["DEFAULT_RULES", "EXTERNALS", "CompiledRules", "RuleFile", "ScanReport", "compile_rules",
           "externals_for", "find_rule_files", "scan"]

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "data" / "rules"
EXTERNALS = ("filename", "filepath", "extension", "filetype", "owner")
RULE_SUFFIXES = (".yar", ".yara")
MAX_OFFSETS = 32  # offsets recorded per matched string identifier
_MAX_NOTES = 5  # YARA warnings kept per file
_MAX_RETRIES = 16  # failing files found by retrying the joint compile before compiling each alone
_INCLUDE = re.compile(r'^\s*include\s+"([^"]+)"', re.MULTILINE)


def _yara() -> Any:
    try:
        import yara
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BreachbookError("YARA scanning needs yara-python: pip install 'breachbook[scan]'") from exc
    return yara


@dataclass(frozen=True)
class RuleFile:
    """One rule file and what became of it.

    Attributes:
        path: the rule file.
        namespace: namespace its rules get (its path under the folder given).
        status: ``compiled``, ``failed`` or ``skipped``.
        message: the compiler's error, or why it was skipped.
        sha256: SHA-256 of the file's bytes.
    """

    path: Path
    namespace: str
    status: str
    message: str | None
    sha256: str


@dataclass
class CompiledRules:
    """Rule files compiled together, with the per-file outcome.

    Attributes:
        rules: the compiled ``yara.Rules`` (None when nothing compiled).
        files: every rule file considered, compiled or not.
    """

    rules: Any
    files: list[RuleFile]

    @property
    def failed(self) -> list[RuleFile]:
        """Rule files that did not compile."""
        return [f for f in self.files if f.status == "failed"]


@dataclass
class ScanReport:
    """What :func:`scan` did.

    Attributes:
        run_id: id of the run in ``yara_runs`` and ``yara_hits``.
        rule_files: every rule file and its status.
        files_scanned: distinct (content, name) scans done.
        hits: rows written to ``yara_hits``.
        timeouts: SHA-256 of the files whose scan timed out.
        errors: ``(sha256, message)`` of the files that could not be scanned.
        warnings: ``(sha256, message)``: YARA's limits reached (too many matches of a string).
        seconds: wall time, split into ``compile`` and ``scan``.
    """

    run_id: str
    rule_files: list[RuleFile]
    files_scanned: int = 0
    hits: int = 0
    timeouts: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed_rule_files(self) -> list[RuleFile]:
        """Rule files that did not compile."""
        return [f for f in self.rule_files if f.status == "failed"]


def find_rule_files(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Rule files under the given files or folders, with the namespace each gets.

    A folder is searched recursively for ``*.yar``/``*.yara`` in sorted order; its
    files' namespaces are their paths under the folder's parent
    (``yara/gen_eicar.yar``). A file given directly is named by its file name.

    Raises:
        BreachbookError: a path does not exist.
    """
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise BreachbookError(f"no such rule file or folder: {p}")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in RULE_SUFFIXES and f.is_file())
            items = [(f, f.relative_to(p.parent).as_posix()) for f in found]
        else:
            items = [(p, p.name)]
        for f, ns in items:
            name, n = ns, 2
            while name in seen:
                name, n = f"{ns}#{n}", n + 1
            seen.add(name)
            out.append((f.resolve(), name))
    return out


def _includes(path: Path, text: str) -> list[Path]:
    if "include" not in text:
        return []
    return [(path.parent / inc).resolve() for inc in _INCLUDE.findall(text)]


def compile_rules(paths: Iterable[str | Path] | None = None, *,
                  externals: dict[str, str] | None = None) -> CompiledRules:
    """Compile rule files each in its own namespace, report the ones that fail, keep the rest.

    All files are compiled together, each in its own namespace (fast, and what
    the rules mean alone); the compiler stops at the first error and names the
    file, which is reported and left out before the next try. Past a few such
    files, or when the error is in an included file, each remaining file is
    compiled on its own to find the ones at fault. An index file (one whose
    includes are all among the files given) is not compiled: it is reported
    ``failed`` when a file it includes fails, else ``skipped``.

    Args:
        paths: rule files or folders; the bundled ``data/rules`` when None.
        externals: external variables and their compile-time values; each of
            :data:`EXTERNALS` defaults to the empty string.

    Returns:
        The :class:`CompiledRules`: the rules and every file's status.
    """
    yara = _yara()
    ext = {k: "" for k in EXTERNALS} | (externals or {})
    candidates = find_rule_files([DEFAULT_RULES] if paths is None else paths)
    in_set = {p for p, _ in candidates}
    info: dict[str, tuple[Path, str, list[Path]]] = {}
    for path, ns in candidates:
        data = path.read_bytes()
        info[ns] = (path, hashlib.sha256(data).hexdigest(), _includes(path, data.decode("utf-8", "replace")))
    index = {ns for ns, (_, _, incs) in info.items() if incs and all(i in in_set for i in incs)}
    plain = {ns: str(info[ns][0]) for ns in info if ns not in index}
    status: dict[str, tuple[str, str | None]] = {}
    rules = None
    good = dict(plain)
    named, alone_done = 0, False
    while good:
        try:
            rules = yara.compile(filepaths=good, externals=ext, includes=True)
            break
        except yara.Error as exc:
            # The compiler stops at the first error and names its file: drop that
            # file and go again. When the file cannot be told (an error in an
            # included file) or many fail, compile each remaining file alone.
            msg = str(exc)
            culprit = next((ns for ns, fp in good.items() if msg.startswith(fp + "(")), None)
            if culprit is not None and (named < _MAX_RETRIES or alone_done):
                status[culprit] = ("failed", msg if not alone_done else f"with the other files: {msg}")
                del good[culprit]
                named += 1
            elif not alone_done:
                for ns, fp in list(good.items()):
                    try:
                        yara.compile(filepath=fp, externals=ext, includes=True)
                    except yara.Error as alone:
                        status[ns] = ("failed", str(alone))
                        del good[ns]
                alone_done = True
            else:  # every file compiles alone, together they fail, and the error names none
                status.update({ns: ("failed", f"with the other files: {msg}") for ns in good})
                good = {}
    status.update({ns: ("compiled", None) for ns in good})
    by_path = {info[ns][0]: ns for ns in info}

    def index_status(ns: str, seen: frozenset[str] = frozenset()) -> tuple[str, str | None]:
        if ns not in status:
            bad = []
            for inc in info[ns][2]:
                sub = by_path[inc]
                st = index_status(sub, seen | {ns}) if sub in index and sub not in seen else status.get(
                    sub, ("skipped", None))
                if st[0] == "failed":
                    bad.append(f"{sub}: {st[1]}")
            status[ns] = (("failed", "includes rule files that do not compile: " + "; ".join(bad)) if bad
                          else ("skipped", "index file: every file it includes is compiled on its own"))
        return status[ns]

    for ns in index:
        index_status(ns)
    files = [RuleFile(path, ns, *status[ns], info[ns][1]) for path, ns in candidates]
    return CompiledRules(rules, files)


def externals_for(claimed_name: str | bytes | None, filetype: str | None) -> dict[str, str]:
    """The external variables for one carved file.

    Args:
        claimed_name: name or path the protocol gave, preferably the raw bytes
            (``carved_files.claimed_name_raw``). NUL bytes, which YARA's C strings
            cannot hold, become U+FFFD; nothing else is changed.
        filetype: short type name from the magic number (``EXE``, ``PDF``, ...).

    Returns:
        ``filename`` (last path element), ``filepath`` (the whole claimed name),
        ``extension`` (``.exe``, lower case; empty when none), ``filetype`` and
        ``owner`` (always empty: a carved file has no owner).
    """
    if isinstance(claimed_name, (bytes, bytearray)):
        claimed_name = bytes(claimed_name).decode("utf-8", "replace")
    path = (claimed_name or "").replace("\0", "\ufffd")
    name = re.split(r"[/\\]", path)[-1]
    stem, dot, ext = name.rpartition(".")
    extension = f".{ext.lower()}" if dot and stem and 0 < len(ext) <= 16 else ""
    return {"filename": name, "filepath": path, "extension": extension,
            "filetype": filetype or "", "owner": ""}


class _RulesPool:
    """One rules object per scanning thread: the compiled one, then copies loaded from it.

    yara-python sets a scan's external variables on the rules object itself, so
    two threads must never share one.
    """

    def __init__(self, rules: Any, copies: int):
        self._first: Any = rules
        self._blob = b""
        self._lock = threading.Lock()
        if copies > 1 and rules is not None:
            buf = io.BytesIO()
            rules.save(file=buf)
            self._blob = buf.getvalue()

    def take(self) -> Any:
        with self._lock:
            if self._first is not None:
                first, self._first = self._first, None
                return first
        return _yara().load(file=io.BytesIO(self._blob))


def _match_rows(matches: Sequence[Any], sha256: str, filename: str, files_by_ns: dict[str, RuleFile],
                run_id: str, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for m in matches:
        strings = []
        for s in m.strings:
            for inst in s.instances[:MAX_OFFSETS]:
                strings.append({"identifier": s.identifier, "offset": inst.offset,
                                "length": inst.matched_length})
        rf = files_by_ns.get(m.namespace)
        rows.append({
            "sha256": sha256, "rule": m.rule, "namespace": m.namespace, "tags": list(m.tags),
            "meta": json.dumps(m.meta, sort_keys=True, default=str), "strings": json.dumps(strings),
            "rule_file": str(rf.path) if rf else None, "filename": filename, "run_id": run_id,
            "scanned_at": now,
        })
    return rows


_Target = tuple[str, bytes | None, str | None]


def _targets(case: Case, sha256s: Iterable[str] | None) -> list[_Target]:
    """Distinct (sha256, raw claimed name, filetype) of the store, optionally restricted.

    Largest first, so that the threads finish together instead of one scanning
    a big file alone at the end.
    """
    rows = case.con.execute("SELECT sha256, claimed_name_raw, filetype FROM carved_files "
                            "GROUP BY ALL ORDER BY max(size) DESC, sha256, claimed_name_raw NULLS FIRST"
                            ).fetchall()
    want = {s.lower() for s in sha256s} if sha256s is not None else None
    return [(sha, bytes(raw) if raw is not None else None, ftype) for sha, raw, ftype in rows
            if want is None or sha in want]


def scan(case: Case, rules: Iterable[str | Path] | None = None, *, timeout: int = 60,
         sha256s: Iterable[str] | None = None, workers: int | None = None,
         compiled: CompiledRules | None = None) -> ScanReport:
    """Scan the case's stored files with YARA and write ``yara_hits`` and ``yara_runs``.

    Each distinct content is scanned once per distinct claimed name (the
    ``filename`` external can change what matches). Hits of an earlier scan of
    the same files with the same rule namespaces are replaced, so scanning
    again adds no duplicates.

    Args:
        case: the case (open for writing).
        rules: rule files or folders; the bundled ``data/rules`` when None.
        timeout: seconds allowed per file scan (YARA counts whole seconds, >= 1).
        sha256s: scan only these contents (default: the whole store).
        workers: scanning threads (default: the CPU count).
        compiled: rules already compiled by :func:`compile_rules` (then ``rules`` is ignored).

    Returns:
        The :class:`ScanReport`: failing rule files, hit count, timeouts, errors.
    """
    yara = _yara()
    case._need_write()
    started = datetime.now(UTC)
    run_id = "Y" + uuid.uuid4().hex[:15]
    t0 = time.perf_counter()
    cr = compiled if compiled is not None else compile_rules(rules)
    report = ScanReport(run_id, cr.files)
    report.seconds["compile"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    targets = _targets(case, sha256s) if cr.rules is not None else []
    files_by_ns = {f.namespace: f for f in cr.files}
    n = max(1, min(workers or os.cpu_count() or 1, len(targets) or 1))
    pool_rules = _RulesPool(cr.rules, copies=n)
    local = threading.local()
    now = datetime.now(UTC)

    def one(target: _Target) -> tuple[str, list[dict[str, Any]], str | None, list[str]]:
        sha, name, ftype = target
        if not hasattr(local, "rules"):
            local.rules = pool_rules.take()
        ext = externals_for(name, ftype)
        path = content_path(case, sha)
        notes: list[str] = []

        def warned(kind: int, data: Any) -> int:
            # YARA stops recording a string after too many matches (a million);
            # the rule is still evaluated. Noted so the count is not taken as exact.
            if len(notes) < _MAX_NOTES:
                if kind == getattr(yara, "CALLBACK_TOO_MANY_MATCHES", 6) and hasattr(data, "rule"):
                    notes.append(f"too many matches of {data.string} in rule {data.rule} "
                                 f"({data.namespace}): later matches not recorded")
                else:
                    notes.append(f"YARA warning {kind}: {data}")
            return int(yara.CALLBACK_CONTINUE)

        try:
            matches = local.rules.match(str(path), externals=ext, timeout=max(1, int(timeout)),
                                        warnings_callback=warned)
        except yara.TimeoutError:
            return sha, [], "timeout", notes
        except yara.Error as exc:
            return sha, [], str(exc), notes
        return sha, _match_rows(matches, sha, ext["filename"], files_by_ns, run_id, now), None, notes

    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="yara") as pool:
        for sha, hits, problem, notes in pool.map(one, targets):
            if problem == "timeout":
                report.timeouts.append(sha)
            elif problem:
                report.errors.append((sha, problem))
            report.warnings += [(sha, note) for note in notes]
            rows.extend(hits)
    # Two claimed names with the same last element give the same hit twice.
    rows = list({(r["sha256"], r["namespace"], r["rule"], r["filename"]): r for r in rows}.values())
    report.files_scanned = len(targets)
    report.seconds["scan"] = time.perf_counter() - t1
    _record(case, report, rows, targets, started)
    report.hits = len(rows)
    return report


def _record(case: Case, report: ScanReport, rows: list[dict[str, Any]],
            targets: list[_Target], started: datetime) -> None:
    from forensics._rowref import transaction
    from forensics.tables import TABLES

    namespaces = [f.namespace for f in report.rule_files if f.status == "compiled"]
    runs: list[dict[str, Any]] = [
        {"run_id": report.run_id, "started_at": started, "kind": "rule_file", "status": f.status,
         "rule_file": str(f.path), "rule_sha256": f.sha256, "namespace": f.namespace, "message": f.message}
        for f in report.rule_files]
    runs += [{"run_id": report.run_id, "started_at": started, "kind": "file", "status": "timeout",
              "sha256": s, "message": "scan timed out"} for s in report.timeouts]
    runs += [{"run_id": report.run_id, "started_at": started, "kind": "file", "status": "error",
              "sha256": s, "message": m} for s, m in report.errors]
    runs += [{"run_id": report.run_id, "started_at": started, "kind": "file", "status": "warning",
              "sha256": s, "message": m} for s, m in report.warnings]
    scanned = sorted({t[0] for t in targets})
    with transaction(case):
        if scanned and namespaces:
            case.con.register("_bb_scanned", pa.table({"sha256": scanned}))
            case.con.register("_bb_ns", pa.table({"namespace": namespaces}))
            try:
                case.con.execute("DELETE FROM yara_hits WHERE sha256 IN (SELECT sha256 FROM _bb_scanned) "
                                 "AND namespace IN (SELECT namespace FROM _bb_ns)")
            finally:
                case.con.unregister("_bb_scanned")
                case.con.unregister("_bb_ns")
        if rows:
            case._insert("yara_hits", pa.Table.from_pylist(rows, schema=TABLES["yara_hits"].arrow_schema()))
        case._insert("yara_runs", pa.Table.from_pylist(runs, schema=TABLES["yara_runs"].arrow_schema()))
