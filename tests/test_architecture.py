"""The layering rule: protocol, factors and policy never import starlette or redis; only the
web layer (and the app/serving glue) imports starlette; only the Redis store imports redis.
The resource-server toolkit imports starlette only in its ASGI adapter, and neither it nor the
client helper reaches into the server (storage, web, services): APIs and clients import them
without running stepup."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stepup"
STARLETTE_ALLOWED = {"app.py", "serving.py", "web", "demo", "resource/asgi.py"}
REDIS_ALLOWED = {"storage/redis.py"}
# The audit chain, the elevation index and the multiplexed connection the hot commands take
# are Redis code too, each in a module of its own.
REDIS_ALLOWED |= {"storage/audit_stream.py", "storage/elevations.py", "storage/multiplex.py"}


SERVER_ONLY = ("stepup.app", "stepup.storage", "stepup.web", "stepup.services", "stepup.factors")
STANDALONE = {"resource", "client.py"}


def _modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _allowed(relative: str, allowed: set[str]) -> bool:
    return any(relative == a or relative.startswith(a + "/") for a in allowed)


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_the_layering(path: Path) -> None:
    relative = str(path.relative_to(PACKAGE))
    imported = _imports(path)
    if "starlette" in imported:
        assert _allowed(relative, STARLETTE_ALLOWED), f"{relative} imports starlette"
    if "redis" in imported:
        assert _allowed(relative, REDIS_ALLOWED), f"{relative} imports redis"
    if _allowed(relative, STANDALONE):
        reached = {m for m in _modules(path) if m.startswith(SERVER_ONLY)}
        assert not reached, f"{relative} imports server internals {sorted(reached)}"


def test_the_rule_is_checked_on_the_layers_it_names() -> None:
    checked = {str(p.relative_to(PACKAGE)) for p in MODULES}
    assert {"protocol/par.py", "factors/totp.py", "policy.py", "storage/redis.py"} <= checked
    assert "redis" in _imports(PACKAGE / "storage" / "redis.py")
    assert "starlette" in _imports(PACKAGE / "web" / "routes.py")
    assert {"resource/guard.py", "resource/tokens.py", "resource/asgi.py", "client.py"} <= checked
