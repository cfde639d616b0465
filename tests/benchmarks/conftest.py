from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import load
from benchmarks.load import Result


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Result]]:
    """The results load.measure hands out, in order; the test fills the list."""
    queue: list[Result] = []

    def measure(*args: Any, **kwargs: Any) -> Result:
        return queue.pop(0)

    monkeypatch.setattr(load, "measure", measure)
    monkeypatch.setattr(load, "wrk", lambda *args, **kwargs: {"errors_status": 0})
    yield queue
    assert queue == [], "every scripted run was measured"
