"""Pieces the endpoint tests share: a live server per module, and the OAuth error check."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stepup.storage.embedded import EmbeddedRedis
from tests.support.stepup import Stepup, Upstream, frozen_now, make_config, running_stepup


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the status, JSON with error and error_description, no-store."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    return body


def module_server(label: str) -> tuple[Callable[..., Iterator[Stepup]], Callable[..., Stepup]]:
    """Fixtures `live_stepup` (one live server for the module: starting one per test would
    dominate the run time) and `stepup` (that server with a fresh start for each test: Redis
    emptied by `redis_url`, the clock at the present). Assign both names in the module."""

    @pytest.fixture(scope="module")
    def live_stepup(
        tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
    ) -> Iterator[Stepup]:
        directory = tmp_path_factory.mktemp(label)
        clock = frozen_now()
        upstream = Upstream(directory, clock)
        config = make_config(upstream, directory / "data")
        with running_stepup(config, redis_server.url, clock, upstream) as running:
            yield running

    @pytest.fixture
    def stepup(live_stepup: Stepup, redis_url: str) -> Stepup:
        live_stepup.clock.set(frozen_now().now())
        return live_stepup

    return live_stepup, stepup


class OneLineServerErrors(logging.Filter):
    """Logs a server error's exception as one line instead of a traceback.

    On CPython 3.11 two threads formatting tracebacks at once (the server thread logging a
    500 while pytest reports the failing test) can raise "SystemError: AST constructor
    recursion depth mismatch" and abort the whole session with INTERNALERROR.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = ()
            record.exc_info = None
        return True
