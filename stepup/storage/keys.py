"""Every Redis key stepup uses, built in one place.

Keys that one operation touches together share a `{hash tag}` so they land in one
Redis Cluster slot. Subjects are keyed by a digest of (issuer, sub): `sub` is unique
only per issuer, and a digest keeps arbitrary characters out of key names.
"""

from __future__ import annotations

import functools
import hashlib

PREFIX = "stepup"


# A subject's id is asked for several times a request (keys, audit, throttling): remembered
# for the most recent subjects (a pure function, nothing secret in it).
@functools.lru_cache(maxsize=4096)
def subject_id(issuer: str, sub: str) -> str:
    return hashlib.sha256(f"{issuer}\x00{sub}".encode()).hexdigest()[:32]


def digest(secret: str) -> str:
    # One-time handles (codes, request URIs) are looked up by digest, so a dump of Redis
    # does not hand out live credentials.
    return hashlib.sha256(secret.encode()).hexdigest()


def pending_request(request_id: str) -> str:
    return f"{PREFIX}:par:{digest(request_id)}"


def interaction(interaction_id: str) -> str:
    return f"{PREFIX}:ia:{digest(interaction_id)}"


def enrollment(enrollment_id: str) -> str:
    return f"{PREFIX}:enrol:{digest(enrollment_id)}"


def enrollment_browser(enrollment_id: str) -> str:
    """The browser an enrolment link belongs to: the first one that opened it."""
    return f"{PREFIX}:enrol-browser:{digest(enrollment_id)}"


def code(code_value: str) -> str:
    return f"{PREFIX}:{{c:{digest(code_value)}}}:code"


def code_spent(code_value: str) -> str:
    """Remembers which token a redeemed code produced, to revoke it on a replay."""
    return f"{PREFIX}:{{c:{digest(code_value)}}}:spent"


def elevation(jti: str) -> str:
    return f"{PREFIX}:tok:{{{jti}}}"


def elevation_revoked(jti: str) -> str:
    """Marks a jti revoked before its token may be recorded (a code replay racing the winner)."""
    return f"{PREFIX}:revoked:{{{jti}}}"


def dpop_proof(jkt_and_jti: str) -> str:
    """One seen DPoP proof (RFC 9449 §11.1), one key each, so it works on a Cluster."""
    return f"{PREFIX}:dpop:{digest(jkt_and_jti)}"


def factors(subject: str) -> str:
    """A hash of factor id -> factor record. Durable: no TTL."""
    return f"{PREFIX}:{{s:{subject}}}:factors"


def disabled(subject: str) -> str:
    """Present while an operator has disabled the subject. Durable: no TTL."""
    return f"{PREFIX}:{{s:{subject}}}:disabled"


def totp_last_step(subject: str, factor_id: str) -> str:
    return f"{PREFIX}:{{s:{subject}}}:totp:{factor_id}"


def throttle(subject: str) -> str:
    return f"{PREFIX}:{{s:{subject}}}:throttle"


def recent_stepup(subject: str, client_id: str) -> str:
    return f"{PREFIX}:{{s:{subject}}}:recent:{digest(client_id)[:16]}"


def webauthn_challenge(context_id: str) -> str:
    """The challenge of the one ceremony a page (interaction or enrolment visit) has running."""
    return f"{PREFIX}:wa:{digest(context_id)}"


def sign_count(subject: str, factor_id: str) -> str:
    """A WebAuthn credential's last seen signature counter. Durable: no TTL."""
    return f"{PREFIX}:{{s:{subject}}}:signcount:{factor_id}"


def recovery_codes(subject: str) -> str:
    """A set of the digests of the subject's unused recovery codes. Durable: no TTL."""
    return f"{PREFIX}:{{s:{subject}}}:recovery"


# -- operations: the audit chain, per-subject elevations -----------------------------------


def audit_stream() -> str:
    """The audit Stream; its head and anchor share the `{audit}` tag (one slot, one script)."""
    return f"{PREFIX}:{{audit}}:log"


def audit_head() -> str:
    """The MAC of the newest audit entry: what the next one links to."""
    return f"{PREFIX}:{{audit}}:head"


def audit_turn() -> str:
    """The id of the writer whose append the others wait for (stepup/audit.py, _Writer)."""
    return f"{PREFIX}:{{audit}}:turn"


def audit_anchor() -> str:
    """`<entry id> <mac>` of the newest entry retention trimmed away."""
    return f"{PREFIX}:{{audit}}:anchor"


def subject_elevations(subject: str) -> str:
    """A sorted set of the subject's elevated tokens: jti scored by its `exp`."""
    return f"{PREFIX}:{{s:{subject}}}:elevations"


def active_elevations() -> str:
    """Every unexpired elevation, jti scored by `exp` (the active-elevations gauge)."""
    return f"{PREFIX}:{{elevations}}:active"
