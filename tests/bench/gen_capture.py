"""Deterministic, fast generator of large benchmark pcap files.

Models a client LAN (400 hosts in 10.0.0.0/16 and fd00::/64) behind one gateway talking to
40 public-looking servers. TCP sessions (~10% IPv6) to ports 443/80/445/22/8080 have a
3-way handshake (MSS option), a small request, a log-normal response (200 B to 4 MB) cut at
MSS 1460 with a client ACK every second segment, and a FIN/ACK teardown after keep-alive
idle time (3% RST instead). About 5% of packets are DNS over UDP in real wire format. Flows
arrive as a Poisson process loading the link at ~4 MB/s (1 GiB spans ~4 minutes) with a few
hundred flows live at once; timestamps are monotonic, in µs.

Payloads are slices of one random buffer, except DNS messages and HTTP heads on ports
80/8080 (random bytes there make Wireshark report malformed HTTP). All IPv4, TCP and UDP
checksums are correct: even/odd byte prefix sums of the random buffer give the
one's-complement sum of any payload in two lookups.

Nothing loops per packet in Python: per-flow parameters become packet fields through
``np.repeat``/``np.select``, and headers are numpy structured arrays with big-endian fields
scattered into an output block pre-filled with payload bytes. Sizes take binary K/M/G:

    python tests/bench/gen_capture.py OUT.pcap --size 1G --seed 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

MSS = 1460
WIN = 64240
EPOCH = 1_717_200_000  # 2024-06-01; fixed so output bytes depend only on the seed
BYTE_RATE = 4_000_000  # link load in bytes/s: 1 GiB spans about 4.5 minutes
DNS_SHARE = 0.05  # fraction of packets that are DNS
CHUNK = 4 << 20  # output is rendered in ~4 MiB blocks to bound memory
FLOWS_PER_STEP = 256  # flows turned into packets per merge step
N_HOSTS, N_SERVERS = 400, 40
PORTS, PORT_P = np.array([443, 80, 445, 22, 8080]), [0.55, 0.2, 0.1, 0.05, 0.1]
SRV_P = 1.0 / np.arange(1, N_SERVERS + 1)  # Zipf-like popularity
SRV_P /= SRV_P.sum()
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
GW_MAC = np.array([0x00, 0x1B, 0x21, 0x0A, 0x00, 0x01], np.uint8)
_PUBLIC_V4 = (13, 23, 34, 52, 54, 104, 142, 151, 157, 185, 199)
_PUBLIC_V6 = (0x2606_4700, 0x2A00_1450, 0x2620_01EC, 0x2A03_2880, 0x2001_4860)
_SUBS = ("www", "api", "cdn", "static", "login", "mail", "img", "update", "files", "auth")
_DOMS = ("example.com", "contoso.net", "fabrikam.org", "northwind.io", "tailspin.dev",
         "wingtiptoys.co.uk", "adventure-works.com", "litware.biz")

# Per-packet metadata: everything else is looked up from the flow table at render time.
META = np.dtype([("t", "i8"), ("fid", "i4"), ("flags", "u1"), ("dir", "u1"), ("opt", "u1"),
                 ("seq", "u4"), ("ack", "u4"), ("plen", "u4"), ("tmpl", "i4")])
_REC = [("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
        ("dmac", "u1", (6,)), ("smac", "u1", (6,)), ("etype", ">u2")]
_IP4 = [("vihl", "u1"), ("tos", "u1"), ("tlen", ">u2"), ("ipid", ">u2"), ("frag", ">u2"),
        ("ttl", "u1"), ("proto", "u1"), ("ipsum", ">u2"), ("src4", ">u4"), ("dst4", ">u4")]
_IP6 = [("vtf", ">u4"), ("plen6", ">u2"), ("nh", "u1"), ("hlim", "u1"),
        ("src6", "u1", (16,)), ("dst6", "u1", (16,))]
_TCP = [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("doff", "u1"),
        ("flags", "u1"), ("win", ">u2"), ("l4sum", ">u2"), ("urp", ">u2")]
_UDP = [("sport", ">u2"), ("dport", ">u2"), ("ulen", ">u2"), ("l4sum", ">u2")]
# Header layouts keyed by (ipv6, kind) with kind 0 = TCP, 1 = TCP + MSS option, 2 = UDP.
_DTYPES = {(v6, k): np.dtype(_REC + (_IP6 if v6 else _IP4)
                             + (_UDP if k == 2 else _TCP + [("opt", ">u4")] * k))
           for v6 in (False, True) for k in (0, 1, 2)}


def _logu(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _csum(s: np.ndarray) -> np.ndarray:
    """Fold 64-bit sums to 16 bits and complement (RFC 1071)."""
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _wsum(data: bytes) -> int:
    return int(np.frombuffer(data + b"\0" * (len(data) % 2), ">u2").sum())


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair, without a Python loop."""
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(ends[-1] if ends.size else 0)


