"""Authorization server metadata (RFC 8414) and the JWKS document."""

from __future__ import annotations

from typing import Any

from stepup.config import Config
from stepup.protocol.client_auth import AUTH_METHODS
from stepup.protocol.token_exchange import GRANT_TYPE
from stepup.signing import SigningKeys

PATHS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "pushed_authorization_request_endpoint": "/par",
    "introspection_endpoint": "/introspect",
    "revocation_endpoint": "/revoke",
    "jwks_uri": "/jwks",
    "enrollment_endpoint": "/enroll",
}


def metadata(config: Config, signing: SigningKeys) -> dict[str, Any]:
    issuer = config.issuer
    document: dict[str, Any] = {"issuer": issuer}
    document.update({name: issuer + path for name, path in PATHS.items()})
    document.update(
        {
            "require_pushed_authorization_requests": True,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": [GRANT_TYPE],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "pushed_authorization_request_endpoint_auth_methods_supported": AUTH_METHODS,
            "acr_values_supported": sorted({*config.levels, *config.aliases}),
            "scopes_supported": sorted(config.scopes),
            "authorization_response_iss_parameter_supported": True,
            "access_token_signing_alg_values_supported": [signing.algorithm],
            "subject_token_types_supported": [
                "urn:ietf:params:oauth:token-type:access_token",
                "urn:ietf:params:oauth:token-type:jwt",
            ],
            # RFC 9449 §5.1
            "dpop_signing_alg_values_supported": list(config.dpop.algorithms),
        }
    )
    if config.authorization_details:
        # RFC 9396 §10: only the types this policy defines (absent when none is).
        document["authorization_details_types_supported"] = sorted(config.authorization_details)
    return document
