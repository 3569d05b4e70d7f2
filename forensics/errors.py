"""Every exception Breachbook raises, in one place.

The hierarchy::

    BreachbookError                 base of everything below
    ├── CaseError                   the case directory or its database is unusable
    │   └── EvidenceChangedError    an evidence file no longer matches its registered SHA-256
    ├── ScopeError                  a scope start the case does not know (lists near matches)
    ├── InventoryError              an asset inventory that cannot be used at all
    ├── SourceError                 problems reading one evidence file
    │   ├── UnsupportedSource       tier 1: the file is not in any (or the forced) format
    │   ├── CorruptRecord           tier 2: a record had to be skipped (raised only with strict=True)
    │   └── DamagedField            tier 3: a record was kept with a field nulled (strict=True only)
    └── QueryError                  an analyst's SQL failed; wraps the DuckDB message

Bad input follows three tiers (after plaso and dissect): a file that is not the
format is *unsupported*; a corrupt record is skipped with a warning row in
``ingest_warnings`` (file, offset, message); a damaged but usable record is kept
with the bad field NULL and a warning. ``strict=True`` turns the last two into
exceptions, which is what the tests use to prove a clean file is read cleanly.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BreachbookError",
    "CaseError",
    "CorruptRecord",
    "DamagedField",
    "EvidenceChangedError",
    "InventoryError",
    "QueryError",
    "ScopeError",
    "SourceError",
    "UnsupportedSource",
]


class BreachbookError(Exception):
    """Base class of every error raised by Breachbook."""


class CaseError(BreachbookError):
    """The case directory or its database cannot be used as asked."""


class EvidenceChangedError(CaseError):
    """An evidence file's bytes no longer match the SHA-256 recorded at registration."""


class SourceError(BreachbookError):
    """A problem reading one evidence file.

    Attributes:
        path: the evidence file.
        offset: byte offset (or line number for text logs) where it happened, if known.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}" + (f" @ {offset}" if offset is not None else "") + ": "
        super().__init__(where + message)
        self.path = path
        self.offset = offset
        self.message = message


class UnsupportedSource(SourceError):
    """The file is not in a format Breachbook reads (or not in the format that was forced)."""


class CorruptRecord(SourceError):
    """A record could not be read and would be skipped (raised instead when strict=True)."""


class DamagedField(SourceError):
    """A record was readable but a field was not (raised instead of nulling when strict=True)."""


class QueryError(BreachbookError):
    """A SQL query against the case failed; the message is DuckDB's."""


class ScopeError(BreachbookError, ValueError):
    """A scope start (host or account) that the case does not know; ``near`` lists close matches."""

    def __init__(self, message: str, near: Sequence[str] = ()):
        super().__init__(message)
        self.near = list(near)


class InventoryError(BreachbookError, ValueError):
    """The inventory file cannot be used at all (missing, or no host or address column)."""
