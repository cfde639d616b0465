"""What every JWT stepup reads has in common, whoever signed it: the algorithms a signature
may use and the shape of a NumericDate. Shared by the subject-token check, DPoP proofs, the
resource toolkit and the policy reader, so the allowlist lives in one place."""

from __future__ import annotations

import math

# Asymmetric only: a shared-secret algorithm would let anyone holding the public key forge a
# signature, and `none` is no signature at all (RFC 8725 §3.1, RFC 9449 §4.3 step 5).
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "ES256",
        "ES384",
        "ES512",
        "Ed25519",
        "EdDSA",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
    }
)
# Far beyond any real date, far below 64-bit limits.
MAX_NUMERIC_DATE = 2**40


def numeric_date(value: object) -> int | None:
    """RFC 7519 §2 NumericDate as whole seconds, or None when `value` is not one: finite,
    not a boolean, and bounded so nothing downstream overflows."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value < MAX_NUMERIC_DATE:
        return None
    return int(value)
