"""The records stepup keeps: what a client asked for, what a user proved, what was issued.

Plain dataclasses, serialised as JSON; they know nothing of Redis or HTTP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from stepup.storage.keys import subject_id

T = TypeVar("T")


def dump(record: object) -> bytes:
    return orjson.dumps(record)


_FIELDS: dict[type, frozenset[str]] = {}


def load(cls: type[T], raw: bytes | str) -> T:
    data = orjson.loads(raw)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    if names.issuperset(data):
        return cls(**data)
    # Ignore fields a newer version wrote, so a rolling upgrade does not break reads.
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class Subject:
    """A validated subject token (B)."""

    issuer: str
    sub: str
    client_id: str
    exp: int
    # When the user last authenticated upstream: `auth_time`, else the token's `iat`.
    authenticated_at: int
    cnf_jkt: str | None = None

    @property
    def key(self) -> str:
        return subject_id(self.issuer, self.sub)


@dataclass(slots=True)
class PendingRequest:
    """What a client pushed (RFC 9126): kept until the browser arrives."""

    client_id: str
    issuer: str
    sub: str
    subject_exp: int
    subject_authenticated_at: int
    redirect_uri: str
    state: str | None
    code_challenge: str
    scopes: list[str]
    resource: str
    acr: str
    max_age: int
    created_at: int
    authorization_details: list[dict[str, Any]] | None = None
    dpop_jkt: str | None = None

    @property
    def subject_key(self) -> str:
        return subject_id(self.issuer, self.sub)


@dataclass(slots=True)
class Interaction:
    """A browser's visit to the authorization page, bound to it by a CSRF cookie."""

    request: dict[str, Any]
    csrf: str
    browser: str  # the browser cookie it is bound to
    mode: str  # "verify" | "enrol"
    expires_at: int
    pending_factor: dict[str, Any] | None = None  # a TOTP factor being enrolled (secret sealed)

    def pending(self) -> PendingRequest:
        return PendingRequest(**self.request)


@dataclass(slots=True)
class Grant:
    """An authorization code's meaning: what was approved and proven."""

    client_id: str
    issuer: str
    sub: str
    subject_exp: int
    redirect_uri: str
    code_challenge: str
    scopes: list[str]
    resource: str
    acr: str
    amr: list[str]
    auth_time: int
    authorization_details: list[dict[str, Any]] | None = None
    dpop_jkt: str | None = None


@dataclass(slots=True)
class Elevation:
    """An issued elevated token, recorded under its jti for introspection and revocation."""

    jti: str
    iss: str
    sub: str
    client_id: str
    aud: str
    scope: str
    acr: str
    amr: list[str]
    auth_time: int
    iat: int
    exp: int
    single_use: bool = False
    cnf_jkt: str | None = None
    authorization_details: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Factor:
    id: str
    kind: str  # "totp" | "webauthn" | "recovery"
    name: str
    created_at: int
    last_used_at: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Enrollment:
    """A one-time enrolment visit, created for a client that presented the user's token."""

    client_id: str
    issuer: str
    sub: str
    subject_authenticated_at: int
    csrf: str
    expires_at: int
    browser: str | None = None  # bound to the first browser that opens the link
    return_uri: str | None = None
    proven: bool = False
    pending_factor: dict[str, Any] | None = None
    notice: str | None = None  # what the last change did, shown once on the next page

    @property
    def subject_key(self) -> str:
        return subject_id(self.issuer, self.sub)


@dataclass(slots=True)
class RecentStepUp:
    acr: str
    amr: list[str]
    auth_time: int
