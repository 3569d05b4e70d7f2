"""Connection tracking with Zeek's conn.log semantics, compiled with numba.

One call processes the decoded rows of a chunk against a flow table that lives
across chunks (struct-of-arrays plus an open-addressing hash index). What it
reproduces of Zeek (see ``tests/test_zeek_conn.py`` for what we compare and
the known differences):

* keying by the canonical 5-tuple, VLAN not part of the key; ICMP keyed by
  (type, counterpart type or code); other IP protocols as ``unknown_transport``;
* originator flipping at creation by ``likely_server_ports`` (TCP not starting
  with a pure SYN, UDP), with '^' in the history;
* the TCP endpoint state machine (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL,
  ESTABLISHED, CLOSED, RESET), ``conn_state`` and the history letters
  S H A D F R I Q T W with Zeek's once-only and scaled (1, 10, 100...) rules;
* TCP sizes from sequence numbers and peer ACKs (``TCP_Endpoint::Size``),
  UDP sizes from the UDP length field, ICMP from the message length;
* splitting by inactivity (UDP timeout while in handshake states), the attempt
  timer, the close delay, the linger timer, port reuse (``IsReuse``) and the
  DNS analyzer's 10 s expiry of UDP connections on DNS ports;
* 'X' once a connection's carrying tunnel changed more than
  ``Tunnel::max_changes_per_connection`` times.

Timers are evaluated at their due time; Zeek runs them at the first packet (of
any connection) at or after it, which only differs in very sparse captures.

Not reproduced here: checksum validation ('C'), reassembly gaps ('G'; the
``missed_bytes`` here is a lower-bound estimate), the mid-connection SYN/SYN-ACK
reversal flip, and the analyzer limits behind other 'X' letters.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from forensics.net import _decode as d

# ---- per-flow int64 fields
FI_PROTO, FI_OP, FI_RP, FI_START_TS, FI_LAST_TS, FI_FIRST_FRAME, FI_LAST_FRAME = range(7)
FI_DEPTH, FI_VLAN, FI_VLAN2, FI_TUN, FI_OPKTS, FI_RPKTS, FI_OIPB, FI_RIPB = range(7, 15)
FI_OLEN, FI_RLEN, FI_HSEEN, FI_HLEN, FI_DONE, FI_TIMEOUT, FI_ATTEMPT_AT = range(15, 22)
FI_DELETE_AT, FI_FLIPPED, FI_ALIVE, FI_TRANS, FI_DNS_AT, FI_ENCAP, FI_TCHG = range(22, 29)
EB = 29  # first endpoint field
E_STATE, E_PREV, E_START, E_LAST, E_LASTW, E_ACK, E_ACKW, E_FINCNT, E_RSTCNT = range(9)
E_DIDCLOSE, E_HLSYN, E_HLFIN, E_HLRST, E_RXCNT, E_RXTH, E_ZWCNT, E_ZWTH = range(9, 17)
E_HOLES, E_FILLS, E_SEEN = range(17, 20)
EN = 20
NF = EB + 2 * EN
HMAX = 48  # history letters kept per connection

# Transport classes (Zeek's transport_proto).
T_TCP, T_UDP, T_ICMP, T_UNKNOWN = 1, 2, 3, 4
TRANSPORT_NAMES = {T_TCP: "tcp", T_UDP: "udp", T_ICMP: "icmp", T_UNKNOWN: "unknown_transport"}

# TCP endpoint states (TCP_Endpoint.h).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# History masks (TCP_Endpoint.h); the responder's are shifted by 16.
H_SYN, H_FIN, H_RST, H_FINRST, H_DATA, H_ACK, H_MULTI = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

S = 1_000_000_000  # ns per second
UDP_TIMEOUT = 60 * S
TCP_TIMEOUT = 300 * S
ICMP_TIMEOUT = 60 * S
UNKNOWN_TIMEOUT = 60 * S
TCP_ATTEMPT_DELAY = 5 * S
TCP_CLOSE_DELAY = 5 * S
TCP_SYN_TIMEOUT = 5 * S
TCP_SESSION_TIMER = 6 * S
TCP_LINGER = 5 * S
DNS_SESSION_TIMEOUT = 10 * S
DNS_PORT = 2  # bit in the likely-UDP port mask: Zeek's DNS analyzer takes this resp port
MAX_TUNNEL_CHANGES = 5  # Tunnel::max_changes_per_connection
H_UNKNOWN = 0x400  # HIST_UNKNOWN_PKT ('X'): one bit for both directions

U32 = 1 << 32


def new_state(capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Empty flow arrays (ints, addresses, history) and hash index for ``capacity`` flows."""
    fi = np.zeros((capacity, NF), np.int64)
    fa = np.zeros((capacity, 4), np.uint64)
    fh = np.zeros((capacity, HMAX), np.uint8)
    ht = np.full(_table_size(capacity), -1, np.int64)
    return fi, fa, fh, ht


