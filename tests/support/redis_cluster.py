"""A throwaway three-master Redis Cluster on loopback, built from EmbeddedRedis nodes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from stepup.storage.embedded import EmbeddedRedis


def _free_cluster_port() -> int:
    """A port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@contextmanager
def redis_cluster(directory: Path, executable: str, redis_cli: str) -> Iterator[str]:
    """Yields a `redis+cluster://` URL once all 16384 slots are served."""
    with ExitStack() as nodes:
        ports = []
        for index in range(3):
            port = _free_cluster_port()
            node_dir = directory / f"node{index}"
            nodes.enter_context(
                EmbeddedRedis(
                    node_dir,
                    persistent=False,
                    executable=executable,
                    extra_args=(
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ),
                )
            )
            ports.append(port)
        subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while True:
            states = []
            for port in ports:
                with redis.Redis(host="127.0.0.1", port=port) as client:
                    states.append(client.cluster("info").get("cluster_state"))
            if states == ["ok"] * 3:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not converge: {states}")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
