"""Client authentication (RFC 6749 §2.3.1) and the headers it remembers: a remembered header
finds what a full check would, a wrong secret is never admitted, failures are checked in full
every time, the memory is per config object and bounded. (That each app owns its memory:
tests/web/test_remembered_headers.py.)"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable

import pytest

from stepup.config import Client, Config, ResourceServer, hash_secret
from stepup.errors import InvalidClient, InvalidRequest
from stepup.protocol import client_auth
from stepup.protocol.client_auth import RememberedHeaders
from tests.support.full_checks import record_full_checks

CLIENT_SECRET = "client-secret-5f0c1e9a7d3b4c2a"
RS_SECRET = "rs-secret-8c2d4e6f0a1b3c5d"


def config(client_secret: str = CLIENT_SECRET) -> Config:
    client = Client("bank", "Bank", hash_secret(client_secret), (), (), ())
    server = ResourceServer("payments-rs", "Payments", hash_secret(RS_SECRET), ())
    return Config(
        issuer="https://stepup.example",
        upstreams=(),
        clients={"bank": client},
        resource_servers={"payments-rs": server},
        levels={},
        aliases={},
        scopes={},
    )


def basic(identity: str, secret: str, *, spaces: int = 1) -> str:
    encoded = base64.b64encode(f"{identity}:{secret}".encode()).decode()
    return "Basic" + " " * spaces + encoded


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The secrets compared in full (decoded and hashed), in order."""
    return record_full_checks(monkeypatch)


Authenticate = Callable[..., Client | ResourceServer]


@pytest.fixture
def memo() -> RememberedHeaders:
    return RememberedHeaders()


@pytest.fixture
def authenticate(memo: RememberedHeaders) -> Authenticate:
    """client_auth.authenticate with the test's own memory, as an app passes its own."""
    return functools.partial(client_auth.authenticate, remembered=memo)


def test_a_remembered_header_finds_the_same_identity(
    full_checks: list[str], authenticate: Authenticate
) -> None:
    policy = config()
    header = basic("payments-rs", RS_SECRET)
    first = authenticate(policy, header, {}, admit="resource_server")
    again = authenticate(policy, header, {"token": "t"}, admit="resource_server")
    assert first is again is policy.resource_servers["payments-rs"]
    assert full_checks == [RS_SECRET]  # the second call was a remembered one


def test_a_wrong_secret_is_refused_after_the_right_one_was_remembered(
    full_checks: list[str],
    authenticate: Authenticate,
) -> None:
    policy = config()
    authenticate(policy, basic("bank", CLIENT_SECRET), {}, admit="client")
    wrong = [CLIENT_SECRET + "x", CLIENT_SECRET[:-1], CLIENT_SECRET.upper(), ""]
    for secret in wrong:
        with pytest.raises(InvalidClient):
            authenticate(policy, basic("bank", secret), {}, admit="client")
    assert full_checks == [CLIENT_SECRET, *wrong]


def test_a_failure_is_checked_in_full_every_time(
    full_checks: list[str], authenticate: Authenticate
) -> None:
    policy = config()
    for _ in range(3):
        with pytest.raises(InvalidClient):
            authenticate(policy, basic("bank", "guess"), {}, admit="client")
        with pytest.raises(InvalidClient):
            authenticate(policy, basic("nobody", "guess"), {}, admit="client")
    # The unknown id compared against a stand-in hash each time, as the known one did.
    assert full_checks == ["guess"] * 6


def test_a_header_whose_body_check_failed_is_not_remembered(
    full_checks: list[str], authenticate: Authenticate
) -> None:
    policy = config()
    header = basic("bank", CLIENT_SECRET)
    with pytest.raises(InvalidClient, match="client authentication failed"):
        authenticate(policy, header, {"client_id": "other"}, admit="client")
    authenticate(policy, header, {}, admit="client")
    assert full_checks == [CLIENT_SECRET, CLIENT_SECRET]


def test_the_checks_on_the_body_still_apply_to_a_remembered_header(
    full_checks: list[str],
    authenticate: Authenticate,
) -> None:
    policy = config()
    header = basic("bank", CLIENT_SECRET)
    authenticate(policy, header, {}, admit="client")
    with pytest.raises(InvalidClient):
        authenticate(policy, header, {"client_id": "payments-rs"}, admit="client")
    with pytest.raises(InvalidRequest, match="one client authentication method"):
        authenticate(policy, header, {"client_secret": CLIENT_SECRET}, admit="client")
    assert authenticate(policy, header, {"client_id": "bank"}, admit="client").name == "Bank"


def test_a_remembered_header_is_admitted_only_where_its_identity_is(
    full_checks: list[str],
    authenticate: Authenticate,
) -> None:
    policy = config()
    header = basic("payments-rs", RS_SECRET)
    authenticate(policy, header, {}, admit="resource_server")
    with pytest.raises(InvalidClient):
        authenticate(policy, header, {}, admit="client")
    assert authenticate(policy, header, {}, admit="any") is policy.resource_servers["payments-rs"]


def test_a_new_config_object_checks_in_full_again(
    full_checks: list[str], authenticate: Authenticate
) -> None:
    header = basic("bank", CLIENT_SECRET)
    authenticate(config(), header, {}, admit="client")
    rotated = config(client_secret="a-new-secret-0b9e7d")
    with pytest.raises(InvalidClient):
        authenticate(rotated, header, {}, admit="client")
    assert full_checks == [CLIENT_SECRET, CLIENT_SECRET]


def test_the_memory_is_bounded(
    full_checks: list[str], authenticate: Authenticate, memo: RememberedHeaders
) -> None:
    # One client can spell its valid header in endless ways: each takes a place, none grows
    # the memory past its bound, and the oldest are checked in full again.
    policy = config()
    count = client_auth.REMEMBERED_HEADERS + 10
    spellings = [basic("bank", CLIENT_SECRET, spaces=1 + n) for n in range(count)]
    for header in spellings:
        authenticate(policy, header, {}, admit="client")
    assert len(memo._found) == client_auth.REMEMBERED_HEADERS
    full_checks.clear()
    authenticate(policy, spellings[-1], {}, admit="client")
    assert full_checks == []
    authenticate(policy, spellings[0], {}, admit="client")
    assert full_checks == [CLIENT_SECRET]


def test_a_percent_encoded_spelling_is_the_same_client(
    full_checks: list[str], authenticate: Authenticate
) -> None:
    # RFC 6749 §2.3.1: the id and secret are form-urlencoded inside the Basic value.
    policy = config()
    secret = "".join(f"%{byte:02X}" for byte in CLIENT_SECRET.encode())
    found = authenticate(policy, basic("ban%6B", secret), {}, admit="client")
    assert isinstance(found, Client) and found.client_id == "bank"
    with pytest.raises(InvalidClient):
        authenticate(policy, basic("ban%6B", secret.replace("%35", "%36")), {}, admit="client")
    assert full_checks == [CLIENT_SECRET, CLIENT_SECRET.replace("5", "6", 1)]
