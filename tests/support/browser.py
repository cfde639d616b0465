"""Headless Debian Chromium through Playwright's sync API.

Playwright cannot download browsers here, so it drives /usr/bin/chromium. The sync API
must not run inside an asyncio event loop: browser tests are plain (sync) tests, and
the servers they talk to run in threads (see server.py).

Between two sync calls Playwright leaves its own event loop marked as *running* in the
main thread (asyncio's thread-local running loop), for as long as the session browser
lives. An async test (or ``asyncio.run``) after a browser test would then fail with
"Cannot run the event loop while another loop is running": conftest runs every test
that does not use the browser inside ``outside_playwright_loop()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launch_chromium(executable: str = CHROMIUM) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        loop = asyncio._get_running_loop()  # Playwright's, marked running between calls
        try:
            yield browser
        finally:
            # The session fixture may be finalized inside a non-browser test's teardown,
            # where outside_playwright_loop() has unmarked the loop: Playwright needs it.
            asyncio._set_running_loop(loop)
            browser.close()


@contextmanager
def outside_playwright_loop() -> Iterator[None]:
    """Unmark the session Playwright's event loop as running for the duration."""
    loop = asyncio._get_running_loop()
    if loop is None:
        yield
        return
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        if not loop.is_closed():  # closed: the browser fixture ended meanwhile
            asyncio._set_running_loop(loop)
