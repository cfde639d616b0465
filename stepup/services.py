"""Everything a request handler needs, built once at startup and passed in (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stepup.audit import Audit
from stepup.clock import Clock
from stepup.config import Config
from stepup.dpop import Nonces
from stepup.factors.verify import Verifier
from stepup.policy import Policy
from stepup.protocol.client_auth import RememberedHeaders
from stepup.protocol.introspection import Answers
from stepup.protocol.subject import SubjectValidator
from stepup.sealing import Sealer
from stepup.signing import SigningKeys
from stepup.storage.base import ElevationIndex, Store
from stepup.throttle import Throttle


@dataclass
class Services:
    config: Config
    clock: Clock
    store: Store
    signing: SigningKeys
    sealer: Sealer
    subjects: SubjectValidator
    policy: Policy
    throttle: Throttle
    audit: Audit
    verifier: Verifier
    elevations: ElevationIndex
    nonces: Nonces  # DPoP server nonces (RFC 9449 §8), the same at every instance
    # Basic headers that authenticated under `config`: this app's, checked in full again
    # when `config` is replaced.
    remembered_headers: RememberedHeaders
    # Introspection answers by the record's bytes (protocol/introspection.py): this app's.
    answers: Answers = field(default_factory=Answers)

    def now(self) -> int:
        return int(self.clock.now())
