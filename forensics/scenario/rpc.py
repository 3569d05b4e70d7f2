"""NTLMSSP, SPNEGO and DCE/RPC messages: the authentication and RPC layers of lateral movement.

NTLMSSP follows MS-NLMP §2.2.1 (NEGOTIATE, CHALLENGE, AUTHENTICATE with an
NTLMv2 response), SPNEGO RFC 4178 §4.2, DCE/RPC connection-oriented PDUs
C706 §12.6 with the MS-RPCE sec_trailer, and the service-control stubs MS-SCMR
§3.1.4 in NDR (C706 §14). Cryptographic values (proofs, keys, MICs, sealed
stubs) are random bytes: the structure is real, the secrets are not.
"""

from __future__ import annotations

import random
import struct
import uuid

from forensics.scenario.protocols import der, der_oid

__all__ = [
    "SVCCTL", "filetime", "ntlm_authenticate", "ntlm_challenge", "ntlm_negotiate",
    "spnego_init", "spnego_resp", "spnego_server_hint",
]

OID_SPNEGO = "1.3.6.1.5.5.2"
OID_NTLMSSP = "1.3.6.1.4.1.311.2.2.10"
NDR = (uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2, 0)
SVCCTL = (uuid.UUID("367abb81-9844-35f1-ad32-98f038001003"), 2, 0)
ISYSTEMACTIVATOR = (uuid.UUID("000001a0-0000-0000-c000-000000000046"), 0, 0)
IWBEMLEVEL1LOGIN = (uuid.UUID("f309ad18-d86a-11d0-a075-00c04fb68820"), 0, 0)
IWBEMSERVICES = (uuid.UUID("9556dc99-828c-11cf-a37e-00aa003240c7"), 0, 0)
_VERSION = struct.pack("<BBHBBBB", 10, 0, 19041, 0, 0, 0, 15)  # Windows 10 2004, NTLM rev 15
_FLAGS_NEG = 0xE2088297
_FLAGS_CHAL = 0xE2898215
_FLAGS_AUTH = 0xE2888215


def filetime(t_us: int) -> int:
    """Windows FILETIME (100 ns ticks since 1601) of a capture time."""
    return t_us * 10 + 116_444_736_000_000_000


def _u16(s: str) -> bytes:
    return s.encode("utf-16-le")


# ---- NTLMSSP (MS-NLMP) ----------------------------------------------------------


def ntlm_negotiate() -> bytes:
    """NEGOTIATE_MESSAGE (MS-NLMP §2.2.1.1), no domain or workstation supplied."""
    return b"NTLMSSP\0" + struct.pack("<II", 1, _FLAGS_NEG) + b"\0" * 16 + _VERSION


def _av_pairs(domain: str, computer: str, dns_domain: str, t_us: int) -> bytes:
    out = b""
    for av_id, val in ((2, domain), (1, computer), (4, dns_domain),
                       (3, f"{computer.lower()}.{dns_domain}"), (5, dns_domain)):
        raw = _u16(val)
        out += struct.pack("<HH", av_id, len(raw)) + raw
    out += struct.pack("<HHQ", 7, 8, filetime(t_us))
    return out + struct.pack("<HH", 0, 0)


def ntlm_challenge(rng: random.Random, domain: str, computer: str, dns_domain: str,
                   t_us: int) -> tuple[bytes, bytes]:
    """CHALLENGE_MESSAGE (MS-NLMP §2.2.1.2). Returns it and its target info."""
    target = _u16(domain)
    info = _av_pairs(domain, computer, dns_domain, t_us)
    off = 56
    msg = (b"NTLMSSP\0" + struct.pack("<I", 2) + struct.pack("<HHI", len(target), len(target), off)
           + struct.pack("<I", _FLAGS_CHAL) + rng.randbytes(8) + b"\0" * 8
           + struct.pack("<HHI", len(info), len(info), off + len(target)) + _VERSION)
    return msg + target + info, info


