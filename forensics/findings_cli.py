"""``breachbook finding``, ``breachbook tag`` and ``breachbook note``: the analysts' work from a shell.

::

    breachbook finding add CASE "Beaconing to 203.0.113.7" --severity high --row sessions:C4f1...
    breachbook finding list CASE [--status open] [--format table|csv|json]
    breachbook finding show CASE F-3a9c                  state, notes, history, rows with lineage
    breachbook finding update CASE F-3a9c --status confirmed --comment "matches proxy log"
    breachbook finding close CASE F-3a9c [--false-positive] [--comment ...]
    breachbook finding export CASE work.json / import CASE work.json
    breachbook tag CASE sessions c2 C4f1... C9a0...      (--remove to untag; no keys: list)
    breachbook note CASE "text" [--finding F-3a9c] [--row sessions:C4f1...]

A row is ``TABLE:KEY``; a key is the value of a one-column key (a session uid)
or ``col=value,col=value`` for composite keys (``packets:evidence_id=ab..,frame=4,tunnel_depth=0``).
A finding id may be shortened to any unique prefix. ``--author`` defaults to
``$BREACHBOOK_AUTHOR`` or ``user@host``.
"""

from __future__ import annotations

import argparse
from typing import Any

from forensics._cliout import friendly, print_frame
from forensics.errors import BreachbookError

__all__ = ["add_parser", "parse_key", "parse_row"]

_SEVERITIES = ("info", "low", "medium", "high", "critical")
_STATUSES = ("open", "confirmed", "false_positive", "closed")


def parse_key(text: str) -> Any:
    """A key typed on the command line: ``value`` or ``col=value,col=value``."""
    if "=" not in text:
        return text
    out = {}
    for part in text.split(","):
        col, sep, val = part.partition("=")
        if not sep or not col.strip():
            raise BreachbookError(f"bad key {text!r}: use value or col=value,col=value")
        out[col.strip()] = val.strip()
    return out


def parse_row(text: str) -> tuple[str, Any]:
    """A row typed on the command line: ``TABLE:KEY``."""
    table, sep, key = text.partition(":")
    if not sep or not table or not key:
        raise BreachbookError(f"bad row {text!r}: use TABLE:KEY, e.g. sessions:C4f1...")
    return table, parse_key(key)


def _print(df: Any, fmt: str) -> None:
    print_frame(df, fmt, max_rows=500, width=200, max_colwidth=80)


@friendly
def cmd_finding_add(args: argparse.Namespace) -> int:
    """Open a finding."""
    from forensics import findings, open_case

    rows = [parse_row(r) for r in args.row]
    with open_case(args.case, create=False) as case:
        fid = findings.finding(case, args.title, args.severity, rows=rows, status=args.status,
                               description=args.description or "", author=args.author)
    print(fid)
    return 0


@friendly
def cmd_finding_list(args: argparse.Namespace) -> int:
    """List findings."""
    from forensics import findings, open_case

    with open_case(args.case, create=False, read_only=True) as case:
        df = findings.list_findings(case, status=args.status or None)
    if args.format == "table":
        df = df.drop(columns=["description"])
    _print(df, args.format)
    return 0


@friendly
def cmd_finding_show(args: argparse.Namespace) -> int:
    """Show one finding: state, notes, history and rows with lineage."""
    from forensics import findings, open_case

    with open_case(args.case, create=False, read_only=True) as case:
        f = findings.get_finding(case, args.id)
        notes = findings.notes(case, finding_id=f["finding_id"])
        hist = findings.finding_history(case, f["finding_id"])
        rows = findings.resolve_rows(case, f["finding_id"])
    print(f"{f['finding_id']}  [{f['severity']}] {f['title']}  ({f['status']}, version {f['version']})")
    print(f"opened by {f['created_by']} at {f['created_at']}; last change by {f['updated_by']} at "
          f"{f['updated_at']}")
    if f["description"]:
        print(f"\n{f['description']}")
    print("\nhistory")
    _print(hist[["version", "recorded_at", "author", "status", "severity", "comment"]], "table")
    if len(notes):
        print("\nnotes")
        _print(notes[["recorded_at", "author", "text"]], "table")
    print("\nrows")
    _print(rows[["table_name", "row_key", "evidence_name", "sha256", "locator"]], "table")
    return 0


@friendly
def cmd_finding_update(args: argparse.Namespace) -> int:
    """Change a finding (a new version; earlier versions are kept)."""
    from forensics import findings, open_case

    status = args.status
    if args.command_name == "close":
        status = "false_positive" if args.false_positive else "closed"
    title, severity = getattr(args, "title", None), getattr(args, "severity", None)
    rows = [parse_row(r) for r in getattr(args, "row", [])]
    if not (status or title or severity or args.comment or rows):
        raise BreachbookError("nothing to change: give --status, --title, --severity, --row or --comment")
    with open_case(args.case, create=False) as case:
        fid = findings.get_finding(case, args.id)["finding_id"]
        if status or title or severity or args.comment:
            findings.update_finding(case, fid, status=status, title=title, severity=severity,
                                    comment=args.comment, author=args.author)
        added = findings.add_rows(case, fid, rows, author=args.author) if rows else 0
        state = findings.get_finding(case, fid)
    extra = f", {added} row(s) added" if added else ""
    print(f"{fid} version {state['version']}: {state['status']}{extra}")
    return 0


