"""What a copy of Redis (or of the policy) gives away: no TOTP secret in the clear, sealed
secrets bound to their subject and factor, client secrets only as hashes, live handles only
as digests; and factor-key rotation that keeps old factors working and fails closed when
their key is gone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from cryptography.exceptions import InvalidTag

from stepup.clock import FrozenClock
from stepup.config import Client, ConfigError, ResourceServer, parse
from stepup.sealing import Sealer, SealingError, new_key_line
from stepup.storage import keys
from tests.support.redis_replies import as_bytes
from tests.support.stepup import (
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    OTHER_RS_SECRET,
    OTHER_SECRET,
    RS_SECRET,
    ScopeAndMaxAge,
    Stepup,
    Upstream,
    got_code,
    hidden,
    manual_key,
    pkce,
    policy_document,
    running_stepup,
    step_up_with,
)

NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


# -- helpers --------------------------------------------------------------------------------


def subject(sub: str) -> str:
    return keys.subject_id(ISSUER_UPSTREAM, sub)


def factor_records(store: redis.Redis, sub: str) -> dict[str, dict[str, Any]]:
    raw = store.hgetall(keys.factors(subject(sub)))
    return {as_bytes(field).decode(): json.loads(value) for field, value in raw.items()}


def only_factor(store: redis.Redis, sub: str) -> tuple[str, dict[str, Any]]:
    records = factor_records(store, sub)
    assert len(records) == 1, records
    return next(iter(records.items()))


def redis_dump(store: redis.Redis) -> bytes:
    """Every key and every value in Redis, of every type, as one blob."""
    parts: list[bytes] = []
    for key in store.scan_iter(count=1000):
        parts.append(key)
        kind = store.type(key)
        if kind == b"string":
            parts.append(as_bytes(store.get(key) or b""))
        elif kind == b"hash":
            for field, value in store.hgetall(key).items():
                parts += [as_bytes(field), as_bytes(value)]
        elif kind == b"list":
            parts += map(as_bytes, store.lrange(key, 0, -1))
        elif kind == b"set":
            parts += map(as_bytes, store.smembers(key))
        elif kind == b"zset":
            parts += map(as_bytes, store.zrange(key, 0, -1))
        elif kind == b"stream":  # the audit trail: searched for secrets like the rest
            entries = store.xrange(key)
            assert entries is not None, key
            for _, fields in entries:
                assert fields is not None, key
                for field, value in fields.items():
                    parts += [as_bytes(field), as_bytes(value)]
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")
    return b"\n".join(parts)


def secret_forms(secret: str) -> list[bytes]:
    """The ways a base32 TOTP secret could be written down: as is, lower case, grouped as on
    the page, and its raw bytes in hex and base64."""
    raw = base64.b32decode(secret)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return [
        secret.encode(),
        secret.lower().encode(),
        grouped.encode(),
        raw.hex().encode(),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
    ]


def enrol(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub, **NO_REUSE)
    return secret


def assert_refused_page(answer: httpx.Response) -> None:
    """A failed proof: an HTML page in the 4xx range, no code, never a 500."""
    assert answer.status_code < 500, f"server error {answer.status_code}"
    assert 400 <= answer.status_code < 500, f"{answer.status_code}: {answer.text}"
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")


def sealer_of(stepup: Stepup) -> Sealer:
    """The factor keys the embedded default created for this stepup."""
    return Sealer.load(stepup.config.deployment.data_dir / "factor-keys.txt")


# -- TOTP secrets in Redis ------------------------------------------------------------------


def test_factor_record_does_not_contain_the_totp_secret(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol(stepup, "alice")
    field, record = only_factor(store, "alice")
    raw = store.hget(keys.factors(subject("alice")), field)
    assert raw is not None
    for form in secret_forms(secret):
        assert form not in raw, form
    assert record["data"]["secret"] != secret


def test_totp_secret_is_nowhere_in_redis(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol(stepup, "alice")
    # A pending enrolment (shown, not confirmed) is at rest too.
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token("bob"), **NO_REUSE)
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        pending = page.text
    dump = redis_dump(store)
    for form in secret_forms(secret):
        assert form not in dump, form
    for form in secret_forms(manual_key(pending)):
        assert form not in dump, form


def test_sealed_secret_opens_only_with_its_own_subject_and_factor(
    stepup: Stepup, store: redis.Redis
) -> None:
    secret = enrol(stepup, "alice")
    factor_id, record = only_factor(store, "alice")
    sealed = record["data"]["secret"]
    sealer = sealer_of(stepup)
    assert sealer.open(sealed, f"{subject('alice')}:{factor_id}") == secret
    for context in (
        f"{subject('bob')}:{factor_id}",
        f"{subject('alice')}:totp-000000000000",
        f"{subject('alice')}",
        "",
    ):
        with pytest.raises((InvalidTag, SealingError, ValueError)):
            sealer.open(sealed, context)


def test_sealed_secret_copied_onto_another_subject_does_not_step_it_up(
    stepup: Stepup, store: redis.Redis
) -> None:
    alice_secret = enrol(stepup, "alice")
    enrol(stepup, "bob")
    _, alice_record = only_factor(store, "alice")
    bob_id, bob_record = only_factor(store, "bob")
    # An attacker with write access to Redis puts Alice's sealed secret on Bob's factor.
    bob_record["data"]["secret"] = alice_record["data"]["secret"]
    store.hset(keys.factors(subject("bob")), bob_id, json.dumps(bob_record))
    stepup.clock.advance(90)
    answer = step_up_with(stepup, "bob", alice_secret)
    assert_refused_page(answer)
    assert not got_code(answer)


def test_factor_record_copied_whole_onto_another_subject_does_not_step_it_up(
    stepup: Stepup, store: redis.Redis
) -> None:
    alice_secret = enrol(stepup, "alice")
    enrol(stepup, "bob")
    alice_id, alice_record = only_factor(store, "alice")
    bob_factors = keys.factors(subject("bob"))
    store.delete(bob_factors)
    store.hset(bob_factors, alice_id, json.dumps(alice_record))
    stepup.clock.advance(90)
    answer = step_up_with(stepup, "bob", alice_secret)
    assert_refused_page(answer)
    assert not got_code(answer)


# -- client secrets and live handles -------------------------------------------------------


def test_client_secrets_appear_in_the_policy_only_as_sha256_hashes(stepup: Stepup) -> None:
    identities: list[Client | ResourceServer] = [
        *stepup.config.clients.values(),
        *stepup.config.resource_servers.values(),
    ]
    assert identities
    for identity in identities:
        assert identity.secret_hash.startswith("sha256:"), identity
    text = repr(stepup.config)
    for secret in (CLIENT_SECRET, OTHER_SECRET, RS_SECRET, OTHER_RS_SECRET):
        assert secret not in text


@pytest.mark.parametrize("field", ["secret_hash", "client_secret", "secret"])
def test_a_plain_client_secret_in_the_policy_is_refused(
    upstream: Upstream, tmp_path: Path, field: str
) -> None:
    document = policy_document(upstream, tmp_path / "data")
    client = document["clients"][0]
    del client["secret_hash"]
    client[field] = CLIENT_SECRET
    with pytest.raises(ConfigError):
        parse(document, base_dir=tmp_path / "data")


def test_redis_holds_no_secret_token_or_live_handle_after_a_whole_loop(
    stepup: Stepup, store: redis.Redis
) -> None:
    verifier, challenge = pkce()
    subject_token = stepup.upstream.token()
    pushed = stepup.par(subject_token, code_challenge=challenge, **NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    with stepup.browser() as browser:
        started = browser.get(
            "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
        )
        assert started.status_code == 303, started.text
        page = browser.get(started.headers["location"])
        secret = manual_key(page.text)
        stepup.clock.advance(30)
        answer = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": stepup.totp_code(secret),
            },
        )
    assert got_code(answer)
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    issued = stepup.token(code, verifier, subject_token=subject_token)
    assert issued.status_code == 200, issued.text
    elevated = issued.json()["access_token"]
    dump = redis_dump(store)
    for name, value in {
        "client secret": CLIENT_SECRET,
        "resource-server secret": RS_SECRET,
        "subject token": subject_token,
        "subject token signature": subject_token.rsplit(".", 1)[1],
        "elevated token": elevated,
        "elevated token signature": elevated.rsplit(".", 1)[1],
        "request_uri": request_uri.rsplit(":", 1)[1],
        "interaction id": started.headers["location"].rsplit("/", 1)[1],
        "code": code,
        "code verifier": verifier,
    }.items():
        assert value.encode() not in dump, name


# -- factor-key rotation ----------------------------------------------------------------------


class KeyedStepup:
    """A stepup whose factor keys come from a key file of the test's own, restartable on the
    same Redis (the factor key file is read when the app is built)."""

    def __init__(
        self, tmp_path: Path, redis_url: str, clock: FrozenClock, upstream: Upstream
    ) -> None:
        self.key_file = tmp_path / "factor-keys.txt"
        document = policy_document(upstream, tmp_path / "data")
        document["server"]["factor_key_file"] = str(self.key_file)
        self.config = parse(document, base_dir=tmp_path / "data")
        self.redis_url = redis_url
        self.clock = clock
        self.upstream = upstream

    def keys(self, *lines: str) -> None:
        self.key_file.write_text("\n".join(lines) + "\n")
        self.key_file.chmod(0o600)

    def run(self) -> Any:
        return running_stepup(self.config, self.redis_url, self.clock, self.upstream)


def key_id(line: str) -> str:
    return line.split(":", 1)[0]


@pytest.fixture
def keyed(tmp_path: Path, redis_url: str, clock: FrozenClock, upstream: Upstream) -> KeyedStepup:
    return KeyedStepup(tmp_path, redis_url, clock, upstream)


def test_factor_is_sealed_with_the_first_key_of_the_key_file(
    keyed: KeyedStepup, store: redis.Redis
) -> None:
    first, second = new_key_line(), new_key_line()
    keyed.keys(first, second)
    with keyed.run() as stepup:
        enrol(stepup, "alice")
    _, record = only_factor(store, "alice")
    assert record["data"]["secret"].startswith(key_id(first) + ":")


def test_after_rotation_an_old_factor_still_steps_up(
    keyed: KeyedStepup, store: redis.Redis
) -> None:
    old = new_key_line()
    keyed.keys(old)
    with keyed.run() as stepup:
        secret = enrol(stepup, "alice")
    keyed.keys(new_key_line(), old)
    keyed.clock.advance(90)
    with keyed.run() as stepup:
        assert got_code(step_up_with(stepup, "alice", secret))


def test_after_rotation_a_new_factor_is_sealed_with_the_new_key(
    keyed: KeyedStepup, store: redis.Redis
) -> None:
    old, new = new_key_line(), new_key_line()
    keyed.keys(old)
    with keyed.run() as stepup:
        enrol(stepup, "alice")
    keyed.keys(new, old)
    with keyed.run() as stepup:
        bob_secret = enrol(stepup, "bob")
        keyed.clock.advance(90)
        assert got_code(step_up_with(stepup, "bob", bob_secret))
    _, bob = only_factor(store, "bob")
    _, alice = only_factor(store, "alice")
    assert bob["data"]["secret"].startswith(key_id(new) + ":")
    assert alice["data"]["secret"].startswith(key_id(old) + ":")


def test_after_rotation_a_used_factor_is_resealed_with_the_new_key(
    keyed: KeyedStepup, store: redis.Redis
) -> None:
    # stepup/sealing.py: "old secrets still open; they are resealed with the new key the next
    # time they are written" — a step-up writes the factor (last_used_at), so an old key can
    # be retired once every factor has been used since the rotation.
    old, new = new_key_line(), new_key_line()
    keyed.keys(old)
    with keyed.run() as stepup:
        secret = enrol(stepup, "alice")
    keyed.keys(new, old)
    keyed.clock.advance(90)
    with keyed.run() as stepup:
        assert got_code(step_up_with(stepup, "alice", secret))
    _, record = only_factor(store, "alice")
    assert record["last_used_at"] is not None, "the step-up did not write the factor"
    assert record["data"]["secret"].startswith(key_id(new) + ":")


def test_with_its_key_removed_an_old_factor_fails_closed_without_a_500(
    keyed: KeyedStepup, store: redis.Redis
) -> None:
    old = new_key_line()
    keyed.keys(old)
    with keyed.run() as stepup:
        secret = enrol(stepup, "alice")
    before = factor_records(store, "alice")
    keyed.keys(new_key_line())
    keyed.clock.advance(90)
    with keyed.run() as stepup:
        answer = step_up_with(stepup, "alice", secret)
    assert_refused_page(answer)
    assert not got_code(answer)
    assert factor_records(store, "alice") == before