def _table_size(capacity: int) -> int:
    n = 1024
    while n < capacity * 2:
        n *= 2
    return n


@njit(cache=True, inline="always")
def _hash(a0: np.uint64, a1: np.uint64, p0: int, b0: np.uint64, b1: np.uint64, p1: int,
          proto: int) -> np.uint64:
    # Symmetric in the two endpoints so both directions hash alike.
    m = np.uint64(0x9E3779B97F4A7C15)
    ha = (a0 * m) ^ (a1 + np.uint64(p0) * np.uint64(0x100000001B3))
    hb = (b0 * m) ^ (b1 + np.uint64(p1) * np.uint64(0x100000001B3))
    h = (ha ^ hb) + (ha * hb) + np.uint64(proto)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return h


@njit(cache=True, nogil=True)
def rebuild_index(fi: np.ndarray, fa: np.ndarray, n: int, ht: np.ndarray) -> None:
    """Re-insert flows ``0..n-1`` into a cleared hash index."""
    ht[:] = -1
    mask = np.uint64(ht.shape[0] - 1)
    for f in range(n):
        if fi[f, FI_ALIVE] == 0:
            continue
        h = _hash(fa[f, 0], fa[f, 1], fi[f, FI_OP], fa[f, 2], fa[f, 3], fi[f, FI_RP],
                  fi[f, FI_PROTO])
        i = h & mask
        while ht[i] >= 0:
            i = (i + np.uint64(1)) & mask
        ht[i] = f


@njit(cache=True, inline="always")
def _lower(c: int) -> int:
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True)
def _add_hist(fi: np.ndarray, fh: np.ndarray, f: int, code: int) -> None:
    n = fi[f, FI_HLEN]
    if n < HMAX:
        fh[f, n] = code
        fi[f, FI_HLEN] = n + 1


@njit(cache=True, nogil=True)
def _check_hist(fi: np.ndarray, fh: np.ndarray, f: int, is_orig: bool, mask: int,
                code: int) -> bool:
    """Zeek's CheckHistory: add the letter the first time; True if seen before."""
    if not is_orig:
        mask <<= 16
        code = _lower(code)
    if fi[f, FI_HSEEN] & mask:
        return True
    fi[f, FI_HSEEN] |= mask
    _add_hist(fi, fh, f, code)
    return False


@njit(cache=True, nogil=True)
def _scaled_hist(fi: np.ndarray, fh: np.ndarray, f: int, e: int, is_orig: bool, cnt: int,
                 th: int, code: int) -> None:
    """Zeek's ScaledHistoryEntry: the letter at the 1st, 10th, 100th... occurrence."""
    fi[f, e + cnt] += 1
    if fi[f, e + th] == 0:
        fi[f, e + th] = 1
    if fi[f, e + cnt] == fi[f, e + th]:
        _add_hist(fi, fh, f, code if is_orig else _lower(code))
        fi[f, e + th] *= 10


@njit(cache=True, inline="always")
def _sdelta(a: int, b: int) -> int:
    """seq_delta: (int32)(a - b)."""
    x = (a - b) & 0xFFFFFFFF
    return x - U32 if x >= 0x80000000 else x


