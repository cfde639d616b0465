"""Recovery codes: 80-bit look-up secrets, forgiving to type, hashed with a salted scrypt,
and spent atomically in Redis."""

from __future__ import annotations

import asyncio
import re

import pytest

from stepup.config import DEFAULT_LEVELS
from stepup.factors import recovery
from stepup.models import Factor
from stepup.storage import keys
from stepup.storage.redis import RedisStore, connect

MFA, PHR, PHRH = DEFAULT_LEVELS.values()


def test_a_code_carries_at_least_80_bits_in_four_groups() -> None:
    code = recovery.new_codes(1)[0]
    assert re.fullmatch(r"[0-9a-z]{4}(-[0-9a-z]{4}){3}", code)
    symbols = code.replace("-", "")
    assert set(symbols) <= set(recovery.ALPHABET) and len(recovery.ALPHABET) == 32
    assert len(symbols) * 5 >= 80  # NIST SP 800-63B §5.1.2.1: at least 64 bits


def test_codes_are_distinct_and_use_the_whole_alphabet() -> None:
    codes = recovery.new_codes(500)
    assert len(set(codes)) == 500
    assert set("".join(codes).replace("-", "")) == set(recovery.ALPHABET)


@pytest.mark.parametrize(
    "typed",
    ["ab12-cd34-ef56-gh78", "AB12CD34EF56GH78", " ab12 cd34 ef56 gh78 ", "ab12-cd34-ef56-gh78"],
)
def test_what_people_type_is_normalized(typed: str) -> None:
    assert recovery.normalize(typed) == "ab12cd34ef56gh78"


def test_letters_that_look_like_digits_read_as_digits() -> None:
    assert recovery.normalize("IL0O-0000-0000-0000") == "1100000000000000"


@pytest.mark.parametrize(
    "typed", [None, "", "ab12-cd34-ef56-gh7", "ab12-cd34-ef56-gh789", "ab12-cd34-ef56-gh7u"]
)
def test_malformed_codes_are_refused(typed: str | None) -> None:
    assert recovery.normalize(typed) is None


def test_digest_depends_on_the_salt_and_is_stable() -> None:
    salt, other = recovery.new_salt(), recovery.new_salt()
    assert salt != other
    first = recovery.digest("ab12cd34ef56gh78", salt)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert recovery.digest("ab12cd34ef56gh78", salt) == first
    assert recovery.digest("ab12cd34ef56gh78", other) != first
    assert recovery.digest("ab12cd34ef56gh79", salt) != first


def test_recovery_codes_meet_only_levels_without_user_verification() -> None:
    kind = recovery.RecoveryKind()
    factor = Factor("recovery-1", "recovery", "Recovery codes", 0, data={"remaining": 3})
    assert kind.meets(factor, MFA)
    assert not kind.meets(factor, PHR) and not kind.meets(factor, PHRH)
    spent = Factor("recovery-1", "recovery", "Recovery codes", 0, data={"remaining": 0})
    assert not kind.meets(spent, MFA)
    assert kind.amr(factor) == ["otp"]


@pytest.mark.anyio
async def test_fifty_racing_uses_of_one_code_succeed_once(redis_url: str) -> None:
    store = RedisStore(connect(redis_url))
    try:
        subject = keys.subject_id("https://idp.example", "racer")
        salt = recovery.new_salt()
        digests = [recovery.digest(f"{i:016d}", salt) for i in range(3)]
        factor = Factor("recovery-x", "recovery", "Recovery codes", 0, data={"salt": salt})
        await store.replace_recovery_codes(subject, factor, digests)
        results = await asyncio.gather(
            *(store.use_recovery_code(subject, digests[0]) for _ in range(50))
        )
        assert results.count(True) == 1
        (listed,) = await store.factors(subject)
        assert listed.data["remaining"] == 2
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_new_set_replaces_the_old_in_one_step(redis_url: str) -> None:
    store = RedisStore(connect(redis_url))
    try:
        subject = keys.subject_id("https://idp.example", "renew")
        old = Factor("recovery-old", "recovery", "Recovery codes", 0, data={"salt": "AA=="})
        await store.replace_recovery_codes(subject, old, ["a" * 64, "b" * 64])
        new = Factor("recovery-new", "recovery", "Recovery codes", 1, data={"salt": "AQ=="})
        await store.replace_recovery_codes(subject, new, ["c" * 64])
        assert [f.id for f in await store.factors(subject)] == ["recovery-new"]
        assert not await store.use_recovery_code(subject, "a" * 64)
        assert await store.use_recovery_code(subject, "c" * 64)
    finally:
        await store.close()