@friendly
def cmd_finding_export(args: argparse.Namespace) -> int:
    """Export tags, notes, findings and ratings to JSON."""
    from forensics import findings, open_case

    with open_case(args.case, create=False, read_only=True) as case:
        out = findings.export_workflow(case, args.file)
    print(f"written {out}")
    return 0


@friendly
def cmd_finding_import(args: argparse.Namespace) -> int:
    """Import work exported from another case (idempotent)."""
    from forensics import findings, open_case

    with open_case(args.case, create=False) as case:
        counts = findings.import_workflow(case, args.file)
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if counts.get("unresolved") and args.strict else 0


@friendly
def cmd_tag(args: argparse.Namespace) -> int:
    """Tag, untag, or list the tagged rows."""
    from forensics import findings, open_case

    keys = [parse_key(k) for k in args.keys]
    if not keys:
        with open_case(args.case, create=False, read_only=True) as case:
            _print(findings.tagged_keys(case, args.table, args.label), "table")
        return 0
    with open_case(args.case, create=False) as case:
        if args.remove:
            n = findings.untag(case, args.table, keys, args.label, author=args.author, comment=args.comment)
            print(f"untagged {n} row(s)")
        else:
            n = findings.tag(case, args.table, keys, args.label, author=args.author, comment=args.comment)
            print(f"tagged {n} row(s) {args.label!r}" + (f" ({len(keys) - n} already were)" if n < len(keys)
                                                          else ""))
    return 0


@friendly
def cmd_note(args: argparse.Namespace) -> int:
    """Write a note on the case, a row or a finding."""
    from forensics import findings, open_case

    table, key = parse_row(args.row) if args.row else (None, None)
    with open_case(args.case, create=False) as case:
        nid = findings.note(case, args.text, table=table, keys=key, finding_id=args.finding,
                            author=args.author)
    print(nid)
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``finding``, ``tag`` and ``note`` to the ``breachbook`` command's subparsers."""
    def author(p: argparse.ArgumentParser) -> None:
        p.add_argument("--author", help="who (default: $BREACHBOOK_AUTHOR or user@host)")

    s = subparsers.add_parser("finding", help="analyst findings: add, list, show, update, close")
    ss = s.add_subparsers(dest="action", required=True)
    a = ss.add_parser("add", help="open a finding")
    a.add_argument("case")
    a.add_argument("title")
    a.add_argument("--severity", choices=_SEVERITIES, required=True)
    a.add_argument("--row", action="append", default=[], help="TABLE:KEY of a row behind it (repeatable)")
    a.add_argument("--status", choices=_STATUSES, default="open")
    a.add_argument("--description")
    author(a)
    a.set_defaults(func=cmd_finding_add)

    a = ss.add_parser("list", help="list findings")
    a.add_argument("case")
    a.add_argument("--status", action="append", choices=_STATUSES, help="only this status (repeatable)")
    a.add_argument("--format", choices=["table", "csv", "json"], default="table")
    a.set_defaults(func=cmd_finding_list)

    a = ss.add_parser("show", help="a finding with its notes, history and evidence rows")
    a.add_argument("case")
    a.add_argument("id", help="finding id or a unique prefix")
    a.set_defaults(func=cmd_finding_show)

    a = ss.add_parser("update", help="change status, title or severity; add rows")
    a.add_argument("case")
    a.add_argument("id")
    a.add_argument("--status", choices=_STATUSES)
    a.add_argument("--title")
    a.add_argument("--severity", choices=_SEVERITIES)
    a.add_argument("--row", action="append", default=[], help="TABLE:KEY to add (repeatable)")
    a.add_argument("--comment", help="why")
    author(a)
    a.set_defaults(func=cmd_finding_update, command_name="update")

    a = ss.add_parser("close", help="close a finding (or mark it a false positive)")
    a.add_argument("case")
    a.add_argument("id")
    a.add_argument("--false-positive", action="store_true", help="close as a false positive")
    a.add_argument("--comment", help="why")
    author(a)
    a.set_defaults(func=cmd_finding_update, command_name="close", status=None)

    a = ss.add_parser("export", help="write tags, notes, findings and ratings to a JSON file")
    a.add_argument("case")
    a.add_argument("file")
    a.set_defaults(func=cmd_finding_export)

    a = ss.add_parser("import", help="merge an export into this case (idempotent)")
    a.add_argument("case")
    a.add_argument("file")
    a.add_argument("--strict", action="store_true", help="exit 1 if some referenced rows are not in the case")
    a.set_defaults(func=cmd_finding_import)

    s = subparsers.add_parser("tag", help="tag rows (or --remove); without keys, list the tagged rows")
    s.add_argument("case")
    s.add_argument("table", help="sessions, events, files, ...")
    s.add_argument("label", help="the tag, e.g. c2")
    s.add_argument("keys", nargs="*", help="row keys: a session uid, or col=value,col=value")
    s.add_argument("--remove", action="store_true", help="remove the tag instead")
    s.add_argument("--comment")
    author(s)
    s.set_defaults(func=cmd_tag)

    s = subparsers.add_parser("note", help="write a note on the case, a row or a finding")
    s.add_argument("case")
    s.add_argument("text")
    s.add_argument("--finding", help="finding id (or prefix) the note is about")
    s.add_argument("--row", help="TABLE:KEY of the row the note is about")
    author(s)
    s.set_defaults(func=cmd_note)
