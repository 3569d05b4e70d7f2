"""Packet building for the scenario: Ethernet/IPv4/TCP/UDP frames and a pcap writer.

Everything is seen from one capture point (a SPAN port on the core switch). A
node's ``delay_us`` is its one-way delay from that point, so a reply to a packet
observed at ``t`` is observed at ``t + 2 * delay`` plus the responder's own
processing time. Times are integer microseconds since the epoch throughout:
no floats, so the same seed always yields the same bytes.

TCP follows RFC 793/5681 closely enough for analysers: three-way handshake with
an MSS option, MSS-sized segmentation in slow-start flights, cumulative and
delayed ACKs (RFC 1122 §4.2.3.2: at least every second full segment), fast
retransmit after three duplicate ACKs or a retransmission timeout, and FIN
teardown. Impairments (a segment lost after the capture point, two segments
swapped before it) are drawn per message from the connection's random stream.
"""

from __future__ import annotations

import heapq
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Capture", "Net", "Node", "TcpConn", "inet_checksum"]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_IPV4 = 0x0800
MSS = 1460
WINDOW = 64240
MAX_FLIGHT = 40  # segments in flight at most (40 * 1460 bytes, under the 64240-byte window)
ROUTER_MAC = bytes.fromhex("00005e0001fe")  # core switch SVI (VRRP virtual MAC)


def inet_checksum(*parts: bytes) -> int:
    """RFC 1071 Internet checksum over the concatenation of ``parts``.

    Every part but the last must have an even length. Uses the identity
    ``2**16 ≡ 1 (mod 0xFFFF)``: the one's-complement sum of 16-bit words equals
    the big integer of the bytes modulo 0xFFFF, except that a non-zero sum that
    is a multiple of 0xFFFF is 0xFFFF (negative zero) rather than 0.

    Args:
        parts: byte strings, concatenated in order.

    Returns:
        The checksum to store in the header (network byte order value).
    """
    total = 0
    nonzero = False
    for p in parts:
        if len(p) & 1:
            p += b"\0"
        v = int.from_bytes(p, "big")
        nonzero = nonzero or v != 0
        total += v % 0xFFFF
    s = total % 0xFFFF
    if s == 0 and nonzero:
        s = 0xFFFF
    return (~s) & 0xFFFF


@dataclass
class Node:
    """A host as the capture point sees it.

    Attributes:
        name: host name (``WS03``) or, for internet hosts, a label.
        ip: dotted IPv4 address.
        mac: its MAC address (internet hosts use the router's).
        ttl: IP TTL of its packets as observed (128 Windows, 64 Linux, less after hops).
        delay_us: one-way delay between the host and the capture point.
        bw: bottleneck bandwidth towards it, in bytes per microsecond.
        internal: inside the company network.
        subnet: the /24 it lives in (frames to other subnets go through the router).
        linux: ephemeral ports from the Linux range instead of Windows'.
    """

    name: str
    ip: str
    mac: bytes = ROUTER_MAC
    ttl: int = 128
    delay_us: int = 100
    bw: float = 100.0
    internal: bool = True
    subnet: str = ""
    linux: bool = False
    ip4: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ip4 = bytes(int(x) for x in self.ip.split("."))
        if not self.subnet:
            self.subnet = self.ip.rsplit(".", 1)[0]


