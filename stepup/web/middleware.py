"""Headers every response carries (a pure ASGI middleware: no per-request object churn)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BASE: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class Headers:
    """The headers to add, each only where the response has not set its own (pages send
    their own CSP)."""

    def __init__(self, *, https: bool) -> None:
        self.extra = [*_BASE, _HSTS, _DEFAULT_CSP] if https else [*_BASE, _DEFAULT_CSP]
        self._names = frozenset(name for name, _ in self.extra)

    def add(self, headers: list[tuple[bytes, bytes]]) -> None:
        # Starlette's responses already send lower-case names; lower() is for others.
        names = {name.lower() for name, _ in headers}
        if names.isdisjoint(self._names):
            headers += self.extra  # the usual case: no response sets any of these itself
        else:
            headers.extend(h for h in self.extra if h[0] not in names)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = Headers(https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        add = self.headers.add

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                add(headers)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
