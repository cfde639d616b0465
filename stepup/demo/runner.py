"""`stepup demo`: stepup on its embedded Redis, plus a demo bank (with its upstream IdP) and a
payments API, all on localhost, so a newcomer can click through the whole loop."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

from stepup import serving
from stepup.app import create_app
from stepup.config import load
from stepup.demo.client import create_demo_apps
from stepup.demo.policy import DemoSettings, write_demo_policy
from stepup.storage.embedded import EmbeddedRedis


def _port(url: str) -> int:
    return urlsplit(url).port or 80


def run_demo(data_dir: Path, settings: DemoSettings | None = None) -> int:
    settings = settings or DemoSettings()
    data_dir = data_dir.resolve()
    policy = write_demo_policy(data_dir, settings)
    config = load(policy)
    client_app, api_app = create_demo_apps(settings, data_dir)
    print("==> starting embedded Redis in", config.deployment.data_dir, file=sys.stderr)
    with EmbeddedRedis(config.deployment.data_dir) as redis:
        stepup_app = create_app(config, redis_url=redis.url)
        print(
            f"""
stepup demo is running. Open the demo bank and click through the loop:

    {settings.client_base}          demo bank: sign in as {settings.user}, send a payment
    {settings.stepup_issuer}/.well-known/oauth-authorization-server   stepup metadata
    {settings.api_base}/balance     payments API (needs a token)

Policy: {policy}
Press Ctrl-C to stop.
""",
            file=sys.stderr,
        )
        serving.run(
            [
                (stepup_app, _port(settings.stepup_issuer)),
                (client_app, _port(settings.client_base)),
                (api_app, _port(settings.api_base)),
            ],
            "127.0.0.1",
            log_level="warning",
            access_log=False,
        )
    return 0
