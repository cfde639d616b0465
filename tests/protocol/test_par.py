"""Challenge intake: POST /par (RFC 9126) against a live stepup over real HTTP and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from pathlib import Path
from typing import Any, Unpack
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey

from stepup.clock import FrozenClock
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    API,
    CHALLENGE,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_API,
    OTHER_ID,
    OTHER_SECRET,
    REDIRECT,
    RS_ID,
    RS_SECRET,
    ParFields,
    Stepup,
    Upstream,
    make_config,
    pkce,
    running_stepup,
)

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
PHR = "urn:stepup:acr:phr"
MFA = "urn:stepup:acr:mfa"


live_stepup, stepup = module_server("par")


def par_form(stepup: Stepup, **fields: str | None) -> dict[str, str]:
    """The body Stepup.par would send, for tests that need to send it their own way."""
    _, challenge = pkce()
    body: dict[str, str | None] = {
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "challenge": CHALLENGE,
        "scope": "payments:write",
        "resource": API,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())


def upstream_claims(stepup: Stepup) -> dict[str, Any]:
    """The claims of a valid subject token, read back from one the upstream minted."""
    payload = stepup.upstream.token().split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def redirect_query(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)


def demanded_level_outcome(stepup: Stepup, **fields: Unpack[ParFields]) -> httpx.Response:
    """Push a request for a user with no factor and open it: a level TOTP can meet shows the
    TOTP enrolment page, a higher one offers only a passkey (see assert_passkey_only)."""
    pushed = stepup.par(None, auth=None, **fields)
    assert pushed.status_code == 201, pushed.text
    with stepup.browser() as browser:
        return stepup.open_authorization(browser, pushed.json()["request_uri"])


def assert_passkey_only(response: httpx.Response) -> None:
    """The page a new user gets at a phishing-resistant level: create a passkey, no TOTP."""
    assert response.status_code == 200, response.text
    assert "data-webauthn" in response.text
    assert 'id="totp-secret"' not in response.text
    assert 'autocomplete="one-time-code"' not in response.text


def assert_totp_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert 'autocomplete="one-time-code"' in response.text


# --- success ------------------------------------------------------------------------


def test_par_answers_201_with_request_uri_and_expires_in(stepup: Stepup) -> None:
    response = stepup.par()
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"request_uri", "expires_in"}
    assert body["request_uri"].startswith(REQUEST_URI_PREFIX)
    assert len(body["request_uri"]) > len(REQUEST_URI_PREFIX) + 20
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0


def test_par_request_uris_are_unique(stepup: Stepup) -> None:
    first = stepup.par().json()["request_uri"]
    second = stepup.par().json()["request_uri"]
    assert first != second


# --- client authentication ----------------------------------------------------------


def test_client_secret_basic_is_accepted(stepup: Stepup) -> None:
    response = stepup.http.post("/par", data=par_form(stepup), auth=(CLIENT_ID, CLIENT_SECRET))
    assert response.status_code == 201, response.text


def test_client_secret_post_is_accepted(stepup: Stepup) -> None:
    form = par_form(stepup, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    response = stepup.http.post("/par", data=form)
    assert response.status_code == 201, response.text


def test_wrong_secret_is_invalid_client_with_www_authenticate(stepup: Stepup) -> None:
    response = stepup.par(auth=(CLIENT_ID, "not-the-secret"))
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].lower().startswith("basic")


def test_wrong_secret_in_body_is_invalid_client(stepup: Stepup) -> None:
    form = par_form(stepup, client_id=CLIENT_ID, client_secret="not-the-secret")
    response = stepup.http.post("/par", data=form)
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_unknown_client_is_invalid_client(stepup: Stepup) -> None:
    response = stepup.par(auth=("nobody", CLIENT_SECRET))
    assert_oauth_error(response, 401, "invalid_client")


def test_no_client_authentication_is_invalid_client(stepup: Stepup) -> None:
    response = stepup.http.post("/par", data=par_form(stepup, client_id=CLIENT_ID))
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "a" * 20,
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
    ],
)
def test_unusable_authorization_header_is_invalid_client(
    stepup: Stepup, authorization: str
) -> None:
    response = stepup.http.post(
        "/par", data=par_form(stepup), headers={"Authorization": authorization}
    )
    assert_oauth_error(response, 401, "invalid_client")


def test_two_authentication_methods_at_once_are_invalid_request(stepup: Stepup) -> None:
    form = par_form(stepup, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    response = stepup.http.post("/par", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_resource_server_credential_is_not_a_client(stepup: Stepup) -> None:
    response = stepup.par(auth=(RS_ID, RS_SECRET))
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_body_client_id_other_than_the_authenticated_one_is_refused(stepup: Stepup) -> None:
    form = par_form(stepup, client_id=OTHER_ID)
    response = stepup.http.post("/par", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 401, "invalid_client")


# --- redirect_uri -------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://localhost:9999/callback/../evil",
        "http://localhost:9999/callback?next=x",
        "http://localhost:9999/Callback",
        "http://localhost:9998/cb",  # registered, but for the other client
        "https://attacker.example/callback",
    ],
)
def test_unregistered_redirect_uri_is_invalid_request(stepup: Stepup, redirect_uri: str) -> None:
    assert_oauth_error(stepup.par(redirect_uri=redirect_uri), 400, "invalid_request")


def test_missing_redirect_uri_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(redirect_uri=None), 400, "invalid_request")


# --- PKCE ---------------------------------------------------------------------------


def test_missing_code_challenge_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(code_challenge=None), 400, "invalid_request")


def test_plain_code_challenge_method_is_invalid_request(stepup: Stepup) -> None:
    verifier, _ = pkce()
    response = stepup.par(code_challenge=verifier[:43], code_challenge_method="plain")
    assert_oauth_error(response, 400, "invalid_request")


def test_missing_code_challenge_method_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(code_challenge_method=None), 400, "invalid_request")


@pytest.mark.parametrize(
    "challenge",
    [
        "short",
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "+",
        "A" * 42 + "/",
    ],
)
def test_malformed_code_challenge_is_invalid_request(stepup: Stepup, challenge: str) -> None:
    assert_oauth_error(stepup.par(code_challenge=challenge), 400, "invalid_request")


# --- subject token ------------------------------------------------------------------


def test_missing_subject_token_is_invalid_request(stepup: Stepup) -> None:
    form = par_form(stepup)
    del form["subject_token"]
    response = stepup.http.post("/par", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_missing_subject_token_type_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(subject_token_type=None), 400, "invalid_request")


@pytest.mark.parametrize(
    "token_type",
    [
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "urn:ietf:params:oauth:token-type:saml2",
        "access_token",
    ],
)
def test_other_subject_token_type_is_unsupported_token_type(
    stepup: Stepup, token_type: str
) -> None:
    response = stepup.par(subject_token_type=token_type)
    assert_oauth_error(response, 400, "unsupported_token_type")


def test_jwt_subject_token_type_is_accepted(stepup: Stepup) -> None:
    response = stepup.par(subject_token_type="urn:ietf:params:oauth:token-type:jwt")
    assert response.status_code == 201, response.text


def test_expired_subject_token_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(age=7200, lifetime=3600)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_without_exp_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(exp=None)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", 1e300),  # a legal JSON number, far beyond any time
        ("exp", 2**64),  # a legal JSON integer beyond 64 bits
        ("exp", math.inf),  # encoded as the non-JSON literal Infinity
        ("nbf", math.nan),  # encoded as the non-JSON literal NaN
    ],
)
def test_subject_token_with_an_absurd_time_claim_is_invalid_request(
    stepup: Stepup, claim: str, value: float
) -> None:
    absurd: dict[str, Any] = {claim: value}
    token = stepup.upstream.token(**absurd)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_issued_in_the_future_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(iat=int(stepup.clock.now()) + 3600)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_with_one_accepted_audience_among_several_is_accepted(
    stepup: Stepup,
) -> None:
    token = stepup.upstream.token(aud=["https://unrelated.example", API])
    assert stepup.par(token).status_code == 201


def test_subject_token_not_yet_valid_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(nbf=int(stepup.clock.now()) + 3600)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_for_another_audience_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(aud="https://unrelated.example")
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_from_untrusted_issuer_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(iss="https://evil.example")
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_signed_by_another_key_is_invalid_request(stepup: Stepup) -> None:
    forger = ECKey.generate_key("P-256", private=True, auto_kid=True)
    token = stepup.upstream.token(key=forger)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_signed_by_another_key_with_the_trusted_kid_is_invalid_request(
    stepup: Stepup,
) -> None:
    forger = ECKey.generate_key("P-256", private=True, auto_kid=True)
    token = stepup.upstream.token(key=forger, header={"kid": stepup.upstream.key.kid})
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_verified_only_by_its_embedded_jwk_is_invalid_request(
    stepup: Stepup,
) -> None:
    # RFC 8725 §3.1 / the `jwk` header attack: the token names its own verification key.
    forger = ECKey.generate_key("P-256", private=True, auto_kid=True)
    token = stepup.upstream.token(key=forger, header={"jwk": forger.as_dict(private=False)})
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_with_alg_none_is_invalid_request(stepup: Stepup) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": stepup.upstream.key.kid}
    token = unsigned_parts(header, upstream_claims(stepup)) + "."
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_hs256_forged_with_the_public_key_is_invalid_request(
    stepup: Stepup,
) -> None:
    public_pem = stepup.upstream.key.as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": stepup.upstream.key.kid}
    signing_input = unsigned_parts(header, upstream_claims(stepup))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + b64url(signature)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "id_token+jwt", "dpop+jwt"])
def test_subject_token_typ_other_than_at_jwt_is_invalid_request(stepup: Stepup, typ: str) -> None:
    token = stepup.upstream.token(header={"typ": typ})
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_issued_to_another_client_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(client_id=OTHER_ID)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


def test_subject_token_without_client_id_is_invalid_request(stepup: Stepup) -> None:
    token = stepup.upstream.token(client_id=None)  # type: ignore[arg-type]
    assert_oauth_error(stepup.par(token), 400, "invalid_request")


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "e30.e30.", "x" * 20_000])
def test_garbage_subject_token_is_invalid_request(stepup: Stepup, garbage: str) -> None:
    assert_oauth_error(stepup.par(garbage), 400, "invalid_request")


# --- scope --------------------------------------------------------------------------


def test_missing_scope_is_invalid_scope(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(scope=None), 400, "invalid_scope")


def test_unknown_scope_is_invalid_scope(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(scope="payments:everything"), 400, "invalid_scope")


def test_scope_the_client_may_not_elevate_to_is_invalid_scope(stepup: Stepup) -> None:
    token = stepup.upstream.token(client_id=OTHER_ID)
    response = stepup.http.post(
        "/par",
        data=par_form(
            stepup, subject_token=token, scope="keys:admin", redirect_uri="http://localhost:9998/cb"
        ),
        auth=(OTHER_ID, OTHER_SECRET),
    )
    assert_oauth_error(response, 400, "invalid_scope")


def test_one_disallowed_scope_among_allowed_ones_is_invalid_scope(stepup: Stepup) -> None:
    response = stepup.par(scope="payments:write payments:everything")
    assert_oauth_error(response, 400, "invalid_scope")


def test_scope_from_an_insufficient_scope_challenge_is_used(stepup: Stepup) -> None:
    response = stepup.par(
        challenge='Bearer error="insufficient_scope", scope="payments:write"', scope=None
    )
    assert response.status_code == 201, response.text


# --- resource -----------------------------------------------------------------------


def test_missing_resource_is_invalid_target(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(resource=None), 400, "invalid_target")


def test_resource_with_fragment_is_invalid_target(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(resource=API + "#section"), 400, "invalid_target")


def test_relative_resource_is_invalid_target(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(resource="/payments"), 400, "invalid_target")


def test_resource_not_allowed_for_the_client_is_invalid_target(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(resource=OTHER_API), 400, "invalid_target")


# --- the challenge header and the level policy ---------------------------------------


@pytest.mark.parametrize(
    "challenge",
    [
        # RFC 9470 §3 shape, max_age as a token
        'Bearer error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        f'acr_values="{PHR}"',
        # several schemes in one header, the Bearer one last
        f'Basic realm="api", DPoP algs="ES256 PS256", Bearer error="insufficient_user_authentication", acr_values="{PHR}", max_age=60',
        # the Bearer one first, parameters in another order
        f'Bearer max_age=60, acr_values="{PHR}", error="insufficient_user_authentication", Basic realm="x"',
        # case-insensitive scheme and parameter names
        f'BEARER ERROR="insufficient_user_authentication", ACR_VALUES="{PHR}"',
        # quoted-string with escaped quotes, a comma and a backslash
        r'Bearer error_description="say \"stronger\", please \\ now", '
        f'error="insufficient_user_authentication", acr_values="{PHR}"',
        # empty list elements (RFC 9110 §5.6.1.2) are harmless
        f', Bearer error="insufficient_user_authentication", , acr_values="{PHR}",',
        # a DPoP challenge (RFC 9449 §7.1) carries the step-up too
        f'DPoP algs="ES256", error="insufficient_user_authentication", acr_values="{PHR}"',
    ],
)
def test_challenge_header_shapes_are_read(stepup: Stepup, challenge: str) -> None:
    # acr phr is read out of the header: a user who can only enrol TOTP cannot meet it.
    assert_passkey_only(demanded_level_outcome(stepup, challenge=challenge))


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer error="insufficient_user_authentication',  # unterminated quoted-string
        'Bearer error="x" max_age=5',  # no comma between parameters
        "Bearer =value",
        'Bearer acr_values="a" "b"',
        'Bearer error="x", error="y"',  # repeated parameter
        'Bearer error="insufficient_user_authentication", max_age=soon',
        'Bearer error="insufficient_user_authentication", max_age="-1"',
        'Basic realm="api"',  # no Bearer or DPoP challenge
        'Bearer error="a\x01b"',  # a control character in a quoted-string
        'Bearer error_description="' + "a" * 9000 + '"',  # beyond any sane header size
        "\x00",
    ],
)
def test_malformed_challenge_is_invalid_request(stepup: Stepup, challenge: str) -> None:
    assert_oauth_error(stepup.par(challenge=challenge), 400, "invalid_request")


def test_policy_level_for_the_scope_is_met_with_totp(stepup: Stepup) -> None:
    assert_totp_page(demanded_level_outcome(stepup))


def test_asking_a_lower_level_than_policy_still_gets_the_policy_level(stepup: Stepup) -> None:
    # keys:admin requires phr; the challenge asks only for mfa.
    outcome = demanded_level_outcome(stepup, scope="keys:admin", challenge=CHALLENGE)
    assert_passkey_only(outcome)


def test_asking_a_lower_level_by_acr_values_still_gets_the_policy_level(stepup: Stepup) -> None:
    outcome = demanded_level_outcome(stepup, scope="keys:admin", challenge=None, acr_values=MFA)
    assert_passkey_only(outcome)


def test_asking_a_higher_level_than_policy_gets_the_higher_one(stepup: Stepup) -> None:
    outcome = demanded_level_outcome(stepup, challenge=None, acr_values=PHR)
    assert_passkey_only(outcome)


def test_unmet_redirect_carries_state_and_iss(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> None:
    # Without enrolment during step-up, a user with no factor cannot meet any level.
    config = make_config(upstream, tmp_path / "no-enrol", enrollment_during_stepup=False)
    with running_stepup(config, redis_url, clock, upstream) as stepup:
        outcome = demanded_level_outcome(stepup, acr_values=PHR, state="keep-me")
    query = redirect_query(outcome)
    assert query["error"] == ["unmet_authentication_requirements"]
    assert "code" not in query
    assert query["state"] == ["keep-me"]
    assert query["iss"] == [stepup.config.issuer]


def test_unknown_acr_values_only_are_invalid_request(stepup: Stepup) -> None:
    response = stepup.par(challenge=None, acr_values="urn:example:acr:unknown")
    assert_oauth_error(response, 400, "invalid_request")


def test_unknown_acr_values_only_in_the_challenge_are_invalid_request(stepup: Stepup) -> None:
    challenge = 'Bearer error="insufficient_user_authentication", acr_values="urn:x:gold"'
    assert_oauth_error(stepup.par(challenge=challenge), 400, "invalid_request")


def test_unknown_acr_value_beside_a_known_one_is_ignored(stepup: Stepup) -> None:
    response = stepup.par(challenge=None, acr_values=f"urn:example:acr:unknown {MFA}")
    assert response.status_code == 201, response.text


# --- max_age: the smaller of policy and request ---------------------------------------


def step_up_once(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, _, _ = stepup.step_up(browser)
    assert "code" in query


def reopen(stepup: Stepup, **fields: Unpack[ParFields]) -> httpx.Response:
    pushed = stepup.par(None, auth=None, **fields)
    assert pushed.status_code == 201, pushed.text
    with stepup.browser() as browser:
        return stepup.open_authorization(browser, pushed.json()["request_uri"])


def test_recent_step_up_within_policy_max_age_is_reused(stepup: Stepup) -> None:
    step_up_once(stepup)
    stepup.clock.advance(100)
    query = redirect_query(reopen(stepup))
    assert "code" in query


def test_request_max_age_below_policy_forces_a_new_proof(stepup: Stepup) -> None:
    step_up_once(stepup)
    stepup.clock.advance(20)
    outcome = reopen(stepup, challenge=None, max_age="10")
    assert_totp_page(outcome)


def test_challenge_max_age_below_policy_forces_a_new_proof(stepup: Stepup) -> None:
    step_up_once(stepup)
    stepup.clock.advance(20)
    challenge = f'Bearer error="insufficient_user_authentication", acr_values="{MFA}", max_age=10'
    assert_totp_page(reopen(stepup, challenge=challenge))


def test_request_max_age_above_policy_is_capped_by_policy(stepup: Stepup) -> None:
    step_up_once(stepup)
    stepup.clock.advance(400)  # beyond payments:write max_age 300
    outcome = reopen(stepup, challenge=None, max_age="100000")
    assert_totp_page(outcome)


def test_malformed_max_age_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(max_age="-5"), 400, "invalid_request")


# --- parameters stepup does not accept ------------------------------------------------


def test_authorization_details_is_invalid_authorization_details(stepup: Stepup) -> None:
    details = json.dumps([{"type": "payment_initiation", "amount": "10.00"}])
    response = stepup.par(authorization_details=details)
    assert_oauth_error(response, 400, "invalid_authorization_details")


@pytest.mark.parametrize("jkt", ["abc", "x" * 43 + "=", "+" * 43, "a" * 44])
def test_a_dpop_jkt_that_is_no_sha256_thumbprint_is_invalid_request(
    stepup: Stepup, jkt: str
) -> None:
    assert_oauth_error(stepup.par(dpop_jkt=jkt), 400, "invalid_request")


@pytest.mark.parametrize("response_type", ["token", "code id_token", "id_token"])
def test_response_type_other_than_code_is_unsupported_response_type(
    stepup: Stepup, response_type: str
) -> None:
    response = stepup.par(response_type=response_type)
    assert_oauth_error(response, 400, "unsupported_response_type")


def test_response_type_code_is_accepted(stepup: Stepup) -> None:
    assert stepup.par(response_type="code").status_code == 201


def test_request_uri_inside_a_pushed_request_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.par(request_uri=REQUEST_URI_PREFIX + "abc")
    assert_oauth_error(response, 400, "invalid_request")


def test_repeated_parameter_is_invalid_request(stepup: Stepup) -> None:
    form: dict[str, Any] = dict(par_form(stepup))
    form["scope"] = ["payments:write", "audit:read"]
    response = stepup.http.post("/par", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_form_content_type_with_charset_is_accepted(stepup: Stepup) -> None:
    response = stepup.http.post(
        "/par",
        content=urlencode(par_form(stepup)),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 201, response.text


def test_overlong_state_is_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(stepup.par(state="s" * 5000), 400, "invalid_request")


def test_json_body_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.http.post("/par", json=par_form(stepup), auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_multipart_body_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.http.post(
        "/par",
        data=par_form(stepup),
        files={"x": ("x.txt", b"x")},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_oversized_body_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.par(state="s" * 70_000)
    assert_oauth_error(response, 400, "invalid_request")


def test_get_par_is_405_json_error(stepup: Stepup) -> None:
    response = stepup.http.get("/par")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "error_description" in body
    assert "POST" in response.headers.get("allow", "")
