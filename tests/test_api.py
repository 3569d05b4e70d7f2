"""The public surface: __all__, docstrings everywhere (``?`` in Jupyter), schema snapshot."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from pathlib import Path

import forensics
from forensics.tables import TABLES

SNAPSHOT = Path(__file__).parent / "snapshots" / "ddl.sql"


def _modules():
    for m in pkgutil.walk_packages(forensics.__path__, "forensics."):
        if m.name.endswith(".__main__"):
            continue  # running it is its job; importing it would run it
        if m.name.startswith("forensics.scenario") and not _importable(m.name):
            continue
        yield importlib.import_module(m.name)


def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_all_is_exactly_the_public_names():
    public = {n for n in dir(forensics) if not n.startswith("_")} - {"annotations"}  # lazy names too
    modules = {n for n in public if inspect.ismodule(getattr(forensics, n))}
    assert set(forensics.__all__) == (public - modules) | {"__version__"}


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for mod in _modules():
        if any(part.startswith("_") for part in mod.__name__.split(".")[1:]):
            continue
        assert mod.__doc__, f"module {mod.__name__} has no docstring"
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                if not inspect.getdoc(obj):
                    missing.append(f"{mod.__name__}.{name}")
                if inspect.isclass(obj):
                    for mname, meth in vars(obj).items():
                        if not mname.startswith("_") and inspect.isfunction(meth) and not meth.__doc__:
                            missing.append(f"{mod.__name__}.{name}.{mname}")
    assert not missing, missing


def test_schema_snapshot():
    """DDL is generated from the one declaration; a change must show up as a diff here.

    Set BREACHBOOK_UPDATE_SNAPSHOTS=1 to rewrite the snapshot after a deliberate change.
    """
    ddl = "\n\n".join(
        t.ddl() if t.storage == "duckdb" else f"-- parquet: {t.name}\n" + t.ddl()
        for t in sorted(TABLES.values(), key=lambda t: t.name))
    if os.environ.get("BREACHBOOK_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(ddl + "\n")
    assert SNAPSHOT.read_text() == ddl + "\n"


def test_tables_are_created_from_their_declaration(case):
    for t in TABLES.values():
        cols = case.sql(f"SELECT * FROM {t.name} LIMIT 0").columns.tolist()
        extra = ["ts"] if t.storage == "parquet" and "ts_ns" in t.names else []
        assert cols == t.names + extra, t.name
