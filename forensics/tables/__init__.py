"""Every table of a case, declared once (DESIGN §3), one module per domain.

Importing this package imports each module in it, so a new domain adds its
module here and nothing else: no hand-kept list. ``TABLES`` maps table names to
their :class:`~forensics._schema.Table` declarations.
"""

from __future__ import annotations

import importlib
import pkgutil

from forensics._schema import TABLES, Column, Table, declare

__all__ = ["TABLES", "Column", "Table", "declare"]

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
