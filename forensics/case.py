"""The case: a directory holding a DuckDB catalog, Parquet datasets and carved files.

Layout::

    CASE_DIR/
      case.duckdb                 catalog and the DuckDB tables (evidence, sessions, ...)
      parquet/<table>/evidence_id=<id>/part-0.parquet   large per-evidence tables
      carved/ab/<sha256>          content-addressed carved files
      reports/                    rendered reports

Evidence is registered (hashed) before it is read and is only ever opened for
reading. Re-ingesting evidence that is already in the case adds nothing;
evidence whose earlier ingest was interrupted is ingested again from scratch.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from forensics import __version__
from forensics._prehash import hash_file  # the engine's file hasher (kept light for the CLI)
from forensics.errors import CaseError, EvidenceChangedError, QueryError
from forensics.tables import TABLES

if TYPE_CHECKING:
    import pandas as pd

    from forensics.ingest import IngestResult

__all__ = ["Case", "hash_file", "open_case"]

DB_NAME = "case.duckdb"
INGEST_MEMORY_LIMIT = os.environ.get("BREACHBOOK_INGEST_DUCKDB_MEMORY", "384MB")


class Case:
    """An investigation: evidence, everything derived from it, and the analysts' work.

    Open one with :func:`open_case`. Query it with :meth:`sql` (any DuckDB SQL;
    tables are listed by :meth:`tables`), or with helpers such as
    :meth:`sessions`.

    Attributes:
        path: the case directory.
        read_only: True when opened for reading only (several readers may share a case).
    """

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self._settings: dict[str, Any] = {}  # what an ingest's bulk load changed, to restore
        db = path / DB_NAME
        try:
            self.con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as exc:
            raise CaseError(f"cannot open case database {db}: {exc}") from exc
        self.con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            for sub in ("parquet", "carved", "reports"):
                (path / sub).mkdir(exist_ok=True)
            # Staged outputs of an ingest that was killed: never committed, so never
            # visible; safe to drop now that we hold the only write connection.
            shutil.rmtree(path / ".staging", ignore_errors=True)
            for t in TABLES.values():
                if t.storage == "duckdb":
                    self.con.execute(t.ddl())
        self._refresh_views()

    # ---- housekeeping ----------------------------------------------------------------

    def __enter__(self) -> Case:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Case {str(self.path)!r}{' read-only' if self.read_only else ''}>"

    def close(self) -> None:
        """Close the database connection."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    def parquet_dir(self, table: str, evidence_id: str) -> Path:
        """Folder of one evidence file's partition of a Parquet table."""
        return self.path / "parquet" / table / f"evidence_id={evidence_id}"

    def _refresh_views(self) -> None:
        """(Re)create a view per Parquet table over whatever partitions exist."""
        for t in TABLES.values():
            if t.storage != "parquet":
                continue
            files = sorted((self.path / "parquet" / t.name).glob("evidence_id=*/*.parquet"))
            if files:
                glob = str(self.path / "parquet" / t.name / "evidence_id=*" / "*.parquet")
                src = f"read_parquet('{_sql_str(glob)}', hive_partitioning = false, union_by_name = true)"
            else:
                cols = ", ".join(f"CAST(NULL AS {c.type}) AS {c.name}" for c in t.columns)
                src = f"(SELECT {cols} WHERE false)"
            extra = ", make_timestamp_ns(ts_ns)::TIMESTAMPTZ AS ts" if "ts_ns" in t.names else ""
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {t.name} AS SELECT *{extra} FROM {src}")

    # ---- evidence -------------------------------------------------------------------

    def register(self, path: str | Path, fmt: str | None = None) -> dict[str, Any]:
        """Register an evidence file: hash it and record it (idempotent).

        Args:
            path: the evidence file; it is opened read-only.
            fmt: the detected format, stored with the evidence.

        Returns:
            The evidence row as a dict (``evidence_id``, ``sha256``, ``status``, ...).
        """
        self._need_write()
        p = Path(path).resolve()
        sha, size = hash_file(p)
        return self._register_digest(p, sha, size, fmt)

    def _register_digest(self, p: Path, sha: str, size: int, fmt: str | None) -> dict[str, Any]:
        """Record evidence whose SHA-256 is already known (engine use)."""
        eid = sha[:16]
        cur = self.con.execute("SELECT * FROM evidence WHERE evidence_id = ?", [eid])
        found = cur.fetchone()
        if found is not None:
            return dict(zip([c[0] for c in cur.description], found, strict=True))
        rec = {
            "evidence_id": eid, "sha256": sha, "md5": None, "path": str(p), "name": p.name,
            "size": size, "format": fmt, "registered_at": self._now(),
            "registered_by": f"{_user()}@{socket.gethostname()}", "status": "registered",
            "ingested_at": None,
        }
        self._insert_row("evidence", rec)
        return rec

    def verify_evidence(self, raise_on_change: bool = False) -> pd.DataFrame:
        """Hash every registered evidence file again and compare with its registration.

        Args:
            raise_on_change: raise instead of reporting when a file changed or vanished.

        Returns:
            One row per evidence file: ``evidence_id``, ``path``, ``sha256``,
            ``sha256_now`` and ``status`` (``ok``, ``changed`` or ``missing``).

        Raises:
            EvidenceChangedError: with ``raise_on_change``, if any file is not ``ok``.
        """
        ev = self.sql("SELECT evidence_id, path, sha256 FROM evidence ORDER BY registered_at")
        now: list[str | None] = []
        status: list[str] = []
        for p, sha in zip(ev["path"], ev["sha256"], strict=True):
            if not Path(p).exists():
                now.append(None)
                status.append("missing")
                continue
            h = hash_file(Path(p))[0]
            now.append(h)
            status.append("ok" if h == sha else "changed")
        ev["sha256_now"] = now
        ev["status"] = status
        bad = ev[ev["status"] != "ok"]
        if raise_on_change and len(bad):
            raise EvidenceChangedError(
                "evidence no longer matches its registration: "
                + ", ".join(f"{p} ({s})" for p, s in zip(bad["path"], bad["status"], strict=True)))
        return ev

    # ---- ingest ---------------------------------------------------------------------

    def ingest(
        self, *paths: str | Path, fmt: str | None = None, strict: bool = False,
        progress: bool | Callable[[Path, int], None] = False, md5: bool = False,
        workers: int = 1, executor: str = "auto", scheduler: str | None = None,
        options: dict[str, Any] | None = None, protocols: bool = True, carve: bool = True,
    ) -> list[IngestResult]:
        """Register and ingest evidence files or folders.

        Already-ingested evidence (same SHA-256) is skipped. Capture files in one
        folder are read as one sensor's rotated captures (a connection spanning
        files is one session). Files no source recognises are reported in their
        result's ``error`` (or raise with ``strict``). An interrupted ingest
        resumes where it stopped when run again.

        Args:
            *paths: files or folders (read recursively).
            fmt: force a format instead of sniffing (e.g. ``"pcap"``).
            strict: raise on the first corrupt record instead of warning.
            progress: True for a progress bar (tqdm), or a callable
                ``(file, bytes_done)`` to report progress elsewhere.
            md5: also record each file's MD5 (SHA-256 is always recorded and keys
                the evidence; MD5 costs twice as much and is off by default).
            workers: parse in this many processes (independent folders and files
                in parallel; one sensor's stream stays in order).
            executor: ``serial``, ``process``, ``dask`` or ``auto``.
            scheduler: Dask scheduler address for ``executor="dask"`` (None: a
                local cluster).
            options: source options, recorded with the warnings they lead to:
                ``year`` (for year-less syslog times) and ``tz`` (zone of
                zone-less times, e.g. ``"Europe/Berlin"``).
            protocols: reassemble TCP streams and parse HTTP, DNS, TLS, SMB, FTP,
                SMTP, SSH, Kerberos, RDP and DCE/RPC (False: packet index and
                sessions only, about three times faster).
            carve: with ``protocols``, carve the files the sessions carried into
                the case's store (False: skip it, for a faster first look; carve
                later with :func:`forensics.carve.carve_case` or ``breachbook carve``).

        Returns:
            One :class:`~forensics.ingest.IngestResult` per file.
        """
        from forensics.parallel import ingest_parallel

        self._need_write()
        bar = None
        report: Callable[[Path, int], None] | None = progress if callable(progress) else None
        if progress is True:
            from tqdm.auto import tqdm

            from forensics.sources import iter_files

            total = sum(f.stat().st_size for f in iter_files(list(paths)) if f.exists())
            bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest", leave=False)
            seen: dict[Path, int] = {}

            def report(f: Path, done: int) -> None:
                bar.update(done - seen.get(f, 0))
                seen[f] = done

        try:
            return ingest_parallel(self, list(paths), workers=workers, executor=executor,
                                   scheduler=scheduler, fmt=fmt, md5=md5, strict=strict,
                                   progress=report, options=options, protocols=protocols, carve=carve)
        finally:
            if bar is not None:
                bar.close()
            self._refresh_views()

    def _begin_ingest(self, evidence_id: str) -> None:
        """Open the transaction for one file's rows, dropping leftovers of an earlier try."""
        # Ingest memory must stay bounded whatever the evidence size; DuckDB's own
        # default (80% of RAM) would let the bulk load of a large file grow freely.
        # Bulk loads need not keep the staged files' row order (tables have none in SQL):
        # DuckDB then loads row groups on all its threads (522k sessions: 0.6-0.7 -> 0.4 s).
        self._settings = {
            name: self.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]  # type: ignore[index]
            for name in ("memory_limit", "preserve_insertion_order")
        }
        self.con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("BEGIN TRANSACTION")
        for t in TABLES.values():
            if t.storage == "duckdb" and "evidence_id" in t.names and t.name != "evidence":
                self.con.execute(f"DELETE FROM {t.name} WHERE evidence_id = ?", [evidence_id])

    def _finish_ingest(
        self, evidence_id: str, result: IngestResult, started: datetime, md5: str | None = None,
    ) -> None:
        """Mark the evidence ingested, record the run and commit (engine use only)."""
        finished = self._now()
        self.con.execute(
            "UPDATE evidence SET status = 'ingested', ingested_at = ?, md5 = coalesce(?, md5) "
            "WHERE evidence_id = ?", [finished, md5, evidence_id])
        run = {
            "evidence_id": evidence_id, "started_at": started, "finished_at": finished,
            "seconds": result.seconds, "tool_version": __version__, "records": result.records,
            "sessions": result.sessions, "warnings": result.warnings, "bytes": result.bytes,
        }
        self._insert_row("ingest_runs", run)
        self.con.execute("COMMIT")
        self._restore_settings()

    def _restore_settings(self) -> None:
        """Undo the settings :meth:`_begin_ingest` changed for the bulk load."""
        for name, value in self._settings.items():
            if name == "memory_limit":
                value = _unrounded(value)
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"SET {name} = ?", [value])
        self._settings = {}

    def _abort_ingest(self, evidence_id: str) -> None:
        """Roll back one file's rows and mark the evidence as failed."""
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")
        self._restore_settings()
        with contextlib.suppress(duckdb.Error):
            self.con.execute("UPDATE evidence SET status = 'failed' WHERE evidence_id = ?",
                             [evidence_id])

    def _insert(self, name: str, tbl: pa.Table) -> None:
        data = TABLES[name].conform(tbl)
        # Dictionary-encoded columns are decoded for DuckDB tables.
        data = pa.Table.from_arrays(
            [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in data.columns],
            names=data.column_names)
        self.con.register("_bb_insert", data)
        try:
            self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _bb_insert").fetchall()
        finally:
            self.con.unregister("_bb_insert")

    def _insert_row(self, name: str, row: dict[str, Any]) -> None:
        """Insert one row given as a dict (DuckDB converts the Python values)."""
        undeclared = set(row) - set(TABLES[name].names)
        if undeclared:
            raise KeyError(f"{name}: undeclared columns {sorted(undeclared)}")
        cols = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" for _ in row)
        self.con.execute(f"INSERT INTO {name} ({cols}) VALUES ({marks})", list(row.values()))

    def _insert_parquet(self, name: str, path: Path, evidence_id: str | None = None) -> int:
        """Bulk-load a staged Parquet file into a DuckDB table; returns the row count.

        With ``evidence_id``, every row is stamped with it (provenance).
        """
        cols = "*"
        params: list[Any] = [str(path)]
        if evidence_id is not None and "evidence_id" in TABLES[name].names:
            cols = "* REPLACE (CAST(? AS VARCHAR) AS evidence_id)"
            params.insert(0, evidence_id)
        row = self.con.execute(
            f"INSERT INTO {name} BY NAME SELECT {cols} FROM read_parquet(?)", params).fetchone()
        return int(row[0]) if row else 0

    def staging_dir(self) -> Path:
        """A fresh folder for one file's staged outputs (inside the case, never visible)."""
        import uuid

        p = self.path / ".staging" / uuid.uuid4().hex
        p.mkdir(parents=True)
        return p

    def ingested_files(self) -> dict[str, str]:
        """Paths of ingested evidence mapped to their evidence ids."""
        rows = self.con.execute(
            "SELECT path, evidence_id FROM evidence WHERE status = 'ingested'").fetchall()
        return {r[0]: r[1] for r in rows}

    def ingested_sha256(self) -> frozenset[str]:
        """SHA-256s of evidence already ingested (so a parse can stop early)."""
        rows = self.con.execute("SELECT sha256 FROM evidence WHERE status = 'ingested'").fetchall()
        return frozenset(r[0] for r in rows)

    def _need_write(self) -> None:
        if self.read_only:
            raise CaseError(f"{self.path} is open read-only; open it with read_only=False to change it")

    # ---- queries --------------------------------------------------------------------

    def sql(self, query: str, params: Iterable[Any] | None = None) -> pd.DataFrame:
        """Run any DuckDB SQL against the case and return a DataFrame.

        Args:
            query: the SQL; ``?`` placeholders take ``params``.
            params: values for the placeholders.

        Raises:
            QueryError: DuckDB rejected the query; the message says why.
        """
        try:
            with warnings.catch_warnings():
                # DuckDB's own pandas conversion trips a pandas deprecation the user cannot act on.
                warnings.filterwarnings("ignore", message="The inplace keyword")
                return self.con.execute(query, list(params) if params else None).fetchdf()
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc

    def tables(self) -> pd.DataFrame:
        """Every table and view of the case with its row count and meaning."""
        rows = []
        for t in TABLES.values():
            n = int(self.con.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0])  # type: ignore[index]
            rows.append({"table": t.name, "rows": n, "storage": t.storage, "doc": t.doc})
        import pandas as pd

        return pd.DataFrame(rows)

    def evidence(self) -> pd.DataFrame:
        """The registered evidence with hashes, formats and ingest status."""
        return self.sql("SELECT * FROM evidence ORDER BY registered_at, evidence_id")

    def warnings(self, evidence_id: str | None = None) -> pd.DataFrame:
        """Warnings recorded while ingesting (optionally for one evidence file)."""
        if evidence_id:
            return self.sql("SELECT * FROM ingest_warnings WHERE evidence_id = ? ORDER BY \"offset\"",
                            [evidence_id])
        return self.sql("SELECT * FROM ingest_warnings ORDER BY evidence_id, \"offset\"")

    def session(self, uid: str) -> Any:
        """One session reassembled: its row, both directions' bytes and the turns in order.

        Returns a :class:`forensics.reassembly.conversation.Conversation`; read a
        turn's or a whole direction's bytes with ``.read(turn)`` / ``.read("orig")``.
        """
        from forensics.reassembly.conversation import conversation

        return conversation(self, uid)

    def export_pcap(self, uids: str | Iterable[str], path: str | Path) -> dict[str, object]:
        """Write the frames of chosen sessions to a pcap (read back by tshark as the same packets)."""
        from forensics.reassembly.export import export_pcap

        return export_pcap(self, uids, path)

    # ---- lateral movement, scope and risk ----------------------------------------------

    def hosts(self, *, rebuild: bool = False) -> pd.DataFrame:
        """Host identity: every name and address each host was seen under, and when.

        Tied together from log hosts, logons (workstation name + address), Sysmon
        connections, DNS answers, NTLM/SMB/RDP names and the asset inventory (see
        :mod:`forensics.hostmap`); built with the lateral-movement edges.
        """
        empty = self.con.execute("SELECT count(*) FROM host_names").fetchone()[0] == 0  # type: ignore[index]
        if rebuild or empty:
            self._need_write()
            from forensics.lateral import build_lateral

            build_lateral(self)
        return self.sql("SELECT * FROM host_names ORDER BY host_id, first_seen")

    def lateral_graph(self, *, rebuild: bool = False, internal: Iterable[str] | None = None,
                      clock_offsets: Mapping[str, float] | None = None) -> Any:
        """The lateral-movement graph (networkx MultiDiGraph) of hosts and accounts.

        Built from logons and admin-protocol sessions on first use and kept in the
        ``lateral_edges`` table; see :func:`forensics.lateral.lateral_graph`.
        """
        from forensics.lateral import lateral_graph

        return lateral_graph(self, rebuild=rebuild, internal=internal, clock_offsets=clock_offsets)

    def scope(self, start: str | Iterable[str], since: str | datetime | None = None, *,
              clock_offsets: Mapping[str, float] | None = None, tolerance: float = 2.0,
              slack: float = 1.0, internal: Iterable[str] | None = None, rebuild: bool = False,
              contact: bool = True, persist: bool = True) -> Any:
        """Every host and account reachable from patient zero through time-respecting movement.

        See :func:`forensics.scope.scope`; raises a clear error listing near matches
        when the start host is not in the case.
        """
        from forensics.scope import scope

        return scope(self, start, since, clock_offsets=clock_offsets, tolerance=tolerance,
                     slack=slack, internal=internal, rebuild=rebuild, contact=contact, persist=persist)

    def risk_register(self, scope_result: Any = None, *, run_id: str | None = None,
                      inventory: str | Path | None = None, persist: bool = True) -> pd.DataFrame:
        """The risk register: probability from the evidence, damage from the inventory.

        See :func:`forensics.risk.risk_register` for the matrices (levels 1-5, L/M/H,
        acceptability, treatment).
        """
        from forensics.risk import risk_register

        return risk_register(self, scope_result, run_id=run_id, inventory=inventory, persist=persist)

    # ---- the analysts' work ------------------------------------------------------------

    def tag(self, table: str, keys: Any, label: str, *, author: str | None = None,
            comment: str | None = None) -> int:
        """Tag rows of a table, e.g. ``case.tag("sessions", uids, "c2")`` (see forensics.findings.tag)."""
        from forensics import findings

        return findings.tag(self, table, keys, label, author=author, comment=comment)

    def note(self, text: str, *, table: str | None = None, keys: Any = None,
             finding_id: str | None = None, author: str | None = None) -> str:
        """Write a note on the case, on rows, or on a finding (see forensics.findings.note)."""
        from forensics import findings

        return findings.note(self, text, table=table, keys=keys, finding_id=finding_id, author=author)

    def finding(self, title: str, severity: str, rows: Any = None, status: str = "open", *,
                description: str = "", author: str | None = None) -> str:
        """Open a finding with the rows behind it (see forensics.findings.finding)."""
        from forensics import findings

        return findings.finding(self, title, severity, rows=rows, status=status,
                                description=description, author=author)

    def sessions(
        self, *, host: str | None = None, port: int | None = None, proto: str | None = None,
        service: str | None = None, since: str | datetime | None = None,
        until: str | datetime | None = None, uid: str | None = None, limit: int | None = None,
        tag: str | None = None,
    ) -> pd.DataFrame:
        """Sessions (Zeek conn.log columns), filtered, in time order.

        Args:
            host: address on either side.
            port: port on either side.
            proto: ``tcp``, ``udp`` or ``icmp``.
            service: detected application protocol.
            since: first packet at or after this time (ISO string or datetime, UTC).
            until: first packet before this time.
            uid: one session.
            limit: at most this many rows.
            tag: only sessions tagged with this label.
        """
        where: list[str] = []
        params: list[Any] = []
        if host:
            where.append("(orig_h = ? OR resp_h = ?)")
            params += [host, host]
        if port is not None:
            where.append("(orig_p = ? OR resp_p = ?)")
            params += [port, port]
        for col, val in (("proto", proto), ("service", service), ("uid", uid)):
            if val:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append("ts >= CAST(? AS TIMESTAMPTZ)")
            params.append(since)
        if until is not None:
            where.append("ts < CAST(? AS TIMESTAMPTZ)")
            params.append(until)
        if tag:
            from forensics.findings import tag_filter

            cond, p = tag_filter("sessions", tag)
            where.append(cond)
            params += p
        q = "SELECT * FROM sessions" + (" WHERE " + " AND ".join(where) if where else "")
        q += " ORDER BY ts, uid" + (f" LIMIT {int(limit)}" if limit else "")
        return self.sql(q, params)


def _unrounded(size: str) -> str:
    """A DuckDB size as read back (``'18.8 GiB'``, cut to one decimal) to set it again.

    Setting the text read would lower the limit by up to 0.1 unit each time (measured:
    18.8, 18.7, 18.6 GiB after three ingests); half a step up reads back as before.
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)", size.strip())
    return f"{float(m[1]) + 0.05:.2f} {m[2]}" if m else size


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def open_case(path: str | Path, *, create: bool = True, read_only: bool = False) -> Case:
    """Open (or create) a case directory.

    Args:
        path: the case directory.
        create: create it when it does not exist.
        read_only: open for reading only; several readers may share a case while
            nothing writes to it.

    Returns:
        The :class:`Case`.

    Raises:
        CaseError: the directory does not exist (and ``create`` is False), or is
            not a case, or its database is locked by a writer.
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        if not create or read_only:
            raise CaseError(f"no case at {p}")
        p.mkdir(parents=True)
    elif not p.is_dir():
        raise CaseError(f"{p} is a file, not a case directory")
    elif read_only and not (p / DB_NAME).exists():
        raise CaseError(f"{p} is not a case (no {DB_NAME})")
    return Case(p, read_only=read_only)
