"""The client side of the loop, for apps that call a protected API with httpx.

`StepUpAuth` is an `httpx.Auth`: it sends the user's token B; when the API answers with a
step-up challenge (RFC 9470 §3 401, RFC 6750 §3.1 403 insufficient_scope, or the toolkit's 403
insufficient_authorization_details) it pushes the raw
challenge to stepup (RFC 9126), hands the browser URL to the app, checks the redirect
(`state`, RFC 9207 `iss`), exchanges the code (RFC 8693) and retries the request once with
the elevated token E. `LoopbackRedirect` is the browser half for command-line apps (RFC 8252).

Given a `dpop_key`, it proves possession of that key (RFC 9449) at every step: a proof at the
pushed request (binding the step-up to the key from the start), at the token endpoint (the
elevated token comes back DPoP-bound) and with each API call (`Authorization: DPoP`, `ath`);
a `use_dpop_nonce` answer is retried once with the server's nonce.

It lives beside the package, not in `stepup.resource`: client apps import it, resource
servers do not, and it needs nothing but httpx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import inspect
import json
import queue
import secrets
import threading
import time
import webbrowser
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import httpx
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

from stepup.config import TOKEN_TYPE_ACCESS_TOKEN
from stepup.dpop import access_token_hash
from stepup.protocol.challenge import (
    ChallengeSyntaxError,
    parse_www_authenticate,
    step_up_requirement,
)
from stepup.resource.tokens import unverified_parts

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


class StepUpError(Exception):
    """The step-up did not end in an elevated token; `error` is the OAuth error code if any."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class BrowserStep:
    """What the app must do: send the user's browser to `url`, then return what came back
    to `redirect_uri` (the full URL, or its query parameters)."""

    url: str
    state: str
    issuer: str
    redirect_uri: str


Callback = str | Mapping[str, str]
Authorize = Callable[[BrowserStep], Callback | Awaitable[Callback]]


@dataclass
class _Send:
    request: httpx.Request
    read: bool = True


def asks_for_step_up(response: httpx.Response) -> str | None:
    """The raw challenge if `response` is one stepup can answer, else None."""
    header = response.headers.get("www-authenticate")
    if response.status_code not in (401, 403) or not header:
        return None
    try:
        error = step_up_requirement(parse_www_authenticate(header)).error
    except ChallengeSyntaxError:
        return None
    wanted = {
        (401, "insufficient_user_authentication"),
        (403, "insufficient_scope"),
        # stepup.resource.require_detail: the token was approved for another transaction.
        (403, "insufficient_authorization_details"),
    }
    return header if (response.status_code, error) in wanted else None


DPoPKey = ECKey | OKPKey | RSAKey
_DPOP_ALGORITHMS = {"EC": "ES256", "OKP": "Ed25519", "RSA": "PS256"}


class DPoPSigner:
    """Signs DPoP proofs (RFC 9449 §4.2) with one private key and remembers each server's
    latest nonce (§8: a nonce is per server, taken from any of its answers)."""

    def __init__(self, key: DPoPKey, clock: Callable[[], float] = time.time) -> None:
        if not key.is_private:
            raise ValueError("a DPoP key must be a private key")
        self.key = key
        self.algorithm = _DPOP_ALGORITHMS[key.key_type]
        self.jkt = str(key.thumbprint())
        self._public = dict(key.as_dict(private=False))
        self._clock = clock
        self._nonces: dict[str, str] = {}

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "iat": int(self._clock()),
        }
        nonce = self._nonces.get(_origin(url))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        header = {"typ": "dpop+jwt", "alg": self.algorithm, "jwk": self._public}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jws.serialize_compact(header, payload, self.key, algorithms=[self.algorithm])

    def remember(self, url: str, response: httpx.Response) -> bool:
        """Keep the server's DPoP-Nonce; True if the answer asks for a retry with it."""
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            self._nonces[_origin(url)] = nonce
        return bool(nonce) and _asks_for_nonce(response)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _asks_for_nonce(response: httpx.Response) -> bool:
    # RFC 9449 §8 (an authorization server: a 400 JSON error) and §9 (a resource server:
    # a 401 DPoP challenge with error="use_dpop_nonce").
    if response.status_code == 400 and response.is_stream_consumed:
        try:
            body = json.loads(response.content)
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
    if response.status_code == 401:
        try:
            return (
                step_up_requirement(
                    parse_www_authenticate(response.headers.get("www-authenticate", ""))
                ).error
                == "use_dpop_nonce"
            )
        except ChallengeSyntaxError:
            return False
    return False


def _is_dpop_bound(token: str) -> bool:
    """Whether a JWT names a key it is bound to (cnf.jkt). Read without verifying: it is
    this client's own token, and only decides how to present it."""
    parts = unverified_parts(token)
    return parts is not None and isinstance(parts[1].get("cnf"), dict)


