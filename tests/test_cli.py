"""The real console entry, `python -m stepup.cli`, run as a subprocess."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepup.config import hash_secret
from stepup.sealing import Sealer
from stepup.signing import write_new_key_file
from tests.support.cli import free_port, serving, stepup_cli, stop
from tests.support.stepup import RS_ID, RS_SECRET, Upstream, policy_document, toml_document

# -- helpers --------------------------------------------------------------------------------


def write_policy(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(toml_document(document))
    return path


def redis_answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A data directory whose redis.sock path fits a Unix socket address."""
    path = Path(tempfile.mkdtemp(prefix="stepup-cli-"))
    try:
        yield path
    finally:
        if redis_answers(path / "redis.sock"):  # a test failed midway: stop our own Redis
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
            ):
                sock.connect(str(path / "redis.sock"))
                sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def good_document(upstream: Upstream, tmp_path: Path) -> dict[str, Any]:
    return policy_document(upstream, tmp_path / "data")


# -- check ----------------------------------------------------------------------------------


def test_check_good_file_exits_0_with_a_summary(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    done = stepup_cli("check", str(policy))
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"ok .*issuer http://localhost:8000, 2 client\(s\), 2 resource server\(s\), "
        r"3 scope\(s\), 1 upstream issuer\(s\)",
        done.stdout,
    ), done.stdout
    assert done.stderr == ""


