"""The policy file (TOML) and the deployment settings that environment variables override.

Every problem in a file is collected before failing, so `stepup check` can list them all.
Nothing is invented: a missing key that has no documented default is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stepup.details import DetailType, read_types
from stepup.jwtparts import ASYMMETRIC_ALGORITHMS

TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"

ACR_MFA = "urn:stepup:acr:mfa"
ACR_PHR = "urn:stepup:acr:phr"
ACR_PHRH = "urn:stepup:acr:phrh"

FACTOR_KINDS = frozenset({"totp", "webauthn", "recovery"})
DEFAULT_ALGORITHMS = ("ES256", "ES384", "Ed25519", "RS256", "PS256")
ALLOWED_ALGORITHMS = ASYMMETRIC_ALGORITHMS


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Upstream:
    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    discovery: bool = False
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # "at+jwt" (RFC 9068) by default; "jwt" also admits `typ: JWT` or no typ at all.
    token_types: tuple[str, ...] = ("at+jwt",)
    leeway: int = 30


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    secret_hash: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    # The `client_id`/`azp` the upstream IdP puts in this client's access tokens.
    upstream_client_ids: tuple[str, ...] = ()

    def presented_ids(self) -> tuple[str, ...]:
        return self.upstream_client_ids or (self.client_id,)


@dataclass(frozen=True)
class ResourceServer:
    id: str
    name: str
    secret_hash: str
    resources: tuple[str, ...]


@dataclass(frozen=True)
class Level:
    uri: str
    rank: int
    factors: frozenset[str]
    user_verification: bool = False
    device_bound: bool = False
    description: str = ""


@dataclass(frozen=True)
class ScopeRule:
    name: str
    acr: str
    description: str
    max_age: int
    token_lifetime: int
    single_use: bool = False
    resources: tuple[str, ...] = ()
    # Let the elevated token outlive the subject token it was exchanged for.
    beyond_subject_exp: bool = False


@dataclass(frozen=True)
class Limits:
    request_uri_lifetime: int = 90
    interaction_lifetime: int = 600
    code_lifetime: int = 60
    max_token_lifetime: int = 900
    # How recently the subject token must have been issued to enrol a first factor.
    first_factor_max_age: int = 600
    enrollment_lifetime: int = 600
    enrollment_during_stepup: bool = True


@dataclass(frozen=True)
class Throttle:
    free_attempts: int = 3
    base_delay: int = 2
    max_delay: int = 300
    max_failures: int = 10
    lockout: int = 900


@dataclass(frozen=True)
class WebAuthn:
    """The relying party stepup is to authenticators (WebAuthn §5.4.2, §13.4.9)."""

    rp_id: str
    origins: tuple[str, ...]
    rp_name: str = "stepup"
    # How long a ceremony's challenge stays valid; it is also single-use.
    challenge_lifetime: int = 120


@dataclass(frozen=True)
class Factors:
    # NIST SP 800-63B §5.1.2: recovery codes are look-up secrets; ten is what people expect.
    recovery_codes: int = 10
    # Removing the last factor that meets a level: "refuse", or "warn" and ask to confirm.
    last_factor: str = "refuse"


def default_webauthn(issuer: str) -> WebAuthn:
    parts = urlsplit(issuer)
    return WebAuthn(
        rp_id=parts.hostname or "localhost", origins=(f"{parts.scheme}://{parts.netloc}",)
    )


@dataclass(frozen=True)
class DPoP:
    """Sender-constrained tokens (RFC 9449) at stepup's intake and token endpoints."""

    # Asymmetric JWS algorithms a proof may use (advertised as dpop_signing_alg_values_supported).
    algorithms: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "Ed25519", "PS256", "RS256")
    # How old a proof's iat may be, and how far ahead of stepup's clock, in seconds.
    iat_window: int = 60
    iat_skew: int = 5
    # RFC 9449 §8: require a server nonce in every proof (answered with use_dpop_nonce).
    require_nonce: bool = False
    # How long one nonce slot lasts; a nonce passes in its own slot and the next one.
    nonce_lifetime: int = 300


