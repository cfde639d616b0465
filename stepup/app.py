"""Builds the stepup ASGI application from a policy: keys loaded up front, Redis and the
HTTP client opened in the lifespan (never at import time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from stepup import serving
from stepup.audit import Audit, AuditKeyError, AuditKeys
from stepup.clock import Clock, SystemClock
from stepup.config import Config, Deployment
from stepup.dpop import Nonces
from stepup.errors import InvalidRequest
from stepup.factors.verify import Verifier
from stepup.keys import KeyWatch
from stepup.metrics import Metrics
from stepup.policy import Policy
from stepup.protocol.client_auth import RememberedHeaders
from stepup.protocol.subject import SubjectValidator, UpstreamKeys
from stepup.sealing import Sealer
from stepup.services import Services
from stepup.signing import SigningKeys
from stepup.storage.audit_stream import RedisAuditLog
from stepup.storage.base import ElevationIndex, Store
from stepup.storage.elevations import RedisElevationIndex
from stepup.storage.redis import STORAGE_ERRORS, RedisStore, connect
from stepup.throttle import Throttle
from stepup.web import api, pages
from stepup.web.front import Stepup
from stepup.web.middleware import Headers, SecurityHeaders
from stepup.web.observability import Observe, RequestMetrics
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


def signing_key_path(deployment: Deployment) -> Path:
    return deployment.signing_key_file or deployment.data_dir / "signing-keys.json"


def load_audit_keys(config: Config) -> AuditKeys:
    """The audit chain's HMAC key: configured, or (embedded default only) created once."""
    deployment = config.deployment
    try:
        if config.audit.key_file is not None:
            return AuditKeys.load(config.audit.key_file)
        if deployment.embedded_redis:
            return AuditKeys.load_or_create(deployment.data_dir / "audit-keys.txt")
    except AuditKeyError as exc:
        raise StartupError(str(exc)) from exc
    raise StartupError("set STEPUP_AUDIT_KEY_FILE (or audit.key_file)")


def build_services(
    config: Config,
    store: Store,
    http: httpx.AsyncClient,
    clock: Clock,
    signing: SigningKeys,
    sealer: Sealer,
    elevations: ElevationIndex,
) -> Services:
    audit = Audit(clock, buffer=config.audit.buffer, hold_lines=config.audit.log_lines == "batched")
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
        elevations=elevations,
        nonces=Nonces(
            sealer.derive_key("dpop-nonce"),
            config.dpop.nonce_lifetime,
            older=sealer.derive_older_keys("dpop-nonce"),
        ),
        remembered_headers=RememberedHeaders(),
    )


def create_app(
    config: Config,
    *,
    redis_url: str | None = None,
    clock: Clock | None = None,
    templates: Path | None = None,
    settle_heap: bool = False,
) -> Starlette:
    """The stepup ASGI app. `settle_heap` (for a server process, not for tests that build
    many apps in one process): once started, `serving.settle_heap`."""
    url = redis_url or config.deployment.redis_url
    if not url:
        raise StartupError("no Redis URL: start the embedded Redis or set STEPUP_REDIS_URL")
    signing, sealer = load_keys(config.deployment)
    audit_keys = load_audit_keys(config)
    env = pages.environment(templates) if templates else pages.environment()
    metrics = Metrics()
    table = routes()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = RedisStore(connect(url))
        clock_ = clock or SystemClock()
        elevations = RedisElevationIndex(store.redis, store)
        # The key file decides which key signs now (rotation); re-read while serving.
        watch = KeyWatch(signing_key_path(config.deployment), clock_)
        async with httpx.AsyncClient(follow_redirects=False) as http:
            services = build_services(
                config, store, http, clock_, watch.refresh() or signing, sealer, elevations
            )
            services.audit.observe(metrics.observe)
            app.state.services = services
            app.state.metrics = metrics
            app.state.renderer = pages.Renderer(services, env)
            keys_task = asyncio.create_task(watch.run(services), name="stepup-key-watch")
            try:
                async with services.audit.streaming(
                    RedisAuditLog(store.redis, store.execute),
                    audit_keys,
                    retention_days=config.audit.retention_days,
                    errors=STORAGE_ERRORS,
                ):
                    if settle_heap:
                        serving.settle_heap()
                    yield
            finally:
                keys_task.cancel()
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

    https = config.issuer.startswith("https://")
    return Stepup(
        routes=table,
        request_metrics=RequestMetrics(metrics, table),
        security_headers=Headers(https=https),
        lifespan=lifespan,
        middleware=[
            Middleware(Observe, metrics=metrics, routes=table),
            Middleware(SecurityHeaders, https=https),
        ],
        exception_handlers={HTTPException: http_error},
    )