class Capture:
    """Collects frames with their capture times and writes them as one pcap."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, bytes]] = []

    def add(self, t_us: int, frame: bytes) -> None:
        """Add one Ethernet frame observed at ``t_us`` (µs since the epoch)."""
        self.frames.append((t_us, len(self.frames), frame))

    def write(self, path: Path) -> int:
        """Write the frames in time order (ties keep insertion order) as a pcap.

        Little-endian classic pcap, microsecond timestamps, LINKTYPE_ETHERNET.

        Returns:
            The number of frames written.
        """
        self.frames.sort(key=lambda f: (f[0], f[1]))
        rec = struct.Struct("<IIII")
        with path.open("wb") as fh:
            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            out = []
            for t, _, frame in self.frames:
                out.append(rec.pack(t // 1_000_000, t % 1_000_000, len(frame), len(frame)))
                out.append(frame)
                if len(out) >= 8192:
                    fh.write(b"".join(out))
                    out.clear()
            fh.write(b"".join(out))
        return len(self.frames)


@dataclass
class Flow:
    """One connection as the story knows it (for the answer key's checks)."""

    t: int
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    syn: bool = True


class Net:
    """Frame factory: addresses, IP IDs and ephemeral ports for every node."""

    def __init__(self, capture: Capture, rng: random.Random):
        self.capture = capture
        self.rng = rng
        self.flows: list[Flow] = []
        self._ipid: dict[str, int] = {}
        self._port: dict[str, int] = {}

    # ---- framing --------------------------------------------------------------------

    def _eth(self, src: Node, dst: Node) -> bytes:
        # Frames between subnets (and to or from the internet) pass the router.
        if not src.internal:
            return dst.mac + ROUTER_MAC + b"\x08\x00"
        same = dst.internal and src.subnet == dst.subnet
        return (dst.mac if same else ROUTER_MAC) + src.mac + b"\x08\x00"

    def _ipv4(self, src: Node, dst: Node, proto: int, l4len: int, df: bool) -> bytes:
        ipid = self._ipid.get(src.ip)
        if ipid is None:
            ipid = self.rng.randrange(1, 0xFFFF)
        self._ipid[src.ip] = (ipid + 1) & 0xFFFF
        # RFC 791 §3.1: version 4, IHL 5, total length, flags (DF), TTL, protocol.
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len, ipid, 0x4000 if df else 0,
                          src.ttl, proto, 0, src.ip4, dst.ip4)
        return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]

    def udp(self, t: int, src: Node, dst: Node, sport: int, dport: int, payload: bytes) -> None:
        """Emit one UDP datagram observed at ``t`` (RFC 768, checksum always set)."""
        ulen = 8 + len(payload)
        pseudo = src.ip4 + dst.ip4 + struct.pack("!BBH", 0, 17, ulen)
        hdr = struct.pack("!HHHH", sport, dport, ulen, 0)
        c = inet_checksum(pseudo, hdr, payload) or 0xFFFF  # RFC 768: 0 means "none"
        frame = (self._eth(src, dst) + self._ipv4(src, dst, 17, ulen, False)
                 + hdr[:6] + struct.pack("!H", c) + payload)
        self.capture.add(t, frame)

    def tcp_segment(self, t: int, src: Node, dst: Node, sport: int, dport: int, seq: int,
                    ack: int, flags: int, payload: bytes = b"", *, mss_opt: bool = False,
                    window: int = WINDOW) -> None:
        """Emit one TCP segment observed at ``t`` (RFC 793 §3.1 header)."""
        opts = b""
        if mss_opt:
            # MSS, NOP, NOP, SACK permitted (RFC 793 §3.1, RFC 2018).
            opts = struct.pack("!BBH", 2, 4, MSS) + b"\x01\x01\x04\x02"
        hlen = 20 + len(opts)
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                          (hlen // 4) << 4, flags, window, 0, 0) + opts
        l4len = hlen + len(payload)
        pseudo = src.ip4 + dst.ip4 + struct.pack("!BBH", 0, 6, l4len)
        c = inet_checksum(pseudo, hdr, payload)
        frame = (self._eth(src, dst) + self._ipv4(src, dst, 6, l4len, True)
                 + hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload)
        self.capture.add(t, frame)

    # ---- endpoints ------------------------------------------------------------------

    def ephemeral_port(self, node: Node) -> int:
        """Next ephemeral port of ``node`` (sequential, as Windows and Linux allocate)."""
        lo, hi = (32768, 60999) if node.linux else (49152, 65535)
        p = self._port.get(node.ip)
        if p is None:
            p = self.rng.randrange(lo, hi - 2000)
        p = p + 1 if p < hi else lo
        self._port[node.ip] = p
        return p

    def tcp(self, client: Node, server: Node, dport: int, t: int, *, sport: int | None = None,
            rng: random.Random | None = None, impair: float = 0.0) -> TcpConn:
        """Start a TCP connection; its SYN is observed at ``t``.

        Args:
            client: the originator.
            server: the responder.
            dport: the responder's port.
            t: capture time of the SYN (µs).
            sport: originator port (an ephemeral one by default).
            rng: random stream for ISNs, timing jitter and impairments.
            impair: probability that a message of four or more segments suffers a
                loss or a reordering.
        """
        sp = sport if sport is not None else self.ephemeral_port(client)
        self.flows.append(Flow(t, "tcp", client.ip, server.ip, sp, dport))
        return TcpConn(self, client, server, sp, dport, t, rng or self.rng, impair)

    def note_udp(self, t: int, src: Node, dst: Node, sport: int, dport: int) -> None:
        """Record a UDP exchange in the flow list (the datagrams are emitted separately)."""
        self.flows.append(Flow(t, "udp", src.ip, dst.ip, sport, dport))


class TcpConn:
    """One TCP connection being written, message by message.

    ``t`` is always the capture time of the latest packet emitted. Use
    :meth:`open` (or :meth:`refused`), then :meth:`send` per application message,
    then :meth:`close`.
    """

    def __init__(self, net: Net, client: Node, server: Node, sport: int, dport: int, t: int,
                 rng: random.Random, impair: float):
        self.net, self.rng, self.impair = net, rng, impair
        self.node = (client, server)
        self.port = (sport, dport)
        self.t = t
        self.t0 = t
        self.nxt = [rng.getrandbits(32), rng.getrandbits(32)]  # next sequence number per side
        self.cwnd = [10, 10]  # RFC 6928 initial window
        self.last_data = [t, t]  # capture time of each side's latest data
        self.pending_ack: tuple[int, int] | None = None  # (side that owes it, due time)
        self.bytes = [0, 0]

    # ---- helpers --------------------------------------------------------------------

    def _emit(self, side: int, t: int, flags: int, payload: bytes = b"", seq: int | None = None,
              **kw: object) -> None:
        src, dst = self.node[side], self.node[1 - side]
        s = self.nxt[side] if seq is None else seq
        ack = self.nxt[1 - side] if flags & ACK else 0
        self.net.tcp_segment(t, src, dst, self.port[side], self.port[1 - side], s, ack, flags,
                             payload, **kw)  # type: ignore[arg-type]
        self.t = max(self.t, t)

    def _rt(self, side: int) -> int:
        """Round trip between the capture point and ``side`` (there and back)."""
        return 2 * self.node[side].delay_us + self.rng.randrange(5, 40)

    def _flush_ack(self, before: int | None = None) -> None:
        if self.pending_ack is None:
            return
        side, due = self.pending_ack
        if before is None or due < before:
            self._emit(side, due, ACK)
        self.pending_ack = None

    # ---- connection life ------------------------------------------------------------

    def open(self) -> TcpConn:
        """Three-way handshake (RFC 793 §3.4): SYN, SYN-ACK, ACK."""
        t = self.t0
        self._emit(0, t, SYN, mss_opt=True, window=64240)
        self.nxt[0] += 1
        t += self._rt(1)
        self._emit(1, t, SYN | ACK, mss_opt=True, window=65535)
        self.nxt[1] += 1
        t += self._rt(0)
        self._emit(0, t, ACK)
        self.last_data = [t, t]
        return self

    def refused(self) -> None:
        """A SYN answered by RST-ACK (closed port)."""
        self._emit(0, self.t0, SYN, mss_opt=True)
        self.nxt[0] += 1
        self._emit(1, self.t0 + self._rt(1), RST | ACK, seq=0, window=0)

    def half_open(self) -> None:
        """A SYN scan probe to an open port: SYN, SYN-ACK, then the scanner's RST."""
        self._emit(0, self.t0, SYN, mss_opt=True, window=1024)
        self.nxt[0] += 1
        t = self.t0 + self._rt(1)
        self._emit(1, t, SYN | ACK, mss_opt=True, window=65535)
        self.net.tcp_segment(t + self._rt(0), self.node[0], self.node[1], self.port[0],
                             self.port[1], self.nxt[0], 0, RST, window=0)
        self.t = t + self._rt(0)

    def unanswered(self, retries: int = 0) -> None:
        """A SYN nobody answers (no such host), retransmitted after 3 s, 6 s, ... (RFC 6298)."""
        t = self.t0
        for k in range(retries + 1):
            self._emit(0, t, SYN, mss_opt=True)
            t += 3_000_000 << k

    def send(self, data: bytes | list[bytes], from_client: bool = True, think_us: int = 0) -> int:
        """Send one application message; returns the capture time of its last segment.

        The first segment leaves after the peer's latest data has reached the
        sender (a round trip from the capture point) plus ``think_us``. ``data``
        is cut into MSS-sized segments, or given as a list of segments (each at
        most one MSS) when the application writes record by record.
        """
        a = 0 if from_client else 1
        b = 1 - a
        start = max(self.last_data[b] + self._rt(a), self.last_data[a] + 1, self.t0) + think_us
        if self.pending_ack is not None and self.pending_ack[0] == a:
            # The ACK this side owes rides on this data if it leaves before the timer.
            self._flush_ack(before=start)
        else:
            self._flush_ack()
        if not data:
            return start
        if isinstance(data, bytes):
            segs = [data[i:i + MSS] for i in range(0, len(data), MSS)]
        else:
            segs = [bytes(x) for x in data if x]
        self._transfer(a, segs, start)
        self.bytes[a] += sum(len(x) for x in segs)
        return self.last_data[a]

    def _transfer(self, a: int, segs: list[bytes], t: int) -> None:
        b = 1 - a
        rng = self.rng
        n = len(segs)
        offs = [0]
        for x in segs:
            offs.append(offs[-1] + len(x))
        base = self.nxt[a]
        ser = max(1, int(MSS / min(self.node[a].bw, self.node[b].bw)))  # per full segment
        loss = reorder = -1
        if n >= 4 and rng.random() < self.impair:
            # A segment lost before the capture point (seen once, late: its
            # retransmission) or two segments swapped on the way.
            if rng.random() < 0.5:
                loss = rng.randrange(1, n - 1)
            else:
                reorder = rng.randrange(1, n - 2)
        i = 0
        cwnd = self.cwnd[a]
        while i < n:
            k = min(cwnd, n - i)
            obs = {j: t + (j - i) * ser + rng.randrange(0, 3) for j in range(i, i + k)}
            if reorder in obs and reorder + 1 in obs:
                obs[reorder], obs[reorder + 1] = obs[reorder + 1] + 1, obs[reorder]
            arrivals = [(obs[j], j) for j in obs if j != loss]
            heapq.heapify(arrivals)
            for tj, j in sorted(arrivals):
                self._data(a, base, segs, offs, j, tj)
            top = max(obs.values())
            got: set[int] = set()
            exp, unacked, dup = i, 0, 0
            last_ack = t
            rtx = -1
            # The receiver's cumulative ACKs (RFC 1122 §4.2.3.2; immediate on a hole),
            # fast retransmit on the third duplicate (RFC 5681 §3.2).
            while arrivals:
                tj, j = heapq.heappop(arrivals)
                got.add(j)
                at = max(tj + self._rt(b), last_ack + 1)
                if j == exp:
                    hole = any(x > j for x in got)
                    while exp in got:
                        exp += 1
                    unacked += 1
                    if hole or unacked >= 2:
                        self._ack_at(b, base, offs, exp, at)
                        last_ack, unacked = at, 0
                    continue
                self._ack_at(b, base, offs, exp, at)
                last_ack, dup = at, dup + 1
                if dup == 3 and loss in obs and rtx < 0:
                    rtx = at + self._rt(a)
                    self._data(a, base, segs, offs, loss, rtx)
                    heapq.heappush(arrivals, (rtx, loss))
                    top = max(top, rtx)
            if loss in obs and rtx < 0:
                rtx = max(top, last_ack) + 300_000  # retransmission timeout
                self._data(a, base, segs, offs, loss, rtx)
                got.add(loss)
                while exp in got:
                    exp += 1
                last_ack = rtx + self._rt(b)
                self._ack_at(b, base, offs, exp, last_ack)
                top, unacked = rtx, 0
            end = max(top, last_ack)
            if unacked:
                if exp >= n:
                    # Delayed ACK for the message's odd last segment: it may ride on a reply.
                    self.pending_ack = (b, max(top, last_ack) + self._rt(b) + rng.randrange(500, 40_000))
                else:
                    last_ack = max(top, last_ack) + self._rt(b)
                    self._ack_at(b, base, offs, exp, last_ack)
                    end = last_ack
            self.last_data[a] = max(self.last_data[a], top)
            t = end + self._rt(a)
            i += k
            cwnd = min(cwnd * 2, MAX_FLIGHT)
        self.cwnd[a] = cwnd
        self.nxt[a] = base + offs[-1]

    def _data(self, a: int, base: int, segs: list[bytes], offs: list[int], j: int, t: int) -> None:
        flags = ACK | (PSH if j == len(segs) - 1 else 0)
        self._emit(a, t, flags, segs[j], seq=base + offs[j])

    def _ack_at(self, b: int, base: int, offs: list[int], exp: int, t: int) -> None:
        src, dst = self.node[b], self.node[1 - b]
        ack = base + offs[exp]
        self.net.tcp_segment(t, src, dst, self.port[b], self.port[1 - b], self.nxt[b], ack, ACK)
        self.t = max(self.t, t)

    def close(self, by_client: bool = True, think_us: int = 0) -> int:
        """FIN teardown (RFC 793 §3.5): FIN-ACK, FIN-ACK, ACK. Returns the last time."""
        a = 0 if by_client else 1
        b = 1 - a
        t = max(self.t, self.last_data[b] + self._rt(a)) + think_us + 1
        self._flush_ack(before=t)
        self._emit(a, t, FIN | ACK)
        self.nxt[a] += 1
        t += self._rt(b)
        self._emit(b, t, FIN | ACK)
        self.nxt[b] += 1
        t += self._rt(a)
        self._emit(a, t, ACK)
        return t

    def reset(self, by_client: bool = True, think_us: int = 0) -> int:
        """Abort with RST-ACK (browsers do this to idle connections)."""
        a = 0 if by_client else 1
        t = max(self.t, self.last_data[1 - a]) + think_us + 1
        self._flush_ack(before=t)
        self._emit(a, t, RST | ACK, window=0)
        return t
