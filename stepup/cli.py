"""The `stepup` command: serve, check a policy, run the demo, hash a client secret."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from stepup import config as config_module
from stepup.config import Config, ConfigError

# Stable exit codes (README "Operations"): CI jobs and cron rely on them.
EXIT_OK = 0
EXIT_POLICY = 1  # the policy file has problems (all are listed)
EXIT_STARTUP = 3  # cannot start: keys, Redis, ports
EXIT_TAMPERED = 4  # `audit verify`: the chain is broken (the entries are named)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("STEPUP_CONFIG"),
        required="STEPUP_CONFIG" not in os.environ,
        help="policy file (TOML)",
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--access-log", action="store_true")

    check = commands.add_parser("check", help="validate a policy file; exit 1 listing every error")
    check.add_argument("file", type=Path)

    demo = commands.add_parser("demo", help="run stepup with a demo bank, IdP and payments API")
    demo.add_argument("--data-dir", type=Path, default=Path(".stepup/demo"))

    subject = commands.add_parser("subject", help="show, disable or enable a subject")
    subject.add_argument("action", choices=["show", "disable", "enable"])
    subject.add_argument("sub", help="the subject (`sub` claim)")
    subject.add_argument("--issuer", required=True, help="the upstream issuer of that subject")
    subject.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("STEPUP_CONFIG"),
        required="STEPUP_CONFIG" not in os.environ,
        help="policy file (TOML)",
    )

    audit = commands.add_parser("audit", help="verify or read the tamper-evident audit trail")
    audit.add_argument("action", choices=["verify", "tail"])
    audit.add_argument("-n", type=int, default=20, help="tail: how many of the newest entries")
    audit.add_argument("--follow", "-f", action="store_true", help="tail: keep printing new ones")
    _config_option(audit)

    keys = commands.add_parser("keys", help="list or rotate the signing keys")
    keys.add_argument("action", choices=["list", "rotate"])
    keys.add_argument(
        "--publish-delay",
        type=int,
        default=None,
        help="rotate: seconds a new key is published before it signs (default 600)",
    )
    _config_option(keys)

    hashing = commands.add_parser("hash-secret", help="hash a client secret for the policy file")
    hashing.add_argument("--generate", action="store_true", help="make a new random secret too")

    args = parser.parse_args(argv)
    _configure_logging()
    if args.command == "check":
        return _check(args.file)
    if args.command == "hash-secret":
        return _hash_secret(args.generate)
    if args.command == "subject":
        return _subject(args.config, args.action, args.issuer, args.sub)
    if args.command == "audit":
        return _audit(args.config, args.action, args.n, args.follow)
    if args.command == "keys":
        return _keys(args.config, args.action, args.publish_delay)
    if args.command == "demo":
        from stepup.demo.runner import run_demo

        return run_demo(args.data_dir)
    return _serve(args.config, args.host, args.port, args.workers, args.access_log)


def _configure_logging() -> None:
    """Audit events (INFO) and errors to stderr, one message per line (serve: JSON lines)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def _check(path: Path) -> int:
    try:
        loaded = config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return EXIT_POLICY
    print(
        f"{path}: ok — issuer {loaded.issuer}, {len(loaded.clients)} client(s), "
        f"{len(loaded.resource_servers)} resource server(s), {len(loaded.scopes)} scope(s), "
        f"{len(loaded.upstreams)} upstream issuer(s)"
    )
    return EXIT_OK


def _hash_secret(generate: bool) -> int:
    if generate:
        secret = secrets.token_urlsafe(32)
        print(f"secret:      {secret}")
    else:
        secret = sys.stdin.readline().rstrip("\n")
        if len(secret) < 16:
            print("a client secret must be at least 16 characters", file=sys.stderr)
            return EXIT_POLICY
    print(f"secret_hash: {config_module.hash_secret(secret)}")
    return EXIT_OK


def _load(path: Path) -> Config | None:
    try:
        return config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return None


