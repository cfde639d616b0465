"""JSON-lines logging for `stepup serve`: one object per record, with the request's
correlation id, so logs and the audit trail can be joined on `request_id`."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from stepup.audit import correlation_id


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "stepup.audit":
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


def configure() -> None:
    # The formatter reads none of these, and gathering them is a measurable share of a short
    # request (one audit line per decision): the caller's frame, thread and process names.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # documented (logging HOWTO, Optimization): skips findCaller()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
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
