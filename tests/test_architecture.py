"""The layering rule: protocol, factors and policy never import starlette or redis; only the
web layer (and the app/serving glue) imports starlette; only the Redis store imports redis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stepup"
STARLETTE_ALLOWED = {"app.py", "serving.py", "web", "demo"}
REDIS_ALLOWED = {"storage/redis.py"}
# The audit chain and the elevation index are Redis code too, each in a module of its own.
REDIS_ALLOWED |= {"storage/audit_stream.py", "storage/elevations.py"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


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


def test_the_rule_is_checked_on_the_layers_it_names() -> None:
    checked = {str(p.relative_to(PACKAGE)) for p in MODULES}
    assert {"protocol/par.py", "factors/totp.py", "policy.py", "storage/redis.py"} <= checked
    assert "redis" in _imports(PACKAGE / "storage" / "redis.py")
    assert "starlette" in _imports(PACKAGE / "web" / "routes.py")
