"""The demo payments API: a resource server that asks for step-up before it moves money.

It is protected with the toolkit (`stepup.resource`) like any API would be: the user's
upstream token B is verified locally with the IdP's published keys (found through
discovery); a payment needs an elevated token E, checked by RFC 7662 introspection at stepup
(revocation bites at once), good for one request, and approved for this very payment: its
RFC 9396 `payment_initiation` details must name the amount, currency and payee, else the
answer is a 403 challenge for a new approval. The payment is read first and handed to the
guard (`ExpectedDetail`), so another payment is refused before the approval is spent.
Every token must be DPoP-bound and come with a proof by its key (RFC 9449 §7): Bearer is
refused outright, so a copied token is worth nothing without the key.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.clock import Clock, SystemClock
from stepup.demo.policy import (
    MAX_AMOUNT,
    MAX_PAYEE_LENGTH,
    PAYMENT_DETAILS_TYPE,
    PAYMENTS_READ,
    PAYMENTS_WRITE,
    DemoSettings,
)
from stepup.resource import (
    AccessToken,
    ExpectedDetail,
    Guard,
    ProtectedResource,
    Requirement,
    StepUpMiddleware,
    TrustedIssuer,
    access_token,
    authorize,
    requires,
)

log = logging.getLogger(__name__)

OPENING_BALANCE = Decimal("1250.00")
# The demo IdP's clock and ours are the same machine's, but a real RS allows some skew.
LEEWAY = 30
REALM = "Demo payments API"


def create_payments_api(
    settings: DemoSettings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    http = httpx.AsyncClient(transport=transport, timeout=10.0)
    guard = Guard(
        ProtectedResource(
            settings.api_base,
            [
                TrustedIssuer(
                    settings.stepup_issuer,
                    client_id=settings.resource_server_id,
                    client_secret=settings.resource_server_secret,
                ),
                TrustedIssuer(settings.idp_issuer),
            ],
            resource_name=settings.resource_server_name,
            realm=REALM,
            scopes_supported=(PAYMENTS_READ, PAYMENTS_WRITE),
            leeway=LEEWAY,
            # The demo issues bound tokens only (B by its IdP, E by stepup), so the API takes
            # nothing else and says so in its RFC 9728 metadata.
            dpop_bound_access_tokens_required=True,
            # Proofs name the URL the bank calls (`htu`), whatever address the server binds.
            dpop_origin=settings.api_base,
        ),
        clock=clock,
        http=http,
    )
    read = Requirement(PAYMENTS_READ)
    # Introspected (a revoked approval stops at once) and single use: one approval, one payment.
    write = Requirement(
        PAYMENTS_WRITE,
        acr=settings.payment_acr,
        max_age=settings.payment_max_age,
        introspect=True,
        single_use=True,
        description="A stronger authentication is required to send a payment",
    )
    api = _PaymentsApi(settings, clock or SystemClock(), write)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http.aclose()

    app = Starlette(
        routes=[
            Route("/balance", requires(read)(api.balance), methods=["GET"]),
            # Authorized inside, once the payment it is for has been read.
            Route("/payments", api.create_payment, methods=["POST"]),
        ],
        middleware=[Middleware(StepUpMiddleware, guard=guard)],
        lifespan=lifespan,
    )
    app.state.payments_api = api
    return app


class _Refusal(Exception):
    """A business refusal (the token was fine): a JSON error body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers={"Cache-Control": "no-store"},
        )


@dataclass
class _Payment:
    id: str
    sub: str
    amount: Decimal
    payee: str
    created_at: int
    acr: str | None
    auth_time: int | None
    # The RFC 7638 thumbprint of the key the approval was bound to and proven with.
    dpop_jkt: str | None

    def as_json(self, currency: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "amount": str(self.amount),
            "currency": currency,
            "payee": self.payee,
            "created_at": self.created_at,
            "acr": self.acr,
            "auth_time": self.auth_time,
            "dpop_jkt": self.dpop_jkt,
        }


class _PaymentsApi:
    def __init__(self, settings: DemoSettings, clock: Clock, write: Requirement) -> None:
        self.settings = settings
        self.clock = clock
        self.write = write
        self.accounts: dict[str, Decimal] = {}
        self.payments: list[_Payment] = []

    async def balance(self, request: Request) -> JSONResponse:
        caller = access_token(request)
        payments = [
            p.as_json(self.settings.currency) for p in self.payments if p.sub == caller.subject
        ]
        return JSONResponse(
            {
                "sub": caller.subject,
                "balance": str(self.accounts.get(caller.subject, OPENING_BALANCE)),
                "currency": self.settings.currency,
                "payments": payments[::-1],
            },
            headers={"Cache-Control": "no-store"},
        )

    async def create_payment(self, request: Request) -> JSONResponse:
        try:
            amount, payee = await _read_payment(request)
        except _Refusal as refusal:
            return refusal.response()
        # A refusal propagates to StepUpMiddleware, which answers it.
        caller = await authorize(request, self.write, transaction=self._transaction(amount, payee))
        try:
            payment = self._pay(caller, amount, payee)
        except _Refusal as refusal:
            return refusal.response()
        return JSONResponse(
            {
                **payment.as_json(self.settings.currency),
                "balance": str(self.accounts[caller.subject]),
            },
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    def _transaction(self, amount: Decimal, payee: str) -> ExpectedDetail:
        # RFC 9396: the elevation was approved for one payment (amount, currency, payee) and
        # is good for that one only; any other is answered with a challenge for a new one,
        # checked by the guard before the single-use approval is spent.
        return ExpectedDetail(
            PAYMENT_DETAILS_TYPE,
            description="This payment is not the one that was approved",
            instructedAmount={"amount": amount, "currency": self.settings.currency},
            creditorName=payee,
        )

    def _pay(self, caller: AccessToken, amount: Decimal, payee: str) -> _Payment:
        now = int(self.clock.now())
        # No await between the check and the write: in one event loop they are atomic.
        balance = self.accounts.get(caller.subject, OPENING_BALANCE)
        if amount > balance:
            raise _Refusal(422, "insufficient_funds", "The balance is too low for this payment")
        self.accounts[caller.subject] = balance - amount
        payment = _Payment(
            id="pay_" + secrets.token_urlsafe(9),
            sub=caller.subject,
            amount=amount,
            payee=payee,
            created_at=now,
            acr=caller.acr,
            auth_time=caller.auth_time,
            dpop_jkt=_bound_key(caller),
        )
        self.payments.append(payment)
        log.info("payment %s of %s to %r for %s", payment.id, amount, payee, caller.subject)
        return payment


def _bound_key(token: AccessToken) -> str | None:
    # The guard has checked the proof against it: the key the approval is bound to.
    cnf = token.claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None


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
