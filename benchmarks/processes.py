"""The processes under test, started privately on loopback: Redis, stepup, the hello-world
ceiling, the oidc-provider peer; and what they cost (CPU ticks, resident memory) from /proc."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from stepup.storage.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers"
BENCH = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_redis(directory: Path) -> EmbeddedRedis:
    """A non-persistent redis-server on a Unix socket (the same kind for stepup and the peer)."""
    server = EmbeddedRedis(directory, persistent=False)
    server.start()
    return server


def descendants(pid: int) -> list[int]:
    """pid and every process below it (uvicorn's supervisor and workers, node's cluster)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def host_cpu() -> tuple[float, float]:
    """(steal, idle) CPU-seconds of the whole machine so far, all cores together (/proc/stat):
    steal is time the hypervisor gave this machine's CPUs to someone else."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) / CLOCK_TICKS, (int(fields[4]) + int(fields[5])) / CLOCK_TICKS


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """A server process group on a loopback port; `workers` are the processes that serve."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def workers(self) -> list[int]:
        # With one process it serves itself; with several, the children serve (not
        # multiprocessing's resource tracker, which uvicorn's supervisor also starts).
        everyone = self.pids()
        children = [pid for pid in everyone[1:] if b"resource_tracker" not in _cmdline(pid)]
        return children or everyone[:1]

    def wait_ready(self, path: str, expected: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == expected:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not answer {path} in {timeout}s; see {self.log}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole group: uvicorn's and node's workers go with their supervisor.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def spawn(
    name: str, argv: Sequence[str], port: int, log: Path, env: Mapping[str, str] | None = None
) -> Server:
    handle = open(log, "wb")  # noqa: SIM115 - the child owns it for its whole life
    process = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    return Server(name, process, port, log)


def start_stepup(
    workdir: Path, policy: Path, redis_url: str, port: int, workers: int, keys: Mapping[str, Path]
) -> Server:
    stepup = Path(sys.executable).with_name("stepup")
    server = spawn(
        f"stepup x{workers}",
        [
            str(stepup),
            "serve",
            "--config",
            str(policy),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        port,
        workdir / f"stepup-{workers}.log",
        {
            "STEPUP_REDIS_URL": redis_url,
            "STEPUP_SIGNING_KEY_FILE": str(keys["signing"]),
            "STEPUP_FACTOR_KEY_FILE": str(keys["factor"]),
            "STEPUP_AUDIT_KEY_FILE": str(keys["audit"]),
        },
    )
    server.wait_ready("/readyz", 200)
    return server


def start_ceiling(workdir: Path, port: int, workers: int) -> Server:
    server = spawn(
        f"hello x{workers}",
        [sys.executable, "-m", "benchmarks.hello", "--port", str(port), "--workers", str(workers)],
        port,
        workdir / f"hello-{workers}.log",
    )
    server.wait_ready("/", 200)
    return server


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise RuntimeError("node is not installed: apt-get install nodejs npm")
    return found


def ensure_peer_install() -> None:
    """Reuses tests/peers/node_modules (installed by ./dev test); installs it when missing."""
    if (
        not (PEERS / "node_modules" / "oidc-provider").is_dir()
        or not (PEERS / "node_modules" / "ioredis").is_dir()
    ):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS, check=True
        )


def start_peer(workdir: Path, redis_socket: Path, port: int, workers: int) -> Server:
    server = spawn(
        f"oidc-provider x{workers}",
        [node(), str(BENCH / "peer.mjs")],
        port,
        workdir / f"peer-{workers}.log",
        {
            "PEER_PORT": str(port),
            "PEER_WORKERS": str(workers),
            "PEER_REDIS_SOCKET": str(redis_socket),
            "PEER_MODULES": str(PEERS / "node_modules"),
            "NODE_ENV": "production",
        },
    )
    server.wait_ready("/.well-known/openid-configuration", 200)
    return server
