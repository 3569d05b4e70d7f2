"""What the ``breachbook`` subcommands share: friendly errors and printing a table."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from forensics.errors import BreachbookError

__all__ = ["friendly", "print_frame"]


def friendly(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad arguments (``ValueError``) become one-line messages (exit 1), not tracebacks."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ValueError as exc:
            if isinstance(exc, BreachbookError):
                raise
            raise BreachbookError(str(exc)) from exc

    return run


def print_frame(df: Any, fmt: str, columns: list[str] | None = None, *, max_rows: int = 500,
                width: int = 200, max_colwidth: int | None = None, empty: str = "(none)") -> None:
    """Print a DataFrame as ``csv``, ``json`` (records) or an aligned ``table``.

    Args:
        df: the rows.
        fmt: ``csv``, ``json`` or ``table``.
        columns: for ``table``, the columns to show (those present), in this order.
        max_rows: for ``table``, rows shown before pandas elides the middle.
        width: for ``table``, the line width.
        max_colwidth: for ``table``, characters shown per cell (None: pandas' default).
        empty: for ``table``, what to print when there are no rows.
    """
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        print(df.to_json(orient="records", date_format="iso", default_handler=str))
    else:
        import pandas as pd

        view = df[[c for c in columns if c in df.columns]] if columns else df
        opts: list[Any] = ["display.max_rows", max_rows, "display.max_columns", None, "display.width", width]
        if max_colwidth is not None:
            opts += ["display.max_colwidth", max_colwidth]
        with pd.option_context(*opts):
            print(view.to_string(index=False) if len(view) else empty)
