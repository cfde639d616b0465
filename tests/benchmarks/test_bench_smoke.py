"""The benchmark's pieces in a tiny mode: they must really do what the numbers claim (codes made
through the real flow, each redeemed once; the peer storing in Redis; memory read from records
the store wrote). Behaviour only: nothing here looks at a timing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks import flow, load, memory, processes, share
from stepup.storage.embedded import EmbeddedRedis
from tests.support.tools import missing_tool, require_tool, unavailable


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short: the Redis socket path must fit a Unix socket address.
    path = Path(tempfile.mkdtemp(prefix="bench-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bench_redis(workdir: Path, redis_executable: str) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(workdir / "r", persistent=False, executable=redis_executable) as server:
        yield server


@pytest.fixture
def stepup(
    workdir: Path, bench_redis: EmbeddedRedis
) -> Iterator[tuple[processes.Server, flow.Upstream]]:
    upstream = flow.Upstream(workdir)
    port = processes.free_port()
    policy = workdir / "policy.toml"
    flow.write_policy(flow.policy_document(upstream, workdir / "data", port), policy)
    server = processes.start_stepup(
        workdir, policy, bench_redis.url, port, 1, flow.write_keys(workdir)
    )
    try:
        yield server, upstream
    finally:
        server.stop()


def test_code_pool_comes_from_the_real_flow_and_each_code_redeems_once(
    workdir: Path, stepup: tuple[processes.Server, flow.Upstream]
) -> None:
    require_tool("wrk")
    server, upstream = stepup
    subject_token = upstream.token()
    first = flow.first_proof(server.url, upstream)  # enrols TOTP on the page and proves it
    elevated = flow.exchange(server.url, subject_token, first)
    assert elevated.count(".") == 2

    verifiers = flow.write_challenges(workdir / "challenges.tsv", 40)
    body = flow.par_body(subject_token, flow.POOL_CHALLENGE, code_challenge_method="S256")
    flow.write_form(workdir / "pool-par.form", body)
    data = load.wrk(
        server.url,
        "pool.lua",
        1,
        {
            "BENCH_CHALLENGES": str(workdir / "challenges.tsv"),
            "BENCH_OUT": str(workdir / "out"),
            "BENCH_BODY_FILE": str(workdir / "pool-par.form"),
            "BENCH_AUTHORIZE_PATH": f"/authorize?client_id={flow.CLIENT_ID}&request_uri=",
            "BENCH_AUTHORIZATION": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET),
        },
        connections=4,
    )
    pool = workdir / "pool.tsv"
    count = flow.collect_pool(workdir / "out", verifiers, pool)
    # Every challenge became a code, except a few in flight when wrk stopped (one per connection).
    assert count == data["codes"] and 36 <= count <= 40
    entries = [line.split("\t") for line in pool.read_text().splitlines()]
    assert len({code for code, _ in entries}) == count

    # Each code redeems once, with its own verifier, and never again.
    for code, verifier in entries[:3]:
        assert flow.exchange(server.url, subject_token, flow.Code(code, verifier))
        again = httpx.post(
            server.url + "/token",
            data=flow.exchange_body(subject_token, flow.Code(code, verifier)),
            headers={"Authorization": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET)},
        )
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # The exchange script spends the rest once each and reports when the pool runs dry.
    (workdir / "rest.tsv").write_text("".join(f"{c}\t{v}\n" for c, v in entries[3:]))
    flow.write_form(workdir / "exchange.form", flow.exchange_body(subject_token))
    result = load.wrk(
        server.url + "/token",
        "exchange.lua",
        1,
        {
            "BENCH_POOL_FILE": str(workdir / "rest.tsv"),
            "BENCH_BODY_FILE": str(workdir / "exchange.form"),
            "BENCH_AUTHORIZATION": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET),
        },
        connections=2,
    )
    assert result["exhausted"] > 0
    # The rest redeemed (but for one in flight per connection when wrk stopped) ...
    assert count - 5 <= result["requests"] - result["errors_status"] <= count - 3
    # ... and none twice: the only replays Redis saw are the three above, which revoked.
    with redis.Redis.from_url(server_redis_url(server)) as client:
        assert len(list(client.scan_iter("stepup:revoked:*"))) == 3

    url = server_redis_url(server)
    mem = asyncio.run(memory.elevations(url, 50, lambda _: None))
    assert mem["count"] == 50 and 0 < mem["memory_usage_mean_bytes"] < 2048
    # All of a token's keys: more than its record, by a spent marker and index entries.
    with redis.Redis.from_url(url) as client:
        tokens_before = len(list(client.scan_iter("stepup:tok:*")))
        markers_before = len(list(client.scan_iter("stepup:*:spent")))
        codes_before = len(list(client.scan_iter("stepup:*:code")))
    shapes = [
        asyncio.run(memory.footprint(url, 200, lambda _: None, remember=900, one_subject=one))
        for one in (True, False)
    ]
    with redis.Redis.from_url(url) as client:
        assert len(list(client.scan_iter("stepup:tok:*"))) == tokens_before + 400
        assert len(list(client.scan_iter("stepup:*:spent"))) == markers_before + 400
        # every code it stored was redeemed: none is left
        assert len(list(client.scan_iter("stepup:*:code"))) == codes_before
        assert 0 < client.ttl(next(client.scan_iter("stepup:*:spent"))) <= 900
        # Indexed under their subjects: one subject with 200 tokens, then 200 with one each.
        indexes = list(client.scan_iter("stepup:{s:bench-footprint-*}:elevations"))
        assert sorted(client.zcard(key) for key in indexes) == [1] * 200 + [200]
    for shape in shapes:
        assert shape["count"] == 200
        assert shape["spent_marker_bytes"] > 0
        assert shape["record_and_index_bytes"] > mem["memory_usage_mean_bytes"] / 2
        total = shape["spent_marker_bytes"] + shape["record_and_index_bytes"]
        assert abs(shape["used_memory_per_token_bytes"] - total) <= 1


def server_redis_url(server: processes.Server) -> str:
    return next(
        line.split("=", 1)[1]
        for line in Path(f"/proc/{server.process.pid}/environ").read_bytes().decode().split("\0")
        if line.startswith("STEPUP_REDIS_URL=")
    )


def test_peer_stores_its_tokens_in_redis(workdir: Path, bench_redis: EmbeddedRedis) -> None:
    require_tool("node")
    if not (processes.PEERS / "node_modules" / "ioredis").is_dir():
        missing_tool("tests/peers/node_modules", "run ./dev test (npm ci in tests/peers)")
    peer = processes.start_peer(workdir, bench_redis.socket_path, processes.free_port(), 1)
    try:
        answer = httpx.post(
            peer.url + "/token",
            data={
                "grant_type": "client_credentials",
                "resource": "https://opaque.bench.example",
                "scope": "payments:write",
            },
            auth=("bench-client", "bench-client-secret-0123456789abcdef"),
        )
        token = answer.json()["access_token"]
        with redis.Redis.from_url(bench_redis.url) as client:
            assert client.exists(f"oidc:ClientCredentials:{token}")
            ttl = client.ttl(f"oidc:ClientCredentials:{token}")
            assert 0 < ttl <= 900
            introspected = httpx.post(
                peer.url + "/token/introspection",
                data={"token": token},
                auth=("bench-rs", "bench-rs-secret-0123456789abcdefgh"),
            ).json()
            assert introspected["active"] is True
            client.delete(f"oidc:ClientCredentials:{token}")  # gone from Redis: inactive
        gone = httpx.post(
            peer.url + "/token/introspection",
            data={"token": token},
            auth=("bench-rs", "bench-rs-secret-0123456789abcdefgh"),
        ).json()
        assert gone == {"active": False}
    finally:
        peer.stop()


def test_the_cpu_budget_is_read_from_the_machine_not_made_up(workdir: Path) -> None:
    """The columns that say where the machine's CPU went (server, Redis, wrk, steal, idle)
    come from /proc and from wrk's own usage: the ceiling under a short wrk run shows its
    server and wrk busy, and the whole never exceeds what the machine's cores can give."""
    require_tool("wrk")
    ceiling = processes.start_ceiling(workdir, processes.free_port(), 1)
    try:
        result = load.measure(ceiling, None, "/", "fixed.lua", {}, seconds=2, warmup=0)
    finally:
        ceiling.stop()
    assert result.requests > 0 and result.errors == 0
    assert result.wrk_cpu is not None and result.steal_cpu is not None
    assert result.idle_cpu is not None
    assert result.server_cpu > 10 and result.wrk_cpu > 1
    assert result.redis_cpu == 0  # no Redis named: none counted
    assert result.steal_cpu >= 0 and result.idle_cpu >= 0
    cores = os.cpu_count() or 1
    accounted = result.server_cpu + result.wrk_cpu + result.steal_cpu + result.idle_cpu
    # Every figure is counted in 10 ms clock ticks, per process and per machine, over about
    # 2 s: a few percent either way. Something counted twice would be far above.
    assert accounted <= cores * 100 * 1.1


