"""Bulk decoding of link, network and transport headers (compiled with numba).

One call decodes every frame of a chunk into rows of a 2-D ``int64`` array (one
column per field, named by the ``F_*`` constants) plus a ``uint64`` array of
addresses. A frame yields one row, or two when it carries a tunnel that we
decapsulate (VXLAN, Teredo, GTP-U, GRE, IP-in-IP): the outer row and the inner
row, told apart by ``F_DEPTH``, as Zeek logs both the outer and the inner
connection.

Addresses are 128-bit, held as (hi, lo) ``uint64`` pairs; IPv4 is mapped into
``::ffff:0:0/96`` (RFC 4291 §2.5.5.2) so one flow table serves both versions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Row fields (columns of the int64 row array).
F_FRAME = 0  # index of the frame within the chunk
F_DEPTH = 1  # 0 outermost, 1 inside a tunnel
F_VLAN = 2  # outer 802.1Q VLAN id, -1 none
F_VLAN2 = 3  # inner (QinQ) VLAN id, -1 none
F_IPV = 4  # 4, 6, or 0 when not IP
F_PROTO = 5  # IP protocol, -1 none
F_SPORT = 6  # TCP/UDP port; ICMP type
F_DPORT = 7  # TCP/UDP port; ICMP counterpart type or code (as Zeek keys ICMP)
F_FLAGS = 8  # TCP flags (9 bits: NS..FIN)
F_SEQ = 9
F_ACK = 10
F_WIN = 11
F_PAYOFF = 12  # payload offset in the chunk buffer, -1 none
F_PAYLEN = 13  # payload bytes captured
F_PAYWIRE = 14  # payload length per the headers (what was on the wire)
F_IPLEN = 15  # IP total length per header (IPv6: 40 + payload length)
F_FRAG = 16  # bit 0: is a fragment; bit 1: more fragments; bit 2: first fragment
F_FRAGOFF = 17  # fragment offset in bytes
F_IPID = 18  # IPv4 identification / IPv6 fragment id
F_ERR = 19  # ERR_* code, 0 when fine
F_ETHERTYPE = 20  # last ethertype seen, -1 none
F_TUNNEL = 21  # TUN_* of the encapsulation this row was found inside
F_IPOFF = 22  # offset of the IP header in the chunk buffer, -1 none
F_ICMP_TYPE = 23
F_ICMP_CODE = 24
NFIELDS = 25

# Address columns (uint64).
A_SRC_HI, A_SRC_LO, A_DST_HI, A_DST_LO = 0, 1, 2, 3

ERR_NONE = 0
ERR_TRUNC_LINK = 1
ERR_LINKTYPE = 2
ERR_IP_HDR = 3
ERR_IP_LEN = 4
ERR_TRUNC_L4 = 5
ERR_ZERO = 6
ERR_IP6_EXT = 7
ERR_TCP_HDR = 8

ERR_TEXT = {
    ERR_TRUNC_LINK: "frame shorter than its link-layer header",
    ERR_LINKTYPE: "unsupported link type",
    ERR_IP_HDR: "bad IP header (version, header length or truncated header)",
    ERR_IP_LEN: "IP total length smaller than its header",
    ERR_TRUNC_L4: "transport header cut short",
    ERR_ZERO: "zero-length packet",
    ERR_IP6_EXT: "malformed IPv6 extension header chain",
    ERR_TCP_HDR: "TCP data offset smaller than 20 bytes",
}

TUN_NONE, TUN_IPIP, TUN_GRE, TUN_VXLAN, TUN_TEREDO, TUN_GTP = 0, 1, 2, 3, 4, 5
TUNNEL_NAMES = {1: "ip-in-ip", 2: "gre", 3: "vxlan", 4: "teredo", 5: "gtp"}

# Link types (https://www.tcpdump.org/linktypes.html).
LT_NULL, LT_EN10MB, LT_RAW, LT_LOOP, LT_SLL, LT_IPV4, LT_IPV6, LT_SLL2 = (
    0, 1, 101, 108, 113, 228, 229, 276)
SUPPORTED_LINKTYPES = {0, 1, 12, 14, 101, 108, 113, 228, 229, 276}

K_NONE, K_ETH, K_IP = 0, 1, 2


@njit(cache=True, inline="always")
def _be16(b: np.ndarray, i: int) -> int:
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@njit(cache=True, inline="always")
def _be32(b: np.ndarray, i: int) -> int:
    return (np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8) | (
        np.int64(b[i + 3]))


@njit(cache=True, inline="always")
def _be64u(b: np.ndarray, i: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[i + k])
    return v


@njit(cache=True, inline="always")
def _icmp_counterpart(v6: bool, t: int, code: int) -> int:
    # Zeek keys ICMP by (type, counterpart type) so that a request and its reply
    # fall in one connection; one-way types use the code instead.
    if v6:
        if t == 128:
            return 129
        if t == 129:
            return 128
        if t == 133:
            return 134
        if t == 134:
            return 133
        if t == 135:
            return 136
        if t == 136:
            return 135
        if t == 130:
            return 131
        if t == 131:
            return 130
        return code
    if t == 8:
        return 0
    if t == 0:
        return 8
    if t == 13:
        return 14
    if t == 14:
        return 13
    if t == 15:
        return 16
    if t == 16:
        return 15
    if t == 10:
        return 9
    if t == 9:
        return 10
    if t == 17:
        return 18
    if t == 18:
        return 17
    return code


@njit(cache=True, nogil=True)
def _teredo_inner(buf: np.ndarray, po: int, end: int) -> int:
    """Offset of the IPv6 packet in a Teredo payload at ``po``, or -1 (RFC 4380 §5.1.1)."""
    t = po
    if t + 4 <= end and buf[t] == 0 and buf[t + 1] == 1:
        t += 13 + np.int64(buf[t + 2]) + np.int64(buf[t + 3])  # authentication indicator
    if t + 2 <= end and buf[t] == 0 and buf[t + 1] == 0:
        t += 8  # origin indication
    if t + 40 <= end and (buf[t] >> 4) == 6 and t + 40 + _be16(buf, t + 4) == end:
        return t
    return -1


@njit(cache=True, nogil=True)
def _looks_teredo(buf: np.ndarray, po: int, end: int) -> bool:
    """Zeek's TeredoAnalyzer::DetectProtocol: Teredo on a port not registered for it.

    An IPv6 header whose source or destination is in 2001:0::/32 (the Teredo
    prefix, RFC 4380 §2.6), or an authentication / origin indication header
    followed by one; at least 40 bytes either way.
    """
    n = end - po
    if n < 40:
        return False
    b0, b1 = buf[po], buf[po + 1]
    if (b0 >> 4) != 6 and (b0 != 0 or (b1 != 0 and b1 != 1)):
        return False
    if (b0 >> 4) == 6:
        for a in (po + 8, po + 24):
            if buf[a] == 0x20 and buf[a + 1] == 0x01 and buf[a + 2] == 0 and buf[a + 3] == 0:
                return True
    q = po
    val = np.int64(b1)
    if val == 1:
        skip = 13 + np.int64(buf[q + 2]) + np.int64(buf[q + 3])
        if n < skip:
            return False
        q += skip
        n -= skip
        if n < 40:
            return False
        val = _be16(buf, q)
    if val == 0:
        if n < 48:  # 8 bytes of origin indication, then an IPv6 header
            return False
        return (buf[q + 8] >> 4) == 6
    return False


@njit(cache=True, nogil=True)
def _clear(rows: np.ndarray, addr: np.ndarray, r: int, frame: int) -> None:
    for k in range(NFIELDS):
        rows[r, k] = 0
    rows[r, F_FRAME] = frame
    rows[r, F_VLAN] = -1
    rows[r, F_VLAN2] = -1
    rows[r, F_PROTO] = -1
    rows[r, F_SPORT] = -1
    rows[r, F_DPORT] = -1
    rows[r, F_PAYOFF] = -1
    rows[r, F_ETHERTYPE] = -1
    rows[r, F_IPOFF] = -1
    rows[r, F_ICMP_TYPE] = -1
    rows[r, F_ICMP_CODE] = -1
    for k in range(4):
        addr[r, k] = np.uint64(0)


@njit(cache=True, nogil=True)
def decode(
    buf: np.ndarray,
    offs: np.ndarray,
    caplens: np.ndarray,
    linktypes: np.ndarray,
    rows: np.ndarray,
    addr: np.ndarray,
) -> int:
    """Decode every frame into rows; returns the number of rows written.

    ``rows`` and ``addr`` must have room for two rows per frame.
    """
    r = 0
    for i in range(offs.shape[0]):
        r = _decode_frame(buf, offs[i], caplens[i], linktypes[i], i, rows, addr, r)
    return r


@njit(cache=True, nogil=True)
def _decode_frame(  # one flat pass over the layers is the point
    buf: np.ndarray, off: int, caplen: int, lt: int, frame: int,
    rows: np.ndarray, addr: np.ndarray, r: int,
) -> int:
    end = off + caplen
    _clear(rows, addr, r, frame)
    if caplen <= 0:
        rows[r, F_ERR] = ERR_ZERO
        return r + 1
    p = off
    kind = K_NONE
    ethertype = -1
    if lt == LT_EN10MB:
        kind = K_ETH
    elif lt in (LT_NULL, LT_LOOP):
        if p + 4 > end:
            rows[r, F_ERR] = ERR_TRUNC_LINK
            return r + 1
        fam = np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (
            np.int64(buf[p + 3]) << 24)
        if fam > 0xFFFF:  # written big-endian (LOOP always is; NULL is host order)
            fam = _be32(buf, p)
        p += 4
        kind = K_IP
    elif lt in (LT_RAW, 12, 14, LT_IPV4, LT_IPV6):
        kind = K_IP
    elif lt == LT_SLL:
        if p + 16 > end:
            rows[r, F_ERR] = ERR_TRUNC_LINK
            return r + 1
        ethertype = _be16(buf, p + 14)
        p += 16
    elif lt == LT_SLL2:
        if p + 20 > end:
            rows[r, F_ERR] = ERR_TRUNC_LINK
            return r + 1
        ethertype = _be16(buf, p)
        p += 20
    else:
        rows[r, F_ERR] = ERR_LINKTYPE
        return r + 1

    depth = 0
    while True:
        if kind == K_ETH:
            if p + 14 > end:
                rows[r, F_ERR] = ERR_TRUNC_LINK
                return r + 1
            ethertype = _be16(buf, p + 12)
            p += 14
            kind = K_NONE
        if kind == K_NONE:
            # 802.1Q, 802.1ad and the old 0x9100 QinQ tag.
            while ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100:
                if p + 4 > end:
                    rows[r, F_ERR] = ERR_TRUNC_LINK
                    rows[r, F_ETHERTYPE] = ethertype
                    return r + 1
                vid = _be16(buf, p) & 0xFFF
                if rows[r, F_VLAN] < 0:
                    rows[r, F_VLAN] = vid
                elif rows[r, F_VLAN2] < 0:
                    rows[r, F_VLAN2] = vid
                ethertype = _be16(buf, p + 2)
                p += 4
            if ethertype == 0x8847 or ethertype == 0x8848:  # MPLS (RFC 3032 §2.1)
                while True:
                    if p + 4 > end:
                        rows[r, F_ERR] = ERR_TRUNC_LINK
                        return r + 1
                    bos = buf[p + 2] & 1
                    p += 4
                    if bos:
                        break
                kind = K_IP
            elif ethertype == 0x8864:  # PPPoE session (RFC 2516 §4)
                if p + 8 > end:
                    rows[r, F_ERR] = ERR_TRUNC_LINK
                    return r + 1
                ppp = _be16(buf, p + 6)
                p += 8
                if ppp == 0x21:
                    ethertype = 0x0800
                elif ppp == 0x57:
                    ethertype = 0x86DD
            rows[r, F_ETHERTYPE] = ethertype
            if kind == K_NONE:
                if ethertype == 0x0800 or ethertype == 0x86DD:
                    kind = K_IP
                else:
                    return r + 1  # not IP (ARP, LLDP, ...): indexed, no flow
        # ---- network layer
        if p + 1 > end:
            rows[r, F_ERR] = ERR_IP_HDR
            return r + 1
        ver = buf[p] >> 4
        rows[r, F_IPOFF] = p
        rows[r, F_DEPTH] = depth
        l4 = 0
        l4end = 0
        proto = -1
        paywire = 0
        is_v6 = False
        if ver == 4:
            ihl = (buf[p] & 0xF) * 4
            if p + 20 > end or ihl < 20 or p + ihl > end:
                rows[r, F_ERR] = ERR_IP_HDR
                rows[r, F_IPV] = 4
                return r + 1
            total = _be16(buf, p + 2)
            rows[r, F_IPV] = 4
            rows[r, F_IPLEN] = total
            addr[r, A_SRC_LO] = np.uint64(0xFFFF00000000) | np.uint64(_be32(buf, p + 12))
            addr[r, A_DST_LO] = np.uint64(0xFFFF00000000) | np.uint64(_be32(buf, p + 16))
            proto = buf[p + 9]
            rows[r, F_PROTO] = proto
            rows[r, F_IPID] = _be16(buf, p + 4)
            if total < ihl:
                rows[r, F_ERR] = ERR_IP_LEN
                return r + 1
            ff = _be16(buf, p + 6)
            mf = (ff >> 13) & 1
            fo = (ff & 0x1FFF) * 8
            l4 = p + ihl
            l4end = min(end, p + total)
            paywire = total - ihl
            if mf or fo:
                rows[r, F_FRAG] = 1 | (mf << 1) | (4 if fo == 0 else 0)
                rows[r, F_FRAGOFF] = fo
                rows[r, F_PAYOFF] = l4
                rows[r, F_PAYLEN] = max(0, l4end - l4)
                rows[r, F_PAYWIRE] = paywire
                if fo != 0:
                    return r + 1
        elif ver == 6:
            is_v6 = True
            rows[r, F_IPV] = 6
            if p + 40 > end:
                rows[r, F_ERR] = ERR_IP_HDR
                return r + 1
            plen = _be16(buf, p + 4)
            rows[r, F_IPLEN] = 40 + plen
            addr[r, A_SRC_HI] = _be64u(buf, p + 8)
            addr[r, A_SRC_LO] = _be64u(buf, p + 16)
            addr[r, A_DST_HI] = _be64u(buf, p + 24)
            addr[r, A_DST_LO] = _be64u(buf, p + 32)
            nh = np.int64(buf[p + 6])
            q = p + 40
            l4end = min(end, p + 40 + plen)
            fo = 0
            steps = 0
            # RFC 8200 §4: walk the extension header chain.
            while (nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140
                   or nh == 253 or nh == 254 or nh == 51 or nh == 44):
                steps += 1
                if q + 8 > l4end or steps > 16:
                    rows[r, F_ERR] = ERR_IP6_EXT
                    rows[r, F_PROTO] = nh
                    return r + 1
                if nh == 44:  # fragment header (§4.5)
                    fw = _be16(buf, q + 2)
                    fo = fw & 0xFFF8
                    mf = fw & 1
                    rows[r, F_FRAG] = 1 | (mf << 1) | (4 if fo == 0 else 0)
                    rows[r, F_FRAGOFF] = fo
                    rows[r, F_IPID] = _be32(buf, q + 4)
                    hl = 8
                elif nh == 51:  # AH (RFC 4302 §2.2): length in 4-octet units minus 2
                    hl = (np.int64(buf[q + 1]) + 2) * 4
                else:
                    hl = (np.int64(buf[q + 1]) + 1) * 8
                nh = np.int64(buf[q])
                q += hl
            proto = nh
            rows[r, F_PROTO] = proto
            l4 = q
            paywire = p + 40 + plen - q
            if rows[r, F_FRAG] != 0:
                rows[r, F_PAYOFF] = l4
                rows[r, F_PAYLEN] = max(0, l4end - l4)
                rows[r, F_PAYWIRE] = paywire
                if fo != 0:
                    return r + 1
        else:
            rows[r, F_ERR] = ERR_IP_HDR
            return r + 1

        # ---- transport layer
        inner_kind = K_NONE
        inner_off = 0
        tun = TUN_NONE
        if proto == 6:
            if l4 + 20 > l4end:
                rows[r, F_ERR] = ERR_TRUNC_L4
                return r + 1
            rows[r, F_SPORT] = _be16(buf, l4)
            rows[r, F_DPORT] = _be16(buf, l4 + 2)
            rows[r, F_SEQ] = _be32(buf, l4 + 4)
            rows[r, F_ACK] = _be32(buf, l4 + 8)
            doff = (buf[l4 + 12] >> 4) * 4
            rows[r, F_FLAGS] = np.int64(buf[l4 + 13]) | ((np.int64(buf[l4 + 12]) & 1) << 8)
            rows[r, F_WIN] = _be16(buf, l4 + 14)
            if doff < 20:
                rows[r, F_ERR] = ERR_TCP_HDR
                doff = 20
            rows[r, F_PAYOFF] = l4 + doff
            rows[r, F_PAYLEN] = max(0, l4end - (l4 + doff))
            rows[r, F_PAYWIRE] = max(0, paywire - doff)
        elif proto == 17:
            if l4 + 8 > l4end:
                rows[r, F_ERR] = ERR_TRUNC_L4
                return r + 1
            sport = _be16(buf, l4)
            dport = _be16(buf, l4 + 2)
            rows[r, F_SPORT] = sport
            rows[r, F_DPORT] = dport
            po = l4 + 8
            rows[r, F_PAYOFF] = po
            rows[r, F_PAYLEN] = max(0, l4end - po)
            rows[r, F_PAYWIRE] = max(0, paywire - 8)
            if depth == 0 and rows[r, F_FRAG] == 0:
                if (dport == 4789 or sport == 4789) and po + 8 + 14 <= l4end and (buf[po] & 0x08):
                    inner_kind, inner_off, tun = K_ETH, po + 8, TUN_VXLAN  # RFC 7348 §5
                elif dport == 3544 or sport == 3544:  # Teredo (RFC 4380 §5.1.1)
                    t = _teredo_inner(buf, po, l4end)
                    if t >= 0:
                        inner_kind, inner_off, tun = K_IP, t, TUN_TEREDO
                elif (dport == 2152 or sport == 2152) and po + 8 <= l4end:  # GTP-U (TS 29.281)
                    gf = buf[po]
                    if (gf >> 5) == 1 and buf[po + 1] == 0xFF:
                        t = po + 8 + (4 if (gf & 0x07) != 0 else 0)
                        if t < l4end and ((buf[t] >> 4) == 4 or (buf[t] >> 4) == 6):
                            inner_kind, inner_off, tun = K_IP, t, TUN_GTP
                elif _looks_teredo(buf, po, l4end):
                    # Zeek also finds Teredo on other ports by content (protocol detection).
                    t = _teredo_inner(buf, po, l4end)
                    if t >= 0:
                        inner_kind, inner_off, tun = K_IP, t, TUN_TEREDO
        elif proto == 1 or proto == 58:
            if l4 + 4 > l4end:
                rows[r, F_ERR] = ERR_TRUNC_L4
                return r + 1
            t = np.int64(buf[l4])
            c = np.int64(buf[l4 + 1])
            rows[r, F_ICMP_TYPE] = t
            rows[r, F_ICMP_CODE] = c
            rows[r, F_SPORT] = t
            rows[r, F_DPORT] = _icmp_counterpart(is_v6, t, c)
            po = l4 + 8
            rows[r, F_PAYOFF] = min(po, l4end)
            rows[r, F_PAYLEN] = max(0, l4end - po)
            rows[r, F_PAYWIRE] = max(0, paywire - 8)
        elif proto == 47 and depth == 0 and rows[r, F_FRAG] == 0:  # GRE (RFC 2784, 2890)
            rows[r, F_PAYOFF] = l4
            rows[r, F_PAYLEN] = max(0, l4end - l4)
            rows[r, F_PAYWIRE] = paywire
            if l4 + 4 <= l4end:
                gflags = _be16(buf, l4)
                ptype = _be16(buf, l4 + 2)
                gver = gflags & 7
                hl = 4
                if gver == 0:
                    if gflags & 0xC000:  # checksum or routing present
                        hl += 4
                    if gflags & 0x2000:
                        hl += 4
                    if gflags & 0x1000:
                        hl += 4
                    t = l4 + hl
                    if ptype == 0x0800 or ptype == 0x86DD:
                        inner_kind, inner_off = K_IP, t
                    elif ptype == 0x6558:
                        inner_kind, inner_off = K_ETH, t
                    elif ptype == 0x88BE:  # ERSPAN type II
                        inner_kind, inner_off = K_ETH, t + 8
                    elif ptype == 0x22EB:  # ERSPAN type III
                        inner_kind, inner_off = K_ETH, t + 12
                elif gver == 1 and ptype == 0x880B:  # enhanced GRE, PPTP (RFC 2637 §4.1)
                    hl = 8 + (4 if gflags & 0x1000 else 0) + (4 if gflags & 0x0080 else 0)
                    t = l4 + hl
                    if t + 2 <= l4end and buf[t] == 0xFF and buf[t + 1] == 0x03:
                        t += 2
                    if t + 2 <= l4end:
                        pp = _be16(buf, t)
                        if pp == 0x21 or pp == 0x57:
                            inner_kind, inner_off = K_IP, t + 2
                        elif buf[t] == 0x21:  # protocol field compressed to one byte
                            inner_kind, inner_off = K_IP, t + 1
                if inner_kind != K_NONE:
                    tun = TUN_GRE
        elif (proto == 4 or proto == 41) and depth == 0 and rows[r, F_FRAG] == 0:
            inner_kind, inner_off, tun = K_IP, l4, TUN_IPIP
        else:
            rows[r, F_PAYOFF] = l4
            rows[r, F_PAYLEN] = max(0, l4end - l4)
            rows[r, F_PAYWIRE] = paywire

        if inner_kind == K_NONE or inner_off >= l4end:
            return r + 1
        # Emit the outer row and decode the encapsulated packet as a second row.
        vlan, vlan2 = rows[r, F_VLAN], rows[r, F_VLAN2]
        r += 1
        _clear(rows, addr, r, frame)
        rows[r, F_VLAN] = vlan
        rows[r, F_VLAN2] = vlan2
        rows[r, F_TUNNEL] = tun
        depth = 1
        end = l4end
        p = inner_off
        kind = inner_kind
