"""Driving a server with wrk (64 connections, a warm-up first) and reading what it cost."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.processes import Server, cpu_seconds, host_cpu, rss_bytes

LUA = Path(__file__).resolve().parent / "lua"
THREADS = 2
CONNECTIONS = 64


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    return found


@dataclass
class Result:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int  # non-2xx/3xx answers, socket errors and timeouts
    server_cpu: float  # percent of one core, all server processes together
    redis_cpu: float
    rss_mb: list[float]  # per serving process, sampled halfway through the run
    extra: dict[str, int]
    # The rest of the machine's CPU budget in the same run (percent of one core; with server
    # and Redis they add up to about nproc x 100): wrk itself, the time the hypervisor gave
    # to someone else (steal), and what was left idle. None in results saved before these.
    wrk_cpu: float | None = None
    steal_cpu: float | None = None
    idle_cpu: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk(
    url: str,
    script: str,
    seconds: float,
    env: dict[str, str],
    *,
    connections: int = CONNECTIONS,
    during: Any = None,
) -> dict[str, Any]:
    """One wrk run; `during` (a callable) runs halfway through. Returns the script's JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    command = [
        wrk_binary(),
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA / script),
        url,
    ]
    full_env = {
        **os.environ,
        **env,
        "BENCH_LUA_DIR": str(LUA),
        "BENCH_RESULT": result_path,
        "BENCH_THREADS": str(THREADS),
    }
    try:
        process = subprocess.Popen(
            command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if during is not None:
            time.sleep(seconds / 2)
            during()
        output, _ = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {output.decode()}")
        data: dict[str, Any] = json.loads(Path(result_path).read_text())
        return data
    finally:
        Path(result_path).unlink(missing_ok=True)


def measure(
    server: Server,
    redis_pid: int | None,
    path: str,
    script: str,
    env: dict[str, str],
    *,
    seconds: float,
    warmup: float,
) -> Result:
    """Warm-up (discarded), then the measured run with CPU of server and Redis around it."""
    url = server.url + path
    if warmup > 0:
        wrk(url, script, warmup, env)
    pids = server.pids()
    redis_pids = [redis_pid] if redis_pid else []
    rss: list[float] = []

    def sample_rss() -> None:
        rss.extend(round(rss_bytes(pid) / 2**20, 1) for pid in server.workers())

    cpu_before, redis_before = cpu_seconds(pids), cpu_seconds(redis_pids)
    steal_before, idle_before = host_cpu()
    wrk_before = children_cpu()  # wrk is the only child waited for in between
    started = time.monotonic()
    data = wrk(url, script, seconds, env, during=sample_rss)
    elapsed = time.monotonic() - started
    cpu_after, redis_after = cpu_seconds(pids), cpu_seconds(redis_pids)
    steal_after, idle_after = host_cpu()
    wrk_after = children_cpu()

    def percent(before: float, after: float) -> float:
        return round(100 * (after - before) / elapsed, 1)

    duration = data["duration_us"] / 1e6
    errors = sum(data[k] for k in data if k.startswith("errors_"))
    known = {"requests", "duration_us", "bytes", "max_us", "p50_us", "p90_us", "p99_us", "p99.9_us"}
    return Result(
        requests=data["requests"],
        seconds=round(duration, 2),
        rps=round(data["requests"] / duration, 1),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p99.9_us"] / 1000,
        errors=errors,
        server_cpu=percent(cpu_before, cpu_after),
        redis_cpu=percent(redis_before, redis_after),
        wrk_cpu=percent(wrk_before, wrk_after),
        steal_cpu=percent(steal_before, steal_after),
        idle_cpu=percent(idle_before, idle_after),
        rss_mb=rss,
        extra={k: v for k, v in data.items() if k not in known and not k.startswith("errors_")},
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
