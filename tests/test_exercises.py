"""Training exercises: the automated pipeline recovers each scenario's answer key, and the
exercise notebook grades answers with a score and hints.

Truth is the scenario generator's answer key, written when the breach was made.
"""

from __future__ import annotations

import json

import pytest

import forensics
from forensics import exercises, scenario
from forensics.report import NOTEBOOKS


@pytest.fixture(scope="module", params=[1, 4, 6])
def solved(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"sc{request.param}")
    key = scenario.generate(out / "scenario", seed=request.param, profile="small")
    with forensics.open_case(out / "case") as case:
        case.ingest(out / "scenario" / "evidence")
        answers = exercises.solve(case)
    return out, key, answers


def test_pipeline_recovers_the_answer_key(solved):
    """End to end: patient zero, the ordered chain, scope, exfil (1%) and C2 from the case alone."""
    _, key, answers = solved
    grade = exercises.check(answers, key)
    wrong = {q: (answers.get(q), exercises.expected(key)[q]) for q, r in grade.results.items()
             if not r["correct"]}
    assert not wrong, json.dumps(wrong, default=str, indent=1)


def test_check_scores_and_hints(solved):
    _, key, _ = solved
    right = exercises.expected(key)
    full = exercises.check(right, key)
    assert full.score == full.total and full.percent == 100
    wrong = dict(right, patient_zero="WS99", exfil_http_bytes=right["exfil_http_bytes"] * 1.05,
                 lateral_chain=list(reversed(right["lateral_chain"])))
    g = exercises.check(wrong, key)
    for q in ("patient_zero", "exfil_http_bytes", "lateral_chain"):
        assert not g.results[q]["correct"] and g.results[q]["hint"]
        assert str(right[q]) not in g.results[q]["hint"]  # a hint, never the answer
    assert g.score == full.total - sum(exercises.QUESTIONS[q][1] for q in
                                       ("patient_zero", "exfil_http_bytes", "lateral_chain"))
    # Within 1% is right; spelling variants of names are accepted.
    close = dict(right, exfil_http_bytes=right["exfil_http_bytes"] * 1.009,
                 patient_zero=right["patient_zero"].lower() + ".acme.local")
    assert exercises.check(close, key).score == full.total


def test_exercise_notebook_grades(solved, tmp_path):
    pm = pytest.importorskip("papermill", reason="needs the lab extra")
    out, key, _ = solved
    nb = tmp_path / "ex.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / "exercises" / "01_first_response.ipynb"), str(nb),
                        parameters={"case_dir": str(out / "case"), "scenario_dir": str(out / "scenario"),
                                    "answers_json": json.dumps(exercises.expected(key))},
                        progress_bar=False, kernel_name="python3", cwd=str(NOTEBOOKS / "exercises"))
    text = nb.read_text()
    total = sum(p for _, p, _ in exercises.QUESTIONS.values())
    assert f"Score: {total} / {total} (100%)" in text