def _serve(path: Path, host: str | None, port: int | None, workers: int, access_log: bool) -> int:
    import uvicorn

    from stepup import serving
    from stepup.app import StartupError, create_app, load_keys
    from stepup.sealing import SealingError
    from stepup.signing import SigningKeyError
    from stepup.storage.embedded import EmbeddedRedis, EmbeddedRedisError

    loaded = _load(path)
    if loaded is None:
        return EXIT_POLICY
    deployment = loaded.deployment
    embedded = EmbeddedRedis(deployment.data_dir) if deployment.embedded_redis else None
    try:
        if embedded is not None:
            embedded.start()
            print(f"embedded Redis with persistence in {deployment.data_dir}", file=sys.stderr)
        redis_url = embedded.url if embedded else deployment.redis_url
        bind_host, bind_port = host or deployment.host, port or deployment.port
        from stepup import logs

        logs.configure()
        options: dict[str, Any] = {
            **serving.UVICORN_OPTIONS,
            "access_log": access_log,
            "log_config": logs.uvicorn_config(),
        }
        print(f"stepup serving {loaded.issuer} on {bind_host}:{bind_port}", file=sys.stderr)
        if workers > 1:
            # Each worker builds its own app (and Redis pool) from the environment.
            load_keys(deployment)  # create the embedded default's key files once, before forking
            os.environ["STEPUP_CONFIG"] = str(path.resolve())
            os.environ["STEPUP_WORKER_REDIS_URL"] = str(redis_url)
            uvicorn.run(
                "stepup.cli:app_factory",
                factory=True,
                workers=workers,
                host=bind_host,
                port=bind_port,
                **options,
            )
        else:
            app = create_app(loaded, redis_url=redis_url, settle_heap=True)
            serving.run([(app, bind_port)], bind_host, **options)
    except (StartupError, EmbeddedRedisError, SigningKeyError, SealingError, OSError) as exc:
        print(f"stepup: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    finally:
        if embedded is not None:
            embedded.stop()
    return EXIT_OK


def _subject(path: Path, action: str, issuer: str, sub: str) -> int:
    from stepup.storage.keys import subject_id
    from stepup.storage.redis import RedisStore, connect

    loaded = _load(path)
    if loaded is None:
        return EXIT_POLICY
    if loaded.upstream(issuer) is None:
        print(f"stepup: {issuer!r} is not a trusted upstream issuer", file=sys.stderr)
        return EXIT_POLICY
    key = subject_id(issuer, sub)

    async def act(url: str) -> int:
        store = RedisStore(connect(url))
        try:
            if action in ("disable", "enable"):
                await store.set_disabled(key, action == "disable")
            disabled = await store.is_disabled(key)
            print(f"subject {sub!r} of {issuer}: {'disabled' if disabled else 'enabled'}")
            for factor in await store.factors(key):
                print(
                    f"  {factor.kind:8} {factor.id:20} {factor.name!r} "
                    f"created {factor.created_at} last used {factor.last_used_at}"
                )
        finally:
            await store.close()
        return EXIT_OK

    return _on_redis(loaded, act)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("STEPUP_CONFIG"),
        required="STEPUP_CONFIG" not in os.environ,
        help="policy file (TOML)",
    )