def ntlm_authenticate(rng: random.Random, domain: str, user: str, workstation: str,
                      target_info: bytes, t_us: int, spn: str) -> bytes:
    """AUTHENTICATE_MESSAGE (MS-NLMP §2.2.1.3) with an NTLMv2 response and a MIC."""
    extra = struct.pack("<HHI", 6, 4, 2)  # MsvAvFlags: MIC present
    tn = _u16(spn)
    extra += struct.pack("<HH", 9, len(tn)) + tn  # MsvAvTargetName
    pairs = target_info[:-4] + extra + struct.pack("<HH", 0, 0)
    blob = (struct.pack("<BBHI", 1, 1, 0, 0) + struct.pack("<Q", filetime(t_us)) + rng.randbytes(8)
            + b"\0" * 4 + pairs + b"\0" * 4)
    nt = rng.randbytes(16) + blob
    lm = b"\0" * 24
    fields = [_u16(domain), _u16(user), _u16(workstation), lm, nt, rng.randbytes(16)]
    off = 88
    hdr = b"NTLMSSP\0" + struct.pack("<I", 3)
    descr = []
    for f in fields:
        descr.append(struct.pack("<HHI", len(f), len(f), off))
        off += len(f)
    # Field order in the header: LM, NT, domain, user, workstation, session key.
    hdr += descr[3] + descr[4] + descr[0] + descr[1] + descr[2] + descr[5]
    hdr += struct.pack("<I", _FLAGS_AUTH) + _VERSION + rng.randbytes(16)
    return hdr + b"".join(fields)


# ---- SPNEGO (RFC 4178) ------------------------------------------------------------


def spnego_server_hint() -> bytes:
    """The negTokenInit a server offers in its SMB2 NEGOTIATE response."""
    mechs = der(0xA0, der(0x30, der_oid(OID_NTLMSSP)))
    return der(0x60, der_oid(OID_SPNEGO) + der(0xA0, der(0x30, mechs)))


def spnego_init(token: bytes) -> bytes:
    """GSS-API InitialContextToken wrapping a negTokenInit that carries ``token``."""
    body = der(0xA0, der(0x30, der_oid(OID_NTLMSSP))) + der(0xA2, der(0x04, token))
    return der(0x60, der_oid(OID_SPNEGO) + der(0xA0, der(0x30, body)))


def spnego_resp(token: bytes | None = None, state: int | None = None, mech: bool = False) -> bytes:
    """A negTokenResp: negState (0 completed, 1 incomplete), supportedMech, responseToken."""
    body = b""
    if state is not None:
        body += der(0xA0, der(0x0A, bytes([state])))
    if mech:
        body += der(0xA1, der_oid(OID_NTLMSSP))
    if token is not None:
        body += der(0xA2, der(0x04, token))
    return der(0xA1, der(0x30, body))


# ---- DCE/RPC connection-oriented PDUs (C706 §12.6) ---------------------------------

PT_REQUEST, PT_RESPONSE, PT_BIND, PT_BIND_ACK, PT_ALTER, PT_ALTER_RESP, PT_AUTH3 = 0, 2, 11, 12, 14, 15, 16
AUTH_WINNT = 10  # NTLMSSP
LEVEL_PRIVACY = 6


def _pdu(ptype: int, call_id: int, body: bytes, auth: bytes = b"", pad: int = 0,
         flags: int = 0x03) -> bytes:
    # MS-RPCE §2.2.2.11: the sec_trailer follows the (padded) body, then the auth value.
    trailer = struct.pack("<BBBBI", AUTH_WINNT, LEVEL_PRIVACY, pad, 0, 0) + auth if auth else b""
    frag = 16 + len(body) + len(trailer)
    hdr = struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, b"\x10\0\0\0", frag, len(auth), call_id)
    return hdr + body + trailer


def _syntax(s: tuple[uuid.UUID, int, int]) -> bytes:
    return s[0].bytes_le + struct.pack("<HH", s[1], s[2])


def rpc_bind(call_id: int, iface: tuple[uuid.UUID, int, int], auth: bytes | None = None,
             alter: bool = False) -> bytes:
    """Bind (or alter_context) offering one context with the NDR transfer syntax."""
    body = struct.pack("<HHI", 4280, 4280, 0) + struct.pack("<BBH", 1, 0, 0)
    body += struct.pack("<HBB", 0, 1, 0) + _syntax(iface) + _syntax(NDR)
    return _pdu(PT_ALTER if alter else PT_BIND, call_id, body, auth or b"")


