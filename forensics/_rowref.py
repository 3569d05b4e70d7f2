"""References to rows of a case, and the small machinery the workflow tables share.

A row is referred to by its table and a *row key*: a canonical JSON object of
the row's key columns with their values as text. Canonical (sorted keys, no
spaces, text values) so that the same row always gives the same string, which
is what lets the workflow tables compare keys with ``=`` and what keeps
references valid across a re-ingest or a rebuilt case (keys are deterministic,
DESIGN §2). Values are text so that a frame number typed on the command line
and one read from the packet index compare equal.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from forensics.errors import CaseError, QueryError
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Lineage columns of the log and application tables (forensics.tables.logs.LINEAGE):
# a record is identified by where it starts in which evidence (and zip member).
_LINEAGE_KEY = ("evidence_id", "record_offset", "member")

_clock_lock = threading.Lock()
_last_time = datetime.min.replace(tzinfo=UTC)


def now() -> datetime:
    """The current UTC time, strictly increasing within this process.

    Workflow rows are ordered by time ("the latest action wins"); two actions
    in the same microsecond would otherwise tie.
    """
    global _last_time
    with _clock_lock:
        t = datetime.now(UTC)
        if t <= _last_time:
            t = _last_time + timedelta(microseconds=1)
        _last_time = t
        return t


def new_id(prefix: str = "") -> str:
    """A random id (hex), with an optional prefix."""
    h = uuid.uuid4().hex
    return f"{prefix}{h[:10]}" if prefix else h


def default_author() -> str:
    """Who is recording: ``$BREACHBOOK_AUTHOR`` if set, else ``user@host``."""
    env = os.environ.get("BREACHBOOK_AUTHOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def check_ident(name: str) -> str:
    """``name`` if it is a plain SQL identifier (table and column names are put into SQL)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a table or column name: {name!r}")
    return name


def key_columns(table: str, key: Iterable[str] | None = None) -> tuple[str, ...]:
    """The columns that identify a row of ``table``.

    The table's declared key if it has one; else, for the log and application
    tables, their lineage (``evidence_id``, ``record_offset``, ``member``); else
    (a table or view Breachbook does not declare) ``key`` must name them.
    """
    t = TABLES.get(table)
    if t is not None and t.key:
        return t.key
    if t is not None and all(c in t.names for c in _LINEAGE_KEY):
        return _LINEAGE_KEY
    if key:
        return tuple(sorted(check_ident(c) for c in key))
    raise ValueError(f"table {table!r} declares no key: give keys as dicts of column values")


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    with contextlib.suppress(TypeError, ValueError):
        import pandas as pd

        if pd.isna(v):
            return None
    if hasattr(v, "item"):  # numpy scalar
        v = v.item()
    return str(v)


def split_keys(keys: Any) -> list[Any]:
    """One key or many, as a list of single keys (a DataFrame gives one dict per row)."""
    if hasattr(keys, "columns") and hasattr(keys, "to_dict"):  # a DataFrame of selected rows
        return list(keys.to_dict("records"))
    if isinstance(keys, (str, bytes, int, tuple, Mapping)) or not isinstance(keys, Iterable):
        return [keys]
    return list(keys)


def row_keys(table: str, keys: Any) -> tuple[tuple[str, ...], list[str]]:
    """Canonical row keys of one or many rows of ``table``.

    Args:
        table: table name.
        keys: one key or an iterable of keys. A key is a scalar (tables keyed by
            one column, e.g. a session uid), a tuple in key-column order, or a
            dict of column values; a DataFrame gives one key per row.

    Returns:
        The key columns and one canonical JSON string per key (duplicates dropped,
        order kept).

    Raises:
        ValueError: a key does not fit the table's key columns.
    """
    check_ident(table)
    items = split_keys(keys)
    dict_cols = next((tuple(k) for k in items if isinstance(k, Mapping)), None)
    cols = key_columns(table, dict_cols)
    out: dict[str, None] = {}
    for k in items:
        if isinstance(k, Mapping):
            missing = [c for c in cols if c not in k]
            if missing:
                raise ValueError(f"{table}: key {k!r} lacks {missing} (key columns: {list(cols)})")
            vals = {c: _text(k[c]) for c in cols}
        elif isinstance(k, tuple):
            if len(k) != len(cols):
                raise ValueError(f"{table}: key {k!r} does not match key columns {list(cols)}")
            vals = {c: _text(v) for c, v in zip(cols, k, strict=True)}
        else:
            if len(cols) != 1:
                raise ValueError(f"{table} is keyed by {list(cols)}: give a tuple or dict, not {k!r}")
            vals = {cols[0]: _text(k)}
        out[json.dumps(vals, sort_keys=True, separators=(",", ":"))] = None
    return cols, list(out)


