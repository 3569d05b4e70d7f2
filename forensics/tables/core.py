"""Case-level tables: evidence and its custody, ingest runs and warnings."""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

EVIDENCE = declare(Table(
    "evidence",
    "One registered evidence file; keyed by its SHA-256, never modified by Breachbook.",
    (
        C("evidence_id", "VARCHAR", "first 16 hex digits of the SHA-256: stable across cases"),
        C("sha256", "VARCHAR", "SHA-256 of the file at registration"),
        C("md5", "VARCHAR", "MD5 of the file at registration (for hash lists that still use it)"),
        C("path", "VARCHAR", "absolute path where it was registered from"),
        C("name", "VARCHAR", "file name"),
        C("size", "BIGINT", "size in bytes"),
        C("format", "VARCHAR", "detected format (source name)"),
        C("registered_at", "TIMESTAMPTZ", "when it was registered (UTC)"),
        C("registered_by", "VARCHAR", "user and host that registered it"),
        C("status", "VARCHAR", "registered | ingested | failed"),
        C("ingested_at", "TIMESTAMPTZ", "when the last ingest finished, NULL if never"),
    ),
    key=("evidence_id",),
))

INGEST_RUNS = declare(Table(
    "ingest_runs",
    "One ingest of one evidence file: what ran, how long, what it produced.",
    (
        C("evidence_id", "VARCHAR", "evidence ingested"),
        C("started_at", "TIMESTAMPTZ", "start (UTC)"),
        C("finished_at", "TIMESTAMPTZ", "end (UTC)"),
        C("seconds", "DOUBLE", "wall time"),
        C("tool_version", "VARCHAR", "Breachbook version"),
        C("records", "BIGINT", "records read (packets for captures)"),
        C("sessions", "BIGINT", "sessions produced"),
        C("warnings", "BIGINT", "warning rows recorded"),
        C("bytes", "BIGINT", "evidence bytes read"),
    ),
))

INGEST_WARNINGS = declare(Table(
    "ingest_warnings",
    "Something in an evidence file that was skipped, repaired or looked wrong.",
    (
        C("evidence_id", "VARCHAR", "evidence the warning is about"),
        C("path", "VARCHAR", "file path"),
        C("offset", "BIGINT", "byte offset (or line number for text logs, see unit)"),
        C("unit", "VARCHAR", "what offset counts: byte | line | record"),
        C("severity", "VARCHAR", "info | warning | error"),
        C("code", "VARCHAR", "short machine-readable kind, e.g. truncated_record"),
        C("message", "VARCHAR", "what happened, in words"),
        C("count", "BIGINT", "how many times it happened (aggregated warnings); 1 otherwise"),
    ),
))
