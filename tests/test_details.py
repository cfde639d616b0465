"""stepup.details on its own: the plain words, and the narrowing rule when the policy changed
between approval and exchange (nothing the client sends may turn into a 500 or a wider token)."""

from __future__ import annotations

from dataclasses import replace

from stepup.config import Config
from stepup.details import FieldSpec, describe, narrowed
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
