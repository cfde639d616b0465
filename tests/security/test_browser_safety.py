"""What the browser is told: cookies, HSTS, CSP, no external assets, 303 after POST, and
redirects only ever to the exactly registered redirect_uri.

The https issuer is only a string here (the live server still speaks plain http): stepup
behind a TLS-terminating proxy sees the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from stepup.config import parse
from stepup.storage import keys
from stepup.storage.embedded import EmbeddedRedis
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    REDIRECT,
    ScopeAndMaxAge,
    Stepup,
    Upstream,
    frozen_now,
    hidden,
    manual_key,
    policy_document,
    running_stepup,
)

HTTPS_ISSUER = "https://stepup.example"
CLIENT_ORIGIN = "http://localhost:9999"  # the origin of the client's registered redirect_uri
NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}


live_stepup, stepup = module_server("browser-safety")


@pytest.fixture(scope="module")
def https_live(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[Stepup]:
    directory = tmp_path_factory.mktemp("browser-safety-https")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    document = policy_document(upstream, directory / "data")
    document["issuer"] = HTTPS_ISSUER
    config = parse(document, base_dir=directory / "data")
    with running_stepup(config, redis_server.url, clock, upstream) as running:
        yield running


@pytest.fixture
def https_stepup(https_live: Stepup, redis_url: str) -> Stepup:
    https_live.clock.set(frozen_now().now())
    return https_live


# -- helpers --------------------------------------------------------------------------------


def set_cookie(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The one Set-Cookie of a response: its name and its attributes (names lower-cased)."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    first, *rest = (part.strip() for part in headers[0].split(";"))
    name = first.partition("=")[0]
    attributes = {}
    for part in rest:
        key, _, value = part.partition("=")
        attributes[key.strip().lower()] = value.strip()
    return name, attributes


def started(stepup: Stepup, browser: httpx.Client) -> httpx.Response:
    """PAR then GET /authorize in a browser without a cookie: the answer that sets it."""
    pushed = stepup.par(**NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    answer = browser.get(
        "/authorize", params={"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]}
    )
    assert answer.status_code == 303, answer.text
    return answer


def open_page(stepup: Stepup, browser: httpx.Client, sub: str = "alice") -> httpx.Response:
    pushed = stepup.par(stepup.upstream.token(sub), **NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    page = stepup.open_authorization(browser, pushed.json()["request_uri"])
    assert page.status_code == 200, page.text
    return page


def post_form(
    browser: httpx.Client, page: httpx.Response, action: str, code: str | None = None
) -> httpx.Response:
    data = {"csrf": hidden(page.text, "csrf"), "action": action}
    if code is not None:
        data["code"] = code
    return browser.post(page.url.path, data=data)


def enrolment_path(stepup: Stepup, sub: str, **fields: str) -> str:
    created = stepup.http.post(
        "/enroll",
        data={
            "subject_token": stepup.upstream.token(sub),
            "subject_token_type": ACCESS_TOKEN_TYPE,
            **fields,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert created.status_code == 201, created.text
    enrollment_uri: str = created.json()["enrollment_uri"]
    return urlsplit(enrollment_uri).path


def enrol(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub, **NO_REUSE)
    return secret


def csp_directives(response: httpx.Response) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


# -- every HTML page stepup shows -------------------------------------------------------------


@pytest.fixture(scope="module")
def html_pages(live_stepup: Stepup, redis_server: EmbeddedRedis) -> dict[str, httpx.Response]:
    """One of each page stepup renders (successes, refusals, errors), by name."""
    stepup = live_stepup
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    stepup.clock.set(frozen_now().now())
    pages: dict[str, httpx.Response] = {}
    with stepup.browser() as browser, stepup.browser() as other:
        other.get("/healthz")
        first = open_page(stepup, browser, "paula")
        pages["enrolment on the verification page"] = first
        secret = manual_key(first.text)
        stepup.clock.advance(30)
        pages["wrong code"] = post_form(browser, first, "verify", "000000")
        pages["refused form (bad csrf)"] = browser.post(
            first.url.path, data={"csrf": "forged", "action": "verify", "code": "123456"}
        )
        assert post_form(browser, first, "verify", stepup.totp_code(secret)).status_code == 303

        stepup.clock.advance(90)
        verify = open_page(stepup, browser, "paula")
        pages["verification"] = verify
        pages["opened in another browser"] = other.get(verify.url.path)
        for _ in range(stepup.config.throttle.free_attempts + 1):
            throttled = post_form(browser, verify, "verify", "000000")
        pages["throttled"] = throttled

        pages["authorize without parameters"] = browser.get("/authorize")
        pages["authorize for an unknown client"] = browser.get(
            "/authorize", params={"client_id": "nobody", "request_uri": "urn:x"}
        )
        pushed = stepup.par(**NO_REUSE)
        params = {"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]}
        browser.get("/authorize", params=params)
        pages["request_uri used twice"] = browser.get("/authorize", params=params)
        pages["unknown interaction"] = browser.get("/interaction/no-such-interaction")

        link = browser.get(enrolment_path(stepup, "quentin"))
        pages["enrolment link"] = link
        stepup.clock.advance(30)
        pages["enrolment wrong code"] = post_form(browser, link, "confirm", "000000")
        pages["enrolled"] = post_form(
            browser, link, "confirm", stepup.totp_code(manual_key(link.text))
        )
        pages["recovery codes, shown once"] = post_form(browser, pages["enrolled"], "recovery-new")
        pages["enrolment done"] = post_form(browser, link, "done")
        pages["enrolment link used after done"] = browser.get(link.url.path)

        prove = browser.get(enrolment_path(stepup, "paula"))
        pages["enrolment: prove a factor first"] = prove
        stepup.clock.advance(30)
        pages["enrolment: second factor"] = post_form(
            browser, prove, "prove", stepup.totp_code(secret)
        )
        with_way_back = browser.get(enrolment_path(stepup, "ursula", redirect_uri=REDIRECT))
        pages["enrolment link with a way back"] = with_way_back
        stepup.clock.advance(30)
        pages["enrolled, with a way back"] = post_form(
            browser, with_way_back, "confirm", stepup.totp_code(manual_key(with_way_back.text))
        )
        cancel = browser.get(enrolment_path(stepup, "rita"))
        pages["enrolment cancelled"] = post_form(browser, cancel, "cancel")

        pages["not found"] = browser.get("/no/such/page")
        pages["method not allowed"] = browser.post("/authorize")

    with (
        running_stepup(
            stepup.config, "unix:///nonexistent/redis.sock", stepup.clock, stepup.upstream
        ) as down,
        down.browser() as browser,
    ):
        pages["storage unavailable"] = browser.get("/interaction/any")

    expected = {
        "enrolment on the verification page": 200,
        "wrong code": 400,
        "refused form (bad csrf)": 403,
        "verification": 200,
        "opened in another browser": 403,
        "throttled": 429,
        "authorize without parameters": 400,
        "authorize for an unknown client": 400,
        "request_uri used twice": 400,
        "unknown interaction": 400,
        "enrolment link": 200,
        "enrolment wrong code": 400,
        "enrolled": 200,
        "recovery codes, shown once": 200,
        "enrolment done": 200,
        "enrolment link used after done": 400,
        "enrolment: prove a factor first": 200,
        "enrolment: second factor": 200,
        "enrolment link with a way back": 200,
        "enrolled, with a way back": 200,
        "enrolment cancelled": 200,
        "not found": 404,
        "method not allowed": 405,
        "storage unavailable": 503,
    }
    assert {name: page.status_code for name, page in pages.items()} == expected
    for name, page in pages.items():
        assert page.headers["content-type"].startswith("text/html"), name
    return pages


def test_every_page_has_a_content_security_policy_defaulting_to_none(
    html_pages: dict[str, httpx.Response],
) -> None:
    wrong = {
        name: page.headers.get("content-security-policy")
        for name, page in html_pages.items()
        if csp_directives(page).get("default-src") != ["'none'"]
    }
    assert not wrong, wrong


def test_no_page_allows_inline_or_eval_script_or_style(
    html_pages: dict[str, httpx.Response],
) -> None:
    unsafe = re.compile(r"'unsafe-(inline|eval|hashes)'|'wasm-unsafe-eval'|'strict-dynamic'")
    wrong = {
        name: page.headers["content-security-policy"]
        for name, page in html_pages.items()
        if unsafe.search(page.headers["content-security-policy"])
    }
    assert not wrong, wrong


def test_no_page_allows_sources_from_anywhere(html_pages: dict[str, httpx.Response]) -> None:
    # A wildcard or a bare scheme (https:, data: for scripts) would admit any host's code.
    wrong = {}
    for name, page in html_pages.items():
        for directive, sources in csp_directives(page).items():
            if directive == "form-action":
                continue  # 'self' and the client's redirect origin, checked below
            for source in sources:
                if (
                    "*" in source
                    or source in ("http:", "https:")
                    or (source == "data:" and directive != "img-src")
                ):
                    wrong[name] = f"{directive} {source}"
    assert not wrong, wrong


def test_forms_may_only_post_to_stepup_or_the_clients_origin(
    html_pages: dict[str, httpx.Response],
) -> None:
    wrong = {
        name: csp_directives(page).get("form-action")
        for name, page in html_pages.items()
        if not set(csp_directives(page).get("form-action", ["missing"]))
        <= {"'self'", CLIENT_ORIGIN}
    }
    assert not wrong, wrong


def test_no_page_may_be_framed(html_pages: dict[str, httpx.Response]) -> None:
    wrong = [
        name
        for name, page in html_pages.items()
        if csp_directives(page).get("frame-ancestors") != ["'none'"]
        or page.headers.get("x-frame-options", "").upper() != "DENY"
    ]
    assert not wrong, wrong


def test_no_page_is_sniffed_cached_or_leaks_a_referrer(
    html_pages: dict[str, httpx.Response],
) -> None:
    wrong = [
        name
        for name, page in html_pages.items()
        if page.headers.get("x-content-type-options") != "nosniff"
        or "no-store" not in page.headers.get("cache-control", "")
        or page.headers.get("referrer-policy") != "no-referrer"
    ]
    assert not wrong, wrong


def test_no_page_carries_inline_script_style_or_event_handlers(
    html_pages: dict[str, httpx.Response],
) -> None:
    # The CSP would block them: a page that needs them is broken, not protected.
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:",
        re.IGNORECASE,
    )
    wrong = {
        name: match.group(0)
        for name, page in html_pages.items()
        if (match := inline.search(page.text))
    }
    assert not wrong, wrong


def test_no_page_loads_or_links_an_external_url(html_pages: dict[str, httpx.Response]) -> None:
    # Absolute http(s) URLs in src/href/action/formaction/poster/srcset: only the client's own
    # (the "Back to …" link) may appear; everything else is served by stepup itself.
    attribute = re.compile(
        r"""\b(?:src|href|action|formaction|poster|srcset|data)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""",
        re.IGNORECASE,
    )
    found: dict[str, list[str]] = {}
    for name, page in html_pages.items():
        for url in attribute.findall(page.text):
            if not url.startswith(CLIENT_ORIGIN + "/"):
                found.setdefault(name, []).append(url)
    assert not found, found


def test_static_css_is_served_nosniff_as_css_without_external_urls(
    stepup: Stepup, html_pages: dict[str, httpx.Response]
) -> None:
    sheets = {
        href
        for page in html_pages.values()
        for href in re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page.text)
    }
    assert sheets, "no page links a stylesheet"
    for href in sheets:
        assert href.startswith("/static/"), href
        css = stepup.http.get(href)
        assert css.status_code == 200, href
        assert css.headers["content-type"].startswith("text/css"), href
        assert css.headers["x-content-type-options"] == "nosniff", href
        assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", css.text), href


def test_static_files_do_not_escape_their_directory(stepup: Stepup) -> None:
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/..%2fREADME.md",
    ):
        answer = stepup.http.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "[project]" not in answer.text


# -- cookie and HSTS --------------------------------------------------------------------------


def test_https_issuer_sets_a_host_prefixed_secure_httponly_lax_cookie(
    https_stepup: Stepup,
) -> None:
    with https_stepup.browser() as browser:
        name, attributes = set_cookie(started(https_stepup, browser))
    assert name == "__Host-stepup-browser"
    assert "secure" in attributes
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert attributes.get("path") == "/"
    assert "domain" not in attributes


def test_https_issuer_sends_hsts_on_every_kind_of_response(https_stepup: Stepup) -> None:
    with https_stepup.browser() as browser:
        answers = {
            "redirect": started(https_stepup, browser),
            "error page": browser.get("/authorize"),
            "not found": browser.get("/no/such/page"),
            "metadata": browser.get("/.well-known/oauth-authorization-server"),
            "jwks": browser.get("/jwks"),
            "oauth error": https_stepup.par(redirect_uri="https://evil.example/"),
            "static": browser.get("/static/stepup.css"),
            "health": browser.get("/healthz"),
        }
    missing = {}
    for name, answer in answers.items():
        hsts = answer.headers.get("strict-transport-security", "")
        age = re.search(r"max-age=(\d+)", hsts)
        if not age or int(age.group(1)) < 31_536_000 // 2:
            missing[name] = hsts
    assert not missing, missing


def test_http_localhost_issuer_sets_a_plain_httponly_cookie_without_secure(
    stepup: Stepup,
) -> None:
    with stepup.browser() as browser:
        name, attributes = set_cookie(started(stepup, browser))
    assert name == "stepup-browser"
    assert "secure" not in attributes
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert "domain" not in attributes


def test_http_localhost_issuer_sends_no_hsts(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        answers = [
            started(stepup, browser),
            browser.get("/authorize"),
            browser.get("/jwks"),
            browser.get("/static/stepup.css"),
        ]
    assert all("strict-transport-security" not in a.headers for a in answers)


def test_secure_cookie_from_the_https_issuer_completes_a_step_up(https_stepup: Stepup) -> None:
    # A browser sends a Secure cookie only over TLS; behind the proxy the flow still works.
    with https_stepup.browser() as browser:
        answer = started(https_stepup, browser)
        _, _ = set_cookie(answer)
        cookie = answer.headers["set-cookie"].split(";")[0]
        page = browser.get(answer.headers["location"], headers={"Cookie": cookie})
        assert page.status_code == 200, page.text
        https_stepup.clock.advance(30)
        done = browser.post(
            page.url.path,
            headers={"Cookie": cookie},
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": https_stepup.totp_code(manual_key(page.text)),
            },
        )
    assert done.status_code == 303, done.text
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert query["iss"] == [HTTPS_ISSUER]


# -- 303 after POST, and redirects only to the registered redirect_uri ----------------------


def test_successful_verification_post_answers_303(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        stepup.clock.advance(30)
        answer = post_form(browser, page, "verify", stepup.totp_code(manual_key(page.text)))
    assert answer.status_code == 303, answer.status_code
    assert answer.headers["location"].startswith(REDIRECT + "?")


def test_cancel_post_answers_303(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        answer = post_form(browser, open_page(stepup, browser), "cancel")
    assert answer.status_code == 303, answer.status_code
    assert answer.headers["location"].startswith(REDIRECT + "?")


def test_enrolment_cancel_post_answers_303_to_the_registered_uri(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = browser.get(enrolment_path(stepup, "sven", redirect_uri=REDIRECT))
        assert page.status_code == 200, page.text
        answer = post_form(browser, page, "cancel")
    assert answer.status_code == 303, answer.status_code
    assert answer.headers["location"] == REDIRECT


def test_enrolment_page_lets_its_cancel_redirect_reach_the_client(stepup: Stepup) -> None:
    # CSP form-action also governs where a form submission is redirected (CSP3 §6.4.1,
    # enforced by Chromium): Cancel answers 303 to the client, so its origin must be allowed.
    with stepup.browser() as browser:
        page = browser.get(enrolment_path(stepup, "vera", redirect_uri=REDIRECT))
        assert page.status_code == 200, page.text
        cancelled = post_form(browser, page, "cancel")
    assert cancelled.status_code == 303
    target = urlsplit(cancelled.headers["location"])
    assert f"{target.scheme}://{target.netloc}" in csp_directives(page)["form-action"]


def test_reposting_a_confirmed_enrolment_changes_nothing(stepup: Stepup, redis_url: str) -> None:
    # The success page answers the POST directly (no redirect): a reload re-sends the form.
    path = enrolment_path(stepup, "tom")
    with stepup.browser() as browser:
        page = browser.get(path)
        stepup.clock.advance(30)
        code = stepup.totp_code(manual_key(page.text))
        assert post_form(browser, page, "confirm", code).status_code == 200
        again = post_form(browser, page, "confirm", code)
    assert again.status_code == 400, again.text
    assert "added" not in again.text
    with redis.Redis.from_url(redis_url) as client:
        assert client.hlen(keys.factors(keys.subject_id(ISSUER_UPSTREAM, "tom"))) == 1


@pytest.mark.parametrize(
    "redirect_uri",
    [
        REDIRECT + "/",  # trailing slash
        "http://localhost:9999/CALLBACK",  # path case
        "http://LOCALHOST:9999/callback",  # host case
        "HTTP://localhost:9999/callback",  # scheme case
        REDIRECT + "?extra=1",  # an extra query parameter
        REDIRECT + "#fragment",
        "http://localhost:9998/callback",  # another port
        "http://localhost/callback",  # no port
        "http://localhost:9999@evil.example/",  # userinfo
        "http://localhost:9999@evil.example/callback",
        "http://evil.example\\@localhost:9999/callback",
        "https://localhost:9999/callback",  # another scheme
        "http://127.0.0.1:9999/callback",  # the same host by address
        "http://localhost:9999/%63allback",  # percent-encoded
        "http://localhost:9999//callback",
        "http://localhost:9999/callback/.",
        "//localhost:9999/callback",  # scheme-relative
        " " + REDIRECT,
        REDIRECT + " ",
    ],
)
def test_redirect_uri_not_exactly_registered_is_refused_at_par(
    stepup: Stepup, redirect_uri: str
) -> None:
    assert_oauth_error(stepup.par(redirect_uri=redirect_uri), 400, "invalid_request")


def test_redirect_uri_added_to_the_authorize_url_is_ignored(stepup: Stepup) -> None:
    pushed = stepup.par(**NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    with stepup.browser() as browser:
        start = browser.get(
            "/authorize",
            params={
                "client_id": CLIENT_ID,
                "request_uri": pushed.json()["request_uri"],
                "redirect_uri": "https://evil.example/steal",
            },
        )
        assert start.status_code == 303, start.text
        assert start.headers["location"].startswith("/interaction/")
        page = browser.get(start.headers["location"])
        answer = post_form(browser, page, "cancel")
    assert answer.headers["location"].startswith(REDIRECT + "?")


def test_errors_before_the_request_is_known_never_redirect(stepup: Stepup) -> None:
    evil = "https://evil.example/steal"
    with stepup.browser() as browser:
        answers = [
            browser.get("/authorize", params={"client_id": CLIENT_ID, "redirect_uri": evil}),
            browser.get(
                "/authorize",
                params={"client_id": "nobody", "request_uri": "urn:x", "redirect_uri": evil},
            ),
            browser.get(
                "/authorize",
                params={
                    "client_id": CLIENT_ID,
                    "request_uri": "urn:ietf:params:oauth:request_uri:forged",
                    "redirect_uri": evil,
                },
            ),
        ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "location" not in answer.headers
        assert "evil.example" not in answer.text
