"""The server's side of the engine: requests in, events back, on the HTTP server's event loop.

The engine runs every model operation on its one thread, first come first served. :meth:`Backend.submit` hands it
a request (``Engine.complete``) with a listener that the engine calls on its thread; the listener counts the job
(waiting, running, done) and passes each event to the request's :class:`asyncio.Queue` with
``loop.call_soon_threadsafe``, the one thread-safe way into an event loop. A request whose client goes away is
cancelled by its own job id, so a disconnect never stops anyone else's generation.

**A server whose engine can go away** (``olmo3 serve --parallel``: a rank of the group died or stopped answering):
:meth:`Backend.mark_down` ends every request in flight with :class:`Unavailable` (a 503 with ``Retry-After``;
the engine thread may be stuck in a collective for good, so nothing waits for it) and refuses every later one
the same way; ``/health`` then says why. It happens once: an MLX group cannot be joined again by the same process.

MLX-free: the engine is anything with ``complete``, ``cancel_job`` and ``info`` (:class:`EngineLike`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..chat.completion import CompletionFinished, CompletionRejected, CompletionRequest
from ..chat.events import ContextOverflow, Event, JobCancelled, JobFailed, JobStarted
from .errors import ApiError

__all__ = ["TERMINAL", "Backend", "EngineLike", "ServerStats", "Ticket", "Unavailable"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Unavailable(Event):
    """The server can no longer run requests (its parallel group lost a rank): the request ends with a 503."""

    message: str
    code: str = "group_down"
    retry_after_s: int = 10


# The last event of a request (the engine may still emit cache bookkeeping after it; nobody waits for that).
TERMINAL = (CompletionFinished, CompletionRejected, ContextOverflow, JobFailed, JobCancelled, Unavailable)
RETRY_AFTER_S = 2
DOWN_RETRY_AFTER_S = 10  # a group that lost a rank: about the time a supervisor needs to start it again


class EngineLike(Protocol):
    info: Any

    def complete(self, request: CompletionRequest, listener: Any) -> int: ...

    def cancel_job(self, job_id: int) -> None: ...


@dataclass(frozen=True)
class ServerStats:
    """Requests the server has seen: waiting for the engine, running, and finished by outcome."""

    waiting: int = 0
    running: int = 0
    served: int = 0
    cancelled: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.waiting + self.running + self.served + self.cancelled + self.failed

    def to_dict(self) -> dict[str, int]:
        return {
            "waiting": self.waiting,
            "running": self.running,
            "served": self.served,
            "cancelled": self.cancelled,
            "failed": self.failed,
        }


class Ticket:
    """One request in the engine: its job id, its event queue, and its cancel."""

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop):
        self.job_id = 0
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.finished = False
        self._backend = backend
        self._loop = loop
        self._started = False

    # Engine thread: count, then hand over to the event loop.
    def on_event(self, event: Event) -> None:
        self._backend._account(self, event)
        with contextlib.suppress(RuntimeError):  # the event loop is closed: the server has stopped
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """Stop this request's job (a no-op once it has finished)."""
        if not self.finished:
            self._backend.engine.cancel_job(self.job_id)


