"""Run an ASGI app under a real uvicorn, in a background thread, on a free local port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any, Literal

import uvicorn

from stepup.serving import HttpProtocol


def bound_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port (its port can be known in advance)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """``with LiveServer(app) as live: httpx.get(live.url + "/")``.

    Binds 127.0.0.1 but names itself ``http://localhost:PORT``: browsers treat both as
    secure contexts, and WebAuthn wants a domain (rp_id ``localhost``), not an IP.
    Several can run at once; each has its own thread and event loop. The HTTP protocol is
    the one `stepup serve` runs (`stepup.serving.HttpProtocol`), unless `http` names another.
    """

    def __init__(
        self,
        app: Any,
        *,
        lifespan: Literal["auto", "on", "off"] = "on",
        startup_timeout: float = 10.0,
        sock: socket.socket | None = None,
        http: type[HttpProtocol] = HttpProtocol,
    ) -> None:
        self.app = app
        self.http = http
        self._given_socket = sock
        self.lifespan = lifespan
        self.startup_timeout = startup_timeout
        self.port = 0
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> None:
        # Bind here and hand the listening socket to uvicorn: no window in which
        # another process could take the port.
        sock = self._given_socket or bound_socket()
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=self.lifespan,
            access_log=False,
            http=self.http,  # stepup's own HTTP protocol, as served
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"uvicorn:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on port {self.port} (see log above)")
            time.sleep(0.01)

    @staticmethod
    def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        # uvicorn calls sys.exit() when startup fails; start() reports that instead.
        with contextlib.suppress(SystemExit):
            server.run(sockets=[sock])

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"uvicorn on port {self.port} did not stop in {timeout}s")
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
