"""Schemathesis against a live stepup, driven by the OpenAPI document it serves itself.

Every operation of GET /openapi.json is fuzzed twice: without credentials (schemathesis makes up
Basic headers of its own) and with a real client and resource-server credential. The checks:
no 5xx, only documented status codes, content types, bodies and headers (the RFC 6749 §5.2
error schema with its character set, Cache-Control: no-store, WWW-Authenticate on 401,
Retry-After on 503), and, with credentials, that a 2xx never comes without them.

To get past the first checks the authenticated run turns some generated forms into valid
requests (the test upstream's subject tokens, the registered redirect URI and resource, the
client's scopes, PKCE challenges, step-up codes with their verifiers, an elevated token),
valid requests with one parameter replaced by a hostile value, or mixes of both; tokens
include forged copies of real ones (another `alg` in the header, another token's signature).
Deterministic: a fixed seed, derandomized generation, no example database.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from stepup.web.openapi import openapi_document
from tests.support.oauth import module_server
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    API,
    CHALLENGE,
    CLIENT_ID,
    CLIENT_SECRET,
    EXCHANGE,
    OTHER_API,
    REDIRECT,
    RS_ID,
    RS_SECRET,
    Stepup,
    pkce,
)

if TYPE_CHECKING:
    # schemathesis names the Case of an OpenAPI operation for type checkers only.
    from schemathesis.specs.openapi.schemas import OpenApiCase

live_stepup, stepup = module_server("fuzz-schemathesis")

# Per operation and generation mode; both runs together stay well under a minute on two cores.
MAX_EXAMPLES = 50
SEED = 20261123
CHECKS = [
    "not_a_server_error",  # no 5xx
    "status_code_conformance",  # only documented status codes
    "content_type_conformance",
    "response_schema_conformance",  # bodies, RFC 6749 §5.2 errors included
    "response_headers_conformance",  # Cache-Control, WWW-Authenticate, Retry-After
    "negative_data_rejection",  # a request the document calls invalid is refused (4xx)
    "missing_required_header",
    "unsupported_method",  # 405 with Allow for undocumented methods
]


def _config(stepup: Stepup, *, authenticated: bool) -> SchemathesisConfig:
    checks: dict[str, Any] = {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}
    if authenticated:
        checks["ignored_auth"] = {"enabled": True}
    project: dict[str, Any] = {
        "seed": SEED,
        "base-url": stepup.url,
        "cache": {"enabled": False},
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": checks,
    }
    if authenticated:
        project["auth"] = {
            "openapi": {
                "client": {"username": CLIENT_ID, "password": CLIENT_SECRET},
                "resourceServer": {"username": RS_ID, "password": RS_SECRET},
            }
        }
    return SchemathesisConfig.from_dict(project)


def _load(stepup: Stepup, *, authenticated: bool) -> BaseSchema:
    return schemathesis.openapi.from_url(
        f"{stepup.url}/openapi.json", config=_config(stepup, authenticated=authenticated)
    )


@pytest.fixture
def anonymous_schema(stepup: Stepup) -> BaseSchema:
    return _load(stepup, authenticated=False)


@pytest.fixture
def authenticated_schema(stepup: Stepup) -> BaseSchema:
    return _load(stepup, authenticated=True)


@dataclass
class Realistic:
    """Values that pass stepup's first checks, per operation path: whole valid requests (for
    a code, its verifier and its subject's token belong together) and single parameters."""

    valid: dict[str, st.SearchStrategy[dict[str, str]]]
    values: dict[str, dict[str, st.SearchStrategy[str]]]


MOSTLY = st.sampled_from([True, True, True, False])
# Values a parameter of an otherwise valid request is replaced with.
HOSTILE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["é", '"', "\\", "\x01", "\x00", " ", "a b", "é" * 3000, "x" * 20_000]),
)


@cache
def _form_parameters(path: str) -> list[str]:
    """The parameters the served document names for an operation's form body."""
    operation = openapi_document("http://localhost")["paths"][path]["post"]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
    return sorted(form["schema"]["properties"])


# Generated parameters kept in a valid request: they cannot make it fail by themselves.
HARMLESS = {"/par": {"state", "max_age", "response_type"}, "/token": {"requested_token_type"}}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(token: str, other: str) -> list[str]:
    """Copies of a real token with its claims but another header (algorithm), or another
    token's signature: what an attacker sends first."""
    header, claims, signature = token.split(".")
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    forged = [
        f"{_b64url(json.dumps({'alg': alg, 'typ': 'at+jwt', 'kid': kid}).encode())}.{claims}."
        + ("" if alg == "none" else signature)
        for alg in ("none", "HS256", "RS256", "EdDSA", "ES384")
    ]
    return [*forged, f"{header}.{claims}.{other.split('.')[2]}"]


