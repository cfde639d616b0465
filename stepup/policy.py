"""Which level, how recent a proof and how long an elevation each scope allows.

The server decides: a client may ask for a stronger level than policy requires, never a
weaker one, and never a longer life.
"""

from __future__ import annotations

from collections.abc import Sequence

from stepup.config import Config, Level, ScopeRule
from stepup.errors import InvalidRequest


class Policy:
    def __init__(self, config: Config) -> None:
        self._config = config
        # Kept long enough for the largest max_age any scope allows.
        self.reuse_window = max((rule.max_age for rule in config.scopes.values()), default=0)

    def rules(self, scopes: Sequence[str]) -> list[ScopeRule]:
        return [self._config.scopes[name] for name in scopes]

    def level_for(self, scopes: Sequence[str], requested_acrs: Sequence[str]) -> Level:
        required = [self._config.levels[rule.acr] for rule in self.rules(scopes)]
        known = [level for uri in requested_acrs if (level := self._config.level(uri))]
        if requested_acrs and not known:
            # Ignoring them would hand back a token the resource server refuses again.
            raise InvalidRequest(
                "none of the requested acr_values is supported",
                detail=f"acr_values {list(requested_acrs)}",
            )
        candidates = required + known
        if not candidates:
            raise InvalidRequest("no authentication level applies to the request")
        return max(candidates, key=lambda level: level.rank)

    def max_age_for(self, scopes: Sequence[str], requested: int | None) -> int:
        allowed = min(rule.max_age for rule in self.rules(scopes))
        return allowed if requested is None else min(allowed, requested)

    def lifetime_for(self, scopes: Sequence[str], subject_exp: int, now: int) -> int:
        rules = self.rules(scopes)
        lifetime = min(
            min(rule.token_lifetime for rule in rules), self._config.limits.max_token_lifetime
        )
        if not all(rule.beyond_subject_exp for rule in rules):
            lifetime = min(lifetime, subject_exp - now)
        return lifetime

    def single_use(self, scopes: Sequence[str]) -> bool:
        return any(rule.single_use for rule in self.rules(scopes))

    def stronger_or_equal(self, achieved: str, required: str) -> bool:
        have = self._config.level(achieved)
        need = self._config.level(required)
        return have is not None and need is not None and have.rank >= need.rank
