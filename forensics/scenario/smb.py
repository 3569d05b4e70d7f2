"""SMB2 (MS-SMB2 dialect 3.0.2) conversations: file-share access and PsExec-style installs.

A :class:`Smb2Client` writes request/response pairs (each with its NetBIOS
session header, RFC 1002 §4.3.1) and keeps message ids, session, tree and file
ids consistent. The ``*_steps`` functions turn a whole conversation into steps
``(from_client, bytes, think_us)`` that :func:`forensics.scenario.activities.run_steps`
plays over a TCP connection.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from forensics.scenario import rpc
from forensics.scenario.rpc import filetime

__all__ = ["Smb2Client", "SmbLogon", "file_access_steps", "psexec_steps", "share_probe_steps"]

Step = tuple[bool, bytes, int]

NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT = 0, 1, 2, 3, 4
CREATE, CLOSE, READ, WRITE = 5, 6, 8, 9
STATUS_SUCCESS = 0
STATUS_MORE_PROCESSING = 0xC0000016
STATUS_LOGON_FAILURE = 0xC000006D
CHUNK = 65536


@dataclass
class SmbLogon:
    """Who authenticates: NTLM over SPNEGO in SESSION_SETUP."""

    domain: str
    user: str
    workstation: str
    success: bool = True


class Smb2Client:
    """Builds one SMB2 connection's messages in order."""

    def __init__(self, rng: random.Random, server: str, server_ip: str, dns_domain: str,
                 nb_domain: str, t_us: int):
        self.rng = rng
        self.server, self.server_ip = server, server_ip
        self.dns_domain, self.nb_domain = dns_domain, nb_domain
        self.t = t_us
        self.mid = 0
        self.session = 0
        self.client_guid = rng.randbytes(16)

    @staticmethod
    def _nb(msg: bytes) -> bytes:
        return b"\0" + len(msg).to_bytes(3, "big") + msg

    def _hdr(self, cmd: int, tree: int, status: int = 0, response: bool = False) -> bytes:
        # MS-SMB2 §2.2.1.2 sync header; requests carry ChannelSequence/Reserved (0).
        return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, status if response else 0, cmd,
                           1, 1 if response else 0, 0, self.mid, 0xFEFF, tree, self.session,
                           b"\0" * 16)

    def _pair(self, cmd: int, req: bytes, resp: bytes, tree: int = 0,
              status: int = STATUS_SUCCESS) -> tuple[bytes, bytes]:
        q = self._nb(self._hdr(cmd, tree) + req)
        r = self._nb(self._hdr(cmd, tree, status, True) + resp)
        self.mid += 1
        return q, r

    @staticmethod
    def _error_body() -> bytes:
        return struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"  # MS-SMB2 §2.2.2 ERROR response

    # ---- commands -------------------------------------------------------------------

    def negotiate(self) -> tuple[bytes, bytes]:
        """NEGOTIATE for SMB 2.0.2 to 3.0.2 (MS-SMB2 §2.2.3, §2.2.4)."""
        dialects = (0x0202, 0x0210, 0x0300, 0x0302)
        req = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0x7F, self.client_guid, 0)
        req += b"".join(struct.pack("<H", d) for d in dialects)
        blob = rpc.spnego_server_hint()
        resp = struct.pack("<HHHH16sIIIIQQHHI", 65, 1, 0x0302, 0, self.rng.randbytes(16), 0x2F,
                           8388608, 8388608, 8388608, filetime(self.t), 0, 128, len(blob), 0)
        return self._pair(NEGOTIATE, req, resp + blob)

    def session_setup(self, logon: SmbLogon) -> list[tuple[bytes, bytes]]:
        """Two SESSION_SETUP round trips: NTLM negotiate/challenge, then authenticate."""
        def req(blob: bytes) -> bytes:
            return struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 88, len(blob), 0) + blob

        def resp(blob: bytes) -> bytes:
            return struct.pack("<HHHH", 9, 0, 72 if blob else 0, len(blob)) + blob

        tok1 = rpc.spnego_init(rpc.ntlm_negotiate())
        chal, info = rpc.ntlm_challenge(self.rng, self.nb_domain, self.server, self.dns_domain, self.t)
        first_q = self._nb(self._hdr(SESSION_SETUP, 0) + req(tok1))
        self.session = self.rng.getrandbits(44) | 0x0000100000000000
        first_r = self._nb(self._hdr(SESSION_SETUP, 0, STATUS_MORE_PROCESSING, True)
                           + resp(rpc.spnego_resp(chal, state=1, mech=True)))
        self.mid += 1
        auth = rpc.ntlm_authenticate(self.rng, logon.domain, logon.user, logon.workstation, info,
                                     self.t, f"cifs/{self.server}")
        q, r = self._pair(SESSION_SETUP, req(rpc.spnego_resp(auth)),
                          resp(rpc.spnego_resp(state=0)) if logon.success else self._error_body(),
                          status=STATUS_SUCCESS if logon.success else STATUS_LOGON_FAILURE)
        return [(first_q, first_r), (q, r)]

    def tree_connect(self, share: str) -> tuple[tuple[bytes, bytes], int]:
        """TREE_CONNECT to a share of the server; returns the pair and the tree id."""
        path = f"\\\\{self.server}\\{share}".encode("utf-16-le")
        tree = self.rng.randrange(1, 0xFFFF)
        pipe = share.upper() == "IPC$"
        req = struct.pack("<HHHH", 9, 0, 72, len(path)) + path
        resp = struct.pack("<HBBIII", 16, 2 if pipe else 1, 0, 0x30 if pipe else 0, 0, 0x001F01FF)
        q = self._nb(self._hdr(TREE_CONNECT, 0) + req)
        r = self._nb(self._hdr(TREE_CONNECT, tree, 0, True) + resp)
        self.mid += 1
        return (q, r), tree

    def create(self, tree: int, name: str, *, write: bool = False, size: int = 0,
               pipe: bool = False) -> tuple[tuple[bytes, bytes], bytes]:
        """CREATE a file or named pipe; returns the pair and the 16-byte FileId."""
        raw = name.encode("utf-16-le")
        access = 0x0012019F if (write or pipe) else 0x00120089
        attrs = 0 if pipe else 0x80
        disposition = 5 if write else 1  # FILE_OVERWRITE_IF or FILE_OPEN
        req = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, access, attrs, 7, disposition,
                          0x40, 120, len(raw), 0, 0) + (raw or b"\0")
        fid = self.rng.randbytes(8) + self.rng.randbytes(8)
        ft = filetime(self.t)
        alloc = (size + 4095) // 4096 * 4096
        resp = struct.pack("<HBBIQQQQQQII16sII", 89, 0, 0, 2 if write else 1, ft, ft, ft, ft, alloc,
                           0 if write else size, attrs, 0, fid, 0, 0)
        return self._pair(CREATE, req, resp, tree), fid

    def write(self, tree: int, fid: bytes, data: bytes, offset: int) -> tuple[bytes, bytes]:
        """WRITE (MS-SMB2 §2.2.21) of ``data`` at ``offset``."""
        req = struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, fid, 0, 0, 0, 0, 0) + data
        resp = struct.pack("<HHIIHH", 17, 0, len(data), 0, 0, 0)
        return self._pair(WRITE, req, resp, tree)

    def read(self, tree: int, fid: bytes, data: bytes, offset: int, ask: int = CHUNK,
             ) -> tuple[bytes, bytes]:
        """READ (MS-SMB2 §2.2.19) answered with ``data``."""
        req = struct.pack("<HBBIQ16sIIIHH", 49, 0x50, 0, ask, offset, fid, 0, 0, 0, 0, 0) + b"\0"
        resp = struct.pack("<HBBIII", 17, 0x50, 0, len(data), 0, 0) + data
        return self._pair(READ, req, resp, tree)

    def close(self, tree: int, fid: bytes) -> tuple[bytes, bytes]:
        """CLOSE a file id."""
        req = struct.pack("<HHI16s", 24, 0, 0, fid)
        resp = struct.pack("<HHIQQQQQQI", 60, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return self._pair(CLOSE, req, resp, tree)

    def tree_disconnect(self, tree: int) -> tuple[bytes, bytes]:
        """TREE_DISCONNECT."""
        return self._pair(TREE_DISCONNECT, struct.pack("<HH", 4, 0), struct.pack("<HH", 4, 0), tree)

    def logoff(self) -> tuple[bytes, bytes]:
        """LOGOFF the session."""
        return self._pair(LOGOFF, struct.pack("<HH", 4, 0), struct.pack("<HH", 4, 0))


def _rt(pairs: list[tuple[bytes, bytes]], think: int, proc: int) -> list[Step]:
    out: list[Step] = []
    for q, r in pairs:
        out += [(True, q, think), (False, r, proc)]
    return out


def _open(c: Smb2Client, logon: SmbLogon, think: int) -> list[Step]:
    return _rt([c.negotiate()], think, 400) + _rt(c.session_setup(logon), 300, 2500)


def share_probe_steps(c: Smb2Client, logon: SmbLogon, shares: tuple[str, ...] = ("IPC$", "C$"),
                      ) -> list[Step]:
    """Authenticate and, if that works, connect to and leave each share (access checks)."""
    steps = _open(c, logon, 200)
    if not logon.success:
        return steps
    for share in shares:
        pair, tree = c.tree_connect(share)
        steps += _rt([pair, c.tree_disconnect(tree)], 3000, 300)
    return steps + _rt([c.logoff()], 500, 200)


def file_access_steps(c: Smb2Client, logon: SmbLogon, share: str,
                      files: list[tuple[str, bytes, bool]], rng: random.Random) -> list[Step]:
    """A user's share visit: read or write each ``(path, content, is_write)``."""
    steps = _open(c, logon, 300)
    pair, tree = c.tree_connect(share)
    steps += _rt([pair], 300, 400)
    for path, content, is_write in files:
        pair, fid = c.create(tree, path, write=is_write, size=len(content))
        steps += _rt([pair], rng.randrange(2000, 400_000), 600)
        for off in range(0, len(content), CHUNK):
            chunk = content[off:off + CHUNK]
            op = c.write(tree, fid, chunk, off) if is_write else c.read(tree, fid, chunk, off)
            steps += _rt([op], 150, 900)
        steps += _rt([c.close(tree, fid)], 500, 300)
    steps += _rt([c.tree_disconnect(tree), c.logoff()], rng.randrange(5000, 2_000_000), 300)
    return steps


def psexec_steps(c: Smb2Client, logon: SmbLogon, rng: random.Random, exe_name: str, exe: bytes,
                 service: str, machine: str) -> list[Step]:
    """PsExec-style remote service install (as Impacket's psexec does).

    Upload the service binary to ``ADMIN$``, then over the ``svcctl`` pipe of ``IPC$``:
    bind, ROpenSCManagerW, RCreateServiceW, RStartServiceW, RCloseServiceHandle.
    """
    steps = _open(c, logon, 300)
    ipc_pair, ipc = c.tree_connect("IPC$")
    adm_pair, adm = c.tree_connect("ADMIN$")
    steps += _rt([ipc_pair, adm_pair], 400, 500)
    pair, fid = c.create(adm, exe_name, write=True)
    steps += _rt([pair], 600, 700)
    for off in range(0, len(exe), CHUNK):
        steps += _rt([c.write(adm, fid, exe[off:off + CHUNK], off)], 120, 1500)
    steps += _rt([c.close(adm, fid), c.tree_disconnect(adm)], 300, 400)
    pair, pfid = c.create(ipc, "svcctl", pipe=True)
    steps += _rt([pair], 500, 600)
    scm = rpc.scm_handle(rng)
    svc = rpc.scm_handle(rng)
    calls = [
        (rpc.rpc_bind(1, rpc.SVCCTL), rpc.rpc_bind_ack(1, "\\PIPE\\ntsvcs", rng.randrange(1, 1 << 16))),
        (rpc.rpc_request(2, 15, rpc.scm_open_manager(f"\\\\{machine}")),
         rpc.rpc_response(2, scm + b"\0" * 4)),
        (rpc.rpc_request(3, 12, rpc.scm_create_service(scm, service, service, f"%systemroot%\\{exe_name}")),
         rpc.rpc_response(3, b"\0" * 4 + svc + b"\0" * 4)),
        (rpc.rpc_request(4, 19, rpc.scm_start_service(svc)), rpc.rpc_response(4, b"\0" * 4)),
        (rpc.rpc_request(5, 0, rpc.scm_close(svc)), rpc.rpc_response(5, b"\0" * 24)),
        (rpc.rpc_request(6, 0, rpc.scm_close(scm)), rpc.rpc_response(6, b"\0" * 24)),
    ]
    off = 0
    for req, resp in calls:
        steps += _rt([c.write(ipc, pfid, req, 0)], 400, 500)
        steps += _rt([c.read(ipc, pfid, resp, 0, 4280)], 100, 800)
        off += len(req)
    steps += _rt([c.close(ipc, pfid), c.tree_disconnect(ipc), c.logoff()], 800, 300)
    return steps
