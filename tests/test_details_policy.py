"""Authorization details types (RFC 9396) in the policy file: what `stepup check` refuses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepup.config import ConfigError, parse
from tests.support.cli import stepup_cli
from tests.support.stepup import PAYMENT, Upstream, policy_document, toml_document

Edit = Callable[[dict[str, Any]], None]


def _payment(document: dict[str, Any]) -> dict[str, Any]:
    types: dict[str, Any] = document["authorization_details"]
    payment: dict[str, Any] = types[PAYMENT]
    return payment


def _set(path: str, value: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        table = _payment(document)
        *parents, last = path.split(".")
        for name in parents:
            table = table[name]
        table[last] = value

    return edit


def _delete(path: str) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        table = _payment(document)
        *parents, last = path.split(".")
        for name in parents:
            table = table[name]
        del table[last]

    return edit


BAD: dict[str, tuple[Edit, str]] = {
    "unknown key": (_set("surprise", 1), "unknown key 'surprise'"),
    "no description": (_delete("description"), "needs a description"),
    "no scopes": (_set("scopes", []), "needs scopes"),
    "unknown scope": (_set("scopes", ["nope:write"]), "scope 'nope:write' is not defined"),
    "unknown client": (_set("clients", ["nobody"]), "client 'nobody' is not defined"),
    "no fields": (_set("fields", {}), "needs [fields]"),
    "unknown kind": (
        _set("fields.remittanceInformationUnstructured.kind", "blob"),
        "kind must be one of",
    ),
    "option of another kind": (
        _set("fields.creditorName.scale", 2),
        "'scale' does not apply to kind 'string'",
    ),
    "max_length out of range": (_set("fields.creditorName.max_length", 0), "from 1 to 4096"),
    "max not a decimal string": (
        _set("fields.instructedAmount.fields.amount.max", 10000),
        "decimal number written as a string",
    ),
    "currency not ISO 4217 shaped": (
        _set("fields.instructedAmount.fields.currency.enum", ["euro"]),
        "three-letter ISO 4217",
    ),
    "required names no field": (_set("required", ["iban"]), "'iban' is not one of the fields"),
    "nested required names no field": (
        _set("fields.instructedAmount.required", ["amount", "rate"]),
        "'rate' is not one of the fields",
    ),
    "template names no field": (_set("description", "Pay {amount}"), "{amount} names no field"),
    "common field of the wrong kind": (
        _set("fields.locations", {"kind": "string"}),
        "RFC 9396 common field: its kind is 'strings'",
    ),
    "field named type": (_set("fields.type", {"kind": "string"}), "not 'type'"),
    "objects nested too deep": (
        _set(
            "fields.deep",
            {
                "kind": "object",
                "fields": {
                    "a": {"kind": "object", "fields": {"b": {"kind": "object", "fields": {}}}}
                },
            },
        ),
        "nest at most",
    ),
}


@pytest.fixture
def document(upstream: Upstream, tmp_path: Path) -> dict[str, Any]:
    return copy.deepcopy(policy_document(upstream, tmp_path / "data"))


def test_the_test_policy_types_load(document: dict[str, Any], tmp_path: Path) -> None:
    config = parse(document, base_dir=tmp_path)
    assert set(config.authorization_details) == {"payment_initiation", "account_information"}
    payment = config.authorization_details[PAYMENT]
    assert payment.scopes == ("payments:write",)
    assert payment.fields["instructedAmount"].fields["currency"].enum == ("EUR", "USD")


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_type_definition_is_refused(
    case: str, document: dict[str, Any], tmp_path: Path
) -> None:
    edit, fragment = BAD[case]
    edit(document)
    with pytest.raises(ConfigError) as refused:
        parse(document, base_dir=tmp_path)
    problems = refused.value.problems
    assert any(fragment in p and p.startswith("authorization_details") for p in problems), problems


def test_a_bad_type_name_is_refused(document: dict[str, Any], tmp_path: Path) -> None:
    document["authorization_details"]["pay ment"] = _payment(document)
    with pytest.raises(ConfigError) as refused:
        parse(document, base_dir=tmp_path)
    assert any("a type name is" in p for p in refused.value.problems)


def test_check_lists_every_type_problem_at_once(document: dict[str, Any], tmp_path: Path) -> None:
    for case in ("unknown key", "unknown scope", "unknown kind", "template names no field"):
        BAD[case][0](document)
    policy = tmp_path / "bad.toml"
    policy.write_text(toml_document(document))
    done = stepup_cli("check", str(policy))
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if line.startswith(f"{policy}: ")]
    for case in ("unknown key", "unknown scope", "unknown kind", "template names no field"):
        assert any(BAD[case][1] in p for p in problems), (case, problems)
    assert len(problems) == 4, problems
