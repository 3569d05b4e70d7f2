"""SMB session state shared by the SMB1 and SMB2/3 parsers: trees, open files, rows.

The row rules are Zeek's (base/protocols/smb): a file row is written on open,
read, write, rename, delete and close with the file's name, tree path, size
and MAC times; a row identical to one already written for the connection
(same action, file id presence, name, path, size and times) is folded into
it instead of repeated (``ops``, ``data_len`` count what was folded). A file
gets its ``fuid`` when its first data byte is seen, and Zeek's file analysis
"ends" (writing the row again, now with the fuid) once the bytes seen reach
the announced size or the file is closed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from forensics.protocols._base import Session

__all__ = ["FILETIME_EPOCH", "File", "SmbState", "Tree", "filetime_ns", "nt_status"]

FILETIME_EPOCH = 116444736000000000  # 100-ns intervals from 1601-01-01 to 1970-01-01

# Common NT status codes ([MS-ERREF] §2.3.1) by value.
NT_STATUS = {
    0x00000000: "SUCCESS",
    0x00000103: "PENDING",
    0x80000005: "BUFFER_OVERFLOW",
    0x80000006: "NO_MORE_FILES",
    0xC0000016: "MORE_PROCESSING_REQUIRED",
    0xC0000022: "ACCESS_DENIED",
    0xC0000034: "OBJECT_NAME_NOT_FOUND",
    0xC0000035: "OBJECT_NAME_COLLISION",
    0xC000003A: "OBJECT_PATH_NOT_FOUND",
    0xC0000043: "SHARING_VIOLATION",
    0xC000006A: "WRONG_PASSWORD",
    0xC000006D: "LOGON_FAILURE",
    0xC000006E: "ACCOUNT_RESTRICTION",
    0xC0000071: "PASSWORD_EXPIRED",
    0xC0000072: "ACCOUNT_DISABLED",
    0xC00000BB: "NOT_SUPPORTED",
    0xC00000CC: "BAD_NETWORK_NAME",
    0xC0000101: "DIRECTORY_NOT_EMPTY",
    0xC0000128: "FILE_CLOSED",
    0xC000015B: "LOGON_TYPE_NOT_GRANTED",
    0xC0000193: "ACCOUNT_EXPIRED",
    0xC0000224: "PASSWORD_MUST_CHANGE",
    0xC0000234: "ACCOUNT_LOCKED_OUT",
    0xC000000D: "INVALID_PARAMETER",
    0xC0000010: "INVALID_DEVICE_REQUEST",
    0xC0000033: "OBJECT_NAME_INVALID",
    0xC00000BA: "FILE_IS_A_DIRECTORY",
    0xC0000120: "CANCELLED",
    0xC000009A: "INSUFFICIENT_RESOURCES",
    0x0000010C: "NOTIFY_ENUM_DIR",
    0xC0000011: "END_OF_FILE",
    0xC00000B5: "IO_TIMEOUT",
}
# Pipes whose names alone say "named pipe" when the tree connect was not captured.
KNOWN_PIPES = frozenset(
    {
        "svcctl",
        "samr",
        "lsarpc",
        "lsass",
        "srvsvc",
        "wkssvc",
        "winreg",
        "atsvc",
        "netlogon",
        "spoolss",
        "epmapper",
        "ntsvcs",
        "eventlog",
        "browser",
        "protected_storage",
        "msftewds",
        "drsuapi",
        "efsrpc",
        "initshutdown",
        "psexesvc",
        "remcom_communicaton",
    }
)


def filetime_ns(ft: int) -> int | None:
    """FILETIME (100 ns since 1601) as ns since the epoch, to the microsecond; None for 0 or out of range.

    The seconds are computed in double precision as Zeek does (``ft / 1e7 - 11644473600``), so
    the microsecond printed matches smb_files.log (a double holds ~2 us at this magnitude).
    """
    if ft <= 0 or ft >= 0x7FFFFFFFFFFFFFFF:
        return None
    secs = ft / 10000000.0 - 11644473600.0
    return int(f"{secs:.6f}".replace(".", "")) * 1000 if secs >= 0 else round(secs * 1e6) * 1000


def nt_status(code: int) -> str:
    """Name of an NT status code (hex for unknown ones)."""
    return NT_STATUS.get(code, f"0x{code:08x}")


@dataclass
class Tree:
    """A connected tree (share)."""

    path: str | None = None
    share_type: str = "DISK"
    service: str | None = None
    nfs: str | None = None


@dataclass
class File:
    """An open file (or pipe) as Zeek's SMB::FileInfo."""

    fid: int
    ts: int | None
    frame: int | None = None
    foff: int | None = None
    name: str | None = None
    path: str | None = None
    size: int = 0
    prev_name: str | None = None
    times: tuple[int | None, int | None, int | None, int | None] | None = None
    action: str | None = None
    fuid: str | None = None
    seen: int = 0
    ended: bool = False
    pipe: bool = False
    rpc: Any = None
    data_offset: int | None = None
    data_len: int = 0


