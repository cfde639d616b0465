"""Helpers of the operations tests: a policy file for the CLI that points at the Redis and
key files a live stepup uses, reading the audit stream, polling, scraping metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from stepup.storage import keys
from tests.support.stepup import (
    ADMIN_TOKEN,
    METRICS_TOKEN,
    Stepup,
    policy_document,
    toml_document,
)


def cli_policy(stepup: Stepup, redis_url: str, path: Path, **audit: Any) -> Path:
    """A policy for `stepup audit|keys` on the Redis and key files of a running stepup."""
    data_dir = stepup.config.deployment.data_dir
    document = policy_document(stepup.upstream, data_dir)
    document["server"].update(
        redis_url=redis_url,
        signing_key_file=str(data_dir / "signing-keys.json"),
        factor_key_file=str(data_dir / "factor-keys.txt"),
    )
    document["audit"] = {"key_file": str(data_dir / "audit-keys.txt"), **audit}
    path.write_text(toml_document(document))
    return path


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def entries(redis_url: str) -> list[tuple[str, dict[str, str]]]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        found: Any = client.xrange(keys.audit_stream())
    return [(entry_id, fields) for entry_id, fields in found]


def events(redis_url: str) -> list[dict[str, Any]]:
    return [json.loads(fields["body"]) for _, fields in entries(redis_url)]


def streamed(redis_url: str, event: str, **match: Any) -> list[dict[str, Any]]:
    """Waits until an audit event with those fields is in the stream; returns all such."""

    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in events(redis_url)
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    result: list[dict[str, Any]] = wait_until(found, what=f"{event} {match} in the stream")
    return result


def admin(stepup: Stepup, method: str, path: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if method == "GET":
        return stepup.http.get(path, params=params, headers=headers)
    return stepup.http.post(path, data=params, headers=headers)


def scrape(url: str) -> dict[str, float]:
    """The samples of /metrics, by `name{labels}` as written."""
    answer = httpx.get(
        url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total
