"""Reading request bodies: urlencoded forms only, each parameter at most once (RFC 6749 §3.1)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from stepup.errors import InvalidRequest

MAX_BODY = 64 * 1024
MAX_FIELDS = 64


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise InvalidRequest(f"the body must be at most {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
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
    for name, value in pairs:
        if name in form:
            raise InvalidRequest(f"parameter '{name}' is repeated")
        if "\x00" in value:
            raise InvalidRequest(f"parameter '{name}' contains a NUL character")
        form[name] = value
    # An empty value counts as absent (RFC 6749 §3.1).
    return {name: value for name, value in form.items() if value != ""}
