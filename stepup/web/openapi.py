"""The OpenAPI 3.1 document of stepup's JSON endpoints, written by hand from the README.

It is what the endpoints promise on the wire: parameters with their types and the values the
specifications fix, client and resource-server authentication, and every documented answer
(RFC 6749 §5.2 errors included). The browser pages are not part of it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stepup.config import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from stepup.protocol.client_auth import AUTH_METHODS
from stepup.protocol.par import MAX_STATE, REQUEST_URI_PREFIX
from stepup.protocol.subject import MAX_TOKEN_LENGTH
from stepup.protocol.token_exchange import GRANT_TYPE
from stepup.web.api import JSONResponse

Schema = dict[str, Any]


# RFC 6749 §5.2: error and error_description use %x20-21 / %x23-5B / %x5D-7E only.
_ERROR_TEXT = r"^[\x20-\x21\x23-\x5B\x5D-\x7E]+$"
# RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR.
_SCOPE = r"^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$"
_BASE64URL = r"^[A-Za-z0-9_-]+$"
# A JWS in compact serialization (RFC 7515 §7.1): three base64url parts.
_COMPACT_JWS = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$"

# 400 error codes each endpoint may answer with (the README's list, by endpoint).
_PAR_ERRORS = [
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "unsupported_token_type",
    "invalid_scope",
    "invalid_target",
    "invalid_authorization_details",
    "invalid_dpop_proof",
    "use_dpop_nonce",
]
_TOKEN_ERRORS = [
    "invalid_request",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "unsupported_token_type",
    "invalid_scope",
    "invalid_target",
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "invalid_authorization_details",
]
_INTROSPECT_ERRORS = ["invalid_request"]
_REVOKE_ERRORS = ["invalid_request", "unauthorized_client", "unsupported_token_type"]
_ENROLL_ERRORS = [
    "invalid_request",
    "unauthorized_client",
    "unsupported_token_type",
    "invalid_dpop_proof",
    "use_dpop_nonce",
]

CLIENT_AUTH: list[dict[str, list[str]]] = [{"client": []}]
RESOURCE_SERVER_AUTH: list[dict[str, list[str]]] = [{"resourceServer": []}]
NO_AUTH: list[dict[str, list[str]]] = []


def _string(description: str, **keywords: Any) -> Schema:
    return {"type": "string", "description": description, **keywords}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _form(properties: Schema, required: list[str]) -> Schema:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


def _optional(schema: Schema) -> Schema:
    """An optional parameter with constraints: an empty value is allowed and counts as absent
    (RFC 6749 §3.1), whatever the constraints on a real value."""
    core = {key: value for key, value in schema.items() if key != "description"}
    wrapped: Schema = {"anyOf": [{"const": ""}, core]}
    if "description" in schema:
        wrapped["description"] = schema["description"]
    return wrapped


def _no_store() -> Schema:
    return {
        "Cache-Control": {
            "description": "RFC 6749 §5.1: answers carrying tokens or errors are never cached.",
            "required": True,
            "schema": {"const": "no-store"},
        }
    }


def _retry_after() -> Schema:
    return {
        "Retry-After": {
            "description": "Seconds to wait before trying again (RFC 9110 §10.2.3).",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }


def _error_schema(codes: list[str]) -> Schema:
    return {
        "type": "object",
        "description": "An RFC 6749 §5.2 error.",
        "required": ["error", "error_description"],
        "properties": {
            "error": {"enum": codes},
            "error_description": {
                "type": "string",
                "pattern": _ERROR_TEXT,
                "description": "Human-readable, ASCII without '\"' or '\\' (RFC 6749 §5.2).",
            },
            "error_uri": {"type": "string", "format": "uri"},
        },
    }


def _errors(codes: list[str], *, dpop: bool = False) -> Schema:
    """The error answers every authenticated JSON endpoint shares."""
    return {
        "400": {
            "description": "The request is refused (RFC 6749 §5.2).",
            "headers": {**_no_store(), **(_dpop_nonce() if dpop else {})},
            "content": _json(_error_schema(codes)),
        },
        "401": {
            "description": "Client authentication failed, or none was sent.",
            "headers": {
                **_no_store(),
                "WWW-Authenticate": {
                    "description": "The scheme to authenticate with (RFC 6749 §5.2).",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^Basic( |$)"},
                },
            },
            "content": _json(_error_schema(["invalid_client"])),
        },
        "503": {
            "description": "Redis or an upstream issuer's keys are unreachable: stepup fails closed.",
            "headers": {**_no_store(), **_retry_after()},
            "content": _json(_error_schema(["temporarily_unavailable"])),
        },
    }


def _dpop_header() -> list[Schema]:
    return [
        {
            "name": "DPoP",
            "in": "header",
            "required": False,
            "description": "RFC 9449 §4: a DPoP proof (typ dpop+jwt) for this request; binds "
            "the elevated token to its key (required when the request is bound to one).",
            "schema": {"type": "string", "pattern": _COMPACT_JWS},
        }
    ]


def _dpop_nonce() -> Schema:
    return {
        "DPoP-Nonce": {
            "description": "RFC 9449 §8: the nonce the next DPoP proof must carry (sent while "
            "the policy requires nonces, and with use_dpop_nonce).",
            "required": False,
            "schema": {"type": "string", "pattern": r"^[\x21\x23-\x5B\x5D-\x7E]+$"},
        }
    }


def _client_post_credentials() -> Schema:
    return {
        "client_id": _string(
            "client_secret_post: the client's id (with client_secret and no Authorization "
            "header). With Basic authentication it may be sent too and must name the same client."
        ),
        "client_secret": _string("client_secret_post: the client's secret (never with Basic)."),
    }


def _subject_token_parameters() -> Schema:
    return {
        "subject_token": _string(
            "The user's access token B: a JWT from a trusted upstream issuer, issued to this client.",
            minLength=1,
            maxLength=MAX_TOKEN_LENGTH,
            pattern=_COMPACT_JWS,
        ),
        "subject_token_type": {
            "enum": [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT],
            "description": "RFC 8693 §3: the type of subject_token.",
        },
    }


def _par_operation() -> Schema:
    properties: Schema = {
        **_subject_token_parameters(),
        "challenge": _string(
            "The raw WWW-Authenticate value the API sent (RFC 9470; RFC 9110 §11 grammar)."
        ),
        "acr_values": _string("Space-separated authentication levels; never lowers the policy's."),
        "max_age": _optional(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": 999_999_999,
                "description": "Seconds a previous proof may be reused; the smaller one wins.",
            }
        ),
        "scope": _optional(
            _string(
                "Space-separated scopes to elevate to; required unless the challenge names them.",
                pattern=_SCOPE,
            )
        ),
        "resource": _string(
            "RFC 8707: the API the elevated token is for, one of the client's resources.",
            format="uri",
        ),
        "redirect_uri": _string(
            "Exactly one of the client's registered redirect URIs.", format="uri"
        ),
        "state": _string("Returned unchanged to redirect_uri.", maxLength=MAX_STATE),
        "code_challenge": _string(
            "RFC 7636: BASE64URL(SHA-256(code_verifier)).", pattern="^[A-Za-z0-9_-]{43}$"
        ),
        "code_challenge_method": {"enum": ["S256"], "description": "plain is refused."},
        "response_type": _optional({"enum": ["code"], "description": "Only code (the default)."}),
        "authorization_details": _string(
            "RFC 9396 JSON array of objects, each with a `type` from "
            "authorization_details_types_supported and only the fields the policy declares "
            "for it (invalid_authorization_details otherwise); shown to the user, carried "
            "into the elevated token.",
            maxLength=8192,
        ),
        "dpop_jkt": _optional(
            _string(
                "RFC 9449 §10: the SHA-256 JWK thumbprint (RFC 7638) of the key the elevated "
                "token is to be bound to; must match a DPoP proof sent along.",
                pattern="^[A-Za-z0-9_-]{43}$",
            )
        ),
        **_client_post_credentials(),
    }
    required = [
        "subject_token",
        "subject_token_type",
        "resource",
        "redirect_uri",
        "code_challenge",
        "code_challenge_method",
    ]
    return {
        "post": {
            "operationId": "pushAuthorizationRequest",
            "summary": "Challenge intake (RFC 9126 shape)",
            "security": CLIENT_AUTH,
            "parameters": _dpop_header(),
            "requestBody": _form(properties, required),
            "responses": {
                "201": {
                    "description": "A one-time request_uri for the authorization endpoint.",
                    "headers": {**_no_store(), **_dpop_nonce()},
                    "content": _json(_ref("PushedAuthorizationResponse")),
                },
                **_errors(_PAR_ERRORS, dpop=True),
            },
        }
    }


def _token_operation() -> Schema:
    properties: Schema = {
        "grant_type": {"enum": [GRANT_TYPE], "description": "RFC 8693 token exchange only."},
        **_subject_token_parameters(),
        "code": _string("The step-up code from the redirect (one use).", minLength=1),
        "code_verifier": _string(
            "RFC 7636 §4.1: the PKCE verifier.", pattern="^[A-Za-z0-9._~-]{43,128}$"
        ),
        "resource": _optional(_string("RFC 8707: must equal the approved resource.", format="uri")),
        "audience": _string("RFC 8693: must equal the approved resource."),
        "scope": _optional(
            _string("Narrower than approved is fine, wider is invalid_scope.", pattern=_SCOPE)
        ),
        "requested_token_type": _optional({"enum": [TOKEN_TYPE_ACCESS_TOKEN]}),
        "authorization_details": _string(
            "RFC 9396 §6.1: the approved details again, or fewer of them (fewer list items); "
            "anything else is invalid_authorization_details.",
            maxLength=8192,
        ),
        **_client_post_credentials(),
    }
    required = ["grant_type", "subject_token", "subject_token_type", "code", "code_verifier"]
    return {
        "post": {
            "operationId": "exchangeToken",
            "summary": "Token exchange (RFC 8693) for an elevated token",
            "security": CLIENT_AUTH,
            "parameters": _dpop_header(),
            "requestBody": _form(properties, required),
            "responses": {
                "200": {
                    "description": "The elevated token (RFC 8693 §2.2.1); token_type DPoP "
                    "and cnf.jkt in the token when a DPoP proof came with the request.",
                    "headers": {**_no_store(), **_dpop_nonce()},
                    "content": _json(_ref("TokenResponse")),
                },
                **_errors(_TOKEN_ERRORS, dpop=True),
            },
        }
    }


def _token_parameters() -> Schema:
    return {
        "token": _string("The elevated token.", minLength=1),
        "token_type_hint": _string("RFC 7009 §2.1 / RFC 7662 §2.1: a hint, may be ignored."),
    }


def _introspect_operation() -> Schema:
    return {
        "post": {
            "operationId": "introspectToken",
            "summary": "Token introspection (RFC 7662), resource servers only",
            "security": RESOURCE_SERVER_AUTH,
            "requestBody": _form({**_token_parameters(), **_client_post_credentials()}, ["token"]),
            "responses": {
                "200": {
                    "description": "The token's state, for the calling resource server.",
                    "headers": _no_store(),
                    "content": _json(_ref("IntrospectionResponse")),
                },
                **_errors(_INTROSPECT_ERRORS),
            },
        }
    }


def _revoke_operation() -> Schema:
    return {
        "post": {
            "operationId": "revokeToken",
            "summary": "Token revocation (RFC 7009)",
            "description": "The client the token was issued to, or a resource server it is for.",
            "security": [*CLIENT_AUTH, *RESOURCE_SERVER_AUTH],
            "requestBody": _form({**_token_parameters(), **_client_post_credentials()}, ["token"]),
            "responses": {
                "200": {
                    "description": "Revoked, or unknown or invalid (RFC 7009 §2.2): an empty body.",
                    "headers": _no_store(),
                },
                **_errors(_REVOKE_ERRORS),
            },
        }
    }


def _enroll_operation() -> Schema:
    properties: Schema = {
        **_subject_token_parameters(),
        "redirect_uri": _optional(
            _string(
                "One of the client's registered redirect URIs, offered when done.", format="uri"
            )
        ),
        **_client_post_credentials(),
    }
    return {
        "post": {
            "operationId": "createEnrollment",
            "summary": "A one-time enrolment link for the user's browser",
            "security": CLIENT_AUTH,
            "parameters": _dpop_header(),
            "requestBody": _form(properties, ["subject_token", "subject_token_type"]),
            "responses": {
                "201": {
                    "description": "The enrolment link.",
                    "headers": {**_no_store(), **_dpop_nonce()},
                    "content": _json(_ref("EnrollmentResponse")),
                },
                **_errors(_ENROLL_ERRORS, dpop=True),
            },
        }
    }


def _get(operation_id: str, summary: str, responses: Schema) -> Schema:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": NO_AUTH,
            "responses": responses,
        }
    }


def _schemas(issuer: str) -> Schema:
    def endpoint(path: str) -> Schema:
        return {"const": issuer + path}

    private_members = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
    strings: Schema = {"type": "array", "items": {"type": "string"}}
    return {
        "AuthorizationServerMetadata": {
            "type": "object",
            "description": "RFC 8414 authorization server metadata.",
            "required": [
                "issuer",
                "authorization_endpoint",
                "token_endpoint",
                "pushed_authorization_request_endpoint",
                "introspection_endpoint",
                "revocation_endpoint",
                "jwks_uri",
                "enrollment_endpoint",
                "response_types_supported",
                "grant_types_supported",
                "code_challenge_methods_supported",
                "token_endpoint_auth_methods_supported",
                "acr_values_supported",
            ],
            "properties": {
                "issuer": {"const": issuer},
                "authorization_endpoint": endpoint("/authorize"),
                "token_endpoint": endpoint("/token"),
                "pushed_authorization_request_endpoint": endpoint("/par"),
                "introspection_endpoint": endpoint("/introspect"),
                "revocation_endpoint": endpoint("/revoke"),
                "jwks_uri": endpoint("/jwks"),
                "enrollment_endpoint": endpoint("/enroll"),
                "require_pushed_authorization_requests": {"type": "boolean"},
                "response_types_supported": {"const": ["code"]},
                "response_modes_supported": {"const": ["query"]},
                "grant_types_supported": {
                    "type": "array",
                    "items": {"type": "string"},
                    "contains": {"const": GRANT_TYPE},
                },
                "code_challenge_methods_supported": {"const": ["S256"]},
                "token_endpoint_auth_methods_supported": _auth_methods(),
                "introspection_endpoint_auth_methods_supported": _auth_methods(),
                "revocation_endpoint_auth_methods_supported": _auth_methods(),
                "pushed_authorization_request_endpoint_auth_methods_supported": _auth_methods(),
                "acr_values_supported": {**strings, "minItems": 1},
                "scopes_supported": strings,
                "authorization_response_iss_parameter_supported": {"const": True},
                "access_token_signing_alg_values_supported": {
                    "type": "array",
                    "items": {"enum": ["ES256", "EdDSA"]},
                    "minItems": 1,
                },
                "subject_token_types_supported": {
                    "type": "array",
                    "items": {"enum": [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT]},
                },
                "dpop_signing_alg_values_supported": strings,
                "authorization_details_types_supported": strings,
            },
        },
        "JsonWebKeySet": {
            "type": "object",
            "description": "stepup's public signing keys (RFC 7517); never a private member.",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["kty", "kid", "use", "alg", "crv", "x"],
                        "properties": {
                            "kty": {"enum": ["EC", "OKP"]},
                            "kid": {"type": "string", "minLength": 1},
                            "use": {"const": "sig"},
                            "alg": {"enum": ["ES256", "EdDSA"]},
                            "crv": {"enum": ["P-256", "Ed25519"]},
                            "x": {"type": "string", "pattern": _BASE64URL},
                            "y": {"type": "string", "pattern": _BASE64URL},
                        },
                        "not": {"anyOf": [{"required": [name]} for name in private_members]},
                    },
                }
            },
        },
        "PushedAuthorizationResponse": {
            "type": "object",
            "description": "RFC 9126 §2.2.",
            "required": ["request_uri", "expires_in"],
            "additionalProperties": False,
            "properties": {
                "request_uri": {
                    "type": "string",
                    "pattern": "^" + _literal(REQUEST_URI_PREFIX) + "[A-Za-z0-9_-]+$",
                },
                "expires_in": {"type": "integer", "minimum": 1},
            },
        },
        "TokenResponse": {
            "type": "object",
            "description": "RFC 8693 §2.2.1; access_token is an RFC 9068 JWT.",
            "required": ["access_token", "issued_token_type", "token_type", "expires_in", "scope"],
            "additionalProperties": False,
            "properties": {
                "access_token": {"type": "string", "pattern": _COMPACT_JWS},
                "issued_token_type": {"const": TOKEN_TYPE_ACCESS_TOKEN},
                "token_type": {"enum": ["Bearer", "DPoP"]},
                "expires_in": {"type": "integer", "minimum": 1},
                "scope": {"type": "string", "pattern": _SCOPE},
                "authorization_details": {"type": "array", "items": {"type": "object"}},
            },
        },
        "IntrospectionResponse": {
            "description": "RFC 7662 §2.2.",
            "oneOf": [
                {
                    "type": "object",
                    "description": "Unknown, revoked, expired, or for another resource server.",
                    "required": ["active"],
                    "additionalProperties": False,
                    "properties": {"active": {"const": False}},
                },
                {
                    "type": "object",
                    "required": [
                        "active",
                        "iss",
                        "sub",
                        "aud",
                        "client_id",
                        "scope",
                        "token_type",
                        "exp",
                        "iat",
                        "jti",
                        "acr",
                        "amr",
                        "auth_time",
                    ],
                    "properties": {
                        "active": {"const": True},
                        "iss": {"const": issuer},
                        "sub": {"type": "string", "minLength": 1},
                        "aud": {"type": "string", "minLength": 1},
                        "client_id": {"type": "string", "minLength": 1},
                        "scope": {"type": "string", "pattern": _SCOPE},
                        "token_type": {"enum": ["Bearer", "DPoP"]},
                        "exp": {"type": "integer", "minimum": 0},
                        "iat": {"type": "integer", "minimum": 0},
                        "jti": {"type": "string", "minLength": 1},
                        "acr": {"type": "string", "minLength": 1},
                        "amr": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "auth_time": {"type": "integer", "minimum": 0},
                        "cnf": {
                            "type": "object",
                            "required": ["jkt"],
                            "properties": {"jkt": {"type": "string", "pattern": _BASE64URL}},
                        },
                        "authorization_details": {"type": "array", "items": {"type": "object"}},
                        "single_use": {
                            "const": True,
                            "description": "This answer was the token's one use: never cache it.",
                        },
                    },
                },
            ],
        },
        "EnrollmentResponse": {
            "type": "object",
            "required": ["enrollment_uri", "expires_in"],
            "additionalProperties": False,
            "properties": {
                "enrollment_uri": {
                    "type": "string",
                    "pattern": "^" + _literal(issuer + "/enroll/") + "[A-Za-z0-9_-]+$",
                },
                "expires_in": {"type": "integer", "minimum": 1},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "redis"],
            "properties": {"status": {"const": "ready"}, "redis": {"const": "ok"}},
        },
        "NotReady": {
            "type": "object",
            "required": ["status", "redis"],
            "properties": {"status": {"const": "unavailable"}, "redis": {"const": "unreachable"}},
        },
    }


def _auth_methods() -> Schema:
    return {"type": "array", "items": {"enum": AUTH_METHODS}, "minItems": 1}


def _literal(text: str) -> str:
    """`text` as a regular expression matching only itself (ECMA-262 and Python alike)."""
    return "".join("\\" + char if char in r"\^$.|?*+()[]{}/" else char for char in text)


def _version() -> str:
    try:
        return version("stepup")
    except PackageNotFoundError:
        return "0"


def openapi_document(issuer: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a stepup serving at `issuer`."""
    cacheable = {
        "Cache-Control": {
            "description": "Public and cacheable for five minutes.",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stepup",
            "version": _version(),
            "description": (
                "Step-up authentication: RFC 9470 challenges in (pushed authorization requests),"
                " RFC 8693 elevated tokens out, RFC 7662 introspection and RFC 7009 revocation."
                " Request bodies are application/x-www-form-urlencoded, each parameter at most"
                " once; an empty value counts as absent (RFC 6749 §3.1)."
            ),
        },
        "servers": [{"url": issuer}],
        "paths": {
            "/.well-known/oauth-authorization-server": _get(
                "authorizationServerMetadata",
                "Authorization server metadata (RFC 8414)",
                {
                    "200": {
                        "description": "Every endpoint and capability.",
                        "headers": cacheable,
                        "content": _json(_ref("AuthorizationServerMetadata")),
                    }
                },
            ),
            "/jwks": _get(
                "jwks",
                "Public signing keys of the elevated tokens",
                {
                    "200": {
                        "description": "A JWK Set; the first key signs.",
                        "headers": cacheable,
                        "content": _json(_ref("JsonWebKeySet")),
                    }
                },
            ),
            "/par": _par_operation(),
            "/token": _token_operation(),
            "/introspect": _introspect_operation(),
            "/revoke": _revoke_operation(),
            "/enroll": _enroll_operation(),
            "/healthz": _get(
                "liveness",
                "Liveness",
                {"200": {"description": "The process answers.", "content": _json(_ref("Health"))}},
            ),
            "/readyz": _get(
                "readiness",
                "Readiness: Redis is reachable",
                {
                    "200": {"description": "Ready.", "content": _json(_ref("Ready"))},
                    "503": {
                        "description": "Redis is unreachable.",
                        "headers": _retry_after(),
                        "content": _json(_ref("NotReady")),
                    },
                },
            ),
        },
        "components": {
            "schemas": _schemas(issuer),
            "securitySchemes": {
                "client": {
                    "type": "http",
                    "scheme": "basic",
                    "description": (
                        "client_secret_basic: client_id and client_secret, each form-urlencoded"
                        " (RFC 6749 §2.3.1). client_secret_post (both in the body, no"
                        " Authorization header) is accepted too."
                    ),
                },
                "resourceServer": {
                    "type": "http",
                    "scheme": "basic",
                    "description": (
                        "A resource server's id and secret, as for client_secret_basic"
                        " (or in the body as client_id and client_secret)."
                    ),
                },
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document, built once per application."""
    state = request.app.state
    document: dict[str, Any] | None = getattr(state, "openapi_document", None)
    if document is None:
        document = openapi_document(state.services.config.issuer)
        state.openapi_document = document
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
