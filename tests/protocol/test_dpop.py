"""DPoP (RFC 9449) at stepup's intake and token endpoints, over real HTTP and Redis."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

import httpx
import pytest

from stepup.config import parse
from stepup.sealing import new_key_line
from stepup.storage.embedded import EmbeddedRedis
from tests.support.dpop import DPoPKey, jose_proof
from tests.support.node_peers import node_with_peers
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.own_issuer import claims_of
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    EXCHANGE,
    ParFields,
    Stepup,
    Upstream,
    frozen_now,
    policy_document,
    running_stepup,
)

TOKEN_URL = "http://localhost:8000/token"  # the token_endpoint the metadata advertises
PAR_URL = "http://localhost:8000/par"
RACERS = 50

live_stepup, stepup = module_server("dpop")


def elevate(
    stepup: Stepup,
    subject_token: str | None = None,
    headers: dict[str, str] | None = None,
    **par_fields: Unpack[ParFields],
) -> tuple[str, str]:
    """A real step-up (intake, page, TOTP): the code and its PKCE verifier."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(
            browser, subject_token=subject_token, headers=headers, **par_fields
        )
    assert "code" in query, query
    return query["code"][0], verifier


def proof_header(
    key: DPoPKey, stepup: Stepup, url: str = TOKEN_URL, **options: Any
) -> dict[str, str]:
    return {"DPoP": key.proof("POST", url, iat=stepup.clock.now(), **options)}


def exchange(
    stepup: Stepup, code: str, verifier: str, key: DPoPKey | None, subject_token: str | None = None
) -> httpx.Response:
    headers = proof_header(key, stepup) if key is not None else None
    return stepup.token(code, verifier, subject_token, headers=headers)


# -- binding the elevated token -------------------------------------------------------------


def test_a_proof_binds_the_elevated_token_to_its_key(stepup: Stepup) -> None:
    key = DPoPKey()
    code, verifier = elevate(stepup)
    response = exchange(stepup, code, verifier, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    introspected = stepup.introspect(body["access_token"]).json()
    assert introspected["active"] is True
    assert introspected["token_type"] == "DPoP"
    assert introspected["cnf"] == {"jkt": key.jkt}


def test_without_a_proof_the_token_stays_bearer_without_cnf(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    body = exchange(stepup, code, verifier, None).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])
    assert "cnf" not in stepup.introspect(body["access_token"]).json()


@pytest.mark.parametrize("alg", ["Ed25519", "PS256"])
def test_other_allowed_algorithms_bind_too(stepup: Stepup, alg: str) -> None:
    key = DPoPKey(alg)
    code, verifier = elevate(stepup)
    response = exchange(stepup, code, verifier, key)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_bound_subject_token_needs_a_proof_from_its_key(stepup: Stepup) -> None:
    key, thief = DPoPKey(), DPoPKey()
    bound = stepup.upstream.token(cnf={"jkt": key.jkt})
    code, verifier = elevate(
        stepup, subject_token=bound, headers=proof_header(key, stepup, PAR_URL)
    )
    assert_oauth_error(exchange(stepup, code, verifier, None, bound), 400, "invalid_dpop_proof")
    assert_oauth_error(exchange(stepup, code, verifier, thief, bound), 400, "invalid_dpop_proof")
    # Refused before the code was spent: the holder of the key still gets its token.
    response = exchange(stepup, code, verifier, key, bound)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_request_bound_at_intake_by_dpop_jkt_is_redeemed_only_with_that_key(
    stepup: Stepup,
) -> None:
    key = DPoPKey()
    code, verifier = elevate(stepup, dpop_jkt=key.jkt)
    # An unbound subject token, no proof: the intake's binding still holds.
    assert_oauth_error(exchange(stepup, code, verifier, None), 400, "invalid_dpop_proof")


def test_a_request_bound_at_intake_refuses_another_key(stepup: Stepup) -> None:
    key, thief = DPoPKey(), DPoPKey()
    code, verifier = elevate(stepup, dpop_jkt=key.jkt)
    assert_oauth_error(exchange(stepup, code, verifier, thief), 400, "invalid_dpop_proof")


def test_a_request_bound_at_intake_is_redeemed_with_its_key(stepup: Stepup) -> None:
    key = DPoPKey()
    code, verifier = elevate(stepup, dpop_jkt=key.jkt)
    response = exchange(stepup, code, verifier, key)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"


