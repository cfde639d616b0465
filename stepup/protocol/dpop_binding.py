"""DPoP (RFC 9449) at stepup's own endpoints: the proof a client sends to /par and /token,
checked against the configured policy, the replay cache in Redis and the server nonce."""

from __future__ import annotations

from collections.abc import Sequence

from stepup import dpop
from stepup.errors import InvalidDPoPProof, UseDPoPNonce
from stepup.services import Services
from stepup.storage import keys


def policy(services: Services) -> dpop.ProofPolicy:
    settings = services.config.dpop
    return dpop.ProofPolicy(settings.algorithms, settings.iat_window, settings.iat_skew)


def nonce_headers(services: Services) -> dict[str, str]:
    """RFC 9449 §8.2: a fresh nonce on every answer while nonces are on, so a client never
    has to be refused to learn the next one."""
    if not services.config.dpop.require_nonce:
        return {}
    return {"DPoP-Nonce": services.nonces.current(services.clock.now())}


async def proof(services: Services, headers: Sequence[str], path: str) -> dpop.Proof | None:
    """The checked proof of a POST to `path`, or None when the request carries none.

    `htu` is compared with the endpoint's URL under the issuer (what the metadata document
    advertises), not with the Host header the request arrived with: TLS ends in front of
    stepup, where scheme, host and port differ from what the client used."""
    if not headers:
        return None
    now = services.clock.now()
    nonces = services.nonces
    check_nonce = None
    if services.config.dpop.require_nonce:

        def check_nonce(value: str | None) -> bool:
            return nonces.valid(value, now)

    async def claim(key: str, ttl: int) -> bool:
        return await services.store.claim_once(keys.dpop_proof(key), ttl)

    try:
        return await dpop.verify_proof(
            headers,
            method="POST",
            uri=services.config.issuer + path,
            now=now,
            policy=policy(services),
            claim=claim,
            nonce=check_nonce,
        )
    except dpop.NonceRequired as exc:
        raise UseDPoPNonce(exc.description, nonces.current(now), detail=exc.detail) from exc
    except dpop.ProofError as exc:
        raise InvalidDPoPProof(exc.description, detail=exc.detail) from exc


def required_key(proven: dpop.Proof | None, jkt: str, what: str) -> None:
    """The request is bound to `jkt` (by the subject token's cnf or by intake's dpop_jkt):
    only a proof by that very key will do."""
    if proven is None:
        raise InvalidDPoPProof(
            f"A DPoP proof is required: the {what} is bound to a key", detail=f"bound to {jkt}"
        )
    if proven.jkt != jkt:
        raise InvalidDPoPProof(
            f"The DPoP proof is not from the key the {what} is bound to",
            detail=f"proof {proven.jkt}, bound to {jkt}",
        )
