"""Reading request bodies: urlencoded forms only, each parameter at most once (RFC 6749 §3.1)."""

from __future__ import annotations

import functools
from urllib.parse import unquote

from starlette.requests import ClientDisconnect, Request
from starlette.types import Scope

from stepup.errors import InvalidRequest

MAX_BODY = 64 * 1024
MAX_FIELDS = 64

# Parameters whose values are public and the same from one request to the next (type URNs,
# scopes, resource and redirect URIs, the resource server's challenge): their percent-decoding
# is remembered. urllib's unquote decodes escape by escape in a Python loop, and these values
# are mostly escapes (an intake's challenge: 34 of them). Never a credential, a code, a token
# or a transaction's details: what is remembered stays in memory.
REMEMBERED_PARAMETERS = frozenset(
    {
        "grant_type",
        "subject_token_type",
        "requested_token_type",
        "actor_token_type",
        "scope",
        "resource",
        "redirect_uri",
        "challenge",
        "response_type",
        "code_challenge_method",
        "acr_values",
        "max_age",
        "client_id",
        "token_type_hint",
    }
)
REMEMBERED_VALUES = 256
REMEMBERED_LENGTH = 4096  # at most about 2 MiB held


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first header called `name` (lower case: the server sends lower-case names), as
    `request.headers.get` would find it, without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            found: str = value.decode("latin-1")
            return found
    return None


def _headers(scope: Scope) -> tuple[bytes, bytes | None]:
    """The first Content-Type and Content-Length, in one pass over the raw headers (the
    server sends lower-case names); no Headers object on the hot endpoints."""
    content_type: bytes | None = None
    length: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and length is None:
            length = value
    return content_type or b"", length


async def _body(request: Request) -> bytes:
    receive = request.receive
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        return bytes(message.get("body", b""))  # the usual case: the whole body at once
    body = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            body.extend(message.get("body", b""))
            if len(body) > MAX_BODY:
                raise InvalidRequest(f"the body must be at most {MAX_BODY} bytes")
            if not message.get("more_body", False):
                return bytes(body)
        message = await receive()


async def read_form(request: Request) -> dict[str, str]:
    raw_type, declared = _headers(request.scope)
    content_type = raw_type.decode("latin-1").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise InvalidRequest(f"the body must be at most {MAX_BODY} bytes")
    body = await _body(request)
    if len(body) > MAX_BODY:
        raise InvalidRequest(f"the body must be at most {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the body is not UTF-8") from exc
    if text.count("&") >= MAX_FIELDS:
        raise InvalidRequest(f"at most {MAX_FIELDS} parameters")
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs(text):
        if name in seen:
            raise InvalidRequest(f"parameter '{name}' is repeated")
        if "\x00" in value:
            raise InvalidRequest(f"parameter '{name}' contains a NUL character")
        seen.add(name)
        if value:  # an empty value counts as absent (RFC 6749 §3.1)
            form[name] = value
    return form


def pairs(text: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of an urlencoded body, exactly as
    `urllib.parse.parse_qsl(text, keep_blank_values=True)` gives them (a test compares the two
    on generated bodies)."""
    found = []
    for field in text.split("&"):
        if field:
            raw_name, _, raw_value = field.partition("=")
            name = _decode(raw_name)
            if (
                name in REMEMBERED_PARAMETERS
                and len(raw_value) <= REMEMBERED_LENGTH
                and ("%" in raw_value or "+" in raw_value)
            ):
                found.append((name, _decode_remembered(raw_value)))
            else:
                found.append((name, _decode(raw_value)))
    return found


def _decode(part: str) -> str:
    # As parse_qsl: `+` is a space, then percent-escapes (invalid UTF-8 becomes U+FFFD).
    if "+" in part:
        part = part.replace("+", " ")
    return unquote(part) if "%" in part else part


_decode_remembered = functools.lru_cache(maxsize=REMEMBERED_VALUES)(_decode)
