"""Application protocol parsers for reassembled sessions, chosen by content.

Each module registers its parser with :func:`register`: a service name (Zeek's:
``http``, ``ssl``, ``dns``, ``smb``, ...), the transport, and a detector that
looks at the first bytes of each direction (the port is at most a hint that
lowers the bar, never the reason). :func:`analyze` runs the detectors in
order and hands the session to the first parser that claims it; a parser that
fails on hostile input is stopped and reported as a warning, and the next
session is parsed as usual.

Importing this package imports every public module in it (no hand-kept list).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forensics.protocols._base import Emitter, Reader, Session

__all__ = ["ANALYZERS", "Analyzer", "Emitter", "HeadsOnly", "NeedsSession", "Reader", "Session", "analyze",
           "claim", "register"]

log = logging.getLogger(__name__)

HEAD = 1024  # bytes of each direction the detectors see

Detector = Callable[[bytes, bytes, Session], bool]
Parser = Callable[[Session], None]


@dataclass(frozen=True)
class Analyzer:
    """A registered protocol parser.

    Attributes:
        service: the service name written to ``sessions.service``.
        transport: ``tcp`` or ``udp``.
        detect: ``detect(orig_head, resp_head, session) -> bool``.
        parse: ``parse(session)``; emits rows.
        order: detectors run in ascending order (specific signatures first).
    """

    service: str
    transport: str
    detect: Detector
    parse: Parser
    order: int


ANALYZERS: list[Analyzer] = []


def register(service: str, transport: str, detect: Detector, order: int = 50) -> Callable[[Parser], Parser]:
    """Decorator registering ``parse`` for ``service`` with its content detector."""

    def deco(parse: Parser) -> Parser:
        ANALYZERS.append(Analyzer(service, transport, detect, parse, order))
        ANALYZERS.sort(key=lambda a: (a.order, a.service, a.transport))
        return parse

    return deco


def heads(s: Session, n: int = HEAD) -> tuple[bytes, bytes]:
    """First bytes of each direction (TCP: captured stream; UDP: first datagram each way)."""
    if s.data.proto == 6:
        return s.orig.read(0, min(n, int(s.orig.end[-1]) if s.orig.end.size else 0)), s.resp.read(
            0, min(n, int(s.resp.end[-1]) if s.resp.end.size else 0)
        )
    o = next((g.data[:n] for g in s.data.datagrams if g.is_orig), b"")
    r = next((g.data[:n] for g in s.data.datagrams if not g.is_orig), b"")
    return o, r


def run_parser(s: Session, a: Analyzer) -> None:
    """Run one parser, turning any failure into a warning on the session."""
    try:
        a.parse(s)
    except Exception as exc:  # hostile input must not stop the ingest of the rest
        log.debug("parser %s failed on %s", a.service, s.uid, exc_info=True)
        s.warn(
            f"{a.service}_parser_error",
            f"{a.service} parser stopped: {type(exc).__name__}: {exc}",
            severity="error",
        )


class HeadsOnly:
    """Stands in for a session's reassembled data while detectors look at its first bytes.

    A session that no detector claims needs no reassembled directions at all:
    :func:`claim` can run on the heads a batch gathered in bulk, with this in
    ``Session.data``. A detector that wants more than the transport (``proto``)
    gets :class:`NeedsSession`, and the caller asks again with the whole session.
    """

    __slots__ = ("proto",)

    def __init__(self, proto: int):
        self.proto = proto

    def __getattr__(self, name: str) -> Any:
        raise NeedsSession(name)


class NeedsSession(Exception):
    """A detector looked past the heads (see :class:`HeadsOnly`)."""


def claim(ho: bytes, hr: bytes, s: Session) -> Analyzer | None:
    """The analyzer whose detector claims the session first, given each direction's head.

    What :func:`analyze` parses the session with. A detector that fails is taken
    as not claiming it, unless it failed for lack of the whole session
    (:class:`NeedsSession`, raised).
    """
    if not ho and not hr:
        return None
    transport = "tcp" if s.data.proto == 6 else "udp"
    for a in ANALYZERS:
        if a.transport != transport:
            continue
        try:
            hit = a.detect(ho, hr, s)
        except NeedsSession:
            raise
        except Exception:  # a detector must never take the session down
            log.debug("detector %s failed on %s", a.service, s.uid, exc_info=True)
            hit = False
        if hit:
            return a
    return None


def analyze(s: Session, analyzer: Analyzer | None = None) -> str | None:
    """Detect the session's protocol by content and parse it.

    Args:
        s: the session.
        analyzer: the one :func:`claim` found already for it (detection is then skipped).

    Returns:
        The service detected (also appended to ``s.services``), or None.
    """
    a = analyzer or claim(*heads(s), s)
    if a is None:
        return None
    if a.service not in s.services:
        s.services.append(a.service)
    run_parser(s, a)
    return a.service


for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
