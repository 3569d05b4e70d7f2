"""The content-addressed file store of a case: ``carved/ab/<sha256>``.

Carvers (HTTP, SMB, FTP, SMTP, ...) hand the bytes of each transferred file to
:func:`store`. The bytes are written once per content, under a path made only
of the SHA-256 the store computed itself: the name an attacker chose travels as
data (``files.filename``, ``carved_files.claimed_name``/``claimed_name_raw``)
and never becomes part of a path, so ``../../etc/passwd``, absolute paths,
drive letters and NUL bytes in names cannot write outside the case.

Each call adds (or replaces, same ``fuid``) one row in the shared ``files``
table (Zeek files.log columns, ``source = 'carve'``) and one in
``carved_files`` (entropy, missing ranges, the exact claimed name). A file with
bytes missing is kept and flagged (``complete = false``), never dropped.

Bounds: the content is streamed (memory is one chunk plus an 8 KiB head),
capped at ``max_size`` bytes (``truncated``), and nothing is ever allocated or
pre-sized from a size the protocol claims.

Without a case (the parse stage of ingest, where no database is open), the
same work is split in two pure steps: :func:`write_blob` (or a
:class:`BlobStore` for many files) writes the bytes to ``<case>/carved``, and
:func:`file_rows` / :func:`rows_to_tables` build the rows, to be staged and
loaded with the rest of the evidence (:mod:`forensics.carve` does this).

Example::

    rec = store(case, body, claimed_name="invoice.exe", protocol="http", uid=uid,
                direction="download", ts=ts, expected_size=content_length)
    rec.sha256, rec.path, rec.complete
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from forensics._blobstore import DEFAULT_MAX_SIZE, Blob, BlobStore, blob_path, write_blob
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case

__all__ = ["DEFAULT_MAX_SIZE", "Blob", "BlobStore", "FileRecord", "batch", "blob_path", "content_path",
           "display_name", "file_rows", "rows_to_tables", "store", "write_blob"]

_MAX_NAME = 4096  # bytes of a claimed name kept
_MAX_RANGES = 10_000  # missing ranges kept in the JSON column (the byte count stays exact)
_INT64_MAX = (1 << 63) - 1
_ZEEK_SOURCE = {"ftp": "FTP_DATA", "smb2": "SMB", "smb3": "SMB", "smb1": "SMB"}
_ORIG_DIRECTIONS = {"upload": True, "out": True, "lateral": True, "download": False, "in": False}


@dataclass(frozen=True)
class FileRecord:
    """One stored file (one transfer of some content), as :func:`store` recorded it.

    Attributes:
        fuid: file id of this transfer (joins ``files`` and ``carved_files``).
        sha256: SHA-256 of the stored bytes; also the store key.
        md5: MD5 of the stored bytes.
        sha1: SHA-1 of the stored bytes.
        size: bytes stored.
        path: absolute path of the content in the store.
        relpath: the same, relative to the case directory (``carved/ab/<sha256>``).
        mime_type: MIME type from the magic number.
        filetype: short type name (``EXE``, ``PDF``, ...; empty when none fits).
        description: what the magic number says, in words.
        entropy: Shannon entropy, bits per byte.
        claimed_name: the name the protocol gave, as escaped text (None if none).
        expected_size: size the protocol announced (None if none).
        missing_bytes: bytes never seen.
        missing_ranges: never-seen ``(start, end)`` file offsets, merged and sorted.
        complete: every expected byte seen and nothing cut (None when unknowable).
        truncated: the ``max_size`` cap cut the content.
        new_content: the bytes were not in the store before this call.
    """

    fuid: str
    sha256: str
    md5: str
    sha1: str
    size: int
    path: Path
    relpath: str
    mime_type: str
    filetype: str
    description: str
    entropy: float
    claimed_name: str | None
    expected_size: int | None
    missing_bytes: int
    missing_ranges: tuple[tuple[int, int], ...]
    complete: bool | None
    truncated: bool
    new_content: bool


def content_path(case: Case, sha256: str) -> Path:
    """Where content with this SHA-256 lives in the store (it may not exist).

    Args:
        case: the case.
        sha256: 64 hex digits.

    Raises:
        ValueError: ``sha256`` is not 64 hex digits (so it can never act as a path).
    """
    sha = sha256.lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):  # before touching the case
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return blob_path(case.path / "carved", sha)


def display_name(name: str | bytes | None) -> tuple[str | None, bytes | None]:
    r"""A claimed file name as safe text and as exact bytes.

    Text is UTF-8 (invalid bytes as ``\xNN``) with control characters, NUL
    included, escaped as ``\xNN``; both forms are capped at 4096 bytes. The
    text is for display and queries; it is never used as a path.

    Args:
        name: the name as the protocol gave it.

    Returns:
        ``(text, raw)``; ``(None, None)`` when there is no name.
    """
    if name is None:
        return None, None
    raw = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else bytes(name)
    raw = raw[:_MAX_NAME]
    text = raw.decode("utf-8", "backslashreplace")
    text = "".join(c if (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in text)
    return text, raw


def _canonical_key(key: Mapping[str, Any] | None) -> str | None:
    """Canonical row-key JSON (sorted keys, text values): how the workflow tables refer to rows."""
    if key is None:
        return None
    vals = {str(k): (None if v is None else str(v)) for k, v in key.items()}
    return json.dumps(vals, sort_keys=True, separators=(",", ":"))


def _merge(ranges: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """Valid ``[start, end)`` ranges sorted and merged (empty or negative ones dropped)."""
    clean = sorted((max(0, int(a)), min(int(b), _INT64_MAX)) for a, b in ranges if int(b) > max(0, int(a)))
    out: list[tuple[int, int]] = []
    for a, b in clean:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _fuid(parts: Sequence[Any]) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return "F" + digest[:17]


def _clamp_size(n: int | None) -> int | None:
    if n is None or int(n) < 0:
        return None
    return min(int(n), _INT64_MAX)


def _conn(case: Case, uid: str | None) -> dict[str, Any]:
    if not uid:
        return {}
    rows = case.con.execute(
        "SELECT orig_h, orig_p, resp_h, resp_p FROM sessions WHERE uid = ? LIMIT 1", [uid]).fetchall()
    if not rows:
        return {}
    return dict(zip(("orig_h", "orig_p", "resp_h", "resp_p"), rows[0], strict=True))


def file_rows(
    blob: Blob,
    *,
    claimed_name: str | bytes | None = None,
    protocol: str | None = None,
    uid: str | None = None,
    conn: Mapping[str, Any] | None = None,
    direction: str | None = None,
    ts: datetime | None = None,
    expected_size: int | None = None,
    missing_ranges: Iterable[Sequence[int]] = (),
    unplaced_missing: int = 0,
    source_row: tuple[str, Mapping[str, Any]] | None = None,
    fuid: str | None = None,
    parent_fuid: str | None = None,
    is_orig: bool | None = None,
    depth: int | None = None,
    duration: float | None = None,
    mime_type: str | None = None,
    evidence_id: str | None = None,
    record_offset: int | None = None,
    record_id: int | None = None,
) -> tuple[FileRecord, dict[str, Any], dict[str, Any]]:
    """The ``files`` and ``carved_files`` rows of one transfer of stored content (pure).

    Args:
        blob: what :func:`write_blob` wrote.
        claimed_name: name the protocol gave (data only, never a path).
        protocol: ``http``, ``smb``, ``ftp``, ``smtp``, ...
        uid: session uid.
        conn: the session's ``orig_h``, ``orig_p``, ``resp_h``, ``resp_p``.
        direction: ``download``, ``upload``, ``lateral``, ...
        ts: time of the first byte (timezone-aware UTC).
        expected_size: size the protocol announced, or None.
        missing_ranges: ``(start, end)`` file offsets never seen.
        unplaced_missing: bytes known to be missing whose place in the file is
            unknown (a compressed body with a hole on the wire); counted in
            ``missing_bytes`` and making the file incomplete.
        source_row: ``(table, key columns)`` of the row the carver worked from.
        fuid: file id (derived from the transfer when None, as in :func:`store`).
        parent_fuid: the container file (a multipart body, a mail message).
        is_orig: sent by the session's originator (derived from ``direction`` when None).
        depth: depth in the protocol (HTTP transaction, MIME part).
        duration: seconds from the first to the last byte.
        mime_type: MIME type to record instead of the sniffed one (``message/rfc822``).
        evidence_id: evidence the bytes came from.
        record_offset: evidence offset of the frame with the first byte.
        record_id: that frame's number.

    Returns:
        The :class:`FileRecord`, the ``files`` row and the ``carved_files`` row.

    Raises:
        ValueError: ``ts`` is naive.
    """
    if ts is not None and ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware (UTC)")
    size = blob.size
    expected = _clamp_size(expected_size)
    gaps = [tuple(r) for r in missing_ranges]
    if expected is not None and expected > size:
        gaps.append((size, expected))
    merged = _merge(gaps)
    unplaced = max(0, int(unplaced_missing))
    missing = min(sum(b - a for a, b in merged) + unplaced, _INT64_MAX)
    inside = sum(max(0, min(b, size) - a) for a, b in merged if a < size)
    seen = size - inside
    truncated = blob.truncated
    complete: bool | None
    if truncated or missing:
        complete = False
    elif expected is None:
        complete = None
    else:
        complete = True
    state = ("TRUNCATED" if truncated else "INCOMPLETE" if missing else
             "OVERSIZE" if expected is not None and size > expected else
             "COMPLETE" if complete else "UNKNOWN_SIZE")
    ft = blob.filetype
    mime = mime_type or ft.mime
    name_text, name_raw = display_name(claimed_name)
    proto = protocol.lower() if protocol else None
    direc = direction.lower() if direction else None
    if is_orig is None and direc in _ORIG_DIRECTIONS:
        is_orig = _ORIG_DIRECTIONS[direc]
    source_key = _canonical_key(source_row[1]) if source_row else None
    if fuid is None:
        ident = [proto, uid, direc, source_row[0] if source_row else None, source_key,
                 name_raw.hex() if name_raw is not None else None,
                 ts.isoformat() if ts else None, evidence_id, record_offset, record_id, depth]
        if source_row is None and record_offset is None and depth is None:
            # Nothing places the transfer within its session: two files of the same
            # name in one session would share an id, so the content is part of it.
            ident.append(blob.sha256)
        fuid = _fuid(ident)
    lineage = {"evidence_id": evidence_id, "record_offset": record_offset, "record_id": record_id}
    files_row = {
        "ts": ts, "fuid": fuid, "uid": uid, **(dict(conn) if conn else {}),
        "file_source": _ZEEK_SOURCE.get(proto or "", (proto or "").upper() or None), "depth": depth,
        "analyzers": ["MD5", "SHA1", "SHA256", "EXTRACT"], "mime_type": mime, "filename": name_text,
        "duration": duration, "is_orig": is_orig, "seen_bytes": seen, "total_bytes": expected,
        "missing_bytes": missing, "timedout": False, "parent_fuid": parent_fuid, "md5": blob.md5,
        "sha1": blob.sha1, "sha256": blob.sha256, "extracted": blob.relpath,
        "extracted_cutoff": truncated, "extracted_size": size, "magic": ft.description, "stored": True,
        "state": state, "source": "carve", **lineage,
    }
    carved_row = {
        "fuid": fuid, "sha256": blob.sha256, "path": blob.relpath, "size": size, "mime_type": mime,
        "filetype": ft.filetype, "entropy": blob.entropy, "claimed_name": name_text,
        "claimed_name_raw": name_raw, "protocol": proto, "uid": uid, "direction": direc, "ts": ts,
        "expected_size": expected, "missing_bytes": missing,
        "missing_ranges": json.dumps([list(r) for r in merged[:_MAX_RANGES]]), "complete": complete,
        "truncated": truncated, "source_table": source_row[0] if source_row else None,
        "source_key": source_key, "stored_at": datetime.now(UTC), "evidence_id": evidence_id,
    }
    rec = FileRecord(
        fuid=fuid, sha256=blob.sha256, md5=blob.md5, sha1=blob.sha1, size=size, path=blob.path,
        relpath=blob.relpath, mime_type=mime, filetype=ft.filetype, description=ft.description,
        entropy=blob.entropy or 0.0, claimed_name=name_text, expected_size=expected, missing_bytes=missing,
        missing_ranges=tuple(merged), complete=complete, truncated=truncated, new_content=blob.new_content)
    return rec, files_row, carved_row


def rows_to_tables(rows: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, pa.Table]:
    """``files`` and ``carved_files`` tables from :func:`file_rows` output (pure).

    Args:
        rows: ``(files_row, carved_row)`` pairs.

    Returns:
        Both tables, conforming to their declarations (empty when there are no rows).
    """
    pairs = list(rows)
    return {table: pa.Table.from_pylist([dict(r[i]) for r in pairs], schema=TABLES[table].arrow_schema())
            for i, table in enumerate(("files", "carved_files"))}


def store(
    case: Case,
    data: bytes | bytearray | memoryview | Iterable[bytes],
    *,
    claimed_name: str | bytes | None = None,
    protocol: str | None = None,
    uid: str | None = None,
    direction: str | None = None,
    ts: datetime | None = None,
    expected_size: int | None = None,
    missing_ranges: Iterable[Sequence[int]] = (),
    source_row: tuple[str, Mapping[str, Any]] | None = None,
    fuid: str | None = None,
    is_orig: bool | None = None,
    depth: int | None = None,
    evidence_id: str | None = None,
    record_offset: int | None = None,
    record_id: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> FileRecord:
    """Store one carved file and record it in ``files`` and ``carved_files``.

    Storing the same transfer again (same ``fuid``, given or derived) replaces
    its rows instead of adding new ones; the same content from several
    transfers is written to disk once.

    Args:
        case: the case (open for writing).
        data: the file's bytes, or an iterable of chunks (streamed, never joined).
            Bytes the carver never saw may be left out or filled (zeros); say
            which ranges in ``missing_ranges``.
        claimed_name: file name or path the protocol gave (str or raw bytes).
            Stored as data only; never used as a path.
        protocol: what it was carved from: ``http``, ``smb``, ``ftp``, ``smtp``, ...
        uid: session uid; the connection's addresses are taken from ``sessions``.
        direction: ``download``, ``upload``, ``lateral`` (free text, lower-cased).
        ts: time of the file's first byte (timezone-aware UTC).
        expected_size: size the protocol announced (Content-Length, SMB end of
            file, the end of a chunked body); None when unknown. Only compared,
            never used to allocate.
        missing_ranges: ``(start, end)`` file offsets never seen (end exclusive).
        source_row: ``(table, key columns)`` of the row the carver worked from,
            e.g. ``("http_bodies", {"evidence_id": e, "record_offset": o, "member": None})``.
        fuid: file id; derived from the transfer (protocol, uid, direction,
            source row, name, time, lineage) when not given, and from the content
            too when neither ``source_row``, ``record_offset`` nor ``depth`` is given.
        is_orig: sent by the session's originator; derived from ``direction``
            (upload/lateral: True, download: False) when not given.
        depth: depth in the protocol (HTTP transaction, MIME part index).
        evidence_id: evidence the bytes came from (lineage).
        record_offset: byte offset in the evidence of the frame with the first byte.
        record_id: frame number of that frame.
        max_size: bytes kept at most; the rest is dropped and the file flagged
            ``truncated`` (its hashes are those of the kept bytes).

    Returns:
        The :class:`FileRecord`.

    Raises:
        CaseError: the case is read-only, or its store has been tampered with.
    """
    case._need_write()
    if ts is not None and ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware (UTC)")
    blob = write_blob(case.path / "carved", data, max_size=max_size)
    rec, files_row, carved_row = file_rows(
        blob, claimed_name=claimed_name, protocol=protocol, uid=uid, conn=_conn(case, uid),
        direction=direction, ts=ts, expected_size=expected_size, missing_ranges=missing_ranges,
        source_row=source_row, fuid=fuid, is_orig=is_orig, depth=depth, evidence_id=evidence_id,
        record_offset=record_offset, record_id=record_id)
    pending = _BATCHES.get(case)
    if pending is not None:
        pending[rec.fuid] = (files_row, carved_row)
    else:
        _write_rows(case, {rec.fuid: (files_row, carved_row)})
    return rec


_Rows = dict[str, tuple[dict[str, Any], dict[str, Any]]]
_BATCHES: weakref.WeakKeyDictionary[Case, _Rows] = weakref.WeakKeyDictionary()


def _write_rows(case: Case, rows: _Rows) -> None:
    """Replace the rows of these fuids in ``files`` and ``carved_files``, in one transaction."""
    from forensics._rowref import transaction

    if not rows:
        return
    fuids = pa.table({"fuid": list(rows)})
    with transaction(case):
        case.con.register("_bb_fuids", fuids)
        try:
            case.con.execute("DELETE FROM files WHERE source = 'carve' "
                             "AND fuid IN (SELECT fuid FROM _bb_fuids)")
            case.con.execute("DELETE FROM carved_files WHERE fuid IN (SELECT fuid FROM _bb_fuids)")
        finally:
            case.con.unregister("_bb_fuids")
        for i, table in enumerate(("files", "carved_files")):
            case._insert(table, pa.Table.from_pylist([r[i] for r in rows.values()],
                                                     schema=TABLES[table].arrow_schema()))


@contextlib.contextmanager
def batch(case: Case) -> Iterator[None]:
    """Write the rows of every :func:`store` call inside the block in one transaction at its end.

    Storing thousands of small files one transaction each costs milliseconds
    per file; a carver working through a capture should wrap its loop in this.
    The bytes are still written to the store as each call is made. If the
    block raises, the rows stored so far are still written (their bytes are in
    the store), then the exception goes on.

    Example::

        with filestore.batch(case):
            for body in bodies:
                filestore.store(case, body, ...)
    """
    if case in _BATCHES:  # nested: the outer block writes
        yield
        return
    _BATCHES[case] = {}
    try:
        yield
    finally:
        _write_rows(case, _BATCHES.pop(case))
