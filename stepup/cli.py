"""The `stepup` command: serve, check a policy, run the demo, hash a client secret."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from stepup import config as config_module
from stepup.config import Config, ConfigError

EXIT_OK = 0
EXIT_POLICY = 1
EXIT_STARTUP = 3


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
    if args.command == "demo":
        from stepup.demo.runner import run_demo

        return run_demo(args.data_dir)
    return _serve(args.config, args.host, args.port, args.workers, args.access_log)


def _configure_logging() -> None:
    """Audit events (INFO) and errors to stderr, one message per line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The format uses none of these, and gathering them is a measurable share of a short
    # request (one audit line per decision): the caller's frame, thread and process names.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # documented (logging HOWTO, Optimization): skips findCaller()


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
        options: dict[str, Any] = {**serving.UVICORN_OPTIONS, "access_log": access_log}
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
            app = create_app(loaded, redis_url=redis_url)
            serving.run([(app, bind_port)], bind_host, **options)
    except (StartupError, EmbeddedRedisError, SigningKeyError, SealingError, OSError) as exc:
        print(f"stepup: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    finally:
        if embedded is not None:
            embedded.stop()
    return EXIT_OK


def _subject(path: Path, action: str, issuer: str, sub: str) -> int:
    import asyncio

    from stepup.storage.embedded import EmbeddedRedis, EmbeddedRedisError
    from stepup.storage.keys import subject_id
    from stepup.storage.redis import STORAGE_ERRORS, RedisStore, connect

    loaded = _load(path)
    if loaded is None:
        return EXIT_POLICY
    if loaded.upstream(issuer) is None:
        print(f"stepup: {issuer!r} is not a trusted upstream issuer", file=sys.stderr)
        return EXIT_POLICY
    deployment = loaded.deployment
    key = subject_id(issuer, sub)

    async def act(url: str) -> None:
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

    embedded = None
    try:
        url = deployment.redis_url
        if url is None:
            # The service's own Redis if it is running, else started for this command.
            embedded = EmbeddedRedis(deployment.data_dir)
            if embedded.answering():
                url, embedded = embedded.url, None
            else:
                embedded.start()
                url = embedded.url
        asyncio.run(act(url))
    except EmbeddedRedisError as exc:
        print(f"stepup: cannot start Redis: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except STORAGE_ERRORS as exc:
        print(f"stepup: cannot reach Redis: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    finally:
        if embedded is not None:
            embedded.stop()
    return EXIT_OK


def app_factory() -> object:
    """For `--workers N`: each worker process builds its app from the environment."""
    from stepup.app import create_app

    # A worker is a fresh interpreter (spawn): without this its audit events (INFO) went
    # nowhere, since only the parent had configured logging.
    _configure_logging()
    loaded = config_module.load(Path(os.environ["STEPUP_CONFIG"]))
    return create_app(loaded, redis_url=os.environ["STEPUP_WORKER_REDIS_URL"])


if __name__ == "__main__":
    raise SystemExit(main())
