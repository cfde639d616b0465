"""What browser-facing steps return: a redirect or a page. The web layer renders them."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Redirect:
    location: str


@dataclass(frozen=True)
class Page:
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    retry_after: int | None = None
    # Origins a form on the page may lead to (CSP form-action also governs its redirects).
    form_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Json:
    """Data for a page script (e.g. WebAuthn options), answered as application/json."""

    body: dict[str, Any]
    status: int = 200


def error_page(title: str, message: str, status: int = 400) -> Page:
    return Page("error.html", {"title": title, "message": message}, status)


def form_ok(
    expected_browser: str | None, browser: str | None, csrf: str, submitted: str | None
) -> bool:
    """A form counts only from the browser the flow is bound to, with the page's CSRF token."""
    if not expected_browser or not browser or not submitted:
        return False
    return hmac.compare_digest(expected_browser, browser) and hmac.compare_digest(csrf, submitted)
