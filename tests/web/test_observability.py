"""Request ids (stepup/web/observability.py): a usable X-Request-ID is echoed, anything else
gets a fresh id; fresh ids are unique within a process, across processes and after a fork."""

from __future__ import annotations

import os
import re

import pytest

from stepup.web import observability
from stepup.web.observability import fresh_request_id, request_id

FRESH = re.compile(r"[0-9a-f]{32}")


def scope(*request_ids: bytes) -> dict[str, object]:
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    headers += [(b"x-request-id", value) for value in request_ids]
    return {"type": "http", "headers": headers}


def test_a_usable_request_id_is_kept() -> None:
    assert request_id(scope(b"trace-4f1c.a")) == "trace-4f1c.a"
    assert request_id(scope(b"a" * 128)) == "a" * 128


@pytest.mark.parametrize(
    "given", [b"", b'a "quoted" id', b"two words", b"a" * 129, b"line\nbreak", b"caf\xe9"]
)
def test_an_unusable_request_id_is_replaced_by_a_fresh_one(given: bytes) -> None:
    assert FRESH.fullmatch(request_id(scope(given)))


def test_only_the_first_request_id_header_counts() -> None:
    assert request_id(scope(b"first", b"second")) == "first"
    replaced = request_id(scope(b"not usable", b"second"))
    assert FRESH.fullmatch(replaced)


def test_without_a_request_id_one_is_made() -> None:
    assert FRESH.fullmatch(request_id(scope()))


def test_fresh_ids_do_not_repeat() -> None:
    made = [request_id(scope()) for _ in range(100_000)]
    assert len(set(made)) == len(made)
    assert all(FRESH.fullmatch(made_id) for made_id in made[::997])


def test_fresh_ids_of_two_processes_differ() -> None:
    # Each process draws its own prefix; two generators stand for two processes here.
    one, other = observability._RequestIds(), observability._RequestIds()
    assert {one() for _ in range(1000)}.isdisjoint({other() for _ in range(1000)})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    fresh_request_id()  # the parent has made ids before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            os.write(write, "\n".join(fresh_request_id() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split("\n"))
    os.waitpid(child, 0)
    parents = {fresh_request_id() for _ in range(100)}
    assert len(childs) == 100
    assert childs.isdisjoint(parents)
    assert {made[:16] for made in childs}.isdisjoint({made[:16] for made in parents})
