"""Evidence sources: one module per format, registered by a decorator.

A source is a class with a ``name``, a ``sniff(head) -> bool`` that recognises
the format from the file's first bytes, and a ``read(path, ctx)`` that yields
what the engine stores: :class:`~forensics.sources._frames.FrameBatch` chunks
for captures (decoded by the network pipeline) or ``(table_name, pyarrow
Table)`` pairs for record formats. The engine, not the source, stamps
provenance and writes batches.

Every module in this package whose name does not start with ``_`` is imported
on first use, so adding a format touches three files: its module, its test and
its fixture.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from forensics.errors import UnsupportedSource

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

__all__ = ["Source", "all_sources", "detect", "get", "iter_files", "register", "unavailable"]

log = logging.getLogger(__name__)

SNIFF_BYTES = 4096


class Source(Protocol):
    """What a source module provides."""

    name: ClassVar[str]
    """Short format name stored in ``evidence.format`` (e.g. ``"pcap"``)."""

    def sniff(self, head: bytes) -> bool:
        """True when ``head`` (the first bytes of a file) looks like this format."""
        ...

    def read(self, path: Path, ctx: IngestContext) -> Iterator[Any]:
        """Yield the file's content as batches; report bad records through ``ctx``."""
        ...


_REGISTRY: dict[str, type] = {}
_loaded = False

S = TypeVar("S", bound=type)


def register(cls: S) -> S:
    """Class decorator that adds a source to the registry under ``cls.name``."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"source {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


_BROKEN: dict[str, str] = {}


def _import(name: str) -> None:
    try:
        importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        # A source whose optional dependency is missing must not stop the others.
        if name not in _BROKEN:
            _BROKEN[name] = f"{type(exc).__name__}: {exc}"
            log.warning("source %s unavailable: %s", name, exc)


def _modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for name in _modules():
        _import(name)
    _loaded = True


def _sources_as_loaded() -> Iterator[Source]:
    """Every source in registration order, importing source modules only as far as needed.

    Detecting a capture need not import the log sources (their parsers and
    dependencies cost a command-line ingest about 0.05 s before its first packet).
    Once every module has been imported, later calls import nothing.
    """
    global _loaded
    pending = [] if _loaded else _modules()
    given = 0
    while True:
        registered = list(_REGISTRY.values())
        for cls in registered[given:]:
            yield cls()
        given = len(registered)
        if not pending:
            _loaded = True
            return
        _import(pending.pop(0))


def unavailable() -> dict[str, str]:
    """Source modules that could not be loaded, with the reason (e.g. a missing package)."""
    _load()
    return dict(_BROKEN)


def all_sources() -> dict[str, Source]:
    """Every registered source, by name, in registration order."""
    _load()
    return {name: cls() for name, cls in _REGISTRY.items()}


def get(name: str) -> Source:
    """The source registered as ``name``.

    Raises:
        UnsupportedSource: no source has that name.
    """
    sources = all_sources()
    if name not in sources:
        why = f" (module {name} unavailable: {_BROKEN[name]})" if name in _BROKEN else ""
        raise UnsupportedSource(
            f"unknown format {name!r}{why}; known: {', '.join(sorted(sources))}")
    return sources[name]


def detect(path: str | Path) -> Source:
    """Pick the source for a file by sniffing its first bytes.

    Raises:
        UnsupportedSource: no registered source recognises the file.
    """
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    for src in _sources_as_loaded():
        if src.sniff(head):
            return src
    what = "empty file" if not head else f"first bytes {head[:8].hex()}"
    raise UnsupportedSource(
        f"not a format Breachbook reads ({what}); known formats: {', '.join(all_sources())}",
        path=str(p), offset=0,
    )


def iter_files(paths: list[str | Path]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted) into the files to ingest."""
    for item in paths:
        p = Path(item)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p
