"""CPU per request of the hot endpoints, in process: no HTTP server, no wrk, no sockets to
stepup — the ASGI app is called directly, many times, and `time.process_time()` says what
it cost (stepup's own code, Starlette, redis-py's client side, the audit writer; not Redis
itself, nor uvicorn's HTTP parsing, which is the same for every endpoint).

    .venv/bin/python -m benchmarks.cpu                      # introspection, exchange, intake
    .venv/bin/python -m benchmarks.cpu --only exchange --requests 4000 --rounds 5
    .venv/bin/py-spy record --native -o cpu.svg -- .venv/bin/python -m benchmarks.cpu

Far steadier than req/s on a shared machine, though CPU time still moves ±20 % with the
neighbours' load. For changes smaller than that, count instructions instead (user space only,
not the kernel's share; the same count run after run to 0.2 %): under callgrind with counting
off at the start, `--callgrind` turns it on for the measured requests only,

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.out \
        .venv/bin/python -m benchmarks.cpu --callgrind --only intake --rounds 1 --requests 1000

and the Ir total callgrind prints at the end, divided by the requests measured, is the
instructions per request.

`--redis` adds Redis's side of each measured round: its CPU (`INFO cpu`) and the commands it
ran (`INFO commandstats`) per request, read before and after the round once the audit writer
has nothing pending, so a round's audit appends count in that round. A script's time includes
the commands it calls, which are listed too.

The setup is the benchmark's (flow.py): a private Redis, the same policy and key files, one
real TOTP proof on the verification page, then codes through the real `/par` + `/authorize`
(the proof is reused within max_age). Every answer's status is checked; a wrong one stops
the run. Each round sends its requests from `--concurrency` tasks at once, as wrk's open
connections would, so the audit writer batches as it does under load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import redis
import uvloop
from starlette.applications import Starlette

from benchmarks import flow, processes
from stepup import config as config_module
from stepup import logs
from stepup.app import create_app
from stepup.audit import Audit

TARGETS = ["introspection", "exchange", "intake"]
PORT = 8765  # only in the issuer URL: nothing listens


class Caller:
    """Calls the ASGI app as uvicorn would (one http scope per request) and checks the
    status; nothing in here is stepup's cost, and it is the same before and after a change."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, path: str, body: bytes, authorization: str, expect: int) -> bytes:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", PORT),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"host", f"localhost:{PORT}".encode()),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", authorization.encode()),
            ],
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # a client that stays: never a disconnect
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        answer = b"".join(chunks)
        if status != expect:
            raise RuntimeError(f"{path}: expected {expect}, got {status}: {answer[:300]!r}")
        return answer


def _form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


async def _first_proof(browser: httpx.AsyncClient, subject_token: str) -> None:
    """As flow.first_proof, in process: enrol TOTP on the verification page and prove it."""
    _, challenge = flow.pkce()
    pushed = await browser.post(
        "/par",
        data=flow.par_body(
            subject_token,
            flow.POOL_CHALLENGE,
            state="first",
            code_challenge=challenge,
            code_challenge_method="S256",
        ),
        headers={"Authorization": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET)},
    )
    pushed.raise_for_status()
    started = await browser.get(
        "/authorize",
        params={"client_id": flow.CLIENT_ID, "request_uri": pushed.json()["request_uri"]},
    )
    page = await browser.get(started.headers["location"])
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page.text)
    if not match:
        raise RuntimeError("the verification page offers no TOTP enrolment")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = await browser.post(
        page.url.path,
        data={
            "csrf": csrf.group(1),
            "action": "verify",
            "code": pyotp.TOTP(match.group(1).replace(" ", "")).now(),
        },
    )
    if answer.status_code != 303:
        raise RuntimeError(f"the first proof failed: {answer.status_code}")


async def _codes(browser: httpx.AsyncClient, subject_token: str, count: int) -> list[flow.Code]:
    """Codes through the real flow: /par, then /authorize answers with a code at once."""
    auth = {"Authorization": flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET)}

    async def one() -> flow.Code:
        verifier, challenge = flow.pkce()
        body = flow.par_body(
            subject_token,
            flow.POOL_CHALLENGE,
            code_challenge=challenge,
            code_challenge_method="S256",
        )
        pushed = await browser.post("/par", data=body, headers=auth)
        pushed.raise_for_status()
        answer = await browser.get(
            "/authorize",
            params={"client_id": flow.CLIENT_ID, "request_uri": pushed.json()["request_uri"]},
        )
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        return flow.Code(query["code"][0], verifier)

    found: list[flow.Code] = []
    for start in range(0, count, 64):
        found += await asyncio.gather(*(one() for _ in range(min(64, count - start))))
    return found


class RedisCost:
    """Redis's CPU and commands between two snapshots (`--redis`). The client is a plain
    synchronous one, used only between the measured rounds."""

    Snapshot = tuple[float, dict[str, tuple[int, int]]]

    def __init__(self, url: str, audit: Audit) -> None:
        self.client = redis.Redis.from_url(url)
        self.audit = audit

    async def snapshot(self) -> Snapshot:
        # What the audit writer still holds is part of the requests just made.
        for _ in range(2500):  # 5 s at most
            if not self.audit.pending:
                break
            await asyncio.sleep(0.002)
        cpu: Any = self.client.info("cpu")
        stats: Any = self.client.info("commandstats")
        commands = {
            name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for name, value in stats.items()
        }
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), commands

    @staticmethod
    def per_request(before: Snapshot, after: Snapshot, requests: int) -> tuple[float, list[str]]:
        """µs of Redis CPU per request, and "COMMAND calls (µs)" per request, busiest first."""
        rows: list[tuple[float, str]] = []
        for name, (calls, usec) in after[1].items():
            then_calls, then_usec = before[1].get(name, (0, 0))
            calls, usec = calls - then_calls, usec - then_usec
            if calls and name != "info":  # the snapshots' own
                row = f"{name.upper()} {calls / requests:.2f} ({usec / requests:.1f} µs)"
                rows.append((usec, row))
        rows.sort(reverse=True)
        return (after[0] - before[0]) / requests * 1e6, [row for _, row in rows]


