"""The answers a protected resource gives instead of the resource: RFC 6750 §3 and RFC 9470 §3
Bearer challenges, each a small class carrying its status and `error` code.

A refusal knows only its own parameters; `Refusal.answer` adds what the resource adds to
every challenge (`realm`, RFC 9728 `resource_metadata`) and renders status, headers, body.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from stepup.protocol.challenge import build_challenge

Param = tuple[str, str | int]

# RFC 6750 §3: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _description(text: str) -> str:
    return "".join(c if c in _DESCRIPTION_CHARS else "?" for c in text)


@dataclass(frozen=True)
class Answer:
    """A rendered refusal: what any framework needs to write the response."""

    status: int
    headers: dict[str, str]
    body: bytes


class Refusal(Exception):
    """`description` goes to the client; `detail` (the precise cause) only to the log."""

    status: ClassVar[int] = 401
    error: ClassVar[str | None] = None

    def __init__(
        self,
        description: str = "",
        *,
        detail: str | None = None,
        params: Sequence[Param] = (),
    ) -> None:
        super().__init__(description or self.error or "unauthorized")
        self.description = description
        self.detail = detail or description
        self.params = tuple(params)
        # Set when the answer is a DPoP challenge (RFC 9449 §7.1): the algorithms accepted.
        self.dpop_algs: str | None = None

    def challenge(self, realm: str | None, resource_metadata: str | None) -> str:
        params: list[Param] = []
        if realm:
            params.append(("realm", realm))
        if self.dpop_algs:
            params.append(("algs", self.dpop_algs))
        if self.error:
            params.append(("error", self.error))
        if self.description:
            params.append(("error_description", _description(self.description)))
        params.extend(self.params)
        if resource_metadata:
            # RFC 9728 §5.1: where the client finds which authorization servers to use.
            params.append(("resource_metadata", resource_metadata))
        return build_challenge("DPoP" if self.dpop_algs else "Bearer", params)

    def answer(self, realm: str | None = None, resource_metadata: str | None = None) -> Answer:
        headers = {
            "WWW-Authenticate": self.challenge(realm, resource_metadata),
            "Cache-Control": "no-store",
            "Content-Type": "application/json",
        }
        body: dict[str, str] = {}
        if self.error:
            body["error"] = self.error
            if self.description:
                body["error_description"] = _description(self.description)
        return Answer(self.status, headers, json.dumps(body).encode())


class MissingToken(Refusal):
    """RFC 6750 §3.1: a request without credentials gets a challenge with no error code."""


class InvalidRequest(Refusal):
    # RFC 6750 §3.1: a malformed request (here: the Authorization header) is a 400.
    status = 400
    error = "invalid_request"


class InvalidToken(Refusal):
    error = "invalid_token"


class InvalidDPoPProof(Refusal):
    # RFC 9449 §7.1: the DPoP proof is missing, malformed, replayed or for another request.
    error = "invalid_dpop_proof"


class InsufficientScope(Refusal):
    # RFC 6750 §3.1: the token is good but lacks a scope; `scope` names what is needed.
    status = 403
    error = "insufficient_scope"


class InsufficientUserAuthentication(Refusal):
    # RFC 9470 §3: the authentication behind the token is too weak or too old.
    error = "insufficient_user_authentication"


class Unavailable(Refusal):
    """stepup's keys or introspection cannot be reached: fail closed with 503.

    Not a 401: that would tell the client its token is bad and send it round the step-up
    loop for nothing. 503 with Retry-After says: the same request may work shortly.
    """

    status = 503
    error = "temporarily_unavailable"
    retry_after = 5

    def answer(self, realm: str | None = None, resource_metadata: str | None = None) -> Answer:
        body = {"error": self.error or "", "error_description": _description(self.description)}
        return Answer(
            self.status,
            {
                "Retry-After": str(self.retry_after),
                "Cache-Control": "no-store",
                "Content-Type": "application/json",
            },
            json.dumps(body).encode(),
        )
