"""Build small captures in code (dpkt) for the tests: every byte is known."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def ip4(s: str) -> bytes:
    return socket.inet_aton(s)


def ip6(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, s)


def tcp_pkt(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0,
            data: bytes = b"", win: int = 8192) -> dpkt.ip.IP:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, win=win, data=data)
    p = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_TCP, data=t, ttl=64)
    p.len = len(bytes(p))
    return dpkt.ip.IP(bytes(p))  # computes checksums


def udp_pkt(src: str, dst: str, sport: int, dport: int, data: bytes = b"") -> dpkt.ip.IP:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    u.ulen = 8 + len(data)
    p = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_UDP, data=u, ttl=64)
    p.len = len(bytes(p))
    return dpkt.ip.IP(bytes(p))


def eth(ip_bytes: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb" + struct.pack(">H", ethertype) + ip_bytes


def handshake_session(client: str = "10.0.0.1", server: str = "10.0.0.2", cport: int = 40000,
                      sport: int = 80, request: bytes = b"GET / HTTP/1.0\r\n\r\n",
                      response: bytes = b"HTTP/1.0 200 OK\r\n\r\nhello") -> list[bytes]:
    """A complete TCP session (SYN .. FIN/ACK) as raw IPv4 packets."""
    A, S, F, P = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
    c, s = 1000, 5000
    pk = [
        tcp_pkt(client, server, cport, sport, S, c, 0),
        tcp_pkt(server, client, sport, cport, S | A, s, c + 1),
        tcp_pkt(client, server, cport, sport, A, c + 1, s + 1),
        tcp_pkt(client, server, cport, sport, P | A, c + 1, s + 1, request),
        tcp_pkt(server, client, sport, cport, A, s + 1, c + 1 + len(request)),
        tcp_pkt(server, client, sport, cport, P | A, s + 1, c + 1 + len(request), response),
        tcp_pkt(client, server, cport, sport, F | A, c + 1 + len(request), s + 1 + len(response)),
        tcp_pkt(server, client, sport, cport, F | A, s + 1 + len(response), c + 2 + len(request)),
        tcp_pkt(client, server, cport, sport, A, c + 2 + len(request), s + 2 + len(response)),
    ]
    return [bytes(p) for p in pk]


def write_pcap(path: Path, frames: list[bytes], *, linktype: int = 1, big_endian: bool = False,
               nanos: bool = False, times: list | None = None, snaplen: int = 65535,
               wirelens: list[int] | None = None) -> Path:
    """A classic pcap with exact control over byte order and time resolution."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, f in enumerate(frames):
        t = times[i] if times else (T0, i * (10_000_000 if nanos else 10_000))
        if isinstance(t, tuple):  # exact (seconds, fraction in file units)
            sec, frac = t
        else:
            sec = int(t)
            frac = round((t - sec) * (1e9 if nanos else 1e6))
        wl = wirelens[i] if wirelens else len(f)
        out.append(struct.pack(e + "IIII", sec, frac, len(f), wl) + f)
    path.write_bytes(b"".join(out))
    return path


def _block(btype: int, body: bytes, e: str = "<") -> bytes:
    pad = (-len(body)) % 4
    n = 12 + len(body) + pad
    return struct.pack(e + "II", btype, n) + body + b"\0" * pad + struct.pack(e + "I", n)


def pcapng_shb(e: str = "<") -> bytes:
    return _block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def pcapng_idb(linktype: int, tsresol: int | None = None, e: str = "<") -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0" + struct.pack(e + "HH", 0, 0)
    return _block(1, struct.pack(e + "HHI", linktype, 0, 65535) + opts, e)


def pcapng_epb(iface: int, ts_units: int, data: bytes, e: str = "<", wirelen: int | None = None) -> bytes:
    hi, lo = ts_units >> 32, ts_units & 0xFFFFFFFF
    body = struct.pack(e + "IIIII", iface, hi, lo, len(data), wirelen or len(data)) + data
    return _block(6, body, e)


def split_pcap(path: Path, out_dir: Path, cuts: list[int], prefix: str = "trace") -> list[Path]:
    """Split a classic pcap at the given record indexes, as tcpdump -C/-G would rotate it."""
    data = path.read_bytes()
    header, pos, records = data[:24], 24, []
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    while pos + 16 <= len(data):
        caplen = struct.unpack(e + "I", data[pos + 8:pos + 12])[0]
        records.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(records)]
    files = []
    for i in range(len(bounds) - 1):
        f = out_dir / f"{prefix}{i:02d}.pcap"
        f.write_bytes(header + b"".join(records[bounds[i]:bounds[i + 1]]))
        files.append(f)
    return files
