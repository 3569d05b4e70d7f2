"""The packet pass: frames in, packet index (Parquet) and sessions out.

Per chunk of frames: decode headers in bulk, reassemble IP fragments, track
connections, and append the chunk's packet-index rows to a Parquet file that is
made visible only when the whole evidence file is committed. Memory is bounded
by the chunk and the number of live connections: ended connections leave the
flow table after every chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forensics.net import _decode as d
from forensics.net import _flows as fl
from forensics.net._fragments import FragmentReassembler
from forensics.net.ports import LIKELY_TCP, LIKELY_UDP
from forensics.sources._frames import NO_TS, FrameBatch
from forensics.tables import TABLES

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.ingest import IngestContext

__all__ = ["NetPipeline", "session_uid"]

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def session_uid(evidence_sha256: str, fid: int) -> str:
    """Deterministic Zeek-style uid ("C" + base62) for a flow of an evidence file.

    ``fid`` is ``first_frame * 2 + tunnel_depth``: the same evidence always
    yields the same uids, so tags and findings survive a rebuild of the case.
    """
    n = int.from_bytes(hashlib.blake2b(f"{evidence_sha256}:{fid}".encode(), digest_size=11).digest())
    out = []
    while n:
        n, k = divmod(n, 62)
        out.append(_B62[k])
    return "C" + "".join(reversed(out)).rjust(15, "0")


def format_addr(hi: int, lo: int) -> str:
    """Text form of a (hi, lo) 128-bit address; IPv4-mapped ones as dotted quads."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def _addr_dict(hi: np.ndarray, lo: np.ndarray, valid: np.ndarray) -> pa.DictionaryArray:
    pairs = np.ascontiguousarray(np.stack([hi, lo], axis=1)).view("V16").ravel()
    uniq, inv = np.unique(pairs, return_inverse=True)
    u64 = uniq.view(np.uint64).reshape(-1, 2)
    names = [format_addr(int(a), int(b)) for a, b in u64]
    return pa.DictionaryArray.from_arrays(
        pa.array(inv.astype(np.int32), mask=~valid), pa.array(names, pa.string()))


