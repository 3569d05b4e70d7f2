"""A session as a conversation: who said what, in what order, with the gaps marked.

:func:`conversation` reassembles one session on demand (from the packet index
and the evidence bytes) and cuts it into *turns*: maximal runs of data from one
side, ordered by when the data became readable in order (a retransmission that
fills a hole delivers the bytes behind it at its own time, as a receiving
stack would). Every byte of each direction, captured or lost, belongs to
exactly one turn; lost ranges are listed in the turn's ``gaps``. This is what
the replay widget and the carver read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from forensics.reassembly._evidence import Evidence
from forensics.reassembly._index import rows_for_uids
from forensics.reassembly.stream import Datagram, Direction, build_sessions

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd

    from forensics.case import Case

__all__ = ["Conversation", "Turn", "conversation"]


def _dt(ns: int | None) -> datetime | None:
    if ns is None or ns == np.iinfo(np.int64).min:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


@dataclass(frozen=True)
class Turn:
    """One run of data from one side.

    Attributes:
        index: position in the conversation (0-based).
        is_orig: True when the originator spoke.
        start: stream offset (in that direction) of the turn's first byte.
        end: stream offset one past its last byte.
        first_ts: capture time of the first frame carrying the turn's data (UTC).
        last_ts: capture time of the last such frame.
        first_frame: first frame carrying the turn's data.
        last_frame: last such frame.
        gaps: stream ranges inside ``[start, end)`` that were never captured.
    """

    index: int
    is_orig: bool
    start: int
    end: int
    first_ts: datetime | None
    last_ts: datetime | None
    first_frame: int
    last_frame: int
    gaps: tuple[tuple[int, int], ...] = ()

    @property
    def direction(self) -> str:
        """``"orig"`` (client to server) or ``"resp"``."""
        return "orig" if self.is_orig else "resp"

    @property
    def length(self) -> int:
        """Bytes the turn spans, gaps included."""
        return self.end - self.start

    @property
    def missing(self) -> int:
        """Bytes of the turn that were never captured."""
        return sum(e - s for s, e in self.gaps)


@dataclass
class Conversation:
    """A reassembled session: its sessions row, both directions and the turns.

    Attributes:
        uid: the session uid.
        session: the session's row of the sessions table, as a dict.
        orig: the originator's bytes (TCP) or datagrams concatenated (UDP).
        resp: the responder's bytes.
        turns: the turns in order.
        datagrams: the UDP payloads in capture order (empty for TCP).
    """

    uid: str
    session: dict[str, Any]
    orig: Direction
    resp: Direction
    turns: list[Turn] = field(default_factory=list)
    datagrams: list[Datagram] = field(default_factory=list)
    _evidence: Evidence | None = None

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        s = self.session
        return (
            f"<Conversation {self.uid} {s.get('proto')} {s.get('orig_h')}:{s.get('orig_p')} -> "
            f"{s.get('resp_h')}:{s.get('resp_p')} turns={len(self.turns)} "
            f"orig={self.orig.captured}B resp={self.resp.captured}B>"
        )

    def close(self) -> None:
        """Release the evidence file."""
        if self._evidence is not None:
            self._evidence.close()
            self._evidence = None

    def direction(self, is_orig: bool) -> Direction:
        """The originator's (True) or responder's (False) direction."""
        return self.orig if is_orig else self.resp

    def read(self, what: Turn | str | bool, *, fill: bytes | None = None) -> bytes:
        """Bytes of a turn or of a whole direction.

        Args:
            what: a :class:`Turn`, ``"orig"``/``"resp"``, or True/False for orig/resp.
            fill: byte to put in gaps; by default gaps are left out.
        """
        if isinstance(what, Turn):
            return self.direction(what.is_orig).read(what.start, what.end, fill=fill)
        is_orig = what if isinstance(what, bool) else what == "orig"
        d = self.direction(is_orig)
        return d.read(0, d.extent if fill is not None else None, fill=fill)

    def to_frame(self) -> pd.DataFrame:
        """The turns as a DataFrame (one row per turn)."""
        import pandas as pd

        cols = [
            "index",
            "direction",
            "start",
            "end",
            "length",
            "missing",
            "first_ts",
            "last_ts",
            "first_frame",
            "last_frame",
        ]
        return pd.DataFrame([{c: getattr(t, c) for c in cols} for t in self.turns], columns=cols)


def turns_of(orig: Direction, resp: Direction) -> list[Turn]:
    """Cut two reassembled directions into turns (see the module docstring)."""
    parts = []
    for d, flag in ((orig, 1), (resp, 0)):
        if d.start.size:
            deliver = np.maximum.accumulate(d.frame)
            parts.append((deliver, np.full(d.start.size, flag), np.arange(d.start.size)))
    if not parts:
        return []
    deliver = np.concatenate([p[0] for p in parts])
    who = np.concatenate([p[1] for p in parts])
    idx = np.concatenate([p[2] for p in parts])
    order = np.lexsort((idx, deliver))
    who, idx = who[order], idx[order]
    cuts = np.flatnonzero(np.diff(who)) + 1
    bounds = [0, *cuts.tolist(), who.size]
    pos = {1: 0, 0: 0}
    runs: list[list] = []
    for a, b in itertools.pairwise(bounds):
        w = int(who[a])
        d = orig if w else resp
        ii = idx[a:b]
        end = int(d.end[ii].max())
        runs.append([w, pos[w], end, ii])
        pos[w] = max(pos[w], end)
    # Lost bytes after the last captured one belong to that side's last turn.
    for w, d in ((1, orig), (0, resp)):
        last = [r for r in runs if r[0] == w]
        if last and d.extent > last[-1][2]:
            last[-1][2] = d.extent
    turns = []
    for i, (w, start, end, ii) in enumerate(runs):
        d = orig if w else resp
        gaps = tuple(
            (max(int(s), start), min(int(e), end)) for s, e in d.gaps.tolist() if s < end and e > start
        )
        turns.append(
            Turn(
                i,
                bool(w),
                start,
                end,
                _dt(int(d.ts[ii].min())),
                _dt(int(d.ts[ii].max())),
                int(d.frame[ii].min()),
                int(d.frame[ii].max()),
                gaps,
            )
        )
    return turns


def _udp_direction(dgrams: list[Datagram], is_orig: bool, ev: Evidence) -> Direction:
    mine = [g for g in dgrams if g.is_orig == is_orig]
    if not mine:
        return Direction.empty(is_orig, ev)
    lens = np.array([len(g.data) for g in mine], np.int64)
    start = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    return Direction(
        is_orig,
        start,
        start + lens,
        np.array([g.file_offset for g in mine], np.int64),
        np.array([g.frame for g in mine], np.int64),
        np.array([g.ts for g in mine], np.int64),
        np.zeros((0, 2), np.int64),
        int(lens.sum()),
        ev,
    )


def conversation(case: Case, uid: str) -> Conversation:
    """Reassemble one session and cut it into turns.

    Args:
        case: the case.
        uid: the session uid.

    Returns:
        The :class:`Conversation`; close it (or use ``with``) to release the evidence file.

    Raises:
        KeyError: no session has this uid, or its evidence has no packet index.
    """
    s = case.sql("SELECT * FROM sessions WHERE uid = ? AND source = 'pcap' LIMIT 1", [uid])
    if not len(s):
        raise KeyError(f"no pcap-derived session with uid {uid!r}")
    row = {k: (None if _isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in s.iloc[0].items()}
    rows, paths = rows_for_uids(case, [uid])
    if not paths:
        raise KeyError(f"no packet index holds session {uid}")
    ev = Evidence(paths[0], tuple(paths[1:]))
    built, _ = build_sessions(rows, ev)
    sd = built.get(0)
    if sd is None:
        return Conversation(uid, row, Direction.empty(True, ev), Direction.empty(False, ev), _evidence=ev)
    if sd.proto == 17:
        o, r = _udp_direction(sd.datagrams, True, ev), _udp_direction(sd.datagrams, False, ev)
        return Conversation(uid, row, o, r, turns_of(o, r), sd.datagrams, _evidence=ev)
    return Conversation(uid, row, sd.orig, sd.resp, turns_of(sd.orig, sd.resp), _evidence=ev)


def _isna(v: object) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v)) if not isinstance(v, list | np.ndarray) else False
    except (TypeError, ValueError):
        return False
