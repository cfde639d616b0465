"""Skip (locally) or fail (in CI) when a system tool the tests drive is not installed."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# Debian package for each tool; ./dev test installs them all.
APT_PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "chromium": "chromium",
    "oathtool": "oathtool",
    "zbarimg": "zbar-tools",
    "wrk": "wrk",
    "node": "nodejs",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


def unavailable(message: str) -> NoReturn:
    """Something the test needs from the machine is missing: a failure in CI, a skip elsewhere."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def missing_tool(name: str, detail: str = "") -> NoReturn:
    package = APT_PACKAGES.get(name, name)
    unavailable(
        f"{name} is not installed{': ' + detail if detail else ''} "
        f"(apt-get install -y {package}, or run ./dev test, which installs it)"
    )


def require_tool(name: str, path: str | None = None) -> str:
    """The tool's path: ``path`` if given and executable, else ``name`` on PATH."""
    if path is not None:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        missing_tool(name, f"{path} not found")
    found = shutil.which(name)
    if found is None:
        missing_tool(name)
    return found
