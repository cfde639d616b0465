"""A persistent standalone Redis that a test can stop, kill, pause and restart.

Every write is fsynced before the reply (appendfsync always), so after ``kill()``
(SIGKILL, a crash) and ``start()`` the data acknowledged before the crash is back.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import TracebackType

from stepup.storage.embedded import EmbeddedRedis


class RedisProcess:
    def __init__(self, data_dir: Path, *, executable: str | None = None) -> None:
        self.server = EmbeddedRedis(
            data_dir,
            persistent=True,
            executable=executable,
            extra_args=("--appendfsync", "always"),
        )

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def running(self) -> bool:
        return self.server.running

    def start(self, timeout: float = 10.0) -> None:
        self.server.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Clean shutdown (SIGTERM)."""
        self.server.stop(timeout)

    def kill(self) -> None:
        """Crash: SIGKILL, no chance to flush anything not yet fsynced."""
        pid = self.server.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self.server.stop()  # reaps the process

    def restart(self, timeout: float = 10.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.server.pid
        if pid is None:
            raise RuntimeError("redis-server is not running")
        os.kill(pid, sig)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.server.pid is not None:
            self.resume()  # a paused server would ignore SIGTERM until the kill fallback
        self.stop()
