"""The audit trail: one typed event per decision, with the request's correlation id.

Each event is written twice: as a JSON line on the `stepup.audit` logger (under `stepup serve`,
with the other lines of the same event-loop iteration at its end: logs.JsonLinesHandler; with
`[audit] log_lines = "immediate"`, at once), and, by a background writer, into a Redis Stream
where every entry carries the HMAC-SHA256 of the one before it (a keyed hash chain), so a
deleted or edited entry is detected by `stepup audit verify`. Never a secret, code or token: a
jti or a digest at most.

The request never waits for Redis: `record` only queues. While Redis is unreachable the queue
holds up to `buffer` events (the oldest are dropped beyond that, counted and logged); the JSON
lines are written whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Required, TypedDict, cast

import orjson

from stepup import keyfiles, logs
from stepup.clock import Clock
from stepup.logs import correlation_id

_log = logging.getLogger(logs.AUDIT_LOGGER)
_writer_log = logging.getLogger("stepup.audit.writer")


class AuditEvent(TypedDict, total=False):
    """One decision. Event names are `<area>.<decision>` (README "Audit trail"); a call site
    may add other fields, never a secret, code or token."""

    time: Required[float]  # the injected clock
    event: Required[str]
    outcome: Required[str]  # success | failure | refused | throttled | inactive | …
    request_id: str  # the correlation id (X-Request-ID)
    subject: str  # digest of (upstream issuer, sub): storage/keys.py subject_id
    client: str
    server: str
    jti: str
    reason: str


Observer = Callable[[AuditEvent], None]


class AuditKeyError(Exception):
    pass


class AuditKeys:
    """HMAC keys of the chain: lines `key-id:base64(32 bytes)`; the first signs, all verify.

    Kept apart from Redis, so write access to Redis is not enough to re-forge the chain."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise AuditKeyError("the audit key file holds no key")
        for key_id, key in keys:
            if len(key) != 32 or not key_id or ":" in key_id:
                raise AuditKeyError(f"audit key '{key_id}' must be 32 bytes with a plain id")
        self.current = keys[0][0]
        # Keyed once: each MAC starts from a copy (HMAC.copy, for messages that share a
        # start; here the key setup), not from hmac.new, whose key setup was most of its cost.
        self._keyed = {key_id: hmac.new(key, digestmod=hashlib.sha256) for key_id, key in keys}

    @classmethod
    def load(cls, path: Path) -> AuditKeys:
        try:
            return cls(keyfiles.read_keys(path, "audit key"))
        except keyfiles.KeyFileError as exc:
            raise AuditKeyError(str(exc)) from exc

    @classmethod
    def load_or_create(cls, path: Path) -> AuditKeys:
        keyfiles.create_once(path, prefix="a")
        return cls.load(path)

    def mac(self, key_id: str, prev: str, body: bytes) -> str | None:
        keyed = self._keyed.get(key_id)
        if keyed is None:
            return None
        entry = keyed.copy()
        entry.update(prev.encode("ascii") + b"\n" + body)
        return entry.hexdigest()


@dataclass(frozen=True)
class Link:
    """One stream entry: the event's JSON, the MAC of the entry before it, its own MAC."""

    body: bytes
    prev: str
    mac: str
    kid: str


def chain(keys: AuditKeys, head: str, bodies: Iterable[bytes]) -> list[Link]:
    links = []
    for body in bodies:
        mac = keys.mac(keys.current, head, body)
        assert mac is not None
        links.append(Link(body, head, mac, keys.current))
        head = mac
    return links


@dataclass(frozen=True)
class Refusal:
    """Why an append did not go in: the head stored instead, and whether the writer now has
    the turn (the others are refused until it has appended)."""

    head: str
    mine: bool


class ChainStore(Protocol):
    """Where the chain lives (storage/audit_stream.py)."""

    async def append(
        self, links: list[Link], expected_head: str, now_ms: int, writer: str, turn_ms: int
    ) -> Refusal | None:
        """Appends if the stored head is still `expected_head` and no other writer has the
        turn; else says what was found, and takes the turn for `writer` when it is free."""
        ...

    async def claim(self, writer: str, turn_ms: int) -> str | None:
        """The turn for `writer` and the head to chain onto, or None: another has the turn."""
        ...

    async def trim(self, before_ms: int) -> int: ...
    async def head(self) -> str: ...
    async def anchor(self) -> tuple[str, str] | None: ...
    def entries(self, after: str | None = None) -> AsyncIterator[tuple[str, dict[str, str]]]: ...


