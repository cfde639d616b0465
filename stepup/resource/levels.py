"""The order of authentication levels: a stronger level satisfies a weaker one (RFC 9470 §3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stepup.config import ACR_MFA, ACR_PHR, ACR_PHRH

DEFAULT_LEVELS = (ACR_MFA, ACR_PHR, ACR_PHRH)


class LevelOrder:
    """`levels` from weakest to strongest; `aliases` name other URIs for the same level.

    An `acr` outside the order satisfies only a requirement naming exactly it: nothing is
    guessed about a level nobody ranked.
    """

    def __init__(
        self, levels: Sequence[str] = DEFAULT_LEVELS, aliases: Mapping[str, str] | None = None
    ) -> None:
        if len(set(levels)) != len(levels):
            raise ValueError("a level is listed twice")
        self._rank = {uri: rank for rank, uri in enumerate(levels)}
        self._aliases = dict(aliases or {})
        for alias, target in self._aliases.items():
            if target not in self._rank:
                raise ValueError(f"alias {alias!r} points to unranked level {target!r}")

    def canonical(self, acr: str) -> str:
        return self._aliases.get(acr, acr)

    def known(self, acr: str) -> bool:
        return self.canonical(acr) in self._rank

    def satisfies(self, achieved: str | None, required: str) -> bool:
        if achieved is None:
            return False
        have, need = self.canonical(achieved), self.canonical(required)
        if have == need:
            return True
        if have not in self._rank or need not in self._rank:
            return False
        return self._rank[have] >= self._rank[need]
