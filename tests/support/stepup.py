"""A stepup under test: an upstream IdP key of the test's own, a policy, a live server, and
a client that walks the loop over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
from joserfc import jwt
from joserfc.jwk import ECKey

from stepup.app import create_app
from stepup.clock import FrozenClock
from stepup.config import Config, hash_secret, parse
from tests.support.server import LiveServer

ISSUER_UPSTREAM = "https://idp.example"
API = "https://api.example"
OTHER_API = "https://other-api.example"
REDIRECT = "http://localhost:9999/callback"
CLIENT_ID, CLIENT_SECRET = "bank", "bank-secret-0123456789abcdef"
OTHER_ID, OTHER_SECRET = "shop", "shop-secret-0123456789abcdef"
RS_ID, RS_SECRET = "payments-rs", "rs-secret-0123456789abcdef"
OTHER_RS_ID, OTHER_RS_SECRET = "other-rs", "other-rs-secret-0123456789ab"
ADMIN_TOKEN = "admin-token-0123456789abcdef0123"
METRICS_TOKEN = "metrics-token-0123456789abcdef01"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
CHALLENGE = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="A stronger authentication is required", '
    'acr_values="urn:stepup:acr:mfa", max_age=300'
)


class ParFields(TypedDict, total=False):
    """The form fields of POST /par a test may set besides subject_token (README, Challenge
    intake); None leaves a field Stepup.par would send out of the request."""

    subject_token_type: str | None
    challenge: str | None
    acr_values: str | None
    max_age: str | None
    scope: str | None
    resource: str | None
    redirect_uri: str | None
    state: str | None
    response_type: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    dpop_jkt: str | None
    authorization_details: str | None
    request_uri: str | None  # RFC 9126 §2.1: never inside a pushed request; tests send it


class ScopeAndMaxAge(TypedDict):
    """Two ParFields, both always present: spread beside explicit fields
    (`par(token, code_challenge=…, **NO_REUSE)`), the type checker knows they name no other
    field, which it cannot know of a ParFields (every field optional)."""

    scope: str
    max_age: str


class TokenFields(TypedDict, total=False):
    """The form fields of POST /token (RFC 8693 §2.1) a test may set besides subject_token,
    code and code_verifier; None leaves a field Stepup.token would send out."""

    grant_type: str | None
    subject_token_type: str | None
    requested_token_type: str | None
    actor_token: str | None
    actor_token_type: str | None
    scope: str | None
    resource: str | None
    audience: str | None
    authorization_details: str | None


class Upstream:
    """The upstream IdP: a signing key whose JWKS stepup reads from a file."""

    def __init__(self, directory: Path, clock: FrozenClock) -> None:
        self.key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        self.clock = clock
        self.jwks_file = directory / "upstream-jwks.json"
        public = self.key.as_dict(private=False)
        self.jwks_file.write_text(json.dumps({"keys": [public]}))

    def token(
        self,
        sub: str = "alice",
        client_id: str = CLIENT_ID,
        *,
        aud: str | list[str] = API,
        age: int = 0,
        lifetime: int = 3600,
        header: dict[str, Any] | None = None,
        key: ECKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(self.clock.now()) - age
        body: dict[str, Any] = {
            "iss": ISSUER_UPSTREAM,
            "sub": sub,
            "aud": aud,
            "client_id": client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
            "scope": "payments:read",
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        signing_key = key or self.key
        head = {"alg": "ES256", "typ": "at+jwt", "kid": signing_key.kid}
        head.update(header or {})
        return jwt.encode(head, body, signing_key)


def policy_document(upstream: Upstream, data_dir: Path, **limits: Any) -> dict[str, Any]:
    return {
        "issuer": "http://localhost:8000",
        "server": {"data_dir": str(data_dir)},
        "limits": limits,
        "upstream": [
            {
                "issuer": ISSUER_UPSTREAM,
                "jwks_file": str(upstream.jwks_file),
                "audiences": [API, OTHER_API],
            }
        ],
        "clients": [
            {
                "client_id": CLIENT_ID,
                "name": "Example Bank",
                "secret_hash": hash_secret(CLIENT_SECRET),
                "redirect_uris": [REDIRECT],
                "scopes": ["payments:write", "keys:admin", "audit:read"],
                "resources": [API],
            },
            {
                "client_id": OTHER_ID,
                "name": "Example Shop",
                "secret_hash": hash_secret(OTHER_SECRET),
                "redirect_uris": ["http://localhost:9998/cb"],
                "scopes": ["payments:write"],
                "resources": [API, OTHER_API],
            },
        ],
        "resource_servers": [
            {
                "id": RS_ID,
                "name": "Payments API",
                "secret_hash": hash_secret(RS_SECRET),
                "resources": [API],
            },
            {
                "id": OTHER_RS_ID,
                "name": "Other API",
                "secret_hash": hash_secret(OTHER_RS_SECRET),
                "resources": [OTHER_API],
            },
        ],
        "authorization_details": DETAIL_TYPES,
        "admin": {"token_hash": hash_secret(ADMIN_TOKEN)},
        "metrics": {"token_hash": hash_secret(METRICS_TOKEN)},
        "scopes": {
            "payments:write": {
                "acr": "urn:stepup:acr:mfa",
                "description": "Send payments",
                "max_age": 300,
                "token_lifetime": 300,
            },
            "audit:read": {
                "acr": "urn:stepup:acr:mfa",
                "description": "Read the audit log",
                "max_age": 0,
                "token_lifetime": 120,
                "single_use": True,
            },
            "keys:admin": {
                "acr": "urn:stepup:acr:phr",
                "description": "Manage signing keys",
                "max_age": 60,
                "token_lifetime": 60,
            },
        },
    }


# RFC 9396 types of the test policy: a payment (amount, currency, payee) for payments:write,
# and an account-information type only the shop may send.
PAYMENT = "payment_initiation"
ACCOUNTS = "account_information"
DETAIL_TYPES: dict[str, Any] = {
    PAYMENT: {
        "description": "Pay {instructedAmount.amount} {instructedAmount.currency} to {creditorName}",
        "scopes": ["payments:write"],
        "required": ["instructedAmount", "creditorName"],
        "fields": {
            "creditorName": {"kind": "string", "max_length": 70, "label": "Payee"},
            "remittanceInformationUnstructured": {
                "kind": "string",
                "max_length": 140,
                "label": "Reference",
            },
            "actions": {"kind": "strings", "enum": ["initiate", "status"]},
            "locations": {"kind": "strings"},
            "instructedAmount": {
                "kind": "object",
                "required": ["amount", "currency"],
                "fields": {
                    "amount": {"kind": "decimal", "scale": 2, "max": "10000.00", "label": "Amount"},
                    "currency": {"kind": "currency", "enum": ["EUR", "USD"]},
                },
            },
        },
    },
    ACCOUNTS: {
        "description": "Read account {identifier}",
        "scopes": ["payments:write"],
        "clients": [OTHER_ID],
        "fields": {"identifier": {"kind": "string"}, "actions": {"kind": "strings"}},
    },
}


def payment(
    amount: str = "500.00", currency: str = "EUR", payee: str = "Bob's Bikes", **more: Any
) -> dict[str, Any]:
    """One payment_initiation detail."""
    return {
        "type": PAYMENT,
        "instructedAmount": {"amount": amount, "currency": currency},
        "creditorName": payee,
        **more,
    }


def make_config(upstream: Upstream, data_dir: Path, **limits: Any) -> Config:
    return parse(policy_document(upstream, data_dir, **limits), base_dir=data_dir)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no hidden field {name} in page"
    return match.group(1)


def manual_key(html: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', html)
    assert match, "no manual TOTP key on the page"
    return match.group(1).replace(" ", "")


@dataclass
class Stepup:
    """A running stepup and the pieces a test needs to drive it."""

    url: str
    config: Config
    clock: FrozenClock
    upstream: Upstream
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def browser(self) -> httpx.Client:
        """A separate cookie jar: one end user's browser."""
        return httpx.Client(base_url=self.url, timeout=10.0, follow_redirects=False)

    def par(
        self,
        subject_token: str | None = None,
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **fields: Unpack[ParFields],
    ) -> httpx.Response:
        _, challenge = pkce()
        body: ParFields = {
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "challenge": CHALLENGE,
            "scope": "payments:write",
            "resource": API,
            "redirect_uri": REDIRECT,
            "state": "st-" + secrets.token_hex(4),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        body.update(fields)
        return self.http.post(
            "/par",
            data={
                "subject_token": subject_token or self.upstream.token(),
                **{k: v for k, v in body.items() if v is not None},
            },
            auth=auth or (CLIENT_ID, CLIENT_SECRET),
            headers=headers,
        )

    def open_authorization(
        self, browser: httpx.Client, request_uri: str, client_id: str = CLIENT_ID
    ) -> httpx.Response:
        started = browser.get(
            "/authorize", params={"client_id": client_id, "request_uri": request_uri}
        )
        if started.status_code == 303 and started.headers["location"].startswith("/interaction/"):
            return browser.get(started.headers["location"])
        return started

    def totp_code(self, secret: str, offset_steps: int = 0) -> str:
        return pyotp.TOTP(secret).at(self.clock.now() + 30 * offset_steps)

    def token(
        self,
        code: str,
        verifier: str,
        subject_token: str | None = None,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **fields: Unpack[TokenFields],
    ) -> httpx.Response:
        body: TokenFields = {
            "grant_type": EXCHANGE,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        body.update(fields)
        return self.http.post(
            "/token",
            data={
                "subject_token": subject_token or self.upstream.token(),
                "code": code,
                "code_verifier": verifier,
                **{k: v for k, v in body.items() if v is not None},
            },
            auth=auth or (CLIENT_ID, CLIENT_SECRET),
            headers=headers,
        )

    def introspect(self, token: str, auth: tuple[str, str] = (RS_ID, RS_SECRET)) -> httpx.Response:
        return self.http.post("/introspect", data={"token": token}, auth=auth)

    def revoke(
        self, token: str, auth: tuple[str, str] = (CLIENT_ID, CLIENT_SECRET)
    ) -> httpx.Response:
        return self.http.post(
            "/revoke", data={"token": token, "token_type_hint": "access_token"}, auth=auth
        )

    def prove_totp(
        self, browser: httpx.Client, page: httpx.Response, secret: str | None = None
    ) -> httpx.Response:
        """Answers the verification page `page` with a TOTP code of `secret` (by default the
        key the page shows for enrolment) one time step later; returns the answer."""
        if secret is None:
            secret = manual_key(page.text)
        self.clock.advance(30)  # a fresh time step for each proof
        return browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": self.totp_code(secret),
            },
        )

    def step_up(
        self,
        browser: httpx.Client,
        secret: str | None = None,
        sub: str = "alice",
        *,
        subject_token: str | None = None,
        headers: dict[str, str] | None = None,
        **par_fields: Unpack[ParFields],
    ) -> tuple[dict[str, list[str]], str, str]:
        """Runs intake, the page (enrolling TOTP the first time), and returns
        (redirect query, code_verifier, totp secret)."""
        verifier, challenge = pkce()
        par_fields.setdefault("code_challenge", challenge)
        pushed = self.par(subject_token or self.upstream.token(sub), headers=headers, **par_fields)
        assert pushed.status_code == 201, pushed.text
        page = self.open_authorization(browser, pushed.json()["request_uri"])
        assert page.status_code == 200, page.text
        if secret is None:
            secret = manual_key(page.text)
        answer = self.prove_totp(browser, page, secret)
        assert answer.status_code == 303, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        return query, verifier, secret


