"""The JSON-lines log of `stepup serve`: audit lines handed straight to the JSON handler are
written whole, once, in order, with one write per event-loop iteration, never after a record
logged later; with any other logging setup they go through logging as before."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from stepup import logs
from stepup.audit import Audit
from stepup.clock import FrozenClock

AUDIT = logging.getLogger(logs.AUDIT_LOGGER)


class Stream(io.StringIO):
    """Counts its writes: one per iteration is the point of holding lines."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


@contextmanager
def json_logging(*extra: logging.Handler) -> Iterator[tuple[logs.JsonLinesHandler, Stream]]:
    """The root's handlers as `stepup serve` has them (plus `extra`), for the test's body only:
    pytest puts its capture handlers back on the root for each phase."""
    stream = Stream()
    handler = logs.JsonLinesHandler(stream)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler, *extra]
    root.setLevel(logging.INFO)
    try:
        yield handler, stream
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def line(number: int) -> str:
    return json.dumps({"event": "test.line", "outcome": "success", "n": number})


def test_lines_of_one_iteration_are_written_together_at_its_end() -> None:
    async def run(stream: Stream) -> tuple[int, int]:
        for number in range(5):
            logs.write(AUDIT, line(number))
        before = len(stream.lines())
        await asyncio.sleep(0)
        return before, stream.writes

    with json_logging() as (_, stream):
        before, writes = asyncio.run(run(stream))
    assert before == 0
    assert writes == 1
    assert stream.lines() == [line(number) for number in range(5)]


def test_lines_of_successive_iterations_keep_their_order() -> None:
    async def run() -> None:
        for number in range(30):
            logs.write(AUDIT, line(number))
            if number % 7 == 0:
                await asyncio.sleep(0)

    with json_logging() as (_, stream):
        asyncio.run(run())
    assert stream.lines() == [line(number) for number in range(30)]


def test_a_record_logged_later_follows_the_held_lines() -> None:
    async def run() -> None:
        logs.write(AUDIT, line(1))
        logging.getLogger("stepup.errors").warning("after the audit line")
        logs.write(AUDIT, line(2))

    with json_logging() as (_, stream):
        asyncio.run(run())
    written = stream.lines()
    assert written[0] == line(1)
    assert json.loads(written[1])["message"] == "after the audit line"
    assert written[2] == line(2)
    assert len(written) == 3


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    with json_logging() as (_, stream):
        logs.write(AUDIT, line(1))
        assert stream.lines() == [line(1)]


def test_a_full_iteration_is_written_without_waiting_for_its_end() -> None:
    count = logs.MAX_HELD_LINES + 10

    async def run(stream: Stream) -> int:
        for number in range(count):
            logs.write(AUDIT, line(number))
        written = len(stream.lines())
        await asyncio.sleep(0)
        return written

    with json_logging() as (_, stream):
        written_before_the_end = asyncio.run(run(stream))
    assert written_before_the_end == logs.MAX_HELD_LINES
    assert stream.lines() == [line(number) for number in range(count)]


def test_flush_writes_the_held_lines() -> None:
    # logging's shutdown at exit flushes every handler; so does a change of stream.
    async def run(handler: logs.JsonLinesHandler, stream: Stream) -> list[str]:
        logs.write(AUDIT, line(1))
        handler.flush()
        return stream.lines()

    with json_logging() as (handler, stream):
        assert asyncio.run(run(handler, stream)) == [line(1)]
        assert stream.lines() == [line(1)]


def test_lines_held_when_a_loop_stopped_are_written_by_the_next_loop() -> None:
    # A line held in a loop's last iteration: the write it scheduled never runs, and must not
    # keep the lines after it from being written.
    async def next_loop() -> None:
        logs.write(AUDIT, line(2))
        await asyncio.sleep(0)

    with json_logging() as (_, stream):
        loop = asyncio.new_event_loop()
        try:
            loop.call_soon(loop.stop)
            loop.call_soon(logs.write, AUDIT, line(1))
            loop.run_forever()
        finally:
            loop.close()
        assert stream.lines() == []
        asyncio.run(next_loop())
        assert stream.lines() == [line(1), line(2)]


def test_with_another_handler_the_line_goes_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture = caplog.handler

    async def run() -> None:
        logs.write(AUDIT, line(1))

    with json_logging(capture) as (_, stream):
        asyncio.run(run())
        written = stream.lines()  # emitted as a record: written at once, no holding
    assert written == [line(1)]
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (logs.AUDIT_LOGGER, logging.INFO, line(1))
    ]


def test_a_filter_on_the_audit_logger_still_decides() -> None:
    class DropAll(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    drop = DropAll()
    AUDIT.addFilter(drop)
    try:
        with json_logging() as (_, stream):
            logs.write(AUDIT, line(1))
    finally:
        AUDIT.removeFilter(drop)
    assert stream.lines() == []


def test_a_level_above_info_still_silences_the_audit_logger() -> None:
    AUDIT.setLevel(logging.WARNING)
    try:
        with json_logging() as (_, stream):
            logs.write(AUDIT, line(1))
    finally:
        AUDIT.setLevel(logging.NOTSET)
    assert stream.lines() == []


def test_a_handler_of_its_own_on_the_audit_logger_gets_the_record_too() -> None:
    own = io.StringIO()
    extra = logging.StreamHandler(own)
    AUDIT.addHandler(extra)
    try:
        with json_logging() as (_, stream):
            logs.write(AUDIT, line(1))
    finally:
        AUDIT.removeHandler(extra)
    assert own.getvalue() == line(1) + "\n"
    assert stream.lines() == [line(1)]


def test_audit_record_writes_its_event_as_one_json_line() -> None:
    audit = Audit(FrozenClock(1_900_000_000.25))

    async def run() -> None:
        token = logs.correlation_id.set("req-1")
        try:
            audit.record("token.introspected", "success", client="rs", jti=None)
        finally:
            logs.correlation_id.reset(token)

    with json_logging() as (_, stream):
        asyncio.run(run())
    assert [json.loads(written) for written in stream.lines()] == [
        {
            "time": 1_900_000_000.25,
            "event": "token.introspected",
            "outcome": "success",
            "request_id": "req-1",
            "client": "rs",
        }
    ]


def test_a_line_not_held_is_written_before_write_returns() -> None:
    async def run(stream: Stream) -> tuple[list[str], int]:
        logs.write(AUDIT, line(1))
        logs.write(AUDIT, line(2), hold=False)
        written = stream.lines()
        logs.write(AUDIT, line(3), hold=False)
        return written, stream.writes

    with json_logging() as (_, stream):
        written, writes = asyncio.run(run(stream))
    # The line held before it goes first, in the same write: the order is kept.
    assert written == [line(1), line(2)]
    assert writes == 2
    assert stream.lines() == [line(1), line(2), line(3)]


def test_an_audit_that_does_not_hold_lines_writes_each_as_it_is_recorded() -> None:
    audit = Audit(FrozenClock(1_900_000_000.25), hold_lines=False)

    async def run(stream: Stream) -> list[int]:
        seen: list[int] = []
        for _ in range(3):
            audit.record("token.introspected", "inactive", client="rs")
            seen.append(len(stream.lines()))
        return seen

    with json_logging() as (_, stream):
        assert asyncio.run(run(stream)) == [1, 2, 3]
