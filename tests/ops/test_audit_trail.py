"""The audit trail: every decision in a hash-chained Redis Stream, verified by `stepup audit
verify`; edits and deletions are named; retention trims and the rest still verifies; events
wait in memory through a Redis outage."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from stepup.clock import FrozenClock
from stepup.config import parse
from stepup.storage import keys
from tests.support.cli import cli_env, stepup_cli
from tests.support.ops import cli_policy, entries, events, streamed, wait_until
from tests.support.redis_proc import RedisProcess
from tests.support.stepup import (
    CLIENT_ID,
    RS_ID,
    RS_SECRET,
    Stepup,
    Upstream,
    policy_document,
    running_stepup,
)

LOOP_EVENTS = {
    "challenge.accepted",
    "enrolment.added",
    "factor.verify",
    "stepup.approved",
    "token.issued",
    "token.introspected",
    "token.revoked",
}


def run_loop(stepup: Stepup, sub: str = "alice") -> str:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub=sub)
    issued = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    assert stepup.introspect(token).json()["active"] is True
    assert stepup.revoke(token).status_code == 200
    return token


def verify(policy: Path) -> tuple[int, str, str]:
    done = stepup_cli("audit", "verify", "--config", str(policy))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_a_loop_leaves_every_decision_in_a_chain_that_verifies(
    stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    token = run_loop(stepup)
    streamed(redis_url, "token.revoked")
    seen = events(redis_url)
    assert {e["event"] for e in seen} >= LOOP_EVENTS
    for entry in seen:
        assert {"time", "event", "outcome", "request_id"} <= set(entry)
    issued = next(e for e in seen if e["event"] == "token.issued")
    assert issued["client"] == CLIENT_ID and issued["jti"] and issued["subject"]
    raw = json.dumps(entries(redis_url))
    assert token not in raw and token.rsplit(".", 1)[1] not in raw
    code, out, err = verify(cli_policy(stepup, redis_url, tmp_path / "ops.toml"))
    assert code == 0, err
    assert re.match(rf"audit chain intact: {len(seen)} entries", out), out


def test_the_request_id_is_echoed_and_carried_by_its_events(stepup: Stepup, redis_url: str) -> None:
    answer = stepup.http.post(
        "/introspect",
        data={"token": "not-a-token"},
        auth=(RS_ID, RS_SECRET),
        headers={"X-Request-ID": "trace-4f1c.a"},
    )
    assert answer.headers["x-request-id"] == "trace-4f1c.a"
    assert streamed(redis_url, "token.introspected", request_id="trace-4f1c.a")
    generated = stepup.http.post("/introspect", data={"token": "x"}, auth=(RS_ID, RS_SECRET))
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert streamed(redis_url, "token.introspected", request_id=generated.headers["x-request-id"])
    # Something that could forge log lines is replaced, not echoed.
    odd = stepup.http.get("/healthz", headers={"X-Request-ID": 'a "quoted" id'})
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])


def test_refusals_are_audited_too(stepup: Stepup, redis_url: str) -> None:
    refused = stepup.par(auth=(CLIENT_ID, "wrong-secret-0123456789abcdef"))
    assert refused.status_code == 401
    found = streamed(redis_url, "challenge.refused")
    assert found[0]["outcome"] == "refused" and found[0]["reason"] == "invalid_client"


@pytest.fixture
def tampering(stepup: Stepup, redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """A stream of one loop, every event written, and a policy to verify it with."""
    run_loop(stepup)
    streamed(redis_url, "token.revoked")
    yield cli_policy(stepup, redis_url, tmp_path / "ops.toml")


def test_an_edited_entry_is_named(tampering: Path, redis_url: str) -> None:
    found = entries(redis_url)
    victim_id, fields = found[2]
    body = json.loads(fields["body"])
    body["outcome"] = "success" if body["outcome"] != "success" else "failure"
    last_ms = int(found[-1][0].split("-")[0])
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        # Streams cannot be edited in place: a changed copy goes in, the original goes out.
        copy_id = client.xadd(
            keys.audit_stream(), {**fields, "body": json.dumps(body)}, id=f"{last_ms + 1}-0"
        )
        client.xdel(keys.audit_stream(), victim_id)
    code, _, err = verify(tampering)
    assert code == 4, err
    assert f"{copy_id}: altered" in err
    assert f"{found[3][0]}: chain broken: an entry between {found[1][0]} and this one" in err


def test_a_deleted_entry_is_named(tampering: Path, redis_url: str) -> None:
    found = entries(redis_url)
    with redis.Redis.from_url(redis_url) as client:
        client.xdel(keys.audit_stream(), found[4][0])
    code, _, err = verify(tampering)
    assert code == 4, err
    assert f"{found[5][0]}: chain broken: an entry between {found[3][0]} and" in err
    assert "altered" not in err
    assert err.strip().endswith(f"1 problem(s) in {len(found) - 1} entries")


def test_deleting_the_newest_entry_is_detected(tampering: Path, redis_url: str) -> None:
    found = entries(redis_url)
    with redis.Redis.from_url(redis_url) as client:
        client.xdel(keys.audit_stream(), found[-1][0])
    code, _, err = verify(tampering)
    assert code == 4, err
    assert f"head: the newest entries after {found[-2][0]} are missing" in err


def test_an_entry_forged_without_the_key_is_named(tampering: Path, redis_url: str) -> None:
    found = entries(redis_url)
    last_id, last = found[-1]
    body = json.dumps({"time": 1, "event": "admin.factor_removed", "outcome": "success"})
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        # Someone with Redis write access links a new entry properly, but has no HMAC key.
        forged = client.xadd(
            keys.audit_stream(),
            {"body": body, "prev": last["mac"], "mac": "0" * 64, "kid": last["kid"]},
            id=f"{int(last_id.split('-')[0]) + 1}-0",
        )
        client.set(keys.audit_head(), "0" * 64)
    code, _, err = verify(tampering)
    assert code == 4, err
    assert f"{forged}: altered" in err
    assert "chain broken" not in err


def test_retention_trims_the_stream_and_what_is_left_still_verifies(
    redis_url: str, upstream: Upstream, clock: FrozenClock, tmp_path: Path
) -> None:
    document = policy_document(upstream, tmp_path / "data")
    document["audit"] = {"retention_days": 1}
    config = parse(document, base_dir=tmp_path)
    with running_stepup(config, redis_url, clock, upstream) as stepup:
        run_loop(stepup)
        streamed(redis_url, "token.revoked")
        clock.advance(86_400 + 3_600)
        run_loop(stepup, sub="bob")

        def anchored() -> bool:
            with redis.Redis.from_url(redis_url) as client:
                return bool(client.exists(keys.audit_anchor()))

        wait_until(anchored, what="the trim")
        policy = cli_policy(stepup, redis_url, tmp_path / "ops.toml", retention_days=1)
        wait_until(
            lambda: any(
                e["event"] == "token.revoked" and e["time"] > clock.now() - 3_000
                for e in events(redis_url)
            ),
            what="the second loop's events",
        )
    left = entries(redis_url)
    assert all(json.loads(f["body"])["time"] >= clock.now() - 86_400 - 60 for _, f in left)
    code, out, err = verify(policy)
    assert code == 0, err
    assert "after the trim anchor" in out
    # Cutting more of the beginning and moving the anchor along is told from retention.
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        cut_id, cut = left[3]
        client.set(keys.audit_anchor(), f"{cut_id} {cut['mac']}")
        client.xtrim(keys.audit_stream(), minid=left[4][0])
    code, _, err = verify(policy)
    assert code == 4, err
    assert f"anchor: the stream starts after {cut_id}, within the retention of 1 days" in err


def test_events_wait_in_memory_while_redis_is_down(
    redis_proc: RedisProcess, upstream: Upstream, clock: FrozenClock, tmp_path: Path
) -> None:
    document = policy_document(upstream, tmp_path / "data")
    config = parse(document, base_dir=tmp_path)
    with running_stepup(config, redis_proc.url, clock, upstream) as stepup:
        assert stepup.par().status_code == 201
        streamed(redis_proc.url, "challenge.accepted")
        redis_proc.stop()
        # A refusal needs no Redis: it is answered, and its event waits for Redis to return.
        refused = stepup.http.post(
            "/introspect",
            data={"token": "x"},
            auth=(RS_ID, "wrong-rs-secret-0123456789"),
            headers={"X-Request-ID": "during-outage"},
        )
        assert refused.status_code == 401
        assert stepup.http.get("/readyz").status_code == 503
        unavailable = stepup.par()
        assert unavailable.status_code == 503
        assert unavailable.json()["error"] == "temporarily_unavailable"
        redis_proc.start()
        streamed(redis_proc.url, "introspection.refused", request_id="during-outage")
        policy = cli_policy(stepup, redis_proc.url, tmp_path / "ops.toml")
    code, _, err = verify(policy)
    assert code == 0, err


def test_tail_prints_the_newest_entries(stepup: Stepup, redis_url: str, tmp_path: Path) -> None:
    for _ in range(3):
        assert httpx.post(
            stepup.url + "/introspect", data={"token": "x"}, auth=(RS_ID, RS_SECRET)
        ).is_success
    wait_until(lambda: len(entries(redis_url)) == 3)
    policy = cli_policy(stepup, redis_url, tmp_path / "ops.toml")
    done = stepup_cli("audit", "tail", "-n", "2", "--config", str(policy))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    ids = [entry_id for entry_id, _ in entries(redis_url)]
    for line, entry_id in zip(lines, ids[1:], strict=True):
        stream_id, _, body = line.partition(" ")
        assert stream_id == entry_id
        assert json.loads(body)["event"] == "token.introspected"


def test_tail_follow_prints_new_entries_as_they_come(
    stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    policy = cli_policy(stepup, redis_url, tmp_path / "ops.toml")
    command = [sys.executable, "-m", "stepup.cli", "audit", "tail", "-f", "--config", str(policy)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True
    ) as follower:
        try:
            time.sleep(1.5)  # past startup and one empty read
            stepup.http.post(
                "/introspect",
                data={"token": "x"},
                auth=(RS_ID, RS_SECRET),
                headers={"X-Request-ID": "followed"},
            )
            assert follower.stdout is not None
            ready, _, _ = select.select([follower.stdout], [], [], 10)
            assert ready, "tail -f printed nothing"
            line = follower.stdout.readline()
            assert json.loads(line.partition(" ")[2])["request_id"] == "followed"
        finally:
            # SIGTERM, not SIGINT: a background job may start with SIGINT ignored.
            follower.terminate()
            try:
                follower.wait(10)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait(10)
