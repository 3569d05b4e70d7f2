"""TCP and UDP conversations against tshark's conversation tables.

Truth: ``tshark -n --enable-heuristic teredo_udp -r FILE -q -z conv,tcp -z conv,udp``
(Wireshark's own dissectors) for every capture in the suricata-verify test folders
of the shared test data. ``-n`` keeps addresses and ports numeric; the Teredo
heuristic is off by default in Wireshark, but Zeek, whose semantics we follow,
finds Teredo on any UDP port by its content (decode-teredo-01 has such a flow).

What is comparable: tshark makes one conversation per (address, port, address,
port) pair seen in any TCP (resp. UDP) layer of a frame, the outer UDP of a
decapsulated tunnel and the connection inside it alike. It never splits a pair
by time-outs, but a TCP pair can appear twice when a new SYN starts a new TCP
stream. Our sessions table follows Zeek instead (splits by time-outs and reuse,
flips originators), so counting sessions would measure those rules, not
decoding. We therefore compare the *set* of distinct unordered endpoint pairs:
on tshark's side the pairs of its table rows (rows of one pair merged), on ours
the pairs of ``packets`` rows with ``ip_proto`` 6 (resp. 17) and ports, at every
tunnel depth. Equal sets mean both decoders found the same TCP/UDP traffic,
through VLAN, MPLS, fragments and tunnels. Each file is one test id. Every
exception is listed in :data:`KNOWN_DIFFERENCES` with its reason; a listed
difference that no longer occurs fails too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED, shared_path

pytestmark = [pytest.mark.shared, pytest.mark.tshark]

SV = SHARED / "suricata-verify" / "tests"
CAPTURES = sorted(p for p in SV.rglob("*") if p.suffix in (".pcap", ".pcapng")) if SV.exists() \
    else []

_Pair = frozenset  # {"addr:port", "addr:port"}

# capture (relative to suricata-verify/tests) -> why the pair sets differ.
KNOWN_DIFFERENCES: dict[str, str] = {}


def tshark_args(exe: str) -> list[str]:
    """The tshark command line (without ``-r FILE``); see the module docstring."""
    return [exe, "-n", "--enable-heuristic", "teredo_udp", "-q", "-z", "conv,tcp", "-z", "conv,udp"]


_ROW = re.compile(r"^(\S+)\s+<->\s+(\S+)\s+\d")


def tshark_pairs(exe: str, capture: Path) -> dict[str, tuple[set[_Pair], int]]:
    """{"tcp"/"udp": (distinct endpoint pairs, number of table rows)} from tshark."""
    # Exit status 2 means tshark met a damaged record: its table covers the frames
    # before it, which is what we compare (our reader warns and resyncs instead).
    proc = subprocess.run([*tshark_args(exe), "-r", str(capture)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 2), proc.stderr
    out = proc.stdout
    res: dict[str, tuple[set[_Pair], int]] = {"tcp": (set(), 0), "udp": (set(), 0)}
    proto = None
    for line in out.splitlines():
        if line.endswith("Conversations"):
            proto = line.split()[0].lower()
            continue
        m = _ROW.match(line)
        if m and proto in res:
            pairs, n = res[proto]
            pairs.add(frozenset(_norm(e) for e in m.groups()))
            res[proto] = (pairs, n + 1)
    return res


def _norm(endpoint: str) -> str:
    addr, _, port = endpoint.rpartition(":")
    return f"{addr.lower()}:{int(port)}"


def our_pairs(case, capture: Path) -> dict[str, set[_Pair]]:
    """{"tcp"/"udp": distinct endpoint pairs} from our packet index.

    Also checks that each pair became a session (the sessions table holds the
    same pairs), so every conversation tshark sees is in our conn.log too.
    """
    res = case.ingest(capture)
    assert res and not res[0].error, res
    q = {
        "packets": "SELECT DISTINCT ip_proto, src, src_p, dst, dst_p FROM packets "
                   "WHERE ip_proto IN (6, 17) AND src_p IS NOT NULL AND dst_p IS NOT NULL",
        "sessions": "SELECT DISTINCT ip_proto, orig_h, orig_p, resp_h, resp_p FROM sessions "
                    "WHERE proto IN ('tcp', 'udp')",
    }
    got = {}
    for table, sql in q.items():
        out: dict[str, set[_Pair]] = {"tcp": set(), "udp": set()}
        for proto, s, sp, d, dp in case.sql(sql).itertuples(index=False):
            out["tcp" if proto == 6 else "udp"].add(frozenset((f"{s}:{int(sp)}", f"{d}:{int(dp)}")))
        got[table] = out
    assert got["sessions"] == got["packets"], "packet pairs without a session, or the reverse"
    return got["packets"]


def _show(pairs: set[_Pair]) -> str:
    return ", ".join(sorted(" <-> ".join(sorted(p)) for p in pairs)[:6])


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: str(p.relative_to(SV)))
def test_conversations_match_tshark(capture: Path, tshark: str, case) -> None:
    shared_path("suricata-verify", "tests")
    name = str(capture.relative_to(SV))
    theirs = tshark_pairs(tshark, capture)
    ours = our_pairs(case, capture)
    problems = []
    for proto in ("tcp", "udp"):
        t, rows = theirs[proto]
        o = ours[proto]
        print(f"{name} {proto}: tshark {rows} rows / {len(t)} pairs, ours {len(o)} pairs")
        if t != o:
            problems.append(f"{proto}: tshark {len(t)} pairs, ours {len(o)}; only tshark: "
                            f"{_show(t - o)}; only ours: {_show(o - t)}")
    if name in KNOWN_DIFFERENCES:
        assert problems, f"{name} now matches tshark: remove it from KNOWN_DIFFERENCES"
        return
    assert not problems, "; ".join(problems)


def test_known_differences_name_real_captures() -> None:
    shared_path("suricata-verify", "tests")
    names = {str(p.relative_to(SV)) for p in CAPTURES}
    assert set(KNOWN_DIFFERENCES) <= names
