"""stepup.details on its own: the plain words, and the narrowing rule when the policy changed
between approval and exchange (nothing the client sends may turn into a 500 or a wider token)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from stepup.config import ACR_MFA, Config
from stepup.details import FieldSpec, describe, narrowed
from stepup.protocol.challenge import parse_www_authenticate, step_up_requirement
from stepup.resource import (
    AccessToken,
    ExpectedDetail,
    InsufficientAuthorizationDetails,
    Requirement,
    find_detail,
    require_detail,
)
from tests.support.stepup import ACCOUNTS, PAYMENT, payment


def test_the_sentence_fills_in_fields_and_marks_missing_ones(config: Config) -> None:
    shown = describe(payment("12.00", "USD", "Corner Shop"), config.authorization_details)
    assert shown.summary == "Pay 12.00 USD to Corner Shop"
    assert ("Payee", "Corner Shop") in shown.rows
    partial = describe({"type": PAYMENT, "creditorName": "X"}, config.authorization_details)
    assert partial.summary == "Pay — — to X"


def test_a_type_the_policy_no_longer_has_is_still_shown_whole(config: Config) -> None:
    shown = describe({"type": "gone", "amount": "5", "to": {"iban": "DE00"}}, {})
    assert shown.summary == "Details of type gone"
    assert shown.rows == (("amount", '"5"'), ("to", '{"iban": "DE00"}'))


def test_narrowing_compares_decimals_by_value_and_lists_as_sets(config: Config) -> None:
    types = config.authorization_details
    approved = [payment("500.00", actions=["initiate", "status"])]
    assert narrowed([payment("500", actions=["status"])], approved, types)
    assert not narrowed([payment("500.01", actions=["status"])], approved, types)
    assert not narrowed([payment("500.00")], approved, types)


def test_a_field_whose_kind_changed_since_approval_passes_only_unchanged(config: Config) -> None:
    payment_type = config.authorization_details[PAYMENT]
    fields = dict(payment_type.fields)
    fields["creditorName"] = FieldSpec("decimal")  # a string when the user approved it
    types = {PAYMENT: replace(payment_type, fields=fields)}
    approved = [payment(payee="Bob")]
    assert narrowed([payment(payee="Bob")], approved, types)
    assert not narrowed([payment(payee="Bob ")], approved, types)
    assert not narrowed([{**payment(payee="Bob"), "creditorName": ["Bob"]}], approved, types)


def test_a_value_of_another_shape_than_the_policy_says_is_shown_as_it_is(config: Config) -> None:
    shown = describe(
        {**payment(), "instructedAmount": ["500", "EUR"]}, config.authorization_details
    )
    assert ("instructedAmount", '["500", "EUR"]') in shown.rows


def test_a_placeholder_written_in_a_value_is_shown_as_written(config: Config) -> None:
    # The sentence is filled in once: a payee naming a field (or template syntax) stays text.
    shown = describe(
        payment("5.00", payee="{instructedAmount.amount} {{ 7*7 }}"), config.authorization_details
    )
    assert shown.summary == "Pay 5.00 EUR to {instructedAmount.amount} {{ 7*7 }}"


def test_two_approved_payments_alike_may_both_be_asked_for_again(config: Config) -> None:
    # Each approved detail stands for one requested detail: two shown, two may be carried.
    types = config.authorization_details
    assert narrowed([payment(), payment()], [payment(), payment()], types)
    assert not narrowed([payment(), payment(), payment()], [payment(), payment()], types)
    # Not greedy: ["initiate"] fits either approved detail, ["status"] only the first, so
    # taking the first for ["initiate"] would wrongly refuse.
    approved = [payment(actions=["initiate", "status"]), payment(actions=["initiate"])]
    asked = [payment(actions=["initiate"]), payment(actions=["status"])]
    assert narrowed(asked, approved, types)


def _token(details: object) -> AccessToken:
    return AccessToken(
        issuer="https://stepup.example",
        subject="alice",
        client_id="bank",
        audience=("https://api.example",),
        scopes=frozenset({"payments:write"}),
        acr=None,
        amr=(),
        auth_time=None,
        issued_at=None,
        expires_at=2_000_000_000,
        jti="j",
        claims={"authorization_details": details},
        introspected=False,
    )


@pytest.mark.parametrize(
    ("want", "matches"),
    [
        (Decimal("500"), True),
        (Decimal("500.00"), True),
        (Decimal("5E2"), True),
        (Decimal("0500"), True),
        (500, True),
        (500.0, True),
        (Decimal("500.001"), False),
        (Decimal("-500"), False),
        (Decimal("NaN"), False),
        (Decimal("Infinity"), False),
        (float("nan"), False),
        (True, False),
        ("500", False),  # a string compares as a string: the route must say it is an amount
        ("500.00", True),
        ("0500.00", False),
    ],
)
def test_the_toolkit_compares_amounts_by_value_only_when_given_a_number(
    want: object, matches: bool
) -> None:
    token = _token([payment("500.00")])
    found = find_detail(token, PAYMENT, {"instructedAmount": {"amount": want}})
    assert (found is not None) is matches


def test_the_toolkit_refuses_a_token_without_details_for_any_expected_payment() -> None:
    for claims in ([], None, "x", [None, "x", 5]):
        token = _token(claims)
        assert find_detail(token, PAYMENT, {}) is None


WRITE = Requirement("payments:write", acr=ACR_MFA, max_age=300)


def expected_payment(amount: str, payee: str = "Bob's Bikes") -> ExpectedDetail:
    return ExpectedDetail(
        PAYMENT, instructedAmount={"amount": Decimal(amount), "currency": "EUR"}, creditorName=payee
    )


def test_an_expected_detail_answers_the_approved_detail_it_is_within() -> None:
    token = _token([payment("12.00", payee="Corner Shop"), payment("500.00")])
    assert expected_payment("500").approved_in(token, WRITE) == payment("500.00")
    assert expected_payment("12", "Corner Shop").approved_in(token) == payment(
        "12.00", payee="Corner Shop"
    )


@pytest.mark.parametrize(
    "expected",
    [
        expected_payment("500.01"),
        expected_payment("500.00", "Mallory"),
        ExpectedDetail(ACCOUNTS),
        ExpectedDetail(PAYMENT, instructedAmount={"amount": Decimal(500), "currency": "USD"}),
    ],
    ids=["a cent more", "another payee", "another type", "another currency"],
)
def test_an_expected_detail_not_approved_is_refused_with_the_step_up_parameters(
    expected: ExpectedDetail,
) -> None:
    token = _token([payment("500.00")])
    with pytest.raises(InsufficientAuthorizationDetails) as refused:
        expected.approved_in(token, WRITE)
    answer = refused.value.answer("payments", "https://api.example/.well-known/x")
    assert answer.status == 403
    assert json.loads(answer.body) == {
        "error": "insufficient_authorization_details",
        "error_description": "This request is not the one that was approved",
    }
    requirement = step_up_requirement(parse_www_authenticate(answer.headers["WWW-Authenticate"]))
    assert requirement.error == "insufficient_authorization_details"
    assert requirement.acr_values == (ACR_MFA,)
    assert (requirement.max_age, requirement.scope) == (300, ("payments:write",))


def test_the_refusal_says_the_routes_description_and_without_a_requirement_no_step_up() -> None:
    expected = ExpectedDetail(
        PAYMENT, description="This payment is not the one approved", creditorName="Mallory"
    )
    with pytest.raises(InsufficientAuthorizationDetails) as refused:
        expected.approved_in(_token([payment("500.00")]))
    assert refused.value.description == "This payment is not the one approved"
    assert refused.value.params == ()


def test_require_detail_is_an_expected_detail_checked_on_the_token() -> None:
    token = _token([payment("500.00")])
    amount = {"amount": Decimal("500"), "currency": "EUR"}
    assert require_detail(token, PAYMENT, instructedAmount=amount) == payment("500.00")
    with pytest.raises(InsufficientAuthorizationDetails) as refused:
        require_detail(token, PAYMENT, requirement=WRITE, creditorName="Mallory")
    assert refused.value.params == tuple(WRITE.step_up_params())
