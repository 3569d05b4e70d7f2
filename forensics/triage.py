"""Triage of carved Windows executables (PE): compile time, imphash, sections, signature.

:func:`analyse_pe` reads one file with pefile and returns a ``pe_info`` row;
:func:`triage` runs it over every PE in the case's file store. A hostile PE can
make a parser loop or allocate without end, so :func:`triage` parses in worker
processes with an address-space limit and a per-file timeout, and a worker that
overruns is killed and replaced; the file gets ``status = 'timeout'`` and the
run goes on. Files above ``max_size`` are not parsed (``too_large``).

"Signed" means the file carries an Authenticode certificate table; the
signature is not verified (that needs the certificate chain and a trust store).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forensics.errors import BreachbookError
from forensics.filestore import content_path

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["PE_MIME", "TriageReport", "analyse_pe", "triage"]

PE_MIME = "application/x-dosexec"
MAX_SECTIONS = 96  # sections listed (the loader accepts up to 96)
MAX_DLLS = 512
MAX_WARNINGS = 20
DEFAULT_MAX_SIZE = 256 << 20
DEFAULT_MEMORY = 2 << 30  # address space a worker may add to what it uses at start


@dataclass
class TriageReport:
    """What :func:`triage` did.

    Attributes:
        analysed: PE files looked at.
        status: count per status (``ok``, ``not_pe``, ``error``, ``timeout``, ``too_large``).
        rows: the ``pe_info`` rows written.
    """

    analysed: int = 0
    status: Counter[str] = field(default_factory=Counter)
    rows: list[dict[str, Any]] = field(default_factory=list)


def _pefile() -> Any:
    try:
        import pefile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BreachbookError("PE triage needs pefile: pip install 'breachbook[scan]'") from exc
    return pefile


def _text(b: bytes) -> str:
    s = b.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    return "".join(c if c >= " " else f"\\x{ord(c):02x}" for c in s)


def _entropy(data: bytes) -> float:
    if not data:
        return 0.0
    counts = Counter(data)
    n = len(data)
    return round(-sum(c / n * math.log2(c / n) for c in counts.values()) + 0.0, 6)


def _strip(name: str | None, prefix: str) -> str | None:
    return name[len(prefix):] if name and name.startswith(prefix) else name


def analyse_pe(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
    """Triage one PE file.

    Args:
        path: the file.
        sha256: its SHA-256, copied into the row.

    Returns:
        A ``pe_info`` row as a dict; ``status`` is ``ok``, ``not_pe`` or ``error``.
    """
    pefile = _pefile()
    row: dict[str, Any] = {"sha256": sha256, "analysed_at": datetime.now(UTC)}
    try:
        pe = pefile.PE(str(path), fast_load=True)
    except pefile.PEFormatError as exc:
        return row | {"status": "not_pe", "error": str(exc)[:500]}
    try:
        d = pefile.DIRECTORY_ENTRY
        pe.parse_data_directories(directories=[d["IMAGE_DIRECTORY_ENTRY_IMPORT"],
                                               d["IMAGE_DIRECTORY_ENTRY_EXPORT"],
                                               d["IMAGE_DIRECTORY_ENTRY_DEBUG"]])
        fh, oh = pe.FILE_HEADER, pe.OPTIONAL_HEADER
        size = len(pe.__data__)
        sections = []
        entry = oh.AddressOfEntryPoint
        entry_section = None
        for s in pe.sections[:MAX_SECTIONS]:
            name = _text(s.Name)
            if s.contains_rva(entry):
                entry_section = name
            sections.append({"name": name, "virtual_address": s.VirtualAddress,
                             "virtual_size": s.Misc_VirtualSize, "raw_size": s.SizeOfRawData,
                             "entropy": _entropy(s.get_data()[:s.SizeOfRawData]),
                             "characteristics": s.Characteristics})
        imports = getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        debug = getattr(pe, "DIRECTORY_ENTRY_DEBUG", [])
        repro = any(getattr(e.struct, "Type", None) == 16 for e in debug)  # IMAGE_DEBUG_TYPE_REPRO
        pdb = next((_text(e.entry.PdbFileName) for e in debug
                    if e.entry is not None and hasattr(e.entry, "PdbFileName")), None)
        sec = oh.DATA_DIRECTORY[4] if len(oh.DATA_DIRECTORY) > 4 else None  # certificate table
        signed = bool(sec and sec.Size >= 8 and sec.VirtualAddress > 0 and sec.VirtualAddress + 8 <= size)
        overlay = pe.get_overlay_data_start_offset()
        stamp = fh.TimeDateStamp
        row |= {
            "status": "ok",
            "machine": _strip(pefile.MACHINE_TYPE.get(fh.Machine), "IMAGE_FILE_MACHINE_") or hex(fh.Machine),
            "is_64bit": oh.Magic == 0x20B, "is_dll": bool(pe.is_dll()), "is_driver": bool(pe.is_driver()),
            "subsystem": {"WINDOWS_GUI": "GUI", "WINDOWS_CUI": "CONSOLE"}.get(
                _strip(pefile.SUBSYSTEM_TYPE.get(oh.Subsystem), "IMAGE_SUBSYSTEM_") or "",
                _strip(pefile.SUBSYSTEM_TYPE.get(oh.Subsystem), "IMAGE_SUBSYSTEM_")),
            # A reproducible build stores a hash, not a time, in TimeDateStamp.
            "compile_time": datetime.fromtimestamp(stamp, UTC) if stamp and not repro else None,
            "compile_time_raw": stamp, "imphash": (pe.get_imphash() or None) if imports else None,
            "entry_point": entry, "entry_section": entry_section, "n_sections": fh.NumberOfSections,
            "sections": json.dumps(sections),
            "dlls": [_text(i.dll or b"") for i in imports[:MAX_DLLS]],
            "n_imports": sum(len(i.imports) for i in imports),
            "n_exports": len(exports.symbols) if exports is not None else 0,
            "signed": signed, "signature_size": sec.Size if signed and sec else None,
            "overlay_size": size - overlay if overlay is not None else 0, "pdb_path": pdb,
            "warnings": [str(w)[:300] for w in pe.get_warnings()[:MAX_WARNINGS]],
        }
    except Exception as exc:  # hostile input: any parser failure is a result
        row |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        pe.close()
    return row


def _limit_memory(extra: int) -> None:
    """Worker initializer: cap the address space at what is mapped now plus ``extra``."""
    with contextlib.suppress(Exception):
        import resource

        vm = 0
        with open("/proc/self/status") as fh:  # noqa: PTH123 - Linux only; skipped elsewhere
            for line in fh:
                if line.startswith("VmSize:"):
                    vm = int(line.split()[1]) * 1024
        if vm:
            resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))


def _pe_targets(case: Case, sha256s: Iterable[str] | None) -> list[tuple[str, int]]:
    rows = case.con.execute(f"SELECT DISTINCT sha256, size FROM carved_files WHERE mime_type = '{PE_MIME}' "
                            "ORDER BY sha256").fetchall()
    want = {s.lower() for s in sha256s} if sha256s is not None else None
    return [(s, int(n)) for s, n in rows if want is None or s in want]


def triage(case: Case, *, sha256s: Iterable[str] | None = None, timeout: float = 30.0,
           max_size: int = DEFAULT_MAX_SIZE, workers: int | None = None,
           memory_limit: int = DEFAULT_MEMORY) -> TriageReport:
    """Triage every PE in the file store (or the given ones) and write ``pe_info``.

    Earlier rows of the same files are replaced.

    Args:
        case: the case (open for writing).
        sha256s: only these contents (default: every ``application/x-dosexec`` in the store).
        timeout: seconds a file may take before its worker is killed.
        max_size: larger files are not parsed (``too_large``).
        workers: worker processes (default: the CPU count).
        memory_limit: bytes of address space a worker may add to its start size.

    Returns:
        The :class:`TriageReport`.
    """
    from forensics._rowref import insert, transaction

    case._need_write()
    targets = _pe_targets(case, sha256s)
    report = TriageReport()
    now = datetime.now(UTC)
    todo: list[tuple[str, Path]] = []
    for sha, size in targets:
        if size > max_size:
            report.rows.append({"sha256": sha, "status": "too_large", "analysed_at": now,
                                "error": f"{size} bytes, more than max_size {max_size}"})
        else:
            todo.append((sha, content_path(case, sha)))
    n = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    ctx = mp.get_context("spawn")  # no fork of a process holding DuckDB threads
    while todo:
        with ctx.Pool(n, initializer=_limit_memory, initargs=(memory_limit,)) as pool:
            pending = [(sha, pool.apply_async(analyse_pe, (str(p), sha))) for sha, p in todo]
            done = 0
            for sha, res in pending:
                try:
                    report.rows.append(res.get(timeout=timeout))
                except mp.TimeoutError:
                    report.rows.append({"sha256": sha, "status": "timeout", "analysed_at": now,
                                        "error": f"triage took more than {timeout} s; worker killed"})
                    done += 1
                    break
                except Exception as exc:  # a worker died (MemoryError, crash)
                    report.rows.append({"sha256": sha, "status": "error", "analysed_at": now,
                                        "error": f"{type(exc).__name__}: {exc}"[:500]})
                done += 1
            else:
                done = len(pending)
            # Results already finished behind the one that timed out are kept.
            rest = []
            for sha, res in pending[done:]:
                if res.ready() and res.successful():
                    report.rows.append(res.get())
                else:
                    rest.append((sha, content_path(case, sha)))
            pool.terminate()
        todo = rest
    report.analysed = len(report.rows)
    report.status = Counter(r["status"] for r in report.rows)
    with transaction(case):
        for r in report.rows:
            case.con.execute("DELETE FROM pe_info WHERE sha256 = ?", [r["sha256"]])
        insert(case, "pe_info", report.rows)
    return report
