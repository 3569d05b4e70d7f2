"""Arrow arrays built straight from numpy buffers.

``pa.array`` imports pandas the first time it runs (to recognise pandas
objects), which cost a command-line ingest 0.12 s before its first packet,
and converts masks element by element. The packet pass and the commit build
their columns with these helpers instead: zero-copy where the dtype already
fits, validity bitmaps packed by numpy, and no pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["arrays_without_pandas", "column", "dictionary", "string_lists", "strings", "table_from_rows",
           "values"]

_INT32_MAX = (1 << 31) - 1


class _NoPandas:
    """An import finder that refuses pandas (while :func:`arrays_without_pandas` asks pyarrow)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not imported to build Arrow arrays")


def arrays_without_pandas() -> bool:
    """Let pyarrow build arrays from Python and numpy values without importing pandas.

    ``pa.array()``, ``to_numpy()`` and ``fill_null()`` import pandas the first
    time they run, only to recognise pandas objects among their inputs: 0.1 to
    0.16 s of a command-line ingest, whose second pass builds its tables with
    them. pyarrow tries that import once and remembers the answer; this makes
    the one try fail, so those calls never import pandas in this process. Its
    pandas conversions (``to_pandas()``, ``from_pandas()``) still import pandas
    when they are called, and after that pandas objects are recognised again;
    anybody may import pandas as usual.

    For processes that hand pyarrow no pandas objects before that (the
    ``breachbook ingest`` command). Does nothing, and returns False, when pandas
    is already imported.
    """
    import sys

    if "pandas" in sys.modules:
        return False
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow's one try
    finally:
        sys.meta_path.remove(finder)
    return "pandas" not in sys.modules


def _numpy_dtype(typ: pa.DataType) -> np.dtype:
    if pa.types.is_timestamp(typ) or pa.types.is_duration(typ) or pa.types.is_date64(typ):
        return np.dtype(np.int64)
    if pa.types.is_date32(typ):
        return np.dtype(np.int32)
    return np.dtype(typ.to_pandas_dtype())


def _validity(null: np.ndarray | None, n: int) -> tuple[pa.Buffer | None, int]:
    if null is None:
        return None, 0
    null = np.asarray(null, bool)
    if null.shape != (n,):
        raise ValueError(f"null mask has shape {null.shape}, expected ({n},)")
    count = int(np.count_nonzero(null))
    if count == 0:
        return None, 0
    return pa.py_buffer(np.packbits(~null, bitorder="little")), count


