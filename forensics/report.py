"""Report building blocks and the headless report renderer.

The playbook notebooks call these functions (a notebook cell stays one line);
:func:`render_report` executes ``notebooks/05_breach_scope_report.ipynb`` with
papermill against a case and exports it to HTML without code cells.

Everything that comes from evidence (addresses, names, payload text) is
rendered through pandas' escaping HTML writer or ``html.escape``: nothing from
a capture or a log becomes live HTML.
"""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forensics import __version__

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from forensics.case import Case
    from forensics.ingest import IngestResult

__all__ = [
    "NOTEBOOKS",
    "custody",
    "ingest_summary",
    "protocol_mix",
    "render_report",
    "show_full_values",
    "title_block",
    "top_talkers",
    "traffic_over_time",
    "warnings_summary",
]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
REPORT_NOTEBOOK = "05_breach_scope_report.ipynb"


def show_full_values() -> None:
    """Show table cells in full (hashes, paths) instead of pandas' 50-character cut."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", 50)


def title_block(case: Case, title: str) -> str:
    """Markdown heading of the report: title, case, tool version, generation time."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"# {html.escape(title)}\n\nCase `{html.escape(case.path.name)}` · Breachbook "
            f"{__version__}\n\nGenerated {now}")


def custody(case: Case) -> pd.DataFrame:
    """Evidence with its registered and current SHA-256 (re-hashed now) and status."""
    ev = case.verify_evidence()
    meta = case.evidence()[["evidence_id", "format", "size", "registered_at", "status"]]
    out = ev.merge(meta.rename(columns={"status": "ingest_status"}), on="evidence_id")
    out = out.rename(columns={"status": "hash_check"})
    return out[["evidence_id", "path", "format", "size", "registered_at", "sha256", "sha256_now",
                "hash_check", "ingest_status"]]


def ingest_summary(results: list[IngestResult]) -> pd.DataFrame:
    """One row per file of an ingest: format, records, sessions, warnings, time."""
    import pandas as pd

    return pd.DataFrame([{
        "file": str(r.path), "format": r.format, "already_in_case": r.skipped,
        "records": r.records, "sessions": r.sessions, "warnings": r.warnings,
        "seconds": round(r.seconds, 2), "error": r.error,
    } for r in results])


def warnings_summary(case: Case) -> pd.DataFrame:
    """Warnings grouped by evidence and kind, with the first offset and an example."""
    return case.sql("""
        SELECT e.name AS evidence, w.code, w.severity, sum(w.count) AS occurrences,
               min(w."offset") AS first_offset, any_value(w.message) AS example
        FROM ingest_warnings w JOIN evidence e USING (evidence_id)
        GROUP BY ALL ORDER BY occurrences DESC""")


def protocol_mix(case: Case) -> pd.DataFrame:
    """Sessions, packets and bytes per transport and service."""
    return case.sql("""
        SELECT proto, coalesce(service, '?') AS service, count(*) AS sessions,
               sum(orig_pkts + resp_pkts) AS packets,
               sum(orig_ip_bytes + resp_ip_bytes) AS ip_bytes
        FROM sessions GROUP BY ALL ORDER BY ip_bytes DESC""")


def top_talkers(case: Case, n: int = 15) -> pd.DataFrame:
    """Address pairs with the most IP bytes between them."""
    return case.sql(f"""
        SELECT orig_h, resp_h, count(*) AS sessions, list(DISTINCT resp_p ORDER BY resp_p)[:8] AS ports,
               sum(orig_ip_bytes) AS orig_ip_bytes, sum(resp_ip_bytes) AS resp_ip_bytes,
               min(ts) AS first_seen, max(ts_end) AS last_seen
        FROM sessions GROUP BY ALL
        ORDER BY sum(orig_ip_bytes) + sum(resp_ip_bytes) DESC LIMIT {int(n)}""")


def traffic_over_time(case: Case, bins: int = 60) -> Figure:
    """A matplotlib figure: IP bytes per time bin, by transport."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = case.sql("SELECT ts, proto, orig_ip_bytes + resp_ip_bytes AS b FROM sessions ORDER BY ts")
    fig, ax = plt.subplots(figsize=(10, 3))
    if len(df):
        span = (df["ts"].max() - df["ts"].min()).total_seconds() or 1.0
        width = max(span / bins, 1e-3)
        t0 = df["ts"].min()
        df["bin"] = ((df["ts"] - t0).dt.total_seconds() // width).astype(int)
        pivot = df.pivot_table(index="bin", columns="proto", values="b", aggfunc="sum").fillna(0)
        pivot.index = [t0 + pd.Timedelta(seconds=i * width) for i in pivot.index]
        pivot.plot(ax=ax, kind="area", stacked=True, linewidth=0)
    ax.set_ylabel("IP bytes")
    ax.set_title("Traffic over time (session start, UTC)")
    fig.tight_layout()
    plt.close(fig)  # the notebook shows the returned figure once, not pyplot's copy too
    return fig


def render_report(case_dir: Path, output: Path, params: dict[str, Any] | None = None) -> Path:
    """Execute the report notebook against a case and export it to HTML (no code cells).

    Args:
        case_dir: the case directory.
        output: where to write the HTML.
        params: extra papermill parameters (``title``, ...).

    Returns:
        The path written.

    Raises:
        ImportError: papermill or nbconvert is missing (install the ``lab`` extra).
    """
    try:
        import nbformat
        import papermill as pm
        from nbconvert import HTMLExporter
    except ImportError as exc:
        raise ImportError("rendering reports needs the lab extra: pip install 'breachbook[lab]'") from exc
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "report.ipynb"
        pm.execute_notebook(
            str(NOTEBOOKS / REPORT_NOTEBOOK), str(executed),
            parameters={"case_dir": str(Path(case_dir).resolve()), **(params or {})},
            progress_bar=False, kernel_name="python3", cwd=str(NOTEBOOKS),
        )
        nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    output.write_text(body, encoding="utf-8")
    return output
