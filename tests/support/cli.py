"""The real console entry, `python -m stepup.cli`, as a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent


def cli_env() -> dict[str, str]:
    """The test's environment without stepup settings, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPUP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def stepup_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepup.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serving(policy: Path, log: Path, *extra: str, timeout: float = 30) -> Iterator[Served]:
    port = free_port()
    command = [sys.executable, "-m", "stepup.cli", "serve", "--config", str(policy), *extra]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            cwd=policy.parent,
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"serve exited early:\n{served.output()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(served.url + "/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"serve not ready:\n{served.output()}"
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def stop(served: Served, timeout: float = 30) -> int:
    served.process.send_signal(signal.SIGTERM)
    return served.process.wait(timeout)