def test_a_proof_at_intake_binds_the_request_to_its_key(stepup: Stepup) -> None:
    key, other = DPoPKey(), DPoPKey()
    code, verifier = elevate(stepup, headers=proof_header(key, stepup, PAR_URL))
    assert_oauth_error(exchange(stepup, code, verifier, other), 400, "invalid_dpop_proof")


def test_intake_refuses_a_dpop_jkt_that_is_not_the_proofs_key(stepup: Stepup) -> None:
    key, other = DPoPKey(), DPoPKey()
    response = stepup.par(dpop_jkt=other.jkt, headers=proof_header(key, stepup, PAR_URL))
    assert_oauth_error(response, 400, "invalid_dpop_proof")


def test_intake_accepts_a_dpop_jkt_that_is_the_proofs_key(stepup: Stepup) -> None:
    key = DPoPKey()
    response = stepup.par(dpop_jkt=key.jkt, headers=proof_header(key, stepup, PAR_URL))
    assert response.status_code == 201, response.text


def test_intake_refuses_a_dpop_jkt_other_than_the_subject_tokens_key(stepup: Stepup) -> None:
    key, other = DPoPKey(), DPoPKey()
    bound = stepup.upstream.token(cnf={"jkt": key.jkt})
    assert_oauth_error(stepup.par(bound, dpop_jkt=other.jkt), 400, "invalid_request")


def test_intake_refuses_a_proof_by_another_key_than_the_subject_tokens(stepup: Stepup) -> None:
    key, other = DPoPKey(), DPoPKey()
    bound = stepup.upstream.token(cnf={"jkt": key.jkt})
    response = stepup.par(bound, headers=proof_header(other, stepup, PAR_URL))
    assert_oauth_error(response, 400, "invalid_dpop_proof")


def test_a_bound_subject_token_is_refused_at_intake_without_a_proof_by_its_key(
    stepup: Stepup,
) -> None:
    key = DPoPKey()
    bound = stepup.upstream.token(cnf={"jkt": key.jkt})
    # Copied without the key (with the client's credentials too): nothing is pushed.
    assert_oauth_error(stepup.par(bound), 400, "invalid_dpop_proof")
    response = stepup.par(bound, headers=proof_header(key, stepup, PAR_URL))
    assert response.status_code == 201, response.text


def test_a_bound_subject_token_opens_the_factor_page_only_with_a_proof_by_its_key(
    stepup: Stepup,
) -> None:
    key, thief = DPoPKey(), DPoPKey()
    bound = stepup.upstream.token(cnf={"jkt": key.jkt})
    body = {"subject_token": bound, "subject_token_type": ACCESS_TOKEN_TYPE}
    auth = (CLIENT_ID, CLIENT_SECRET)
    enroll_url = "http://localhost:8000/enroll"

    def enroll(headers: dict[str, str] | None) -> httpx.Response:
        return stepup.http.post("/enroll", data=body, auth=auth, headers=headers)

    assert_oauth_error(enroll(None), 400, "invalid_dpop_proof")
    assert_oauth_error(enroll(proof_header(thief, stepup, enroll_url)), 400, "invalid_dpop_proof")
    assert_oauth_error(enroll(proof_header(key, stepup, PAR_URL)), 400, "invalid_dpop_proof")
    created = enroll(proof_header(key, stepup, enroll_url))
    assert created.status_code == 201, created.text
    assert created.json()["enrollment_uri"].startswith("http://localhost:8000/enroll/")


def test_intake_refuses_a_proof_for_the_token_endpoint(stepup: Stepup) -> None:
    response = stepup.par(headers=proof_header(DPoPKey(), stepup, TOKEN_URL))
    assert_oauth_error(response, 400, "invalid_dpop_proof")


def test_metadata_advertises_the_proof_algorithms(stepup: Stepup) -> None:
    document = stepup.http.get("/.well-known/oauth-authorization-server").json()
    assert document["dpop_signing_alg_values_supported"] == list(stepup.config.dpop.algorithms)
    assert "none" not in document["dpop_signing_alg_values_supported"]
    assert not any(a.startswith("HS") for a in document["dpop_signing_alg_values_supported"])


