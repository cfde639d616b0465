"""Recovery codes: NIST SP 800-63B look-up secrets, shown once and kept only as salted hashes.

Each code carries 80 bits. Below 112 bits NIST asks for a salted, slow hash (§5.1.2.2),
so digests are scrypt with one fresh salt per set: an attempt costs one hash, whatever
the set's size, and a leaked set cannot be attacked with precomputed tables.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from stepup.config import Level
from stepup.models import Factor

# Crockford's base32: no I, L, O or U, so codes read aloud and typed by hand survive.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
LENGTH = 16  # 16 symbols x 5 bits = 80 bits
_TYPOS = str.maketrans({"i": "1", "l": "1", "o": "0"})
# scrypt at N=2^14, r=8: about 16 MiB and a few tens of milliseconds per hash.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}


class RecoveryKind:
    kind = "recovery"

    def meets(self, factor: Factor, level: Level) -> bool:
        # A code can be phished like any typed secret: never a user-verified or device-bound level.
        return (
            factor.kind == self.kind
            and "recovery" in level.factors
            and not level.user_verification
            and not level.device_bound
            and int(factor.data.get("remaining", 1)) > 0
        )

    def amr(self, factor: Factor) -> list[str]:
        return ["otp"]  # RFC 8176 §2: a one-time password (from a printed list)


def new_codes(count: int) -> list[str]:
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, LENGTH, 4)))
    return codes


def new_salt() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


def normalize(code: str | None) -> str | None:
    """What people type: any case, spaces or dashes, I/L for 1 and O for 0."""
    if code is None:
        return None
    cleaned = "".join(ch for ch in code.lower() if ch not in " -\u00a0").translate(_TYPOS)
    if len(cleaned) != LENGTH or any(ch not in ALPHABET for ch in cleaned):
        return None
    return cleaned


def digest(normalized: str, salt: str) -> str:
    return hashlib.scrypt(normalized.encode(), salt=base64.b64decode(salt), **_SCRYPT).hex()
