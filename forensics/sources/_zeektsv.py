r"""A vectorised reader of Zeek's TSV log format (``LogAscii`` writer).

The file is read in blocks of a few MiB. In each block numpy finds the line
boundaries, drops header/comment lines, and checks every line's field count
and bytes (Zeek escapes tabs, control bytes and non-UTF-8 as ``\xNN``, so a raw
control byte means damage); pyarrow's CSV parser then splits the surviving
lines in C, and the columns are typed from the ``#types`` header with Arrow
compute kernels. No Python code runs per row, which is what makes this faster
than ``pandas.read_csv`` on conn.log (``tests/bench/bench_logs.py``).

Typing (Zeek ``logging/writers/ascii``): ``-`` (unset) and ``(empty)`` are
NULL; ``time`` becomes microseconds since the epoch (exact: epoch seconds with
six decimals fit a double's 53-bit mantissa), ``interval``/``double`` float64,
``count``/``int``/``port`` int64, ``bool`` T/F, ``set``/``vector`` a list of
strings split on ``#set_separator``, everything else a string. A value that
does not parse as its type (e.g. baselines' masked ``XXXXXXXXXX.XXXXXX``
times) becomes NULL and one warning per block and column counts them.
A ``#separator`` header in the middle of a file (concatenated logs) starts a
new header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from forensics.sources._logio import MAX_LINE

if TYPE_CHECKING:
    from forensics.ingest import IngestContext

BLOCK = 16 << 20
_NUMERIC = r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$"
_INTEGER = r"^-?\d+$"


@dataclass
class Header:
    """The ``#`` directives of a Zeek TSV log."""

    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    path: str | None = None
    fields: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    def directive(self, line: str) -> None:
        """Apply one ``#name value`` header line."""
        name, _, value = line[1:].partition(" " if line.startswith("#separator") else "\t")
        if name == "separator":
            self.separator = value.encode().decode("unicode_escape")
        elif name == "set_separator":
            self.set_separator = value
        elif name == "empty_field":
            self.empty_field = value
        elif name == "unset_field":
            self.unset_field = value
        elif name == "path":
            self.path = value
        elif name == "fields":
            self.fields = value.split(self.separator)
        elif name == "types":
            self.types = value.split(self.separator)


@dataclass
class Block:
    """Typed columns of consecutive good lines, with their line numbers and offsets."""

    header: Header
    table: pa.Table
    lines: np.ndarray
    offsets: np.ndarray


def _typed(col: pa.ChunkedArray, ztype: str, header: Header, name: str, lines: np.ndarray,
           ctx: IngestContext) -> pa.ChunkedArray:
    if ztype.startswith(("set[", "vector[", "table[")):
        return pc.split_pattern(col, header.set_separator)
    if ztype in _PARSED and col.type != pa.string():  # converted by the CSV reader already
        if ztype == "time":
            return pc.round(pc.multiply(col, 1_000_000.0)).cast(pa.int64())
        return col
    if ztype in ("time", "interval", "double", "count", "int", "port"):
        integer = ztype in ("count", "int", "port")
        target = pa.int64() if integer else pa.float64()
        try:
            num = col.cast(target)  # the fast path: every value parses
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ok = pc.match_substring_regex(col, _INTEGER if integer else _NUMERIC)
            bad = int(pc.sum(pc.invert(ok)).as_py() or 0)
            at = int(lines[pc.index(ok, False).as_py()])
            ctx.warn(at, "bad_value", f"{bad} {name} value(s) are not a {ztype} (first on line "
                     f"{at}); stored as NULL", unit="line", count=bad)
            num = pc.if_else(ok, col, pa.scalar(None, pa.string())).cast(target)
        if integer:
            return num
        if ztype == "time":
            return pc.round(pc.multiply(num, 1_000_000.0)).cast(pa.int64())
        return num
    if ztype == "bool":
        ok = pc.or_(pc.is_in(col, value_set=pa.array(["T", "F"])), pc.is_null(col))
        bad = int(pc.sum(pc.invert(ok)).as_py() or 0)
        if bad:
            at = int(lines[pc.index(ok, False).as_py()])
            ctx.warn(at, "bad_value", f"{bad} {name} value(s) are not a bool (first on line {at}); "
                     "stored as NULL", unit="line", count=bad)
        return pc.if_else(ok, pc.equal(col, "T"), pa.scalar(None, pa.bool_()))
    return col


