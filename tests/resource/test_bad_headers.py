"""Whatever the Authorization header holds, the toolkit answers 400 or 401, never a 500."""

from __future__ import annotations

import anyio
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from stepup.resource import Guard
from tests.resource.apps import resource, starlette_app
from tests.support.stepup import API

header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=["Cc"]), max_size=80
)


async def answer_to(value: str) -> httpx.Response:
    # The guard's peers answer 404 to everything: a header that made it fetch keys or
    # introspect would show as a 503.
    nobody = httpx.ASGITransport(app=Starlette())
    async with httpx.AsyncClient(transport=nobody) as http:
        guard = Guard(
            resource("http://localhost:9", upstream_jwks="http://localhost:9/jwks"), http=http
        )
        transport = httpx.ASGITransport(app=starlette_app(guard), raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url=API) as client:
            # Raw octets: a client may send obs-text (RFC 9110 §5.5) that is no ASCII.
            raw = [(b"authorization", value.encode("latin-1"))]
            return await client.post("/pay", headers=raw)


@settings(max_examples=200, deadline=None)
@given(value=header_text | header_text.map(lambda v: "Bearer " + v))
def test_any_authorization_header_is_answered_400_or_401(value: str) -> None:
    response = anyio.run(answer_to, value.strip())
    assert response.status_code in (400, 401), (value, response.status_code)
    assert response.headers["www-authenticate"].startswith("Bearer ")