@dataclass
class SmbState:
    """Trees, files and written rows of one SMB connection."""

    s: Session
    version: str = "SMB2"
    trees: dict[int, Tree] = field(default_factory=dict)
    files: dict[int, File] = field(default_factory=dict)
    recent: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def tree(self, tid: int | None) -> Tree:
        """The tree of an id (an unseen tree is a DISK share with no path, as in Zeek)."""
        if tid is None:
            return Tree()
        return self.trees.setdefault(tid, Tree())

    def file(self, fid: int, ts: int | None, frame: int | None = None, foff: int | None = None) -> File:
        """The file of an id, created on first reference."""
        f = self.files.get(fid)
        if f is None:
            f = self.files[fid] = File(fid, ts, frame, foff)
        return f

    def log(self, f: File, action: str, *, offset: int | None = None, length: int = 0) -> None:
        """Write (or fold) a smb_files row for ``f`` doing ``action``."""
        f.action = action
        if f.name is None:
            return
        ident = (action, f.fuid or "", f.name, f.path or "", f.size, f.times)
        row = self.recent.get(ident) if f.times is not None else None
        if row is not None:
            row["ops"] += 1
            row["data_len"] = (row["data_len"] or 0) + length
            return
        t = f.times or (None, None, None, None)
        row = self.s.emit(
            "smb_files",
            ts=f.ts,
            frame=f.frame,
            file_offset=f.foff,
            fuid=f.fuid,
            action=f"SMB::{action}",
            path=f.path,
            name=f.name,
            size=f.size,
            prev_name=f.prev_name,
            times_modified=t[0],
            times_accessed=t[1],
            times_created=t[2],
            times_changed=t[3],
            smb_version=self.version,
            data_offset=offset,
            data_len=length or None,
            ops=1,
            named_pipe=f.pipe,
        )
        if f.times is not None:
            self.recent[ident] = row

    def kind(self, f: File, base: str, tree: Tree) -> str:
        """``FILE_x``, ``PIPE_x`` or ``PRINT_x`` by the tree's share type."""
        if f.pipe or tree.share_type == "PIPE":
            return f"PIPE_{base}"
        return f"PRINT_{base}" if tree.share_type == "PRINT" else f"FILE_{base}"

    def opened(self, f: File, name: str, tree: Tree, size: int, times: tuple | None) -> None:
        """A successful create/open response."""
        f.name = name or "<share_root>"
        f.size = size
        if tree.path is not None:
            f.path = tree.path
        if times is not None and (times[0] or 0) > 0:
            f.times = times
        base = f.name.lower().replace("\\", "/").rsplit("/", 1)[-1]
        f.pipe = tree.share_type == "PIPE" or (tree.path is None and base in KNOWN_PIPES)
        self.log(f, self.kind(f, "OPEN", tree))

    def data(self, f: File, n: int, offset: int | None) -> None:
        """File bytes went over the wire (read response or write request)."""
        if n <= 0:
            return
        if f.data_offset is None:
            f.data_offset = offset
        f.data_len += n
        if f.fuid is None and not f.pipe:
            key = f"{self.s.uid}:{f.fid}:{f.name}"
            f.fuid = "F" + hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:17]
        f.seen += n
        if not f.ended and not f.pipe and f.size and f.seen >= f.size:
            self.end(f)

    def end(self, f: File) -> None:
        """Zeek's file analysis ended: the current action is written again, with the fuid."""
        if f.fuid is None or f.ended:
            return
        f.ended = True
        if f.action:
            self.log(f, f.action)

    def close(self, f: File, tree: Tree) -> None:
        """A close request."""
        self.end(f)
        if tree.path is not None:
            f.path = tree.path
        self.log(f, self.kind(f, "CLOSE", tree))

    def finish(self) -> None:
        """End of the connection: files still being analysed end now."""
        for f in self.files.values():
            self.end(f)
            if f.rpc:
                f.rpc.finish()
        if "ntlm" in self.s.state:
            self.s.state["ntlm"].finish()

    def mapping(self, tree: Tree, ts: int | None, frame: int | None, foff: int | None, status: str) -> None:
        """A tree connect response: a smb_mapping row."""
        self.s.emit(
            "smb_mapping",
            ts=ts,
            frame=frame,
            file_offset=foff,
            path=tree.path,
            service=tree.service,
            native_file_system=tree.nfs,
            share_type=tree.share_type,
            status=status,
            smb_version=self.version,
        )
