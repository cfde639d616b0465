"""Scripted benchmark runs for the tests of what the harness does with its results (the steal
guard, the scaling pass): a Result made to order, a Bench with test settings, and a stand-in
for a started server. The real measurement is covered by test_bench_smoke.py."""

from __future__ import annotations

import argparse
from pathlib import Path
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


class Server:
    url = "http://127.0.0.1:1"
