"""Graded training exercises on generated breach scenarios.

A trainer generates a scenario (``breachbook scenario generate``) and hands the
trainee the ``evidence/`` folder; the answer key stays with the trainer (or is
read only by :func:`check`). The exercise notebooks ask the questions in
:data:`QUESTIONS`, let the trainee answer in a cell, and grade the answers with
:func:`check`, giving a score and, for each wrong answer, a hint that points to
where in the case the answer can be found, never the answer itself.

:func:`solve` answers every question from a case with Breachbook's automated
pipeline; the tests use it to prove the pipeline recovers the key.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from forensics.case import Case

__all__ = ["QUESTIONS", "Grade", "check", "load_key", "questions", "solve"]

# id: (question, points, hint)
QUESTIONS: dict[str, tuple[str, int, str]] = {
    "patient_zero": (
        "Which host was compromised first (host name)?", 2,
        "Look for the first download of an executable over HTTP in the proxy log or the http "
        "table, then a process start of that file in the Windows events."),
    "dropper_sha256": (
        "SHA-256 of the file that started the breach?", 1,
        "Carved files are in the files table; the bundled YARA rules flag the dropper."),
    "c2_domain": (
        "Which domain did the implant beacon to?", 1,
        "Beacons come at regular intervals: see the detections table (beaconing) or DNS "
        "queries from patient zero right after the dropper ran."),
    "lateral_chain": (
        "The attacker's moves between hosts, in order, as [src, dst, technique] "
        "(technique: psexec, wmi, rdp or ssh)", 4,
        "Service installs (7045), logons of type 3 and 10, WMI and SSH sessions between internal "
        "hosts; case.lateral_graph() and case.scope(patient zero) put them in order."),
    "compromised_hosts": (
        "Every host where attacker code ran or the attacker logged on interactively", 2,
        "case.scope(...).compromised_hosts() from patient zero and the time of the first "
        "execution."),
    "compromised_accounts": (
        "Every account the attacker held (names without domain)", 2,
        "Accounts used for lateral movement, and accounts logged on to a host before a "
        "credential dump there (LSASS access)."),
    "exfil_http_bytes": (
        "How many bytes were uploaded to the attacker over HTTP (request bodies)?", 2,
        "Large POST requests from an internal host to an external one; the exfil table sums "
        "them per host and destination (1% tolerance)."),
    "exfil_dns_domain": (
        "Which domain carried data out in DNS queries?", 1,
        "Long, high-entropy query labels under one domain: the exfil table's DNS tunnelling rows."),
}


@dataclass
class Grade:
    """The result of :func:`check`: a score and, per question, right or a hint."""

    score: int
    total: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        """Score as a percentage."""
        return 100.0 * self.score / self.total if self.total else 0.0

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(QUESTIONS[q][0])}</td><td>{'✔' if r['correct'] else '✘'}</td>"
            f"<td>{r['points']}/{QUESTIONS[q][1]}</td><td>{html.escape(r.get('hint') or '')}</td></tr>"
            for q, r in self.results.items())
        return (f"<h4>Score: {self.score} / {self.total} ({self.percent:.0f}%)</h4>"
                f"<table><tr><th>question</th><th></th><th>points</th><th>hint</th></tr>{rows}</table>")

    def __repr__(self) -> str:
        return f"<Grade {self.score}/{self.total} ({self.percent:.0f}%)>"


def load_key(scenario: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The answer key: a dict, an ``answer_key.json`` file, or a scenario folder holding one."""
    if isinstance(scenario, dict):
        return scenario
    p = Path(scenario)
    if p.is_dir():
        p = p / "answer_key.json"
    return json.loads(p.read_text())


def questions() -> pd.DataFrame:
    """The questions with their points, as a table for the notebook."""
    import pandas as pd

    return pd.DataFrame([{"id": k, "question": q, "points": pts} for k, (q, pts, _) in QUESTIONS.items()])


def expected(key: dict[str, Any]) -> dict[str, Any]:
    """The correct answer to every question, from an answer key."""
    dropper: dict[str, Any] = next((f for f in key.get("files", []) if f.get("role") == "dropper"), {})
    ex = key.get("exfiltration", {})
    return {
        "patient_zero": key["patient_zero"]["host"],
        "dropper_sha256": dropper.get("sha256"),
        "c2_domain": key.get("c2", {}).get("domain"),
        "lateral_chain": [[h["src"], h["dst"], h["technique"]] for h in key.get("lateral_chain", [])],
        "compromised_hosts": sorted(h["host"] for h in key.get("compromised_hosts", [])),
        "compromised_accounts": sorted(a["account"].lower() for a in key.get("compromised_accounts", [])),
        "exfil_http_bytes": ex.get("http_post", {}).get("bytes"),
        "exfil_dns_domain": ex.get("dns", {}).get("domain"),
    }


def _host(v: Any) -> str:
    return str(v).strip().split(".")[0].upper()


