"""Build TCP/UDP conversations as captures in code, for the reassembly and protocol tests."""

from __future__ import annotations

from pathlib import Path

import dpkt
from _pcapbuild import eth, tcp_pkt, udp_pkt, write_pcap

A, S, F, P, R = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_RST


class Conv:
    """A TCP connection whose packets are listed in capture order.

    ``seg`` adds a data segment at an explicit stream offset, so tests can
    reorder, repeat, overlap or leave out bytes.
    """

    def __init__(
        self,
        client: str = "10.0.0.1",
        server: str = "10.0.0.2",
        cport: int = 40000,
        sport: int = 80,
        isn_c: int = 1000,
        isn_s: int = 5000,
        handshake: bool = True,
    ):
        self.c, self.s, self.cp, self.sp = client, server, cport, sport
        self.isn = {True: isn_c, False: isn_s}
        self.sent = {True: 0, False: 0}
        self.frames: list[bytes] = []
        if handshake:
            self.frames += [
                bytes(tcp_pkt(client, server, cport, sport, S, isn_c, 0)),
                bytes(tcp_pkt(server, client, sport, cport, S | A, isn_s, isn_c + 1)),
                bytes(tcp_pkt(client, server, cport, sport, A, isn_c + 1, isn_s + 1)),
            ]

    def seg(self, is_orig: bool, offset: int, data: bytes, flags: int = P | A) -> Conv:
        """A segment carrying ``data`` at stream ``offset`` of one direction."""
        src, dst, sp, dp = (
            (self.c, self.s, self.cp, self.sp) if is_orig else (self.s, self.c, self.sp, self.cp)
        )
        seq = (self.isn[is_orig] + 1 + offset) & 0xFFFFFFFF
        ack = (self.isn[not is_orig] + 1 + self.sent[not is_orig]) & 0xFFFFFFFF
        self.frames.append(bytes(tcp_pkt(src, dst, sp, dp, flags, seq, ack, data)))
        self.sent[is_orig] = max(self.sent[is_orig], offset + len(data))
        return self

    def send(self, is_orig: bool, data: bytes, mss: int = 1460) -> Conv:
        """Data in order, cut at ``mss``."""
        for i in range(0, len(data), mss):
            self.seg(is_orig, self.sent[is_orig], data[i : i + mss])
        return self

    def close(self) -> Conv:
        """FIN from both sides."""
        for is_orig in (True, False):
            self.seg(is_orig, self.sent[is_orig], b"", F | A)
        return self


def eth_frames(ips: list[bytes]) -> list[bytes]:
    """IPv4 packets wrapped in Ethernet."""
    return [eth(b) for b in ips]


def write(path: Path, *convs: Conv, udp: list[bytes] | None = None) -> Path:
    """Write the conversations' frames (then the UDP packets) to a pcap."""
    frames = [f for c in convs for f in c.frames] + list(udp or [])
    return write_pcap(path, eth_frames(frames))


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """One UDP packet (raw IPv4)."""
    return bytes(udp_pkt(src, dst, sport, dport, data))


def ingest(case, path: Path, strict: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Ingest a capture and run the reconstruction pass on it; returns the evidence id."""
    from forensics.apps import reconstruct_case

    (res,) = case.ingest(path)
    reconstruct_case(case, res.evidence_id, strict=strict)
    return str(res.evidence_id)
