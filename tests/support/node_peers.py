"""The npm peers in tests/peers (oidc-provider, jose), run with the system's node."""

from __future__ import annotations

import json
import re
import select
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from tests.support.stepup import pkce
from tests.support.tools import missing_tool, require_tool

PEERS = Path(__file__).resolve().parent.parent / "peers"


def node_with_peers() -> str:
    """The node binary, once the pinned npm packages are installed (./dev test does it)."""
    node = require_tool("node")
    for package in ("oidc-provider", "jose"):
        if not (PEERS / "node_modules" / package / "package.json").exists():
            missing_tool(package, f"not in {PEERS}/node_modules (npm ci there)")
    return node


@contextmanager
def oidc_provider(
    node: str, api: str, client_id: str, client_secret: str, redirect_uri: str
) -> Iterator[str]:
    """Runs tests/peers/idp.mjs; yields its issuer URL once it listens."""
    process = subprocess.Popen(
        [node, "idp.mjs", api, client_id, client_secret, redirect_uri],
        cwd=PEERS,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"oidc-provider did not start (exit code {process.poll()})")
        yield str(json.loads(line)["issuer"])
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def sign_in_at_oidc_provider(
    issuer: str,
    *,
    sub: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    api: str,
    dpop: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """A user signs in through oidc-provider's own pages (authorization code + PKCE, RFC 8707
    resource); the client redeems the code, with the DPoP proof `dpop(token_endpoint)` gives
    if any (RFC 9449: the access token comes back bound, cnf.jkt). Returns the token response."""
    verifier, challenge = pkce()
    with httpx.Client(base_url=issuer, follow_redirects=False, timeout=10) as browser:
        response = browser.get(
            "/auth",
            params={
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": "openid payments:read",
                "resource": api,
                "state": "upstream-state",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        for _ in range(6):  # login, maybe consent, then back to the client
            location = urljoin(issuer, response.headers["location"])
            if location.startswith(redirect_uri):
                break
            page = browser.get(location)
            if page.status_code in (302, 303):
                response = page
                continue
            action = re.search(r'action="([^"]+)"', page.text)
            prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
            assert action and prompt, page.text
            fields = {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                fields.update(login=sub, password="any password")
            response = browser.post(urljoin(issuer, action.group(1)), data=fields)
        else:
            raise AssertionError("oidc-provider never redirected back")
    query = parse_qs(urlsplit(location).query)
    assert query["iss"] == [issuer], query  # RFC 9207 from a server nobody here wrote
    token = httpx.post(
        issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "resource": api,
        },
        auth=(client_id, client_secret),
        headers={"DPoP": dpop(issuer + "/token")} if dpop is not None else None,
        timeout=10,
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return body


def jose_verify(node: str, token: str, jwks_uri: str, issuer: str, audience: str) -> dict[str, Any]:
    """What panva's jose says of `token` (tests/peers/verify.mjs)."""
    done = subprocess.run(
        [node, "verify.mjs", jwks_uri, issuer, audience],
        cwd=PEERS,
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result