# -- RFC 9449 §4.3, one check each -----------------------------------------------------------

OTHER_KEY = DPoPKey()


def _private_jwk(key: DPoPKey) -> dict[str, Any]:
    return dict(key.key.as_dict(private=True))


def _unsigned_hs256(key: DPoPKey, now: float) -> str:
    return key.proof("POST", TOKEN_URL, iat=now, header={"alg": "HS256"})


# name -> (DPoP header values for a key at `now`)
BAD_PROOFS: dict[str, Callable[[DPoPKey, float], list[str]]] = {
    "1: two DPoP headers": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now),
        k.proof("POST", TOKEN_URL, iat=now),
    ],
    "2: not a JWT": lambda k, now: ["not-a-jwt"],
    "2: four parts": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now) + ".x"],
    "3: no jti": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, drop=("jti",))],
    "3: jti too long": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, claims={"jti": "j" * 129})
    ],
    "3: no htm": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, drop=("htm",))],
    "3: no htu": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, drop=("htu",))],
    "3: no iat": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, drop=("iat",))],
    "4: typ JWT": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, header={"typ": "JWT"})],
    "4: no typ": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, header={"typ": None})],
    "5: alg none": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, header={"alg": "none"})],
    "5: alg HS256": lambda k, now: [_unsigned_hs256(k, now)],
    "6: signed by another key": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, signer=OTHER_KEY.key)
    ],
    # JWS crit (RFC 7515 §4.1.11) must be a list of names; any other shape once broke the
    # JOSE library's header check with a TypeError (a 500).
    "6: crit a number": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, header={"crit": 5}, raw=True)
    ],
    "6: crit a string": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, header={"crit": "exp"}, raw=True)
    ],
    "6: crit lists a number": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, header={"crit": [5]}, raw=True)
    ],
    "6: crit names an unknown header": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, header={"crit": ["x"], "x": 1}, raw=True)
    ],
    "7: private key in jwk": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, header={"jwk": _private_jwk(k)})
    ],
    "7: no jwk": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now, header={"jwk": None})],
    "8: htm GET": lambda k, now: [k.proof("GET", TOKEN_URL, iat=now)],
    "8: htm post": lambda k, now: [k.proof("post", TOKEN_URL, iat=now)],
    "9: htu another path": lambda k, now: [k.proof("POST", PAR_URL, iat=now)],
    "9: htu another host": lambda k, now: [k.proof("POST", "http://evil.example/token", iat=now)],
    "9: htu https": lambda k, now: [k.proof("POST", "https://localhost:8000/token", iat=now)],
    "11: iat too old": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now - 61)],
    "11: iat in the future": lambda k, now: [k.proof("POST", TOKEN_URL, iat=now + 6)],
    "11: iat a string": lambda k, now: [
        k.proof("POST", TOKEN_URL, iat=now, claims={"iat": str(int(now))})
    ],
}


def raw_token_request(
    stepup: Stepup, proofs: list[str], code: str = "no-such-code"
) -> httpx.Response:
    form = {
        "grant_type": EXCHANGE,
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": code,
        "code_verifier": "v" * 43,
    }
    headers = [("DPoP", p) for p in proofs]
    return stepup.http.post("/token", data=form, headers=headers, auth=(CLIENT_ID, CLIENT_SECRET))


@pytest.mark.parametrize("case", sorted(BAD_PROOFS))
def test_a_proof_failing_one_check_is_invalid_dpop_proof(stepup: Stepup, case: str) -> None:
    # The code does not exist: a proof that passed would end in invalid_grant instead.
    proofs = BAD_PROOFS[case](DPoPKey(), stepup.clock.now())
    assert_oauth_error(raw_token_request(stepup, proofs), 400, "invalid_dpop_proof")


def test_a_good_proof_gets_past_the_proof_checks(stepup: Stepup) -> None:
    # The control for the cases above: the same request with a good proof fails on the code.
    proof = DPoPKey().proof("POST", TOKEN_URL, iat=stepup.clock.now())
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, "invalid_grant")


