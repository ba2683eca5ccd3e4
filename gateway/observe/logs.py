"""Log output, one line per record: text for a terminal, or JSON for a log collector; and the
request log, one record per answered API request on the `gateway.requests` logger (route it,
raise its level to silence it)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import msgspec

from workers.logs import FORMAT_ENV, timestamp

__all__ = ["REQUEST_LOG", "configure", "log_request"]

REQUEST_LOG = logging.getLogger("gateway.requests")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # a field of another type is written as its str


def configure(level: str, fmt: str) -> None:
    """Every logger of the process (uvicorn's included) through one stderr handler; workers
    inherit the format through the environment (workers/logs.py)."""
    os.environ[FORMAT_ENV] = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_request(fields: dict[str, Any]) -> None:
    """One request's record: its fields as JSON keys, or `key=value` pairs in text."""
    if REQUEST_LOG.isEnabledFor(logging.INFO):
        REQUEST_LOG.info("%s", _KeyValues(fields), extra={"request": fields})


class _KeyValues:
    """A request record's text, `key=value` pairs: built only if a text formatter asks."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]):
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.fields.items() if value is not None)


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message"} plus a request record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        request = getattr(record, "request", None)
        line: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            # A request record's fields are its keys: the message only names what it is.
            "message": "request" if request is not None else record.getMessage(),
        }
        if request is not None:
            line.update(request)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line).decode()
