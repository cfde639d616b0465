"""Reading request bodies: urlencoded forms only, each parameter at most once (RFC 6749 §3.1)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.types import Scope

from stepup.errors import InvalidRequest

MAX_BODY = 64 * 1024
MAX_FIELDS = 64


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
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the body is not UTF-8") from exc
    except ValueError as exc:
        raise InvalidRequest(f"at most {MAX_FIELDS} parameters") from exc
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise InvalidRequest(f"parameter '{name}' is repeated")
        if "\x00" in value:
            raise InvalidRequest(f"parameter '{name}' contains a NUL character")
        seen.add(name)
        if value:  # an empty value counts as absent (RFC 6749 §3.1)
            form[name] = value
    return form
