"""What the routes and the relay note about one request, in its ASGI scope, for the metrics
middleware and the request log to record: a leaf module, so the relay (below the gateway's state)
and the metrics (above it) both read it without an import circle."""

from __future__ import annotations

from litestar.types import Scope

from workers.wire import Usage

__all__ = ["MARKS_KEY", "NO_KEY", "NO_MODEL", "Marks", "marks"]

MARKS_KEY = "llm_gateway.marks"  # the scope key of a request's Marks
NO_MODEL = "none"  # a request refused before its model was known
NO_KEY = "none"  # ... before its caller was known


class Marks:
    """What the routes and the relay note about one request, for the middleware to record."""

    __slots__ = (
        "event_gaps",
        "failed_status",
        "key",
        "model",
        "queue_position",
        "queue_wait",
        "replica",
        "request_id",
        "upstream_ended",
        "upstream_started",
        "usage",
    )

    def __init__(self) -> None:
        self.model = NO_MODEL  # the configured name, once the request's model is resolved
        self.key = NO_KEY  # the caller's key name, once known (never the key itself)
        self.request_id: str | None = None
        self.replica: int | None = None  # the index of the replica that answered
        self.queue_wait = 0.0  # seconds spent waiting for a replica
        self.queue_position = 0  # where it entered the queue (1: first); 0: it did not wait
        self.upstream_started: float | None = None  # perf_counter() when sent to the worker
        self.upstream_ended: float | None = None  # ... when the worker's answer had all come
        self.event_gaps: list[float] = []  # streams: seconds between two successive events
        self.usage: Usage | None = None  # the tokens the worker reports the request used
        # A stream answered 200 at once that then failed (it waited, then timed out): the
        # status its error would have had, which the metrics and the log record instead.
        self.failed_status: int | None = None


def marks(scope: Scope) -> Marks:
    """The request's Marks (a throwaway set where no middleware put one, e.g. in unit tests)."""
    found: Marks | None = scope.get(MARKS_KEY)  # type: ignore[assignment]
    return found if found is not None else Marks()
