"""Every playbook notebook runs headless against a small case and produces its outputs.

The report must contain its sections, show evidence hashes that match the
files, and escape anything that came from evidence (here: a file name with markup).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _pcapbuild import eth, handshake_session, udp_pkt, write_pcap

import forensics
from forensics.report import NOTEBOOKS

pm = pytest.importorskip("papermill", reason="needs the lab extra (pip install -e '.[lab]')")

HOSTILE = "<img src=x onerror=alert(1)>.pcap"


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    frames = [eth(p) for p in handshake_session()]
    frames += [eth(udp_pkt("10.0.0.1", "10.0.0.53", 5353 + i, 53, b"q" * 30).pack()) for i in range(5)]
    cap = write_pcap(tmp / HOSTILE, frames)
    with forensics.open_case(tmp / "case") as c:
        c.ingest(cap)
    return tmp / "case", cap


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_executes(small_case, tmp_path, name):
    case_dir, _ = small_case
    params = {"case_dir": str(case_dir)}
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, progress_bar=False,
                        kernel_name="python3", cwd=str(NOTEBOOKS))
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if name.startswith(("01", "05")):
        assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"


def test_notebooks_are_committed_without_outputs():
    for p in NOTEBOOKS.rglob("*.ipynb"):
        nb = json.loads(p.read_text())
        assert nb["cells"][0]["cell_type"] == "code" or "parameters" in json.dumps(nb["cells"][:3])
        for c in nb["cells"]:
            assert not c.get("outputs"), f"{p.name} has outputs"


def test_report_sections_hashes_and_escaping(small_case, tmp_path):
    from forensics.report import render_report

    case_dir, cap = small_case
    html = render_report(case_dir, tmp_path / "r.html").read_text()
    for section in ("Evidence and chain of custody", "Method", "Network activity"):
        assert section in html
    assert hashlib.sha256(Path(cap).read_bytes()).hexdigest() in html
    assert "<img src=x onerror" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
