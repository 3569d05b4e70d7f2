"""The workflow widgets, headless: set child values, click, assert state and what reached the case."""

from __future__ import annotations

import pytest
from _pcapbuild import eth, handshake_session, write_pcap

import forensics
from forensics import controls as K
from forensics import findings as F

W = pytest.importorskip("ipywidgets", reason="needs the lab extra (pip install -e '.[lab]')")

from widgets.controls import ALL_AREAS, ControlsWidget  # noqa: E402
from widgets.findings import NEW_FINDING, FindingAction  # noqa: E402


@pytest.fixture
def case_dir(tmp_path):
    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()]
                     + [eth(p) for p in handshake_session("10.0.0.1", "10.0.0.9", 40001, 445)])
    with forensics.open_case(tmp_path / "case") as c:
        c.ingest(cap)
    return tmp_path / "case"


@pytest.fixture
def case(case_dir):
    c = forensics.open_case(case_dir)
    yield c
    c.close()


def test_controls_widget_rates_scores_and_saves(case):
    w = ControlsWidget(case, author="ana")
    assert len(w.rows) == len(K.load_controls(case)) and w.value == {}
    row = w.rows["10.4.1"]
    row.documentary.value = "partly"
    assert w.value["10.4.1"]["score"] is None  # incomplete until both ratings are given
    row.instrumental.value = "not_fulfilled"
    row.comment.value = "<b>no EDR</b>"
    assert w.value["10.4.1"] == {"documentary": "partly", "instrumental": "not_fulfilled",
                                 "comment": "<b>no EDR</b>", "score": 0.25, "saved": False}
    assert "0.25" in row.score.value and "<b>no EDR</b>" not in w.scores.value
    w.rows["10.10.1"].documentary.value = "fully"  # left incomplete
    w.save_button.click()
    assert "saved 1 rating" in w.status.value and "10.10.1" in w.status.value
    assert w.value["10.4.1"]["saved"] is True
    saved = K.ratings(case).set_index("control_id")
    assert saved.loc["10.4.1", "score"] == 0.25 and saved.loc["10.4.1", "author"] == "ana"
    assert saved.loc["10.4.1", "comment"] == "<b>no EDR</b>"  # stored as typed, escaped when shown
    K.rate(case, "5.1.1", "fully", "fully")  # rated elsewhere, without a comment
    # A new widget starts from what the case holds.
    again = ControlsWidget(case)
    assert again.rows["10.4.1"].instrumental.value == "not_fulfilled" and again.value["10.4.1"]["saved"]
    assert again.rows["5.1.1"].comment.value == "" and again.value["5.1.1"]["score"] == 1


def test_controls_widget_suggestions_and_area_filter(case):
    w = ControlsWidget(case)
    seg = w.rows["11.4.5"]  # an SMB session between internal hosts is in the capture
    assert not seg.use_suggestion.disabled and "partly" in seg.use_suggestion.description
    seg.use_suggestion.click()
    assert seg.instrumental.value == "partly"
    assert w.rows["10.4.1"].use_suggestion.disabled  # nothing in the case either way
    w.area.value = "Access control"
    shown = {r.control["control_id"] for r in w._list.children}
    assert shown == set(K.load_controls(case).query("area == 'Access control'")["control_id"])
    w.area.value = ALL_AREAS
    assert len(w._list.children) == len(w.rows)
    seg.documentary.value = "fully"
    assert w.save() == 1
    assert K.ratings(case).set_index("control_id").loc["11.4.5", "suggested"] == "partly"


def test_controls_widget_on_a_read_only_case(case_dir):
    with forensics.open_case(case_dir, read_only=True) as c:
        w = ControlsWidget(c)
        assert w.save_button.disabled and "read-only" in w.status.value


def test_finding_action_tags_and_adds_to_findings(case):
    uids = case.sql("SELECT uid FROM sessions ORDER BY uid")["uid"].tolist()
    a = FindingAction(case, "sessions", author="ana")
    assert a.tag_button.disabled  # nothing selected
    a.select(case.sql("SELECT * FROM sessions"))  # a DataFrame of selected rows works too
    assert len(a.selected_keys) == 2 and not a.tag_button.disabled
    a.label.value = "c2"
    a.tag_button.click()
    assert a.value == {"action": "tag", "table": "sessions", "rows": 2, "label": "c2"}
    assert sorted(F.tagged_keys(case, "sessions", "c2")["uid"]) == uids
    assert "c2" in a.label.options
    a.select(uids[0])
    a.untag_button.click()
    assert F.tagged_keys(case, "sessions", "c2")["uid"].tolist() == [uids[1]]

    assert a.finding.value == NEW_FINDING and a.title.layout.display is None
    a.add_button.click()
    assert "title" in a.status.value  # a new finding needs a title
    a.title.value = "C2 <script>"
    a.severity.value = "high"
    a.add_button.click()
    fid = a.value["finding_id"]
    assert F.get_finding(case, fid)["title"] == "C2 <script>"  # stored as typed; escaped when shown
    assert a.finding.value == fid and a.title.layout.display == "none"
    a.select(uids)
    a.add_button.click()  # to the existing finding: only the new row is added
    assert a.value == {"action": "add_to_finding", "table": "sessions", "rows": 1, "finding_id": fid}
    assert len(F.finding_rows(case, fid)) == 2


def test_finding_action_reports_errors_escaped_and_read_only(case, case_dir):
    a = FindingAction(case, "sessions", keys=["C<b>nope"])
    a.label.value = "x"
    a.tag_button.click()
    assert "no row of sessions" in a.status.value and "<b>nope" not in a.status.value
    assert a.value == {}
    case.close()
    with forensics.open_case(case_dir, read_only=True) as c:
        ro = FindingAction(c, "sessions", keys=c.sql("SELECT uid FROM sessions")["uid"].tolist())
        assert ro.tag_button.disabled and ro.add_button.disabled and "read-only" in ro.status.value


def test_finding_action_embeds_in_another_widget(case):
    """How a table widget reuses it: forward its selection to ``select``."""
    uids = case.sql("SELECT uid FROM sessions ORDER BY uid")["uid"].tolist()
    picker = W.SelectMultiple(options=uids)
    action = FindingAction(case, "sessions")
    picker.observe(lambda ch: action.select(list(ch["new"])), "value")
    box = W.VBox([picker, action])
    picker.value = (uids[1],)
    action.label.value = "exfil"
    action.tag_button.click()
    assert F.tagged_keys(case, "sessions", "exfil")["uid"].tolist() == [uids[1]]
    assert box.children[1] is action
