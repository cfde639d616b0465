"""Transaction binding at the resource (RFC 9396): does the request being served match what
the user approved in the token's `authorization_details`?

    payment = ExpectedDetail("payment_initiation",
                             instructedAmount={"amount": amount, "currency": "EUR"},
                             creditorName=payee)
    caller = await authorize(request, write, transaction=payment)

Amounts compare as decimals ("500" is "500.00"), strings exactly, nested objects field by
field, and an expected list is a subset of the approved one. A mismatch is a 403 challenge
the client answers with a new step-up for this transaction. Handed to the guard, the check
runs before a single-use token is spent; `require_detail` checks a token already accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from stepup.resource.refusals import Param, Refusal
from stepup.resource.requirement import Requirement
from stepup.resource.tokens import AccessToken

_NOT_APPROVED = "This request is not the one that was approved"


class InsufficientAuthorizationDetails(Refusal):
    """The token is good, but not for this transaction.

    RFC 9396 registers no resource-server error code; this one follows the pattern of
    RFC 6750's `insufficient_scope` (403: the token lacks a permission, a new grant helps) and
    carries the step-up parameters (`acr_values`, `max_age`, `scope`) so the client can push
    the challenge to stepup together with the details of the transaction it attempts.
    """

    status = 403
    error = "insufficient_authorization_details"


def find_detail(
    token: AccessToken, detail_type: str, expected: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The first approved detail of `detail_type` whose fields match `expected`, or None."""
    approved = token.claims.get("authorization_details")
    if not isinstance(approved, list):
        return None
    for detail in approved:
        if (
            isinstance(detail, dict)
            and detail.get("type") == detail_type
            and _matches(detail, expected)
        ):
            return detail
    return None


@dataclass(frozen=True, init=False)
class ExpectedDetail:
    """The transaction one request is: an approved detail of `detail_type` whose fields
    match `expected` (compared as `find_detail` does).

    Given to `authorize(..., transaction=...)`, the guard checks it wherever it checks the
    route's requirement: before a single-use token is spent, and on the token as verified
    or introspected. `description`: the `error_description` of the refusal.
    """

    detail_type: str
    expected: Mapping[str, Any]
    description: str

    def __init__(
        self, detail_type: str, /, *, description: str = _NOT_APPROVED, **expected: Any
    ) -> None:
        object.__setattr__(self, "detail_type", detail_type)
        object.__setattr__(self, "expected", expected)
        object.__setattr__(self, "description", description)

    def approved_in(
        self, token: AccessToken, requirement: Requirement | None = None
    ) -> Mapping[str, Any]:
        """The approved detail this request is within, or raises
        `InsufficientAuthorizationDetails` carrying `requirement`'s step-up parameters."""
        detail = find_detail(token, self.detail_type, self.expected)
        if detail is not None:
            return detail
        params: list[Param] = requirement.step_up_params() if requirement is not None else []
        raise InsufficientAuthorizationDetails(
            self.description,
            detail=f"no approved {self.detail_type!r} detail matches",
            params=params,
        )


def require_detail(
    token: AccessToken,
    detail_type: str,
    /,
    *,
    requirement: Requirement | None = None,
    description: str = _NOT_APPROVED,
    **expected: Any,
) -> Mapping[str, Any]:
    """The approved detail this request is within, or raises `InsufficientAuthorizationDetails`
    (the middleware answers it; outside one, `guard.answer(refusal)` renders it).

    On a token the guard already accepted: a single-use one is spent by then, so a route
    that knows its transaction before it authorizes gives the guard an `ExpectedDetail`."""
    return ExpectedDetail(detail_type, description=description, **expected).approved_in(
        token, requirement
    )


def _matches(approved: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    return all(name in approved and _same(approved[name], want) for name, want in expected.items())


def _same(approved: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        return isinstance(approved, Mapping) and _matches(approved, want)
    if isinstance(want, Decimal | int | float) and not isinstance(want, bool):
        return _same_amount(approved, Decimal(str(want)))
    if isinstance(want, Sequence) and not isinstance(want, str):
        return isinstance(approved, list) and all(
            any(_same(item, w) for item in approved) for w in want
        )
    return type(approved) is type(want) and bool(approved == want)


def _same_amount(approved: Any, want: Decimal) -> bool:
    # Amounts travel as strings (RFC 9396's examples, and no float rounding on the way).
    if isinstance(approved, bool) or not isinstance(approved, str | int):
        return False
    try:
        value = Decimal(str(approved))
    except InvalidOperation:
        return False
    return value.is_finite() and want.is_finite() and value == want