@dataclass
class Problem:
    entry: str
    message: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.message}"


@dataclass
class Verdict:
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    anchor: str | None = None

    @property
    def intact(self) -> bool:
        return not self.problems


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


async def verify(store: ChainStore, keys: AuditKeys, retention_days: int) -> Verdict:
    """Walks the whole stream: every entry's MAC, every link, the head, the trim anchor."""
    verdict = Verdict()
    anchor = await store.anchor()
    expected = anchor[1] if anchor else ""
    verdict.anchor = anchor[0] if anchor else None
    previous_id = anchor[0] if anchor else "(start)"
    newest_ms = 0
    async for entry_id, fields in store.entries():
        verdict.entries += 1
        newest_ms = _stream_ms(entry_id)
        body = fields.get("body", "").encode()
        prev, mac, kid = fields.get("prev", ""), fields.get("mac", ""), fields.get("kid", "")
        if prev != expected:
            verdict.problems.append(
                Problem(
                    entry_id,
                    f"chain broken: an entry between {previous_id} and this one is missing, "
                    "or this one's link was changed",
                )
            )
        computed = keys.mac(kid, prev, body)
        if computed is None:
            verdict.problems.append(Problem(entry_id, f"unknown audit key '{kid}'"))
        elif not hmac.compare_digest(computed, mac):
            verdict.problems.append(
                Problem(entry_id, "altered: its MAC does not match its content")
            )
        # Go on from the stored MAC, so one edit is reported once, not for every later entry.
        expected, previous_id = mac, entry_id
    head = await store.head()
    if head != expected:
        verdict.problems.append(
            Problem("head", f"the newest entries after {previous_id} are missing")
        )
    # Trimming removes only entries older than the retention; an anchor newer than that
    # means someone cut the beginning of the stream and moved the anchor to hide it.
    if (
        anchor
        and verdict.entries
        and _stream_ms(anchor[0]) >= newest_ms - retention_days * 86_400_000
    ):
        verdict.problems.append(
            Problem(
                "anchor",
                f"the stream starts after {anchor[0]}, within the retention of {retention_days} days",
            )
        )
    return verdict


# The JSON endpoints' refusals (any RFC 6749 §5.2 error), by path: the decision's event name.
_REFUSALS = {
    "/par": "challenge.refused",
    "/token": "token.refused",
    "/introspect": "introspection.refused",
    "/revoke": "revocation.refused",
    "/enroll": "enrolment.refused",
}


def refusal_event(path: str) -> str:
    if path.startswith("/admin/"):
        return "admin.refused"
    return _REFUSALS.get(path, "request.refused")


class Audit:
    def __init__(
        self,
        clock: Clock,
        *,
        buffer: int = 10_000,
        observers: Iterable[Observer] = (),
        hold_lines: bool = True,
    ) -> None:
        self._clock = clock
        self._buffer = buffer
        # False ([audit] log_lines = "immediate"): each JSON line is written as it is recorded.
        self._hold_lines = hold_lines
        self._observers = list(observers)
        self._pending: deque[bytes] = deque()
        self._wakeup: asyncio.Event | None = None
        self._streaming = False
        self._inflight = 0
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending) + self._inflight

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def record(self, event: str, outcome: str, **fields: Any) -> None:
        entry: AuditEvent = {
            "time": round(self._clock.now(), 3),
            "event": event,
            "outcome": outcome,
        }
        request_id = correlation_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(cast(AuditEvent, {k: v for k, v in fields.items() if v is not None}))
        line = orjson.dumps(entry)
        logs.write(_log, line.decode(), hold=self._hold_lines)
        for observer in self._observers:
            observer(entry)
        if self._streaming:
            self._queue(line)

    def _queue(self, line: bytes) -> None:
        self._pending.append(line)
        if len(self._pending) > self._buffer:
            # Bounded memory during an outage: the oldest events go (they are in the log lines).
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _writer_log.error("audit buffer full: %d event(s) not streamed", self.dropped)
        if self._wakeup is not None:
            self._wakeup.set()

    @contextlib.asynccontextmanager
    async def streaming(
        self,
        store: ChainStore,
        keys: AuditKeys,
        *,
        retention_days: int,
        errors: tuple[type[Exception], ...],
        trim_every: int = 3600,
    ) -> AsyncIterator[None]:
        """Runs the background writer while the app serves; flushes what is left at the end."""
        self._wakeup = asyncio.Event()
        self._streaming = True
        writer = _Writer(self, store, keys, retention_days, errors, trim_every)
        task = asyncio.create_task(writer.run(), name="stepup-audit-writer")
        try:
            yield
        finally:
            self._streaming = False
            writer.stopping = True
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            except TimeoutError:
                task.cancel()
                _writer_log.error("audit: %d event(s) not streamed at shutdown", len(self._pending))