def key_match_sql(cols: Iterable[str], row: str, key: str = "row_key") -> str:
    """SQL comparing the columns of ``row`` (a table alias) with a row-key column."""
    return " AND ".join(
        f"CAST({row}.{check_ident(c)} AS VARCHAR) IS NOT DISTINCT FROM json_extract_string({key}, '$.{c}')"
        for c in cols)


def table_columns(case: Case, table: str) -> list[str]:
    """Columns of a table or view of the case.

    Raises:
        CaseError: the case has no such table.
    """
    try:
        return case.sql(f"SELECT * FROM {check_ident(table)} LIMIT 0").columns.tolist()
    except QueryError as exc:
        raise CaseError(f"the case has no table {table!r}") from exc


def has_table(case: Case, table: str) -> bool:
    """Whether a table or view of that name exists in the case (tables declared later may not)."""
    n = case.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [table])
    return bool(int(n["n"].iloc[0]))


def missing_rows(case: Case, table: str, cols: tuple[str, ...], keys: list[str]) -> list[str]:
    """The row keys among ``keys`` that match no row of ``table``."""
    have = table_columns(case, table)
    absent = [c for c in cols if c not in have]
    if absent:
        raise CaseError(f"table {table!r} has no column(s) {absent}")
    if not keys:
        return []
    case.con.register("_bb_keys", pa.table({"row_key": pa.array(keys, pa.string())}))
    try:
        df = case.sql(f"SELECT k.row_key FROM _bb_keys k WHERE NOT EXISTS "
                      f"(SELECT 1 FROM {table} t WHERE {key_match_sql(cols, 't', 'k.row_key')})")
    finally:
        case.con.unregister("_bb_keys")
    return df["row_key"].tolist()


def _in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` is inside an explicit transaction.

    DuckDB has no flag for it, and a failed ``BEGIN`` aborts the transaction
    it ran into, so it cannot be probed by trying. In auto-commit mode every
    statement runs in a new transaction, so two statements see two ids.
    """
    first = con.execute("SELECT txid_current()").fetchall()[0][0]
    return bool(con.execute("SELECT txid_current()").fetchall()[0][0] == first)


@contextlib.contextmanager
def transaction(case: Case) -> Iterator[None]:
    """All-or-nothing writes, so that readers never see half a change.

    Inside a transaction the caller already opened, the writes join it.
    """
    case._need_write()
    if _in_transaction(case.con):
        yield
        return
    case.con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            case.con.execute("ROLLBACK")
        raise
    case.con.execute("COMMIT")


def insert(case: Case, table: str, rows: list[dict[str, Any]]) -> None:
    """Append rows (dicts) to a declared table."""
    if rows:
        case._insert(table, pa.Table.from_pylist(rows, schema=TABLES[table].arrow_schema()))


def latest_sql(table: str, partition: str, order: str = "recorded_at DESC") -> str:
    """Rows of ``table`` that are the latest of their ``partition`` (append-only tables)."""
    return (f"(SELECT * FROM {table} QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {order}, {TABLES[table].key[0]} DESC) = 1)")


# Current state of the append-only tables, as subqueries.
CURRENT_TAGS = f"(SELECT * FROM {latest_sql('tags', 'table_name, row_key, label')} WHERE action = 'add')"
CURRENT_ROWS = (f"(SELECT * FROM {latest_sql('finding_rows', 'finding_id, table_name, row_key')} "
                "WHERE action = 'add')")
CURRENT_NOTES = ("(SELECT * FROM notes n WHERE NOT EXISTS "
                 "(SELECT 1 FROM notes s WHERE s.supersedes = n.note_id))")


def finding_id_of(case: Case, finding_id: str) -> str:
    """The full id of a finding given its id or a unique prefix.

    Raises:
        CaseError: no finding, or more than one, starts with it.
    """
    df = case.sql("SELECT finding_id FROM findings WHERE starts_with(finding_id, ?) ORDER BY 1",
                  [finding_id])
    ids = df["finding_id"].tolist()
    if finding_id in ids:
        return finding_id
    if len(ids) == 1:
        return str(ids[0])
    if not ids:
        raise CaseError(f"no finding {finding_id!r}")
    raise CaseError(f"{finding_id!r} is ambiguous: {', '.join(ids[:5])}")
