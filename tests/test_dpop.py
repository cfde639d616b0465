"""stepup.dpop on its own: RFC 7638 thumbprints, RFC 3986 normalization of htu, stateless
nonces, the in-memory replay cache, and the `[dpop]` policy section (`stepup check`)."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import RSAKey

from stepup import dpop
from stepup.clock import FrozenClock
from stepup.config import ConfigError, DPoP, parse
from tests.support.cli import stepup_cli
from tests.support.dpop import DPoPKey
from tests.support.stepup import Upstream, policy_document, toml_document

# -- RFC 7638 -------------------------------------------------------------------------------


def test_thumbprint_of_the_rfc7638_example_key() -> None:
    # RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert dpop.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_ath_is_base64url_sha256_of_the_token() -> None:
    # RFC 9449 §7.1's example: the token and its ath.
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert dpop.access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


# -- htu normalization (RFC 3986 §6.2.2, §6.2.3) ----------------------------------------------


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("https://api.example/pay", "https://api.example/pay"),
        ("HTTPS://API.Example/pay", "https://api.example/pay"),
        ("https://api.example:443/pay", "https://api.example/pay"),
        ("http://api.example:80/pay", "http://api.example/pay"),
        ("http://api.example:8080/pay", "http://api.example:8080/pay"),
        ("https://api.example", "https://api.example/"),
        ("https://api.example/pay?x=1#f", "https://api.example/pay"),
        ("https://api.example/%7euser/%2f", "https://api.example/~user/%2F"),
        ("https://api.example/a/./b/../pay", "https://api.example/a/pay"),
        ("https://[::1]:8443/pay", "https://[::1]:8443/pay"),
    ],
)
def test_htu_normalization(uri: str, normalized: str) -> None:
    assert dpop.normalized_uri(uri) == normalized


@pytest.mark.parametrize("uri", ["/pay", "ftp://api.example/pay", "https://api.example:x/pay"])
def test_a_uri_that_is_no_absolute_http_uri_does_not_normalize(uri: str) -> None:
    with pytest.raises(ValueError):
        dpop.normalized_uri(uri)


@pytest.mark.parametrize(
    "other",
    ["https://api.example/Pay", "https://api.example/pay/", "https://api.example:8443/pay"],
)
def test_different_resources_stay_different(other: str) -> None:
    assert dpop.normalized_uri(other) != dpop.normalized_uri("https://api.example/pay")


# -- proofs (the endpoints test every check; these are what only the library sees) -------------


async def _accept(key: str, ttl: int) -> bool:
    return True


def _verify(proof: str, now: float, **options: Any) -> dpop.Proof:
    return asyncio.run(
        dpop.verify_proof(
            [proof],
            method="GET",
            uri="https://api.example/pay",
            now=now,
            policy=dpop.ProofPolicy(),
            claim=options.pop("claim", _accept),
            **options,
        )
    )


def test_a_good_proof_gives_its_keys_thumbprint() -> None:
    key = DPoPKey()
    proof = _verify(key.proof("GET", "https://api.example/pay", iat=1000), 1000)
    assert proof.jkt == key.jkt


def test_a_short_rsa_key_is_refused() -> None:
    key = DPoPKey("PS256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc warns, rightly
        key.key = RSAKey.generate_key(1024, private=True)
        proof = key.proof("GET", "https://api.example/pay", iat=1000)
    with pytest.raises(dpop.ProofError, match="too short"):
        _verify(proof, 1000)


def test_a_claim_that_says_seen_refuses_the_proof() -> None:
    async def seen(key: str, ttl: int) -> bool:
        return False

    proof = DPoPKey().proof("GET", "https://api.example/pay", iat=1000)
    with pytest.raises(dpop.ProofError, match="already used"):
        _verify(proof, 1000, claim=seen)


def test_the_replay_key_names_the_key_and_the_jti_and_lives_the_whole_window() -> None:
    claimed: list[tuple[str, int]] = []

    async def claim(key: str, ttl: int) -> bool:
        claimed.append((key, ttl))
        return True

    key = DPoPKey()
    _verify(
        key.proof("GET", "https://api.example/pay", iat=1000, claims={"jti": "j1"}),
        1000,
        claim=claim,
    )
    assert claimed == [(f"{key.jkt}:j1", 60 + 5 + 1)]


def test_a_missing_nonce_is_nonce_required_not_a_bad_proof() -> None:
    proof = DPoPKey().proof("GET", "https://api.example/pay", iat=1000)
    with pytest.raises(dpop.NonceRequired):
        _verify(proof, 1000, nonce=lambda value: value == "n-1")


def test_policy_refuses_symmetric_algorithms() -> None:
    for algorithms in (("HS256",), ("none",), ()):
        with pytest.raises(ValueError):
            dpop.ProofPolicy(algorithms)


# -- nonces ---------------------------------------------------------------------------------


def test_a_nonce_passes_in_its_slot_and_the_next_only() -> None:
    nonces = dpop.Nonces(b"k" * 32, 300)
    nonce = nonces.current(600)
    assert nonces.valid(nonce, 600)
    assert nonces.valid(nonce, 899)
    assert nonces.valid(nonce, 1199)  # the next slot
    assert not nonces.valid(nonce, 1200)  # two slots on
    assert not nonces.valid(nonce, 299)  # before it was made


def test_a_nonce_under_another_key_or_edited_fails() -> None:
    nonce = dpop.Nonces(b"k" * 32, 300).current(600)
    assert not dpop.Nonces(b"K" * 32, 300).valid(nonce, 600)
    slot, _, tag = nonce.partition(".")
    assert not dpop.Nonces(b"k" * 32, 300).valid(f"{slot}.{tag[:-1]}A", 600)
    assert not dpop.Nonces(b"k" * 32, 300).valid(None, 600)


def test_a_nonce_under_a_key_rotated_out_still_passes_and_new_ones_use_the_new_key() -> None:
    before = dpop.Nonces(b"o" * 32, 300).current(600)
    after = dpop.Nonces(b"n" * 32, 300, older=[b"o" * 32])
    assert after.valid(before, 600)
    assert after.valid(before, 1199) and not after.valid(before, 1200)  # same lifetime
    assert not dpop.Nonces(b"o" * 32, 300).valid(after.current(600), 600)
    assert not after.valid(dpop.Nonces(b"x" * 32, 300).current(600), 600)


# -- the in-memory replay cache -------------------------------------------------------------


def test_the_memory_cache_claims_once_forgets_after_ttl_and_stays_bounded() -> None:
    clock = FrozenClock(1000)
    cache = dpop.MemoryReplayCache(clock.now, size=3)

    async def run() -> None:
        assert await cache("a", 10)
        assert not await cache("a", 10)
        clock.advance(10)
        assert await cache("a", 10)  # its time was up
        for name in "bc":
            assert await cache(name, 10)
        assert len(cache) == 3
        clock.advance(10)
        for name in "def":  # a, b, c expired: their places are free again
            assert await cache(name, 10)
        assert len(cache) == 3

    asyncio.run(run())


def test_a_full_memory_cache_refuses_new_proofs_rather_than_forget_a_live_one() -> None:
    # Evicting a live entry would let its proof be replayed: anyone can fill the cache with
    # proofs of their own key (the jti is claimed before the token is verified) and then
    # replay a captured proof of the victim within its iat window. Fail closed instead.
    clock = FrozenClock(1000)
    cache = dpop.MemoryReplayCache(clock.now, size=3)

    async def run() -> None:
        assert await cache("victim", 66)
        for name in ("flood-1", "flood-2"):
            clock.advance(1)
            assert await cache(name, 66)
        clock.advance(1)
        assert not await cache("flood-3", 66)  # full of live entries: refused
        assert not await cache("victim", 66)  # and the victim's proof is still remembered
        clock.advance(63)  # the victim's entry expires with its proof's window
        assert await cache("flood-3", 66)
        assert len(cache) == 3

    asyncio.run(run())


# -- [dpop] in the policy -------------------------------------------------------------------


def _document(tmp_path: Path, **dpop_section: Any) -> dict[str, Any]:
    document = policy_document(Upstream(tmp_path, FrozenClock()), tmp_path / "data")
    document["dpop"] = dpop_section
    return document


def test_the_dpop_section_has_documented_defaults(tmp_path: Path) -> None:
    config = parse(_document(tmp_path), base_dir=tmp_path)
    assert config.dpop == DPoP()
    assert config.dpop.require_nonce is False and config.dpop.iat_window == 60


def test_the_dpop_section_is_read(tmp_path: Path) -> None:
    section = {
        "algorithms": ["ES256"],
        "iat_window": 30,
        "require_nonce": True,
        "nonce_lifetime": 120,
    }
    config = parse(_document(tmp_path, **section), base_dir=tmp_path)
    assert config.dpop == DPoP(("ES256",), 30, 5, True, 120)


def test_check_lists_every_dpop_problem(tmp_path: Path) -> None:
    document = _document(
        tmp_path,
        algorithms=["HS256", "none", "ES256"],
        iat_window=0,
        iat_skew=3600,
        nonce_lifetime=5,
        surprise=True,
    )
    with pytest.raises(ConfigError) as raised:
        parse(document, base_dir=tmp_path)
    problems = raised.value.problems
    assert len(problems) == 5, problems
    policy = tmp_path / "policy.toml"
    policy.write_text(toml_document(document))
    done = stepup_cli("check", str(policy))
    assert done.returncode == 1
    for fragment in (
        "dpop.algorithms",
        "dpop.iat_window",
        "dpop.iat_skew",
        "dpop.nonce_lifetime",
        "unknown key 'surprise'",
    ):
        assert fragment in done.stderr, done.stderr


@pytest.mark.parametrize("iat_offset", [-60, -30, 0, 5])
def test_a_proof_is_never_accepted_again_while_its_iat_is_in_the_window(iat_offset: int) -> None:
    # The replay entry lives window + skew + 1 s from first sight; the proof is in its window
    # until iat + window. Even a proof dated the full skew ahead, first seen at once, is
    # remembered past the last second its iat passes: no gap where it works twice.
    clock = FrozenClock(1000)
    cache = dpop.MemoryReplayCache(clock.now)
    proof = DPoPKey().proof("GET", "https://api.example/pay", iat=1000 + iat_offset)
    first = _verify(proof, clock.now(), claim=cache)
    assert first.iat == 1000 + iat_offset
    outcomes = set()
    for _ in range(160):
        clock.advance(0.5)
        with pytest.raises(dpop.ProofError) as refused:
            _verify(proof, clock.now(), claim=cache)
        outcomes.add(refused.value.description)
    assert outcomes <= {"The DPoP proof was already used", "The DPoP proof is too old or too new"}
