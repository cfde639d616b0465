"""compose.yaml cannot run here (no Docker engine): it is checked by reading it. Its stepup
services run the command the two-process test runs, with environment variables the policy
loader really reads, on a Redis with append-only persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stepup.config import load
from tests.support.cli import ROOT
from tests.support.stepup import Upstream, policy_document, toml_document


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def test_two_stepup_instances_on_one_persistent_redis() -> None:
    services = compose()["services"]
    instances = [s for name, s in services.items() if name.startswith("stepup")]
    assert len(instances) == 2
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in services["redis"]["volumes"]
    for service in instances:
        assert service["command"][:4] == ["stepup", "serve", "--config", "/etc/stepup/policy.toml"]
        assert "--workers" not in service["command"]  # metrics are per process
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_environment_is_what_the_policy_loader_reads(
    upstream: Upstream, tmp_path: Path
) -> None:
    (service,) = {
        repr(s["environment"]): s
        for n, s in compose()["services"].items()
        if n.startswith("stepup")
    }.values()
    environ = {
        name: value.replace("/etc/stepup", str(tmp_path))
        for name, value in service["environment"].items()
    }
    policy = tmp_path / "policy.toml"
    policy.write_text(toml_document(policy_document(upstream, tmp_path / "data")))
    config = load(policy, environ)
    assert config.deployment.redis_url == "redis://redis:6379/0"
    assert config.deployment.signing_key_file == tmp_path / "signing-keys.json"
    assert config.deployment.factor_key_file == tmp_path / "factor-keys.txt"
    assert config.audit.key_file == tmp_path / "audit-keys.txt"
