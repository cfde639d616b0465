"""The benchmark's audit check: after each configuration, the events stepup recorded (its JSON
log lines) against the entries its writers put in the Redis Stream, counted once its
processes have stopped and flushed. A configuration whose stream fell behind is a MISSED
target: its figures measured less work than stepup has to do (two workers dropped 28,000
events before the writers took turns, and no figure showed it).

The servers and the measurement are stand-ins; the log lines and the stream are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks import flow, processes, run, trail
from benchmarks.load import Result
from stepup.storage import keys
from tests.benchmarks.scripted import configured_bench, result

UVICORN_LINE = {"time": 1.0, "level": "info", "logger": "uvicorn.error", "message": "Started"}


def _event(n: int) -> dict[str, Any]:
    return {"time": 1.0, "event": "token.introspected", "outcome": "active", "jti": f"j{n}"}


def _lines(*entries: dict[str, Any] | str) -> bytes:
    return b"".join((e if isinstance(e, str) else json.dumps(e)).encode() + b"\n" for e in entries)


def test_only_audit_events_are_counted_among_the_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "stepup-1.log"
    log.write_bytes(
        _lines(
            "stepup serving http://localhost:1 on 127.0.0.1:1",
            UVICORN_LINE,
            _event(1),
            {**UVICORN_LINE, "message": 'a message quoting "event": in it'},
            _event(2),
            '{"time": 1.0, "event": "token.introspected", "outco',  # cut short by a kill
            {"event": "no outcome"},
            _event(3),
        )
    )
    assert trail.recorded(log) == 3


class _Stepup:
    """A stepup stand-in whose processes, as they stop, leave `recorded` audit lines in its
    log and put `streamed` entries in the stream (the writers flush on the way out)."""

    def __init__(self, log: Path, redis_url: str, recorded: int, streamed: int) -> None:
        self.url, self.log = "http://127.0.0.1:1", log
        self._redis_url, self._recorded, self._streamed = redis_url, recorded, streamed

    def workers(self) -> list[int]:
        return []

    def stop(self) -> None:
        self.log.write_bytes(_lines(UVICORN_LINE, *(_event(n) for n in range(self._recorded))))
        with redis.Redis.from_url(self._redis_url) as client:
            for n in range(self._streamed):
                client.xadd(keys.audit_stream(), {"body": json.dumps(_event(n))})


class _Ceiling:
    url = "http://127.0.0.1:1"

    def workers(self) -> list[int]:
        return []

    def stop(self) -> None:
        pass


@pytest.fixture
def counted_bench(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> run.Bench:
    b = configured_bench(tmp_path, redis_url, runs=1, only="introspection", no_peer=True, share=0.0)
    b.trail = trail.Trail(redis_url)
    monkeypatch.setattr(processes, "start_ceiling", lambda *args: _Ceiling())
    monkeypatch.setattr(flow, "first_proof", lambda url, upstream: "code")
    monkeypatch.setattr(flow, "exchange", lambda url, subject, code: "elevated")
    return b


def test_each_configuration_counts_its_own_events_and_a_shortfall_is_missed(
    counted_bench: run.Bench,
    measured: list[Result],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = counted_bench
    # 1 worker streams all 40 of its events; 2 workers stream 55 of their 60.
    stand_ins = iter(
        [
            _Stepup(tmp_path / "stepup-1.log", redis_url, recorded=40, streamed=40),
            _Stepup(tmp_path / "stepup-2.log", redis_url, recorded=60, streamed=55),
        ]
    )
    monkeypatch.setattr(processes, "start_stepup", lambda *args: next(stand_ins))
    measured.extend([result(0.5, rps=r) for r in (16_000, 7_000, 22_000, 9_000)])
    b.configuration(1)
    b.configuration(2)  # the stream already holds the first configuration's 40
    assert b.audit_trail == [
        {"workers": 1, "held": False, "recorded": 40, "streamed": 40},
        {"workers": 2, "held": False, "recorded": 60, "streamed": 55},
    ]
    summary = run.summarize(b)
    checks = {c["target"]: (c["value"], c["met"]) for c in summary["targets"]}
    assert checks["audit events not streamed (1w) <= 0"] == (0, True)
    assert checks["audit events not streamed (2w) <= 0"] == (5, False)
    summary["machine"] = {"nproc": 2, "cpu": "test", "ram_gib": 1}
    settings = {"seconds": 10.0, "warmup": 2.0, "runs": 1}
    text = run.render(summary, settings)
    assert "Audit stream (2w): 55 of the 60 events recorded (JSON log lines) streamed" in text
    assert "MISSED audit events not streamed (2w) <= 0: 5.00" in text
    saved = json.loads(json.dumps({**summary, "settings": settings}, default=str))
    assert run.rerender(saved) == text