def _on_redis(loaded: Config, action: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Runs `action(url)` on the configured Redis, or the embedded one (the running service's
    if it answers, else started for this command)."""
    import asyncio

    from stepup.storage.embedded import EmbeddedRedis, EmbeddedRedisError
    from stepup.storage.redis import STORAGE_ERRORS

    embedded = None
    try:
        url = loaded.deployment.redis_url
        if url is None:
            embedded = EmbeddedRedis(loaded.deployment.data_dir)
            if embedded.answering():
                url, embedded = embedded.url, None
            else:
                embedded.start()
                url = embedded.url
        return asyncio.run(action(url))
    except EmbeddedRedisError as exc:
        print(f"stepup: cannot start Redis: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except STORAGE_ERRORS as exc:
        print(f"stepup: cannot reach Redis: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    finally:
        if embedded is not None:
            embedded.stop()


def _audit(path: Path, action: str, count: int, follow: bool) -> int:
    from stepup import audit
    from stepup.app import StartupError, load_audit_keys
    from stepup.storage.audit_stream import RedisAuditLog
    from stepup.storage.redis import connect

    loaded = _load(path)
    if loaded is None:
        return EXIT_POLICY
    try:
        keys = load_audit_keys(loaded)
    except StartupError as exc:
        print(f"stepup: {exc}", file=sys.stderr)
        return EXIT_STARTUP

    async def verify(url: str) -> int:
        client = connect(url)
        try:
            verdict = await audit.verify(RedisAuditLog(client), keys, loaded.audit.retention_days)
        finally:
            await client.aclose()
        start = f" after the trim anchor {verdict.anchor}" if verdict.anchor else ""
        for problem in verdict.problems:
            print(f"stepup audit: {problem}", file=sys.stderr)
        if not verdict.intact:
            print(
                f"{len(verdict.problems)} problem(s) in {verdict.entries} entries{start}",
                file=sys.stderr,
            )
            return EXIT_TAMPERED
        print(f"audit chain intact: {verdict.entries} entries{start}")
        return EXIT_OK

    async def tail(url: str) -> int:
        client = connect(url)
        log = RedisAuditLog(client)
        try:
            last = "0-0"
            for entry_id, fields in await log.newest(count):
                print(f"{entry_id} {fields.get('body', '')}", flush=True)
                last = entry_id
            while follow:
                # Blocks less than the client's 2 s socket timeout.
                for entry_id, fields in await log.wait_after(last, 1000):
                    print(f"{entry_id} {fields.get('body', '')}", flush=True)
                    last = entry_id
        finally:
            await client.aclose()
        return EXIT_OK

    try:
        return _on_redis(loaded, verify if action == "verify" else tail)
    except KeyboardInterrupt:
        return EXIT_OK


def _keys(path: Path, action: str, publish_delay: int | None) -> int:
    import time

    from stepup.app import signing_key_path
    from stepup.keys import DEFAULT_PUBLISH_DELAY, KeyFile, rotate
    from stepup.signing import SigningKeyError, write_new_key_file

    loaded = _load(path)
    if loaded is None:
        return EXIT_POLICY
    key_path = signing_key_path(loaded.deployment)
    now = int(time.time())
    try:
        if not key_path.exists() and loaded.deployment.embedded_redis:
            write_new_key_file(key_path)
        if action == "rotate":
            delay = DEFAULT_PUBLISH_DELAY if publish_delay is None else publish_delay
            done = rotate(key_path, now, delay, loaded.limits.max_token_lifetime)
            for kid in done.retired:
                print(f"retired {kid}: every token it signed has expired")
            if done.added:
                print(f"added {done.added}: published now, signs from {done.activates_at}")
            elif done.pending:
                print(f"{done.pending} is already waiting to sign; run rotate again after that")
        for kid, state, when in KeyFile.read(key_path).states(now):
            print(f"{kid}  {state:9}  active from {when}")
    except (OSError, SigningKeyError) as exc:
        print(f"stepup: {key_path}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return EXIT_OK


def app_factory() -> object:
    """For `--workers N`: each worker process builds its app from the environment."""
    from stepup import logs
    from stepup.app import create_app

    # A worker is a fresh interpreter (spawn): without this its audit events (INFO) went
    # nowhere, since only the parent had configured logging.
    logs.configure()
    loaded = config_module.load(Path(os.environ["STEPUP_CONFIG"]))
    return create_app(loaded, redis_url=os.environ["STEPUP_WORKER_REDIS_URL"], settle_heap=True)


if __name__ == "__main__":
    raise SystemExit(main())
