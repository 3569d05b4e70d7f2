"""The investigation widgets, headless: drive them through their public state and assert what they show.

Two cases: a generated breach scenario (small profile, fixed seed) for the graph,
the timeline and the scope, and a hand-built capture whose every byte is known:
a keep-alive HTTP session (gzip text, a PNG), a session whose request and
response carry ``<script>`` and ``<img onerror>`` markup in the URI, headers and
body, and a session with a lost segment and a retransmission whose bytes differ.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re

import dpkt
import pandas as pd
import pytest
from _pcapbuild import T0, eth, tcp_pkt, write_pcap

import forensics

W = pytest.importorskip("ipywidgets", reason="needs the lab extra (pip install -e '.[lab]')")
pytest.importorskip("matplotlib", reason="needs the lab extra (pip install -e '.[lab]')")

from forensics import report_sections as rs  # noqa: E402
from widgets import _html  # noqa: E402
from widgets.graph import GraphExplorer  # noqa: E402
from widgets.replay import SessionReplay  # noqa: E402
from widgets.scope import ScopeSummary  # noqa: E402
from widgets.timeline import Timeline  # noqa: E402

HOSTILE = b"<script>alert(1)</script><img src=x onerror=alert(2)>"
HOSTILE_BODY = b"<html><body>" + HOSTILE + b"</body></html>"
RAW_MARKUP = ("<script", "<img src=x", "onerror=alert(2)>")  # never in widget HTML unescaped


# ---- the hand-built capture --------------------------------------------------------------------------


def tcp_conversation(client: str, server: str, cport: int, sport: int, exchanges: list[tuple[bool, bytes]],
                     *, drop: frozenset[int] = frozenset(), conflict: int | None = None,
                     mss: int = 1000) -> list[bytes]:
    """A TCP session (handshake, data in ``mss`` segments, FIN) as raw IPv4 packets.

    ``drop`` leaves data segments out (a gap); ``conflict`` sends that segment a
    second time with different bytes (a retransmission conflict: the first copy wins).
    """
    A, S, F, P = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
    cs, ss = 1001, 5001
    pk = [tcp_pkt(client, server, cport, sport, S, cs - 1, 0),
          tcp_pkt(server, client, sport, cport, S | A, ss - 1, cs),
          tcp_pkt(client, server, cport, sport, A, cs, ss)]
    seg = 0
    for is_orig, data in exchanges:
        for i in range(0, len(data), mss):
            chunk = data[i:i + mss]
            if is_orig:
                args = (client, server, cport, sport, P | A, cs, ss)
                cs += len(chunk)
            else:
                args = (server, client, sport, cport, P | A, ss, cs)
                ss += len(chunk)
            if seg not in drop:
                pk.append(tcp_pkt(*args, chunk))
            if seg == conflict:
                pk.append(tcp_pkt(*args, bytes(b ^ 0x20 for b in chunk)))
            seg += 1
    pk += [tcp_pkt(client, server, cport, sport, F | A, cs, ss),
           tcp_pkt(server, client, sport, cport, F | A, ss, cs + 1),
           tcp_pkt(client, server, cport, sport, A, cs + 1, ss + 1)]
    return [bytes(p) for p in pk]


def png_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def build_capture(path):
    """Write the hand-built capture; returns its path."""
    png, text = png_bytes(), b"hello analyst " * 40
    gz = gzip.compress(text, mtime=0)
    normal = [
        (True, b"GET /index.html HTTP/1.1\r\nHost: intranet.example\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: "
         + str(len(gz)).encode() + b"\r\n\r\n" + gz),
        (True, b"GET /logo.png HTTP/1.1\r\nHost: intranet.example\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: " + str(len(png)).encode()
         + b"\r\n\r\n" + png),
        (True, b"GET /bye HTTP/1.1\r\nHost: intranet.example\r\n\r\n"),
        (False, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]
    hostile = [
        (True, b"GET /" + HOSTILE.replace(b" ", b"%20") + b" HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: "
         + HOSTILE + b"\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Evil: " + HOSTILE + b"\r\nContent-Length: "
         + str(len(HOSTILE_BODY)).encode() + b"\r\n\r\n" + HOSTILE_BODY),
    ]
    lossy = [(True, b"A" * 2500), (False, b"B" * 1500), (True, b"C" * 1200)]
    frames = [eth(p) for p in tcp_conversation("10.0.0.5", "10.0.0.80", 41000, 80, normal)]
    frames += [eth(p) for p in tcp_conversation("10.0.0.6", "10.0.0.66", 41001, 80, hostile)]
    frames += [eth(p) for p in tcp_conversation("10.0.0.7", "10.0.0.77", 41002, 9000, lossy, drop={1},
                                                 conflict=3)]
    return write_pcap(path, frames, times=[T0 + i * 0.05 for i in range(len(frames))])


def build_hand_case(tmp, *, scan: bool = True):
    """Ingest the capture, run the protocol pass, carve the hostile body, YARA-scan it and match a feed."""
    from forensics import filestore, ioc

    cap = build_capture(tmp / "hostile.pcap")
    with forensics.open_case(tmp / "case") as c:
        c.ingest(cap)
        uids = {r.resp_h: r.uid for r in c.sessions().itertuples()}
        if scan:
            filestore.store(c, HOSTILE_BODY, claimed_name="<img src=x onerror=alert(3)>.html",
                            protocol="http", uid=uids["10.0.0.66"], direction="download",
                            ts=pd.Timestamp(T0, unit="s", tz="UTC"))
            rules = tmp / "t.yar"
            rules.write_text('rule hostile_markup { strings: $a = "onerror=alert" condition: $a }\n')
            pytest.importorskip("yara", reason="needs yara-python (test extra)")
            from forensics import yarascan

            yarascan.scan(c, [rules], workers=1)
            feed = tmp / "feed.txt"
            feed.write_text(hashlib.sha256(HOSTILE_BODY).hexdigest() + "\n")
            ioc.import_feed(c, feed, "hashes", kind="sha256")
            feed2 = tmp / "domains.txt"
            feed2.write_text("evil.example\n")
            ioc.import_feed(c, feed2, "domains", kind="domain")
            ioc.match(c)
    return tmp / "case", uids


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    case_dir, uids = build_hand_case(tmp_path_factory.mktemp("hand"))
    c = forensics.open_case(case_dir, read_only=True)
    yield c, uids
    c.close()


@pytest.fixture(scope="session")
def scenario_case(tmp_path_factory):
    """The small generated breach, ingested and analysed (lateral, scope, exfil, detections, risk)."""
    from forensics import detect, exfil, lateral, risk, scenario, scope

    tmp = tmp_path_factory.mktemp("scenario")
    key = scenario.generate(tmp / "scn", seed=3, profile="small")
    with forensics.open_case(tmp / "case") as c:
        c.ingest(tmp / "scn" / "evidence")
        lateral.lateral_edges(c, rebuild=True)
        res = scope.scope(c, key["patient_zero"]["host"], key["patient_zero"]["time"])
        exfil.exfil(c)
        detect.detect(c)
        risk.load_inventory(c, tmp / "scn" / "inventory.csv")
        risk.risk_register(c, res)
    c = forensics.open_case(tmp / "case", read_only=True)
    yield c, key
    c.close()


def html_of(*widgets) -> str:
    """Every HTML value under the given widgets (the markup the browser would get)."""
    out, todo = [], list(widgets)
    while todo:
        w = todo.pop()
        if isinstance(w, W.HTML):
            out.append(w.value)
        todo.extend(getattr(w, "children", ()) or ())
    return "\n".join(out)


def assert_no_markup(text: str) -> None:
    for raw in RAW_MARKUP:
        assert raw not in text, f"unescaped {raw!r} reached HTML"


# ---- SessionReplay --------------------------------------------------------------------------------------


def test_replay_filters_and_search(hand):
    c, uids = hand
    r = SessionReplay(c)
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.80"], uids["10.0.0.66"], uids["10.0.0.77"]]
    r.host.value = "10.0.0.66"
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.66"]]
    r.host.value, r.port.value = "", "9000"
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.77"]]
    r.port.value = "nine"
    assert "port must be a number" in r.count.value
    r.port.value, r.search.value = "", "EVIL.example"  # the HTTP Host, case-insensitive
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.66"]]
    r.search.value = "hello analyst"  # inside a gzip body: not metadata
    assert r.sessions.options == ()
    r.search.value, r.in_payload.value = "onerror", True
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.66"]]
    r.search.value, r.in_payload.value = "", False
    start = pd.Timestamp(T0, unit="s", tz="UTC")
    r.time_range = (start + pd.Timedelta(seconds=0.5), start + pd.Timedelta(seconds=2))
    assert [o[1] for o in r.sessions.options] == [uids["10.0.0.66"], uids["10.0.0.77"]]
    assert r.since.value == "2023-11-14T22:13:20.500Z"
    only = SessionReplay(c, c.sessions(host="10.0.0.5"))
    assert [o[1] for o in only.sessions.options] == [uids["10.0.0.80"]]


def test_replay_steps_turn_by_turn_client_and_server_apart(hand):
    c, uids = hand
    r = SessionReplay(c, uid=uids["10.0.0.80"])
    assert r.selected_session == uids["10.0.0.80"] and r.sessions.value == uids["10.0.0.80"]
    assert r.value == {"uid": uids["10.0.0.80"], "position": 0, "turns": 6, "turn": None, "ts": None}
    assert "Press Play" in r.conversation_view.value
    r.step_button.click()
    assert r.position == 1 and r.turn_slider.value == 1 and r.player.value == 1
    conv = r.conversation_view.value
    assert conv.count('class="bb-turn') == 1 and "bb-orig bb-current" in conv and "GET /index.html" in conv
    assert "turn 1 of 6 · client → server" in r.status.value
    r.step_button.click()
    conv = r.conversation_view.value
    assert "bb-resp bb-current" in conv and conv.count('class="bb-turn') == 2
    assert _html.CLIENT in conv and _html.SERVER in conv  # told apart by colour (and side)
    assert r.value["turn"] == 1 and r.value["ts"].startswith("2023-11-14T22:13:20")
    assert "00000000" in r.hex_view.value and "HTTP/1.1 200 OK" in r.hex_view.value
    r.back_button.click()
    assert r.position == 1 and conv.count('class="bb-turn') == 2
    r.turn_slider.value = 6  # the slider drives the same state
    assert r.value["turn"] == 5 and "204 No Content" in r.conversation_view.value
    r.time_slider.value = 0.0  # back to the moment of the first turn
    assert r.position == 1
    assert r.time_slider.max == pytest.approx(r._offset(5))
    # Play starts the browser-side timer; its interval follows the capture (real time) or the speed.
    r.play_button.click()
    assert r.player.playing and r.play_button.description == "Pause"
    gap_ms = (r._offset(2) - r._offset(1)) * 1000
    assert r.player.interval == max(int(gap_ms), 60)
    r.play_button.click()
    assert not r.player.playing and r.play_button.description == "Play"
    r.speed.value = "steady"
    assert r.player.interval == 1000
    r.speed.value = "step"  # by hand: the timer is off
    assert r.play_button.disabled and r.player.disabled
    r.play_button.click()
    assert not r.player.playing
    r.step(100)
    assert r.position == 6


def test_replay_http_view_decodes_gzip_and_reencodes_images(hand):
    c, uids = hand
    r = SessionReplay(c, uid=uids["10.0.0.80"])
    r.step(4)
    http = r.http_view.value
    assert "hello analyst hello analyst" in http and "gzip decoded" in http
    assert "data:image/png;base64," in http and "re-encoded as PNG" in http
    original = base64.b64encode(png_bytes()).decode()
    assert original not in http  # the browser gets our pixels, never the captured bytes
    assert "GET /bye" not in http  # not played yet
    r.step(2)
    assert "204 No Content" in r.http_view.value


def test_replay_hostile_session_shows_markup_as_text(hand):
    c, uids = hand
    r = SessionReplay(c, uid=uids["10.0.0.66"])
    r.step(2)
    everything = html_of(r) + "".join(o[0] for o in r.sessions.options)
    assert_no_markup(everything)
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
    assert esc in r.conversation_view.value  # response header and body, as text
    assert r.http_view.value.count(esc) >= 3  # User-Agent, X-Evil header, body
    # The carved body: its stored name is hostile too; the YARA rule and the hash indicator are listed.
    assert "hostile_markup" in r.http_view.value and "hashes:" in r.http_view.value
    # Ingest carved the same body under a name from the (hostile) URI; the test stored it
    # by hand under another hostile name: whichever is shown, it is shown as text.
    assert ("&lt;img src=x onerror=alert(3)&gt;.html" in r.http_view.value
            or "onerror=alert(2)&gt;" in r.http_view.value.split("hashes:")[0])
    assert "domains:evil.example" in r.header.value  # IOC hit on the session itself
    carved = [v for _, v in r.hex_source.options if v]
    assert set(carved) == {hashlib.sha256(HOSTILE_BODY).hexdigest()}
    r.hex_source.value = carved[0]
    assert "3c 68 74 6d 6c 3e 3c 62" in r.hex_view.value  # "<html><b" as hex
    assert_no_markup(r.hex_view.value)


def test_replay_marks_gaps_and_conflicts_where_they_happen(hand):
    c, uids = hand
    r = SessionReplay(c, uid=uids["10.0.0.77"])
    assert "1 gap(s)" in r.header.value and "1 retransmission conflict(s)" in r.header.value
    r.step(1)
    conv = r.conversation_view.value
    assert "gap: 1000 byte(s) never captured (stream offset 1000)" in conv
    assert conv.index("AAAA") < conv.index("gap: 1000") < conv.rindex("AAAA")  # inside the turn, where it is
    assert "conflict" not in conv
    assert "gap bytes are shown as 00" in r.hex_view.value
    r.step(1)
    conflict = "retransmission conflict at stream offset 0-1000: 1000 byte(s) differed"
    assert conflict in r.conversation_view.value
    assert "BBBB" in r.conversation_view.value and "bbbb" not in r.conversation_view.value  # first copy kept
    strip = r.timing_view.value
    assert strip.count("#e0a800") == 2 and "<svg" in strip and "packet(s)" in strip
    assert re.search(r'<line x1="\d+" y1="0"', strip)  # the replay cursor


def test_replay_protocol_summaries(scenario_case):
    c, _ = scenario_case
    uid = c.sql("SELECT uid FROM smb_files WHERE NOT named_pipe AND action = 'SMB::FILE_READ' "
                "ORDER BY ts LIMIT 1")["uid"][0]
    r = SessionReplay(c, uid=uid)
    assert "smb_files" in r.protocol_view.value and "SMB::FILE_READ" in r.protocol_view.value
    assert "smb_mapping" in r.protocol_view.value
    r.step(3)
    assert r.value["turn"] == 2 and "\\\\" not in r.status.value


# ---- GraphExplorer -----------------------------------------------------------------------------------


def test_graph_grows_with_the_time_slider_and_highlights_the_scope(scenario_case):
    c, key = scenario_case
    g = GraphExplorer(c)
    pz = key["patient_zero"]["host"]
    n = len(rs.lateral_edges(c))
    assert g.step.max == n and len(g.shown) == n and g.png().startswith(b"\x89PNG")
    full = g.png()
    g.step.value = 0
    assert g.visible_nodes == {pz} and g.until is None and g.edges.options == ()
    g.step.value = 3
    assert len(g.shown) == 3 and len(g.edges.options) == 3 and g.png() != full
    assert g.until == g.shown["ts"].max() and "3 of" in g.clock.value
    grown = g.visible_nodes
    g.step.value = n
    assert grown < g.visible_nodes
    compromised = set(rs.scope_hosts(c).query("confidence == 'compromised'")["host"])
    assert compromised <= g.visible_nodes


def test_graph_node_and_edge_details(scenario_case):
    c, _ = scenario_case
    g = GraphExplorer(c)
    target = rs.scope_hosts(c).query("depth == 2")["host"].iloc[0]
    g.nodes.value = target  # the "click"
    assert g.value == target and g.selected_node == target
    d = g.details.value
    assert f"Host {target}" in d and "Chain from patient zero" in d and "compromised" in d
    assert "Accounts used to reach it" in d
    g.highlight.value = "selected"
    assert g._highlight() == rs.scope_path(g.scope, target) and len(g._highlight()) == 2
    psexec = g.all_edges.query("technique == 'psexec'")["edge_id"].iloc[0]
    g.edges.value = psexec
    assert g.value == psexec and g.selected_edge == psexec
    d = g.details.value
    assert "Movement psexec" in d and "Evidence rows" in d and "events rows" in d and "7045" in d
    assert g.selected_sessions and "Sessions behind it" in d
    assert g.action.selected_keys == [psexec]


def test_graph_from_a_frame_with_hostile_names_is_escaped():
    edges = pd.DataFrame([{
        "edge_id": "E1", "ts": pd.Timestamp("2026-03-04T08:00Z"), "ts_end": None, "src": "$\\frac{1}{0}$",
        "dst": "<img src=x onerror=alert(2)>", "src_addr": None, "dst_addr": None,
        "account": "<script>alert(1)</script>", "technique": "psexec", "level": "execution", "success": True,
        "proof": "capture", "summary": "<b>x</b>", "rows": "[]"}])
    g = GraphExplorer(edges)
    assert g.png().startswith(b"\x89PNG")  # "$...$" is not mathtext: no parse error
    g.edges.value = "E1"
    g.nodes.value = "<img src=x onerror=alert(2)>"
    assert_no_markup(html_of(g))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in g.details.value


# ---- Timeline and ScopeSummary -------------------------------------------------------------------------


def test_timeline_brush_filters_linked_widgets(scenario_case):
    c, _ = scenario_case
    t = Timeline(c)
    lo, hi = t.range
    assert t.value == t.range and lo < hi and set(t.events["lane"]) >= {"logons", "lateral", "exfiltration"}
    seen = []
    t.on_range(seen.append)
    replay, graph, summary = SessionReplay(c), GraphExplorer(c), ScopeSummary(c)
    t.link(replay, graph, summary)
    all_sessions, all_edges = len(replay.sessions.options), len(graph.shown)
    t.brush.index = (100, 130)
    assert seen and seen[-1] == t.range and t.range[0] > lo and t.range[1] < hi
    sel = t.selected
    assert len(sel) and sel["ts"].between(*t.range).all()
    assert replay.time_range == t.range and 0 < len(replay.sessions.options) < all_sessions
    assert graph.shown["ts"].between(*t.range).all() and len(graph.shown) < all_edges
    assert summary.value["hosts_in_scope"] <= rs.headline(c)["hosts_in_scope"]
    assert "window" in summary.window.value
    t.lanes.value = ("lateral",)
    assert "<td>lateral</td>" in t.table.value and "<td>logons</td>" not in t.table.value
    t.reset.click()
    assert t.range == (lo, hi)
    with pytest.raises(TypeError):
        t.link(object())


def test_scope_summary_at_a_glance(scenario_case):
    c, key = scenario_case
    s = ScopeSummary(c)
    hosts = rs.scope_hosts(c)
    assert s.value["compromised_hosts"] == (hosts["confidence"] == "compromised").sum() > 0
    assert s.value["risks"] == len(rs.risk_table(c)) > 0
    assert key["patient_zero"]["host"] in s.views["Hosts"].value
    assert "risk_level" in s.views["Risk register"].value
    assert "no carved file" in s.views["Files with hits"].value
    before = s.value
    t0 = pd.Timestamp(key["patient_zero"]["time"])
    s.time_range = (t0 - pd.Timedelta(minutes=10), t0 + pd.Timedelta(seconds=1))
    assert s.value["compromised_hosts"] == 1 and s.value["exfil_bytes"] < before["exfil_bytes"]


def test_scope_summary_escapes_hostile_names(hand):
    c, _ = hand
    nodes = pd.DataFrame([{"node": "<img src=x onerror=alert(2)>", "kind": "host", "level": "patient_zero",
                           "confidence": "compromised", "reached_at": pd.Timestamp("2026-01-01", tz="UTC"),
                           "via_technique": None, "depth": 0, "reason": "<script>alert(1)</script>",
                           "chain": []},
                          {"node": "<script>alert(1)</script>", "kind": "account", "level": "used",
                           "confidence": "compromised", "reached_at": pd.Timestamp("2026-01-01", tz="UTC"),
                           "via_technique": None, "depth": 1, "reason": "x", "chain": []}])
    s = ScopeSummary(c, nodes)
    assert s.value["compromised_hosts"] == 1 and s.value["accounts"] == 1
    assert_no_markup(html_of(s))
    assert "&lt;img src=x onerror=alert(2)&gt;" in s.views["Hosts"].value
    files = s.views["Files with hits"].value
    assert "hostile_markup" in files and "&lt;img src=x onerror=alert(3)&gt;.html" in files


# ---- the helpers ---------------------------------------------------------------------------------------


def test_html_helpers_escape_and_refuse_unsafe_images():
    assert _html.esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;" and _html.esc(None) == ""
    assert _html.hexdump(b"<ab>\x00", 16) == "00000010  3c 61 62 3e 00" + " " * 33 + "  <ab>."
    assert "\n" not in _html.hexdump(b"a\r\nb")  # one row per line, whatever the bytes
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="5" height="5"/></svg>'
    assert _html.safe_png(svg) is None and _html.safe_png(b"\x89PNG\r\n\x1a\nbroken") is None
    from PIL import Image

    big = io.BytesIO()
    Image.new("1", (8000, 6000)).save(big, "PNG")  # 48 Mpx: refused before decoding
    assert _html.safe_png(big.getvalue()) is None
    png = _html.safe_png(png_bytes())
    assert png is not None and png.startswith(b"\x89PNG")
    table = _html.table(pd.DataFrame({"<th>": ["<script>alert(1)</script>", None]}))
    assert "<script>" not in table and "&lt;th&gt;" in table and "None" not in table


def test_report_sections_on_an_empty_case(case):
    fig = rs.timeline_figure(case)
    assert any("nothing in the case" in t.get_text() for t in fig.axes[0].texts)
    assert rs.lateral_figure(case).axes
    assert rs.scope_for(case, [""]) is None and rs.scope_hosts(case).empty
    assert rs.headline(case) == {"compromised_hosts": 0, "hosts_in_scope": 0, "accounts": 0, "exfil_bytes": 0,
                                 "exfil_destinations": 0, "files_with_hits": 0, "high_risks": 0, "risks": 0}
    for f in (rs.exfil_summary, rs.files_with_hits, rs.risk_table, rs.yara_hits, rs.ioc_hits,
              rs.timeline_events):
        assert f(case).empty
