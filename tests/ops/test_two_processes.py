"""Two real `stepup serve` processes on one redis-server, as compose runs them: a flow moves
between them, both log JSON lines with the request id, both stop cleanly on SIGTERM with
their audit events flushed into one chain that verifies."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp

from stepup.audit import AuditKeys
from stepup.clock import FrozenClock
from stepup.sealing import Sealer
from stepup.signing import write_new_key_file
from tests.support.cli import serving, stepup_cli, stop
from tests.support.ops import events
from tests.support.stepup import (
    Stepup,
    Upstream,
    hidden,
    make_config,
    manual_key,
    pkce,
    policy_document,
    toml_document,
)


def test_two_serve_processes_share_one_redis(
    redis_url: str, upstream: Upstream, clock: FrozenClock, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_new_key_file(keys / "signing.json")
    Sealer.load_or_create(keys / "factor.txt")
    AuditKeys.load_or_create(keys / "audit.txt")
    document = policy_document(upstream, tmp_path / "data")
    document["server"].update(
        redis_url=redis_url,
        signing_key_file=str(keys / "signing.json"),
        factor_key_file=str(keys / "factor.txt"),
    )
    document["audit"] = {"key_file": str(keys / "audit.txt")}
    policy = tmp_path / "stepup.toml"
    policy.write_text(toml_document(document))
    config = make_config(upstream, tmp_path / "data")

    with ExitStack() as stack:
        a = stack.enter_context(serving(policy, tmp_path / "a.log"))
        b = stack.enter_context(serving(policy, tmp_path / "b.log"))
        on_a, on_b = Stepup(a.url, config, clock, upstream), Stepup(b.url, config, clock, upstream)
        stack.callback(on_a.close)
        stack.callback(on_b.close)
        verifier, challenge = pkce()
        pushed = on_a.par(upstream.token("quinn"), code_challenge=challenge)
        assert pushed.status_code == 201, pushed.text
        with httpx.Client(base_url=b.url, timeout=10) as browser:
            page = on_b.open_authorization(browser, pushed.json()["request_uri"])
            assert page.status_code == 200, page.text
            answer = browser.post(
                a.url + page.url.path,  # the next request reaches the other process
                data={
                    "csrf": hidden(page.text, "csrf"),
                    "action": "verify",
                    "code": pyotp.TOTP(manual_key(page.text)).now(),  # serve runs on real time
                },
                headers={"X-Request-ID": "hop-2"},
            )
        assert answer.status_code == 303, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        issued = on_b.token(code, verifier, subject_token=upstream.token("quinn"))
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert on_a.introspect(token).json()["active"] is True
        assert on_b.revoke(token).status_code == 200
        assert on_a.introspect(token).json() == {"active": False}
        assert stop(a) == 0, a.output()
        assert stop(b) == 0, b.output()

    # Flushed at shutdown: every event of the flow is in the stream, in one chain.
    names = [e["event"] for e in events(redis_url)]
    assert {"challenge.accepted", "enrolment.added", "token.issued", "token.revoked"} <= set(names)
    done = stepup_cli("audit", "verify", "--config", str(policy))
    assert done.returncode == 0, done.stderr
    # Logs are JSON lines; the audit ones carry the request id the browser sent.
    lines = [json.loads(line) for line in a.output().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "enrolment.added" and e["request_id"] == "hop-2" for e in lines)
    assert any(e.get("logger") == "uvicorn.error" for e in lines)
    assert "Traceback" not in a.output() + b.output()
