"""When an audit event's JSON line reaches the log file, with the real app and the JSON handler
of `stepup serve` writing to a real file: `[audit] log_lines = "immediate"` puts it there before
the answer starts to leave; the default, "batched", by the end of the event-loop iteration."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from stepup import logs
from stepup.app import create_app
from stepup.clock import FrozenClock
from stepup.config import parse
from tests.support.asgi import http_scope, receive_once
from tests.support.stepup import RS_ID, RS_SECRET, Upstream, policy_document

REQUEST_ID = "req-audit-lines-1"
# A token stepup never issued: introspection answers 200 {"active": false}, one audit line.
BODY = b"token=not-a-token-stepup-issued"


@contextmanager
def audit_log_file(path: Path) -> Iterator[None]:
    """The root's one handler a JsonLinesHandler, as `stepup serve` has it, writing to `path`
    instead of stderr (pytest puts its capture handlers back for each phase)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    with path.open("w", encoding="utf-8") as stream:
        root.handlers[:] = [logs.JsonLinesHandler(stream)]
        root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.handlers[:] = saved
            root.setLevel(level)


def introspected(path: Path) -> int:
    """How many audit lines of the test's introspection are in the file now."""
    entries = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]
    return sum(
        entry.get("event") == "token.introspected" and entry.get("request_id") == REQUEST_ID
        for entry in entries
    )


def introspection() -> dict[str, Any]:
    basic = base64.b64encode(f"{RS_ID}:{RS_SECRET}".encode())
    headers = [
        (b"host", b"localhost"),
        (b"x-request-id", REQUEST_ID.encode()),
        (b"authorization", b"Basic " + basic),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    return http_scope("POST", "/introspect", headers)


async def lines_as_the_answer_leaves(app: Starlette, path: Path) -> list[int]:
    """The introspection's lines in the file when the answer's start is sent, when its body
    is, and after the loop has run its next callbacks."""
    counts: list[int] = []
    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        counts.append(introspected(path))

    async with app.router.lifespan_context(app):
        await app(introspection(), receive_once(BODY), send)
        await asyncio.sleep(0)
        counts.append(introspected(path))
    assert statuses == [200]
    return counts


@pytest.fixture
def app_with(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> Callable[[str], Starlette]:
    def build(log_lines: str) -> Starlette:
        document = policy_document(upstream, tmp_path / "data")
        document["audit"] = {"log_lines": log_lines}
        config = parse(document, base_dir=tmp_path)
        return create_app(config, redis_url=redis_url, clock=clock)

    return build


@pytest.mark.anyio
async def test_immediate_lines_are_in_the_file_before_the_answer_leaves(
    app_with: Callable[[str], Starlette], tmp_path: Path
) -> None:
    path = tmp_path / "stepup.log"
    with audit_log_file(path):
        counts = await lines_as_the_answer_leaves(app_with("immediate"), path)
    assert counts == [1, 1, 1]


@pytest.mark.anyio
async def test_batched_lines_are_in_the_file_by_the_end_of_the_iteration(
    app_with: Callable[[str], Starlette], tmp_path: Path
) -> None:
    path = tmp_path / "stepup.log"
    with audit_log_file(path):
        counts = await lines_as_the_answer_leaves(app_with("batched"), path)
    # Held while the answer goes out in the same iteration (the loss "immediate" avoids),
    # written once the loop runs its next callbacks.
    assert counts == [0, 0, 1]
