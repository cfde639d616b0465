"""Client authentication (RFC 6749 §2.3.1): client_secret_basic or client_secret_post.

Clients and resource servers are separate identities; each endpoint names which it admits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from urllib.parse import unquote

from stepup.config import Client, Config, ResourceServer, hash_secret, secret_matches
from stepup.errors import InvalidClient, InvalidRequest

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Compared against when the id is unknown, so both paths cost the same.
_DUMMY_HASH = hash_secret("not-a-real-secret")
REMEMBERED_HEADERS = 1024
# The id a caller authenticated with, and what it names.
_Identity = tuple[str, Client | ResourceServer]


class RememberedHeaders:
    """Authorization headers that authenticated, by the SHA-256 of the whole header, for one
    config object (a new object, as a reload makes, starts afresh): the same header under the
    same config always finds the same identity, so a resource server that sends its Basic
    header on every introspection pays the decoding and the secret's hash once. Each app owns
    one (Services.remembered_headers), so apps in one process never see each other's.

    Only successes are added, so a guess is checked in full every time, and an unknown id
    still costs what a known one does. A digest, not the header, is kept: no usable secret
    stays in memory, and a different header that matched would be a SHA-256 collision (the
    stored secret hashes rest on the same). Bounded: one client can make endless spellings of
    its own valid header (percent-encoding, spaces), which only push older ones out."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._found: dict[tuple[str, bytes], _Identity] = {}

    def get(self, config: Config, admit: str, digest: bytes) -> _Identity | None:
        if config is not self._config:
            return None
        return self._found.get((admit, digest))

    def add(self, config: Config, admit: str, digest: bytes, found: _Identity) -> None:
        if config is not self._config:
            self._config, self._found = config, {}
        elif len(self._found) >= REMEMBERED_HEADERS:
            del self._found[next(iter(self._found))]  # the oldest
        self._found[(admit, digest)] = found


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
    config: Config,
    authorization: str | None,
    form: Mapping[str, str],
    *,
    admit: str,
    remembered: RememberedHeaders,
) -> Client | ResourceServer:
    """`admit` is "client", "resource_server" or "any"; `remembered` is the app's own."""
    digest = None
    known: _Identity | None = None
    if authorization and "client_secret" not in form:
        digest = hashlib.sha256(authorization.encode()).digest()
        known = remembered.get(config, admit, digest)
    checked = known is None
    if known is None:
        known = _check(config, authorization, form, admit)
    identity, found = known
    body_id = form.get("client_id")
    if body_id is not None and body_id != identity:
        raise InvalidClient("client authentication failed", detail="client_id does not match")
    if checked and digest is not None:
        remembered.add(config, admit, digest, known)  # only once every check has passed
    return found


def _check(
    config: Config, authorization: str | None, form: Mapping[str, str], admit: str
) -> _Identity:
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
    return identity, found
