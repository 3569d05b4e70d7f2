"""Network evidence: the packet pass (decode, fragments, connections) and its tables.

The compiled kernels (``_walk``, ``_decode``, ``_flows``) are cached on disk by
numba after their first use; :func:`warmup` compiles them up front, which
``make test`` does once before starting parallel test workers so that they do
not race to write the same cache.
"""

from __future__ import annotations

__all__ = ["warmup"]


def warmup() -> None:
    """Compile (or load from cache) every packet-pass kernel on a tiny input."""
    import tempfile
    from pathlib import Path

    from forensics.case import open_case

    # A one-packet pcap exercises the walker, the decoder and the flow table.
    frame = bytes.fromhex(
        "00112233445566778899aabb0800" "45000028000100004006" "0000" "0a0000010a000002"
        "9c40005000000001000000005002200000000000")
    header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
    rec = (1).to_bytes(4, "little") + (0).to_bytes(4, "little") + len(frame).to_bytes(4, "little") * 2
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "warm.pcap"
        p.write_bytes(header + rec + frame)
        with open_case(Path(tmp) / "case") as case:
            case.ingest(p)
