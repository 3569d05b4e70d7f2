"""Analyst workflow tables: tags, notes, findings with their history, control ratings.

These hold the analysts' work, not anything derived from evidence, so none of
them has an ``evidence_id`` column: the ingest engine clears rows of an
evidence file by that column before it re-reads the file, and the analysts'
work must survive that. Rows of the case are referred to by ``table_name`` and
``row_key``, a canonical JSON object of the row's key columns with the values as
text (``{"uid":"C1f..."}``, ``{"evidence_id":"ab..","frame":"17","tunnel_depth":"0"}``);
keys are deterministic (DESIGN §2), so references survive a re-ingest or a
rebuild of the case from the same evidence.

Everything is append-only. A tag is removed by a later ``remove`` row, a note
is corrected by a note that ``supersedes`` it, a control is re-rated by a newer
rating, and a finding's every change is a new ``finding_history`` version.
``findings`` is the one exception: it holds each finding's current state, and
is updated in the same transaction that appends the history version it
reflects, so it can always be rebuilt from ``finding_history``.
"""

from __future__ import annotations

from forensics._schema import Column as C
from forensics._schema import Table, declare

_WHO = (
    C("recorded_at", "TIMESTAMPTZ", "when it was recorded (UTC)"),
    C("author", "VARCHAR", "who recorded it (user@host unless given)"),
)
_REF = (
    C("table_name", "VARCHAR", "table of the row referred to (sessions, events, ...)"),
    C("row_key", "JSON", "key columns of that row with values as text, canonical JSON"),
)

TAGS = declare(Table(
    "tags",
    "One tag action on a row: added or removed; the latest action per row and label wins.",
    (
        C("tag_id", "VARCHAR", "id of this action"),
        *_WHO,
        C("action", "VARCHAR", "add | remove"),
        *_REF,
        C("label", "VARCHAR", "the tag (c2, exfil, patient-zero, ...)"),
        C("comment", "VARCHAR", "why, in words (optional)"),
    ),
    key=("tag_id",),
))

NOTES = declare(Table(
    "notes",
    "One analyst note: on the case, on a row, or on a finding; corrected by superseding it.",
    (
        C("note_id", "VARCHAR", "id of the note"),
        *_WHO,
        C("text", "VARCHAR", "the note (plain text; escaped wherever it is shown as HTML)"),
        *_REF,
        C("finding_id", "VARCHAR", "finding the note is about, NULL if none"),
        C("supersedes", "VARCHAR", "note_id of the note this one replaces, NULL if none"),
    ),
    key=("note_id",),
))

FINDINGS = declare(Table(
    "findings",
    "Each finding's current state (the latest version in finding_history).",
    (
        C("finding_id", "VARCHAR", "id of the finding (F-<hex>), stable across export and import"),
        C("title", "VARCHAR", "short statement of what was found"),
        C("severity", "VARCHAR", "info | low | medium | high | critical"),
        C("status", "VARCHAR", "open | confirmed | false_positive | closed"),
        C("description", "VARCHAR", "what it means and why the analyst believes it"),
        C("created_at", "TIMESTAMPTZ", "when the finding was opened (UTC)"),
        C("created_by", "VARCHAR", "who opened it"),
        C("updated_at", "TIMESTAMPTZ", "time of the latest version (UTC)"),
        C("updated_by", "VARCHAR", "author of the latest version"),
        C("version", "INTEGER", "number of versions in finding_history"),
    ),
    key=("finding_id",),
))

FINDING_HISTORY = declare(Table(
    "finding_history",
    "One version of a finding: its whole state after a change, who changed it and why.",
    (
        C("history_id", "VARCHAR", "id of this version"),
        C("finding_id", "VARCHAR", "the finding"),
        C("version", "INTEGER", "1 for the finding as opened, then 2, 3, ..."),
        *_WHO,
        C("title", "VARCHAR", "title after the change"),
        C("severity", "VARCHAR", "severity after the change"),
        C("status", "VARCHAR", "status after the change"),
        C("description", "VARCHAR", "description after the change"),
        C("comment", "VARCHAR", "why it changed"),
    ),
    key=("history_id",),
))

FINDING_ROWS = declare(Table(
    "finding_rows",
    "A row of the case added to (or removed from) a finding as evidence for it.",
    (
        C("ref_id", "VARCHAR", "id of this action"),
        C("finding_id", "VARCHAR", "the finding"),
        *_WHO,
        C("action", "VARCHAR", "add | remove"),
        *_REF,
        C("comment", "VARCHAR", "what the row shows (optional)"),
    ),
    key=("ref_id",),
))

CONTROL_RATINGS = declare(Table(
    "control_ratings",
    "One rating of a security control in the post-incident review; the latest per control wins.",
    (
        C("rating_id", "VARCHAR", "id of this rating"),
        *_WHO,
        C("control_id", "VARCHAR", "control number (ISO/IEC 27002:2005 clause, or a user's own id)"),
        C("area", "VARCHAR", "area the control belongs to (one of the eleven ISO/IEC 27002 areas)"),
        C("control", "VARCHAR", "control title when rated"),
        C("documentary", "VARCHAR", "documentary confirmation: not_established | partly | fully"),
        C("instrumental", "VARCHAR", "instrumental confirmation: not_fulfilled | partly | fully"),
        C("score", "DOUBLE", "score from the documentary × instrumental matrix, 0 to 1"),
        C("suggested", "VARCHAR", "instrumental level the case's evidence suggested, NULL if none"),
        C("evidence", "VARCHAR", "the evidence the instrumental rating rests on"),
        C("comment", "VARCHAR", "the analyst's comment"),
    ),
    key=("rating_id",),
))