AUDIT_LOG_LINES = ("batched", "immediate")


@dataclass(frozen=True)
class AuditSettings:
    # How long audit entries stay in the Redis Stream (trimmed by XTRIM MINID).
    retention_days: int = 90
    key_file: Path | None = None  # STEPUP_AUDIT_KEY_FILE; embedded default: data_dir
    buffer: int = 10_000  # events held in memory while Redis is unreachable
    # When an event's JSON line is written (logs.JsonLinesHandler): "batched", with the other
    # lines of its event-loop iteration at the iteration's end (one write for all); or
    # "immediate", as it is recorded, so it is out of the process before its answer leaves.
    log_lines: str = "batched"


@dataclass(frozen=True)
class Operator:
    """Bearer credentials of the operator's endpoints; None turns the endpoint off."""

    admin_token_hash: str | None = None
    metrics_token_hash: str | None = None


@dataclass(frozen=True)
class Deployment:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    data_dir: Path = Path(".stepup")
    signing_key_file: Path | None = None
    factor_key_file: Path | None = None

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url


@dataclass(frozen=True)
class Config:
    issuer: str
    upstreams: tuple[Upstream, ...]
    clients: Mapping[str, Client]
    resource_servers: Mapping[str, ResourceServer]
    levels: Mapping[str, Level]
    aliases: Mapping[str, str]
    scopes: Mapping[str, ScopeRule]
    limits: Limits = field(default_factory=Limits)
    throttle: Throttle = field(default_factory=Throttle)
    deployment: Deployment = field(default_factory=Deployment)
    webauthn: WebAuthn | None = None  # None: derived from the issuer
    factors: Factors = field(default_factory=Factors)
    audit: AuditSettings = field(default_factory=AuditSettings)
    operator: Operator = field(default_factory=Operator)
    dpop: DPoP = field(default_factory=DPoP)
    # RFC 9396 types clients may send, by name; none: authorization_details is refused.
    authorization_details: Mapping[str, DetailType] = field(default_factory=dict)

    @property
    def relying_party(self) -> WebAuthn:
        return self.webauthn or default_webauthn(self.issuer)

    def level(self, uri: str) -> Level | None:
        return self.levels.get(self.aliases.get(uri, uri))

    def upstream(self, issuer: str) -> Upstream | None:
        for upstream in self.upstreams:
            if upstream.issuer == issuer:
                return upstream
        return None


DEFAULT_LEVELS: dict[str, Level] = {
    ACR_MFA: Level(
        ACR_MFA,
        1,
        frozenset({"totp", "webauthn", "recovery"}),
        description="a second factor",
    ),
    ACR_PHR: Level(
        ACR_PHR,
        2,
        frozenset({"webauthn"}),
        user_verification=True,
        description="a phishing-resistant passkey or security key",
    ),
    ACR_PHRH: Level(
        ACR_PHRH,
        3,
        frozenset({"webauthn"}),
        user_verification=True,
        device_bound=True,
        description="a device-bound passkey or security key",
    ),
}


def hash_secret(secret: str) -> str:
    # Client and resource-server secrets are high-entropy, so a fast hash is right (no slow
    # hash on the hot path); the prefix leaves room for another scheme later.
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    return parse(raw, base_dir=path.parent, environ=os.environ if environ is None else environ)