def step_up_with(stepup: Stepup, sub: str, secret: str) -> httpx.Response:
    """A step-up (scope audit:read: never reused) of an enrolled user proving `secret`;
    returns the answer to the code POST."""
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token(sub), scope="audit:read")
        assert pushed.status_code == 201, pushed.text
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        assert page.status_code == 200, page.text
        assert 'id="totp-secret"' not in page.text, "a step-up for an enrolled user enrols again"
        return stepup.prove_totp(browser, page, secret)


def got_code(answer: httpx.Response) -> bool:
    """Whether a POST answer is the redirect to the client carrying a code."""
    if answer.status_code != 303:
        return False
    location = answer.headers["location"]
    return location.startswith(REDIRECT) and "code" in parse_qs(urlsplit(location).query)


@contextmanager
def running_stepup(
    config: Config,
    redis_url: str,
    clock: FrozenClock,
    upstream: Upstream,
    sock: socket.socket | None = None,
) -> Iterator[Stepup]:
    with LiveServer(create_app(config, redis_url=redis_url, clock=clock), sock=sock) as live:
        stepup = Stepup(live.url, config, clock, upstream)
        try:
            yield stepup
        finally:
            stepup.close()


def frozen_now() -> FrozenClock:
    return FrozenClock(float(int(time.time())))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_document(document: dict[str, Any]) -> str:
    """Writes a policy dict as TOML (scalars, lists of scalars, tables, arrays of tables)."""
    lines: list[str] = []

    def key(name: str) -> str:
        return name if _BARE_KEY.fullmatch(name) else json.dumps(name)

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item)  # JSON string escapes are valid TOML basic strings
        if isinstance(item, list):
            return "[" + ", ".join(value(i) for i in item) + "]"
        raise TypeError(f"cannot write {type(item).__name__} as TOML")

    def is_table_array(item: Any) -> bool:
        return isinstance(item, list) and bool(item) and all(isinstance(i, dict) for i in item)

    def emit(table: dict[str, Any], path: tuple[str, ...]) -> None:
        for name, item in table.items():
            if not isinstance(item, dict) and not is_table_array(item):
                lines.append(f"{key(name)} = {value(item)}")
        for name, item in table.items():
            header = ".".join((*path, key(name)))
            if isinstance(item, dict):
                lines.extend(("", f"[{header}]"))
                emit(item, (*path, key(name)))
            elif is_table_array(item):
                for entry in item:
                    lines.extend(("", f"[[{header}]]"))
                    emit(entry, (*path, key(name)))

    emit(document, ())
    return "\n".join(lines) + "\n"