@pytest.fixture
def realistic(stepup: Stepup) -> Realistic:
    upstream = stepup.upstream
    grants: list[dict[str, str]] = []
    for n in range(4):
        sub = f"fuzz-user-{n}"
        with stepup.browser() as browser:
            query, verifier, _ = stepup.step_up(browser, sub=sub)
        grants.append(
            {
                "grant_type": EXCHANGE,
                "subject_token": upstream.token(sub),
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "code": query["code"][0],
                "code_verifier": verifier,
            }
        )
    # One code redeemed here: an elevated token for introspection and revocation.
    first = grants.pop(0)
    elevated = stepup.token(first["code"], first["code_verifier"], first["subject_token"])
    assert elevated.status_code == 200, elevated.text
    access_token = elevated.json()["access_token"]

    valid_subject_tokens = st.sampled_from([upstream.token(), upstream.token("bob")])
    subject_tokens = st.one_of(
        valid_subject_tokens,
        st.sampled_from(
            [
                upstream.token(age=3 * 3600),  # expired
                upstream.token(client_id="someone-else"),
                upstream.token(aud="https://elsewhere.example"),
                *_forged(upstream.token(), access_token),
            ]
        ),
    )
    tokens = st.sampled_from([access_token, *_forged(access_token, upstream.token())])
    code_challenges = st.sampled_from([pkce()[1] for _ in range(3)])
    scopes = st.sampled_from(
        ["payments:write", "audit:read", "keys:admin", "payments:write audit:read"]
    )
    challenges = st.sampled_from(
        [CHALLENGE, 'Bearer error="insufficient_scope", scope="payments:write"']
    )
    return Realistic(
        valid={
            "/par": st.fixed_dictionaries(
                {
                    "subject_token": valid_subject_tokens,
                    "subject_token_type": st.just(ACCESS_TOKEN_TYPE),
                    "challenge": challenges,
                    "scope": scopes,
                    "resource": st.just(API),
                    "redirect_uri": st.just(REDIRECT),
                    "code_challenge": code_challenges,
                    "code_challenge_method": st.just("S256"),
                }
            ),
            "/token": st.sampled_from(grants),
            "/enroll": st.fixed_dictionaries(
                {
                    "subject_token": valid_subject_tokens,
                    "subject_token_type": st.just(ACCESS_TOKEN_TYPE),
                },
                optional={"redirect_uri": st.just(REDIRECT)},
            ),
            # Any token makes a valid request here: unknown ones are inactive, not errors.
            "/introspect": st.fixed_dictionaries({"token": tokens}),
            "/revoke": st.fixed_dictionaries({"token": tokens}),
        },
        values={
            "/par": {
                "subject_token": subject_tokens,
                "challenge": challenges,
                "scope": scopes,
                "acr_values": st.sampled_from(["urn:stepup:acr:mfa", "urn:stepup:acr:phr"]),
                "resource": st.sampled_from([API, OTHER_API]),
                "redirect_uri": st.just(REDIRECT),
                "code_challenge": code_challenges,
            },
            "/token": {
                "subject_token": subject_tokens,
                "resource": st.sampled_from([API, OTHER_API]),
                "scope": scopes,
            },
            "/enroll": {"subject_token": subject_tokens, "redirect_uri": st.just(REDIRECT)},
            "/introspect": {"token": tokens},
            "/revoke": {"token": tokens},
        },
    )


def _mix_in(case: OpenApiCase, data: st.DataObject, realistic: Realistic) -> None:
    """Make a positive case a valid request, or replace some of its parameters by real ones."""
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return
    if not isinstance(case.body, dict):
        return
    path = case.operation.path
    how = data.draw(st.sampled_from(["generated", "valid", "valid but one", "some real"]))
    if how == "generated" or path not in realistic.valid:
        return
    if how.startswith("valid"):
        kept = {k: v for k, v in case.body.items() if k in HARMLESS.get(path, ())}
        case.body = {**kept, **data.draw(realistic.valid[path], label="valid request")}
        if how == "valid but one":
            name = data.draw(st.sampled_from(_form_parameters(path)), label="replaced")
            real = realistic.values[path].get(name)
            case.body[name] = data.draw(HOSTILE if real is None else real | HOSTILE, label=name)
    else:
        # Credentials are in the Authorization header; a second method in the body is refused.
        if data.draw(st.booleans(), label="drop body credentials"):
            case.body.pop("client_secret", None)
            case.body.pop("client_id", None)
        # Undocumented parameters (often lists: repeated) end most requests at the form reader.
        if data.draw(st.booleans(), label="drop undocumented parameters"):
            documented = _form_parameters(path)
            case.body = {k: v for k, v in case.body.items() if k in documented}
        for name, strategy in realistic.values[path].items():
            if data.draw(MOSTLY, label=name):
                case.body[name] = data.draw(strategy, label=name)
    # Reading `meta` re-validates the edited body: a request the edits made invalid by the
    # document is then checked as one (negative_data_rejection), a valid one as valid.
    assert case.meta is not None


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's from_fixture() reads and rewrites `item._nodeid`, which pytest 9.2
    renamed (`item._id`); give it the attribute it expects (its renaming then has no effect)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


anonymous = schemathesis.pytest.from_fixture("anonymous_schema")
authenticated = schemathesis.pytest.from_fixture("authenticated_schema")


@anonymous.parametrize()
def test_operations_without_credentials(case: OpenApiCase) -> None:
    case.call_and_validate()


@authenticated.parametrize()
@authenticated.given(data=st.data())
def test_operations_with_credentials(
    case: OpenApiCase, data: st.DataObject, realistic: Realistic
) -> None:
    _mix_in(case, data, realistic)
    case.call_and_validate()
