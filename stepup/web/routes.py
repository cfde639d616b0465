"""The whole route table of stepup on one screen."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from stepup.web import admin, api, observability, openapi, pages

STATIC = Path(__file__).resolve().parent.parent.parent / "static"

API_PATHS = frozenset(
    {
        "/.well-known/oauth-authorization-server",
        "/jwks",
        "/par",
        "/token",
        "/introspect",
        "/revoke",
        "/enroll",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
        *(f"/admin/{path}" for path in ("factors", "factors/remove", "elevations")),
        "/admin/elevations/revoke",
        "/admin/enrollments",
    }
)


def routes() -> list[BaseRoute]:
    return [
        Route("/.well-known/oauth-authorization-server", api.metadata_document, methods=["GET"]),
        Route("/jwks", api.jwks, methods=["GET"]),
        Route("/par", api.pushed_authorization, methods=["POST"]),
        Route("/token", api.token, methods=["POST"]),
        Route("/introspect", api.introspect, methods=["POST"]),
        Route("/revoke", api.revoke, methods=["POST"]),
        Route("/enroll", api.enroll, methods=["POST"]),
        Route("/authorize", pages.authorization, methods=["GET"]),
        Route("/interaction/{interaction_id}", pages.interaction, methods=["GET", "POST"]),
        Route("/enroll/{enrollment_id}", pages.enrol, methods=["GET", "POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        # The operator's: own bearer credentials, in no public document (README "Operations").
        Route("/metrics", observability.metrics_endpoint, methods=["GET"]),
        Route("/admin/factors", admin.factors, methods=["GET"]),
        Route("/admin/factors/remove", admin.remove_factor, methods=["POST"]),
        Route("/admin/elevations", admin.elevations, methods=["GET"]),
        Route("/admin/elevations/revoke", admin.revoke_elevations, methods=["POST"]),
        Route("/admin/enrollments", admin.enrollment, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
