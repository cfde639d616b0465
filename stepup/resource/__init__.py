"""The toolkit a resource server (an API) imports to protect itself with stepup.

    guard = Guard(ProtectedResource("https://api.example", [TrustedIssuer(STEPUP)]))
    app = Starlette(routes=..., middleware=[Middleware(StepUpMiddleware, guard=guard)])

    @requires(scope="payments:write", acr="urn:stepup:acr:mfa", max_age=300)
    async def pay(request): ...

Tokens are checked locally against the issuer's JWKS, or by introspection where a route
needs revocation to bite at once; refusals are RFC 6750 / RFC 9470 challenges pointing
at the RFC 9728 metadata document the middleware serves. A route bound to one transaction
hands it to the guard, `authorize(request, write, transaction=ExpectedDetail(...))`, which
checks it against the approved RFC 9396 details before a single-use token is spent.
"""

from stepup.resource.asgi import StepUpMiddleware, access_token, authorize, needs, requires
from stepup.resource.details import (
    ExpectedDetail,
    InsufficientAuthorizationDetails,
    find_detail,
    require_detail,
)
from stepup.resource.guard import Guard, ProtectedResource, bearer_token, credentials
from stepup.resource.levels import DEFAULT_LEVELS, LevelOrder
from stepup.resource.refusals import (
    Answer,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    Refusal,
    Unavailable,
)
from stepup.resource.requirement import Requirement, check
from stepup.resource.tokens import AccessToken, TokenVerifier, TrustedIssuer

__all__ = [
    "DEFAULT_LEVELS",
    "AccessToken",
    "Answer",
    "ExpectedDetail",
    "Guard",
    "InsufficientAuthorizationDetails",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "LevelOrder",
    "MissingToken",
    "ProtectedResource",
    "Refusal",
    "Requirement",
    "StepUpMiddleware",
    "TokenVerifier",
    "TrustedIssuer",
    "Unavailable",
    "access_token",
    "authorize",
    "bearer_token",
    "check",
    "credentials",
    "find_detail",
    "needs",
    "require_detail",
    "requires",
]
