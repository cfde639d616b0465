"""OAuth errors (RFC 6749 §5.2 and the extensions stepup speaks), one small class each.

The `description` goes to the client; `detail` is for the log only and may name
the precise cause (which claim, which check) that the client must not learn.
"""

from __future__ import annotations

from typing import ClassVar


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400

    def __init__(self, description: str, *, detail: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail or description

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401

    def headers(self) -> dict[str, str]:
        # RFC 6749 §5.2: a 401 for client authentication carries the scheme the client should use.
        return {"WWW-Authenticate": 'Basic realm="stepup", charset="UTF-8"'}


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class InvalidAuthorizationDetails(OAuthError):
    error = "invalid_authorization_details"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidDPoPProof(OAuthError):
    # RFC 9449 §5: a DPoP proof that is missing, malformed, or from the wrong key.
    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuthError):
    """RFC 9449 §8: the proof must carry the server's nonce; the answer hands out the current
    one in `DPoP-Nonce`."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str, *, detail: str | None = None) -> None:
        super().__init__(description, detail=detail)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        return {"DPoP-Nonce": self.nonce}