class Backend:
    """Submits requests to the engine, at most ``max_queue`` waiting at a time; keeps :class:`ServerStats`."""

    def __init__(self, engine: EngineLike, *, max_queue: int = 32, model_id: str | None = None):
        self.engine = engine
        self.max_queue = max_queue
        self.model_id_override = model_id
        self._lock = threading.Lock()
        self._stats = ServerStats()
        self._tickets: set[Ticket] = set()
        self.on_change: Any = None  # called (any thread) after the counts change: the app's status line
        self.group: dict[str, Any] | None = None  # a parallel group: what /health and /v1/olmo/info say about it
        self._down: Unavailable | None = None

    # ------------------------------------------------------------------ the model
    @property
    def model_id(self) -> str | None:
        """The loaded model's id, as ``/v1/models`` lists it (None: no model loaded)."""
        info = getattr(self.engine, "info", None)
        if info is None:
            return None
        return self.model_id_override or str(info.name)

    def accepts_model(self, name: str) -> bool:
        info = getattr(self.engine, "info", None)
        return info is not None and name in {self.model_id, str(info.name), str(info.path)}

    # ------------------------------------------------------------------ a group that went away
    @property
    def down(self) -> Unavailable | None:
        """Why the server can no longer run requests (None: it can)."""
        return self._down

    def mark_down(self, message: str, *, code: str = "group_down", retry_after_s: int = DOWN_RETRY_AFTER_S) -> None:
        """From now on every request is answered 503: those in flight at once, later ones when they come (any
        thread; only the first call counts)."""
        with self._lock:
            if self._down is not None:
                return
            self._down = Unavailable(message=message, code=code, retry_after_s=retry_after_s)
            tickets = list(self._tickets)
        for t in tickets:
            t.on_event(Unavailable(job_id=t.job_id, message=message, code=code, retry_after_s=retry_after_s))
            with contextlib.suppress(Exception):
                self.engine.cancel_job(t.job_id)  # if the engine still runs, it stops what nobody waits for
        log.warning("serving stopped: %s", message)

    async def went_down(self, within_s: float) -> Unavailable | None:
        """Whether the server is (or, within ``within_s``, goes) down: a failed collective on the engine thread
        and the watchdog's report of the rank behind it arrive in either order."""
        deadline = time.monotonic() + within_s
        while self._down is None and self.group is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._down

    def unavailable_error(self) -> ApiError | None:
        down = self._down
        return None if down is None else unavailable(down)

    # ------------------------------------------------------------------ requests
    def submit(self, request: CompletionRequest) -> Ticket:
        """Queue ``request`` on the engine, or raise a 503 when ``max_queue`` requests already wait (or the server
        is down)."""
        ticket = Ticket(self, asyncio.get_running_loop())
        with self._lock:
            if self._down is not None:
                raise unavailable(self._down)
            if self._stats.waiting >= self.max_queue:
                raise ApiError(
                    503,
                    f"the server is busy: {self._stats.waiting} requests are waiting (--max-queue {self.max_queue})",
                    code="queue_full",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self._stats = _bump(self._stats, waiting=1)
            self._tickets.add(ticket)
            ticket.job_id = self.engine.complete(request, ticket.on_event)
        self._changed()
        return ticket

    def _account(self, ticket: Ticket, event: Event) -> None:
        with self._lock:
            if ticket.finished:
                return
            if isinstance(event, JobStarted):
                ticket._started = True
                self._stats = _bump(self._stats, waiting=-1, running=1)
            elif isinstance(event, TERMINAL):
                ticket.finished = True
                self._tickets.discard(ticket)
                outcome = _outcome(event)
                if isinstance(event, CompletionFinished) and outcome == "cancelled":
                    log.info("job %d cancelled after %d generated tokens", ticket.job_id, event.completion_tokens)
                where = {"running": -1} if ticket._started else {"waiting": -1}
                self._stats = _bump(self._stats, **where, **{outcome: 1})
            else:
                return
        self._changed()

    def abandon_all(self) -> None:
        """The server stops: cancel every request still in the engine (their clients are gone)."""
        with self._lock:
            tickets = list(self._tickets)
        for t in tickets:
            t.cancel()

    @property
    def stats(self) -> ServerStats:
        with self._lock:
            return self._stats

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.stats)
            except Exception:
                log.exception("server status listener failed")


def unavailable(event: Unavailable) -> ApiError:
    """The 503 a request gets from a server that is down."""
    return ApiError(503, event.message, code=event.code, headers={"Retry-After": str(event.retry_after_s)})


def _outcome(event: Event) -> str:
    if isinstance(event, CompletionFinished):
        return "cancelled" if event.finish_reason == "cancelled" else "served"
    if isinstance(event, JobCancelled):
        return "cancelled"
    return "failed"


def _bump(s: ServerStats, **delta: int) -> ServerStats:
    return ServerStats(**{k: v + delta.get(k, 0) for k, v in s.to_dict().items()})
