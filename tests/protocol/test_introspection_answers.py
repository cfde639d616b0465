"""introspection.Answers, the remembered answers by record bytes, on its own: what a hit
returns, that it is the answer the record gives, and its bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stepup import models
from stepup.models import Elevation
from stepup.protocol.introspection import Answers, active_answer
from stepup.storage.redis import dump_compact

BASE: dict[str, Any] = {
    "jti": "j-1",
    "iss": "https://stepup.example",
    "sub": "alice",
    "client_id": "bank",
    "aud": "https://api.example",
    "scope": "payments:write",
    "acr": "urn:stepup:acr:mfa",
    "amr": ["otp"],
    "auth_time": 1_700_000_000,
    "iat": 1_700_000_010,
    "exp": 1_700_000_310,
}


def record(**changes: Any) -> bytes:
    return dump_compact(Elevation(**{**BASE, **changes}))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"single_use": True},
        {"cnf_jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
        {"authorization_details": [{"type": "payment", "amount": "25.00"}]},
    ],
    ids=["plain", "single-use", "dpop", "details"],
)
def test_the_answer_is_the_records_answer(changes: dict[str, Any]) -> None:
    raw = record(**changes)
    elevation, answer = Answers().of(raw)
    assert elevation == models.load(Elevation, raw)
    assert orjson.loads(answer) == active_answer(models.load(Elevation, raw))
    body = orjson.loads(answer)
    assert body["active"] is True
    assert body["token_type"] == ("DPoP" if "cnf_jkt" in changes else "Bearer")
    assert body.get("single_use", False) is bool(changes.get("single_use"))
    assert ("cnf" in body) is ("cnf_jkt" in changes)
    assert ("authorization_details" in body) is ("authorization_details" in changes)


def test_a_hit_returns_what_the_first_read_made() -> None:
    answers = Answers()
    first = answers.of(record())
    again = answers.of(record())  # equal bytes, another object, as each GET returns
    assert again[0] is first[0] and again[1] is first[1]
    assert len(answers) == 1


def test_other_bytes_are_another_answer() -> None:
    answers = Answers()
    one = answers.of(record())
    other = answers.of(record(exp=BASE["exp"] + 1))
    assert other[0].exp == one[0].exp + 1
    assert orjson.loads(other[1])["exp"] == BASE["exp"] + 1
    assert len(answers) == 2


def test_a_record_with_a_field_from_a_newer_version_reads() -> None:
    raw = orjson.dumps({**BASE, "added_later": 1})
    elevation, answer = Answers().of(raw)
    assert elevation.jti == "j-1"
    assert "added_later" not in orjson.loads(answer)


def test_bounded_the_least_recently_used_goes() -> None:
    answers = Answers(size=2)
    a, b, c = (record(jti=name) for name in ("a", "b", "c"))
    first_a, first_b = answers.of(a), answers.of(b)
    assert answers.of(a) is first_a  # a is now the most recent
    first_c = answers.of(c)  # b goes
    assert len(answers) == 2
    assert answers.of(a) is first_a
    assert answers.of(b) is not first_b  # read again; c, now the oldest, goes
    assert answers.of(a) is first_a
    assert answers.of(c) is not first_c


def test_a_record_that_is_not_json_is_an_error_not_an_answer() -> None:
    answers = Answers()
    with pytest.raises(orjson.JSONDecodeError):
        answers.of(b"not json")
    assert len(answers) == 0