def _count_instructions(on: bool) -> None:
    """Callgrind's counting on or off for this process (`--callgrind`)."""
    switch = "--instr=on" if on else "--instr=off"
    subprocess.run(["callgrind_control", switch, str(os.getpid())], check=True, capture_output=True)


async def _timed(
    make: Callable[[int], Awaitable[object]], count: int, concurrency: int, *, count_in: bool
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `count` calls of make(i) from `concurrency` tasks;
    `count_in`: counted by callgrind too."""
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await make(index)

    if count_in:
        _count_instructions(True)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if count_in:
        _count_instructions(False)
    return cpu, wall


async def _measure(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    redis = processes.private_redis(work / "redis")
    try:
        upstream = flow.Upstream(work)
        key_files = flow.write_keys(work)
        policy = work / "policy.toml"
        flow.write_policy(flow.policy_document(upstream, work / "data", PORT), policy)
        environ = {
            "STEPUP_SIGNING_KEY_FILE": str(key_files["signing"]),
            "STEPUP_FACTOR_KEY_FILE": str(key_files["factor"]),
            "STEPUP_AUDIT_KEY_FILE": str(key_files["audit"]),
        }
        app = create_app(config_module.load(policy, environ), redis_url=redis.url)
        async with app.router.lifespan_context(app):
            cost = RedisCost(redis.url, app.state.services.audit) if args.redis else None
            try:
                return await _rounds(app, args, upstream, cost)
            finally:
                if cost:
                    cost.client.close()
    finally:
        redis.stop()


async def _rounds(
    app: Starlette, args: argparse.Namespace, upstream: flow.Upstream, cost: RedisCost | None
) -> dict[str, list[float]]:
    subject_token = upstream.token()
    client_auth = flow.basic(flow.CLIENT_ID, flow.CLIENT_SECRET)
    rs_auth = flow.basic(flow.RS_ID, flow.RS_SECRET)
    only = args.only.split(",") if args.only else TARGETS
    per_round = args.requests + args.warmup
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://localhost:{PORT}"
    ) as browser:
        await _first_proof(browser, subject_token)
        # One code for the token introspection reads; one per exchange request.
        count = 1 + (per_round * args.rounds if "exchange" in only else 0)
        codes = await _codes(browser, subject_token, count)
    call = Caller(app)
    first = codes.pop()
    issued = await call("/token", _form(flow.exchange_body(subject_token, first)), client_auth, 200)
    elevated = str(httpx.Response(200, content=issued).json()["access_token"])
    intake_form = flow.par_body(
        subject_token,
        flow.CHALLENGE,
        state="bench-state",
        code_challenge=flow.pkce()[1],
        code_challenge_method="S256",
    )

    def request(name: str) -> Callable[[int], Awaitable[object]]:
        if name == "introspection":
            introspection = _form({"token": elevated})
            return lambda _: call("/introspect", introspection, rs_auth, 200)
        if name == "intake":
            intake = _form(intake_form)
            return lambda _: call("/par", intake, client_auth, 201)
        # Encoded before the clock starts: the driver's own work stays out of the figures.
        bodies = [_form(flow.exchange_body(subject_token, code)) for code in codes]
        pool = iter(bodies)  # every request redeems its own code, never one twice
        return lambda _: call("/token", next(pool), client_auth, 200)

    makers = {name: request(name) for name in only}
    results: dict[str, list[float]] = {name: [] for name in only}
    for round_ in range(args.rounds):
        for name, make in makers.items():
            await _timed(make, args.warmup, args.concurrency, count_in=False)
            before = await cost.snapshot() if cost else None
            cpu, wall = await _timed(make, args.requests, args.concurrency, count_in=args.callgrind)
            results[name].append(cpu / args.requests * 1e6)
            print(
                f"round {round_ + 1} {name:14} {cpu / args.requests * 1e6:7.0f} µs CPU/request"
                f"  ({args.requests / wall:,.0f} req/s wall, 1 process)",
                flush=True,
            )
            if cost and before:
                redis_cpu, commands = cost.per_request(before, await cost.snapshot(), args.requests)
                print(f"  Redis {redis_cpu:.1f} µs CPU/request: {', '.join(commands)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="measured per round")
    parser.add_argument("--warmup", type=int, default=200, help="discarded per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="under valgrind --tool=callgrind --instr-atstart=no: count the measured requests only",
    )
    parser.add_argument(
        "--redis", action="store_true", help="Redis's CPU and commands per request, each round"
    )
    args = parser.parse_args(argv)
    # As `stepup serve`: JSON lines (the audit line included), here into a file.
    logs.configure()
    with tempfile.TemporaryDirectory(prefix="stepup-cpu-") as tmp:
        work = Path(tmp)
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        with (work / "stepup.log").open("w") as log:
            handler.setStream(log)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(_measure(args, work))
    print("median of rounds, µs of CPU per request:")
    for name, values in results.items():
        print(f"  {name:14} {statistics.median(values):7.0f}  (min {min(values):.0f})")
    if args.callgrind:
        counted = args.requests * args.rounds * len(results)
        print(f"instructions per request: callgrind's Ir total / {counted} requests counted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