def column(values: np.ndarray, type: pa.DataType | None = None, *,
           null: np.ndarray | None = None, validity: np.ndarray | None = None) -> pa.Array:
    """An Arrow array over a 1-d numeric or boolean numpy array.

    Args:
        values: the values; cast to the width of ``type`` (no copy when it fits).
        type: the Arrow type (default: the one matching the dtype). Timestamps
            and durations take int64 counts of their unit.
        null: True where the value is missing (its value is then ignored).
        validity: instead of ``null``, an Arrow validity bitmap already packed
            (uint8, least significant bit first, 1 = present), used as is.

    Returns:
        The array, sharing the numpy buffer where no cast was needed.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-d array, got shape {values.shape}")
    if type is None:
        type = pa.from_numpy_dtype(values.dtype)
    n = values.shape[0]
    if validity is not None:
        if validity.dtype != np.uint8 or validity.shape[0] < (n + 7) // 8:
            raise ValueError("validity must be a packed uint8 bitmap covering every value")
        bitmap, nulls = pa.py_buffer(np.ascontiguousarray(validity)), -1  # counted when needed
    else:
        bitmap, nulls = _validity(null, n)
    if pa.types.is_boolean(type):
        data = np.packbits(values.astype(bool, copy=False), bitorder="little")
    else:
        data = np.ascontiguousarray(values.astype(_numpy_dtype(type), copy=False))
    return pa.Array.from_buffers(type, n, [bitmap, pa.py_buffer(data)], null_count=nulls)


def values(array: pa.Array | pa.ChunkedArray, fill: int | float | bool = 0) -> np.ndarray:
    """The values of a numeric, boolean or time array as numpy, NULLs as ``fill``.

    What ``array.fill_null(fill).to_numpy()`` gives, read straight from the
    Arrow buffers (no copy when there is no NULL and one chunk), without pandas.
    Times and durations come as int64 counts of their unit.
    """
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return values(array.chunk(0), fill)
        dtype = bool if pa.types.is_boolean(array.type) else _numpy_dtype(array.type)
        parts = [values(c, fill) for c in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)
    n, at = len(array), array.offset
    bufs = array.buffers()
    if len(bufs) != 2:
        raise TypeError(f"not a fixed-width array: {array.type}")
    if bufs[1] is None:
        return np.zeros(n, bool if pa.types.is_boolean(array.type) else _numpy_dtype(array.type))
    if pa.types.is_boolean(array.type):
        out = np.unpackbits(np.frombuffer(bufs[1], np.uint8), count=at + n, bitorder="little")[at:]
        out = out.view(bool)
    else:
        dtype = _numpy_dtype(array.type)
        out = np.frombuffer(bufs[1], dtype, count=at + n)[at:]
    if array.null_count and bufs[0] is not None:
        valid = np.unpackbits(np.frombuffer(bufs[0], np.uint8), count=at + n, bitorder="little")[at:]
        out = np.where(valid.view(bool), out, np.asarray(fill, out.dtype))
    return out


def strings(values: Sequence[str | None] | np.ndarray) -> pa.StringArray:
    """A string array from Python strings (None for missing ones).

    A lone surrogate, which has no UTF-8 form, is written as ``?``.

    A numpy array of fixed-width bytes (dtype ``S``) is taken as is, without a
    Python object per value.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind == "S":
        width = values.dtype.itemsize
        n = values.shape[0]
        if n * width > _INT32_MAX:
            raise ValueError("string column larger than 2 GiB")
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        data = np.ascontiguousarray(values).view(np.uint8)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    n = len(values)
    # A lone surrogate (from bytes decoded with surrogateescape) has no UTF-8 form: "?".
    encoded = [b"" if v is None else v.encode("utf-8", "replace") for v in values]
    lengths = np.fromiter(map(len, encoded), np.int64, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _INT32_MAX:
        raise ValueError("string column larger than 2 GiB")
    missing = np.fromiter((v is None for v in values), bool, n)
    validity, nulls = _validity(missing, n)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(b"".join(encoded)), validity, nulls)


def dictionary(codes: np.ndarray, names: Sequence[str | None] | pa.Array, *,
               null: np.ndarray | None = None,
               validity: np.ndarray | None = None) -> pa.DictionaryArray:
    """A dictionary-encoded string column: int32 ``codes`` into ``names``.

    ``null`` and ``validity`` mark missing values as in :func:`column`.
    """
    values = names if isinstance(names, pa.Array) else strings(names)
    return pa.DictionaryArray.from_arrays(column(codes, pa.int32(), null=null, validity=validity),
                                          values)


def _array(values: list[Any], typ: pa.DataType) -> pa.Array:
    missing = np.fromiter((v is None for v in values), bool, len(values))
    if pa.types.is_string(typ):
        return strings([None if v is None else str(v) for v in values])
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        dtype = bool if pa.types.is_boolean(typ) else _numpy_dtype(typ)
        raw = np.array([0 if v is None else v for v in values], dtype)
        return column(raw, typ, null=missing)
    raise TypeError(f"no row conversion for Arrow type {typ}")


def table_from_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table from a few dict rows (keys missing from a row are NULL).

    For the small tables an ingest writes (its warnings); the types are those
    of ``schema``: strings, integers, floats and booleans.
    """
    arrays = [_array([r.get(f.name) for r in rows], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def string_lists(values: Sequence[Sequence[str] | None]) -> pa.ListArray:
    """A ``list<string>`` array from Python lists of strings (None for missing lists)."""
    n = len(values)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int64, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = strings([s for v in values if v for s in v])
    missing = np.fromiter((v is None for v in values), bool, n)
    mask = column(missing, pa.bool_()) if missing.any() else None
    return pa.ListArray.from_arrays(column(offsets, pa.int32()), flat, mask=mask)