@njit(cache=True, nogil=True)
def _new_flow(fi: np.ndarray, fa: np.ndarray, fh: np.ndarray, f: int, rows: np.ndarray,
              addr: np.ndarray, r: int, ts: int, frame: int, trans: int, flip: bool) -> None:
    fi[f, :] = 0
    fh[f, :] = 0
    if flip:
        fa[f, 0], fa[f, 1] = addr[r, d.A_DST_HI], addr[r, d.A_DST_LO]
        fa[f, 2], fa[f, 3] = addr[r, d.A_SRC_HI], addr[r, d.A_SRC_LO]
        fi[f, FI_OP], fi[f, FI_RP] = rows[r, d.F_DPORT], rows[r, d.F_SPORT]
    else:
        fa[f, 0], fa[f, 1] = addr[r, d.A_SRC_HI], addr[r, d.A_SRC_LO]
        fa[f, 2], fa[f, 3] = addr[r, d.A_DST_HI], addr[r, d.A_DST_LO]
        fi[f, FI_OP], fi[f, FI_RP] = rows[r, d.F_SPORT], rows[r, d.F_DPORT]
    fi[f, FI_PROTO] = rows[r, d.F_PROTO]
    fi[f, FI_TRANS] = trans
    fi[f, FI_START_TS] = ts
    fi[f, FI_LAST_TS] = ts
    fi[f, FI_FIRST_FRAME] = frame
    fi[f, FI_LAST_FRAME] = frame
    fi[f, FI_DEPTH] = rows[r, d.F_DEPTH]
    fi[f, FI_VLAN] = rows[r, d.F_VLAN]
    fi[f, FI_VLAN2] = rows[r, d.F_VLAN2]
    fi[f, FI_TUN] = rows[r, d.F_TUNNEL]
    fi[f, FI_OLEN] = -1
    fi[f, FI_RLEN] = -1
    fi[f, FI_ATTEMPT_AT] = -1
    fi[f, FI_DELETE_AT] = -1
    fi[f, FI_DNS_AT] = -1
    fi[f, FI_ENCAP] = -1
    fi[f, FI_ALIVE] = 1
    fi[f, FI_TIMEOUT] = (UDP_TIMEOUT if trans in (T_TCP, T_UDP) else
                         ICMP_TIMEOUT if trans == T_ICMP else UNKNOWN_TIMEOUT)
    if flip:
        fi[f, FI_FLIPPED] = 1
        _add_hist(fi, fh, f, 94)  # '^'


