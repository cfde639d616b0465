"""JSON-lines logging for `stepup serve`: one object per record, with the request's
correlation id, so logs and the audit trail can be joined on `request_id`.

The audit trail writes a line per decision, the one log line on every hot request. When the
JSON handler is the only place such a line would go, `write` hands it over directly instead
of through a LogRecord (caller lookup, record, filters, handler walk: about 8 µs a line), and
the handler writes the lines of one event-loop iteration with one system call, or, when the
deployment asks for it (`[audit] log_lines = "immediate"`), each line before `write` returns.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

# Set by the web layer for each request (X-Request-ID, or a generated one).
correlation_id: ContextVar[str | None] = ContextVar("stepup_correlation_id", default=None)

AUDIT_LOGGER = "stepup.audit"
# Lines held for the end of the loop iteration at most; beyond that they are written at once.
MAX_HELD_LINES = 256


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == AUDIT_LOGGER:
            return record.getMessage()  # already one JSON object, request_id included
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = correlation_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info and record.exc_info[1] is not None:
            # One line: the exception, never a multi-line traceback that log shippers split.
            entry["exception"] = repr(record.exc_info[1])
        return orjson.dumps(entry).decode()


class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """A stream of JSON lines. Records are written as a StreamHandler writes them; lines
    given to `hold` are written at the end of the current event-loop iteration, all in one
    write, and always before any later record, so the stream keeps the order of both.

    What a crash can cost: a process killed outright (SIGKILL, the OOM killer, a fault in C
    code) loses the lines held in the iteration it dies in, at most MAX_HELD_LINES; their
    answers may already have been sent, since a response goes out in the same iteration. A
    normal exit writes them: `flush` (run by logging's shutdown at exit and by a stream
    change) writes what is held first. A deployment that cannot accept the loss gives its
    lines to `write_now` instead (`[audit] log_lines = "immediate"`): one write each."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonLines())
        assert self.lock is not None  # made by Handler.__init__, an RLock
        self._lock = self.lock
        self._held: list[str] = []
        # The loop a write of the held lines is scheduled on: a line held under another loop
        # (or none) cannot count on that write and arranges its own.
        self._due_on: asyncio.AbstractEventLoop | None = None

    def hold(self, line: str) -> None:
        """`line` (one JSON object, no newline) to be written at the end of this iteration."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._held.append(line)
            if loop is None or len(self._held) >= MAX_HELD_LINES:
                self._write_now()
                return
            if self._due_on is loop:
                return
            self._due_on = loop
        loop.call_soon(self._write_due, loop)

    def write_now(self, line: str) -> None:
        """`line` written, after any held before it, and flushed before this returns: out of
        the process (not on disk: no fsync) even if it is killed next."""
        with self._lock:
            self._held.append(line)
            self._write_now()

    def _write_due(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._due_on is loop:
                self._due_on = None
            self._write_now()

    def _write_now(self) -> None:
        # As emit: a failed write goes to handleError, never to the request that logged.
        try:
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"name": AUDIT_LOGGER, "msg": "flush"}))

    def _write_held(self) -> None:
        # The caller holds the lock.
        if not self._held:
            return
        text = self.terminator.join(self._held) + self.terminator
        self._held.clear()
        try:
            self.stream.write(text)
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"name": AUDIT_LOGGER, "msg": text}))

    def flush(self) -> None:
        with self._lock:
            self._write_held()
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        self._write_held()  # Handler.handle holds the lock
        super().emit(record)


def write(logger: logging.Logger, line: str, *, hold: bool = True) -> None:
    """Logs `line` (one JSON object) at INFO on `logger`. When the one handler the record would
    reach is a JsonLinesHandler that writes it as it is (no filter anywhere, JsonLines format),
    the line goes to that handler directly: held for the end of the iteration, or with
    `hold=False` written before this returns. Otherwise it goes through logging as any record
    (emitted at once), so handlers of other setups (pytest's capture, a library user's own)
    see the same record."""
    handler = _sole_json_handler(logger)
    if handler is None:
        logger.info(line)
    elif hold:
        handler.hold(line)
    else:
        handler.write_now(line)


def _sole_json_handler(logger: logging.Logger) -> JsonLinesHandler | None:
    # As Logger.info → handle → callHandlers decide, without making the record.
    if logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    found: JsonLinesHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            if (
                found is not None
                or type(handler) is not JsonLinesHandler
                or handler.filters
                or type(handler.formatter) is not JsonLines
            ):
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def configure() -> None:
    # The formatter reads none of these, and gathering them is a measurable share of a short
    # request: the caller's frame, thread and process names.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # documented (logging HOWTO, Optimization): skips findCaller()
    handler = JsonLinesHandler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def uvicorn_config() -> dict[str, Any]:
    """uvicorn's loggers handing their records to the root's JSON handler."""
    passthrough = {"handlers": [], "propagate": True, "level": "INFO"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: passthrough for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