def test_host_cpu_counts_up_andchildren_cpu_takes_a_waited_child() -> None:
    steal, idle = processes.host_cpu()
    before = load.children_cpu()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
        ],
        check=True,
    )
    assert load.children_cpu() - before >= 0.25
    later_steal, later_idle = processes.host_cpu()
    assert later_steal >= steal and later_idle >= idle


def require_cpu_hold() -> None:
    why = share.problem()
    if why is not None:
        unavailable(f"the scaling pass's CPU hold cannot be tested here: {why}")


def test_a_held_process_gets_its_share_of_a_core_and_no_more() -> None:
    """The scaling pass's hold is the kernel's: a process that would spin a whole core gets
    about the share it is held to, and goes back to the machine's root group afterwards."""
    require_cpu_hold()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:

        def cores_used(seconds: float) -> float:
            before = processes.cpu_seconds([spinner.pid])
            time.sleep(seconds)
            return (processes.cpu_seconds([spinner.pid]) - before) / seconds

        # Free, it takes up to a core; the bounds leave room for a neighbour's steal.
        assert cores_used(1.0) > 0.4
        with share.CpuShare(0.2) as held:
            group = held.hold(spinner.pid)
            assert (group / "cpu.cfs_quota_us").read_text().strip() == "2000"
            assert (group / "cpu.cfs_period_us").read_text().strip() == "10000"
            assert str(spinner.pid) in (group / "cgroup.procs").read_text().split()
            # 0.2 of a core in 10 ms periods, over 1 s; CPU time is counted in 10 ms ticks.
            assert 0.05 < cores_used(1.0) < 0.3
        assert not held.group.exists()
        assert spinner.poll() is None  # still running, in the root group again
        assert cores_used(1.0) > 0.4
    finally:
        spinner.kill()
        spinner.wait()


