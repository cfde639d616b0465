"""The benchmark run: for 1 and then 2 workers, the ceiling, stepup and the peer side by side,
each endpoint measured `--runs` times in turn; then Redis memory; then one table of ratios.

A run during which the hypervisor took more than `--steal-limit` percent of a core (steal,
from /proc/stat) measured the neighbours as much as the code: it is set aside and measured
again, at most `--steal-retries` times, for every target alike (ceiling, stepup, peer). When
every attempt was over the limit the one with the least steal counts. Set-aside runs stay in
the JSON (`set_aside`) with their figures, and the report says how many there were.

Then the scaling pass: the ceiling and stepup again with 1 and 2 workers, each serving
process held to `--share` of one core (benchmarks/share.py), so that wrk and Redis have room
of their own on a small machine and "2 workers / 1 worker" reads the server, not the cores it
shares with its load generator. `--share 0` leaves the pass out."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks import flow, load, memory, processes, share, trail
from benchmarks.load import Result

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_SHARE = 0.5  # of one core, per serving process, in the scaling pass
_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


# What is measured: (server, name, path, how). Peer names are prefixed "peer".
STEPUP_TARGETS = ["introspection", "exchange", "intake", "jwks", "metadata"]
PEER_TARGETS = ["peer_introspection", "peer_jwt"]
# The runs kept, by process count and target.
Runs = dict[int, dict[str, list[Result]]]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: Runs = defaultdict(lambda: defaultdict(list))
        # The scaling pass's results (each serving process held to a share of a core), and
        # whether the runs being measured now belong to it.
        self.held: Runs = defaultdict(lambda: defaultdict(list))
        self.holding = False
        self.pool_seconds = 2.5 * (args.seconds + args.warmup)
        self.memory: dict[str, Any] = {}
        self.notes: list[str] = []
        # Runs measured again because of steal: (workers, target, the run set aside).
        self.set_aside: list[tuple[int, str, Result]] = []
        # Each configuration's audit events, recorded and streamed (prepare() makes the
        # counter; a bench that was not prepared has no Redis to count in).
        self.trail: trail.Trail | None = None
        self.audit_trail: list[dict[str, Any]] = []

    # -- setup ---------------------------------------------------------------------------

    def prepare(self) -> None:
        work = self.workdir
        progress(f"work directory {work}")
        self.stepup_redis = processes.private_redis(work / "redis-stepup")
        self.trail = trail.Trail(self.stepup_redis.url)
        self.peer_redis = processes.private_redis(work / "redis-peer")
        self.upstream = flow.Upstream(work)
        self.keys = flow.write_keys(work)
        self.stepup_port = processes.free_port()
        self.ceiling_port = processes.free_port()
        self.peer_port = processes.free_port()
        self.policy = work / "policy.toml"
        flow.write_policy(
            flow.policy_document(self.upstream, work / "data", self.stepup_port), self.policy
        )
        self.subject_token = self.upstream.token()
        self.verifiers = flow.write_challenges(work / "challenges.tsv", self.args.pool_max)
        pool_body = flow.par_body(self.subject_token, flow.POOL_CHALLENGE)
        pool_body["code_challenge_method"] = "S256"
        flow.write_form(work / "pool-par.form", pool_body)
        intake = flow.par_body(
            self.subject_token,
            flow.CHALLENGE,
            state="bench-state",
            code_challenge=flow.pkce()[1],
            code_challenge_method="S256",
        )
        flow.write_form(work / "intake.form", intake)
        flow.write_form(work / "exchange.form", flow.exchange_body(self.subject_token))

    # -- one configuration ---------------------------------------------------------------

    def configuration(self, workers: int, held: share.CpuShare | None = None) -> None:
        """One process count: the ceiling, stepup and the peer started, measured in turns and
        stopped. `held`: the scaling pass, where each serving process of the ceiling and
        stepup is held to a share of a core (no peer: its scaling is not a target)."""
        work = self.workdir
        self.holding = held is not None
        if held is None:
            progress(f"starting ceiling, stepup and peer with {workers} process(es) each")
        else:
            progress(
                f"scaling pass: ceiling and stepup with {workers} process(es), "
                f"each held to {held.share:.0%} of a core"
            )
        servers: list[processes.Server] = []
        if self.trail is not None:
            self.trail.start()
        try:
            ceiling = processes.start_ceiling(work, self.ceiling_port, workers)
            servers.append(ceiling)
            stepup = processes.start_stepup(
                work,
                self.policy,
                self.stepup_redis.url,
                self.stepup_port,
                workers,
                self.keys,
            )
            servers.append(stepup)
            if held is not None:
                for pid in [*ceiling.workers(), *stepup.workers()]:
                    held.hold(pid)
            peer = None
            if not self.args.no_peer and held is None:
                peer = processes.start_peer(
                    work, self.peer_redis.socket_path, self.peer_port, workers
                )
                servers.append(peer)
            progress("  servers ready; one real step-up proof, then an elevated token")
            code = flow.first_proof(stepup.url, self.upstream)
            elevated = flow.exchange(stepup.url, self.subject_token, code)
            flow.write_form(work / "introspect.form", {"token": elevated})
            if peer is not None:
                opaque = _peer_token(peer.url, "https://opaque.bench.example")
                flow.write_form(work / "peer-introspect.form", {"token": opaque})
            for run in range(self.args.runs):
                progress(f"run {run + 1}/{self.args.runs} with {workers} process(es){self.label}")
                self.record(workers, "ceiling", ceiling, "/", {"BENCH_METHOD": "GET"})
                self.stepup_round(workers, stepup)
                if peer is not None:
                    self.peer_round(workers, peer)
        finally:
            for server in servers:
                server.stop()
        if self.trail is not None:
            counted = self.trail.finish(stepup.log)
            self.audit_trail.append({"workers": workers, "held": self.holding, **counted})
            progress(
                f"  audit: {counted['streamed']:,} of {counted['recorded']:,} recorded events "
                "in the stream"
            )

    def record(
        self,
        workers: int,
        name: str,
        server: processes.Server,
        path: str,
        env: dict[str, str],
        *,
        script: str = "fixed.lua",
        redis_pid: int | None = None,
    ) -> Result:
        """One target measured; a run over the steal limit is measured again (the attempt with
        the least steal counts)."""
        attempts: list[Result] = []
        for _ in range(1 + self.args.steal_retries):
            attempts.append(
                self._measure(name, server, path, env, script=script, redis_pid=redis_pid)
            )
            if not self.stolen(attempts[-1]):
                break
        return self._keep_least_stolen(workers, name, attempts)

    def _measure(
        self,
        name: str,
        server: processes.Server,
        path: str,
        env: dict[str, str],
        *,
        script: str,
        redis_pid: int | None,
        warmup_env: dict[str, str] | None = None,
    ) -> Result:
        """One measured run, printed. `warmup_env`: the warm-up's own environment (the
        exchange's warm-up redeems other codes than the run)."""
        args = self.args
        if warmup_env is not None:
            load.wrk(server.url + path, script, args.warmup, warmup_env)
        result = load.measure(
            server,
            redis_pid,
            path,
            script,
            env,
            seconds=args.seconds,
            warmup=0 if warmup_env is not None else args.warmup,
        )
        again = f", steal over {args.steal_limit:g} %" if self.stolen(result) else ""
        self._report(result, name, again)
        return result

    def stolen(self, result: Result) -> bool:
        """Whether the hypervisor took more of a core during the run than the limit allows."""
        return result.steal_cpu is not None and result.steal_cpu > self.args.steal_limit

    def _report(self, result: Result, name: str, after: str) -> None:
        note = f", {result.errors} errors" if result.errors else ""
        progress(
            f"  {name:<20} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  p99.9 {result.p999_ms:7.2f} ms  "
            f"cpu {result.server_cpu:5.1f}% redis {result.redis_cpu:4.1f}% "
            f"wrk {result.wrk_cpu or 0:4.1f}% steal {result.steal_cpu or 0:4.1f}% "
            f"idle {result.idle_cpu or 0:5.1f}%{note}{after}"
        )

    @property
    def label(self) -> str:
        """What a run of the scaling pass is named after, in the progress lines and set_aside."""
        return ", held" if self.holding else ""

    def _keep_least_stolen(self, workers: int, name: str, attempts: list[Result]) -> Result:
        """The attempt with the least steal counts; the others are set aside."""
        kept = min(attempts, key=lambda r: r.steal_cpu or 0.0)
        self.set_aside.extend((workers, name + self.label, r) for r in attempts if r is not kept)
        (self.held if self.holding else self.results)[workers][name].append(kept)
        if kept is not attempts[-1]:
            progress(f"  {name}: the attempt with the least steal counts ({kept.rps:,.0f} req/s)")
        return kept

    def stepup_round(self, workers: int, stepup: processes.Server) -> None:
        work = self.workdir
        redis_pid = self.stepup_redis.pid
        client = flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET)
        rs = flow.basic(flow.RS_ID, flow.RS_SECRET)
        post = {"BENCH_METHOD": "POST"}
        only = set(self.args.only.split(",")) if self.args.only else set(STEPUP_TARGETS)
        if "introspection" in only:
            self.record(
                workers,
                "introspection",
                stepup,
                "/introspect",
                {
                    **post,
                    "BENCH_BODY_FILE": str(work / "introspect.form"),
                    "BENCH_AUTHORIZATION": rs,
                },
                redis_pid=redis_pid,
            )
        if "exchange" in only:
            self.exchange(workers, stepup, client)
        if "intake" in only:
            self.record(
                workers,
                "intake",
                stepup,
                "/par",
                {
                    **post,
                    "BENCH_BODY_FILE": str(work / "intake.form"),
                    "BENCH_AUTHORIZATION": client,
                },
                redis_pid=redis_pid,
            )
            self.memory.setdefault(
                "pending_request", asyncio.run(memory.pending_requests(self.stepup_redis.url))
            )
        if "jwks" in only:
            self.record(
                workers, "jwks", stepup, "/jwks", {"BENCH_METHOD": "GET"}, redis_pid=redis_pid
            )
        if "metadata" in only:
            self.record(
                workers,
                "metadata",
                stepup,
                "/.well-known/oauth-authorization-server",
                {"BENCH_METHOD": "GET"},
                redis_pid=redis_pid,
            )

    def make_pool(self, stepup: processes.Server, seconds: float) -> tuple[Path, int]:
        work = self.workdir
        progress(f"  producing codes through /par + /authorize for {seconds:.0f} s")
        out = work / "pool-out"
        data = load.wrk(
            stepup.url,
            "pool.lua",
            seconds,
            {
                "BENCH_CHALLENGES": str(work / "challenges.tsv"),
                "BENCH_OUT": str(out),
                "BENCH_BODY_FILE": str(work / "pool-par.form"),
                "BENCH_AUTHORIZE_PATH": f"/authorize?client_id={flow.CLIENT_ID}&request_uri=",
                "BENCH_AUTHORIZATION": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET),
            },
        )
        pool = work / "pool.tsv"
        count = flow.collect_pool(out, self.verifiers, pool)
        progress(f"  {count:,} codes ({count / seconds:,.0f}/s, {data['errors_status']} refused)")
        return pool, count

    def exchange(self, workers: int, stepup: processes.Server, client: str) -> None:
        args = self.args
        attempts: list[Result] = []  # runs that had codes to the end
        fastest = 0.0
        ran_out = 0
        while True:
            pool, count = self.make_pool(stepup, self.pool_seconds)
            # The warm-up redeems the first part of the pool, the measured run the rest:
            # no code is ever sent twice.
            lines = pool.read_text().splitlines(keepends=True)
            split = int(len(lines) * args.warmup / (args.warmup + args.seconds))
            (self.workdir / "pool-warm.tsv").write_text("".join(lines[:split]))
            (self.workdir / "pool-run.tsv").write_text("".join(lines[split:]))
            common = {
                "BENCH_BODY_FILE": str(self.workdir / "exchange.form"),
                "BENCH_AUTHORIZATION": client,
            }
            # Measured once per pool: a code is never sent twice.
            result = self._measure(
                "exchange",
                stepup,
                "/token",
                {**common, "BENCH_POOL_FILE": str(self.workdir / "pool-run.tsv")},
                script="exchange.lua",
                redis_pid=self.stepup_redis.pid,
                warmup_env={**common, "BENCH_POOL_FILE": str(self.workdir / "pool-warm.tsv")},
            )
            # Sized for the fastest run yet: a slow (stolen) run must not shrink the next pool.
            fastest = max(fastest, result.rps)
            rate = count / self.pool_seconds
            needed = fastest * (args.seconds + args.warmup) * 1.4
            self.pool_seconds = min(args.pool_limit, max(3.0, needed / max(rate, 1.0)))
            if count >= args.pool_max * 0.98:
                self.notes.append("the code pool hit --pool-max; raise it for longer runs")
            if result.extra.get("exhausted"):
                ran_out += 1
                if ran_out >= 2:
                    break
                progress(f"  pool ran out ({result.extra['exhausted']} requests): again, larger")
                self.pool_seconds = min(args.pool_limit, self.pool_seconds * 2)
                continue
            attempts.append(result)
            if not self.stolen(result) or len(attempts) > args.steal_retries:
                break
            progress(f"  steal over {args.steal_limit:g} % of a core: again, on a new pool")
        if not attempts:
            self.notes.append(f"exchange with {workers} worker(s): the code pool ran out")
            return
        self._keep_least_stolen(workers, "exchange", attempts)

    def peer_round(self, workers: int, peer: processes.Server) -> None:
        work = self.workdir
        pid = self.peer_redis.pid
        rs = flow.basic("bench-rs", "bench-rs-secret-0123456789abcdefgh")
        client = flow.basic("bench-client", "bench-client-secret-0123456789abcdef")
        flow.write_form(
            work / "peer-jwt.form",
            {
                "grant_type": "client_credentials",
                "resource": "https://api.bench.example",
                "scope": "payments:write",
            },
        )
        self.record(
            workers,
            "peer_introspection",
            peer,
            "/token/introspection",
            {
                "BENCH_METHOD": "POST",
                "BENCH_BODY_FILE": str(work / "peer-introspect.form"),
                "BENCH_AUTHORIZATION": rs,
            },
            redis_pid=pid,
        )
        self.record(
            workers,
            "peer_jwt",
            peer,
            "/token",
            {
                "BENCH_METHOD": "POST",
                "BENCH_BODY_FILE": str(work / "peer-jwt.form"),
                "BENCH_AUTHORIZATION": client,
            },
            redis_pid=pid,
        )

    def measure_memory(self) -> None:
        if not self.args.tokens:
            return
        progress(f"Redis memory: {self.args.tokens:,} elevated tokens through the store")
        self.memory["elevated_token"] = asyncio.run(
            memory.elevations(self.stepup_redis.url, self.args.tokens, progress)
        )
        count = max(1, self.args.tokens // 5)
        progress(f"Redis memory: all of a token's keys, {count:,} tokens, one subject then many")
        self.memory["token_footprint"] = [
            asyncio.run(
                memory.footprint(
                    self.stepup_redis.url,
                    count,
                    progress,
                    remember=flow.MAX_TOKEN_LIFETIME,
                    one_subject=one,
                )
            )
            for one in (True, False)
        ]

    def close(self) -> None:
        self.stepup_redis.stop()
        self.peer_redis.stop()


def _peer_token(url: str, resource: str) -> str:
    answer = httpx.post(
        url + "/token",
        data={"grant_type": "client_credentials", "resource": resource, "scope": "payments:write"},
        auth=("bench-client", "bench-client-secret-0123456789abcdef"),
        timeout=10.0,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


# -- the report -----------------------------------------------------------------------------


def _median(results: list[Result], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in results))


def _median_known(results: list[Result], field: str) -> float | None:
    known = [getattr(r, field) for r in results if getattr(r, field) is not None]
    return float(statistics.median(known)) if known else None


def _table(measured: Runs) -> dict[str, dict[str, Any]]:
    """One row per target and process count: the medians of its runs, and the runs."""
    table: dict[str, dict[str, Any]] = {}
    for workers, targets in sorted(measured.items()):
        for name, results in targets.items():
            if not results:
                continue
            table[f"{name}@{workers}"] = {
                "workers": workers,
                "target": name,
                "runs": [r.as_dict() for r in results],
                "rps": _median(results, "rps"),
                "p50_ms": _median(results, "p50_ms"),
                "p99_ms": _median(results, "p99_ms"),
                "p999_ms": _median(results, "p999_ms"),
                "server_cpu": _median(results, "server_cpu"),
                "redis_cpu": _median(results, "redis_cpu"),
                "wrk_cpu": _median_known(results, "wrk_cpu"),
                "steal_cpu": _median_known(results, "steal_cpu"),
                "idle_cpu": _median_known(results, "idle_cpu"),
                "errors": sum(r.errors for r in results),
                "rss_mb_max": max((max(r.rss_mb) for r in results if r.rss_mb), default=None),
                # Requests per second of server CPU: on a shared machine a neighbour's load
                # takes CPU away from one run and not another; this figure moves far less.
                "rps_per_cpu": float(
                    statistics.median(
                        r.rps / (r.server_cpu / 100) for r in results if r.server_cpu > 0
                    )
                )
                if any(r.server_cpu > 0 for r in results)
                else None,
            }
    return table


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _cell(
    table: dict[str, dict[str, Any]], name: str, workers: int, field: str = "rps"
) -> float | None:
    row = table.get(f"{name}@{workers}")
    return row[field] if row else None


def _scaling(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """2 workers / 1 worker, for each target measured with both."""
    scaling = {
        name: _ratio(_cell(table, name, 2), _cell(table, name, 1))
        for name in [*STEPUP_TARGETS, "ceiling", *PEER_TARGETS]
    }
    return {name: value for name, value in scaling.items() if value is not None}


def summarize(bench: Bench) -> dict[str, Any]:
    table = _table(bench.results)

    def rps(name: str, workers: int) -> float | None:
        return _cell(table, name, workers)

    def per_cpu(name: str, workers: int) -> float | None:
        return _cell(table, name, workers, "rps_per_cpu")

    peers = {"introspection": "peer_introspection", "exchange": "peer_jwt", "intake": "peer_jwt"}
    ratios = []
    for workers in sorted(bench.results):
        for name in STEPUP_TARGETS:
            ratios.append(
                {
                    "target": name,
                    "workers": workers,
                    "stepup_rps": rps(name, workers),
                    "peer": peers.get(name),
                    "peer_rps": rps(peers[name], workers) if name in peers else None,
                    "stepup_vs_peer": _ratio(rps(name, workers), rps(peers[name], workers))
                    if name in peers
                    else None,
                    "ceiling_rps": rps("ceiling", workers),
                    "stepup_vs_ceiling": _ratio(rps(name, workers), rps("ceiling", workers)),
                    "per_cpu_vs_peer": _ratio(per_cpu(name, workers), per_cpu(peers[name], workers))
                    if name in peers
                    else None,
                    "per_cpu_vs_ceiling": _ratio(
                        per_cpu(name, workers), per_cpu("ceiling", workers)
                    ),
                }
            )
    scaling = _scaling(table)
    held = None
    if bench.held:
        held_table = _table(bench.held)
        held = {
            "share": bench.args.share,
            "table": held_table,
            "scaling_2_over_1": _scaling(held_table),
        }
    return {
        "table": table,
        "ratios": ratios,
        "scaling_2_over_1": scaling,
        "held": held,
        "targets": _targets(table, ratios, scaling, held, bench.memory, bench.audit_trail),
        "memory": bench.memory,
        "audit_trail": bench.audit_trail,
        "notes": bench.notes,
        "set_aside": [
            {"workers": workers, "target": name, **run.as_dict()}
            for workers, name, run in bench.set_aside
        ],
    }


def _targets(
    table: dict[str, dict[str, Any]],
    ratios: list[dict[str, Any]],
    scaling: dict[str, float | None],
    held: dict[str, Any] | None,
    mem: dict[str, Any],
    audit_trail: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(what: str, value: float | None, goal: float, higher: bool = True) -> None:
        met = None if value is None else (value >= goal if higher else value <= goal)
        checks.append({"target": what, "value": value, "goal": goal, "met": met})

    for row in ratios:
        w, name = row["workers"], row["target"]
        if name == "introspection":
            check(f"introspection / peer introspection ({w}w) >= 2.0", row["stepup_vs_peer"], 2.0)
            check(f"introspection / ceiling ({w}w) >= 0.40", row["stepup_vs_ceiling"], 0.40)
        elif name == "exchange":
            check(f"exchange / peer JWT issuance ({w}w) >= 1.2", row["stepup_vs_peer"], 1.2)
        elif name == "intake":
            check(f"intake / peer JWT issuance ({w}w) >= 1.0", row["stepup_vs_peer"], 1.0)
    for row in table.values():
        if row["target"] == "introspection":
            check(f"introspection p99 ms ({row['workers']}w) <= 20", row["p99_ms"], 20, False)
        if row["target"] == "exchange":
            check(f"exchange p99 ms ({row['workers']}w) <= 40", row["p99_ms"], 40, False)
    for name in STEPUP_TARGETS:
        check(f"{name}: 2 workers / 1 worker >= 1.6", scaling.get(name), 1.6)
    if held is not None:
        each = f"each process held to {held['share']:.0%} of a core"
        for name in STEPUP_TARGETS:
            value = held["scaling_2_over_1"].get(name)
            check(f"{name}: 2 workers / 1 worker, {each} >= 1.6", value, 1.6)
    tokens = mem.get("elevated_token", {})
    check(
        "Redis bytes per active elevated token <= 512",
        tokens.get("memory_usage_mean_bytes"),
        512,
        False,
    )
    for counted in audit_trail:
        missing = counted["recorded"] - counted["streamed"]
        check(f"audit events not streamed ({_configuration(counted)}) <= 0", missing, 0, False)
    return checks


def _configuration(counted: dict[str, Any]) -> str:
    return f"{counted['workers']}w" + (", held" if counted["held"] else "")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _table_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| target | workers | req/s | p50 ms | p99 ms | p99.9 ms | server CPU % | Redis CPU % | wrk CPU % | steal % | idle % | req per CPU-s | RSS MB/worker | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.values():
        lines.append(
            f"| {row['target']} | {row['workers']} | {_fmt(row['rps'], 0)} | {_fmt(row['p50_ms'])} | "
            f"{_fmt(row['p99_ms'])} | {_fmt(row['p999_ms'])} | {_fmt(row['server_cpu'], 0)} | "
            f"{_fmt(row['redis_cpu'], 0)} | {_fmt(row['wrk_cpu'], 0)} | "
            f"{_fmt(row['steal_cpu'], 0)} | {_fmt(row['idle_cpu'], 0)} | {_fmt(row['rps_per_cpu'], 0)} | "
            f"{_fmt(row['rss_mb_max'], 0)} | {row['errors']} |"
        )
    return lines


def _scaling_line(scaling: dict[str, float | None]) -> str:
    return "2 workers / 1 worker: " + ", ".join(f"{k} {v:.2f}" for k, v in scaling.items() if v)


def render(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = [
        f"machine: {summary['machine']['nproc']} cpu ({summary['machine']['cpu']}), "
        f"{summary['machine']['ram_gib']} GiB; wrk -t{load.THREADS} -c{load.CONNECTIONS}, "
        f"{settings['seconds']} s after {settings['warmup']} s warm-up, median of {settings['runs']}",
        "",
        *_table_lines(summary["table"]),
    ]
    lines += [
        "",
        "| stepup endpoint | workers | stepup req/s | peer | peer req/s | stepup / peer | ceiling req/s | stepup / ceiling | per CPU: / peer | per CPU: / ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["ratios"]:
        lines.append(
            f"| {row['target']} | {row['workers']} | {_fmt(row['stepup_rps'], 0)} | {row['peer'] or '—'} | "
            f"{_fmt(row['peer_rps'], 0)} | {_fmt(row['stepup_vs_peer'])} | {_fmt(row['ceiling_rps'], 0)} | "
            f"{_fmt(row['stepup_vs_ceiling'])} | {_fmt(row['per_cpu_vs_peer'])} | "
            f"{_fmt(row['per_cpu_vs_ceiling'])} |"
        )
    lines += ["", _scaling_line(summary["scaling_2_over_1"]), ""]
    held = summary.get("held")
    if held:
        lines += [
            f"Scaling pass: the ceiling and stepup again, each serving process held to "
            f"{held['share']:.0%} of a core (a CFS quota), so wrk and Redis have room of their own:",
            "",
            *_table_lines(held["table"]),
            "",
            _scaling_line(held["scaling_2_over_1"])
            + f" (each process held to {held['share']:.0%})",
            "",
        ]
    mem = summary["memory"]
    if "elevated_token" in mem:
        tok = mem["elevated_token"]
        lines.append(
            f"Redis per active elevated token: {tok['memory_usage_mean_bytes']} B (MEMORY USAGE, "
            f"mean of {tok['count']:,}); {tok['used_memory_delta_per_token_bytes']} B of used_memory "
            f"per token; record JSON {tok['record_json_bytes']} B"
        )
    for shape in mem.get("token_footprint", []):
        lines.append(
            f"Redis per active token, all its keys ({'one subject' if shape['one_subject'] else 'a subject each'}, "
            f"{shape['count']:,} tokens): {shape['used_memory_per_token_bytes']} B of used_memory "
            f"(spent-code marker {shape['spent_marker_bytes']} B, record with its index entries "
            f"{shape['record_and_index_bytes']} B)"
        )
    if mem.get("pending_request", {}).get("memory_usage_mean_bytes"):
        pend = mem["pending_request"]
        lines.append(
            f"Redis per pending request: {pend['memory_usage_mean_bytes']} B (MEMORY USAGE, mean "
            f"of {pend['sample']:,}); record JSON {pend['record_json_bytes']} B"
        )
    for counted in summary.get("audit_trail", []):
        lines.append(
            f"Audit stream ({_configuration(counted)}): {counted['streamed']:,} of the "
            f"{counted['recorded']:,} events recorded (JSON log lines) streamed"
        )
    lines += ["", "targets:"]
    for item in summary["targets"]:
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[item["met"]]
        lines.append(f"  {mark} {item['target']}: {_fmt(item['value'])}")
    aside = summary.get("set_aside", [])
    if aside:
        named = ", ".join(
            f"{run['target']}@{run['workers']} ({run['steal_cpu']:.0f} %)" for run in aside
        )
        lines.append(f"set aside for steal and measured again: {len(aside)} run(s): {named}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def rerender(saved: dict[str, Any]) -> str:
    """The report of a saved run, recomputed from its raw runs (e.g. after a new column)."""
    held = saved.get("held")
    bench = Bench(
        argparse.Namespace(seconds=0, warmup=0, share=held["share"] if held else 0), Path(".")
    )
    for row in saved["table"].values():
        bench.results[row["workers"]][row["target"]] = [Result(**run) for run in row["runs"]]
    for row in held["table"].values() if held else ():
        bench.held[row["workers"]][row["target"]] = [Result(**run) for run in row["runs"]]
    bench.memory = saved.get("memory", {})
    bench.notes = saved.get("notes", [])
    bench.audit_trail = saved.get("audit_trail", [])
    for run in saved.get("set_aside", []):
        fields = {k: v for k, v in run.items() if k not in ("workers", "target")}
        bench.set_aside.append((run["workers"], run["target"], Result(**fields)))
    summary = summarize(bench)
    summary["machine"] = saved["machine"]
    return render(summary, saved["settings"])


def choose_share(asked: float | None, problem: str | None) -> tuple[float, str | None]:
    """The scaling pass's share, and why it is left out when it is. Not asked for, it runs
    where processes can be held and is left out (with a note) where they cannot; asked for
    where they cannot, it is an error."""
    if asked is None:
        return (DEFAULT_SHARE, None) if problem is None else (0.0, problem)
    if asked and problem is not None:
        raise ValueError(
            f"the scaling pass cannot hold processes to a share: {problem} (--share 0)"
        )
    return asked, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short and small")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each run")
    parser.add_argument("--runs", type=int, default=2, help="runs per endpoint (median)")
    parser.add_argument("--workers", default="1,2", help="process counts, e.g. 1,2")
    parser.add_argument("--tokens", type=int, default=100_000, help="elevated tokens for memory")
    parser.add_argument("--pool-max", type=int, default=80_000, help="codes per pool at most")
    parser.add_argument("--pool-limit", type=float, default=60.0, help="seconds to make a pool")
    parser.add_argument(
        "--steal-limit",
        type=float,
        default=5.0,
        help="percent of a core the hypervisor may take during a run before it is repeated",
    )
    parser.add_argument(
        "--steal-retries", type=int, default=2, help="repeats of a run over the steal limit"
    )
    parser.add_argument(
        "--share",
        type=float,
        help="the scaling pass holds each serving process to this share of one core "
        "(needs root and cgroup v1's cpu controller; default 0.5 where they are there, "
        "else the pass is left out with a note); 0 leaves the pass out",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip oidc-provider")
    parser.add_argument("--only", help="stepup targets to run, e.g. introspection,jwks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--render", type=Path, help="print the report of a saved JSON again")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(rerender(json.loads(args.render.read_text())))
        return 0
    if args.quick:
        args.seconds, args.warmup, args.runs = 2.0, 1.0, 1
        args.tokens, args.pool_max = min(args.tokens, 2_000), min(args.pool_max, 20_000)
    load.wrk_binary()
    try:
        args.share, left_out = choose_share(args.share, share.problem())
    except ValueError as exc:
        parser.error(str(exc))
    if not args.no_peer:
        processes.node()
        progress("checking the npm peers in tests/peers/node_modules")
        processes.ensure_peer_install()
    workdir = Path(tempfile.mkdtemp(prefix="stepup-bench-"))
    bench = Bench(args, workdir)
    if left_out is not None:
        bench.notes.append(f"the scaling pass was left out: {left_out}")
        progress(f"the scaling pass will be left out: {left_out}")
    try:
        bench.prepare()
        counts = [int(w) for w in args.workers.split(",")]
        for workers in counts:
            bench.configuration(workers)
        if args.share:
            with share.CpuShare(args.share) as held:
                for workers in counts:
                    bench.configuration(workers, held)
        bench.measure_memory()
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(bench)
    summary["machine"] = machine()
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    settings["out"] = str(args.out)
    summary["settings"] = settings
    text = render(summary, settings)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    progress(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
