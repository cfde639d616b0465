"""stepup.details on its own: the plain words, and the narrowing rule when the policy changed
between approval and exchange (nothing the client sends may turn into a 500 or a wider token)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from stepup.config import Config
from stepup.details import FieldSpec, describe, narrowed
from stepup.resource import AccessToken, find_detail
from tests.support.stepup import PAYMENT, payment


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