class StepUpAuth(httpx.Auth):
    """`httpx.Client(auth=StepUpAuth(...))`. `subject_token` is B (or a callable giving the
    current B); `authorize` takes a `BrowserStep` and returns the redirect's parameters
    (it may be async for an `AsyncClient`). `dpop_key`: a private JWK (joserfc key) to
    prove possession with (RFC 9449); B is presented with DPoP when it is bound (cnf).
    `authorization_details`, if given, describes the transaction a request is (RFC 9396
    objects, or None): stepup shows it to the user and binds the elevated token to it."""

    requires_request_body = True  # the original request is sent again after the step-up

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        subject_token: str | Callable[[], str],
        resource: str,
        redirect_uri: str,
        authorize: Authorize,
        subject_token_type: str = TOKEN_TYPE_ACCESS_TOKEN,
        dpop_key: DPoPKey | None = None,
        clock: Callable[[], float] = time.time,
        authorization_details: Callable[[httpx.Request], Sequence[Mapping[str, Any]] | None]
        | None = None,
    ) -> None:
        self.dpop = DPoPSigner(dpop_key, clock) if dpop_key is not None else None
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self._subject_token = subject_token
        self.subject_token_type = subject_token_type
        self.resource = resource
        self.redirect_uri = redirect_uri
        self.authorize = authorize
        self.authorization_details = authorization_details
        self.metadata: dict[str, Any] | None = None
        self.last_token: dict[str, Any] | None = None

    def subject_token(self) -> str:
        token = self._subject_token
        return token() if callable(token) else token

    # -- drivers: the same flow, with a sync or an async browser step --------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        step: _Send | BrowserStep = next(flow)
        while True:
            if isinstance(step, BrowserStep):
                answer: Any = self.authorize(step)
                if inspect.isawaitable(answer):
                    raise TypeError("an async authorize callback needs an httpx.AsyncClient")
            else:
                answer = yield step.request
                if step.read:
                    answer.read()
            try:
                step = flow.send(answer)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        step: _Send | BrowserStep = next(flow)
        while True:
            if isinstance(step, BrowserStep):
                answer: Any = self.authorize(step)
                if inspect.isawaitable(answer):
                    answer = await answer
            else:
                answer = yield step.request
                if step.read:
                    await answer.aread()
            try:
                step = flow.send(answer)
            except StopIteration:
                return

    # -- the flow ------------------------------------------------------------------------

    def _flow(self, request: httpx.Request) -> Generator[_Send | BrowserStep, Any, None]:
        subject_token = self.subject_token()
        bound = self.dpop is not None and _is_dpop_bound(subject_token)
        response: httpx.Response = yield from self._call(request, subject_token, bound)
        challenge = asks_for_step_up(response)
        if challenge is None:
            return
        if self.metadata is None:
            self.metadata = yield from self._metadata()
        pushed_endpoint = self._endpoint("pushed_authorization_request_endpoint")
        authorization_endpoint = self._endpoint("authorization_endpoint")
        token_endpoint = self._endpoint("token_endpoint")

        # RFC 7636 S256; the verifier stays here until the exchange.
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        state = secrets.token_urlsafe(24)
        form = {
            "subject_token": subject_token,
            "subject_token_type": self.subject_token_type,
            "challenge": challenge,
            "resource": self.resource,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        details = self.authorization_details(request) if self.authorization_details else None
        if details:
            form["authorization_details"] = json.dumps(list(details))
        pushed: httpx.Response = yield from self._send_proven(
            pushed_endpoint, lambda: self._post(pushed_endpoint, form)
        )
        request_uri = _json(pushed, 201).get("request_uri")
        if not isinstance(request_uri, str):
            raise StepUpError("stepup answered the pushed request without a request_uri")
        url = f"{authorization_endpoint}?{urlencode({'client_id': self.client_id, 'request_uri': request_uri})}"
        returned = yield BrowserStep(url, state, self.issuer, self.redirect_uri)
        code = check_redirect(returned, state, self.issuer)

        exchanged: httpx.Response = yield from self._send_proven(
            token_endpoint,
            lambda: self._post(
                token_endpoint,
                {
                    "grant_type": TOKEN_EXCHANGE,
                    "subject_token": subject_token,
                    "subject_token_type": self.subject_token_type,
                    "code": code,
                    "code_verifier": verifier,
                    "resource": self.resource,
                    "requested_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                },
            ),
        )
        token = _json(exchanged, 200)
        access_token = token.get("access_token")
        token_type = "DPoP" if self.dpop is not None else "Bearer"
        if not isinstance(access_token, str) or token.get("token_type") != token_type:
            raise StepUpError(f"stepup answered the exchange without a {token_type} access_token")
        self.last_token = token
        # Once: a second challenge is the API's last word, not a reason to loop.
        yield from self._call(request, access_token, self.dpop is not None)

    def _call(
        self, request: httpx.Request, token: str, dpop: bool
    ) -> Generator[_Send, httpx.Response, httpx.Response]:
        """The API request with `token`: Bearer, or DPoP with a fresh proof (retried once
        when the API asks for its nonce)."""
        if not dpop or self.dpop is None:
            request.headers["Authorization"] = f"Bearer {token}"
            response: httpx.Response = yield _Send(request, read=False)
            return response
        signer = self.dpop
        url = str(request.url)
        for attempt in range(2):
            request.headers["Authorization"] = f"DPoP {token}"
            request.headers["DPoP"] = signer.proof(request.method, url, token)
            # Not read: the API's answer is the app's, maybe streamed; a resource server's
            # nonce request is in its headers (RFC 9449 §9).
            response = yield _Send(request, read=False)
            if not (attempt == 0 and signer.remember(url, response)):
                return response
        return response

    def _send_proven(
        self, url: str, build: Callable[[], httpx.Request]
    ) -> Generator[_Send, httpx.Response, httpx.Response]:
        """A request to stepup, with a DPoP proof when there is a key; once more with the
        nonce if stepup asks for one (RFC 9449 §8)."""
        for attempt in range(2):
            outgoing = build()
            if self.dpop is not None:
                outgoing.headers["DPoP"] = self.dpop.proof("POST", url)
            response: httpx.Response = yield _Send(outgoing)
            if self.dpop is None or not self.dpop.remember(url, response) or attempt:
                return response
        return response

    def _metadata(self) -> Generator[_Send, httpx.Response, dict[str, Any]]:
        response = yield _Send(
            httpx.Request(
                "GET",
                self.issuer.rstrip("/") + "/.well-known/oauth-authorization-server",
                headers={"Accept": "application/json"},
            )
        )
        document = _json(response, 200)
        # RFC 8414 §3.3: the document must name the issuer it was fetched for.
        if document.get("issuer") != self.issuer:
            raise StepUpError("stepup's metadata names another issuer")
        return document

    def _endpoint(self, name: str) -> str:
        value = (self.metadata or {}).get(name)
        if not isinstance(value, str):
            raise StepUpError(f"stepup's metadata has no {name}")
        return value

    def _post(self, url: str, form: dict[str, str]) -> httpx.Request:
        # RFC 6749 §2.3.1: client_secret_basic, id and secret form-urlencoded first.
        raw = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}".encode()
        return httpx.Request(
            "POST",
            url,
            data=form,
            headers={
                "Authorization": "Basic " + base64.b64encode(raw).decode("ascii"),
                "Accept": "application/json",
            },
        )


def _json(response: httpx.Response, status: int) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != status or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise StepUpError(f"stepup answered {response.status_code}: {body!r}", error)
    return body


def check_redirect(returned: Callback, state: str, issuer: str) -> str:
    """The code from the redirect to the client, after the checks that bind it to this flow."""
    params = dict(parse_qsl(urlsplit(returned).query)) if isinstance(returned, str) else returned
    # RFC 6749 §10.12: state binds the answer to the request this client made.
    if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
        raise StepUpError("the redirect carries another state")
    # RFC 9207 §2.4: a response from another server (mix-up) is refused, error or not.
    if params.get("iss") != issuer:
        raise StepUpError("the redirect comes from another issuer")
    if "error" in params:
        raise StepUpError(f"stepup refused: {params['error']}", params["error"])
    code = params.get("code")
    if not code:
        raise StepUpError("the redirect carries no code")
    return code


class LoopbackRedirect:
    """The redirect listener of a command-line app (RFC 8252 §7.3): 127.0.0.1, a port the
    system picks, path `/callback`. Register `http://127.0.0.1/callback` at stepup (any port
    is allowed for a loopback IP). Use as a context manager; pass `authorize` to StepUpAuth."""

    PATH = "/callback"

    def __init__(
        self,
        open_browser: Callable[[str], object] = webbrowser.open,
        *,
        timeout: float = 300.0,
    ) -> None:
        self._open_browser = open_browser
        self.timeout = timeout
        self._arrived: queue.Queue[dict[str, str]] = queue.Queue()
        self._expected: tuple[str, str] | None = None
        self._lock = threading.Lock()
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = dict(parse_qsl(parts.query))
                accepted = parts.path == LoopbackRedirect.PATH and listener._matches(params)
                self.send_response(200 if accepted else 400)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(
                    b"Done. You can close this window."
                    if accepted
                    else b"This is not the answer this app is waiting for."
                )
                if accepted:
                    listener._arrived.put(params)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query carries a code: keep it out of stderr

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.PATH}"

    def _matches(self, params: Mapping[str, str]) -> bool:
        with self._lock:
            expected = self._expected
        if expected is None:
            return False
        state, issuer = expected
        # Another local process (or a stale tab) may hit the port: only the answer with our
        # state and stepup's `iss` (RFC 9207) ends the wait; anything else gets a 400.
        return (
            hmac.compare_digest(params.get("state", "").encode(), state.encode())
            and params.get("iss") == issuer
        )

    def authorize(self, step: BrowserStep) -> Mapping[str, str]:
        with self._lock:
            self._expected = (step.state, step.issuer)
        self._open_browser(step.url)
        try:
            return self._arrived.get(timeout=self.timeout)
        except queue.Empty:
            raise StepUpError("no answer came back from the browser in time") from None
        finally:
            with self._lock:
                self._expected = None

    def __enter__(self) -> LoopbackRedirect:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