def test_a_share_outside_one_core_is_refused() -> None:
    for wrong in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="share of one core"):
            share.CpuShare(wrong)


def test_a_machine_without_the_controller_is_told_what_is_missing(tmp_path: Path) -> None:
    assert "cpu.cfs_quota_us is missing" in (share.problem(tmp_path) or "")
    with pytest.raises(RuntimeError, match="cannot hold processes to a CPU share"):
        share.CpuShare(0.5, controller=tmp_path)


def test_the_scaling_pass_holds_the_processes_that_serve(workdir: Path) -> None:
    """What the scaling pass holds is each of uvicorn's serving workers (not its supervisor):
    the real ceiling with 2 workers, each held to a quarter of a core, under a real wrk run,
    uses at most about half a core in all, where free it would use well over one."""
    require_tool("wrk")
    require_cpu_hold()
    ceiling = processes.start_ceiling(workdir, processes.free_port(), 2)
    try:
        workers = ceiling.workers()
        assert len(workers) == 2 and ceiling.process.pid not in workers
        with share.CpuShare(0.25) as held:
            groups = [held.hold(pid) for pid in workers]
            for pid, group in zip(workers, groups, strict=True):
                assert (group / "cgroup.procs").read_text().split() == [str(pid)]
            result = load.measure(ceiling, None, "/", "fixed.lua", {}, seconds=2, warmup=0)
    finally:
        ceiling.stop()
    assert result.requests > 0 and result.errors == 0
    # 2 x 25 % of a core; CPU time is counted in 10 ms ticks over about 2 s.
    assert 10 < result.server_cpu < 60
