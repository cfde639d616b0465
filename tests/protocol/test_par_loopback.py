"""RFC 8252 §7.3: a loopback IP redirect URI registered without a port admits any port at
intake; nothing else about it is loosened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepup.storage.embedded import EmbeddedRedis
from tests.support.oauth import assert_oauth_error
from tests.support.own_issuer import stepup_at_own_url
from tests.support.stepup import Stepup, Upstream, frozen_now

LOOPBACK = "http://127.0.0.1/callback"


def register_loopback(document: dict[str, Any]) -> None:
    document["clients"][0]["redirect_uris"].extend([LOOPBACK, "http://[::1]/cb"])


@pytest.fixture(scope="module")
def live_stepup(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[Stepup]:
    directory = tmp_path_factory.mktemp("loopback")
    clock = frozen_now()
    with stepup_at_own_url(
        directory, redis_server.url, clock, Upstream(directory, clock), edit=register_loopback
    ) as running:
        yield running


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:1/callback", "http://127.0.0.1:50123/callback", "http://[::1]:8080/cb"],
)
def test_any_port_of_a_registered_loopback_ip_is_accepted(
    live_stepup: Stepup, redis_url: str, redirect_uri: str
) -> None:
    assert live_stepup.par(redirect_uri=redirect_uri).status_code == 201


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:0/callback",
        "http://127.0.0.1:65536/callback",
        "http://127.0.0.1:050123/callback",
        "http://127.0.0.1:5000/callback/",
        "http://127.0.0.1:5000/callback?x=1",
        "http://127.0.0.1:5000/callback\n",
        "http://127.0.0.1:5000/Callback",
        "http://127.0.0.1:/callback",
        "https://127.0.0.1:5000/callback",
        "http://localhost:5000/callback",
        "http://127.0.0.2:5000/callback",
        "http://[::1]:5000/callback",
        "http://127.0.0.1:5000@evil.example/callback",
    ],
)
def test_near_misses_of_a_loopback_registration_are_refused(
    live_stepup: Stepup, redis_url: str, redirect_uri: str
) -> None:
    assert_oauth_error(live_stepup.par(redirect_uri=redirect_uri), 400, "invalid_request")
