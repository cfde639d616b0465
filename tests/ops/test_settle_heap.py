"""Once a server's app has started, what exists then is frozen out of the collector's scans
and young objects get more room (`stepup.serving.settle_heap`); an app built for tests, many
to a process, leaves the collector alone."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stepup import cli
from stepup.app import create_app
from stepup.config import Config
from stepup.serving import YOUNG_GENERATION, settle_heap
from tests.support.server import LiveServer
from tests.support.stepup import Upstream, policy_document, toml_document


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """The collector as this test process had it, put back afterwards."""
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        yield before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_settle_heap_freezes_what_exists_and_widens_the_young_generation(
    collector: tuple[int, int, int],
) -> None:
    assert gc.get_freeze_count() == 0
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION, collector[1], collector[2])
    assert collector[0] < YOUNG_GENERATION


def test_after_settling_the_collector_still_runs_by_itself(
    collector: tuple[int, int, int],
) -> None:
    settle_heap()

    class Node:
        other: object

    def cycle() -> weakref.ref[Node]:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    young_before = gc.get_stats()[0]["collections"]
    first = cycle()
    for _ in range(3):  # more new container objects than the young generation holds
        [cycle() for _ in range(YOUNG_GENERATION)]
    # No gc.collect() here: the collector ran on its own and freed the first cycle.
    assert gc.get_stats()[0]["collections"] > young_before
    assert first() is None


@pytest.mark.parametrize("settle", [True, False])
def test_the_served_app_settles_once_started_and_a_test_app_does_not(
    collector: tuple[int, int, int], config: Config, redis_url: str, settle: bool
) -> None:
    app = create_app(config, redis_url=redis_url, settle_heap=settle)
    assert gc.get_freeze_count() == 0  # built, not started
    with LiveServer(app) as live:
        assert httpx.get(live.url + "/jwks").status_code == 200
        assert (gc.get_freeze_count() > 0) is settle
        assert (gc.get_threshold()[0] == YOUNG_GENERATION) is settle


@pytest.fixture
def logging_as_it_was() -> Iterator[None]:
    """cli.app_factory configures logging for a worker process (logs.configure: the root's
    handler, and the record fields it skips); this test process gets its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    fields = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    srcfile = logging._srcfile
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = fields
        logging._srcfile = srcfile


def test_each_worker_of_several_settles_its_heap_once_started(
    collector: tuple[int, int, int],
    logging_as_it_was: None,
    upstream: Upstream,
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `stepup serve --workers N` has each worker build its app with cli.app_factory.
    policy = tmp_path / "stepup.toml"
    policy.write_text(toml_document(policy_document(upstream, tmp_path / "data")))
    monkeypatch.setenv("STEPUP_CONFIG", str(policy))
    monkeypatch.setenv("STEPUP_WORKER_REDIS_URL", redis_url)
    app = cli.app_factory()
    assert gc.get_freeze_count() == 0
    with LiveServer(app) as live:
        assert httpx.get(live.url + "/jwks").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GENERATION
