"""Running code in a fresh interpreter, for tests about what a new process imports or does."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a new interpreter (none of this test process's imports) and return its stdout.

    Fails the test when it exits with an error; a ``timeout`` (seconds) turns a hang
    into a failure.
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout
