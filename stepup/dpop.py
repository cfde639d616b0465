"""DPoP proofs (RFC 9449): the check of one proof for one HTTP request, JWK thumbprints
(RFC 7638) and stateless server nonces. No framework and no storage here: the caller passes in
the time, the one-time claim of a `jti` (Redis at stepup, memory in the resource toolkit) and
the nonce it expects.

Each failed check raises `ProofError` with a short client-facing description and a precise
`detail` for the log (RFC 9449 §4.3 numbers the checks; the comments below use them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from stepup.jwtparts import ASYMMETRIC_ALGORITHMS, numeric_date

# RFC 9449 §4.3 step 5: asymmetric only; `none` and MAC algorithms never verify a proof.
DEFAULT_ALGORITHMS = ("ES256", "ES384", "EdDSA", "Ed25519", "PS256", "RS256")
MAX_PROOF_LENGTH = 8_192
# A jti is "a unique identifier"; 96 bits of randomness fits in 16 characters, and bounding it
# keeps the replay cache's keys small whatever a client sends.
MAX_JTI_LENGTH = 128
MIN_RSA_BITS = 2048
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 9449 §8.1: nonce = 1*NQCHAR.
_NQCHARS = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

ClaimOnce = Callable[[str, int], Awaitable[bool]]
"""`claim(key, ttl)`: True the first time `key` is claimed within `ttl` seconds, else False.
Must be atomic across everything that shares the cache (SET NX EX in Redis)."""


class ProofError(Exception):
    """A proof that does not pass: `invalid_dpop_proof`."""

    def __init__(self, description: str, *, detail: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail or description


class NonceRequired(ProofError):
    """The proof lacks the server's current nonce (RFC 9449 §8): `use_dpop_nonce`."""


@dataclass(frozen=True)
class ProofPolicy:
    """What a verifier accepts. `iat_window`: how old a proof may be, seconds;
    `iat_skew`: how far in the future its `iat` may lie (the client's clock may run ahead)."""

    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    iat_window: int = 60
    iat_skew: int = 5

    def __post_init__(self) -> None:
        unsafe = set(self.algorithms) - ASYMMETRIC_ALGORITHMS
        if unsafe or not self.algorithms:
            raise ValueError(f"DPoP algorithms must be asymmetric JWS algorithms: {unsafe}")

    @property
    def replay_ttl(self) -> int:
        # A proof is accepted while now - window <= iat <= now + skew, so its jti must be
        # remembered for window + skew seconds after it was first seen.
        return self.iat_window + self.iat_skew + 1


@dataclass(frozen=True)
class Proof:
    """A proof that passed: `jkt` is the RFC 7638 thumbprint of its key."""

    jkt: str
    jti: str
    iat: int
    claims: Mapping[str, Any]

    @property
    def replay_key(self) -> str:
        # §11.1: a proof is good once. Keyed by the key too, so nobody can spend another
        # client's jti before it does.
        return f"{self.jkt}:{self.jti}"


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 JWK thumbprint, base64url without padding (RFC 9449 §6.1 `jkt`)."""
    return str(import_key(dict(jwk)).thumbprint())


def is_thumbprint(value: str) -> bool:
    return _JKT.fullmatch(value) is not None


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url(SHA-256(ASCII(access token)))."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def normalized_uri(uri: str) -> str:
    """The URI without query and fragment, in the form RFC 3986 §6.2.2 (case, percent-encoding,
    dot segments) and §6.2.3 (default port, empty path) make equal for equal resources."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URI")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # raises ValueError for a port that is no port
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent(parts.path)) or "/"
    return urlunsplit((scheme, host, path, "", ""))


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_percent(path: str) -> str:
    # §6.2.2.1/§6.2.2.2: hex digits upper case; encoded unreserved characters decoded.
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4.
    output: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = "/" if path.endswith(("/.", "/..")) else ""
    return ("/" + "/".join(output) + trailing) if path.startswith("/") else "/".join(output)


def _b64json(part: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _public_key(jwk: object) -> ECKey | OKPKey | RSAKey:
    if not isinstance(jwk, dict):
        raise ProofError("The DPoP proof's jwk is not a JSON Web Key", detail="jwk not an object")
    # §4.3 step 7: the proof carries the public key only. A private member ("d", or RSA's
    # primes) means the client leaked its key into every request; refuse rather than ignore.
    private = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(jwk)
    if private:
        raise ProofError(
            "The DPoP proof's jwk must be a public key", detail=f"private members {private}"
        )
    try:
        with warnings.catch_warnings():
            # joserfc warns of short RSA keys; the size is refused below, one clear refusal.
            warnings.simplefilter("ignore", SecurityWarning)
            key = import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProofError("The DPoP proof's jwk is not a usable key", detail=str(exc)) from exc
    if not isinstance(key, ECKey | OKPKey | RSAKey) or key.is_private:
        raise ProofError("The DPoP proof's jwk must be a public key", detail=f"{type(key)}")
    if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
        raise ProofError("The DPoP proof's RSA key is too short", detail="RSA < 2048 bits")
    return key


def _registry(alg: str) -> jws.JWSRegistry:
    registry = jws.JWSRegistry(algorithms=[alg])
    # joserfc's default 512-byte header limit is too small for an RSA key in `jwk`; the
    # whole proof is bounded by MAX_PROOF_LENGTH before it gets here.
    registry.max_header_length = MAX_PROOF_LENGTH
    return registry


async def verify_proof(
    headers: Sequence[str],
    *,
    method: str,
    uri: str,
    now: float,
    policy: ProofPolicy,
    claim: ClaimOnce | None,
    access_token: str | None = None,
    nonce: Callable[[str | None], bool] | None = None,
) -> Proof:
    """RFC 9449 §4.3: the one `DPoP` header of a request to `method uri`. `nonce`, when the
    server requires one, says whether the proof's `nonce` is current. The jti is claimed last,
    so a proof failing any other check leaves nothing behind; with `claim=None` the caller
    claims `proof.replay_key` itself (for `policy.replay_ttl`), later."""
    # Step 1: exactly one DPoP header field.
    if len(headers) != 1:
        raise ProofError(
            "Send exactly one DPoP proof" if headers else "A DPoP proof is required",
            detail=f"{len(headers)} DPoP headers",
        )
    value = headers[0].strip()
    # Step 2: a well-formed compact JWS.
    if len(value) > MAX_PROOF_LENGTH or value.count(".") != 2:
        raise ProofError("The DPoP proof is not a JWT", detail="not three parts or too long")
    try:
        header = _b64json(value.split(".", 1)[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProofError("The DPoP proof is not a JWT", detail=f"header: {exc}") from exc
    # Step 4: typ.
    if header.get("typ") != "dpop+jwt":
        raise ProofError("The DPoP proof's typ must be dpop+jwt", detail=f"typ {header.get('typ')}")
    # Step 5: an asymmetric algorithm of the allowlist.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise ProofError(
            "The DPoP proof's algorithm is not accepted", detail=f"alg {str(alg)[:20]!r}"
        )
    # RFC 7515 §4.1.11: a JWS whose `crit` lists an extension the recipient does not
    # understand must be rejected. DPoP defines none, so any `crit` is refused here, before
    # the JOSE library reads it (a `crit` that is no list of names made it raise TypeError).
    if "crit" in header:
        raise ProofError("The DPoP proof's crit header is not supported", detail="crit")
    # Step 7 before 6: the key the signature is checked with must be a public key.
    key = _public_key(header.get("jwk"))
    # Step 6: the signature verifies with that key.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            verified = jws.deserialize_compact(value, key, registry=_registry(alg))
        claims = json.loads(verified.payload)
    except (JoseError, ValueError, TypeError) as exc:
        # TypeError: the JOSE library meeting a header member of a shape it does not expect.
        raise ProofError("The DPoP proof's signature does not verify", detail=str(exc)) from exc
    if not isinstance(claims, dict):
        raise ProofError("The DPoP proof is not a JWT", detail="payload not an object")
    # Step 3: the claims every proof carries.
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise ProofError("The DPoP proof needs a jti", detail=f"jti {str(jti)[:20]!r}")
    # Step 8: htm is the request's method (RFC 9110 §9.1: methods are case-sensitive).
    if claims.get("htm") != method:
        raise ProofError("The DPoP proof is for another method", detail=f"htm {claims.get('htm')}")
    # Step 9: htu is the request's URI, query and fragment ignored.
    htu = claims.get("htu")
    try:
        same = isinstance(htu, str) and normalized_uri(htu) == normalized_uri(uri)
    except ValueError:
        same = False
    if not same:
        raise ProofError("The DPoP proof is for another URI", detail=f"htu {str(htu)[:200]!r}")
    # Step 10: the server's nonce, when it asks for one.
    if nonce is not None:
        offered = claims.get("nonce")
        if not nonce(offered if isinstance(offered, str) else None):
            raise NonceRequired(
                "A current DPoP nonce is required", detail=f"nonce {str(offered)[:40]!r}"
            )
    # Step 11: iat within the window on the verifier's clock.
    iat = numeric_date(claims.get("iat"))
    if iat is None:
        raise ProofError("The DPoP proof needs an iat", detail="iat missing or malformed")
    if iat < now - policy.iat_window or iat > now + policy.iat_skew:
        raise ProofError("The DPoP proof is too old or too new", detail=f"iat {iat}, now {now}")
    # Step 12: with an access token, ath binds the proof to it.
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise ProofError(
                "The DPoP proof is not for this access token", detail="ath missing or wrong"
            )
    proof = Proof(jkt=key.thumbprint(), jti=jti, iat=iat, claims=claims)
    if claim is not None and not await claim(proof.replay_key, policy.replay_ttl):
        raise ProofError("The DPoP proof was already used", detail=f"jti replay {jti[:40]!r}")
    return proof


class Nonces:
    """Server nonces without per-nonce state (RFC 9449 §8): a nonce names a time slot and
    carries an HMAC of it under a key every instance shares, so any instance checks any
    other's nonce. The current slot's nonce is handed out; it and the previous slot's pass,
    so a nonce lives between one and two slots. `older` keys (a rotation: instances restart
    one by one) still check, so a nonce from an instance not yet restarted passes here."""

    def __init__(self, key: bytes, slot: int, *, older: Sequence[bytes] = ()) -> None:
        if any(len(k) < 32 for k in (key, *older)) or slot < 1:
            raise ValueError("nonce keys of at least 32 bytes and a positive slot length")
        self._key = key
        self._older = tuple(older)
        self._slot = slot

    def _mac(self, slot: int, key: bytes | None = None) -> str:
        message = f"dpop-nonce:{slot}".encode()
        tag = hmac.new(key or self._key, message, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(tag).decode()

    def current(self, now: float) -> str:
        slot = int(now) // self._slot
        return f"{slot}.{self._mac(slot)}"

    def valid(self, nonce: str | None, now: float) -> bool:
        if nonce is None or len(nonce) > 64 or not _NQCHARS.fullmatch(nonce):
            return False
        slot_text, _, tag = nonce.partition(".")
        if not slot_text.isascii() or not slot_text.isdigit() or len(slot_text) > 12:
            return False
        slot = int(slot_text)
        current = int(now) // self._slot
        if slot not in (current, current - 1):
            return False
        return any(
            hmac.compare_digest(tag.encode(), self._mac(slot, key).encode())
            for key in (self._key, *self._older)
        )


class MemoryReplayCache:
    """A bounded in-process `ClaimOnce` (one resource-server process). Entries leave when
    their time is up. When it is full of live entries a new claim is refused: forgetting a
    live entry would let its proof be replayed, and anyone can fill the cache with proofs
    of a key of their own. Fail closed; size it for the proofs one `ttl` brings."""

    def __init__(self, clock: Callable[[], float], size: int = 65_536) -> None:
        self._clock = clock
        self._size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def __call__(self, key: str, ttl: int) -> bool:
        now = self._clock()
        # Insertion order is expiry order: one verifier claims with one ttl.
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[oldest]
        seen = self._seen.get(key)
        if seen is not None and seen > now:
            return False
        if len(self._seen) >= self._size:
            return False
        self._seen[key] = now + ttl
        self._seen.move_to_end(key)
        return True
