"""Breachbook's forensic engine: evidence in, a queryable case out.

Start here::

    import forensics
    case = forensics.open_case("cases/acme")
    case.ingest("evidence/")            # pcap, pcapng, ...; folders are read recursively
    case.sessions(host="10.0.0.5")      # Zeek conn.log-like sessions
    case.sql("SELECT service, count(*) FROM sessions GROUP BY 1")

Everything public is listed in ``__all__``; modules with a leading underscore
are private.
"""

from __future__ import annotations

__version__ = "0.1.0"

import typing as _typing

from forensics.errors import (
    BreachbookError,
    CaseError,
    CorruptRecord,
    DamagedField,
    EvidenceChangedError,
    QueryError,
    SourceError,
    UnsupportedSource,
)

if _typing.TYPE_CHECKING:
    from forensics.case import Case, open_case
    from forensics.ingest import IngestResult

# The engine (DuckDB, Arrow, numba) is imported on first use, not with the package, so
# that the command line can start hashing evidence before it is loaded (forensics._prehash).
_LAZY = {"Case": "forensics.case", "open_case": "forensics.case", "IngestResult": "forensics.ingest"}


def __getattr__(name: str) -> _typing.Any:
    """``forensics.open_case`` and the other engine names, imported when first used."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"forensics.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"forensics.{name}":
            raise
        raise AttributeError(f"module 'forensics' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BreachbookError",
    "Case",
    "CaseError",
    "CorruptRecord",
    "DamagedField",
    "EvidenceChangedError",
    "IngestResult",
    "QueryError",
    "SourceError",
    "UnsupportedSource",
    "__version__",
    "open_case",
]
