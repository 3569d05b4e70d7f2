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

from forensics.case import Case, open_case  # noqa: E402
from forensics.errors import (  # noqa: E402
    BreachbookError,
    CaseError,
    CorruptRecord,
    DamagedField,
    EvidenceChangedError,
    QueryError,
    SourceError,
    UnsupportedSource,
)
from forensics.ingest import IngestResult  # noqa: E402

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
