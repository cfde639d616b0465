"""Client authentication (RFC 6749 §2.3.1): client_secret_basic or client_secret_post.

Clients and resource servers are separate identities; each endpoint names which it admits.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote

from stepup.config import Client, Config, ResourceServer, hash_secret, secret_matches
from stepup.errors import InvalidClient, InvalidRequest

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Compared against when the id is unknown, so both paths cost the same.
_DUMMY_HASH = hash_secret("not-a-real-secret")


def credentials(authorization: str | None, form: Mapping[str, str]) -> tuple[str, str]:
    in_form = "client_secret" in form
    if authorization:
        if in_form:
            # RFC 6749 §2.3: a client must not use more than one authentication method.
            raise InvalidRequest("use one client authentication method, not two")
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient("client authentication failed", detail="not Basic")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidClient("client authentication failed", detail="bad Basic") from exc
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise InvalidClient("client authentication failed", detail="no colon in Basic")
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
    if in_form:
        return form.get("client_id", ""), form["client_secret"]
    raise InvalidClient("client authentication is required", detail="no credentials")


def authenticate(
    config: Config, authorization: str | None, form: Mapping[str, str], *, admit: str
) -> Client | ResourceServer:
    """`admit` is "client", "resource_server" or "any"."""
    identity, secret = credentials(authorization, form)
    found: Client | ResourceServer | None = None
    if admit in ("client", "any"):
        found = config.clients.get(identity)
    if found is None and admit in ("resource_server", "any"):
        found = config.resource_servers.get(identity)
    stored = found.secret_hash if found is not None else _DUMMY_HASH
    if not secret_matches(secret, stored) or found is None:
        raise InvalidClient(
            "client authentication failed", detail=f"bad credentials for {identity!r}"
        )
    body_id = form.get("client_id")
    if body_id is not None and body_id != identity:
        raise InvalidClient("client authentication failed", detail="client_id does not match")
    return found


def authenticate_client(
    config: Config, authorization: str | None, form: Mapping[str, str]
) -> Client:
    client = authenticate(config, authorization, form, admit="client")
    assert isinstance(client, Client)
    return client