def test_check_bad_file_exits_1_listing_every_problem(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    document = good_document
    document["surprise"] = True
    document["clients"][1]["secret_hash"] = document["clients"][0]["secret_hash"]
    document["clients"][0]["redirect_uris"] = ["http://bank.example/cb"]
    document["resource_servers"][0]["id"] = document["clients"][0]["client_id"]
    document["scopes"]["payments:write"]["token_lifetime"] = 3600
    document["upstream"][0]["algorithms"] = ["none"]
    policy = write_policy(tmp_path / "bad.toml", document)
    done = stepup_cli("check", str(policy))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    problems = [line for line in lines if line.startswith(f"{policy}: ")]
    expected = [
        "unknown key 'surprise'",
        "share one secret",
        "http://bank.example/cb",
        "also a resource server",
        "max_token_lifetime",
        "'none'",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), f"{fragment!r} not in {problems}"
    assert len(problems) == len(expected), problems
    assert lines[-1] == f"{len(expected)} problem(s) found"


def test_check_missing_file_exits_1(tmp_path: Path) -> None:
    done = stepup_cli("check", str(tmp_path / "nope.toml"))
    assert done.returncode == 1
    assert "cannot read" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_invalid_toml_exits_1(tmp_path: Path) -> None:
    policy = tmp_path / "broken.toml"
    policy.write_text("issuer = \n")
    done = stepup_cli("check", str(policy))
    assert done.returncode == 1
    assert "TOML" in done.stderr
    assert "Traceback" not in done.stderr


# -- hash-secret ------------------------------------------------------------------------------


def test_hash_secret_from_stdin(tmp_path: Path) -> None:
    secret = "a-client-secret-0123456789abcdef"
    done = stepup_cli("hash-secret", stdin=secret + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"secret_hash: {hash_secret(secret)}"
    assert re.fullmatch(r"secret_hash: sha256:[0-9a-f]{64}", done.stdout.strip())
    assert secret not in done.stdout


def test_hash_secret_refuses_a_short_secret() -> None:
    done = stepup_cli("hash-secret", stdin="short\n")
    assert done.returncode == 1
    assert "secret_hash" not in done.stdout
    assert done.stderr.strip()


def test_hash_secret_generate_prints_a_secret_and_its_hash() -> None:
    seen = set()
    for _ in range(2):
        done = stepup_cli("hash-secret", "--generate")
        assert done.returncode == 0, done.stderr
        secret = re.search(r"^secret:\s+(\S+)$", done.stdout, re.M)
        hashed = re.search(r"^secret_hash:\s+(\S+)$", done.stdout, re.M)
        assert secret and hashed, done.stdout
        assert len(secret.group(1)) >= 32
        assert hashed.group(1) == hash_secret(secret.group(1))
        seen.add(secret.group(1))
    assert len(seen) == 2


# -- serve ----------------------------------------------------------------------------------


def test_serve_with_external_redis_and_no_signing_key_exits_3(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    good_document["server"] = {
        "redis_url": "redis://127.0.0.1:1/0",
        "data_dir": str(tmp_path / "data"),
    }
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    done = stepup_cli("serve", "--config", str(policy), "--port", str(free_port()), timeout=30)
    assert done.returncode == 3, done.stderr
    assert "cannot start" in done.stderr
    assert re.search(r"STEPUP_SIGNING_KEY_FILE|signing_key_file", done.stderr)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "signing-keys.json").exists()


def test_serve_with_a_bad_policy_exits_1(good_document: dict[str, Any], tmp_path: Path) -> None:
    good_document["scopes"]["payments:write"]["level"] = "high"
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    done = stepup_cli("serve", "--config", str(policy), timeout=30)
    assert done.returncode == 1
    assert "unknown key 'level'" in done.stderr


def test_serve_embedded_default_starts_answers_and_stops_cleanly(
    good_document: dict[str, Any], tmp_path: Path, short_dir: Path
) -> None:
    good_document["server"] = {"data_dir": str(short_dir)}
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    socket_path = short_dir / "redis.sock"

    with serving(policy, tmp_path / "first.log") as served:
        metadata = httpx.get(served.url + "/.well-known/oauth-authorization-server", timeout=5)
        assert metadata.status_code == 200
        assert metadata.json()["issuer"] == "http://localhost:8000"
        ready = httpx.get(served.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["redis"] == "ok"
        keys_file = short_dir / "signing-keys.json"
        assert keys_file.is_file()
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        assert redis_answers(socket_path)
        first_kids = [k["kid"] for k in httpx.get(served.url + "/jwks", timeout=5).json()["keys"]]
        assert first_kids
        assert stop(served) == 0, served.output()
        assert "Traceback" not in served.output()
    assert not redis_answers(socket_path), "the embedded redis-server outlived stepup"

    with serving(policy, tmp_path / "second.log") as served:
        second_kids = [k["kid"] for k in httpx.get(served.url + "/jwks", timeout=5).json()["keys"]]
        assert stop(served) == 0, served.output()
    assert second_kids == first_kids
    assert not redis_answers(socket_path)


# -- operations: the admin and metrics credentials, exit codes ---------------------------------


def test_check_refuses_a_client_or_resource_server_secret_as_an_operator_token(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    document = good_document
    document["admin"] = {"token_hash": document["clients"][0]["secret_hash"]}
    document["metrics"] = {"token_hash": document["resource_servers"][1]["secret_hash"]}
    done = stepup_cli("check", str(write_policy(tmp_path / "p.toml", document)))
    assert done.returncode == 1
    assert "admin.token_hash: is the secret of client 'bank'" in done.stderr
    assert "metrics.token_hash: is the secret of resource server 'other-rs'" in done.stderr
    assert done.stderr.strip().endswith("2 problem(s) found")


def test_check_refuses_one_token_for_admin_and_metrics(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    good_document["metrics"] = dict(good_document["admin"])
    good_document["audit"] = {"retention_days": 0}
    done = stepup_cli("check", str(write_policy(tmp_path / "p.toml", good_document)))
    assert done.returncode == 1
    assert "metrics.token_hash: is the admin token" in done.stderr
    assert "audit.retention_days: must be between 1 and 3650" in done.stderr


def test_serve_with_external_redis_and_no_audit_key_exits_3(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    write_new_key_file(tmp_path / "signing.json")
    Sealer.load_or_create(tmp_path / "factor.txt")
    good_document["server"] = {
        "redis_url": "redis://127.0.0.1:1/0",
        "signing_key_file": str(tmp_path / "signing.json"),
        "factor_key_file": str(tmp_path / "factor.txt"),
    }
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    done = stepup_cli("serve", "--config", str(policy), "--port", str(free_port()), timeout=30)
    assert done.returncode == 3, done.stderr
    assert "STEPUP_AUDIT_KEY_FILE" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_refuses_two_clients_admitting_one_upstream_identity(
    good_document: dict[str, Any], tmp_path: Path
) -> None:
    good_document["clients"][1]["upstream_client_ids"] = ["bank"]
    good_document["clients"][0]["upstream_client_ids"] = ["bank", "payments-rs"]
    done = stepup_cli("check", str(write_policy(tmp_path / "p.toml", good_document)))
    assert done.returncode == 1
    assert "admits upstream client_id 'bank' as client 'bank' does" in done.stderr
    assert "admits upstream client_id 'payments-rs', a resource server's id" in done.stderr


def test_serve_with_two_workers_writes_the_audit_trail(
    good_document: dict[str, Any], tmp_path: Path, short_dir: Path
) -> None:
    # Workers are fresh interpreters: each must configure logging itself, or audit events vanish.
    good_document["server"] = {"data_dir": str(short_dir)}
    policy = write_policy(tmp_path / "stepup.toml", good_document)
    with serving(policy, tmp_path / "workers.log", "--workers", "2") as served:
        for _ in range(4):
            answer = httpx.post(
                served.url + "/introspect", data={"token": "a.b.c"}, auth=(RS_ID, RS_SECRET)
            )
            assert answer.json() == {"active": False}
        assert stop(served) == 0, served.output()
    assert served.output().count('"event":"token.introspected"') == 4
