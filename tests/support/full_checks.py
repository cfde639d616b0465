"""Which client secrets stepup compared in full (decoded and hashed), in order: the real
comparison, counted, so a test can tell a remembered header from one checked again."""

from __future__ import annotations

import pytest

from stepup.config import secret_matches
from stepup.protocol import client_auth


def record_full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []

    def counting(secret: str, stored: str) -> bool:
        checked.append(secret)
        return secret_matches(secret, stored)

    monkeypatch.setattr(client_auth, "secret_matches", counting)
    return checked