def parse(
    raw: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Config:
    reader = _Reader(base_dir)
    config = reader.config(raw, environ or {})
    if reader.problems or config is None:
        raise ConfigError(reader.problems)
    return config


_REQUIRED: Any = object()


class _Reader:
    """Walks the raw TOML, recording every problem instead of stopping at the first."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- typed getters -------------------------------------------------------------------

    def _get(self, table: Mapping[str, Any], key: str, where: str, kind: type, default: Any) -> Any:
        if key not in table:
            if default is _REQUIRED:
                self.problem(where, f"missing required key '{key}'")
            return None if default is _REQUIRED else default
        value = table[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.problem(f"{where}.{key}", f"expected {kind.__name__}, got {type(value).__name__}")
            return None if default is _REQUIRED else default
        return value

    def string(
        self, table: Mapping[str, Any], key: str, where: str, default: Any = _REQUIRED
    ) -> Any:
        value = self._get(table, key, where, str, default)
        if isinstance(value, str) and not value and default is _REQUIRED:
            self.problem(f"{where}.{key}", "must not be empty")
        return value

    def integer(self, table: Mapping[str, Any], key: str, where: str, default: int) -> int:
        value = self._get(table, key, where, int, default)
        if value is not None and value < 0:
            self.problem(f"{where}.{key}", "must not be negative")
        return int(value) if value is not None else default

    def boolean(self, table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        return bool(self._get(table, key, where, bool, default))

    def strings(
        self, table: Mapping[str, Any], key: str, where: str, default: Any = _REQUIRED
    ) -> tuple[str, ...]:
        value = self._get(table, key, where, list, default)
        if value is None:
            return ()
        if not all(isinstance(item, str) and item for item in value):
            self.problem(f"{where}.{key}", "expected a list of non-empty strings")
            return ()
        return tuple(value)

    def table(self, raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = self._get(raw, key, where, dict, {})
        return value if isinstance(value, dict) else {}

    def tables(self, raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(key, "expected an array of tables ([[" + key + "]])")
            return []
        return value

    def no_unknown(self, table: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in sorted(set(table) - known):
            self.problem(where, f"unknown key '{key}'")

    # -- sections -----------------------------------------------------------------------

    def config(self, raw: Mapping[str, Any], environ: Mapping[str, str]) -> Config | None:
        self.no_unknown(
            raw,
            {
                "issuer",
                "server",
                "limits",
                "throttle",
                "upstream",
                "clients",
                "resource_servers",
                "acr",
                "scopes",
                "webauthn",
                "factors",
                "audit",
                "admin",
                "metrics",
                "dpop",
                "authorization_details",
            },
            "policy",
        )
        issuer = environ.get("STEPUP_ISSUER") or self.string(raw, "issuer", "policy")
        if issuer:
            self.check_issuer(issuer)
        deployment = self.deployment(self.table(raw, "server", "policy"), environ)
        limits = self.limits(self.table(raw, "limits", "policy"))
        throttle = self.throttle(self.table(raw, "throttle", "policy"))
        levels, aliases = self.levels(self.table(raw, "acr", "policy"))
        webauthn = self.webauthn(self.table(raw, "webauthn", "policy"), issuer)
        factors = self.factors(self.table(raw, "factors", "policy"))
        upstreams = tuple(
            u
            for i, t in enumerate(self.tables(raw, "upstream"))
            if (u := self.upstream(t, f"upstream[{i}]")) is not None
        )
        if not upstreams:
            self.problem("policy", "at least one [[upstream]] issuer must be trusted")
        clients: dict[str, Client] = {}
        for i, t in enumerate(self.tables(raw, "clients")):
            client = self.client(t, f"clients[{i}]")
            if client is None:
                continue
            if client.client_id in clients:
                self.problem(f"clients[{i}]", f"duplicate client_id '{client.client_id}'")
            clients[client.client_id] = client
        servers: dict[str, ResourceServer] = {}
        for i, t in enumerate(self.tables(raw, "resource_servers")):
            server = self.resource_server(t, f"resource_servers[{i}]")
            if server is None:
                continue
            if server.id in servers:
                self.problem(f"resource_servers[{i}]", f"duplicate id '{server.id}'")
            servers[server.id] = server
        scopes_raw = self.table(raw, "scopes", "policy")
        scopes: dict[str, ScopeRule] = {}
        for name, t in scopes_raw.items():
            if not isinstance(t, dict):
                self.problem(f"scopes.{name}", "expected a table")
                continue
            rule = self.scope(name, t, levels, aliases, limits)
            if rule is not None:
                scopes[name] = rule
        self.separation_of_duties(clients, servers, scopes)
        audit = self.audit(self.table(raw, "audit", "policy"), environ)
        operator = self.operator(raw)
        self.operator_separation(operator, clients, servers)
        dpop = self.dpop(self.table(raw, "dpop", "policy"))
        detail_types = read_types(
            self.table(raw, "authorization_details", "policy"),
            self,
            list(scopes),
            list(clients),
        )
        if self.problems or not issuer:
            return None
        return Config(
            issuer=issuer,
            upstreams=upstreams,
            clients=clients,
            resource_servers=servers,
            levels=levels,
            aliases=aliases,
            scopes=scopes,
            limits=limits,
            throttle=throttle,
            deployment=deployment,
            webauthn=webauthn,
            factors=factors,
            audit=audit,
            operator=operator,
            dpop=dpop,
            authorization_details=detail_types,
        )

    def check_issuer(self, issuer: str) -> None:
        # RFC 8414 §2: https, no query, no fragment (plain http only for loopback development).
        parts = urlsplit(issuer)
        if parts.query or parts.fragment:
            self.problem("policy.issuer", "must have no query or fragment")
        if not secure_url(issuer):
            self.problem("policy.issuer", "must be https (http only for localhost)")
        if issuer.endswith("/"):
            self.problem("policy.issuer", "must not end with '/'")

    def deployment(self, t: Mapping[str, Any], environ: Mapping[str, str]) -> Deployment:
        where = "server"
        self.no_unknown(
            t,
            {"host", "port", "redis_url", "data_dir", "signing_key_file", "factor_key_file"},
            where,
        )
        host = environ.get("STEPUP_HOST") or self.string(t, "host", where, "127.0.0.1")
        port_text = environ.get("STEPUP_PORT")
        port = self.integer(t, "port", where, 8000)
        if not 1 <= port <= 65535:
            self.problem(f"{where}.port", "must be a port number (1-65535)")
        if port_text is not None:
            if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
                self.problem("STEPUP_PORT", "must be a port number (1-65535)")
            else:
                port = int(port_text)
        redis_url = environ.get("STEPUP_REDIS_URL") or self.string(t, "redis_url", where, "")
        data_dir = environ.get("STEPUP_DATA_DIR") or self.string(t, "data_dir", where, ".stepup")
        signing = environ.get("STEPUP_SIGNING_KEY_FILE") or self.string(
            t, "signing_key_file", where, ""
        )
        factor = environ.get("STEPUP_FACTOR_KEY_FILE") or self.string(
            t, "factor_key_file", where, ""
        )
        return Deployment(
            host=host,
            port=port,
            redis_url=redis_url or None,
            data_dir=self.path(data_dir),
            signing_key_file=self.path(signing) if signing else None,
            factor_key_file=self.path(factor) if factor else None,
        )

    def path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def limits(self, t: Mapping[str, Any]) -> Limits:
        defaults = Limits()
        known = set(Limits.__dataclass_fields__)
        self.no_unknown(t, known, "limits")
        values: dict[str, Any] = {}
        for name in known:
            default = getattr(defaults, name)
            if isinstance(default, bool):
                values[name] = self.boolean(t, name, "limits", default)
            else:
                values[name] = self.integer(t, name, "limits", default)
                if values[name] == 0:
                    self.problem(f"limits.{name}", "must be positive")
        return Limits(**values)

    def throttle(self, t: Mapping[str, Any]) -> Throttle:
        defaults = Throttle()
        known = set(Throttle.__dataclass_fields__)
        self.no_unknown(t, known, "throttle")
        values = {
            name: self.integer(t, name, "throttle", getattr(defaults, name)) for name in known
        }
        throttle = Throttle(**values)
        # NIST SP 800-63B §5.2.2: no more than 100 consecutive failed attempts.
        if not 1 <= throttle.max_failures <= 100:
            self.problem("throttle.max_failures", "must be between 1 and 100 (NIST SP 800-63B)")
        if throttle.free_attempts >= throttle.max_failures:
            self.problem("throttle.free_attempts", "must be below max_failures")
        return throttle

    def webauthn(self, t: Mapping[str, Any], issuer: str | None) -> WebAuthn | None:
        where = "webauthn"
        self.no_unknown(t, {"rp_id", "rp_name", "origins", "challenge_lifetime"}, where)
        if not t or not issuer:
            return None
        default = default_webauthn(issuer)
        rp_id = self.string(t, "rp_id", where, default.rp_id)
        origins = self.strings(t, "origins", where, list(default.origins))
        for origin in origins:
            host = urlsplit(origin).hostname or ""
            # WebAuthn §5.1.4.1: the RP ID must be the origin's host or a registrable suffix.
            if not secure_url(origin) or urlsplit(origin).path not in ("", "/"):
                self.problem(
                    f"{where}.origins", f"{origin!r} is not an https (or localhost) origin"
                )
            elif host != rp_id and not host.endswith("." + rp_id):
                self.problem(f"{where}.rp_id", f"{rp_id!r} is not a suffix of {origin!r}")
        lifetime = self.integer(t, "challenge_lifetime", where, default.challenge_lifetime)
        if not 10 <= lifetime <= 600:
            self.problem(f"{where}.challenge_lifetime", "must be between 10 and 600 seconds")
        return WebAuthn(
            rp_id=rp_id,
            origins=tuple(o.rstrip("/") for o in origins),
            rp_name=self.string(t, "rp_name", where, default.rp_name),
            challenge_lifetime=lifetime,
        )

    def dpop(self, t: Mapping[str, Any]) -> DPoP:
        where = "dpop"
        defaults = DPoP()
        self.no_unknown(t, set(DPoP.__dataclass_fields__), where)
        algorithms = self.strings(t, "algorithms", where, list(defaults.algorithms))
        unsafe = sorted(set(algorithms) - ALLOWED_ALGORITHMS)
        if unsafe or not algorithms:
            # RFC 9449 §4.3 step 5: never `none` or a MAC algorithm.
            self.problem(f"{where}.algorithms", f"asymmetric JWS algorithms only, not {unsafe}")
        window = self.integer(t, "iat_window", where, defaults.iat_window)
        if not 5 <= window <= 600:
            self.problem(f"{where}.iat_window", "must be between 5 and 600 seconds")
        skew = self.integer(t, "iat_skew", where, defaults.iat_skew)
        if skew > 60:
            self.problem(f"{where}.iat_skew", "must be between 0 and 60 seconds")
        lifetime = self.integer(t, "nonce_lifetime", where, defaults.nonce_lifetime)
        if not 10 <= lifetime <= 3600:
            self.problem(f"{where}.nonce_lifetime", "must be between 10 and 3600 seconds")
        return DPoP(
            algorithms=tuple(dict.fromkeys(algorithms)),
            iat_window=window,
            iat_skew=skew,
            require_nonce=self.boolean(t, "require_nonce", where, defaults.require_nonce),
            nonce_lifetime=lifetime,
        )

    def factors(self, t: Mapping[str, Any]) -> Factors:
        where = "factors"
        defaults = Factors()
        self.no_unknown(t, {"recovery_codes", "last_factor"}, where)
        count = self.integer(t, "recovery_codes", where, defaults.recovery_codes)
        if not 4 <= count <= 20:
            self.problem(f"{where}.recovery_codes", "must be between 4 and 20")
        last = self.string(t, "last_factor", where, defaults.last_factor)
        if last not in ("refuse", "warn"):
            self.problem(f"{where}.last_factor", "must be 'refuse' or 'warn'")
        return Factors(recovery_codes=count, last_factor=last)

    def levels(self, t: Mapping[str, Any]) -> tuple[dict[str, Level], dict[str, str]]:
        self.no_unknown(t, {"levels", "aliases"}, "acr")
        levels = dict(DEFAULT_LEVELS)
        for uri, lt in self.table(t, "levels", "acr").items():
            where = f"acr.levels.{uri!r}"
            if not isinstance(lt, dict):
                self.problem(where, "expected a table")
                continue
            self.no_unknown(
                lt, {"rank", "factors", "user_verification", "device_bound", "description"}, where
            )
            factors = frozenset(self.strings(lt, "factors", where))
            for unknown in sorted(factors - FACTOR_KINDS):
                self.problem(where, f"unknown factor '{unknown}' (known: {sorted(FACTOR_KINDS)})")
            if not factors:
                self.problem(where, "must name at least one factor")
            levels[uri] = Level(
                uri=uri,
                rank=self.integer(lt, "rank", where, 1),
                factors=factors,
                user_verification=self.boolean(lt, "user_verification", where, False),
                device_bound=self.boolean(lt, "device_bound", where, False),
                description=self.string(lt, "description", where, ""),
            )
        aliases: dict[str, str] = {}
        for alias, target in self.table(t, "aliases", "acr").items():
            if not isinstance(target, str) or target not in levels:
                self.problem(f"acr.aliases.{alias!r}", f"points to unknown level {target!r}")
            elif alias in levels:
                self.problem(f"acr.aliases.{alias!r}", "is already a level")
            else:
                aliases[alias] = target
        return levels, aliases

    def upstream(self, t: Mapping[str, Any], where: str) -> Upstream | None:
        self.no_unknown(
            t,
            {
                "issuer",
                "audiences",
                "jwks_uri",
                "jwks_file",
                "discovery",
                "algorithms",
                "token_types",
                "leeway",
            },
            where,
        )
        issuer = self.string(t, "issuer", where)
        audiences = self.strings(t, "audiences", where)
        jwks_uri = self.string(t, "jwks_uri", where, None)
        jwks_file = self.string(t, "jwks_file", where, None)
        discovery = self.boolean(t, "discovery", where, False)
        sources = sum(1 for s in (jwks_uri, jwks_file, discovery or None) if s)
        if sources != 1:
            self.problem(where, "set exactly one of jwks_uri, jwks_file or discovery = true")
        if jwks_uri and not secure_url(jwks_uri):
            self.problem(f"{where}.jwks_uri", "must be https (http only for localhost)")
        algorithms = self.strings(t, "algorithms", where, list(DEFAULT_ALGORITHMS))
        for alg in algorithms:
            if alg not in ALLOWED_ALGORITHMS:
                self.problem(
                    f"{where}.algorithms", f"'{alg}' is not an allowed asymmetric algorithm"
                )
        token_types = self.strings(t, "token_types", where, ["at+jwt"])
        for typ in token_types:
            if typ not in ("at+jwt", "jwt"):
                self.problem(f"{where}.token_types", f"'{typ}' is not one of at+jwt, jwt")
        leeway = self.integer(t, "leeway", where, 30)
        if leeway > 300:
            self.problem(f"{where}.leeway", "must be at most 300 seconds")
        if not issuer:
            return None
        return Upstream(
            issuer=issuer,
            audiences=audiences,
            jwks_uri=jwks_uri,
            jwks_file=self.path(jwks_file) if jwks_file else None,
            discovery=discovery,
            algorithms=algorithms,
            token_types=token_types,
            leeway=leeway,
        )

    def secret_hash(self, t: Mapping[str, Any], where: str) -> str:
        value = self.string(t, "secret_hash", where)
        if value and not (value.startswith("sha256:") and len(value) == 71):
            self.problem(
                f"{where}.secret_hash",
                "must be 'sha256:' and 64 hex digits (make one with `stepup hash-secret`)",
            )
        return value or ""

    def client(self, t: Mapping[str, Any], where: str) -> Client | None:
        self.no_unknown(
            t,
            {
                "client_id",
                "name",
                "secret_hash",
                "redirect_uris",
                "scopes",
                "resources",
                "upstream_client_ids",
            },
            where,
        )
        client_id = self.string(t, "client_id", where)
        name = self.string(t, "name", where)
        secret_hash = self.secret_hash(t, where)
        redirect_uris = self.strings(t, "redirect_uris", where)
        for uri in redirect_uris:
            parts = urlsplit(uri)
            if parts.fragment or not parts.scheme or not parts.netloc:
                self.problem(
                    f"{where}.redirect_uris", f"'{uri}' must be absolute, without fragment"
                )
            elif not secure_url(uri):
                self.problem(f"{where}.redirect_uris", f"'{uri}' must be https (http: loopback)")
        scopes = self.strings(t, "scopes", where)
        resources = self.strings(t, "resources", where)
        upstream_ids = self.strings(t, "upstream_client_ids", where, [])
        if not client_id:
            return None
        return Client(
            client_id, name or "", secret_hash, redirect_uris, scopes, resources, upstream_ids
        )

    def resource_server(self, t: Mapping[str, Any], where: str) -> ResourceServer | None:
        self.no_unknown(t, {"id", "name", "secret_hash", "resources"}, where)
        rs_id = self.string(t, "id", where)
        name = self.string(t, "name", where)
        secret_hash = self.secret_hash(t, where)
        resources = self.strings(t, "resources", where)
        if not rs_id:
            return None
        return ResourceServer(rs_id, name or "", secret_hash, resources)

    def scope(
        self,
        name: str,
        t: Mapping[str, Any],
        levels: Mapping[str, Level],
        aliases: Mapping[str, str],
        limits: Limits,
    ) -> ScopeRule | None:
        where = f"scopes.{name!r}"
        self.no_unknown(
            t,
            {
                "acr",
                "description",
                "max_age",
                "token_lifetime",
                "single_use",
                "resources",
                "beyond_subject_exp",
            },
            where,
        )
        acr = self.string(t, "acr", where)
        if acr and aliases.get(acr, acr) not in levels:
            self.problem(f"{where}.acr", f"unknown level '{acr}'")
        lifetime = self.integer(t, "token_lifetime", where, 300)
        if lifetime == 0:
            self.problem(f"{where}.token_lifetime", "must be positive")
        if lifetime > limits.max_token_lifetime:
            self.problem(
                f"{where}.token_lifetime",
                f"{lifetime}s is beyond limits.max_token_lifetime ({limits.max_token_lifetime}s)",
            )
        if not acr:
            return None
        return ScopeRule(
            name=name,
            acr=aliases.get(acr, acr),
            description=self.string(t, "description", where, name),
            max_age=self.integer(t, "max_age", where, 300),
            token_lifetime=lifetime,
            single_use=self.boolean(t, "single_use", where, False),
            resources=self.strings(t, "resources", where, []),
            beyond_subject_exp=self.boolean(t, "beyond_subject_exp", where, False),
        )

    def separation_of_duties(
        self,
        clients: Mapping[str, Client],
        servers: Mapping[str, ResourceServer],
        scopes: Mapping[str, ScopeRule],
    ) -> None:
        for client in clients.values():
            where = f"clients '{client.client_id}'"
            if client.client_id in servers:
                self.problem(where, "is also a resource server: one identity, one role")
            for server in servers.values():
                if client.secret_hash and client.secret_hash == server.secret_hash:
                    self.problem(
                        where,
                        f"shares its secret with resource server '{server.id}': a client "
                        "could introspect its own elevations",
                    )
            for scope in client.scopes:
                if scope not in scopes:
                    self.problem(where, f"may elevate to scope '{scope}', which has no level")
                elif scopes[scope].resources and not set(scopes[scope].resources) & set(
                    client.resources
                ):
                    self.problem(where, f"scope '{scope}' is for none of the client's resources")
        secrets = [c.secret_hash for c in clients.values() if c.secret_hash]
        if len(secrets) != len(set(secrets)):
            self.problem("clients", "two clients share one secret")

    # -- operations: audit trail, admin and metrics credentials -----------------------------

    def audit(self, t: Mapping[str, Any], environ: Mapping[str, str]) -> AuditSettings:
        where = "audit"
        defaults = AuditSettings()
        self.no_unknown(t, {"retention_days", "key_file", "buffer", "log_lines"}, where)
        days = self.integer(t, "retention_days", where, defaults.retention_days)
        if not 1 <= days <= 3650:
            self.problem(f"{where}.retention_days", "must be between 1 and 3650")
        buffer = self.integer(t, "buffer", where, defaults.buffer)
        if not 100 <= buffer <= 1_000_000:
            self.problem(f"{where}.buffer", "must be between 100 and 1000000")
        log_lines = self.string(t, "log_lines", where, defaults.log_lines)
        if log_lines not in AUDIT_LOG_LINES:
            self.problem(f"{where}.log_lines", "must be 'batched' or 'immediate'")
        key_file = environ.get("STEPUP_AUDIT_KEY_FILE") or self.string(t, "key_file", where, "")
        return AuditSettings(
            retention_days=days,
            key_file=self.path(key_file) if key_file else None,
            buffer=buffer,
            log_lines=log_lines,
        )

    def operator(self, raw: Mapping[str, Any]) -> Operator:
        hashes: dict[str, str | None] = {}
        for section in ("admin", "metrics"):
            t = self.table(raw, section, "policy")
            self.no_unknown(t, {"token_hash"}, section)
            value = self.string(t, "token_hash", section, None) if t else None
            if value is not None and not (value.startswith("sha256:") and len(value) == 71):
                self.problem(
                    f"{section}.token_hash",
                    "must be 'sha256:' and 64 hex digits (make one with `stepup hash-secret`)",
                )
            hashes[section] = value
        return Operator(admin_token_hash=hashes["admin"], metrics_token_hash=hashes["metrics"])

    def operator_separation(
        self,
        operator: Operator,
        clients: Mapping[str, Client],
        servers: Mapping[str, ResourceServer],
    ) -> None:
        # The operator's credentials are nobody else's: a client or resource server holding
        # the admin token could revoke or read any subject's factors and elevations.
        others = {c.secret_hash: f"client '{c.client_id}'" for c in clients.values()}
        others.update({s.secret_hash: f"resource server '{s.id}'" for s in servers.values()})
        admin, metrics = operator.admin_token_hash, operator.metrics_token_hash
        for section, value in (("admin", admin), ("metrics", metrics)):
            if value and value in others:
                self.problem(
                    f"{section}.token_hash",
                    f"is the secret of {others[value]}: the operator's credential must be its own",
                )
        if admin and admin == metrics:
            self.problem(
                "metrics.token_hash", "is the admin token: give metrics a token of its own"
            )
        # Upstream client ids are identities too: two clients admitting the same one could each
        # present the other's subject tokens, and an elevation would become transferable.
        claimed: dict[str, str] = {}
        for client in clients.values():
            for upstream_id in client.presented_ids():
                if upstream_id in claimed and claimed[upstream_id] != client.client_id:
                    self.problem(
                        f"clients '{client.client_id}'",
                        f"admits upstream client_id '{upstream_id}' as client "
                        f"'{claimed[upstream_id]}' does: one identity, one client",
                    )
                claimed.setdefault(upstream_id, client.client_id)
                if upstream_id in servers and upstream_id != client.client_id:
                    self.problem(
                        f"clients '{client.client_id}'",
                        f"admits upstream client_id '{upstream_id}', a resource server's id",
                    )


def secure_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.netloc)
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")
