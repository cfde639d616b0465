"""What the benchmark feeds stepup: a policy, key files, an upstream IdP that signs subject
tokens, a first proof through the real pages, and pools of codes made through the real flow."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
from joserfc import jwt
from joserfc.jwk import ECKey

from stepup.audit import AuditKeys
from stepup.config import Limits, hash_secret
from stepup.sealing import new_key_line
from stepup.signing import write_new_key_file

UPSTREAM_ISSUER = "https://idp.bench.example"
API = "https://api.bench.example"
REDIRECT = "http://localhost:9/callback"
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-client-secret-0123456789abcdef"
RS_ID, RS_SECRET = "bench-rs", "bench-rs-secret-0123456789abcdefgh"
SUBJECT = "bench-user"
SCOPE = "payments:write"
# The policy sets no limits.max_token_lifetime: the default, which is how long a redeemed
# code's spent marker is kept.
MAX_TOKEN_LIFETIME = Limits().max_token_lifetime
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
# The raw WWW-Authenticate value a resource server sends (RFC 9470), as a client forwards it.
CHALLENGE = (
    'Bearer realm="payments", error="insufficient_user_authentication", '
    'error_description="A stronger authentication is required", '
    'acr_values="urn:stepup:acr:mfa", max_age=300'
)
# For the code pool: the level only, so the scope's max_age (an hour) lets one proof be reused.
POOL_CHALLENGE = 'Bearer error="insufficient_user_authentication", acr_values="urn:stepup:acr:mfa"'


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Upstream:
    """The user's IdP: its key signs subject tokens; stepup reads its JWKS from a file."""

    def __init__(self, directory: Path) -> None:
        self.key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        self.jwks_file = directory / "upstream-jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [self.key.as_dict(private=False)]}))

    def token(self, lifetime: int = 86_400) -> str:
        now = int(time.time())
        claims = {
            "iss": UPSTREAM_ISSUER,
            "sub": SUBJECT,
            "aud": API,
            "client_id": CLIENT_ID,
            "iat": now,
            "auth_time": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
            "scope": "payments:read",
        }
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key)