def _grade_one(qid: str, given: Any, want: Any) -> bool:
    if given is None or given == "" or given == []:
        return False
    if qid in ("patient_zero",):
        return _host(given) == _host(want)
    if qid in ("dropper_sha256",):
        return str(given).strip().lower() == str(want).lower()
    if qid in ("c2_domain", "exfil_dns_domain"):
        return str(given).strip().lower().rstrip(".") == str(want).lower()
    if qid == "lateral_chain":
        got = [[_host(s), _host(d), str(t).strip().lower()] for s, d, t in given]
        return got == [[_host(s), _host(d), t] for s, d, t in want]
    if qid == "compromised_hosts":
        return sorted({_host(h) for h in given}) == sorted({_host(h) for h in want})
    if qid == "compromised_accounts":
        return sorted({str(a).split("\\")[-1].split("@")[0].strip().lower() for a in given}) == sorted(want)
    if qid == "exfil_http_bytes":
        return want is not None and abs(float(given) - float(want)) <= 0.01 * float(want)
    return bool(given == want)


def check(answers: dict[str, Any], scenario: str | Path | dict[str, Any], *, hints: bool = True) -> Grade:
    """Grade a trainee's answers against a scenario's answer key.

    Args:
        answers: question id to answer (see :data:`QUESTIONS`); missing means unanswered.
        scenario: the answer key, its file, or the scenario folder.
        hints: give a hint for each wrong answer.

    Returns:
        The :class:`Grade` (displays as a table in Jupyter).
    """
    want = expected(load_key(scenario))
    grade = Grade(score=0, total=sum(p for _, p, _ in QUESTIONS.values()))
    for qid, (_, points, hint) in QUESTIONS.items():
        ok = _grade_one(qid, answers.get(qid), want[qid])
        got = points if ok else 0
        grade.score += got
        grade.results[qid] = {"correct": ok, "points": got,
                              "hint": None if ok or not hints else hint}
    return grade


def solve(case: Case) -> dict[str, Any]:
    """Answer every question from a case with the automated pipeline (no answer key).

    Patient zero is the first internal host to run a file downloaded over HTTP
    that the bundled YARA rules flag; the rest follows from the breach scope
    and the exfiltration tables.
    """
    from forensics import yarascan
    from forensics.detect import detect
    from forensics.exfil import exfil

    answers: dict[str, Any] = {}
    yarascan.scan(case)
    hit = case.sql("""
        SELECT f.sha256, min(f.ts) AS ts,
               any_value(CASE WHEN f.is_orig THEN s.resp_h ELSE s.orig_h END) AS host_ip
        FROM yara_hits y JOIN files f USING (sha256) LEFT JOIN sessions s ON s.uid = f.uid
        GROUP BY f.sha256 ORDER BY ts LIMIT 1""")
    if len(hit):
        answers["dropper_sha256"] = hit.sha256[0]
        host_ip, since = hit.host_ip[0], hit.ts[0]
    else:
        # No carved file flagged: fall back on the first executable fetched over HTTP.
        exe = case.sql("""
            SELECT orig_h, ts FROM http WHERE source = 'pcap' AND (lower(uri) LIKE '%.exe'
               OR list_contains(resp_mime_types, 'application/x-dosexec')) ORDER BY ts LIMIT 1""")
        if not len(exe):
            return answers
        host_ip, since = exe.orig_h[0], exe.ts[0]
    hosts = case.hosts()
    pz = hosts[(hosts.kind == "address") & (hosts.value == host_ip)]["host_id"].tolist()
    answers["patient_zero"] = pz[0] if pz else host_ip
    result = case.scope(answers["patient_zero"], since=since)
    hops = result.edges.sort_values("ts")
    seen, chain = {answers["patient_zero"]}, []
    for e in hops.itertuples():
        if e.dst not in seen and getattr(e, "level", "execution") == "execution":
            chain.append([e.src, e.dst, e.technique])
            seen.add(e.dst)
    answers["lateral_chain"] = chain
    answers["compromised_hosts"] = result.compromised_hosts()
    answers["compromised_accounts"] = result.compromised_accounts()
    ex = exfil(case)
    out_http = ex[(ex["kind"] == "bytes") & (ex["channel"] == "http")]
    if len(out_http):
        answers["exfil_http_bytes"] = int(out_http.groupby("dst")["bytes"].sum().max())
    tunnels = ex[ex["kind"] == "dns_tunnel"]
    if len(tunnels):
        answers["exfil_dns_domain"] = str(tunnels.sort_values("bytes").iloc[-1]["dst"])
    beacons = detect(case)
    beacons = beacons[(beacons["kind"] == "beacon") & (beacons["src"] == answers["patient_zero"])]
    if len(beacons):
        top = beacons.sort_values("score").iloc[-1]
        name = top["dst_name"] if isinstance(top["dst_name"], str) and top["dst_name"] else None
        if name is None:  # the name the implant resolved to reach that address
            q = case.sql("SELECT query FROM dns WHERE list_contains(answers, ?) ORDER BY ts LIMIT 1",
                         [str(top["dst"])])
            name = q["query"][0] if len(q) else None
        answers["c2_domain"] = str(name or top["dst"])
    return answers