class _RandBuf:
    """Random payload bytes plus prefix sums of even/odd bytes for O(1) checksums."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.buf = np.frombuffer(rng.bytes(size), np.uint8)
        zero = np.zeros(1, np.uint32)
        # uint32 wraps, but differences over a <64 KiB segment are still exact.
        self.pe = np.concatenate([zero, np.cumsum(self.buf[0::2], dtype=np.uint32)])
        self.po = np.concatenate([zero, np.cumsum(self.buf[1::2], dtype=np.uint32)])

    def segsum(self, s: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Sum of big-endian 16-bit words of ``buf[s:s+n]`` (odd tail zero-padded)."""
        e = s + n
        ev = (self.pe[(e + 1) // 2] - self.pe[(s + 1) // 2]).astype(np.int64)
        od = (self.po[e // 2] - self.po[s // 2]).astype(np.int64)
        # The high byte of each word sits at an even offset from the segment start.
        return np.where(s % 2 == 0, ev * 256 + od, od * 256 + ev)


def _hosts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Client and server address pools; the last two servers are DNS resolvers."""
    v = rng.choice(256 * 254, N_HOSTS, replace=False)  # skips .0 and .255 host bytes
    cli4 = (0x0A000000 | (v // 254) << 8 | (v % 254 + 1)).astype(np.int64)
    cli6 = np.zeros((N_HOSTS, 16), np.uint8)
    cli6[:, 0], cli6[:, 8:] = 0xFD, rng.integers(0, 256, (N_HOSTS, 8))
    mac = np.zeros((N_HOSTS, 6), np.uint8)
    mac[:, 0], mac[:, 1], mac[:, 2:] = 0x02, 0x42, rng.integers(0, 256, (N_HOSTS, 4))
    first = rng.choice(_PUBLIC_V4, N_SERVERS).astype(np.int64)
    srv4 = np.append(first << 24 | rng.integers(0, 1 << 24, N_SERVERS), [0x01010101, 0x08080808])
    srv6 = np.zeros((N_SERVERS + 2, 16), np.uint8)
    srv6[:-2, :4] = rng.choice(_PUBLIC_V6, N_SERVERS).astype(">u4").view(np.uint8).reshape(-1, 4)
    srv6[:-2, 4:6], srv6[:-2, 14:] = rng.integers(0, 256, (2, N_SERVERS, 2))
    srv6[-2:] = np.frombuffer(bytes.fromhex("2606470047000000000000000000111120014860"
                                            "486000000000000000008888"), np.uint8).reshape(2, 16)
    return {"cli4": cli4, "cli6": cli6, "cli_mac": mac, "srv4": srv4, "srv6": srv6,
            "srv_ttl": rng.integers(44, 61, N_SERVERS + 2),
            "cli4_ws": (cli4 >> 16) + (cli4 & 0xFFFF), "srv4_ws": (srv4 >> 16) + (srv4 & 0xFFFF),
            "cli6_ws": cli6.view(">u2").sum(1).astype(np.int64),
            "srv6_ws": srv6.view(">u2").sum(1).astype(np.int64)}


def _dns_templates(rng: np.random.Generator, h: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Query/response message pairs (ids 2i, 2i+1) with a zero transaction id."""
    msgs = []
    for i, name in enumerate(f"{s}.{d}" for d in _DOMS for s in _SUBS):
        qt = 28 if i % 4 == 3 else 1  # every fourth name is an AAAA lookup
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        question = qname + struct.pack(">HH", qt, 1)
        answers = b""
        for s in rng.integers(0, N_SERVERS, 1 + i % 3):
            rdata = h["srv6"][s].tobytes() if qt == 28 else struct.pack(">I", h["srv4"][s])
            ttl = int(rng.integers(60, 3600))
            answers += struct.pack(">HHHIH", 0xC00C, qt, 1, ttl, len(rdata)) + rdata
        msgs.append(struct.pack(">6H", 0, 0x0100, 1, 0, 0, 0) + question)
        msgs.append(struct.pack(">6H", 0, 0x8180, 1, 1 + i % 3, 0, 0) + question + answers)
    lens = np.array([len(m) for m in msgs])
    return {"buf": np.frombuffer(b"".join(msgs), np.uint8), "len": lens,
            "off": np.cumsum(lens) - lens, "wsum": np.array([_wsum(m) for m in msgs])}


def _http_head(request: bool, total: int, srv: int) -> bytes:
    """HTTP request/response head for a message of exactly ``total`` bytes.

    Port 80/8080 payloads must parse as HTTP or Wireshark reports them as malformed.
    """
    host = f"{_SUBS[srv % len(_SUBS)]}.{_DOMS[srv % len(_DOMS)]}"
    if request and total <= MSS:  # GET padded with a cookie to the drawn request size
        base = f"GET / HTTP/1.1\r\nHost: {host}\r\nCookie: sid="
        return (base + "a" * (total - len(base) - 4) + "\r\n\r\n").encode()
    head = (f"POST /upload HTTP/1.1\r\nHost: {host}\r\n" if request
            else "HTTP/1.1 200 OK\r\nServer: nginx\r\n") + "Content-Type: application/octet-stream"
    body = total - len(head) - len("\r\nContent-Length: \r\n\r\n")
    for pad in ("", " "):  # the digit count of the length feeds back into the length
        for d in range(1, 10):
            if len(str(body - len(pad) - d)) == d:
                return f"{head}\r\nContent-Length:{pad} {body - len(pad) - d}\r\n\r\n".encode()
    raise AssertionError(total)  # unreachable: one of the two paddings always fits


# Response-size shapes: "bulk" (downloads dominate: ~900 B per packet) and
# "interactive" (many short request/response exchanges, like an office LAN or a
# busy API tier: ~250 B per packet, close to the 4.6 M packets/GB in DESIGN §5).
MIXES = {"bulk": (np.log(6000), 2.2, 4e6), "interactive": (np.log(700), 1.2, 2.5e5)}


def _tcp_flows(rng: np.random.Generator, n: int, mix: str = "bulk") -> dict[str, np.ndarray]:
    mu, sigma, cap = MIXES[mix]
    req = _logu(rng, 100, 3000 if mix == "bulk" else 900, n).astype(np.int64)
    resp = np.clip(rng.lognormal(mu, sigma, n), 200, cap).astype(np.int64)
    nq, nr = -(-req // MSS), -(-resp // MSS)
    rst, v6 = rng.random(n) < 0.03, rng.random(n) < 0.10
    npk = 3 + nq + nr + (nr + 1) // 2 + np.where(rst, 1, 3)
    return {"proto": np.full(n, 6), "v6": v6, "cli": rng.integers(0, N_HOSTS, n),
            "srv": rng.choice(N_SERVERS, n, p=SRV_P), "sport": rng.choice(PORTS, n, p=PORT_P),
            "req": req, "resp": resp, "nq": nq, "nr": nr, "rst": rst, "npk": npk,
            "wire": npk * (70 + 20 * v6) + 8 + req + resp,  # 8 = two MSS options
            "isn_c": rng.integers(0, 1 << 32, n), "isn_s": rng.integers(0, 1 << 32, n),
            "rtt": _logu(rng, 2e3, 1.5e5, n), "think": _logu(rng, 1e2, 1e5, n),
            "gap": MSS * 8 / _logu(rng, 2, 200, n),  # µs per segment at 2-200 Mbit/s
            "idle": np.minimum(rng.exponential(4e6, n), 3e7)}


def _dns_flows(rng: np.random.Generator, n: int, tlen: np.ndarray) -> dict[str, np.ndarray]:
    j, v6 = rng.integers(0, tlen.size // 2, n), rng.random(n) < 0.10
    q, r = tlen[2 * j], tlen[2 * j + 1]
    return {"proto": np.full(n, 17), "v6": v6, "cli": rng.integers(0, N_HOSTS, n),
            "srv": N_SERVERS + rng.integers(0, 2, n), "sport": np.full(n, 53), "req": q,
            "resp": r, "npk": np.full(n, 2), "wire": 2 * (58 + 20 * v6) + q + r,
            "rtt": _logu(rng, 500, 4e4, n), "tmpl": j, "txid": rng.integers(0, 1 << 16, n)}


def _flow_table(rng: np.random.Generator, size: int, tlen: np.ndarray,
                mix: str = "bulk") -> dict[str, np.ndarray]:
    """All flows sorted by start, cut at the first flow whose bytes pass ``size``."""
    chunks, total, t0, mean_gap = [], 0, 0.0, 0.0
    while total < size:
        tcp = _tcp_flows(rng, 4096, mix)
        mean_gap = mean_gap or float(tcp["wire"].mean()) / BYTE_RATE * 1e6
        tcp["start"] = t0 + np.cumsum(rng.exponential(mean_gap, 4096))
        nd = round(int(tcp["npk"].sum()) * DNS_SHARE / (1 - DNS_SHARE) / 2)
        dns = _dns_flows(rng, nd, tlen)
        dns["start"] = rng.uniform(t0, tcp["start"][-1], nd)
        t0 = float(tcp["start"][-1])
        for c in (tcp, dns):
            n = c["start"].size
            chunks.append({k: c.get(k, np.zeros(n, np.int64)) for k in (*tcp, "tmpl", "txid")})
            total += int(c["wire"].sum())
    order = np.argsort(np.concatenate([c["start"] for c in chunks]), kind="stable")
    fl = {k: np.concatenate([c[k] for c in chunks])[order] for k in chunks[0]}
    keep = int(np.searchsorted(np.cumsum(fl["wire"]), size - 24)) + 1
    fl = {k: v[:keep] for k, v in fl.items()}
    fl["start"] = fl["start"].astype(np.int64)
    # Ephemeral ports count up per host like a real stack, so no 4-tuple is ever reused.
    cli, n = fl["cli"], keep
    cnt = np.bincount(cli, minlength=N_HOSTS)
    rank = np.empty(n, np.int64)
    rank[np.argsort(cli, kind="stable")] = np.arange(n) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    fl["cport"] = 32768 + (rng.integers(0, 28232, N_HOSTS)[cli] + rank) % 28232
    return fl


def _tcp_meta(fl: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Packets of the TCP flows ``idx``, in per-flow order, with strictly rising times."""
    npk = fl["npk"][idx]
    loc = np.repeat(np.arange(idx.size), npk)
    first = np.cumsum(npk) - npk
    k = np.arange(loc.size) - first[loc]
    g = {key: fl[key][idx][loc] for key in ("nq", "nr", "req", "resp", "rst", "isn_c", "isn_s",
                                             "rtt", "think", "gap", "idle", "start")}
    nq, nr, req, resp, isn_c, isn_s = g["nq"], g["nr"], g["req"], g["resp"], g["isn_c"], g["isn_s"]
    R = nr + (nr + 1) // 2  # response region: data, data, client ACK, ...
    j = k - 3 - nq
    qi, m3, blk = k - 3, j % 3, j // 3
    td = np.where(j >= R, j - R, -1)
    rq, rs = (k >= 3) & (j < 0), (j >= 0) & (j < R)
    ak = rs & ((m3 == 2) | ((nr % 2 == 1) & (j == R - 1)))
    dat = rs & ~ak
    d = blk * 2 + m3
    hs0, hs1, hs2, t0, t1, t2 = k == 0, k == 1, k == 2, td == 0, td == 1, td == 2
    qend, send = isn_c + 1 + req, isn_s + 1 + resp
    conds = [hs0, hs1, hs2, rq, dat, ak, t0, t1, t2]
    seq = np.select(conds, [isn_c, isn_s, isn_c + 1, isn_c + 1 + qi * MSS, isn_s + 1 + d * MSS,
                            qend, qend, send, qend + 1])
    ack = np.select(conds, [0, isn_c + 1, isn_s + 1, isn_s + 1, qend,
                            isn_s + 1 + np.minimum((blk * 2 + 2) * MSS, resp), send, qend + 1,
                            send + 1])
    last = (rq & (qi == nq - 1)) | (dat & (d == nr - 1))
    u = rng.random(loc.size)
    gap = np.select([hs1, hs2, rq & (qi == 0), rq, dat & (d == 0), dat, ak, t0, t1],
                    [g["rtt"], 30 + 270 * u, 5 + 75 * u, 2 + 13 * u, g["rtt"] + g["think"],
                     g["gap"] * (0.6 + 0.8 * u), 15 + 135 * u, g["idle"], g["rtt"]],
                    30 + 270 * u)
    gap = np.where(hs0, 0, np.maximum(gap.astype(np.int64), 1))
    cs = np.cumsum(gap)
    m = np.zeros(loc.size, META)
    m["t"] = g["start"] + cs - cs[first][loc]
    m["fid"] = idx[loc]
    m["flags"] = np.select([hs0, hs1, t0 & g["rst"].astype(bool), t0 | t1],
                           [SYN, SYN | ACK, RST | ACK, FIN | ACK], ACK) | PSH * last
    m["dir"] = hs1 | dat | t1  # 1 = server to client
    m["opt"] = k < 2
    m["seq"], m["ack"] = seq & 0xFFFFFFFF, ack & 0xFFFFFFFF
    m["plen"] = np.select([rq, dat], [np.minimum(MSS, req - qi * MSS),
                                      np.minimum(MSS, resp - d * MSS)], 0)
    # Mark the first request and response segment of HTTP flows: they get text heads.
    http = np.isin(fl["sport"][idx][loc], (80, 8080))
    m["tmpl"] = np.select([http & rq & (qi == 0), http & dat & (d == 0)], [0, 1], -1)
    return m


def _dns_meta(fl: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    m = np.zeros(2 * idx.size, META)
    m["fid"], m["dir"] = np.repeat(idx, 2), np.tile([0, 1], idx.size)
    delay = np.maximum(fl["rtt"][idx].astype(np.int64), 1)
    m["t"] = np.column_stack([fl["start"][idx], fl["start"][idx] + delay]).ravel()
    m["plen"] = np.column_stack([fl["req"][idx], fl["resp"][idx]]).ravel()
    m["tmpl"] = np.column_stack([2 * fl["tmpl"][idx], 2 * fl["tmpl"][idx] + 1]).ravel()
    return m


def _geometry(m: np.ndarray, fl: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    v6, udp = fl["v6"][m["fid"]].astype(bool), fl["proto"][m["fid"]] == 17
    plen = m["plen"].astype(np.int64)
    l4h = np.where(udp, 8, 20 + 4 * m["opt"].astype(np.int64))
    return {"v6": v6, "udp": udp, "l4h": l4h, "plen": plen,
            "rec": 50 + 20 * v6 + l4h + plen}  # 16 record + 14 Ethernet + 20/40 IP


def _render(m: np.ndarray, g: dict[str, np.ndarray], fl: dict[str, np.ndarray],
            h: dict[str, np.ndarray], tm: dict[str, np.ndarray], rb: _RandBuf,
            rng: np.random.Generator, ipid0: int) -> np.ndarray:
    """Build the pcap records for ``m`` as one byte block."""
    n, fid, sd = len(m), m["fid"], m["dir"] == 1
    v6, udp, l4h, plen, rec = g["v6"], g["udp"], g["l4h"], g["plen"], g["rec"]
    off = np.cumsum(rec) - rec
    a = int(rng.integers(0, rb.buf.size - int(rec.sum()) + 1))
    out = rb.buf[a:a + int(rec.sum())].copy()  # payload bytes are already in place
    pay = off + rec - plen
    psum = rb.segsum(a + pay, plen)
    u = np.flatnonzero(udp)
    if u.size:  # overwrite DNS payloads with their wire-format messages
        tid, txid = m["tmpl"][u], fl["txid"][fid[u]]
        out[_ranges(pay[u], plen[u])] = tm["buf"][_ranges(tm["off"][tid], plen[u])]
        out[pay[u]], out[pay[u] + 1] = txid >> 8, txid & 0xFF
        psum[u] = tm["wsum"][tid] + txid
    w = np.flatnonzero((m["tmpl"] >= 0) & ~udp)
    if w.size:  # HTTP heads replace the start of the random payload
        heads = [_http_head(q == 0, int(fl["req" if q == 0 else "resp"][i]), int(fl["srv"][i]))
                 for q, i in zip(m["tmpl"][w].tolist(), fid[w].tolist(), strict=True)]
        hlen = np.array([len(x) for x in heads])
        out[_ranges(pay[w], hlen)] = np.frombuffer(b"".join(heads), np.uint8)
        psum[w] += np.array([_wsum(x) for x in heads]) - rb.segsum(a + pay[w], hlen)
    cli, srv, cport, sport = fl["cli"][fid], fl["srv"][fid], fl["cport"][fid], fl["sport"][fid]
    proto, l4len = np.where(udp, 17, 6), l4h + plen
    ws4 = h["cli4_ws"][cli] + h["srv4_ws"][srv]
    ws = np.where(v6, h["cli6_ws"][cli] + h["srv6_ws"][srv], ws4)  # pseudo-header addresses
    seq, ack = m["seq"].astype(np.int64), m["ack"].astype(np.int64)
    doff, flags, opt = (l4h // 4) << 4, m["flags"].astype(np.int64), m["opt"].astype(np.int64)
    th = ((seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF) + (doff << 8) + flags
          + WIN + opt * (0x0204 + 0x05B4))
    l4sum = _csum(ws + proto + l4len + cport + sport + np.where(udp, l4len, th) + psum)
    l4sum[udp & (l4sum == 0)] = 0xFFFF  # 0 means "no checksum" in UDP
    ttl = np.where(sd, h["srv_ttl"][srv], 64)
    ipid = (ipid0 + np.arange(n)) & 0xFFFF
    cmac, c6, s6 = h["cli_mac"][cli], h["cli6"][cli], h["srv6"][srv]
    c4, s4 = h["cli4"][cli], h["srv4"][srv]
    cols = {"ts_sec": EPOCH + m["t"] // 1_000_000, "ts_usec": m["t"] % 1_000_000,
            "incl": rec - 16, "orig": rec - 16, "dmac": np.where(sd[:, None], cmac, GW_MAC),
            "smac": np.where(sd[:, None], GW_MAC, cmac), "etype": np.where(v6, 0x86DD, 0x0800),
            "vihl": 0x45, "tlen": 20 + l4len, "ipid": ipid, "frag": 0x4000, "ttl": ttl,
            "proto": proto, "src4": np.where(sd, s4, c4), "dst4": np.where(sd, c4, s4),
            "ipsum": _csum(0x4500 + 20 + l4len + ipid + 0x4000 + (ttl << 8) + proto + ws4),
            "vtf": 0x60000000 | (fid.astype(np.int64) * 2654435761 & 0xFFFFF),
            "plen6": l4len, "nh": proto, "hlim": ttl, "src6": np.where(sd[:, None], s6, c6),
            "dst6": np.where(sd[:, None], c6, s6), "sport": np.where(sd, sport, cport),
            "dport": np.where(sd, cport, sport), "seq": seq, "ack": ack, "doff": doff,
            "flags": flags, "win": WIN, "l4sum": l4sum, "opt": 0x020405B4, "ulen": l4len}
    kind = np.where(udp, 2, opt)
    for (is6, k), dt in _DTYPES.items():
        sel = np.flatnonzero((v6 == is6) & (kind == k))
        if sel.size:
            hdr = np.zeros(sel.size, dt)
            for name in dt.names or ():
                if name in cols:
                    v = cols[name]
                    hdr[name] = v[sel] if isinstance(v, np.ndarray) else v
            out[(off[sel, None] + np.arange(dt.itemsize)).ravel()] = hdr.view(np.uint8)
    return out


def generate(path: str | Path, size_bytes: int, seed: int = 1, mix: str = "bulk") -> dict:
    """Write a synthetic Ethernet pcap of roughly ``size_bytes`` bytes.

    Args:
        path: Output file (classic little-endian microsecond pcap, linktype 1).
        size_bytes: Target size; generation stops at the first flow boundary past it.
        seed: Seed of the random generator; the same seed gives identical bytes.
        mix: "bulk" (large transfers) or "interactive" (short exchanges, small packets).

    Returns:
        Summary with keys packets, bytes, tcp_flows, udp_flows, ipv6_flows, duration_s.
    """
    rng = np.random.default_rng(seed)
    h = _hosts(rng)
    tm = _dns_templates(rng, h)
    fl, rb = _flow_table(rng, size_bytes, tm["len"], mix), _RandBuf(rng, 3 * CHUNK)
    nflows, packets, t_first, t_last = fl["start"].size, 0, None, 0
    pending = np.zeros(0, META)
    with Path(path).open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for b in range(0, nflows, FLOWS_PER_STEP):
            idx = np.arange(b, min(b + FLOWS_PER_STEP, nflows))
            tcp = fl["proto"][idx] == 6
            pending = np.concatenate([pending, _tcp_meta(fl, idx[tcp], rng),
                                      _dns_meta(fl, idx[~tcp])])
            pending = pending[np.argsort(pending["t"], kind="stable")]
            # Later steps only add flows starting at or after the next start, so every
            # pending packet before it is final and can be written in order.
            nxt = idx[-1] + 1
            cut = pending.size if nxt == nflows else np.searchsorted(pending["t"],
                                                                     fl["start"][nxt])
            m, pending = pending[:cut], pending[cut:]
            if not m.size:
                continue
            t_first = int(m["t"][0]) if t_first is None else t_first
            t_last = int(m["t"][-1])
            g = _geometry(m, fl)
            piece = (np.cumsum(g["rec"]) - 1) // CHUNK
            bounds = [0, *(np.flatnonzero(np.diff(piece)) + 1).tolist(), m.size]
            for s, e in itertools.pairwise(bounds):
                gs = {key: v[s:e] for key, v in g.items()}
                f.write(_render(m[s:e], gs, fl, h, tm, rb, rng, packets).data)
                packets += e - s
        size = f.tell()
    return {"packets": packets, "bytes": size, "tcp_flows": int((fl["proto"] == 6).sum()),
            "udp_flows": int((fl["proto"] == 17).sum()), "ipv6_flows": int(fl["v6"].sum()),
            "duration_s": round((t_last - (t_first or 0)) / 1e6, 3)}


def _parse_size(text: str) -> int:
    """Parse ``512K``, ``100M``, ``1G`` (binary multiples) or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size: {text!r}")
    exp = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**exp)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the summary as JSON."""
    ap = argparse.ArgumentParser(description="Generate a synthetic benchmark pcap.")
    ap.add_argument("out", type=Path, help="output .pcap path")
    ap.add_argument("--size", type=_parse_size, default=_parse_size("100M"),
                    help="target size with optional K/M/G suffix (default 100M)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--mix", choices=sorted(MIXES), default="bulk", help="traffic shape")
    args = ap.parse_args(argv)
    print(json.dumps(generate(args.out, args.size, args.seed, args.mix)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
