"""The ASGI app (Starlette): OpenAI's endpoints over the :class:`Backend`, errors in OpenAI's shape.

* ``GET /health`` (no key needed): ``{"status", "model", "requests": {waiting, running, served, ...}}``; a parallel
  server adds ``"group"`` (mode, ranks, hosts), and once its group lost a rank answers 503 with ``"status":
  "group_down"`` and the ``"error"`` that says which (:meth:`Backend.mark_down`).
* ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``POST /v1/completions``.
* ``GET /v1/olmo/info`` (Olmo's own): the loaded model's :class:`olmo3.model.modelinfo.ModelInfo` (its ``path``
  left out), the context every conversation gets, the server's version and its group: what the app's "Connect to an
  Olmo server" shows in the picker and the context bar; ``capabilities`` names the extension fields a chat request
  may carry (``thinking_budget``, see ``olmo3.serve.protocol``).

Streaming answers are Server-Sent Events: ``data: {chunk}`` lines, ``data: [DONE]`` at the end. Headers go out
only once the engine has planned the turn (its first ``PrefillProgress``), so a prompt that does not fit is still
a plain 400 ``context_length_exceeded``; from then on every prefill chunk sends an SSE comment (``: prefill
2048/9000``), and so does every ``keepalive_s`` without news, so proxies and clients never see a silent
connection during a long prefill. A client that disconnects has its job cancelled (Starlette cancels the
stream; a non-streaming request watches ``http.disconnect`` itself).

Tools: when a request offers tools, a streamed reply's text stops at Olmo's ``<function_calls>``; if the block is a
call, the calls follow as one ``tool_calls`` delta and the stream ends with ``finish_reason`` "tool_calls"; if not,
the held text follows as content.

Nothing here logs message contents: an INFO line per request carries ids, token counts and timings only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..chat.completion import CompletionFinished, CompletionRejected
from ..chat.events import ContextOverflow, Event, JobCancelled, JobFailed, PrefillProgress, TextDelta
from ..chat.tool_turns import CallTextFilter
from ..fileio import loads_json
from . import protocol
from .backend import TERMINAL, Backend, Ticket, Unavailable, unavailable
from .errors import ApiError, context_length_exceeded, error_body

__all__ = ["AppConfig", "create_app"]

log = logging.getLogger(__name__)

BODY_LIMIT_BYTES = 16 * 1024**2
KEEPALIVE_S = 10.0
GROUP_REPORT_S = 2.0  # how long a failed job of a parallel server waits for the watchdog's word on the group


@dataclass(frozen=True)
class AppConfig:
    api_key: str | None = None
    max_body_bytes: int = BODY_LIMIT_BYTES
    cors_origins: tuple[str, ...] = ()
    keepalive_s: float = KEEPALIVE_S


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with a 413, by Content-Length or while they stream in."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(send, self._too_large())
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.limit} bytes", code="request_too_large")


async def _send_error(send: Send, err: ApiError) -> None:
    response = _error_response(err)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(backend: Backend, config: AppConfig | None = None) -> Starlette:
    """The server's ASGI app over ``backend`` (see the module docstring)."""
    config = config or AppConfig()

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise ApiError(401, "You didn't provide an API key (Authorization: Bearer KEY).", code="invalid_api_key")
        import hmac

        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def require_model(name: str | None = None) -> str:
        model = backend.model_id
        if model is None:
            raise ApiError(503, "no model is loaded", code="model_not_loaded", headers={"Retry-After": "5"})
        if name is not None and not backend.accepts_model(name):
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server serves '{model}'.",
                param="model",
                code="model_not_found",
            )
        return model

    async def health(request: Request) -> Response:
        model = backend.model_id
        status = "ok" if model is not None else "no_model"
        body: dict[str, Any] = {"status": status, "model": model, "requests": backend.stats.to_dict()}
        if backend.group is not None:
            body["group"] = backend.group
        down = backend.down
        if down is None:
            return JSONResponse(body)
        body.update(status=down.code, error=down.message)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(down.retry_after_s)})

    async def olmo_info(request: Request) -> Response:
        authorize(request)
        model = require_model()
        engine = backend.engine
        info = engine.info.to_dict() if hasattr(engine.info, "to_dict") else {}
        info["path"] = ""  # where the server keeps its models is none of the client's business
        from .. import __version__

        return JSONResponse(
            {
                "object": "olmo.info",
                "model": model,
                "info": info,
                "context_tokens": int(getattr(engine, "context_tokens", 0) or 0),
                "version": __version__,
                "group": backend.group,
                "capabilities": {"thinking_budget": True},  # the chat request's extension fields
            }
        )

    def model_card(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 0, "owned_by": "olmo-desktop"}

    async def list_models(request: Request) -> Response:
        authorize(request)
        model = backend.model_id
        return JSONResponse({"object": "list", "data": [model_card(model)] if model else []})

    async def get_model(request: Request) -> Response:
        authorize(request)
        model = require_model(request.path_params["model"])
        return JSONResponse(model_card(model))

    async def read_body(request: Request) -> Any:
        data = await request.body()
        try:
            return loads_json(data, what="the request body")
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, f"We could not parse the JSON body of your request: {e}") from None

    def endpoint(parse: Callable[[Any], protocol.ParsedRequest]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            authorize(request)
            parsed = parse(await read_body(request))
            model = require_model(parsed.model)
            ticket = backend.submit(parsed.completion)
            started = time.perf_counter()
            first = await _first_event(request, ticket)
            if first is None:  # the client left while the request waited
                return Response(status_code=499)
            if not isinstance(first, PrefillProgress):
                raise _terminal_error(await _settle(backend, first))
            if parsed.stream:
                return StreamingResponse(
                    _stream(backend, parsed, model, ticket, config.keepalive_s, started),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            return await _complete(backend, request, parsed, model, ticket, started)

        return handle

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        body = error_body(f"{message}: {request.method} {request.url.path}", "invalid_request_error")
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("request failed")
        return _error_response(ApiError(500, f"internal error: {type(exc).__name__}"))

    middleware = [Middleware(BodyLimit, limit=config.max_body_bytes)]
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/olmo/info", olmo_info, methods=["GET"]),
        Route("/v1/chat/completions", endpoint(protocol.parse_chat), methods=["POST"]),
        Route("/v1/completions", endpoint(protocol.parse_completion), methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error, Exception: on_error},
    )


async def _first_event(request: Request, ticket: Ticket) -> Event | None:
    """Wait until the engine has planned the turn (``PrefillProgress``) or refused it; None if the client left."""
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        while True:
            get = asyncio.ensure_future(ticket.events.get())
            done, _ = await asyncio.wait({get, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                ticket.cancel()
                return None
            event = get.result()
            if isinstance(event, (PrefillProgress, *TERMINAL)):
                return event
    finally:
        watcher.cancel()


async def _settle(backend: Backend, event: Event) -> Event:
    """A failed job of a parallel server whose group is going down is the group's 503, not a 500: the collective
    that failed on the engine thread and the watchdog naming the rank behind it arrive in either order."""
    if isinstance(event, JobFailed):
        down = await backend.went_down(GROUP_REPORT_S)
        if down is not None:
            return dataclasses.replace(down, job_id=event.job_id)
    return event


def _terminal_error(event: Event) -> ApiError:
    if isinstance(event, Unavailable):
        return unavailable(event)
    if isinstance(event, CompletionRejected):
        headers = {"Retry-After": "5"} if event.status == 503 else None
        return ApiError(event.status, event.message, param=event.param, code=event.code, headers=headers)
    if isinstance(event, ContextOverflow):
        return context_length_exceeded(event.used, event.max_tokens, event.limit, event.reason)
    if isinstance(event, JobCancelled) or (
        isinstance(event, CompletionFinished) and event.finish_reason == "cancelled"
    ):
        return ApiError(503, "the request was cancelled: the server is stopping", headers={"Retry-After": "5"})
    if isinstance(event, JobFailed):
        return ApiError(500, f"the engine failed: {event.message}")
    return ApiError(500, f"unexpected engine event {type(event).__name__}")


def _log_done(parsed: protocol.ParsedRequest, fin: CompletionFinished, started: float) -> None:
    st = fin.stats
    log.info(
        "%s: %d prompt tokens (%d cached, %s), %d completion tokens, %.3f s to first token, %.1f tok/s, %.3f s, %s",
        parsed.id,
        fin.prompt_tokens,
        fin.cached_tokens,
        fin.source,
        fin.completion_tokens,
        st.ttft_s,
        st.tokens_per_s,
        time.perf_counter() - started,
        fin.finish_reason,
    )


async def _complete(
    backend: Backend, request: Request, parsed: protocol.ParsedRequest, model: str, ticket: Ticket, started: float
) -> Response:
    """A non-streaming answer: collect the reply, cancelling the job if the client leaves meanwhile."""
    answer: list[str] = []
    reasoning: list[str] = []
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        while True:
            get = asyncio.ensure_future(ticket.events.get())
            done, _ = await asyncio.wait({get, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                ticket.cancel()
                return Response(status_code=499)
            event = get.result()
            if isinstance(event, TextDelta):
                (reasoning if event.channel == "reasoning" else answer).append(event.text)
            elif isinstance(event, CompletionFinished) and event.finish_reason != "cancelled":
                _log_done(parsed, event, started)
                used = protocol.usage(event.prompt_tokens, event.cached_tokens, event.completion_tokens)
                if parsed.kind == "text":
                    body = protocol.text_response(parsed, model, "".join(answer), event.finish_reason, used)
                else:
                    think = "".join(reasoning) if reasoning else None
                    body = protocol.chat_response(parsed, model, "".join(answer), think, event.finish_reason, used)
                return JSONResponse(body)
            elif isinstance(event, TERMINAL):
                raise _terminal_error(await _settle(backend, event))
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):
            ticket.cancel()


async def _stream(
    backend: Backend, parsed: protocol.ParsedRequest, model: str, ticket: Ticket, keepalive_s: float, started: float
) -> AsyncIterator[str]:
    """SSE chunks of a streaming answer; Starlette cancels this generator when the client disconnects."""
    chat = parsed.kind == "chat"
    calls = CallTextFilter() if chat and parsed.completion.tools else None  # holds back a <function_calls> block
    answer: list[str] = []
    try:
        if chat:
            yield _sse(protocol.chat_chunk(parsed, model, {"role": "assistant", "content": ""}))
        while True:
            try:
                event = await asyncio.wait_for(ticket.events.get(), keepalive_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if isinstance(event, PrefillProgress):
                yield f": prefill {event.done}/{event.total}\n\n"
            elif isinstance(event, TextDelta):
                if not chat:
                    yield _sse(protocol.text_chunk(parsed, model, event.text))
                elif event.channel == "reasoning":
                    yield _sse(protocol.chat_chunk(parsed, model, {"reasoning_content": event.text}))
                else:
                    answer.append(event.text)
                    text = calls.feed(event.text) if calls is not None else event.text
                    if text:
                        yield _sse(protocol.chat_chunk(parsed, model, {"content": text}))
            elif isinstance(event, CompletionFinished) and event.finish_reason != "cancelled":
                _log_done(parsed, event, started)
                if chat:
                    finish: str = event.finish_reason
                    if calls is not None:
                        message, finish = protocol.reply_message(parsed, "".join(answer), finish)
                        if message.get("tool_calls"):
                            delta = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                            yield _sse(protocol.chat_chunk(parsed, model, {"tool_calls": delta}))
                        elif calls.held:  # the block was no call after all: it is text
                            yield _sse(protocol.chat_chunk(parsed, model, {"content": calls.held}))
                    yield _sse(protocol.chat_chunk(parsed, model, {}, finish))
                else:
                    yield _sse(protocol.text_chunk(parsed, model, "", event.finish_reason))
                if parsed.include_usage:
                    used = protocol.usage(event.prompt_tokens, event.cached_tokens, event.completion_tokens)
                    yield _sse(protocol.usage_chunk(parsed, model, used))
                yield "data: [DONE]\n\n"
                return
            elif isinstance(event, TERMINAL):
                yield _sse(_terminal_error(await _settle(backend, event)).body())
                yield "data: [DONE]\n\n"
                return
    finally:
        ticket.cancel()  # a no-op when the reply is complete; stops the job when the client went away
