"""A client built only from the README and the metadata document, on authlib's OAuth client
(code nobody here wrote), completes the loop: intake, page, exchange, introspection, revocation."""

from __future__ import annotations

import warnings
from urllib.parse import parse_qs, urlsplit

import pyotp
from authlib.integrations.requests_client import OAuth2Session

from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    API,
    CHALLENGE,
    CLIENT_ID,
    CLIENT_SECRET,
    EXCHANGE,
    REDIRECT,
    RS_ID,
    RS_SECRET,
    Stepup,
    hidden,
    manual_key,
    pkce,
)


def test_authlib_client_completes_the_loop_from_metadata_alone(stepup: Stepup) -> None:
    client = OAuth2Session(
        CLIENT_ID, CLIENT_SECRET, token_endpoint_auth_method="client_secret_basic"
    )
    api = OAuth2Session(RS_ID, RS_SECRET, token_endpoint_auth_method="client_secret_basic")
    meta = client.get(
        stepup.url + "/.well-known/oauth-authorization-server", withhold_token=True
    ).json()
    assert meta["issuer"] == stepup.config.issuer

    def here(url: str) -> str:
        # Local test server: the issuer names port 8000, the live server listens elsewhere.
        return url.replace(meta["issuer"], stepup.url)

    subject_token = stepup.upstream.token()
    verifier, challenge = pkce()
    pushed = client.post(
        here(meta["pushed_authorization_request_endpoint"]),
        data={
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "challenge": CHALLENGE,
            "scope": "payments:write",
            "resource": API,
            "redirect_uri": REDIRECT,
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        auth=client.client_auth("client_secret_basic"),
    )
    assert pushed.status_code == 201, pushed.text
    authorize_url = (
        f"{here(meta['authorization_endpoint'])}?client_id={CLIENT_ID}"
        f"&request_uri={pushed.json()['request_uri']}"
    )

    with stepup.browser() as user:  # the user's browser, following the README's page flow
        page = user.get(authorize_url)
        page = user.get(page.headers["location"])
        secret = manual_key(page.text)
        done = user.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": pyotp.TOTP(secret).at(stepup.clock.now()),
            },
        )
    callback = parse_qs(urlsplit(done.headers["location"]).query)
    assert callback["state"] == ["xyz"] and callback["iss"] == [meta["issuer"]]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        token = client.fetch_token(
            here(meta["token_endpoint"]),
            grant_type=EXCHANGE,
            subject_token=subject_token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            code=callback["code"][0],
            code_verifier=verifier,
            requested_token_type=ACCESS_TOKEN_TYPE,
        )
    assert token["token_type"] == "Bearer"
    assert token["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert token["scope"] == "payments:write"

    seen = api.introspect_token(here(meta["introspection_endpoint"]), token=token["access_token"])
    assert seen.json()["active"] is True
    assert seen.json()["acr"] == "urn:stepup:acr:mfa" and seen.json()["amr"] == ["otp"]
    revoked = client.revoke_token(here(meta["revocation_endpoint"]), token=token["access_token"])
    assert revoked.status_code == 200
    after = api.introspect_token(here(meta["introspection_endpoint"]), token=token["access_token"])
    assert after.json() == {"active": False}
