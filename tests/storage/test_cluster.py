"""The loop on a three-master Redis Cluster: every multi-key operation stays in one slot."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepup.clock import FrozenClock
from tests.support.cli import stepup_cli
from tests.support.dpop import DPoPKey
from tests.support.ops import admin, cli_policy, sample, scrape, wait_until
from tests.support.redis_cluster import redis_cluster
from tests.support.stepup import ISSUER_UPSTREAM, Stepup, Upstream, make_config, running_stepup
from tests.support.tools import require_tool


@pytest.fixture(scope="module")
def cluster_url(redis_executable: str) -> Iterator[str]:
    redis_cli = require_tool("redis-cli")
    directory = Path(tempfile.mkdtemp(prefix="cluster-"))  # short: unix socket paths
    try:
        with redis_cluster(directory, redis_executable, redis_cli) as url:
            yield url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One deployment's key files for the module: the cluster's audit chain spans its tests."""
    return tmp_path_factory.mktemp("cluster-data")


@pytest.fixture
def on_cluster(
    cluster_url: str, upstream: Upstream, cluster_data: Path, clock: FrozenClock
) -> Iterator[Stepup]:
    config = make_config(upstream, cluster_data)
    with running_stepup(config, cluster_url, clock, upstream) as running:
        yield running


def test_whole_loop_on_a_cluster(on_cluster: Stepup) -> None:
    with on_cluster.browser() as browser:
        query, verifier, secret = on_cluster.step_up(browser, sub="cluster-user")
    issued = on_cluster.token(
        query["code"][0], verifier, subject_token=on_cluster.upstream.token("cluster-user")
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert on_cluster.introspect(token).json()["active"] is True
    # A replayed code revokes the first token (a two-key Lua script in one slot).
    replay = on_cluster.token(
        query["code"][0], verifier, subject_token=on_cluster.upstream.token("cluster-user")
    )
    assert replay.json()["error"] == "invalid_grant"
    assert on_cluster.introspect(token).json() == {"active": False}
    # The enrolled factor is read back from the cluster: the next step-up asks for it.
    on_cluster.clock.advance(400)
    with on_cluster.browser() as browser:
        again, _, _ = on_cluster.step_up(browser, secret=secret, sub="cluster-user")
    assert "code" in again


def test_single_use_and_revocation_on_a_cluster(on_cluster: Stepup) -> None:
    with on_cluster.browser() as browser:
        query, verifier, _ = on_cluster.step_up(browser, sub="auditor", scope="audit:read")
    token = on_cluster.token(
        query["code"][0], verifier, subject_token=on_cluster.upstream.token("auditor")
    ).json()["access_token"]
    assert on_cluster.introspect(token).json()["active"] is True
    assert on_cluster.introspect(token).json() == {"active": False}
    assert on_cluster.revoke(token).status_code == 200


def test_dpop_proofs_are_claimed_once_on_a_cluster(on_cluster: Stepup) -> None:
    # One key per proof (no hash tag needed): SET NX EX works on whichever master owns it.
    key = DPoPKey()
    with on_cluster.browser() as browser:
        query, verifier, _ = on_cluster.step_up(browser, sub="dpop-user")
    proof = {"DPoP": key.proof("POST", "http://localhost:8000/token", iat=on_cluster.clock.now())}
    subject_token = on_cluster.upstream.token("dpop-user")
    issued = on_cluster.token(query["code"][0], verifier, subject_token, headers=proof)
    assert issued.status_code == 200, issued.text
    assert on_cluster.introspect(issued.json()["access_token"]).json()["cnf"] == {"jkt": key.jkt}
    replayed = on_cluster.token(query["code"][0], verifier, subject_token, headers=proof)
    assert replayed.json()["error"] == "invalid_dpop_proof"


def test_operations_on_a_cluster(on_cluster: Stepup, cluster_url: str, tmp_path: Path) -> None:
    """The audit chain ({audit}-tagged scripts), the elevation index and revoke-all, metrics."""
    with on_cluster.browser() as browser:
        query, verifier, secret = on_cluster.step_up(browser, sub="ops-user", max_age="0")
    tokens = [
        on_cluster.token(
            query["code"][0], verifier, subject_token=on_cluster.upstream.token("ops-user")
        ).json()["access_token"]
    ]
    with on_cluster.browser() as browser:
        again, verifier, _ = on_cluster.step_up(browser, secret, sub="ops-user", max_age="0")
    tokens.append(
        on_cluster.token(
            again["code"][0], verifier, subject_token=on_cluster.upstream.token("ops-user")
        ).json()["access_token"]
    )
    assert all(on_cluster.introspect(t).json()["active"] for t in tokens)
    assert sample(scrape(on_cluster.url), "stepup_active_elevations") >= 2
    ended = admin(
        on_cluster, "POST", "/admin/elevations/revoke", issuer=ISSUER_UPSTREAM, sub="ops-user"
    )
    assert ended.json() == {"revoked": 2}
    assert all(on_cluster.introspect(t).json() == {"active": False} for t in tokens)
    listed = admin(on_cluster, "GET", "/admin/factors", issuer=ISSUER_UPSTREAM, sub="ops-user")
    assert [f["kind"] for f in listed.json()["factors"]] == ["totp"]
    policy = cli_policy(on_cluster, cluster_url, tmp_path / "ops.toml")

    def all_written() -> bool:
        done = stepup_cli("audit", "tail", "-n", "1", "--config", str(policy))
        return "admin.factors_listed" in done.stdout

    wait_until(all_written, what="the admin call in the stream")
    done = stepup_cli("audit", "verify", "--config", str(policy))
    assert done.returncode == 0, done.stderr
