"""Signing-key rotation: a new key is published before it signs; tokens signed before the
rotation still validate (introspection and JWKS); new tokens use the new key; an old key
leaves JWKS only when every token it signed has expired."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from stepup.keys import KeyFile, rotate
from stepup.signing import write_new_key_file
from tests.support.cli import stepup_cli
from tests.support.ops import cli_policy, wait_until
from tests.support.stepup import Stepup


def elevated(stepup: Stepup, sub: str, secret: str | None = None) -> tuple[str, str]:
    """A token of `sub` (enrolling TOTP the first time); returns (token, TOTP secret)."""
    with stepup.browser() as browser:
        query, verifier, secret = stepup.step_up(browser, secret, sub=sub, max_age="0")
    issued = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"], secret


def header_kid(token: str) -> str:
    head = token.split(".")[0]
    padded = head + "=" * (-len(head) % 4)
    return str(json.loads(base64.urlsafe_b64decode(padded))["kid"])


def verifies_with_jwks(stepup: Stepup, token: str) -> bool:
    keys = KeySet.import_key_set(httpx.get(stepup.url + "/jwks").json())
    claims = jwt.decode(token, keys, algorithms=["ES256"]).claims
    return bool(claims["iss"] == stepup.config.issuer)


def published(stepup: Stepup) -> list[str]:
    return [k["kid"] for k in httpx.get(stepup.url + "/jwks").json()["keys"]]


def test_a_rotation_publishes_first_then_signs_and_old_tokens_stay_valid(
    stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    before, secret = elevated(stepup, "olga")
    (old_kid,) = published(stepup)
    assert header_kid(before) == old_kid
    policy = cli_policy(stepup, redis_url, tmp_path / "ops.toml")
    done = stepup_cli("keys", "rotate", "--publish-delay", "120", "--config", str(policy))
    assert done.returncode == 0, done.stderr
    key_file = stepup.config.deployment.data_dir / "signing-keys.json"
    rotated = KeyFile.read(key_file)
    new_kid = next(k["kid"] for k in rotated.keys if k["kid"] != old_kid)
    assert f"added {new_kid}" in done.stdout
    # Published at once, signing only from its activation time.
    wait_until(lambda: published(stepup) == [old_kid, new_kid], what="the new key in JWKS")
    # The step-up moves the clock 30 s on (a fresh TOTP step): still before activation.
    stepup.clock.set(rotated.activation(new_kid) - 40)
    meanwhile, _ = elevated(stepup, "olga", secret)
    assert header_kid(meanwhile) == old_kid
    stepup.clock.set(rotated.activation(new_kid) + 1)
    wait_until(lambda: published(stepup)[0] == new_kid, what="the new key signing")
    after, _ = elevated(stepup, "olga", secret)
    assert header_kid(after) == new_kid
    for token in (before, meanwhile, after):
        assert stepup.introspect(token).json()["active"] is True
        assert verifies_with_jwks(stepup, token)
    listed = stepup_cli("keys", "list", "--config", str(policy))
    assert listed.returncode == 0, listed.stderr
    states = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()}
    # The command reads the real clock, which the test's clock ran ahead of.
    assert states == {old_kid: "signing", new_kid: "next"}


def test_an_old_key_is_retired_only_after_its_last_token_expired(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys.json"
    write_new_key_file(path)
    (first,) = [k["kid"] for k in KeyFile.read(path).keys]
    t0 = 2_000_000_000
    added = rotate(path, t0, publish_delay=600, max_token_lifetime=900)
    assert added.added and added.activates_at == t0 + 600 and added.retired == []
    assert KeyFile.read(path).signer(t0 + 599) == first
    assert KeyFile.read(path).signer(t0 + 600) == added.added
    # A second rotation while a key waits adds nothing.
    waiting = rotate(path, t0 + 10, publish_delay=600, max_token_lifetime=900)
    assert waiting.added is None and waiting.pending == added.added
    # The first key signed until t0+600: its tokens live until t0+1500 (+ clock skew).
    early = tmp_path / "early.json"
    shutil.copy(path, early)
    kept = rotate(early, t0 + 600 + 900, publish_delay=600, max_token_lifetime=900)
    assert kept.retired == [] and first in [k["kid"] for k in KeyFile.read(early).keys]
    late = rotate(path, t0 + 600 + 900 + 61, publish_delay=600, max_token_lifetime=900)
    assert late.retired == [first]
    assert first not in [k["kid"] for k in KeyFile.read(path).keys]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