class _Writer:
    """Streams the queued events, a batch at a time, onto the one chain every process shares.

    A batch is chained onto the head this writer last wrote or read; when another process has
    appended since, the store refuses it and says the new head. The first writer refused that
    way takes the turn: the others are refused until it has chained its batch onto that head
    and appended it, so a writer that appends often cannot keep another's retries out (two
    busy workers did: one streamed a fifth of its events and dropped the rest).
    A writer refused while another has the turn claims it, waiting TURN_WAIT between asks.

    A refused append carries its whole batch (up to BATCH events) to Redis for nothing. So a
    writer that has been refused asks for the turn first (a small call: `claim`) before its
    next batches, and goes back to appending at once when the head it is given is its own
    last entry (nobody else is writing)."""

    BATCH = 200
    TURN_MS = 200  # a turn lapses after this, should its writer die or stall
    TURN_WAIT = 0.001
    LINGER = 0.005

    def __init__(
        self,
        audit: Audit,
        store: ChainStore,
        keys: AuditKeys,
        retention_days: int,
        errors: tuple[type[Exception], ...],
        trim_every: int,
    ) -> None:
        self.audit = audit
        self.store = store
        self.keys = keys
        self.retention = retention_days * 86_400
        self.errors = errors
        self.trim_every = trim_every
        self.head: str | None = None
        self.id = os.urandom(8).hex()  # this writer's, for the turn
        self.contended = False  # refused lately: claim the turn before sending a batch
        self.last_trim = float("-inf")
        self.stopping = False

    async def run(self) -> None:
        wakeup = self.audit._wakeup
        assert wakeup is not None
        delay = 0.1
        while True:
            if not self.audit._pending:
                if self.stopping:
                    return
                await wakeup.wait()
                wakeup.clear()
                continue
            try:
                await self._flush()
                delay = 0.1
                if not self.stopping:
                    await asyncio.sleep(self.LINGER)  # let the next batch gather
            except self.errors as exc:
                if self.stopping:
                    _writer_log.error(
                        "audit: Redis unreachable at shutdown, %d event(s) not streamed: %s",
                        len(self.audit._pending),
                        exc,
                    )
                    return
                _writer_log.warning("audit: Redis unreachable, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _claim(self) -> str:
        """The turn, and the head to chain onto: asked again while another writer has it."""
        while True:
            head = await self.store.claim(self.id, self.TURN_MS)
            if head is not None:
                return head
            await asyncio.sleep(self.TURN_WAIT)

    async def _flush(self) -> None:
        audit = self.audit
        pending = audit._pending
        # Taken out of the queue while in flight, so an overflow meanwhile drops only others.
        batch = [pending.popleft() for _ in range(min(len(pending), self.BATCH))]
        audit._inflight = len(batch)
        try:
            now = audit._clock.now()
            head = self.head if self.head is not None else await self.store.head()
            if self.contended:
                claimed = await self._claim()
                self.contended = claimed != head  # another process appended since ours
                head = claimed
            links = chain(self.keys, head, batch)
            while True:
                refused = await self.store.append(
                    links, head, int(now * 1000), self.id, self.TURN_MS
                )
                if refused is None:
                    break
                self.contended = True
                # Another process appended meanwhile (chain onto its entry, in our turn), or
                # has the turn (wait for it with small calls, not by sending the batch again).
                found = refused.head if refused.mine else await self._claim()
                if found != head:
                    head = found
                    links = chain(self.keys, head, batch)
            self.head = links[-1].mac
            audit.written += len(batch)
        except BaseException:
            self.head = None
            pending.extendleft(reversed(batch))
            while len(pending) > audit._buffer:
                pending.popleft()
                audit.dropped += 1
            raise
        finally:
            audit._inflight = 0
        if now - self.last_trim >= self.trim_every:
            self.last_trim = now
            await self.store.trim(int((now - self.retention) * 1000))
