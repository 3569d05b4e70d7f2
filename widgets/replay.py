"""Replay a session turn by turn, as it happened: pick it, then Play, Step or drag through time.

::

    from widgets.replay import SessionReplay
    r = SessionReplay(case, host="10.10.10.12", port=80)
    r                                   # pick a session, press Play (or Step)
    r.selected_session, r.position      # state, also settable: r.select(uid); r.step()

The list of sessions is filtered by host, port, transport, service, time range
and a text search (URIs, host and file names, user names, DNS queries, TLS
names; optionally the payload bytes). The chosen session is reassembled
(:meth:`forensics.case.Case.session`) and played back turn by turn with an
``ipywidgets.Play`` timer: in real time, ten times faster, one turn a second,
or by hand. Views: the conversation (client red on the left, server blue on the
right, as Wireshark's Follow Stream), a hex dump of the current turn or of a
file carved from the session, the HTTP messages (images re-encoded, other
bodies as escaped text or hex, carved files with their YARA and IOC hits), the
protocol tables' rows (SMB, FTP, SMTP, DNS, TLS, ...) and a packet timing
strip. Gaps and retransmission conflicts are marked where they happen.
Everything from the capture is escaped (:mod:`widgets._html`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pandas as pd
import traitlets

from forensics import report_sections as rs
from widgets import _replay_views as V
from widgets._html import esc, fmt_bytes, fmt_ts, hex_html
from widgets.findings import FindingAction

if TYPE_CHECKING:
    from forensics.case import Case
    from forensics.reassembly import Conversation

__all__ = ["SPEEDS", "SessionReplay"]

SPEEDS = [("real time", "real"), ("×10", "x10"), ("one turn a second", "steady"), ("by hand (Step)", "step")]
MIN_INTERVAL_MS = 60
MAX_INTERVAL_MS = 10_000
PAYLOAD_SEARCH_SESSIONS = 300  # sessions whose bytes a payload search reads at most
PAYLOAD_SEARCH_BYTES = 256 * 1024  # bytes per direction searched
_SEARCH = {  # table: text columns a search looks in
    "http": ("host", "uri", "user_agent", "username", "referrer"), "dns": ("query",),
    "tls": ("server_name", "subject"), "smb_files": ("name", "path"), "smb_mapping": ("path",),
    "ftp": ("arg", "user"), "smtp": ("subject", "mailfrom", "helo"), "files": ("filename",),
    "ntlm": ("username", "hostname", "domainname"), "kerberos": ("client", "service"),
    "rdp": ("cookie",), "carved_files": ("claimed_name", "sha256"),
}


class SessionReplay(W.VBox):
    """Pick a session and play it back turn by turn.

    Args:
        case: the case.
        sessions: restrict the list to these sessions (a DataFrame with a ``uid`` column).
        uid: open this session at once.
        host: initial host filter (either side).
        port: initial port filter (either side).
        search: initial text search.
        time_range: initial ``(start, end)`` (e.g. a Timeline's ``.range``).
        limit: sessions listed at most.
        author: who tags or adds to findings from here.

    Attributes:
        selected_session: uid of the session being replayed (None before one is picked).
        position: how many turns have been played (0 to the number of turns).
        time_range: ``(start, end)`` UTC filter of the list; None for all times.
        value: ``{"uid", "position", "turns", "turn", "ts"}``: the replay state.
        conversation: the reassembled session (:class:`~forensics.reassembly.Conversation`).
        sessions: Select listing the sessions that pass the filters.
        player: the ``ipywidgets.Play`` timer; ``play_button``, ``step_button``,
            ``back_button``, ``speed``, ``turn_slider`` and ``time_slider`` drive it.
        views: the Tab of ``conversation_view``, ``hex_view``, ``http_view``,
            ``protocol_view`` and ``timing_view`` (HTML widgets).
        action: tag the session or add it to a finding.
    """

    selected_session = traitlets.Unicode(None, allow_none=True)
    position = traitlets.Int(0)
    time_range = traitlets.Any(None, allow_none=True)
    value = traitlets.Dict()

    def __init__(self, case: Case, sessions: pd.DataFrame | None = None, *, uid: str | None = None,
                 host: str | None = None, port: int | str | None = None, search: str | None = None,
                 time_range: tuple[Any, Any] | None = None, limit: int = 2000, author: str | None = None):
        self.case = case
        self.limit = limit
        self.conversation: Conversation | None = None
        self._only = list(sessions["uid"]) if sessions is not None else None
        self._turn_cache: dict[int, str] = {}
        self._http_cache: dict[int, list[V.HttpMessage]] = {}
        self._carved = pd.DataFrame()
        self._timing: dict[str, Any] = {"width": 900, "t0": 0, "span": 1, "body": ""}
        self._n_packets = 0
        self._syncing = False
        box = W.Layout(width="170px")
        self.host = W.Text(value=host or "", description="Host", continuous_update=False, layout=box)
        self.port = W.Text(value="" if port is None else str(port), description="Port",
                           continuous_update=False, layout=W.Layout(width="120px"))
        self.proto = W.Dropdown(options=[("any", ""), ("tcp", "tcp"), ("udp", "udp"), ("icmp", "icmp")],
                                description="Proto", layout=W.Layout(width="140px"))
        services = case.sql("SELECT DISTINCT service FROM sessions WHERE service IS NOT NULL ORDER BY 1")
        self.service = W.Dropdown(options=[("any", ""), *[(s, s) for s in services["service"]]],
                                  description="Service", layout=W.Layout(width="200px"))
        self.search = W.Text(value=search or "", description="Search", continuous_update=False,
                             placeholder="URI, host or file name, user…", layout=W.Layout(width="300px"))
        self.in_payload = W.Checkbox(description="search payloads too", indent=False,
                                     layout=W.Layout(width="170px"))
        self.since = W.Text(description="From", placeholder="2026-03-04T08:00Z", continuous_update=False,
                            layout=W.Layout(width="300px"))
        self.until = W.Text(description="To", continuous_update=False, layout=W.Layout(width="300px"))
        self.count = W.HTML()
        self.sessions = W.Select(options=[], rows=8, layout=W.Layout(width="100%"))
        self.header = W.HTML()
        self.player = W.Play(min=0, max=0, step=1, interval=500, show_repeat=False, description="timer")
        self.play_button = W.Button(description="Play", icon="play", layout=W.Layout(width="90px"))
        self.step_button = W.Button(description="Step", icon="step-forward", layout=W.Layout(width="90px"))
        self.back_button = W.Button(description="Back", icon="step-backward", layout=W.Layout(width="90px"))
        self.speed = W.Dropdown(options=SPEEDS, value="real", description="Speed",
                                layout=W.Layout(width="240px"))
        self.turn_slider = W.IntSlider(min=0, max=0, description="Turns", continuous_update=True,
                                       layout=W.Layout(width="360px"))
        self.time_slider = W.FloatSlider(min=0, max=0, step=0.001, description="Time (s)",
                                         readout_format=".3f", continuous_update=False,
                                         layout=W.Layout(width="420px"))
        self.status = W.HTML()
        self.conversation_view = W.HTML()
        self.hex_source = W.Dropdown(options=[("current turn", "")], description="Show",
                                     layout=W.Layout(width="520px"))
        self.hex_view = W.HTML(layout=W.Layout(max_height="520px", overflow="auto"))
        self.http_view = W.HTML(layout=W.Layout(max_height="520px", overflow="auto"))
        self.protocol_view = W.HTML(layout=W.Layout(max_height="520px", overflow="auto"))
        self.timing_view = W.HTML()
        self.views = W.Tab(children=[self.conversation_view, W.VBox([self.hex_source, self.hex_view]),
                                     self.http_view, self.protocol_view, self.timing_view],
                           titles=["Conversation", "Hex", "HTTP", "Protocols", "Timing"])
        self.action = FindingAction(case, "sessions", author=author)

        for w, cls in ((self.sessions, "bb-sessions"), (self.play_button, "bb-play"),
                       (self.step_button, "bb-step"), (self.status, "bb-status"), (self.views, "bb-views")):
            w.add_class(cls)  # stable hooks for browser tests and styling
        traitlets.link((self.player, "value"), (self, "position"))
        traitlets.link((self.turn_slider, "value"), (self, "position"))
        for w in (self.host, self.port, self.proto, self.service, self.search, self.in_payload, self.since,
                  self.until):
            w.observe(lambda _c: self.refresh(), "value")
        self.sessions.observe(lambda c: self.select(c["new"]) if c["new"] else None, "value")
        self.play_button.on_click(lambda _b: self.toggle_play())
        self.step_button.on_click(lambda _b: self.step(1))
        self.back_button.on_click(lambda _b: self.step(-1))
        self.player.observe(lambda _c: self._show_playing(), "playing")
        self.speed.observe(lambda _c: self._speed_changed(), "value")
        self.time_slider.observe(lambda c: self._seek(c["new"]), "value")
        self.hex_source.observe(lambda _c: self._render_hex(), "value")
        self.observe(lambda _c: self._render(), "position")
        self.observe(lambda c: self._apply_range(c["new"]), "time_range")

        filters = W.VBox([W.HBox([self.host, self.port, self.proto, self.service]),
                          W.HBox([self.search, self.in_payload]),
                          W.HBox([self.since, self.until, self.count])])
        controls = W.HBox([self.play_button, self.back_button, self.step_button, self.player, self.speed],
                          layout=W.Layout(flex_flow="row wrap"))
        super().__init__([W.HTML("<b>Session replay</b>"), filters, self.sessions, self.header, controls,
                          W.HBox([self.turn_slider, self.time_slider], layout=W.Layout(flex_flow="row wrap")),
                          self.status, self.views, self.action])
        if time_range is not None:
            self.time_range = tuple(time_range)
        else:
            self.refresh()
        if uid:
            self.select(uid)

    # ---- the list ----------------------------------------------------------------------------------

    def refresh(self) -> pd.DataFrame:
        """Run the filters again and list the sessions that pass; returns them."""
        where: list[str] = ["source = 'pcap'"]
        params: list[Any] = []
        if self._only is not None:
            where.append("uid IN (SELECT unnest(?))")
            params.append(self._only)
        if self.host.value.strip():
            where.append("(orig_h = ? OR resp_h = ?)")
            params += [self.host.value.strip()] * 2
        port = self.port.value.strip()
        note = ""
        if port:
            if port.isdigit():
                where.append("(orig_p = ? OR resp_p = ?)")
                params += [int(port)] * 2
            else:
                note = " · port must be a number"
        for col, w in (("proto", self.proto), ("service", self.service)):
            if w.value:
                where.append(f"{col} = ?")
                params.append(w.value)
        for op, w in ((">=", self.since), ("<=", self.until)):
            if w.value.strip():
                try:
                    params.append(rs.as_time(w.value))
                    where.append(f"ts {op} ?")
                except ValueError:
                    note += f" · cannot read the time {w.value.strip()!r}"
        q = self.search.value.strip()
        if q and not self.in_payload.value:
            sub = " UNION ".join(
                f"SELECT uid FROM {t} WHERE " + " OR ".join(f"contains(lower({c}), lower(?))" for c in cols)
                for t, cols in _SEARCH.items())
            own = " OR ".join(f"contains(lower(coalesce({c}, '')), lower(?))"
                              for c in ("uid", "orig_h", "resp_h", "service"))
            where.append(f"(uid IN ({sub}) OR {own})")
            params += [q] * (sum(len(c) for c in _SEARCH.values()) + 4)
        cap = PAYLOAD_SEARCH_SESSIONS if q and self.in_payload.value else self.limit
        df = self.case.sql("SELECT uid, ts, proto, service, orig_h, orig_p, resp_h, resp_p, orig_bytes, "
                           "resp_bytes FROM sessions WHERE " + " AND ".join(where)
                           + f" ORDER BY ts, uid LIMIT {int(cap) + 1}", params)
        more = len(df) > cap
        df = df.head(cap)
        if q and self.in_payload.value:
            df = df[[self._payload_has(u, q) for u in df["uid"]]]
            note += f" · payloads of the first {cap} matching sessions searched" if more else ""
        elif more:
            note += f" · only the first {cap} shown: narrow the filters"
        self._listed = df
        keep = self.selected_session
        opts = [(_label(r), r["uid"]) for r in df.to_dict("records")]
        if keep and keep not in set(df["uid"]):
            opts.insert(0, (f"(selected) {keep}", keep))
        with self.hold_trait_notifications():
            self.sessions.options = opts
            self.sessions.value = keep if keep else None
        self.count.value = f"<small>{len(df)} session(s){esc(note)}</small>"
        return df

    def _payload_has(self, uid: str, needle: str) -> bool:
        n = needle.lower().encode("utf-8", "replace")
        try:
            with self.case.session(uid) as conv:
                return any(n in d.read(0, min(d.extent, PAYLOAD_SEARCH_BYTES)).lower()
                           for d in (conv.orig, conv.resp))
        except KeyError:
            return False

    def _apply_range(self, rng: tuple[Any, Any] | None) -> None:
        lo, hi = (rs.as_time(t) for t in (rng if rng else (None, None)))
        with self.hold_trait_notifications():
            for w, t in ((self.since, lo), (self.until, hi)):
                w.value = t.isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else ""
        self.refresh()

    # ---- one session --------------------------------------------------------------------------------

    def select(self, uid: str) -> None:
        """Open a session for replay (its turns start unplayed)."""
        if uid == self.selected_session and self.conversation is not None:
            return
        self.player.playing = False
        self._close_conversation()
        self._turn_cache, self._http_cache = {}, {}
        try:
            self.conversation = self.case.session(uid)
        except KeyError as exc:
            self.conversation = None
            self.header.value = f'<p style="color:#b00">{esc(exc)}</p>'
        self.selected_session = uid
        if uid in set(o[1] for o in self.sessions.options):
            self.sessions.value = uid
        conv = self.conversation
        n = len(conv.turns) if conv else 0
        self._carved = rs.files_with_hits(self.case, only_hits=False, uid=uid)
        self.hex_source.options = [("current turn", "")] + [
            (f"carved file {r['claimed_name'] or '(no name)'} · {r['sha256'][:16]}…", r["sha256"])
            for r in self._carved.to_dict("records")]
        self.hex_source.value = ""
        if conv is not None:
            pk = V.packets(self.case, conv.session)
            self._n_packets = len(pk)
            self._timing = V.timing_base(pk, conv)
            self.header.value = self._header_html(conv)
            self.protocol_view.value = V.protocol_html(self.case, uid)
        dur = self._offset(n - 1) if n else 0.0
        with self.hold_trait_notifications():
            self.player.max = n
            self.turn_slider.max = n
            self.time_slider.max = max(dur, 0.001)
        self.action.select([uid])
        if self.position != 0:
            self.position = 0
        else:
            self._render()

    def step(self, n: int = 1) -> int:
        """Play ``n`` turns more (or back with a negative ``n``); returns the new position."""
        self.player.playing = False
        total = len(self.conversation.turns) if self.conversation else 0
        self.position = max(0, min(total, self.position + n))
        return self.position

    def toggle_play(self) -> None:
        """Start or pause the timer (at the end, playing starts again from the first turn)."""
        if self.player.playing:
            self.player.playing = False
            return
        if self.conversation is None or self.speed.value == "step":
            return
        if self.position >= len(self.conversation.turns):
            self.position = 0
        self.player.playing = True

    def close(self) -> None:
        """Close the widget and release the evidence file."""
        self._close_conversation()
        super().close()

    # ---- rendering ----------------------------------------------------------------------------------

    def _render(self) -> None:
        conv = self.conversation
        p = self.position
        if conv is None:
            for v in (self.conversation_view, self.hex_view, self.http_view, self.timing_view):
                v.value = ""
            self.status.value = ""
            self.value = {"uid": self.selected_session, "position": 0, "turns": 0, "turn": None, "ts": None}
            return
        n = len(conv.turns)
        cur = conv.turns[p - 1] if 0 < p <= n else None
        self.conversation_view.value = V.conversation_html(conv, p, self._turn_cache)
        self.http_view.value = V.http_html(conv, p, self._carved, self._http_cache)
        self._render_hex()
        at = int(pd.Timestamp(cur.last_ts).value) if cur is not None and cur.last_ts else None
        self.timing_view.value = V.timing_svg(self._timing, at, self._n_packets)
        self.status.value = (f"<b>{esc(V.turn_header(conv, cur))}</b>" if cur is not None
                             else f"<small>{n} turn(s); nothing played yet</small>")
        self._syncing = True
        try:
            self.time_slider.value = self._offset(p - 1) if p > 0 else 0.0
        finally:
            self._syncing = False
        self._update_interval()
        self.value = {"uid": self.selected_session, "position": p, "turns": n,
                      "turn": cur.index if cur is not None else None,
                      "ts": cur.first_ts.isoformat() if cur is not None and cur.first_ts else None}

    def _render_hex(self) -> None:
        conv, sha = self.conversation, self.hex_source.value
        if sha:
            from forensics.filestore import content_path

            try:
                with content_path(self.case, sha).open("rb") as fh:
                    data = fh.read(8193)
                self.hex_view.value = f"<div><b>carved file {esc(sha)}</b></div>" + hex_html(data, 0, 8192)
            except OSError as exc:
                self.hex_view.value = f'<p style="color:#b00">cannot read the carved file: {esc(exc)}</p>'
            return
        p = self.position
        if conv is None or p <= 0:
            self.hex_view.value = "<p><i>Play or step to a turn to see its bytes.</i></p>"
            return
        self.hex_view.value = V.turn_hex_html(conv, conv.turns[p - 1])

    def _header_html(self, conv: Conversation) -> str:
        s = conv.session
        gaps = sum(len(d.gaps) for d in (conv.orig, conv.resp))
        conflicts = sum(len(d.conflicts) for d in (conv.orig, conv.resp))
        missing = conv.orig.missing + conv.resp.missing
        warn = ""
        if gaps or conflicts:
            warn = (f'<div style="color:#7a4d00;background:#fff3cd;padding:2px 6px">⚠ {gaps} gap(s), '
                    f"{esc(fmt_bytes(missing))} never captured; {conflicts} retransmission conflict(s): "
                    "marked in the conversation and on the timing strip</div>")
        line1 = (f"{s.get('proto')} {s.get('orig_h')}:{s.get('orig_p')} → {s.get('resp_h')}:"
                 f"{s.get('resp_p')} ({s.get('service') or 'service unknown'}) · {fmt_ts(s.get('ts'))} UTC · "
                 f"{s.get('duration') or 0:.3f} s")
        line2 = (f"client {fmt_bytes(conv.orig.captured)}, server {fmt_bytes(conv.resp.captured)} captured · "
                 f"{len(conv.turns)} turn(s) · state {s.get('conn_state') or '?'} {s.get('history') or ''}")
        return (f'<div class="bb-session"><b class="bb-uid">{esc(s.get("uid"))}</b> {esc(line1)}<br>'
                f"<small>{esc(line2)}</small></div>" + warn + self._ioc_html(str(s.get("uid"))))

    def _ioc_html(self, uid: str) -> str:
        hits = self.case.sql('SELECT DISTINCT feed, type, value, table_name, "column", matched FROM ioc_hits '
                             "WHERE uid = ? ORDER BY feed, value, table_name LIMIT 50", [uid])
        if not len(hits):
            return ""
        items = "; ".join(f"{r.feed}:{r.value} ({r.table_name}.{r.column})" for r in hits.itertuples())
        return f'<div style="color:#b00"><b>IOC hits on this session:</b> {esc(items)}</div>'

    # ---- timer and sliders ----------------------------------------------------------------------------

    def _offset(self, i: int) -> float:
        conv = self.conversation
        if conv is None or not conv.turns or i < 0:
            return 0.0
        t0, t = conv.turns[0].first_ts, conv.turns[min(i, len(conv.turns) - 1)].first_ts
        return (t - t0).total_seconds() if t and t0 else 0.0

    def _update_interval(self) -> None:
        # The Play timer schedules its next tick as soon as it advances, before this
        # kernel sees the new value, so the interval set now is used one tick later:
        # at position p it must be the wait between turns p and p+1 (0-based).
        conv, p, speed = self.conversation, self.position, self.speed.value
        if conv is None:
            return
        if speed == "steady" or speed == "step":
            ms = 1000.0
        elif p + 1 < len(conv.turns):
            gap = (self._offset(p + 1) - self._offset(p)) * 1000.0
            ms = gap / 10.0 if speed == "x10" else gap
        else:
            ms = MIN_INTERVAL_MS
        self.player.interval = int(min(max(ms, MIN_INTERVAL_MS), MAX_INTERVAL_MS))

    def _speed_changed(self) -> None:
        manual = self.speed.value == "step"
        if manual:
            self.player.playing = False
        self.player.disabled = manual
        self.play_button.disabled = manual
        self._update_interval()

    def _show_playing(self) -> None:
        playing = self.player.playing
        self.play_button.description = "Pause" if playing else "Play"
        self.play_button.icon = "pause" if playing else "play"

    def _seek(self, seconds: float) -> None:
        if self._syncing or self.conversation is None:
            return
        turns = self.conversation.turns
        self.position = sum(1 for i in range(len(turns)) if self._offset(i) <= seconds + 1e-9)

    def _close_conversation(self) -> None:
        if self.conversation is not None:
            with contextlib.suppress(Exception):
                self.conversation.close()
            self.conversation = None


def _label(r: dict[str, Any]) -> str:
    """A plain-text list entry (Select options are set as text, never as HTML)."""
    size = fmt_bytes(sum(0 if pd.isna(v) else v for v in (r.get("orig_bytes"), r.get("resp_bytes"))))
    service = "-" if pd.isna(r.get("service")) else r["service"]
    return (f"{fmt_ts(r['ts'])}  {r['proto']}/{service}  {r['orig_h']}:{r['orig_p']} → "
            f"{r['resp_h']}:{r['resp_p']}  {size}  {r['uid']}")