@njit(cache=True, nogil=True)
def _expired(fi: np.ndarray, f: int, t: int) -> bool:
    """Would one of Zeek's timers have removed flow ``f`` before time ``t``?"""
    last = fi[f, FI_LAST_TS]
    if t >= last + fi[f, FI_TIMEOUT]:
        return True
    at = fi[f, FI_DNS_AT]
    if 0 <= at <= t:
        # DNS_Analyzer::ExpireTimer (UDP only) fires every dns_session_timeout and
        # removes the connection once it has been idle for that long minus 1 s.
        # (Closed form: a loop here makes LLVM emit a 128-bit division.)
        need = last + DNS_SESSION_TIMEOUT - S
        fire = at if at >= need else at + (need - at + DNS_SESSION_TIMEOUT - 1) // (
            DNS_SESSION_TIMEOUT) * DNS_SESSION_TIMEOUT
        if fire <= t:
            return True
        fi[f, FI_DNS_AT] = at + ((t - at) // DNS_SESSION_TIMEOUT + 1) * DNS_SESSION_TIMEOUT
    if fi[f, FI_TRANS] != T_TCP:
        return False
    o, rr = EB, EB + EN
    if fi[f, FI_DELETE_AT] >= 0 and t >= fi[f, FI_DELETE_AT]:
        return True
    os_, rs = fi[f, o + E_STATE], fi[f, rr + E_STATE]
    if (fi[f, FI_ATTEMPT_AT] >= 0 and t >= fi[f, FI_ATTEMPT_AT]
            and os_ in (SYN_SENT, SYN_ACK_SENT) and rs == INACTIVE):
        return True
    # ExpireTimer: fires at start+5s, then every 6s; removes lingering half-closed flows.
    odc, rdc = fi[f, o + E_DIDCLOSE], fi[f, rr + E_DIDCLOSE]
    lingering = (odc or rdc) and ((odc and rdc) or os_ in (RESET, INACTIVE)
                                  or rs in (RESET, INACTIVE))
    if lingering or (os_ == INACTIVE and rs == INACTIVE):
        first = fi[f, FI_START_TS] + TCP_SYN_TIMEOUT
        need = last + TCP_LINGER  # fires only when last + linger < fire time
        if first > need:
            fire = first
        else:
            k = (need - first) // TCP_SESSION_TIMER + 1
            fire = first + k * TCP_SESSION_TIMER
        if fire <= t:
            return True
    return False


@njit(cache=True, nogil=True)
def _is_reuse(fi: np.ndarray, f: int, flags: int, seq: int) -> bool:
    """Zeek's TCPSessionAdapter::IsReuse for a packet of an existing connection."""
    if not (flags & SYN):
        return False
    o, rr = EB, EB + EN
    co = o
    if flags & ACK:
        if fi[f, o + E_STATE] != INACTIVE:
            return False
        co = rr
    closed = fi[f, o + E_DIDCLOSE] or fi[f, rr + E_DIDCLOSE]
    if not closed:
        if seq == fi[f, co + E_START]:
            return False
        if (not (flags & ACK) and fi[f, co + E_STATE] == SYN_ACK_SENT
                and fi[f, rr + E_STATE] == INACTIVE and seq == fi[f, rr + E_START]):
            return False
    return True


@njit(cache=True, nogil=True)
def _set_state(fi: np.ndarray, f: int, e: int, p: int, st: int) -> None:
    cur = fi[f, e + E_STATE]
    if st == cur:
        return
    # Leaving the handshake switches the inactivity timeout from UDP's to TCP's.
    hs_cur = cur <= SYN_ACK_SENT
    hs_peer = fi[f, p + E_STATE] <= SYN_ACK_SENT
    if st > SYN_ACK_SENT and hs_cur and hs_peer:
        fi[f, FI_TIMEOUT] = TCP_TIMEOUT
    fi[f, e + E_PREV] = cur
    fi[f, e + E_STATE] = st


@njit(cache=True, nogil=True)
def _tcp(fi: np.ndarray, fh: np.ndarray, f: int, is_orig: bool, t: int, flags: int,
         seq: int, ack: int, win: int, length: int) -> None:
    """One TCP packet through Zeek's TCPSessionAdapter::Process (minus reassembly)."""
    e = EB if is_orig else EB + EN
    p = EB + EN if is_orig else EB
    syn, fin, rst, has_ack = flags & SYN, flags & FIN, flags & RST, flags & ACK
    seg_len = length + (1 if syn else 0) + (1 if fin else 0)
    if rst:
        seg_len -= length
    st = fi[f, e + E_STATE]
    # init_endpoint
    reinit = False
    if st == INACTIVE:
        if syn:
            fi[f, e + E_START] = seq
            fi[f, e + E_ACK] = seq
            fi[f, e + E_LAST] = (seq + seg_len) & 0xFFFFFFFF
        else:
            fi[f, e + E_START] = (seq - 1) & 0xFFFFFFFF
            fi[f, e + E_ACK] = (seq - 1) & 0xFFFFFFFF
            fi[f, e + E_LAST] = seq
        reinit = True
    elif syn and ((st in (SYN_SENT, SYN_ACK_SENT) and seq != fi[f, e + E_START])
                  or st in (ESTABLISHED, PARTIAL)
                  or (st == RESET and fi[f, e + E_PREV] == INACTIVE)):
        fi[f, e + E_START] = seq
        fi[f, e + E_ACK] = seq
        fi[f, e + E_LAST] = (seq + seg_len) & 0xFFFFFFFF
        reinit = True
    if reinit:
        fi[f, e + E_LASTW] = 0
        fi[f, e + E_ACKW] = 0
    fi[f, e + E_SEEN] = 1
    # rel_seq (only equality matters, for history)
    last = fi[f, e + E_LAST]
    wraps = fi[f, e + E_LASTW]
    dl = _sdelta(seq, last)
    if dl < 0:
        if wraps and seq > last:
            wraps -= 1
    elif dl > 0 and seq < last:
        wraps += 1
    rel = _sdelta(seq, fi[f, e + E_START]) if wraps == 0 else wraps * U32 + seq - fi[f, e + E_START]
    # update_history
    bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits > 1:
        if fin and rst:
            _check_hist(fi, fh, f, is_orig, H_FINRST, 73)  # I
        else:
            _check_hist(fi, fh, f, is_orig, H_MULTI, 81)  # Q
    elif bits == 1:
        if syn:
            code = 72 if has_ack else 83  # H / S
            if _check_hist(fi, fh, f, is_orig, H_SYN, code) and rel != fi[f, e + E_HLSYN]:
                _add_hist(fi, fh, f, code if is_orig else _lower(code))
            fi[f, e + E_HLSYN] = rel
        if fin:
            if _check_hist(fi, fh, f, is_orig, H_FIN, 70) and rel + length != fi[f, e + E_HLFIN]:
                _add_hist(fi, fh, f, 70 if is_orig else 102)
            fi[f, e + E_HLFIN] = rel + length
        if rst:
            if _check_hist(fi, fh, f, is_orig, H_RST, 82) and rel != fi[f, e + E_HLRST]:
                _add_hist(fi, fh, f, 82 if is_orig else 114)
            fi[f, e + E_HLRST] = rel
    elif length:
        _check_hist(fi, fh, f, is_orig, H_DATA, 68)  # D
    elif has_ack:
        _check_hist(fi, fh, f, is_orig, H_ACK, 65)  # A
    # update_window
    if win == 0 and not rst and fi[f, p + E_STATE] != CLOSED and fi[f, e + E_STATE] != RESET:
        _scaled_hist(fi, fh, f, e, is_orig, E_ZWCNT, E_ZWTH, 87)  # W
    if not (fi[f, EB + E_DIDCLOSE] and fi[f, EB + EN + E_DIDCLOSE]):
        fi[f, FI_LAST_TS] = t
    if fin:
        fi[f, e + E_FINCNT] += 1
    if rst:
        fi[f, e + E_RSTCNT] += 1
    # ACK processing: the peer's ack_seq
    if has_ack:
        if fi[f, p + E_STATE] == INACTIVE and not fi[f, p + E_SEEN]:
            a1 = (ack - 1) & 0xFFFFFFFF
            fi[f, p + E_START] = a1
            fi[f, p + E_ACK] = a1
            fi[f, p + E_LAST] = a1
        elif not rst:
            da = _sdelta(ack, fi[f, p + E_ACK])
            if da > 0 and not (ack == 0 and da > 1048576):
                if ack < fi[f, p + E_ACK]:
                    fi[f, p + E_ACKW] += 1
                fi[f, p + E_ACK] = ack
    # update_last_seq, retransmissions ('T') and the gap estimate
    new_last = (seq + seg_len) & 0xFFFFFFFF
    dlast = _sdelta(new_last, fi[f, e + E_LAST])
    if (syn or rst) and (dlast > 1048576 or dlast < -1048576):
        pass
    elif fin and fi[f, e + E_LAST] == ((fi[f, e + E_START] + 1) & 0xFFFFFFFF):
        if new_last < fi[f, e + E_LAST]:
            fi[f, e + E_LASTW] += 1
        fi[f, e + E_LAST] = new_last
    elif fi[f, e + E_STATE] == RESET:
        pass
    elif dlast > 0:
        hole = _sdelta(seq, fi[f, e + E_LAST])
        if hole > 0 and length > 0 and not syn:
            fi[f, e + E_HOLES] += hole
        if new_last < fi[f, e + E_LAST]:
            fi[f, e + E_LASTW] += 1
        fi[f, e + E_LAST] = new_last
    elif length > 0:
        fi[f, e + E_FILLS] += length
        _scaled_hist(fi, fh, f, e, is_orig, E_RXCNT, E_RXTH, 84)  # T
    # UpdateStateMachine
    st = fi[f, e + E_STATE]
    pst = fi[f, p + E_STATE]
    do_close = False
    if st == INACTIVE:
        if syn:
            if is_orig:
                _set_state(fi, f, e, p, SYN_ACK_SENT if has_ack else SYN_SENT)
                if fi[f, FI_ATTEMPT_AT] < 0:
                    fi[f, FI_ATTEMPT_AT] = t + TCP_ATTEMPT_DELAY
            else:
                if pst == SYN_SENT:
                    _set_state(fi, f, p, e, ESTABLISHED)
                _set_state(fi, f, e, p, ESTABLISHED)
        if fin:
            _set_state(fi, f, e, p, CLOSED)
            do_close = True
        if rst:
            _set_state(fi, f, e, p, RESET)
            do_close = True
        if fi[f, e + E_STATE] == INACTIVE:
            if not is_orig and length == 0 and fi[f, EB + E_STATE] == SYN_SENT:
                pass
            elif has_ack and pst == ESTABLISHED:
                _set_state(fi, f, e, p, ESTABLISHED)
            else:
                _set_state(fi, f, e, p, PARTIAL)
    elif st in (SYN_SENT, SYN_ACK_SENT):
        if fin:
            _set_state(fi, f, e, p, CLOSED)
            do_close = True
        if rst:
            _set_state(fi, f, e, p, RESET)
            do_close = True
    elif st in (ESTABLISHED, PARTIAL):
        if syn and not has_ack and st == PARTIAL and pst == INACTIVE:
            _set_state(fi, f, e, p, SYN_SENT)
        if fin and not rst:
            _set_state(fi, f, e, p, CLOSED)
            if pst == RESET and fi[f, p + E_PREV] == CLOSED:
                _set_state(fi, f, p, e, CLOSED)
            do_close = True
        if rst:
            _set_state(fi, f, e, p, RESET)
            do_close = True
    elif st == CLOSED and rst and pst != CLOSED:
        _set_state(fi, f, e, p, RESET)
        if not fi[f, e + E_DIDCLOSE]:
            do_close = True
    if do_close:
        fi[f, e + E_DIDCLOSE] = 1
        if (fi[f, e + E_STATE] == RESET or fi[f, p + E_DIDCLOSE]
                or fi[f, p + E_STATE] == INACTIVE):
            fi[f, FI_DELETE_AT] = fi[f, FI_LAST_TS] + TCP_CLOSE_DELAY


@njit(cache=True, nogil=True)
def track(
    rows: np.ndarray, addr: np.ndarray, nrows: int, ts: np.ndarray, frames: np.ndarray,
    fi: np.ndarray, fa: np.ndarray, fh: np.ndarray, ht: np.ndarray, nflows: int,
    likely_tcp: np.ndarray, likely_udp: np.ndarray,
    out_fid: np.ndarray, out_orig: np.ndarray, done: np.ndarray,
) -> tuple[int, int, int]:
    """Feed decoded rows to the flow table.

    Args:
        rows: decoded rows (see :mod:`forensics.net._decode`).
        addr: their addresses.
        nrows: rows to process.
        ts: per-frame timestamps (ns).
        frames: per-frame 1-based frame numbers.
        fi: the flow table's int fields.
        fa: its addresses.
        fh: its history letters.
        ht: its hash index.
        nflows: flows in use (``0..nflows-1``).
        likely_tcp: 65536-entry mask of Zeek's likely server ports for TCP.
        likely_udp: the same for UDP; bit 1 (``DNS_PORT``) marks DNS analyzer ports.
        out_fid: receives each row's flow id (first_frame * 2 + depth), -1 for none.
        out_orig: receives 1 when the row was sent by the originator.
        done: receives the indices of flows that ended (split, timed out).

    Returns:
        (rows processed, flows in use, number of entries in ``done``). Stops early
        when the flow arrays or ``done`` are full; the caller grows them and calls
        again from the returned row.
    """
    cap = fi.shape[0]
    mask = np.uint64(ht.shape[0] - 1)
    ndone = 0
    for r in range(nrows):
        out_fid[r] = -1
        out_orig[r] = 0
        proto = rows[r, d.F_PROTO]
        if rows[r, d.F_IPV] == 0 or proto < 0:
            continue
        if rows[r, d.F_FRAG] & 1:
            continue  # an unreassembled fragment: counted once reassembled
        err = rows[r, d.F_ERR]
        if proto == 6:
            trans = T_TCP
        elif proto == 17:
            trans = T_UDP
        elif proto == 1 or proto == 58:
            trans = T_ICMP
        elif proto == 4 or proto == 41 or proto == 47 or proto == 2 or proto == 59:
            continue  # tunnels, IGMP and IPv6 no-next-header: no connection in Zeek
        else:
            trans = T_UNKNOWN
        if trans != T_UNKNOWN and (err == d.ERR_TRUNC_L4 or err == d.ERR_IP_HDR
                                   or err == d.ERR_IP_LEN or err == d.ERR_IP6_EXT):
            continue
        if trans == T_UNKNOWN:
            if err != 0:
                continue
            rows[r, d.F_SPORT] = proto
            rows[r, d.F_DPORT] = proto
        if nflows >= cap or ndone >= done.shape[0]:
            return r, nflows, ndone
        i_frame = rows[r, d.F_FRAME]
        t = ts[i_frame]
        sp, dp = rows[r, d.F_SPORT], rows[r, d.F_DPORT]
        s0, s1 = addr[r, d.A_SRC_HI], addr[r, d.A_SRC_LO]
        d0, d1 = addr[r, d.A_DST_HI], addr[r, d.A_DST_LO]
        h = _hash(s0, s1, sp, d0, d1, dp, proto)
        i = h & mask
        f = -1
        while ht[i] >= 0:
            g = ht[i]
            if fi[g, FI_PROTO] == proto and fi[g, FI_ALIVE]:
                if (fa[g, 0] == s0 and fa[g, 1] == s1 and fi[g, FI_OP] == sp
                        and fa[g, 2] == d0 and fa[g, 3] == d1 and fi[g, FI_RP] == dp):
                    f = g
                    break
                if (fa[g, 0] == d0 and fa[g, 1] == d1 and fi[g, FI_OP] == dp
                        and fa[g, 2] == s0 and fa[g, 3] == s1 and fi[g, FI_RP] == sp):
                    f = g
                    break
            i = (i + np.uint64(1)) & mask
        flags = rows[r, d.F_FLAGS]
        if f >= 0:
            split = _expired(fi, f, t)
            if not split and trans == T_TCP:
                split = _is_reuse(fi, f, flags, rows[r, d.F_SEQ])
            if split:
                fi[f, FI_ALIVE] = 0
                done[ndone] = f
                ndone += 1
                slot = i
                f = -1
            else:
                slot = i
        else:
            slot = i
        if f < 0:
            flip = False
            if trans == T_TCP:
                if not ((flags & SYN) and not (flags & ACK)) and likely_tcp[sp]:
                    flip = (not (flags & SYN) and sp < dp) if likely_tcp[dp] else True
            elif trans == T_UDP:
                flip = bool(likely_udp[sp] & 1) and not (likely_udp[dp] & 1)
            if flip and d0 == 0 and d1 == np.uint64(0xFFFFFFFFFFFF):
                flip = False  # never towards the IPv4 broadcast address
            f = nflows
            nflows += 1
            _new_flow(fi, fa, fh, f, rows, addr, r, t, frames[i_frame], trans, flip)
            if trans == T_UDP and likely_udp[fi[f, FI_RP]] & DNS_PORT:
                fi[f, FI_DNS_AT] = t + DNS_SESSION_TIMEOUT
            ht[slot] = f
        is_orig = (fa[f, 0] == s0 and fa[f, 1] == s1 and fi[f, FI_OP] == sp)
        if fa[f, 0] == fa[f, 2] and fa[f, 1] == fa[f, 3] and fi[f, FI_OP] == fi[f, FI_RP]:
            is_orig = True
        out_fid[r] = fi[f, FI_FIRST_FRAME] * 2 + fi[f, FI_DEPTH]
        out_orig[r] = 1 if is_orig else 0
        if (rows[r, d.F_DEPTH] > 0 and r > 0 and rows[r - 1, d.F_FRAME] == i_frame
                and out_fid[r - 1] >= 0):
            # Connection::CheckEncapsulation: the carrying tunnel connection changed.
            # Past Tunnel::max_changes_per_connection Zeek 8 adds 'X' (inferred from
            # the core.tunnels.vxlan baseline: 7 changes, history "X").
            enc = out_fid[r - 1]
            if fi[f, FI_ENCAP] >= 0 and fi[f, FI_ENCAP] != enc:
                if fi[f, FI_TCHG] < MAX_TUNNEL_CHANGES:
                    fi[f, FI_TCHG] += 1
                else:
                    _check_hist(fi, fh, f, True, H_UNKNOWN, 88)  # X
            fi[f, FI_ENCAP] = enc
        fi[f, FI_LAST_FRAME] = frames[i_frame]
        iplen = rows[r, d.F_IPLEN]
        if is_orig:
            fi[f, FI_OPKTS] += 1
            fi[f, FI_OIPB] += iplen
        else:
            fi[f, FI_RPKTS] += 1
            fi[f, FI_RIPB] += iplen
        if trans == T_TCP:
            _tcp(fi, fh, f, is_orig, t, flags, rows[r, d.F_SEQ], rows[r, d.F_ACK],
                 rows[r, d.F_WIN], rows[r, d.F_PAYWIRE])
        else:
            fi[f, FI_LAST_TS] = t
            k = FI_OLEN if is_orig else FI_RLEN
            if trans == T_UDP:
                _check_hist(fi, fh, f, is_orig, 0x1000, 68)  # D / d
                ulen = rows[r, d.F_PAYWIRE]
                fi[f, k] = ulen if fi[f, k] < 0 else fi[f, k] + ulen
            elif trans == T_ICMP:
                ilen = rows[r, d.F_PAYWIRE]
                fi[f, k] = ilen if fi[f, k] < 0 else fi[f, k] + ilen
            elif fi[f, k] < 0:
                fi[f, k] = 0
    return nrows, nflows, ndone


@njit(cache=True, nogil=True)
def tcp_size(fi: np.ndarray, f: int, e: int) -> int:
    """Zeek's TCP_Endpoint::Size for endpoint ``e`` (EB or EB+EN) of flow ``f``."""
    p = EB + EN if e == EB else EB
    if not fi[f, e + E_SEEN] and fi[f, e + E_START] == 0 and fi[f, e + E_ACK] == 0:
        return 0
    start = fi[f, e + E_START]
    ack = fi[f, e + E_ACK] + fi[f, e + E_ACKW] * U32
    if (fi[f, e + E_PREV] == SYN_SENT and fi[f, e + E_STATE] == RESET
            and fi[f, p + E_STATE] == INACTIVE and not (ack == start or ack == start + 1)):
        return 0
    last = fi[f, e + E_LAST] + fi[f, e + E_LASTW] * U32
    size = (last - start) if last > ack else (ack - start)
    if size < 0:
        size = 0  # start was set after a wrap we could not see; Zeek would print a huge number
    if size != 0:
        size -= 1
    if fi[f, e + E_FINCNT] > 0 and size != 0:
        size -= 1
    return size


def conn_state(os_: int, rs: int, osize: int, rsize: int, history: str, trans: int) -> str:
    """Zeek's ``conn_state`` (scripts/base/protocols/conn/main.zeek), for one connection."""
    if trans == T_UDP:
        if os_:
            return "SF" if rs else "S0"
        return "SHR" if rs else "OTH"
    if trans != T_TCP:
        return "OTH"
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and osize == 0 and rsize == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            h = history[1:] if history.startswith("^") else history
            if h.startswith("S") and "R" in h and not any(c in "HAFGIQ" for c in h[1:h.index("R")]):
                return "RSTOS0"
            return "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"
