"""The real console entry, `python -m stepup.cli`, as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def cli_env() -> dict[str, str]:
    """The test's environment without stepup settings, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPUP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def stepup_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepup.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )
