"""The audit chain's MAC (stepup/audit.py): HMAC-SHA256(key, prev ‖ "\\n" ‖ body) under the
entry's key id, the same for every entry however many were computed before it, so chains
written by earlier versions still verify."""

from __future__ import annotations

import hashlib
import hmac

from stepup.audit import AuditKeys, chain

SIGNING = bytes(range(32))
OLDER = bytes(range(32, 64))


def expected(key: bytes, prev: str, body: bytes) -> str:
    return hmac.new(key, prev.encode("ascii") + b"\n" + body, hashlib.sha256).hexdigest()


def test_the_mac_is_hmac_sha256_of_the_link_and_the_body() -> None:
    keys = AuditKeys([("a2", SIGNING), ("a1", OLDER)])
    for prev, body in [("", b"{}"), ("f" * 64, b'{"event":"token.issued"}'), ("0", b"")]:
        assert keys.mac("a2", prev, body) == expected(SIGNING, prev, body)
        assert keys.mac("a1", prev, body) == expected(OLDER, prev, body)
    assert keys.mac("a0", "", b"{}") is None


def test_a_chain_links_each_entry_to_the_mac_before_it() -> None:
    keys = AuditKeys([("a2", SIGNING), ("a1", OLDER)])
    bodies = [b'{"n":%d}' % n for n in range(5)]
    links = chain(keys, "head", bodies)
    prev = "head"
    for link, body in zip(links, bodies, strict=True):
        assert (link.body, link.prev, link.kid) == (body, prev, "a2")
        assert link.mac == expected(SIGNING, prev, body)
        prev = link.mac
