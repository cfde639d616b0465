"""Bad input anywhere gets the spec's error shape, never a 500 (hypothesis, real server)."""

from __future__ import annotations

import json
import string
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.dpop import DPoPKey
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CHALLENGE,
    CLIENT_ID,
    CLIENT_SECRET,
    EXCHANGE,
    RS_ID,
    RS_SECRET,
    Stepup,
    payment,
    pkce,
)

PARAMETERS = [
    "subject_token",
    "subject_token_type",
    "challenge",
    "acr_values",
    "max_age",
    "scope",
    "resource",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "authorization_details",
    "dpop_jkt",
    "grant_type",
    "code",
    "code_verifier",
    "audience",
    "requested_token_type",
    "token",
    "token_type_hint",
    "client_id",
    "response_type",
]
PLAUSIBLE = [
    ACCESS_TOKEN_TYPE,
    CHALLENGE,
    EXCHANGE,
    "S256",
    "plain",
    "payments:write",
    "https://api.example",
    "http://localhost:9999/callback",
    "urn:stepup:acr:mfa",
    "300",
    "-1",
    "a" * 43,
    "eyJhbGciOiJub25lIn0.e30.",
    'Bearer max_age="x"',
    "[{}]",
    "\x00",
    "é" * 5000,
]
values = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=200))
forms = st.dictionaries(st.sampled_from(PARAMETERS), values, max_size=10)
credentials = st.sampled_from(
    [None, (CLIENT_ID, CLIENT_SECRET), (RS_ID, RS_SECRET), (CLIENT_ID, "wrong"), ("é", "ü")]
)
ENDPOINTS = ["/par", "/token", "/introspect", "/revoke", "/enroll"]
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _is_oauth_error(response: httpx.Response) -> bool:
    body = response.json()
    return isinstance(body.get("error"), str) and set(body.get("error")) <= set(
        string.ascii_lowercase + "_"
    )


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), form=forms, auth=credentials)
def test_json_endpoints_answer_bad_forms_with_an_oauth_error(
    stepup: Stepup, endpoint: str, form: dict[str, str], auth: tuple[str, str] | None
) -> None:
    # httpx types `auth` without None; its no-op Auth sends no credentials, as None does.
    response = stepup.http.post(endpoint, data=form, auth=auth or httpx.Auth())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert _is_oauth_error(response), response.text
        assert response.headers["cache-control"] == "no-store"


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "text/plain", ""]
    ),
)
def test_json_endpoints_answer_raw_bodies_with_an_oauth_error(
    stepup: Stepup, endpoint: str, body: bytes, content_type: str
) -> None:
    response = stepup.http.post(
        endpoint,
        content=body,
        headers={"content-type": content_type},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert _is_oauth_error(response), response.text


@FUZZ
@given(
    # httpx refuses to send a query over 64 KiB (three "é" * 5000 values encode to 90 KB).
    query=st.dictionaries(
        st.sampled_from(["client_id", "request_uri", "x"]), values, max_size=3
    ).filter(lambda query: len(urlencode(query)) < 60_000),
    # "." and ".." are dot-segments (RFC 3986 §5.2.4): the client resolves them to another path.
    path=st.text(
        alphabet=string.ascii_letters + string.digits + "-_%.", min_size=1, max_size=60
    ).filter(lambda p: p.strip(".") != ""),
    form=forms,
)
def test_pages_answer_bad_input_with_an_html_page(
    stepup: Stepup, query: dict[str, str], path: str, form: dict[str, str]
) -> None:
    with stepup.browser() as browser:
        started = browser.get("/authorize", params=query)
        shown = browser.get(f"/interaction/{path}")
        posted = browser.post(f"/interaction/{path}", data=form)
        enrol = browser.post(f"/enroll/{path}", data=form)
    for response in (started, shown, posted, enrol):
        assert response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("text/html")
    assert started.status_code in (303, 400)
    if started.status_code == 303:
        # Only ever to stepup's own interaction page, never to a URI from the request.
        assert started.headers["location"].startswith("/interaction/")


def test_a_repeated_parameter_is_refused(stepup: Stepup) -> None:
    response = stepup.http.post(
        "/token",
        content=b"grant_type=a&grant_type=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# -- DPoP headers and authorization_details (RFC 9449, RFC 9396) ----------------------------

_PROOF_KEY = DPoPKey()
# What HTTP lets through in a header value (no surrounding whitespace).
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300
).filter(lambda text: text == text.strip())
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def _proofs(draw: st.DrawFn, url: str) -> str:
    """A signed proof for `url` with one header member or claim set to arbitrary JSON."""
    where = draw(st.sampled_from(["header", "claims"]))
    name = draw(st.sampled_from(["typ", "alg", "jwk", "crit", "kid", "jti", "htm", "htu", "iat"]))
    value = draw(_json)
    options: dict[str, Any] = {where: {name: value}} if value is not None else {}
    return _PROOF_KEY.proof("POST", url, iat=time.time(), raw=True, **options)


@st.composite
def _details(draw: st.DrawFn) -> str:
    """A payment with one field replaced by arbitrary JSON, or arbitrary JSON text."""
    detail: dict[str, Any] = payment()
    path = draw(
        st.sampled_from(
            [
                ("type",),
                ("creditorName",),
                ("actions",),
                ("instructedAmount",),
                ("instructedAmount", "amount"),
                ("instructedAmount", "currency"),
                ("x",),
            ]
        )
    )
    target = detail
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = draw(_json)
    return draw(st.just(json.dumps([detail])) | st.text(max_size=60) | _json.map(json.dumps))


@FUZZ
@given(data=st.data(), endpoint=st.sampled_from(["/par", "/token"]))
def test_dpop_headers_and_authorization_details_get_an_oauth_error(
    stepup: Stepup, data: st.DataObject, endpoint: str
) -> None:
    url = stepup.url + endpoint
    proofs = data.draw(st.lists(_proofs(url) | _header_text, max_size=2), label="DPoP")
    _, challenge = pkce()
    form = {
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "challenge": CHALLENGE,
        "resource": "https://api.example",
        "redirect_uri": "http://localhost:9999/callback",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "grant_type": EXCHANGE,
        "code": "no-such-code",
        "code_verifier": "v" * 43,
        "authorization_details": data.draw(_details(), label="authorization_details"),
    }
    response = stepup.http.post(
        endpoint,
        data=form,
        headers=[("DPoP", proof) for proof in proofs],
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert _is_oauth_error(response), response.text
        assert response.headers["cache-control"] == "no-store"