def _lines(data: bytes, ends: np.ndarray, base_line: int, base_off: int, header: Header,
           ctx: IngestContext) -> Iterator[Block | str]:
    """Blocks of good lines in ``data`` (whole lines, newlines at ``ends``) and header lines."""
    arr = np.frombuffer(data, np.uint8)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    heads = np.flatnonzero(arr[np.minimum(starts, len(arr) - 1)] == ord("#")).tolist()
    pos = 0
    for h in [*heads, len(starts)]:
        if h > pos:
            lo, hi = int(starts[pos]), int(ends[h - 1]) + 1
            yield from _segment(data[lo:hi], ends[pos:h] - lo, base_line + pos, base_off + lo,
                                header, ctx)
        if h < len(starts):
            yield data[starts[h]:ends[h]].decode("utf-8", "replace").rstrip("\r")
        pos = h + 1


_CTRL = bytes(b for b in range(32) if b not in (9, 10, 13))


def _segment(seg: bytes, ends: np.ndarray, line0: int, base_off: int, header: Header,
             ctx: IngestContext) -> Iterator[Block]:
    """Typed rows of a run of data lines (``seg`` ends with a newline; newlines at ``ends``)."""
    nf = len(header.fields)
    n = len(ends)
    types = header.types + ["string"] * (nf - len(header.types))
    # The fast path: pyarrow splits and converts every line (a wrong field count raises,
    # an empty line changes the row count); control bytes are checked here.
    if nf and len(seg.translate(None, _CTRL)) == len(seg):
        tbl = _parse(seg, header, typed=True)
        if tbl is not None and tbl.num_rows == n:
            starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
            linenos = line0 + 1 + np.arange(n)
            cols = [_typed(tbl.column(i), types[i], header, header.fields[i], linenos, ctx)
                    for i in range(nf)]
            yield Block(header, pa.table(cols, names=header.fields), linenos, base_off + starts)
            return
    yield from _careful(seg, np.frombuffer(seg, np.uint8), line0, base_off, header, ctx)


def _careful(data: bytes, arr: np.ndarray, line0: int, base_off: int, header: Header,
             ctx: IngestContext) -> Iterator[Block]:
    """Line-by-line checks (vectorised) for a run that failed the fast path."""
    nf = len(header.fields)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    lengths = ends - starts
    tab_at = np.flatnonzero(arr == 9)
    ctrl_at = np.flatnonzero((arr < 32) & (arr != 9) & (arr != 10) & (arr != 13))
    tabs = np.searchsorted(tab_at, ends) - np.searchsorted(tab_at, starts)
    ctrls = np.searchsorted(ctrl_at, ends) - np.searchsorted(ctrl_at, starts)
    linenos = line0 + 1 + np.arange(len(starts))
    empty = lengths == 0
    good = (tabs == nf - 1) & (ctrls == 0) & ~empty & (lengths <= MAX_LINE)
    for i in np.flatnonzero(~good & ~empty).tolist():
        why = ("control bytes (Zeek escapes them: a damaged line)" if ctrls[i]
               else f"line of {lengths[i]} bytes" if lengths[i] > MAX_LINE
               else f"{tabs[i] + 1} fields where #fields names {nf}")
        ctx.warn(int(linenos[i]), "bad_line", f"line at byte {base_off + int(starts[i])}: {why}; "
                 "skipped", unit="line")
    idx = np.flatnonzero(good)
    if not len(idx):
        return
    lo, hi = int(starts[idx[0]]), int(starts[idx[-1]] + lengths[idx[-1]] + 1)
    if bool(good[idx[0]:idx[-1] + 1].all()):
        buf = data[lo:hi]  # the common case: one contiguous run of good lines
    else:
        buf = b"".join(data[s:s + n + 1] for s, n in
                       zip(starts[idx].tolist(), lengths[idx].tolist(), strict=True))
    tbl = _parse(buf, header, typed=True)
    if tbl is None:  # some value is not of its type, or a line is not UTF-8: the careful path
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError:
            keep = []
            for k, (s, n) in enumerate(zip(starts[idx].tolist(), lengths[idx].tolist(),
                                           strict=True)):
                try:
                    data[s:s + n].decode("utf-8")
                    keep.append(k)
                except UnicodeDecodeError:
                    ctx.warn(int(linenos[idx[k]]), "bad_encoding", "not UTF-8 (Zeek escapes "
                             "non-UTF-8: a damaged line); skipped", unit="line")
            idx = idx[keep]
            if not len(idx):
                return
            buf = b"".join(data[s:s + n + 1] for s, n in
                           zip(starts[idx].tolist(), lengths[idx].tolist(), strict=True))
        tbl = _parse(buf, header, typed=False)
        assert tbl is not None
    types = header.types + ["string"] * (nf - len(header.types))
    cols = [_typed(tbl.column(i), types[i], header, header.fields[i], linenos[idx], ctx)
            for i in range(nf)]
    yield Block(header, pa.table(cols, names=header.fields), linenos[idx], base_off + starts[idx])


