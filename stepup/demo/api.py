"""The demo payments API: a resource server that asks for step-up before it moves money.

It speaks only HTTP to its peers. The user's upstream token B is verified locally with the
IdP's published keys (found through discovery); an elevated token E is checked by RFC 7662
introspection at stepup, which is what makes revocation take effect at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote_plus

import httpx
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.clock import Clock, SystemClock
from stepup.config import ACR_MFA, ACR_PHR, ACR_PHRH
from stepup.demo.policy import PAYMENTS_READ, PAYMENTS_WRITE, DemoSettings
from stepup.protocol.challenge import build_challenge

log = logging.getLogger(__name__)

OPENING_BALANCE = Decimal("1250.00")
MAX_AMOUNT = Decimal("10000.00")
MAX_PAYEE_LENGTH = 70
# The demo IdP's clock and ours are the same machine's, but a real RS allows some skew.
LEEWAY = 30
# How often an unknown `kid` may trigger a JWKS refetch (an attacker picks the kid).
JWKS_REFRESH_INTERVAL = 30.0
# Stronger levels satisfy weaker ones (the default ladder in the stepup policy).
ACR_LADDER = (ACR_MFA, ACR_PHR, ACR_PHRH)
REALM = "Demo payments API"
# RFC 9396 type the demo client uses to approve one payment (the RFC's own example type).
PAYMENT_DETAILS_TYPE = "payment_initiation"


def create_payments_api(
    settings: DemoSettings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    api = _PaymentsApi(settings, clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:
            api.http = http
            yield
            api.http = None

    app = Starlette(
        routes=[
            Route("/balance", api.balance, methods=["GET"]),
            Route("/payments", api.create_payment, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.payments_api = api
    return app


class _Refusal(Exception):
    """An answer other than success: a JSON error body, maybe with a challenge header."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers={**self.headers, "Cache-Control": "no-store"},
        )


@dataclass(frozen=True)
class _Caller:
    sub: str
    scopes: frozenset[str]
    elevated: bool
    acr: str | None = None
    auth_time: int | None = None
    exp: int | None = None
    authorization_details: Any = None


@dataclass
class _Payment:
    id: str
    sub: str
    amount: Decimal
    payee: str
    created_at: int
    acr: str | None
    auth_time: int | None

    def as_json(self, currency: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "amount": str(self.amount),
            "currency": currency,
            "payee": self.payee,
            "created_at": self.created_at,
            "acr": self.acr,
            "auth_time": self.auth_time,
        }


