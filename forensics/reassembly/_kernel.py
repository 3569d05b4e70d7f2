"""Compiled TCP reassembly: segments of many directions in, byte ownership out.

Input is one row per TCP segment, grouped by direction (CSR offsets ``gstart``)
and in capture order inside a group. For every group the kernel

1. unwraps the 32-bit sequence numbers (RFC 793 §3.3 modular arithmetic; each
   step is taken as a signed 32-bit difference, so wrap-around and streams past
   4 GiB are followed),
2. picks the stream origin: one past the SYN's sequence number when a SYN was
   captured, else the lowest sequence number that carried data (a session
   picked up mid-stream),
3. gives every byte of the stream to the *first captured* segment that carried
   it (a sweep over segment starts with a heap keyed by capture order:
   O(n log n) whatever the overlaps), producing ordered pieces
   ``[start, end) -> segment``,
4. lists where later segments overlapped bytes already owned (retransmissions
   and, when the bytes differ, conflicts), within a budget so that a hostile
   session with millions of tiny overlapping segments stays linear,
5. lists the gaps: stream ranges no captured byte covers (lost packets, snaplen
   cuts) up to the furthest sequence number seen on the wire.

Everything is integer arithmetic on arrays; no payload byte is touched here
(conflict checks read bytes afterwards, in :func:`compare_overlaps`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

SYN, FIN, RST, ACK = 2, 1, 4, 16

# Group flag bits reported back.
G_SYN = 1  # a SYN was seen: the origin is exact
G_OVERLAP_TRUNC = 2  # the overlap budget ran out: overlaps not all listed
G_OUT_OF_ORDER = 4  # segments arrived out of order or overlapped
G_BEFORE_ORIGIN = 8  # data before the origin (old retransmissions) was dropped


@njit(cache=True)
def _hpush(heap: np.ndarray, n: int, x: int) -> int:
    i = n
    heap[i] = x
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] <= heap[i]:
            break
        heap[p], heap[i] = heap[i], heap[p]
        i = p
    return n + 1


@njit(cache=True)
def _hpop(heap: np.ndarray, n: int) -> int:
    n -= 1
    heap[0] = heap[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] < heap[c]:
            c += 1
        if heap[i] <= heap[c]:
            break
        heap[i], heap[c] = heap[c], heap[i]
        i = c
    return n


@njit(cache=True)
def reassemble(
    gstart: np.ndarray,
    seq: np.ndarray,
    flags: np.ndarray,
    plen: np.ndarray,
    pwire: np.ndarray,
    ov_budget: int,
) -> tuple:
    """Reassemble every group; see the module docstring.

    Args:
        gstart: CSR offsets of the groups (len = groups + 1).
        seq: 32-bit sequence numbers (int64), capture order inside a group.
        flags: TCP flags.
        plen: captured payload bytes.
        pwire: payload bytes on the wire (>= plen when the snaplen cut the frame).
        ov_budget: most overlap records to list over all groups.

    Returns:
        ``(seg_s, pc_start, pc_end, pc_owner, g_pc, gap_start, gap_end, g_gap, ov_seg,
        ov_owner, ov_start, ov_end, g_ov, g_base, g_extent, g_flags)``: per row the
        stream offset of its first payload byte (may be negative); pieces, gaps and
        overlaps in CSR form per group; per group the origin sequence number
        (unwrapped, relative to the group's first row), the stream extent seen on
        the wire and flag bits ``G_*``.
    """
    n = seq.shape[0]
    ng = gstart.shape[0] - 1
    seg_s = np.zeros(n, np.int64)
    pc_start = np.empty(2 * n + 1, np.int64)
    pc_end = np.empty(2 * n + 1, np.int64)
    pc_owner = np.empty(2 * n + 1, np.int64)
    g_pc = np.zeros(ng + 1, np.int64)
    gap_start = np.empty(2 * n + ng + 1, np.int64)
    gap_end = np.empty(2 * n + ng + 1, np.int64)
    g_gap = np.zeros(ng + 1, np.int64)
    ov_seg = np.empty(ov_budget, np.int64)
    ov_owner = np.empty(ov_budget, np.int64)
    ov_start = np.empty(ov_budget, np.int64)
    ov_end = np.empty(ov_budget, np.int64)
    g_ov = np.zeros(ng + 1, np.int64)
    g_base = np.zeros(ng, np.int64)
    g_extent = np.zeros(ng, np.int64)
    g_flags = np.zeros(ng, np.int64)
    npc = 0
    ngap = 0
    nov = 0
    unw = np.empty(n, np.int64)
    cs = np.empty(n, np.int64)  # clipped start
    ce = np.empty(n, np.int64)  # captured end
    heap = np.empty(n + 1, np.int64)
    for g in range(ng):
        a, b = gstart[g], gstart[g + 1]
        m = b - a
        if m == 0:
            g_pc[g + 1] = npc
            g_gap[g + 1] = ngap
            g_ov[g + 1] = nov
            continue
        # 1. unwrap
        unw[a] = 0
        for i in range(a + 1, b):
            d = (seq[i] - seq[i - 1]) & 0xFFFFFFFF
            if d >= 0x80000000:
                d -= 0x100000000
            unw[i] = unw[i - 1] + d
        # 2. origin
        base = 0
        have = False
        for i in range(a, b):
            if flags[i] & SYN:
                base = unw[i] + 1
                have = True
                g_flags[g] |= G_SYN
                break
        if not have:
            for i in range(a, b):
                if pwire[i] > 0 and (not have or unw[i] < base):
                    base = unw[i]
                    have = True
        g_base[g] = base
        extent = 0
        for i in range(a, b):
            s = unw[i] - base + (1 if flags[i] & SYN else 0)
            seg_s[i] = s
            c = s if s > 0 else 0
            e = s + plen[i]
            if plen[i] > 0 and s < 0:
                g_flags[g] |= G_BEFORE_ORIGIN
            cs[i] = c
            ce[i] = e if e > c else c
            w = s + pwire[i]
            if pwire[i] > 0 and w > extent:
                extent = w
        g_extent[g] = extent
        # 3. ownership; fast path when every segment starts at or after all before it
        inorder = True
        hi = -1
        for i in range(a, b):
            if ce[i] > cs[i]:
                if cs[i] < hi:
                    inorder = False
                    break
                hi = ce[i]
        p0 = npc
        if inorder:
            for i in range(a, b):
                if ce[i] > cs[i]:
                    pc_start[npc] = cs[i]
                    pc_end[npc] = ce[i]
                    pc_owner[npc] = i
                    npc += 1
        else:
            g_flags[g] |= G_OUT_OF_ORDER
            idx = np.empty(m, np.int64)
            k = 0
            for i in range(a, b):
                if ce[i] > cs[i]:
                    idx[k] = i
                    k += 1
            idx = idx[:k]
            keys = cs[idx]
            order = idx[np.argsort(keys, kind="mergesort")]
            hn = 0
            k = 0
            mm = order.shape[0]
            pos = cs[order[0]]
            while True:
                while k < mm and cs[order[k]] <= pos:
                    hn = _hpush(heap, hn, order[k])
                    k += 1
                while hn > 0 and ce[heap[0]] <= pos:
                    hn = _hpop(heap, hn)
                if hn == 0:
                    if k >= mm:
                        break
                    pos = cs[order[k]]
                    continue
                o = heap[0]
                nxt = ce[o]
                if k < mm and cs[order[k]] < nxt:
                    nxt = cs[order[k]]
                if npc > p0 and pc_owner[npc - 1] == o and pc_end[npc - 1] == pos:
                    pc_end[npc - 1] = nxt
                else:
                    pc_start[npc] = pos
                    pc_end[npc] = nxt
                    pc_owner[npc] = o
                    npc += 1
                pos = nxt
            # 4. overlaps: for each segment, the pieces in its range owned by another
            for j in range(a, b):
                if ce[j] <= cs[j]:
                    continue
                lo, hi2 = p0, npc
                while lo < hi2:  # first piece ending after the segment's start
                    mid = (lo + hi2) >> 1
                    if pc_end[mid] <= cs[j]:
                        lo = mid + 1
                    else:
                        hi2 = mid
                p = lo
                while p < npc and pc_start[p] < ce[j]:
                    o = pc_owner[p]
                    if o != j:
                        if nov >= ov_budget:
                            g_flags[g] |= G_OVERLAP_TRUNC
                            break
                        s0 = pc_start[p] if pc_start[p] > cs[j] else cs[j]
                        e0 = pc_end[p] if pc_end[p] < ce[j] else ce[j]
                        if (
                            nov > g_ov[g]
                            and ov_seg[nov - 1] == j
                            and ov_owner[nov - 1] == o
                            and ov_end[nov - 1] == s0
                        ):
                            ov_end[nov - 1] = e0
                        else:
                            ov_seg[nov] = j
                            ov_owner[nov] = o
                            ov_start[nov] = s0
                            ov_end[nov] = e0
                            nov += 1
                    p += 1
        # 5. gaps
        pos = 0
        for p in range(p0, npc):
            if pc_start[p] > pos:
                gap_start[ngap] = pos
                gap_end[ngap] = pc_start[p]
                ngap += 1
            if pc_end[p] > pos:
                pos = pc_end[p]
        if extent > pos:
            gap_start[ngap] = pos
            gap_end[ngap] = extent
            ngap += 1
        g_pc[g + 1] = npc
        g_gap[g + 1] = ngap
        g_ov[g + 1] = nov
    return (
        seg_s,
        pc_start[:npc],
        pc_end[:npc],
        pc_owner[:npc],
        g_pc,
        gap_start[:ngap],
        gap_end[:ngap],
        g_gap,
        ov_seg[:nov],
        ov_owner[:nov],
        ov_start[:nov],
        ov_end[:nov],
        g_ov,
        g_base,
        g_extent,
        g_flags,
    )


@njit(cache=True)
def compare_overlaps(
    data: np.ndarray,
    poff: np.ndarray,
    seg_s: np.ndarray,
    ov_seg: np.ndarray,
    ov_owner: np.ndarray,
    ov_start: np.ndarray,
    ov_end: np.ndarray,
) -> tuple:
    """Bytes that differ between each overlapping copy and the first copy.

    Args:
        data: the evidence (and rebuilt-datagram) bytes as one uint8 array.
        poff: per row, offset of its payload in ``data``.
        seg_s: per row, stream offset of its first payload byte.
        ov_seg: per overlap, the row of the later copy.
        ov_owner: per overlap, the row whose copy was kept.
        ov_start: per overlap, first stream offset.
        ov_end: per overlap, stream offset one past it.

    Returns:
        ``(differing, first_diff)`` per overlap: how many bytes differ and the
        stream offset of the first (-1 when the copies agree).
    """
    k = ov_seg.shape[0]
    diff = np.zeros(k, np.int64)
    first = np.full(k, -1, np.int64)
    for r in range(k):
        j, o = ov_seg[r], ov_owner[r]
        if poff[j] < 0 or poff[o] < 0:
            continue
        pj = poff[j] + ov_start[r] - seg_s[j]
        po = poff[o] + ov_start[r] - seg_s[o]
        ln = ov_end[r] - ov_start[r]
        if pj + ln > data.shape[0] or po + ln > data.shape[0]:
            continue  # a rebuilt datagram, not in the file: not compared
        for t in range(ln):
            if data[pj + t] != data[po + t]:
                if first[r] < 0:
                    first[r] = ov_start[r] + t
                diff[r] += 1
    return diff, first


@njit(cache=True)
def gather_heads(
    data: np.ndarray,
    g_pc: np.ndarray,
    pc_start: np.ndarray,
    pc_end: np.ndarray,
    pc_foff: np.ndarray,
    limit: int,
) -> tuple:
    """First bytes of every group's captured stream, as :meth:`Direction.read` gives them.

    For a group whose pieces end at ``E``, the bytes of ``[0, min(limit, E))`` with
    the gaps left out: every piece starting before that bound, cut at it.

    Args:
        data: the evidence file as one uint8 array.
        g_pc: CSR offsets of each group's pieces.
        pc_start: per piece, its first stream offset.
        pc_end: per piece, one past its last.
        pc_foff: per piece, where its bytes start in ``data``.
        limit: most bytes per group.

    Returns:
        ``(buf, h_off, h_ok)``: the heads one after the other, each group's start in
        ``buf`` (CSR, len = groups + 1) and whether its bytes all lie in ``data``
        (False: a piece sits in the side store or another file; read it the slow way).
    """
    ng = g_pc.shape[0] - 1
    h_off = np.zeros(ng + 1, np.int64)
    h_ok = np.ones(ng, np.bool_)
    size = data.shape[0]
    total = 0
    for g in range(ng):
        p0, p1 = g_pc[g], g_pc[g + 1]
        if p1 > p0:
            e = pc_end[p1 - 1]
            if e > limit:
                e = limit
            for p in range(p0, p1):
                if pc_start[p] >= e:
                    break
                ln = (pc_end[p] if pc_end[p] < e else e) - pc_start[p]
                if pc_foff[p] < 0 or pc_foff[p] + ln > size:
                    h_ok[g] = False
                total += ln
        h_off[g + 1] = total
    buf = np.empty(total, np.uint8)
    for g in range(ng):
        p0, p1 = g_pc[g], g_pc[g + 1]
        if p1 == p0 or not h_ok[g]:
            continue
        e = pc_end[p1 - 1]
        if e > limit:
            e = limit
        at = h_off[g]
        for p in range(p0, p1):
            if pc_start[p] >= e:
                break
            ln = (pc_end[p] if pc_end[p] < e else e) - pc_start[p]
            f = pc_foff[p]
            buf[at : at + ln] = data[f : f + ln]
            at += ln
    return buf, h_off, h_ok


@njit(cache=True)
def gather(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> tuple:
    """The byte ranges ``(offsets[i], lengths[i])`` of ``data`` one after the other.

    Returns:
        ``(buf, at, ok)``: the bytes, each range's start in ``buf`` (len = ranges + 1)
        and whether it lay in ``data`` (False: left as zeros, to be read the slow way).
    """
    n = offsets.shape[0]
    at = np.zeros(n + 1, np.int64)
    ok = np.ones(n, np.bool_)
    size = data.shape[0]
    for i in range(n):
        ln = lengths[i] if lengths[i] > 0 else 0
        at[i + 1] = at[i] + ln
        if offsets[i] < 0 or offsets[i] + ln > size:
            ok[i] = False
    buf = np.zeros(at[n], np.uint8)
    for i in range(n):
        if ok[i]:
            o = offsets[i]
            a = at[i]
            buf[a : at[i + 1]] = data[o : o + at[i + 1] - a]
    return buf, at, ok


@njit(cache=True)
def read_range(
    data: np.ndarray,
    pc_start: np.ndarray,
    pc_end: np.ndarray,
    pc_foff: np.ndarray,
    start: int,
    end: int,
    fill: int,
) -> tuple:
    """Bytes of stream range ``[start, end)`` of one direction (:meth:`Direction.read`).

    Args:
        data: the evidence file as one uint8 array.
        pc_start: per piece, its first stream offset (pieces in stream order).
        pc_end: per piece, one past its last.
        pc_foff: per piece, where its bytes start in ``data``.
        start: first stream offset.
        end: one past the last.
        fill: byte put in gaps, or -1 to leave gaps out.

    Returns:
        ``(ok, out)``: False when a piece lies outside ``data`` (read it the slow way).
    """
    lo = np.searchsorted(pc_end, start, side="right")
    hi = np.searchsorted(pc_start, end, side="left")
    size = data.shape[0]
    total = 0
    for p in range(lo, hi):
        s = pc_start[p] if pc_start[p] > start else start
        e = pc_end[p] if pc_end[p] < end else end
        f = pc_foff[p] + (s - pc_start[p])
        if f < 0 or f + (e - s) > size:
            return False, np.empty(0, np.uint8)
        total += e - s
    if fill < 0:
        out = np.empty(total, np.uint8)
        at = 0
        for p in range(lo, hi):
            s = pc_start[p] if pc_start[p] > start else start
            e = pc_end[p] if pc_end[p] < end else end
            f = pc_foff[p] + (s - pc_start[p])
            out[at : at + e - s] = data[f : f + e - s]
            at += e - s
        return True, out
    out = np.full(end - start, fill, np.uint8)
    for p in range(lo, hi):
        s = pc_start[p] if pc_start[p] > start else start
        e = pc_end[p] if pc_end[p] < end else end
        f = pc_foff[p] + (s - pc_start[p])
        out[s - start : e - start] = data[f : f + e - s]
    return True, out


@njit(cache=True)
def stable_order(key: np.ndarray, nkeys: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for keys in ``[0, nkeys)``, by counting (linear time)."""
    count = np.zeros(nkeys + 1, np.int64)
    for i in range(key.shape[0]):
        count[key[i] + 1] += 1
    for j in range(nkeys):
        count[j + 1] += count[j]
    out = np.empty(key.shape[0], np.int64)
    for i in range(key.shape[0]):
        out[count[key[i]]] = i
        count[key[i]] += 1
    return out
