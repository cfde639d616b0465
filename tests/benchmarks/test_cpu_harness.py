"""The in-process harness (benchmarks/cpu.py) run for real in a tiny mode: behaviour only,
never timings. With --redis it says what Redis ran for each request of a round."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.cli import ROOT, cli_env


def run_harness(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu", "--rounds", "1", "--warmup", "20", *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def per_request(line: str) -> dict[str, float]:
    """{COMMAND: calls per request} of a "  Redis … µs CPU/request: GET 1.00 (0.4 µs), …" line."""
    return {name: float(calls) for name, calls in re.findall(r"([A-Z]+) (\d+\.\d+) \(", line)}


def test_redis_side_per_request_of_each_round() -> None:
    out = run_harness("--only", "introspection,intake", "--requests", "200", "--redis")
    lines = out.splitlines()
    rounds = [i for i, line in enumerate(lines) if line.startswith("round 1 ")]
    assert [lines[i].split()[2] for i in rounds] == ["introspection", "intake"]
    introspection, intake = (lines[i + 1] for i in rounds)
    for line in (introspection, intake):
        match = re.match(r"  Redis (\d+\.\d) µs CPU/request: ", line)
        assert match is not None, line
        assert float(match.group(1)) > 0
    seen = per_request(introspection)
    # Each introspection reads its token's record once; every one is audited, and each
    # audit event is one stream entry of the writer's append script (called per batch).
    assert 1.0 <= seen["GET"] < 1.1, seen
    assert 1.0 <= seen["XADD"] < 1.1, seen
    assert 0 < seen["EVALSHA"] < 1, seen
    assert "SET" not in seen or seen["SET"] < 0.1, seen
    # An intake stores its pending request: one SET each, which an introspection never makes.
    assert 1.0 <= per_request(intake)["SET"] < 1.1, intake


def test_without_the_option_redis_is_not_read() -> None:
    out = run_harness("--only", "introspection", "--requests", "100")
    assert "round 1 introspection" in out
    assert "Redis" not in out