class _PaymentsApi:
    def __init__(self, settings: DemoSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.http: httpx.AsyncClient | None = None
        self.accounts: dict[str, Decimal] = {}
        self.payments: list[_Payment] = []
        # One elevation, one payment: a token that paid once is not accepted again.
        self.spent: dict[str, int] = {}
        self._idp_keys: KeySet | None = None
        self._idp_keys_fetched = float("-inf")
        self._stepup_metadata: dict[str, Any] | None = None

    # -- routes --------------------------------------------------------------------------

    async def balance(self, request: Request) -> JSONResponse:
        try:
            caller = await self._authenticate(request)
            if caller is None:
                raise _Refusal(
                    401, "invalid_request", "No access token", self._challenge([("realm", REALM)])
                )
            if not caller.scopes & {PAYMENTS_READ, PAYMENTS_WRITE}:
                raise _Refusal(
                    403,
                    "insufficient_scope",
                    "Reading the balance needs payments:read",
                    self._challenge([("error", "insufficient_scope"), ("scope", PAYMENTS_READ)]),
                )
        except _Refusal as refusal:
            return refusal.response()
        payments = [p.as_json(self.settings.currency) for p in self.payments if p.sub == caller.sub]
        return JSONResponse(
            {
                "sub": caller.sub,
                "balance": str(self.accounts.get(caller.sub, OPENING_BALANCE)),
                "currency": self.settings.currency,
                "payments": payments[::-1],
            },
            headers={"Cache-Control": "no-store"},
        )

    async def create_payment(self, request: Request) -> JSONResponse:
        try:
            caller = self._require_step_up(await self._authenticate(request))
            amount, payee = await _read_payment(request)
            self._check_transaction(caller, amount, payee)
            payment = self._pay(caller, amount, payee, _token_of(request) or "")
        except _Refusal as refusal:
            return refusal.response()
        return JSONResponse(
            {**payment.as_json(self.settings.currency), "balance": str(self.accounts[caller.sub])},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    # -- what a payment needs ------------------------------------------------------------

    def _step_up_challenge(self) -> dict[str, str]:
        return self._challenge(
            [
                ("error", "insufficient_user_authentication"),
                ("error_description", "A stronger authentication is required to send a payment"),
                ("acr_values", self.settings.payment_acr),
                ("max_age", self.settings.payment_max_age),
            ]
        )

    def _require_step_up(self, caller: _Caller | None) -> _Caller:
        # RFC 9470 §3: any token short of a recent elevation gets the step-up challenge.
        # (Deliberately also with no token at all, so the demo shows the challenge to curl.)
        if caller is None or not caller.elevated:
            raise _Refusal(
                401,
                "insufficient_user_authentication",
                "A stronger authentication is required to send a payment",
                self._step_up_challenge(),
            )
        if PAYMENTS_WRITE not in caller.scopes:
            # RFC 6750 §3.1: the token is good but lacks the scope.
            raise _Refusal(
                403,
                "insufficient_scope",
                f"Sending a payment needs {PAYMENTS_WRITE}",
                self._challenge([("error", "insufficient_scope"), ("scope", PAYMENTS_WRITE)]),
            )
        if not self._level_met(caller.acr):
            raise _Refusal(
                401,
                "insufficient_user_authentication",
                "The authentication level is too low",
                self._step_up_challenge(),
            )
        now = int(self.clock.now())
        if caller.auth_time is None or now - caller.auth_time > self.settings.payment_max_age:
            raise _Refusal(
                401,
                "insufficient_user_authentication",
                "A more recent authentication is required",
                self._step_up_challenge(),
            )
        return caller

    def _level_met(self, acr: str | None) -> bool:
        required = self.settings.payment_acr
        if acr == required:
            return True
        if acr not in ACR_LADDER or required not in ACR_LADDER:
            return False
        return ACR_LADDER.index(acr) >= ACR_LADDER.index(required)

    def _check_transaction(self, caller: _Caller, amount: Decimal, payee: str) -> None:
        # RFC 9396: an elevation approved for one transaction is good for that one only.
        details = caller.authorization_details
        if not isinstance(details, list):
            return
        approved = [
            d for d in details if isinstance(d, dict) and d.get("type") == PAYMENT_DETAILS_TYPE
        ]
        if not approved:
            return
        for detail in approved:
            instructed = detail.get("instructedAmount")
            if not isinstance(instructed, dict):
                continue
            try:
                approved_amount = Decimal(str(instructed.get("amount")))
            except InvalidOperation:
                continue
            if (
                approved_amount == amount
                and instructed.get("currency") == self.settings.currency
                and detail.get("creditorName") == payee
            ):
                return
        raise _Refusal(403, "payment_not_approved", "This payment is not the one that was approved")

    def _pay(self, caller: _Caller, amount: Decimal, payee: str, token: str) -> _Payment:
        now = int(self.clock.now())
        # No await between the checks and the writes below: in one event loop they are atomic.
        self.spent = {k: exp for k, exp in self.spent.items() if exp > now}
        fingerprint = hashlib.sha256(token.encode()).hexdigest()
        if fingerprint in self.spent:
            raise _Refusal(
                401,
                "insufficient_user_authentication",
                "This approval was already used for a payment",
                self._step_up_challenge(),
            )
        balance = self.accounts.get(caller.sub, OPENING_BALANCE)
        if amount > balance:
            raise _Refusal(422, "insufficient_funds", "The balance is too low for this payment")
        self.spent[fingerprint] = caller.exp or now + self.settings.payment_max_age
        self.accounts[caller.sub] = balance - amount
        payment = _Payment(
            id="pay_" + secrets.token_urlsafe(9),
            sub=caller.sub,
            amount=amount,
            payee=payee,
            created_at=now,
            acr=caller.acr,
            auth_time=caller.auth_time,
        )
        self.payments.append(payment)
        log.info("payment %s of %s to %r for %s", payment.id, amount, payee, caller.sub)
        return payment

    # -- who is calling ------------------------------------------------------------------

    async def _authenticate(self, request: Request) -> _Caller | None:
        token = _token_of(request)
        if token is None:
            return None
        # The unverified `iss` only picks the verifier; each verifier then checks everything.
        if _unverified_issuer(token) == self.settings.idp_issuer:
            return await self._verify_upstream_token(token)
        return await self._introspect(token)

    async def _verify_upstream_token(self, token: str) -> _Caller:
        try:
            try:
                parsed = jwt.decode(token, await self._keys(refresh=False), algorithms=["ES256"])
            except InvalidKeyIdError:
                # The IdP may have rotated its key since we last fetched the JWKS.
                parsed = jwt.decode(token, await self._keys(refresh=True), algorithms=["ES256"])
            # RFC 9068 §4: the typ header tells an access token from an ID token.
            if str(parsed.header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
                raise _invalid_token("The access token is not an RFC 9068 access token")
            jwt.JWTClaimsRegistry(
                now=int(self.clock.now()),
                leeway=LEEWAY,
                iss={"essential": True, "value": self.settings.idp_issuer},
                aud={"essential": True, "value": self.settings.api_base},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(parsed.claims)
        except ExpiredTokenError:
            raise _invalid_token("The access token expired") from None
        except (JoseError, ValueError, TypeError) as exc:
            log.info("upstream token refused: %s", exc)
            raise _invalid_token("The access token is not valid") from None
        claims = parsed.claims
        scope = claims.get("scope")
        return _Caller(
            sub=str(claims["sub"]),
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            elevated=False,
            exp=int(claims["exp"]),
        )

    async def _introspect(self, token: str) -> _Caller:
        metadata = await self._metadata()
        endpoint = metadata.get("introspection_endpoint")
        if not isinstance(endpoint, str):
            log.error("stepup metadata names no introspection_endpoint")
            raise _unavailable()
        try:
            response = await self._client().post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={
                    "Authorization": _basic(
                        self.settings.resource_server_id, self.settings.resource_server_secret
                    ),
                    "Accept": "application/json",
                },
            )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("introspection failed: %s", exc)
            raise _unavailable() from None
        if not isinstance(body, dict):
            log.warning("introspection answered %s", response.status_code)
            raise _unavailable()
        return self._caller_from_introspection(body)

    def _caller_from_introspection(self, body: dict[str, Any]) -> _Caller:
        # RFC 7662 §2.2: anything but a literal `true` is inactive.
        if body.get("active") is not True:
            raise _invalid_token("The access token is not active")
        issuer = body.get("iss")
        if issuer is not None and issuer != self.settings.stepup_issuer:
            raise _invalid_token("The access token is not from stepup")
        audience = body.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.settings.api_base not in audiences:
            raise _invalid_token("The access token is not for this API")
        exp = _seconds(body.get("exp"))
        now = int(self.clock.now())
        if exp is None or exp <= now:
            # A TTL-backed record is not a security boundary: check exp ourselves too.
            raise _invalid_token("The access token expired")
        sub = body.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _invalid_token("The access token names no subject")
        scope = body.get("scope")
        acr = body.get("acr")
        return _Caller(
            sub=sub,
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            elevated=True,
            acr=acr if isinstance(acr, str) else None,
            auth_time=_seconds(body.get("auth_time")),
            exp=exp,
            authorization_details=body.get("authorization_details"),
        )

    # -- peers ---------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the payments API is used outside its lifespan")
        return self.http

    async def _keys(self, *, refresh: bool) -> KeySet:
        now = self.clock.now()
        stale = refresh and now - self._idp_keys_fetched >= JWKS_REFRESH_INTERVAL
        if self._idp_keys is not None and not stale:
            return self._idp_keys
        issuer = self.settings.idp_issuer
        try:
            # OpenID Connect Discovery §4.3: the document must name the issuer we asked.
            discovery = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if discovery.get("issuer") != issuer or not isinstance(discovery.get("jwks_uri"), str):
                raise ValueError("discovery document does not match the issuer")
            keys = KeySet.import_key_set(await self._get_json(discovery["jwks_uri"]))  # type: ignore[arg-type]
        except (httpx.HTTPError, ValueError, TypeError, JoseError) as exc:
            log.warning("cannot fetch the IdP keys: %s", exc)
            if self._idp_keys is not None:
                return self._idp_keys
            raise _unavailable() from None
        self._idp_keys, self._idp_keys_fetched = keys, now
        return keys

    async def _metadata(self) -> dict[str, Any]:
        if self._stepup_metadata is None:
            issuer = self.settings.stepup_issuer
            try:
                document = await self._get_json(f"{issuer}/.well-known/oauth-authorization-server")
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("cannot fetch stepup metadata: %s", exc)
                raise _unavailable() from None
            # RFC 8414 §3.3: the issuer in the document must be the one we asked for.
            if document.get("issuer") != issuer:
                log.error("stepup metadata names issuer %r", document.get("issuer"))
                raise _unavailable()
            self._stepup_metadata = document
        return self._stepup_metadata

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._client().get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} is not a JSON object")
        return document

    def _challenge(self, params: list[tuple[str, str | int]]) -> dict[str, str]:
        return {"WWW-Authenticate": build_challenge("Bearer", params)}


def _token_of(request: Request) -> str | None:
    # RFC 6750 §2.1: the scheme name is case-insensitive; only the header method is accepted.
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _unverified_issuer(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


def _seconds(value: object) -> int | None:
    # RFC 7662 §2.2: NumericDate; JSON may give it as an integer or a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) else None


def _basic(user: str, secret: str) -> str:
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    raw = f"{quote_plus(user)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _invalid_token(description: str) -> _Refusal:
    challenge = build_challenge(
        "Bearer", [("error", "invalid_token"), ("error_description", description)]
    )
    return _Refusal(401, "invalid_token", description, {"WWW-Authenticate": challenge})


def _unavailable() -> _Refusal:
    return _Refusal(
        503,
        "temporarily_unavailable",
        "The payments API cannot check tokens right now",
        {"Retry-After": "5"},
    )


async def _read_payment(request: Request) -> tuple[Decimal, str]:
    fields: Mapping[str, Any]
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
            fields = body
        else:
            fields = dict(await request.form())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refusal(
            400, "invalid_request", "The payment is not valid JSON or form data"
        ) from exc
    amount = parse_amount(fields.get("amount"))
    if amount is None:
        raise _Refusal(
            400,
            "invalid_request",
            f"The amount must be a positive number with at most two decimals, up to {MAX_AMOUNT}",
        )
    payee = parse_payee(fields.get("payee"))
    if payee is None:
        raise _Refusal(
            400,
            "invalid_request",
            f"The payee must be 1 to {MAX_PAYEE_LENGTH} printable characters",
        )
    return amount, payee


def parse_amount(value: object) -> Decimal | None:
    """A payment amount as the API accepts it, or None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    if not text or len(text) > 20:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        return None
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        return None
    return amount.quantize(Decimal("0.01"))


def parse_payee(value: object) -> str | None:
    """A payee name as the API accepts it, or None."""
    if not isinstance(value, str):
        return None
    payee = " ".join(value.split())
    if not payee or len(payee) > MAX_PAYEE_LENGTH or not payee.isprintable():
        return None
    return payee