def policy_document(upstream: Upstream, data_dir: Path, port: int) -> dict[str, Any]:
    return {
        "issuer": f"http://localhost:{port}",
        "server": {"data_dir": str(data_dir)},
        "limits": {"code_lifetime": 900},
        "upstream": [
            {"issuer": UPSTREAM_ISSUER, "jwks_file": str(upstream.jwks_file), "audiences": [API]}
        ],
        "clients": [
            {
                "client_id": CLIENT_ID,
                "name": "Bench Bank",
                "secret_hash": hash_secret(CLIENT_SECRET),
                "redirect_uris": [REDIRECT],
                "scopes": [SCOPE],
                "resources": [API],
            }
        ],
        "resource_servers": [
            {
                "id": RS_ID,
                "name": "Bench API",
                "secret_hash": hash_secret(RS_SECRET),
                "resources": [API],
            }
        ],
        "scopes": {
            SCOPE: {
                "acr": "urn:stepup:acr:mfa",
                "description": "Send payments",
                "max_age": 3600,
                "token_lifetime": 900,
            }
        },
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def write_policy(document: dict[str, Any], path: Path) -> None:
    """The benchmark's policy as TOML (scalars, tables of scalars, arrays of such tables)."""
    lines: list[str] = []

    def table(header: str, body: dict[str, Any]) -> None:
        lines.append(header)
        nested = {k: v for k, v in body.items() if isinstance(v, dict)}
        lines.extend(
            f"{json.dumps(k)} = {_toml_value(v)}" for k, v in body.items() if k not in nested
        )
        for name, sub in nested.items():
            table(f"[{header.strip('[]')}.{json.dumps(name)}]", sub)

    for name, value in document.items():
        if not isinstance(value, dict | list):
            lines.append(f"{name} = {_toml_value(value)}")
    for name, value in document.items():
        if isinstance(value, dict):
            table(f"[{name}]", value)
        elif isinstance(value, list):
            for item in value:
                table(f"[[{name}]]", item)
    path.write_text("\n".join(lines) + "\n")


def write_keys(directory: Path) -> dict[str, Path]:
    """Signing, factor and audit keys as files, shared by every worker (never generated per
    process)."""
    signing = directory / "signing-keys.json"
    factor = directory / "factor-keys.txt"
    audit = directory / "audit-keys.txt"
    AuditKeys.load_or_create(audit)
    if not signing.exists():
        write_new_key_file(signing)
    if not factor.exists():
        factor.write_text(new_key_line() + "\n")
        factor.chmod(0o600)
    return {"signing": signing, "factor": factor, "audit": audit}


def par_body(subject_token: str, challenge: str, **extra: str) -> dict[str, str]:
    body = {
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "challenge": challenge,
        "scope": SCOPE,
        "resource": API,
        "redirect_uri": REDIRECT,
    }
    body.update(extra)
    return body


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    if not match:
        raise RuntimeError(f"no hidden field {name} on the page")
    return match.group(1)


def _code_from(answer: httpx.Response) -> str:
    if answer.status_code != 303:
        raise RuntimeError(
            f"expected a redirect with a code, got {answer.status_code}: {answer.text}"
        )
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    if "code" not in query:
        raise RuntimeError(f"redirect without a code: {answer.headers['location']}")
    return query["code"][0]


@dataclass
class Code:
    code: str
    verifier: str


def first_proof(url: str, upstream: Upstream) -> Code:
    """The user's one real proof: enrols TOTP on the verification page (a fresh sign-in may)
    and confirms it with a code. Later step-ups within max_age reuse it without a prompt."""
    verifier, challenge = pkce()
    with httpx.Client(base_url=url, timeout=10.0) as browser:
        pushed = browser.post(
            "/par",
            data=par_body(
                upstream.token(),
                POOL_CHALLENGE,
                state="first",
                code_challenge=challenge,
                code_challenge_method="S256",
            ),
            headers={"Authorization": basic(CLIENT_ID, CLIENT_SECRET)},
        )
        pushed.raise_for_status()
        started = browser.get(
            "/authorize",
            params={"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]},
        )
        if started.status_code == 303 and not started.headers["location"].startswith(
            "/interaction/"
        ):
            return Code(_code_from(started), verifier)  # already proven (a reused Redis)
        page = browser.get(started.headers["location"])
        match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page.text)
        if not match:
            raise RuntimeError("the verification page offers no TOTP enrolment")
        secret = match.group(1).replace(" ", "")
        answer = browser.post(
            page.url.path,
            data={
                "csrf": _hidden(page.text, "csrf"),
                "action": "verify",
                "code": pyotp.TOTP(secret).now(),
            },
        )
        return Code(_code_from(answer), verifier)


def exchange_body(subject_token: str, code: Code | None = None) -> dict[str, str]:
    body = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }
    if code is not None:
        body.update(code=code.code, code_verifier=code.verifier)
    return body


def exchange(url: str, subject_token: str, code: Code) -> str:
    answer = httpx.post(
        url + "/token",
        data=exchange_body(subject_token, code),
        headers={"Authorization": basic(CLIENT_ID, CLIENT_SECRET)},
        timeout=10.0,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"token exchange failed: {answer.status_code} {answer.text}")
    return str(answer.json()["access_token"])


def write_form(path: Path, fields: dict[str, str]) -> Path:
    path.write_text(urlencode(fields))
    return path


def write_challenges(path: Path, count: int) -> dict[str, str]:
    """`count` PKCE pairs for the pool: lines "state<TAB>challenge"; returns state -> verifier."""
    verifiers: dict[str, str] = {}
    with path.open("w") as handle:
        for index in range(count):
            verifier, challenge = pkce()
            state = f"s{index}"
            verifiers[state] = verifier
            handle.write(f"{state}\t{challenge}\n")
    return verifiers


def collect_pool(out_prefix: Path, verifiers: dict[str, str], pool_file: Path) -> int:
    """Joins the codes wrk wrote (per thread) with their verifiers into the exchange pool."""
    count = 0
    with pool_file.open("w") as pool:
        for part in sorted(out_prefix.parent.glob(out_prefix.name + ".*")):
            for line in part.read_text().splitlines():
                code, state = line.split("\t")
                pool.write(f"{code}\t{verifiers[state]}\n")
                count += 1
            part.unlink()
    return count