_PARSED = {"time": pa.float64(), "interval": pa.float64(), "double": pa.float64(),
           "count": pa.int64(), "int": pa.int64(), "port": pa.int64(), "bool": pa.bool_()}


def _parse(buf: bytes, header: Header, *, typed: bool) -> pa.Table | None:
    """Split (and, when ``typed``, convert) the lines in C; None when a typed value fails."""
    nf = len(header.fields)
    names = [f"c{i}" for i in range(nf)]
    types = header.types + ["string"] * (nf - len(header.types))
    column_types = {n: (_PARSED.get(t, pa.string()) if typed else pa.string())
                    for n, t in zip(names, types, strict=True)}
    try:
        return pacsv.read_csv(
            pa.py_buffer(buf),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=header.separator, quote_char=False,
                                             escape_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types, null_values=[header.unset_field, header.empty_field],
                strings_can_be_null=True, true_values=["T"], false_values=["F"]),
        )
    except pa.ArrowInvalid:
        if typed:
            return None
        raise


def read_blocks(stream: IO[bytes], ctx: IngestContext) -> Iterator[Block]:
    """Typed blocks of a Zeek TSV stream; damaged lines are warnings, never rows."""
    header = Header()
    pending = b""
    line0 = off0 = 0
    while True:
        chunk = stream.read(BLOCK)
        data = pending + chunk
        if not chunk:
            if not data:
                return
            if not data.endswith(b"\n"):
                data += b"\n"
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) <= MAX_LINE:
                    pending = data
                    continue
                # One line longer than MAX_LINE: drop it without holding more of it.
                skipped = len(data)
                while (more := stream.read(1 << 16)) and b"\n" not in more:
                    skipped += len(more)
                nl = more.find(b"\n") if more else -1
                skipped += nl + 1 if nl != -1 else len(more)
                line0 += 1
                ctx.warn(line0, "line_too_long", f"line at byte {off0} ({skipped} bytes) is longer "
                         f"than {MAX_LINE}; skipped", unit="line")
                off0 += skipped
                pending = more[nl + 1:] if nl != -1 else b""
                continue
        whole, pending = data[:cut], data[cut:]
        ends = np.flatnonzero(np.frombuffer(whole, np.uint8) == 10)
        for item in _lines(whole, ends, line0, off0, header, ctx):
            if isinstance(item, str):
                header.directive(item)
            else:
                yield item
        line0 += len(ends)
        off0 += len(whole)
        if not chunk:
            return
