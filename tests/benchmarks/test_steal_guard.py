"""The benchmark's steal guard: a run during which the hypervisor took more than the limit of a
core is measured again, and the attempt with the least steal counts, for every target alike.

What is measured is replaced here by a scripted sequence of results (the selection is what is
under test, not wrk); the real measurement is covered by test_bench_smoke.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import run
from benchmarks.load import Result
from tests.benchmarks.scripted import Server, bench, result


def record(b: run.Bench, name: str = "introspection") -> Result:
    return b.record(1, name, Server(), "/introspect", {})  # type: ignore[arg-type]


def test_a_quiet_run_is_kept_at_once(tmp_path: Path, measured: list[Result]) -> None:
    b = bench(tmp_path)
    measured.append(result(1.3))
    assert record(b).steal_cpu == 1.3
    assert b.set_aside == []


def test_a_stolen_run_is_measured_again_and_the_quiet_one_counts(
    tmp_path: Path, measured: list[Result]
) -> None:
    b = bench(tmp_path)
    measured.extend([result(28.7, rps=4260), result(2.3, rps=5560)])
    kept = record(b)
    assert kept.rps == 5560
    assert b.results[1]["introspection"] == [kept]
    assert [(w, n, r.rps) for w, n, r in b.set_aside] == [(1, "introspection", 4260)]


def test_when_every_attempt_is_stolen_the_least_stolen_counts(
    tmp_path: Path, measured: list[Result]
) -> None:
    b = bench(tmp_path)
    measured.extend([result(20.0, rps=1), result(30.0, rps=2), result(10.0, rps=3)])
    assert record(b, "ceiling").rps == 3  # 1 + steal_retries attempts, no more
    assert sorted(r.rps for _, _, r in b.set_aside) == [1, 2]


def test_the_limit_and_the_retries_are_settings(tmp_path: Path, measured: list[Result]) -> None:
    b = bench(tmp_path, steal_limit=30.0, steal_retries=0)
    measured.append(result(20.0))
    assert record(b).steal_cpu == 20.0  # under a limit of 30: kept
    measured.append(result(40.0))
    assert record(b).steal_cpu == 40.0  # no retries allowed
    assert b.set_aside == []


def test_a_run_without_a_steal_figure_is_not_stolen(tmp_path: Path) -> None:
    assert not bench(tmp_path).stolen(result(None))


def test_an_exchange_run_is_measured_again_on_a_new_pool(
    tmp_path: Path, measured: list[Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench(tmp_path)
    pools: list[int] = []

    def make_pool(stepup: object, seconds: float) -> tuple[Path, int]:
        pools.append(len(pools))
        pool = tmp_path / "pool.tsv"
        pool.write_text("".join(f"code{i}\tverifier{i}\n" for i in range(100)))
        return pool, 100

    monkeypatch.setattr(b, "make_pool", make_pool)
    monkeypatch.setattr(b, "stepup_redis", SimpleNamespace(pid=None), raising=False)
    measured.extend([result(15.7, rps=2202), result(1.3, rps=2830)])
    b.exchange(1, Server(), "Basic x")  # type: ignore[arg-type]
    assert len(pools) == 2  # a code is never sent twice: the repeat has its own pool
    assert [r.rps for r in b.results[1]["exchange"]] == [2830]
    assert [r.rps for _, _, r in b.set_aside] == [2202]


def test_an_exhausted_pool_is_not_counted_as_a_steal_retry(
    tmp_path: Path, measured: list[Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench(tmp_path, steal_retries=1)
    pool = tmp_path / "pool.tsv"
    pool.write_text("code\tverifier\n")
    monkeypatch.setattr(b, "make_pool", lambda stepup, seconds: (pool, 1))
    monkeypatch.setattr(b, "stepup_redis", SimpleNamespace(pid=None), raising=False)
    measured.extend([result(1.0, exhausted=50), result(9.0, rps=1), result(8.0, rps=2)])
    b.exchange(2, Server(), "Basic x")  # type: ignore[arg-type]
    assert [r.rps for r in b.results[2]["exchange"]] == [2]
    assert [r.rps for _, _, r in b.set_aside] == [1]


def test_the_report_and_the_json_say_what_was_set_aside(
    tmp_path: Path, measured: list[Result]
) -> None:
    b = bench(tmp_path)
    measured.extend([result(12.0, rps=10), result(0.5, rps=20)])
    record(b, "jwks")
    summary = run.summarize(b)
    assert summary["set_aside"] == [{"workers": 1, "target": "jwks", **result(12.0, 10).as_dict()}]
    summary["machine"] = {"nproc": 2, "cpu": "test", "ram_gib": 1}
    settings = {"seconds": 10.0, "warmup": 2.0, "runs": 1}
    text = run.render(summary, settings)
    assert "set aside for steal and measured again: 1 run(s): jwks@1 (12 %)" in text
    # A saved run renders again the same, set-aside runs included.
    saved = json.loads(json.dumps({**summary, "settings": settings}, default=str))
    assert run.rerender(saved) == text


def test_a_stolen_exchange_run_is_kept_when_its_repeat_runs_out_of_codes(
    tmp_path: Path, measured: list[Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in a real run: a stolen run (60 % steal), then two repeats whose pools ran out.
    # The stolen run is still a measurement; nothing at all would be worse.
    b = bench(tmp_path)
    pool = tmp_path / "pool.tsv"
    pool.write_text("code\tverifier\n")
    monkeypatch.setattr(b, "make_pool", lambda stepup, seconds: (pool, 1))
    monkeypatch.setattr(b, "stepup_redis", SimpleNamespace(pid=None), raising=False)
    measured.extend(
        [result(60.7, rps=1497), result(1.0, exhausted=4495), result(1.0, exhausted=3000)]
    )
    b.exchange(1, Server(), "Basic x")  # type: ignore[arg-type]
    assert [r.rps for r in b.results[1]["exchange"]] == [1497]
    assert b.set_aside == []


def test_a_slow_stolen_exchange_run_does_not_shrink_the_next_pool(
    tmp_path: Path, measured: list[Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench(tmp_path, pool_limit=10_000.0)
    asked: list[float] = []

    def make_pool(stepup: object, seconds: float) -> tuple[Path, int]:
        asked.append(seconds)
        pool = tmp_path / "pool.tsv"
        pool.write_text("code\tverifier\n")
        return pool, int(seconds * 1000)  # 1,000 codes a second

    monkeypatch.setattr(b, "make_pool", make_pool)
    monkeypatch.setattr(b, "stepup_redis", SimpleNamespace(pid=None), raising=False)
    measured.extend([result(20.0, rps=3000), result(30.0, rps=1000), result(1.0, rps=2900)])
    b.exchange(1, Server(), "Basic x")  # type: ignore[arg-type]
    # 3,000 exchanges/s for 12 s, with 40 % to spare, at 1,000 codes/s: 50.4 s, twice.
    assert asked[1:] == [pytest.approx(50.4), pytest.approx(50.4)]
    assert [r.rps for r in b.results[1]["exchange"]] == [2900]