@pytest.mark.parametrize(
    "htu",
    [
        "http://localhost:8000/token?x=1",
        "http://localhost:8000/token#frag",
        "HTTP://LOCALHOST:8000/token",
        "http://localhost:8000/%74oken",
        "http://localhost:8000/a/../token",
    ],
)
def test_htu_is_compared_without_query_and_fragment_and_normalized(
    stepup: Stepup, htu: str
) -> None:
    proof = DPoPKey().proof("POST", htu, iat=stepup.clock.now())
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-59, True), (-60, True), (-61, False), (0, True), (5, True), (6, False)],
)
def test_iat_edges_on_the_injected_clock(stepup: Stepup, offset: int, accepted: bool) -> None:
    # iat_window = 60 s into the past, iat_skew = 5 s into the future (the defaults).
    proof = DPoPKey().proof("POST", TOKEN_URL, iat=stepup.clock.now() + offset)
    expected = "invalid_grant" if accepted else "invalid_dpop_proof"
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, expected)


# -- replay ----------------------------------------------------------------------------------


def test_a_proof_is_good_once(stepup: Stepup) -> None:
    key = DPoPKey()
    proof = key.proof("POST", TOKEN_URL, iat=stepup.clock.now())
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, "invalid_grant")
    stepup.clock.advance(30)  # still within its window
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, "invalid_dpop_proof")


def test_a_replayed_proof_cannot_redeem_the_code_it_did_not_redeem(stepup: Stepup) -> None:
    key = DPoPKey()
    code, verifier = elevate(stepup)
    proof = key.proof("POST", TOKEN_URL, iat=stepup.clock.now())
    assert_oauth_error(raw_token_request(stepup, [proof]), 400, "invalid_grant")
    response = stepup.token(code, verifier, headers={"DPoP": proof})
    assert_oauth_error(response, 400, "invalid_dpop_proof")


async def _race(stepup: Stepup, code: str, verifier: str, proof: str) -> list[httpx.Response]:
    form = {
        "grant_type": EXCHANGE,
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": code,
        "code_verifier": verifier,
    }
    limits = httpx.Limits(max_connections=RACERS, max_keepalive_connections=RACERS)
    async with httpx.AsyncClient(base_url=stepup.url, limits=limits, timeout=30.0) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/token", data=form, headers={"DPoP": proof}, auth=(CLIENT_ID, CLIENT_SECRET)
                )
                for _ in range(RACERS)
            )
        )


def test_fifty_parallel_requests_with_one_proof_succeed_once(stepup: Stepup) -> None:
    key = DPoPKey()
    code, verifier = elevate(stepup)
    proof = key.proof("POST", TOKEN_URL, iat=stepup.clock.now())
    responses = asyncio.run(_race(stepup, code, verifier, proof))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 400: RACERS - 1}, statuses
    errors = {r.json()["error"] for r in responses if r.status_code == 400}
    assert errors == {"invalid_dpop_proof"}
    winner = next(r for r in responses if r.status_code == 200)
    assert claims_of(winner.json()["access_token"])["cnf"] == {"jkt": key.jkt}


# -- server nonces (RFC 9449 §8) -------------------------------------------------------------


@pytest.fixture(scope="module")
def live_nonce_stepup(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[Stepup]:
    directory = tmp_path_factory.mktemp("dpop-nonce")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    document = policy_document(upstream, directory / "data")
    document["dpop"] = {"require_nonce": True, "nonce_lifetime": 60}
    config = parse(document, base_dir=directory)
    with running_stepup(config, redis_server.url, clock, upstream) as running:
        yield running


@pytest.fixture
def nonce_stepup(live_nonce_stepup: Stepup, redis_url: str) -> Stepup:
    live_nonce_stepup.clock.set(frozen_now().now())
    return live_nonce_stepup


def test_without_the_nonce_the_answer_is_use_dpop_nonce_and_the_retry_works(
    nonce_stepup: Stepup,
) -> None:
    stepup = nonce_stepup
    key = DPoPKey()
    code, verifier = elevate(stepup)
    first = exchange(stepup, code, verifier, key)
    assert_oauth_error(first, 400, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    retry = stepup.token(code, verifier, headers=proof_header(key, stepup, nonce=nonce))
    assert retry.status_code == 200, retry.text
    assert claims_of(retry.json()["access_token"])["cnf"] == {"jkt": key.jkt}
    # A fresh nonce comes with every answer, so the client need not be refused again.
    assert retry.headers["DPoP-Nonce"]


def test_intake_asks_for_the_nonce_too_and_hands_one_out_on_success(nonce_stepup: Stepup) -> None:
    stepup = nonce_stepup
    key = DPoPKey()
    first = stepup.par(headers=proof_header(key, stepup, PAR_URL))
    assert_oauth_error(first, 400, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    second = stepup.par(headers=proof_header(key, stepup, PAR_URL, nonce=nonce))
    assert second.status_code == 201, second.text
    assert second.headers["DPoP-Nonce"]


def test_a_nonce_of_the_previous_slot_still_passes(nonce_stepup: Stepup) -> None:
    stepup = nonce_stepup
    nonce = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL)).headers["DPoP-Nonce"]
    stepup.clock.advance(60)
    response = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL, nonce=nonce))
    assert response.status_code == 201, response.text


