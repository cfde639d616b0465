"""Shared fixtures. Everything here is a real process: redis-server, uvicorn, Chromium."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page

from stepup.clock import FrozenClock
from stepup.config import Config
from stepup.storage.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server
from tests.support.browser import CHROMIUM, launch_chromium, outside_playwright_loop
from tests.support.oauth import OneLineServerErrors
from tests.support.redis_proc import RedisProcess
from tests.support.stepup import Stepup, Upstream, frozen_now, make_config, running_stepup
from tests.support.tools import missing_tool, require_tool


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Tests that do not drive the browser run with no event loop marked running
    (see tests/support/browser.py), so anyio tests and asyncio.run work after it."""
    if "browser" in getattr(item, "fixturenames", ()):
        return (yield)
    with outside_playwright_loop():
        return (yield)


@pytest.fixture(scope="session", autouse=True)
def one_line_server_errors() -> Iterator[None]:
    logger = logging.getLogger("uvicorn.error")
    summary = OneLineServerErrors()
    logger.addFilter(summary)
    try:
        yield
    finally:
        logger.removeFilter(summary)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_executable() -> str:
    try:
        return find_redis_server()
    except EmbeddedRedisError as error:
        missing_tool("redis-server", str(error))


def _short_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh directory whose redis.sock path fits a Unix socket address."""
    path = tmp_path_factory.mktemp(name)
    if len(str(path / "redis.sock")) > 100:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    return path


@pytest.fixture(scope="session")
def redis_server(
    redis_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis]:
    """One throwaway (non-persistent) redis-server for the whole session."""
    data_dir = _short_dir(tmp_path_factory, "redis")
    with EmbeddedRedis(data_dir, persistent=False, executable=redis_executable) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's redis-server, emptied (FLUSHALL) before the test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_proc(
    redis_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisProcess]:
    """A persistent (appendfsync always) redis-server of the test's own, already started;
    the test may stop(), kill(), pause() and start() it again."""
    with RedisProcess(
        _short_dir(tmp_path_factory, "redis-proc"), executable=redis_executable
    ) as proc:
        yield proc


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    return require_tool("chromium", CHROMIUM)


@pytest.fixture(scope="session")
def oathtool() -> str:
    return require_tool("oathtool")


@pytest.fixture(scope="session")
def zbarimg() -> str:
    return require_tool("zbarimg")


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Browser]:
    with launch_chromium(chromium_executable) as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies and storage), closed after the test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def clock() -> FrozenClock:
    return frozen_now()


@pytest.fixture
def upstream(tmp_path: Path, clock: FrozenClock) -> Upstream:
    return Upstream(tmp_path, clock)


@pytest.fixture
def config(upstream: Upstream, tmp_path: Path) -> Config:
    return make_config(upstream, tmp_path / "data")


@pytest.fixture
def stepup(
    config: Config, redis_url: str, clock: FrozenClock, upstream: Upstream
) -> Iterator[Stepup]:
    with running_stepup(config, redis_url, clock, upstream) as running:
        yield running
