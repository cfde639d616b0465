"""Replies of a redis-py client opened without decode_responses, typed as what they are."""

from __future__ import annotations


def as_bytes(reply: object) -> bytes:
    """redis-py types a reply as `bytes | str` (it cannot know decode_responses); a test's
    client leaves it off, so a str here is a fixture gone wrong, not data to convert."""
    assert isinstance(reply, bytes), f"expected a raw bytes reply, got {reply!r}"
    return reply