def test_a_stale_nonce_is_refused_with_a_new_one(nonce_stepup: Stepup) -> None:
    stepup = nonce_stepup
    nonce = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL)).headers["DPoP-Nonce"]
    stepup.clock.advance(120)
    response = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL, nonce=nonce))
    assert_oauth_error(response, 400, "use_dpop_nonce")
    assert response.headers["DPoP-Nonce"] != nonce


@pytest.mark.parametrize("nonce", ["made-up", "99999999999.AAAAAAAAAAAAAAAAAAAAAAAA", "1.x"])
def test_a_forged_nonce_is_refused(nonce_stepup: Stepup, nonce: str) -> None:
    stepup = nonce_stepup
    response = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL, nonce=nonce))
    assert_oauth_error(response, 400, "use_dpop_nonce")


def test_a_nonce_from_another_instance_on_the_same_keys_passes(
    nonce_stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    # Stateless nonces: a second instance (same policy and key files) checks the first's.
    stepup = nonce_stepup
    nonce = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL)).headers["DPoP-Nonce"]
    with running_stepup(stepup.config, redis_url, stepup.clock, stepup.upstream) as second:
        response = second.par(headers=proof_header(DPoPKey(), second, PAR_URL, nonce=nonce))
    assert response.status_code == 201, response.text


def test_a_nonce_handed_out_before_a_factor_key_rotation_still_passes(
    nonce_stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    # Nonces are derived from the factor key. Rotating it (a new line first, README "Keys")
    # restarts instances one by one; a client holding a nonce of an instance not yet
    # restarted, retrying once at one already restarted, must not be refused again.
    stepup = nonce_stepup
    nonce = stepup.par(headers=proof_header(DPoPKey(), stepup, PAR_URL)).headers["DPoP-Nonce"]
    data = tmp_path / "data"
    shutil.copytree(stepup.config.deployment.data_dir, data)
    factor_keys = data / "factor-keys.txt"
    factor_keys.write_text(new_key_line() + "\n" + factor_keys.read_text())
    rotated_config = replace(
        stepup.config, deployment=replace(stepup.config.deployment, data_dir=data)
    )
    with running_stepup(rotated_config, redis_url, stepup.clock, stepup.upstream) as rotated:
        response = rotated.par(headers=proof_header(DPoPKey(), rotated, PAR_URL, nonce=nonce))
        fresh = rotated.par(headers=proof_header(DPoPKey(), rotated, PAR_URL))
    assert response.status_code == 201, response.text
    # What it hands out is under the new key: the instance still on the old key asks again.
    assert_oauth_error(fresh, 400, "use_dpop_nonce")
    assert fresh.headers["DPoP-Nonce"] != nonce
    old = stepup.par(
        headers=proof_header(DPoPKey(), stepup, PAR_URL, nonce=fresh.headers["DPoP-Nonce"])
    )
    assert_oauth_error(old, 400, "use_dpop_nonce")


# -- an independent proof builder ------------------------------------------------------------


def test_a_proof_made_by_panvas_jose_binds_the_token(stepup: Stepup) -> None:
    node = node_with_peers()
    code, verifier = elevate(stepup)
    made = jose_proof(node, "POST", TOKEN_URL, int(stepup.clock.now()))
    response = stepup.token(code, verifier, headers={"DPoP": made["proof"]})
    assert response.status_code == 200, response.text
    # jose's calculateJwkThumbprint and stepup's RFC 7638 thumbprint agree.
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": made["jkt"]}
