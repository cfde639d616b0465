"""stepup rotates its signing key (a new key first in its JWK Set file, then a restart on the
same address): a resource holding the old JWKS meets an unknown `kid`, fetches the JWKS again
and accepts the new token; tokens signed with the old key still pass while it is published."""

from __future__ import annotations

import base64
import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from stepup.signing import new_key
from tests.resource.conftest import Peers, bearer, protected
from tests.support.own_issuer import elevated_token, jwks_server, reuse_port, stepup_at_own_url
from tests.support.server import bound_socket
from tests.support.stepup import Upstream, frozen_now

pytestmark = pytest.mark.anyio


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    return kid


async def test_unknown_kid_after_rotation_refetches_the_jwks(
    tmp_path: Path, redis_url: str
) -> None:
    clock = frozen_now()
    upstream = Upstream(tmp_path, clock)
    keys_file = tmp_path / "data" / "signing-keys.json"
    sock = bound_socket()
    port = sock.getsockname()[1]
    with jwks_server(upstream.jwks_file) as jwks, ExitStack() as first_run:
        before = first_run.enter_context(
            stepup_at_own_url(tmp_path, redis_url, clock, upstream, sock=sock)
        )
        async with protected(Peers(before, jwks)) as (api, http, _):
            old_token = elevated_token(before)
            old_first = await api.post("/pay", headers=bearer(old_token))
            first_run.close()  # stepup stops; the operator puts a new key first

            old_keys = json.loads(keys_file.read_text())["keys"]
            rotated = [new_key().as_dict(private=True), *old_keys]
            keys_file.write_text(json.dumps({"keys": rotated}))
            with stepup_at_own_url(
                tmp_path, redis_url, clock, upstream, sock=reuse_port(port)
            ) as after:
                new_token = elevated_token(after, "bob")
                new = await api.post("/pay", headers=bearer(new_token))
                old_again = await api.post("/pay", headers=bearer(old_token))
    assert kid_of(new_token) != kid_of(old_token)
    assert (old_first.status_code, new.status_code, old_again.status_code) == (200, 200, 200)
    assert http.sent == ["/.well-known/oauth-authorization-server", "/jwks", "/jwks"]


async def test_unknown_kids_do_not_make_the_resource_hammer_stepup(peers: Peers) -> None:
    forged_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": "nope"}).encode()
    ).rstrip(b"=")
    token = elevated_token(peers.stepup)
    _, payload, signature = token.split(".")
    forged = f"{forged_header.decode()}.{payload}.{signature}"
    async with protected(peers) as (api, http, _):
        assert (await api.post("/pay", headers=bearer(token))).status_code == 200
        for _ in range(20):
            assert (await api.post("/pay", headers=bearer(forged))).status_code == 401
        peers.stepup.clock.advance(30)
        assert (await api.post("/pay", headers=bearer(forged))).status_code == 401
    # One refetch per 30 s at most, whatever kids an attacker invents.
    assert http.sent.count("/jwks") == 2