def rpc_bind_ack(call_id: int, sec_addr: str, assoc: int, auth: bytes | None = None,
                 alter: bool = False) -> bytes:
    """bind_ack (or alter_context_resp) accepting the context with NDR."""
    addr = sec_addr.encode() + b"\0" if sec_addr else b""
    body = struct.pack("<HHI", 4280, 4280, assoc) + struct.pack("<H", len(addr)) + addr
    body += b"\0" * ((-(16 + len(body))) % 4)
    body += struct.pack("<BBH", 1, 0, 0) + struct.pack("<HH", 0, 0) + _syntax(NDR)
    return _pdu(PT_ALTER_RESP if alter else PT_BIND_ACK, call_id, body, auth or b"")


def rpc_auth3(call_id: int, auth: bytes) -> bytes:
    """rpc_auth_3 carrying the NTLMSSP AUTHENTICATE message (MS-RPCE §2.2.2.10)."""
    return _pdu(PT_AUTH3, call_id, b"\0" * 4, auth)


def _verifier(rng: random.Random, seq: int) -> bytes:
    # NTLMSSP_MESSAGE_SIGNATURE with extended session security (MS-NLMP §2.2.2.9.1).
    return struct.pack("<I", 1) + rng.randbytes(8) + struct.pack("<I", seq)


def rpc_request(call_id: int, opnum: int, stub: bytes, rng: random.Random | None = None,
                seq: int = 0, obj: bytes | None = None) -> bytes:
    """Request PDU; with ``rng`` the stub is sealed (random bytes, 16-byte aligned)."""
    body = struct.pack("<IHH", len(stub), 0, opnum) + (obj or b"")
    flags = 0x03 | (0x80 if obj else 0)
    if rng is None:
        return _pdu(PT_REQUEST, call_id, body + stub, flags=flags)
    pad = (-len(stub)) % 16
    sealed = rng.randbytes(len(stub) + pad)
    return _pdu(PT_REQUEST, call_id, body + sealed, _verifier(rng, seq), pad, flags)


def rpc_response(call_id: int, stub: bytes, rng: random.Random | None = None, seq: int = 0) -> bytes:
    """Response PDU; with ``rng`` the stub is sealed."""
    body = struct.pack("<IHBB", len(stub), 0, 0, 0)
    if rng is None:
        return _pdu(PT_RESPONSE, call_id, body + stub)
    pad = (-len(stub)) % 16
    return _pdu(PT_RESPONSE, call_id, body + rng.randbytes(len(stub) + pad), _verifier(rng, seq), pad)


# ---- MS-SCMR stubs in NDR ---------------------------------------------------------


def _wstr(s: str) -> bytes:
    """Conformant varying UTF-16 string with its NUL, padded to 4 bytes (C706 §14.3.4)."""
    raw = _u16(s + "\0")
    n = len(s) + 1
    out = struct.pack("<III", n, 0, n) + raw
    return out + b"\0" * ((-len(out)) % 4)


def _unique_wstr(s: str | None, ref: int) -> bytes:
    return struct.pack("<I", 0) if s is None else struct.pack("<I", ref) + _wstr(s)


def scm_open_manager(machine: str) -> bytes:
    """ROpenSCManagerW (opnum 15) request stub: SC_MANAGER_ALL_ACCESS."""
    return _unique_wstr(machine, 0x00020000) + struct.pack("<II", 0, 0x000F003F)


def scm_handle(rng: random.Random) -> bytes:
    """A fresh SC_RPC_HANDLE (context handle: attributes + UUID)."""
    return b"\0" * 4 + rng.randbytes(16)


def scm_create_service(handle: bytes, name: str, display: str, binary_path: str) -> bytes:
    """RCreateServiceW (opnum 12) request: own-process service, demand start."""
    return (handle + _wstr(name) + _unique_wstr(display, 0x00020000)
            + struct.pack("<IIII", 0x000F01FF, 0x10, 3, 0) + _wstr(binary_path)
            + struct.pack("<IIIIIII", 0, 0, 0, 0, 0, 0, 0))


def scm_start_service(handle: bytes) -> bytes:
    """RStartServiceW (opnum 19) request: no arguments."""
    return handle + struct.pack("<II", 0, 0)


def scm_close(handle: bytes) -> bytes:
    """RCloseServiceHandle (opnum 0) request."""
    return handle
