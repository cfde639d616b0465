"""Scripted benchmark runs for the tests of what the harness does with its results (the steal
guard, the scaling pass): a Result made to order, a Bench with test settings, and a stand-in
for a started server. The real measurement is covered by test_bench_smoke.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import run
from benchmarks.load import Result


def result(steal: float | None, rps: float = 1000.0, exhausted: int = 0) -> Result:
    return Result(
        requests=int(rps * 10),
        seconds=10.0,
        rps=rps,
        p50_ms=5.0,
        p99_ms=10.0,
        p999_ms=20.0,
        errors=0,
        server_cpu=99.0,
        redis_cpu=5.0,
        rss_mb=[77.0],
        extra={"exhausted": exhausted} if exhausted else {},
        wrk_cpu=10.0,
        steal_cpu=steal,
        idle_cpu=70.0,
    )


def bench(tmp_path: Path, **overrides: Any) -> run.Bench:
    args = argparse.Namespace(
        seconds=10.0,
        warmup=2.0,
        steal_limit=5.0,
        steal_retries=2,
        pool_limit=60.0,
        pool_max=80_000,
    )
    for name, value in overrides.items():
        setattr(args, name, value)
    return run.Bench(args, tmp_path)


def configured_bench(tmp_path: Path, redis_url: str, **overrides: Any) -> run.Bench:
    """A bench as `prepare` leaves it, for configurations with stand-in servers (the test
    replaces processes.start_*, flow.first_proof and flow.exchange): ports, files and the
    subject token made up, its stepup Redis at `redis_url` (none is started)."""
    b = bench(tmp_path, **overrides)
    b.ceiling_port, b.stepup_port = 1, 2
    b.policy, b.keys = tmp_path / "policy.toml", {}
    b.upstream, b.subject_token = None, "subject"  # type: ignore[assignment]
    b.stepup_redis = SimpleNamespace(pid=None, url=redis_url)  # type: ignore[assignment]
    return b


class Server:
    url = "http://127.0.0.1:1"
