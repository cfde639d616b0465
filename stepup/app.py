"""Builds the stepup ASGI application from a policy: keys loaded up front, Redis and the
HTTP client opened in the lifespan (never at import time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from stepup.audit import Audit
from stepup.clock import Clock, SystemClock
from stepup.config import Config, Deployment
from stepup.errors import InvalidRequest
from stepup.factors.verify import Verifier
from stepup.policy import Policy
from stepup.protocol.subject import SubjectValidator, UpstreamKeys
from stepup.sealing import Sealer
from stepup.services import Services
from stepup.signing import SigningKeys
from stepup.storage.base import Store
from stepup.storage.redis import RedisStore, connect
from stepup.throttle import Throttle
from stepup.web import api, pages
from stepup.web.middleware import SecurityHeaders
from stepup.web.routes import API_PATHS, routes


class StartupError(Exception):
    pass


def load_keys(deployment: Deployment) -> tuple[SigningKeys, Sealer]:
    """Configured key files, or (embedded default only) files created once in the data dir."""
    if deployment.signing_key_file is not None:
        signing = SigningKeys.load(deployment.signing_key_file)
    elif deployment.embedded_redis:
        signing = SigningKeys.load_or_create(deployment.data_dir / "signing-keys.json")
    else:
        raise StartupError("set STEPUP_SIGNING_KEY_FILE (or server.signing_key_file)")
    if deployment.factor_key_file is not None:
        sealer = Sealer.load(deployment.factor_key_file)
    elif deployment.embedded_redis:
        sealer = Sealer.load_or_create(deployment.data_dir / "factor-keys.txt")
    else:
        raise StartupError("set STEPUP_FACTOR_KEY_FILE (or server.factor_key_file)")
    return signing, sealer


def build_services(
    config: Config,
    store: Store,
    http: httpx.AsyncClient,
    clock: Clock,
    signing: SigningKeys,
    sealer: Sealer,
) -> Services:
    audit = Audit(clock)
    throttle = Throttle(store, config.throttle, clock)
    return Services(
        config=config,
        clock=clock,
        store=store,
        signing=signing,
        sealer=sealer,
        subjects=SubjectValidator(config, UpstreamKeys(http, clock), clock),
        policy=Policy(config),
        throttle=throttle,
        audit=audit,
        verifier=Verifier(store, sealer, throttle, clock, audit, config.relying_party),
    )


def create_app(
    config: Config,
    *,
    redis_url: str | None = None,
    clock: Clock | None = None,
    templates: Path | None = None,
) -> Starlette:
    url = redis_url or config.deployment.redis_url
    if not url:
        raise StartupError("no Redis URL: start the embedded Redis or set STEPUP_REDIS_URL")
    signing, sealer = load_keys(config.deployment)
    env = pages.environment(templates) if templates else pages.environment()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = RedisStore(connect(url))
        async with httpx.AsyncClient(follow_redirects=False) as http:
            services = build_services(config, store, http, clock or SystemClock(), signing, sealer)
            app.state.services = services
            app.state.renderer = pages.Renderer(services, env)
            try:
                yield
            finally:
                await store.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path in API_PATHS:
            response = api.oauth_error(InvalidRequest(exc.detail))
            response.status_code = exc.status_code
            if exc.headers:
                response.headers.update(exc.headers)
            return response
        return pages.not_found_page(request.app.state.renderer, exc.status_code, exc.detail)

    return Starlette(
        routes=routes(),
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders, https=config.issuer.startswith("https://"))],
        exception_handlers={HTTPException: http_error},
    )
