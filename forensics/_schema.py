"""Table declarations: each table is declared once, here or beside its producer.

A :class:`Table` lists its columns with a DuckDB type and a one-line meaning.
DuckDB DDL, the Arrow schema used for batches and Parquet, and the schema tests
all derive from that one declaration (DESIGN §3), so there is no second
hand-written column list anywhere.

Tables stored in DuckDB are created by :func:`ddl`; tables stored as Parquet
(large per-evidence tables such as the packet index) are exposed as DuckDB views
over ``parquet/<table>/evidence_id=<id>/*.parquet`` by the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

__all__ = ["TABLES", "Column", "Table", "declare"]

_ARROW = {
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
    "DOUBLE": pa.float64(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BLOB": pa.binary(),
    "JSON": pa.string(),
    "VARCHAR[]": pa.list_(pa.string()),
}


@dataclass(frozen=True)
class Column:
    """One column: name, DuckDB type and what it means."""

    name: str
    type: str
    doc: str
    dictionary: bool = False  # stored dictionary-encoded in Arrow/Parquet (few distinct values)

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type batches use for this column."""
        t = _ARROW[self.type]
        return pa.dictionary(pa.int32(), t) if self.dictionary else t


@dataclass(frozen=True)
class Table:
    """A table of the case, declared once.

    Attributes:
        name: snake_case table name.
        doc: what one row is.
        columns: the columns in order.
        storage: ``"duckdb"`` for a table in ``case.duckdb``; ``"parquet"`` for a
            per-evidence Parquet dataset exposed as a view.
        key: columns that identify a row (used for de-duplication and references).
    """

    name: str
    doc: str
    columns: tuple[Column, ...]
    storage: Literal["duckdb", "parquet"] = "duckdb"
    key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of this table's batches."""
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    def ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for DuckDB."""
        cols = ",\n  ".join(f"\"{c.name}\" {c.type}" for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n)"

    def empty(self) -> pa.Table:
        """An empty Arrow table with this schema."""
        return pa.Table.from_batches([], schema=self.arrow_schema())  # empty_table() imports pandas

    def conform(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """Cast a batch to this table's schema (columns in order, missing ones NULL).

        Raises:
            KeyError: the batch has a column the table does not declare.
        """
        tbl = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        extra = set(tbl.column_names) - set(self.names)
        if extra:
            raise KeyError(f"{self.name}: undeclared columns {sorted(extra)}")
        arrays = []
        for c in self.columns:
            if c.name in tbl.column_names:
                arrays.append(tbl.column(c.name).cast(c.arrow_type))
            else:
                arrays.append(pa.nulls(tbl.num_rows, c.arrow_type))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema())


TABLES: dict[str, Table] = {}


def declare(table: Table) -> Table:
    """Register a table declaration; a name may be declared only once."""
    if table.name in TABLES:
        raise ValueError(f"table {table.name!r} declared twice")
    TABLES[table.name] = table
    return table
