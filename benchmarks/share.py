"""Holding each serving process to a share of one core, for the benchmark's scaling pass.

On a machine with two cores, wrk and Redis run on the same two cores as the workers: one
worker has a core to itself and the rest of the machine serves it, while two workers share
their cores with wrk and Redis. "2 workers / 1 worker" then measures the machine's room as
much as the server (README, Performance). Held to half a core each, one worker and two
workers get the same room per process and there is a core left for wrk and Redis, as on a
machine with more cores; what is left to see is whether the server itself scales.

The hold is the kernel's CFS bandwidth control (cgroup v1's `cpu` controller): each process
gets a group of its own whose quota is `share` of every 10 ms period. It needs root and a
writable controller; `problem()` says what is missing. The groups are removed by `close()`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CPU_CONTROLLER = Path("/sys/fs/cgroup/cpu")
# A short period: a held process waits at most (1 - share) x 10 ms before it runs again,
# which keeps its latency in the same order as a shared core's.
PERIOD_US = 10_000


def problem(controller: Path = CPU_CONTROLLER) -> str | None:
    """Why processes cannot be held to a share here, or None when they can."""
    if not (controller / "cpu.cfs_quota_us").is_file():
        return f"no cgroup v1 cpu controller at {controller} (cpu.cfs_quota_us is missing)"
    if not os.access(controller, os.W_OK):
        return f"{controller} is not writable (holding processes to a share needs root)"
    return None


class CpuShare:
    """Each process handed to `hold` runs at most `share` of one core."""

    def __init__(
        self, share: float, *, controller: Path = CPU_CONTROLLER, period_us: int = PERIOD_US
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a share of one core is in (0, 1], not {share}")
        why = problem(controller)
        if why is not None:
            raise RuntimeError(f"cannot hold processes to a CPU share: {why}")
        self.share = share
        self.controller = controller
        self.period_us = period_us
        self.group = controller / f"stepup-bench-{os.getpid()}"
        self.group.mkdir(exist_ok=True)
        self.held: list[Path] = []

    @property
    def quota_us(self) -> int:
        return round(self.period_us * self.share)

    def hold(self, pid: int) -> Path:
        """Moves `pid` (all its threads) into a group of its own with the quota; its group."""
        group = self.group / f"pid-{pid}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(self.period_us))
        (group / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        (group / "cgroup.procs").write_text(str(pid))
        self.held.append(group)
        return group

    def close(self) -> None:
        """Removes the groups; a process still alive goes back to the controller's root."""
        for group in self.held:
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    (self.controller / "cgroup.procs").write_text(pid)
            group.rmdir()
        self.held.clear()
        self.group.rmdir()

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
