"""Carve-and-scan tables: the file store, YARA hits, PE triage and threat-intel matches.

A carved file gets a row in the shared ``files`` table (Zeek files.log columns,
``source = 'carve'``) like any other file seen on the wire, and a row in
``carved_files`` for what files.log has no column for: entropy, the exact
claimed name as bytes, the missing ranges and where the bytes sit in the store.
The two join on ``fuid``. Content properties are per SHA-256 and repeat on each
transfer of the same content; that keeps every question a one-table query.

YARA hits, PE triage and IOC hits refer to content by ``sha256`` and to other
rows of the case by ``table_name`` + ``row_key`` (the canonical key JSON the
workflow tables use), so a finding can cite any of them.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

CARVED_FILES = declare(Table(
    "carved_files",
    "One carved file (one transfer): what files.log has no column for; joins files on fuid.",
    (
        C("fuid", "VARCHAR", "file id: deterministic from the transfer and the content (joins files.fuid)"),
        C("sha256", "VARCHAR", "SHA-256 of the stored bytes (the store path is derived from it)"),
        C("path", "VARCHAR", "store path relative to the case directory: carved/ab/<sha256>"),
        C("size", "BIGINT", "bytes stored"),
        C("mime_type", "VARCHAR", "MIME type from the content's magic number"),
        C("filetype", "VARCHAR", "short type name (EXE, ELF, PDF, ZIP, ...) as YARA rule sets expect"),
        C("entropy", "DOUBLE", "Shannon entropy of the content, bits per byte (0 to 8)"),
        C("claimed_name", "VARCHAR", "file name the protocol gave, as text (control bytes escaped)"),
        C("claimed_name_raw", "BLOB", "the same name exactly as it came over the wire"),
        C("protocol", "VARCHAR", "protocol it was carved from: http, smb, ftp, smtp, tftp, ..."),
        C("uid", "VARCHAR", "session uid"),
        C("direction", "VARCHAR", "download | upload | lateral | unknown, as the carver saw it"),
        C("ts", "TIMESTAMPTZ", "time of the first byte (UTC)"),
        C("expected_size", "BIGINT", "size the protocol announced; NULL when it announced none"),
        C("missing_bytes", "BIGINT", "bytes never seen (sum of missing_ranges, or expected minus seen)"),
        C("missing_ranges", "JSON", "never-seen byte ranges as [[start, end), ...] file offsets"),
        C("complete", "BOOLEAN", "every expected byte was seen and nothing was cut; NULL when unknowable"),
        C("truncated", "BOOLEAN", "the store's size cap cut the file short"),
        C("source_table", "VARCHAR", "table of the row the carver worked from (http_bodies, smb_files, ...)"),
        C("source_key", "JSON", "that row's key (canonical JSON), for lineage"),
        C("stored_at", "TIMESTAMPTZ", "when it was stored (UTC)"),
        C("evidence_id", "VARCHAR", "evidence the bytes came from"),
    ),
    key=("fuid",),
))

PE_INFO = declare(Table(
    "pe_info",
    "Triage of one PE (Windows executable) in the file store.",
    (
        C("sha256", "VARCHAR", "SHA-256 of the file"),
        C("status", "VARCHAR", "ok | not_pe | error | timeout | too_large"),
        C("error", "VARCHAR", "why triage stopped, NULL when it did not"),
        C("machine", "VARCHAR", "target machine (I386, AMD64, ARM64, ...)"),
        C("is_64bit", "BOOLEAN", "PE32+"),
        C("is_dll", "BOOLEAN", "a DLL"),
        C("is_driver", "BOOLEAN", "a native (kernel) image"),
        C("subsystem", "VARCHAR", "GUI, CONSOLE, NATIVE, ..."),
        C("compile_time", "TIMESTAMPTZ", "COFF TimeDateStamp as a time; NULL when 0 (or a build hash)"),
        C("compile_time_raw", "BIGINT", "COFF TimeDateStamp as stored"),
        C("imphash", "VARCHAR", "import hash (pefile's imphash)"),
        C("entry_point", "BIGINT", "AddressOfEntryPoint (RVA)"),
        C("entry_section", "VARCHAR", "section the entry point lies in"),
        C("n_sections", "INTEGER", "number of sections in the header"),
        C("sections", "JSON", "[{name, virtual_address, virtual_size, raw_size, entropy, characteristics}]"),
        C("dlls", "VARCHAR[]", "imported DLLs"),
        C("n_imports", "INTEGER", "imported functions"),
        C("n_exports", "INTEGER", "exported functions"),
        C("signed", "BOOLEAN", "carries an Authenticode certificate table (not verified)"),
        C("signature_size", "BIGINT", "size of the certificate table"),
        C("overlay_size", "BIGINT", "bytes after the last section"),
        C("pdb_path", "VARCHAR", "debug (PDB) path, when present"),
        C("warnings", "VARCHAR[]", "pefile's warnings about malformed structures (first few)"),
        C("analysed_at", "TIMESTAMPTZ", "when triage ran (UTC)"),
    ),
    key=("sha256",),
))

YARA_HITS = declare(Table(
    "yara_hits",
    "One YARA rule matching one stored file.",
    (
        C("sha256", "VARCHAR", "SHA-256 of the file that matched"),
        C("rule", "VARCHAR", "rule name"),
        C("namespace", "VARCHAR", "namespace: the rule file's path under the folder or file given"),
        C("tags", "VARCHAR[]", "rule tags"),
        C("meta", "JSON", "rule meta as a JSON object"),
        C("strings", "JSON", "[{identifier, offset, length}] of matched strings (capped per string)"),
        C("rule_file", "VARCHAR", "absolute path of the rule file"),
        C("filename", "VARCHAR", "value of the filename external variable used for this scan"),
        C("run_id", "VARCHAR", "scan run that found it (yara_runs)"),
        C("scanned_at", "TIMESTAMPTZ", "when (UTC)"),
    ),
    key=("sha256", "namespace", "rule", "filename"),
))

YARA_RUNS = declare(Table(
    "yara_runs",
    "What a YARA scan run did: each rule file compiled, failed or skipped; each file not scanned.",
    (
        C("run_id", "VARCHAR", "scan run"),
        C("started_at", "TIMESTAMPTZ", "start of the run (UTC)"),
        C("kind", "VARCHAR", "rule_file | file"),
        C("status", "VARCHAR", "rule files: compiled, failed, skipped; files: timeout, error, warning"),
        C("rule_file", "VARCHAR", "rule file path (kind rule_file)"),
        C("rule_sha256", "VARCHAR", "SHA-256 of the rule file as compiled"),
        C("namespace", "VARCHAR", "namespace its rules got"),
        C("sha256", "VARCHAR", "file that could not be scanned (kind file)"),
        C("message", "VARCHAR", "compiler error, timeout, or why the rule file was skipped"),
    ),
))

IOC_FEEDS = declare(Table(
    "ioc_feeds",
    "One imported threat-intelligence feed (the latest import of each name).",
    (
        C("feed", "VARCHAR", "feed name (given, or the file name)"),
        C("version", "VARCHAR", "feed version: given, or what the feed says (STIX modified, MISP timestamp)"),
        C("format", "VARCHAR", "plain | csv | stix2.1 | misp"),
        C("path", "VARCHAR", "file it was imported from"),
        C("sha256", "VARCHAR", "SHA-256 of that file"),
        C("imported_at", "TIMESTAMPTZ", "when (UTC)"),
        C("indicators", "BIGINT", "indicators imported"),
        C("skipped", "BIGINT", "entries not imported (unsupported type or pattern, revoked, malformed)"),
        C("skipped_reasons", "JSON", "reason -> count for the skipped entries"),
        C("description", "VARCHAR", "what the feed says about itself (MISP event info, STIX report name)"),
    ),
    key=("feed",),
))

IOC_INDICATORS = declare(Table(
    "ioc_indicators",
    "One indicator of compromise from a feed, normalised.",
    (
        C("indicator_id", "VARCHAR", "deterministic id: feed, type and value"),
        C("feed", "VARCHAR", "feed name"),
        C("type", "VARCHAR", "ip | cidr | domain | url | md5 | sha1 | sha256 | ja3"),
        C("value", "VARCHAR", "normalised value (lower-case names, canonical addresses and networks)"),
        C("raw", "VARCHAR", "the value as the feed wrote it"),
        C("valid_from", "TIMESTAMPTZ", "start of validity (UTC); NULL when the feed gives none"),
        C("valid_until", "TIMESTAMPTZ", "end of validity (exclusive, UTC); NULL when open"),
        C("labels", "VARCHAR[]", "labels, tags, MISP category, threat names"),
        C("description", "VARCHAR", "what the feed says about it"),
        C("ref", "VARCHAR", "the feed's id for it (STIX indicator id, MISP attribute uuid, CSV line)"),
        C("to_ids", "BOOLEAN", "MISP to_ids flag (meant for detection); NULL for other formats"),
    ),
    key=("indicator_id",),
))

IOC_HITS = declare(Table(
    "ioc_hits",
    "One indicator matching one row of the case.",
    (
        C("indicator_id", "VARCHAR", "indicator that matched"),
        C("feed", "VARCHAR", "its feed"),
        C("type", "VARCHAR", "its type"),
        C("value", "VARCHAR", "its value"),
        C("table_name", "VARCHAR", "table of the matching row (sessions, dns, http, tls, files, ...)"),
        C("row_key", "JSON", "key of that row (canonical JSON, as tags and findings use)"),
        C("column", "VARCHAR", "column that matched (orig_h, query, answers, host, ja3, md5, ...)"),
        C("matched", "VARCHAR", "the value in that column"),
        C("ts", "TIMESTAMPTZ", "time of the row"),
        C("uid", "VARCHAR", "session uid of the row, when it has one"),
        C("matched_at", "TIMESTAMPTZ", "when the match ran (UTC)"),
    ),
))