def _opt(a: np.ndarray, missing: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.array(a.astype(typ.to_pandas_dtype(), copy=False), type=typ, mask=missing)


class NetPipeline:
    """Packet pass for one capture file (engine use; see :mod:`forensics.ingest`)."""

    def __init__(self, case: Case, evidence_id: str, sha256: str, ctx: IngestContext):
        self.case = case
        self.evidence_id = evidence_id
        self.sha256 = sha256
        self.ctx = ctx
        self.frames = 0
        self.fi, self.fa, self.fh, self.ht = fl.new_state(1 << 14)
        self.nflows = 0
        self.sessions: list[pa.Table] = []
        self.parents: dict[int, set[int]] = {}
        self.frags = FragmentReassembler(ctx)
        self.last_ts = NO_TS
        self.final_dir = case.parquet_dir("packets", evidence_id)
        self.tmp_path = self.final_dir.parent / f".tmp-{evidence_id}-{id(self)}.parquet"
        self.tmp_path.parent.mkdir(parents=True, exist_ok=True)
        self.writer: pq.ParquetWriter | None = None
        self.schema = TABLES["packets"].arrow_schema()

    # ---- per chunk ------------------------------------------------------------------

    def process(self, b: FrameBatch) -> None:
        """Decode, track and index one batch of frames."""
        n = len(b)
        if n == 0:
            return
        frames = np.arange(self.frames + 1, self.frames + n + 1, dtype=np.int64)
        self.frames += n
        self._check_records(b)
        rows = np.empty((2 * n, d.NFIELDS), np.int64)
        addr = np.empty((2 * n, 4), np.uint64)
        nrows = d.decode(b.buf, b.off, b.caplen, b.linktype.astype(np.int64), rows, addr)
        rows, addr = rows[:nrows], addr[:nrows]
        self._warn_errors(b, rows)
        frag_groups = self.frags.process(b, rows, addr, frames)
        fid = np.empty(nrows, np.int64)
        orig = np.empty(nrows, np.int8)
        self._track(rows, addr, b.ts_ns, frames, fid, orig)
        for members, done_row in frag_groups:
            fid[members] = fid[done_row]
            orig[members] = orig[done_row]
        self._record_parents(rows, fid)
        self._write_packets(b, rows, addr, frames, fid, orig)
        self._evict(int(b.ts_ns[-1]) if b.ts_ns[-1] != NO_TS else None)

    def _check_records(self, b: FrameBatch) -> None:
        ts = b.ts_ns
        has = ts != NO_TS
        prev = np.concatenate([[self.last_ts], ts[:-1]])
        back = has & (prev != NO_TS) & (ts < prev)
        if back.any():
            i = int(np.argmax(back))
            self.ctx.warn(b.base + int(b.off[i]), "time_backwards",
                          f"timestamp goes back {(int(prev[i]) - int(ts[i])) / 1e9:.6f} s "
                          "from the previous packet", count=int(back.sum()))
        if has.any():
            self.last_ts = int(ts[has][-1])
        cut = b.caplen < b.wirelen
        if cut.any():
            i = int(np.argmax(cut))
            self.ctx.warn(b.base + int(b.off[i]), "snaplen_cut",
                          f"{int(cut.sum())} packets captured shorter than on the wire "
                          f"(first: {int(b.caplen[i])} of {int(b.wirelen[i])} bytes)",
                          severity="info", count=int(cut.sum()))

    def _warn_errors(self, b: FrameBatch, rows: np.ndarray) -> None:
        err = rows[:, d.F_ERR]
        for code in np.unique(err[err != 0]):
            m = err == code
            i = int(np.argmax(m))
            frame_i = int(rows[i, d.F_FRAME])
            text = d.ERR_TEXT.get(int(code), "decode error")
            if code == d.ERR_LINKTYPE:
                text += f" ({int(b.linktype[frame_i])})"
            # Cut by the snapshot length is expected, not damage.
            sev = "info" if code == d.ERR_TRUNC_L4 and b.caplen[frame_i] < b.wirelen[frame_i] else "warning"
            self.ctx.warn(b.base + int(b.off[frame_i]), f"decode_{code}",
                          f"{text}: {int(m.sum())} packet(s), first shown", severity=sev,
                          count=int(m.sum()))

    def _track(self, rows: np.ndarray, addr: np.ndarray, ts: np.ndarray, frames: np.ndarray,
               fid: np.ndarray, orig: np.ndarray) -> None:
        start = 0
        nrows = rows.shape[0]
        while True:
            need = self.nflows + (nrows - start) + 1
            if need > self.fi.shape[0]:
                self._grow(need)
            done = np.empty(nrows - start + 1, np.int64)
            r_end, self.nflows, ndone = fl.track(
                rows[start:], addr[start:], nrows - start, ts, frames, self.fi, self.fa, self.fh,
                self.ht, self.nflows, LIKELY_TCP, LIKELY_UDP, fid[start:], orig[start:], done)
            if ndone:
                self._emit(done[:ndone])
            start += r_end
            if start >= nrows:
                return

    def _grow(self, need: int) -> None:
        cap = self.fi.shape[0]
        while cap < need:
            cap *= 2
        fi, fa, fh, ht = fl.new_state(cap)
        n = self.nflows
        fi[:n], fa[:n], fh[:n] = self.fi[:n], self.fa[:n], self.fh[:n]
        self.fi, self.fa, self.fh, self.ht = fi, fa, fh, ht
        fl.rebuild_index(self.fi, self.fa, n, self.ht)

    def _record_parents(self, rows: np.ndarray, fid: np.ndarray) -> None:
        inner = np.nonzero((rows[:, d.F_DEPTH] == 1) & (fid >= 0))[0]
        if not inner.size:
            return
        outer = inner - 1
        ok = (outer >= 0) & (rows[outer, d.F_FRAME] == rows[inner, d.F_FRAME]) & (fid[outer] >= 0)
        for a, b in set(zip(fid[inner[ok]].tolist(), fid[outer[ok]].tolist(), strict=True)):
            self.parents.setdefault(a, set()).add(b)

    def _evict(self, now: int | None) -> None:
        """Move ended and idle connections out of the flow table."""
        n = self.nflows
        if n == 0:
            return
        fi = self.fi[:n]
        alive = fi[:, fl.FI_ALIVE] == 1
        if now is not None:
            idle = alive & (now >= fi[:, fl.FI_LAST_TS] + fl.TCP_TIMEOUT)
            if idle.any():
                self._emit(np.nonzero(idle)[0])
                alive &= ~idle
        keep = np.nonzero(alive)[0]
        if keep.size == n:
            return
        m = keep.size
        self.fi[:m], self.fa[:m], self.fh[:m] = self.fi[keep], self.fa[keep], self.fh[keep]
        self.fi[m:n] = 0
        self.nflows = m
        fl.rebuild_index(self.fi, self.fa, m, self.ht)

    # ---- sessions --------------------------------------------------------------------

    def _emit(self, idx: np.ndarray) -> None:
        """Turn flow-table rows into sessions rows (Zeek conn.log semantics)."""
        if idx.size == 0:
            return
        fi, fa, fh = self.fi[idx], self.fa[idx], self.fh[idx]
        fi_full = self.fi
        self.fi[idx, fl.FI_ALIVE] = 0
        o, r = fl.EB, fl.EB + fl.EN
        rows = []
        for k, f in enumerate(idx.tolist()):
            v = fi[k]
            trans = int(v[fl.FI_TRANS])
            hist = bytes(fh[k, : v[fl.FI_HLEN]]).decode("ascii")
            start, last = int(v[fl.FI_START_TS]), int(v[fl.FI_LAST_TS])
            dur = (last - start) / 1e9
            if trans == fl.T_TCP:
                osz, rsz = fl.tcp_size(fi_full, f, o), fl.tcp_size(fi_full, f, r)
                state = fl.conn_state(int(v[o + fl.E_STATE]), int(v[r + fl.E_STATE]), osz, rsz,
                                      hist, trans)
            else:
                osz, rsz = max(int(v[fl.FI_OLEN]), 0), max(int(v[fl.FI_RLEN]), 0)
                state = fl.conn_state(int(v[fl.FI_OLEN] >= 0), int(v[fl.FI_RLEN] >= 0), osz, rsz,
                                      hist, trans)
            fid = int(v[fl.FI_FIRST_FRAME]) * 2 + int(v[fl.FI_DEPTH])
            parents = self.parents.pop(fid, None)
            missed = 0
            if trans == fl.T_TCP:
                missed = sum(max(0, int(v[e + fl.E_HOLES]) - int(v[e + fl.E_FILLS])) for e in (o, r))
            rows.append({
                "uid": session_uid(self.sha256, fid),
                "ts_ns": start, "ts_end_ns": last,
                "duration": dur if dur > 0 else None,
                "proto": fl.TRANSPORT_NAMES[trans], "ip_proto": int(v[fl.FI_PROTO]),
                "orig_h": format_addr(int(fa[k, 0]), int(fa[k, 1])), "orig_p": int(v[fl.FI_OP]),
                "resp_h": format_addr(int(fa[k, 2]), int(fa[k, 3])), "resp_p": int(v[fl.FI_RP]),
                "orig_bytes": osz if dur > 0 else None, "resp_bytes": rsz if dur > 0 else None,
                "conn_state": state, "history": hist or None, "missed_bytes": missed,
                "orig_pkts": int(v[fl.FI_OPKTS]), "orig_ip_bytes": int(v[fl.FI_OIPB]),
                "resp_pkts": int(v[fl.FI_RPKTS]), "resp_ip_bytes": int(v[fl.FI_RIPB]),
                "vlan": int(v[fl.FI_VLAN]) if v[fl.FI_VLAN] >= 0 else None,
                "inner_vlan": int(v[fl.FI_VLAN2]) if v[fl.FI_VLAN2] >= 0 else None,
                "tunnel": d.TUNNEL_NAMES.get(int(v[fl.FI_TUN])),
                "tunnel_parents": sorted(session_uid(self.sha256, p) for p in parents) if parents else None,
                "source": "pcap", "evidence_id": self.evidence_id,
                "first_frame": int(v[fl.FI_FIRST_FRAME]), "last_frame": int(v[fl.FI_LAST_FRAME]),
            })
        tbl = pa.Table.from_pylist(rows)
        ts = pa.array(tbl.column("ts_ns").to_numpy() // 1000, pa.int64()).cast(pa.timestamp("us", "UTC"))
        te = pa.array(tbl.column("ts_end_ns").to_numpy() // 1000, pa.int64()).cast(pa.timestamp("us", "UTC"))
        tbl = tbl.drop_columns(["ts_ns", "ts_end_ns"]).append_column("ts", ts).append_column("ts_end", te)
        self.sessions.append(TABLES["sessions"].conform(tbl))

    def sessions_table(self) -> pa.Table:
        """All sessions of the file, in order of first packet."""
        if not self.sessions:
            return TABLES["sessions"].empty()
        t = pa.concat_tables(self.sessions)
        return t.sort_by([("first_frame", "ascending")])

    # ---- packet index ----------------------------------------------------------------

    def _write_packets(self, b: FrameBatch, rows: np.ndarray, addr: np.ndarray,
                       frames: np.ndarray, fid: np.ndarray, orig: np.ndarray) -> None:
        fi_ = rows[:, d.F_FRAME]
        n = rows.shape[0]
        ts = b.ts_ns[fi_]
        isip = rows[:, d.F_IPV] != 0
        tcp = rows[:, d.F_PROTO] == 6
        tcp_ok = tcp & (rows[:, d.F_SPORT] >= 0)
        ports_ok = rows[:, d.F_SPORT] >= 0
        payoff = rows[:, d.F_PAYOFF]
        # Payload of a reassembled datagram is not contiguous in the file.
        no_pay = (payoff < 0) | ((rows[:, d.F_FRAG] & 8) != 0)
        uid_keys, uid_inv = np.unique(fid, return_inverse=True)
        uid_names = [session_uid(self.sha256, int(k)) if k >= 0 else "" for k in uid_keys]
        tun = rows[:, d.F_TUNNEL]
        errs = rows[:, d.F_ERR]
        err_names = [d.ERR_TEXT.get(i, "") for i in range(9)]
        tun_names = ["", *[d.TUNNEL_NAMES[i] for i in range(1, 6)]]
        cols = {
            "evidence_id": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, np.int32)), pa.array([self.evidence_id])),
            "frame": pa.array(frames[fi_]),
            "ts_ns": pa.array(ts, mask=ts == NO_TS),
            "file_offset": pa.array(b.base + b.off[fi_]),
            "caplen": pa.array(b.caplen[fi_].astype(np.int32)),
            "wirelen": pa.array(b.wirelen[fi_].astype(np.int32)),
            "interface": pa.array(b.iface[fi_]),
            "linktype": pa.array(b.linktype[fi_]),
            "tunnel_depth": pa.array(rows[:, d.F_DEPTH].astype(np.uint8)),
            "tunnel": pa.DictionaryArray.from_arrays(
                pa.array(tun.astype(np.int32), mask=tun == 0), pa.array(tun_names)),
            "vlan": _opt(rows[:, d.F_VLAN], rows[:, d.F_VLAN] < 0, pa.int16()),
            "inner_vlan": _opt(rows[:, d.F_VLAN2], rows[:, d.F_VLAN2] < 0, pa.int16()),
            "ethertype": _opt(rows[:, d.F_ETHERTYPE], rows[:, d.F_ETHERTYPE] < 0, pa.int32()),
            "ip_version": _opt(rows[:, d.F_IPV], ~isip, pa.uint8()),
            "src": _addr_dict(addr[:, d.A_SRC_HI], addr[:, d.A_SRC_LO], isip),
            "dst": _addr_dict(addr[:, d.A_DST_HI], addr[:, d.A_DST_LO], isip),
            "ip_proto": _opt(rows[:, d.F_PROTO], rows[:, d.F_PROTO] < 0, pa.int16()),
            "src_p": _opt(rows[:, d.F_SPORT], ~ports_ok, pa.int32()),
            "dst_p": _opt(rows[:, d.F_DPORT], ~ports_ok, pa.int32()),
            "ip_len": _opt(rows[:, d.F_IPLEN], ~isip, pa.int32()),
            "tcp_flags": _opt(rows[:, d.F_FLAGS], ~tcp_ok, pa.int16()),
            "seq": _opt(rows[:, d.F_SEQ], ~tcp_ok, pa.uint32()),
            "ack": _opt(rows[:, d.F_ACK], ~tcp_ok, pa.uint32()),
            "window": _opt(rows[:, d.F_WIN], ~tcp_ok, pa.uint16()),
            "payload_offset": pa.array(b.base + payoff, mask=no_pay),
            "payload_len": _opt(rows[:, d.F_PAYLEN], ~isip, pa.int32()),
            "payload_wire_len": _opt(rows[:, d.F_PAYWIRE], ~isip, pa.int32()),
            "frag": _opt(rows[:, d.F_FRAG], ~isip, pa.uint8()),
            "error": pa.DictionaryArray.from_arrays(
                pa.array(errs.astype(np.int32), mask=errs == 0), pa.array(err_names)),
            "uid": pa.DictionaryArray.from_arrays(
                pa.array(uid_inv.astype(np.int32).ravel(), mask=fid < 0), pa.array(uid_names)),
            "is_orig": pa.array(orig.astype(bool), mask=fid < 0),
        }
        tbl = pa.Table.from_pydict(cols, schema=self.schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp_path, self.schema, compression="lz4")
        self.writer.write_table(tbl)

    # ---- end -------------------------------------------------------------------------

    def finish(self) -> None:
        """Flush every connection still open and close the packet index."""
        for w in self.frags.flush():
            del w
        self._emit(np.nonzero(self.fi[: self.nflows, fl.FI_ALIVE] == 1)[0])
        self.nflows = 0
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp_path, self.schema, compression="lz4")
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()

    def publish(self) -> None:
        """Make the packet index visible (atomic rename into the evidence's partition)."""
        self.final_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_path.replace(self.final_dir / "part-0.parquet")

    def abort(self) -> None:
        """Drop the half-written packet index."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        Path(self.tmp_path).unlink(missing_ok=True)
