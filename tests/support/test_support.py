"""The test helpers themselves: live uvicorn servers and the headless browser."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from tests.support.server import LiveServer


def make_app(name: str) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello from {name}")

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"<!doctype html><title>{name}</title><h1 id=greeting>hello from {name}</h1>"
            "<script>document.body.dataset.secure = String(window.isSecureContext)</script>"
        )

    return Starlette(routes=[Route("/", hello), Route("/page", page)])


def test_two_live_servers_at_once() -> None:
    with LiveServer(make_app("one")) as one, LiveServer(make_app("two")) as two:
        assert one.port != two.port
        assert one.url.startswith("http://localhost:")
        with httpx.Client() as client:
            assert client.get(one.url + "/").text == "hello from one"
            assert client.get(two.url + "/").text == "hello from two"


def test_live_server_stops() -> None:
    with LiveServer(make_app("gone")) as live:
        url = live.url
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(url + "/")


@pytest.mark.anyio
async def test_live_server_from_async_test() -> None:
    with LiveServer(make_app("async")) as live:
        async with httpx.AsyncClient() as client:
            response = await client.get(live.url + "/")
    assert response.text == "hello from async"


@pytest.mark.browser
def test_browser_loads_a_page_from_a_live_server(page: Page) -> None:
    with LiveServer(make_app("browser")) as live:
        page.goto(live.url + "/page")
        assert page.title() == "browser"
        assert page.locator("#greeting").inner_text() == "hello from browser"
        # localhost over plain HTTP is a secure context: WebAuthn will work there.
        assert page.locator("body").get_attribute("data-secure") == "true"


@pytest.mark.anyio
async def test_async_test_after_browser_test() -> None:
    """The session's sync Playwright must not leave an event loop marked running."""
    with LiveServer(make_app("after")) as live:
        async with httpx.AsyncClient() as client:
            assert (await client.get(live.url + "/")).text == "hello from after"


def test_live_server_reports_a_failed_startup() -> None:
    @contextlib.asynccontextmanager
    async def failing(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("startup fails")
        yield

    with pytest.raises(RuntimeError, match="did not start"):
        LiveServer(Starlette(lifespan=failing)).start()
