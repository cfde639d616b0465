"""Several stepup processes on one Redis: a flow that starts on one instance finishes on the
other, an admin's revoke-all on one is seen by the other, and the audit events of both form
one chain that verifies."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from stepup.clock import FrozenClock
from tests.support.cli import stepup_cli
from tests.support.ops import admin, cli_policy, events, wait_until
from tests.support.stepup import (
    ISSUER_UPSTREAM,
    Stepup,
    Upstream,
    hidden,
    make_config,
    manual_key,
    pkce,
    running_stepup,
)


@pytest.fixture
def pair(
    redis_url: str, upstream: Upstream, clock: FrozenClock, tmp_path: Path
) -> Iterator[tuple[Stepup, Stepup]]:
    """Two instances of one deployment: one policy, one Redis, the same key files."""
    config = make_config(upstream, tmp_path / "data")
    with (
        running_stepup(config, redis_url, clock, upstream) as first,
        running_stepup(config, redis_url, clock, upstream) as second,
    ):
        yield first, second


def test_a_flow_hops_between_two_instances(
    pair: tuple[Stepup, Stepup], redis_url: str, tmp_path: Path
) -> None:
    a, b = pair
    verifier, challenge = pkce()
    pushed = a.par(a.upstream.token("pat"), code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    with b.browser() as browser:
        page = b.open_authorization(browser, pushed.json()["request_uri"])
        assert page.status_code == 200, page.text
        secret = manual_key(page.text)
        b.clock.advance(30)
        # The browser's next request lands on the other instance (no sticky sessions).
        answer = browser.post(
            a.url + page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": b.totp_code(secret),
            },
        )
    assert answer.status_code == 303, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    issued = b.token(code, verifier, subject_token=b.upstream.token("pat"))
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert a.introspect(token).json()["active"] is True
    assert b.introspect(token).json()["active"] is True
    ended = admin(a, "POST", "/admin/elevations/revoke", issuer=ISSUER_UPSTREAM, sub="pat")
    assert ended.json() == {"revoked": 1}
    assert b.introspect(token).json() == {"active": False}
    # Both instances wrote into one chain (each appends with a compare-and-set on its head).
    wait_until(
        lambda: sum(e["event"] == "token.introspected" for e in events(redis_url)) == 3,
        what="every event streamed",
    )
    done = stepup_cli("audit", "verify", "--config", str(cli_policy(a, redis_url, tmp_path / "o")))
    assert done.returncode == 0, done.stderr


def test_racing_writers_keep_one_chain(
    pair: tuple[Stepup, Stepup], redis_url: str, tmp_path: Path
) -> None:
    a, b = pair

    def burst(stepup: Stepup) -> None:
        for _ in range(40):
            stepup.introspect("not-a-token")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(burst, [a, b, a, b]))
    wait_until(lambda: len(events(redis_url)) == 160, what="160 events streamed")
    done = stepup_cli("audit", "verify", "--config", str(cli_policy(a, redis_url, tmp_path / "o")))
    assert done.returncode == 0, done.stderr
    assert "160 entries" in done.stdout
