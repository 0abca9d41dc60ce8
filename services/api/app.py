"""The HTTP routes (Starlette): OpenAI's chat completions, models, and health.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
so clients show the message. A request is answered by chat over ZeroMQ
(:mod:`services.api.bridge`); this module owns no model and no state but the
conversation map and a count of requests in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.chat_api import ChatDelta, ChatFinished, ChatStarted
from services.api.bridge import ChatCall
from services.api.conversations import Conversations
from services.api.requests import BadRequest, Turn, check, decode
from services.common.chat_client import ChatClient
from services.common.config import ApiConfig
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.rpc import RemoteError, ServiceUnavailable

log = get_logger("api")

# chat's ErrorReply codes -> HTTP status and OpenAI error type.
_REMOTE = {"bad_request": (400, "invalid_request_error"), "too_large": (400, "invalid_request_error"),
           "malformed": (400, "invalid_request_error"), "busy": (429, "rate_limit_error"),
           "unavailable": (503, "api_error"), "cancelled": (499, "api_error"), "internal": (500, "api_error"),
           "disk_full": (507, "api_error")}  # 507 Insufficient Storage: the turn could not be logged


def error_response(status: int, message: str, *, type_: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


def _from_exception(exc: BaseException) -> JSONResponse:
    if isinstance(exc, BadRequest):
        return error_response(exc.status, str(exc), type_=exc.type, param=exc.param, code=exc.code)
    if isinstance(exc, RemoteError):
        status, type_ = _REMOTE.get(exc.code, (500, "api_error"))
        code = "context_length_exceeded" if exc.code == "too_large" else exc.code
        return error_response(status, exc.reply.message, type_=type_, code=code)
    if isinstance(exc, ServiceUnavailable):
        return error_response(503, str(exc), type_="api_error", code="unavailable")
    log.error("api.internal_error", error=repr(exc))
    return error_response(500, f"internal error: {exc}", type_="api_error", code="internal")


class BearerAuth:
    """ASGI middleware: every request needs ``Authorization: Bearer <token>`` (when a token is set)."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.token is not None:
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, value = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                response = error_response(
                    401, "missing or wrong API key: this server is not on loopback, so it needs "
                    "`Authorization: Bearer <token>` (the token: `circ api token` on the server)",
                    code="invalid_api_key")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Api:
    def __init__(self, paths: Paths, config: ApiConfig) -> None:
        self.paths = paths
        self.config = config
        self.conversations = Conversations()
        self.in_flight = 0
        self.model_name = "circadian"  # replaced by chat's model name once chat answers
        self.created = int(time.time())

    # -- helpers -------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"the body is {declared} bytes; the limit is {limit}", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"the body passes the limit of {limit} bytes", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _chat_pong(self) -> Any:
        def ping() -> Any:
            client = ChatClient(self.paths)
            try:
                return client.ping()
            finally:
                client.close()
        pong = await anyio.to_thread.run_sync(ping)
        self.model_name = pong.details.get("model") or self.model_name
        return pong

    # -- routes ----------------------------------------------------------
    async def health(self, request: Request) -> Response:
        try:
            pong = await self._chat_pong()
        except (ServiceUnavailable, RemoteError) as exc:
            return JSONResponse({"status": "degraded", "chat": {"ready": False, "error": str(exc)}}, status_code=503)
        body = {"status": "ok" if pong.ready else "starting",
                "chat": {"ready": pong.ready, "model": pong.details.get("model"),
                         "adapter_id": pong.details.get("adapter") or None}}
        return JSONResponse(body, status_code=200 if pong.ready else 503)

    async def models(self, request: Request) -> Response:
        try:
            pong = await self._chat_pong()
        except (ServiceUnavailable, RemoteError) as exc:
            return _from_exception(exc)
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": int(pong.started_at),
            "owned_by": "circadian", "adapter_id": pong.details.get("adapter") or None}]})

    async def completions(self, request: Request) -> Response:
        try:
            turn = check(decode(await self._read_body(request)), self.config)
        except BadRequest as exc:
            log.info("api.request_rejected", status=exc.status, error=str(exc))
            return _from_exception(exc)
        if self.in_flight >= self.config.max_concurrent:
            return error_response(429, f"{self.in_flight} requests are being answered; retry in a moment",
                                  type_="rate_limit_error", code="busy")
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1

        try:
            session_id = self.conversations.claim(turn.system_prompt, turn.history)
            call = ChatCall(self.paths, turn, session_id, asyncio.get_running_loop()).start()
            disconnect = asyncio.ensure_future(_wait_disconnect(request.receive))
            first = await self._next(call, disconnect)
            if first is None:
                call.cancel()
                return Response(status_code=499)
            if isinstance(first, BaseException):
                return _from_exception(first)
            log.info("api.turn_started", request_id=call.request_id, session_id=first.session_id,
                     continued=session_id is not None, stream=turn.stream, user=turn.user)
            if turn.stream:
                disconnect.cancel()  # the stream watches for it itself
                released = True  # the stream releases the slot when it ends
                return _EventStream(self, call, turn, first, lambda: setattr(self, "in_flight", self.in_flight - 1))
            return await self._complete(call, turn, first, disconnect)
        finally:
            release()

    async def _next(self, call: ChatCall, disconnect: asyncio.Future) -> Any:
        """The call's next item, or None if the client hung up first."""
        item = asyncio.ensure_future(call.next())
        done, _ = await asyncio.wait({item, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        if item in done:
            return item.result()
        item.cancel()
        return None

    async def _complete(self, call: ChatCall, turn: Turn, started: ChatStarted,
                        disconnect: asyncio.Future) -> Response:
        text: list[str] = []
        try:
            while True:
                item = await self._next(call, disconnect)
                if item is None and disconnect.done():
                    call.cancel()
                    log.info("api.client_gone", request_id=call.request_id)
                    return Response(status_code=499)
                if isinstance(item, BaseException):
                    return _from_exception(item)
                if isinstance(item, ChatDelta):
                    text.append(item.text)
                elif isinstance(item, ChatFinished):
                    call.finished = True
                    reply = "".join(text)
                    self.finished(turn, item, reply)
                    return JSONResponse({
                        "id": f"chatcmpl-{call.request_id}", "object": "chat.completion",
                        "created": int(time.time()), "model": item.turn.model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                     "logprobs": None, "finish_reason": _finish(item)}],
                        "usage": _usage(item), "circadian": _extension(item)})
                elif item is None:
                    return error_response(502, "chat ended the reply without finishing it; resend",
                                          type_="api_error", code="internal")
        finally:
            disconnect.cancel()

    def finished(self, turn: Turn, done: ChatFinished, reply: str) -> None:
        """Remember the conversation so its continuation reuses the session (and its KV cache)."""
        self.model_name = done.turn.model
        conversation = [*turn.history, ("user", turn.message), ("assistant", reply)]
        self.conversations.remember(turn.system_prompt, conversation, done.turn.session_id)
        log.info("api.turn_finished", request_id=done.request_id, seq=done.seq, session_id=done.turn.session_id,
                 turn_index=done.turn.turn_index, finish=done.turn.finish_reason,
                 completion_tokens=done.turn.completion_tokens, ttft_ms=done.turn.ttft_ms)


def _finish(done: ChatFinished) -> str:
    return "length" if done.turn.finish_reason == "length" else "stop"


def _usage(done: ChatFinished) -> dict[str, int]:
    t = done.turn
    return {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens,
            "total_tokens": t.prompt_tokens + t.completion_tokens}


def _extension(done: ChatFinished) -> dict[str, Any]:
    """circadian's own facts about the turn (clients ignore unknown keys)."""
    t = done.turn
    return {"session_id": t.session_id, "turn_index": t.turn_index, "seq": done.seq,
            "adapter_id": t.adapter_id, "recall_status": t.recall_status, "recalled_ids": t.recalled_ids,
            "ttft_ms": t.ttft_ms, "tokens_per_s": t.tokens_per_s}


def _sse(data: Any) -> bytes:
    import json

    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _EventStream:
    """The streamed reply as server-sent events; a client that hangs up cancels the turn."""

    def __init__(self, api: Api, call: ChatCall, turn: Turn, started: ChatStarted, on_close: Any) -> None:
        self.api, self.call, self.turn, self.started, self.on_close = api, call, turn, started, on_close

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse({"id": f"chatcmpl-{self.call.request_id}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": self.api.model_name,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        call = self.call
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))
        text: list[str] = []
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                    (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
            await self._body(send, self._chunk({"role": "assistant", "content": ""}))
            while True:
                item = await self.api._next(call, disconnect)
                if item is None and disconnect.done():
                    log.info("api.client_gone", request_id=call.request_id, streamed_chars=sum(map(len, text)))
                    call.cancel()
                    return
                if isinstance(item, ChatDelta):
                    text.append(item.text)
                    await self._body(send, self._chunk({"content": item.text}))
                elif isinstance(item, ChatFinished):
                    call.finished = True
                    self.api.finished(self.turn, item, "".join(text))
                    await self._body(send, self._chunk({}, _finish(item), circadian=_extension(item)))
                    if self.turn.include_usage:
                        await self._body(send, _sse({"id": f"chatcmpl-{call.request_id}",
                                                     "object": "chat.completion.chunk", "created": int(time.time()),
                                                     "model": item.turn.model, "choices": [], "usage": _usage(item)}))
                    await self._body(send, b"data: [DONE]\n\n", more=False)
                    return
                elif isinstance(item, BaseException) or item is None:
                    # Headers are sent: the error goes in the stream, as OpenAI does.
                    call.finished = True
                    err = item if item is not None else RuntimeError("chat ended the reply without finishing it")
                    body = _from_exception(err).body
                    await self._body(send, b"data: " + bytes(body) + b"\n\n", more=False)
                    return
        except OSError:  # the connection broke mid-send
            call.cancel()
        finally:
            disconnect.cancel()
            self.on_close()

    async def _body(self, send: Any, data: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")
    return error_response(status, f"no such endpoint: {request.method} {request.url.path}; "
                          "try POST /v1/chat/completions, GET /v1/models or GET /health", code="not_found")


def make_app(paths: Paths, config: ApiConfig, token: str | None) -> Any:
    api = Api(paths, config)
    app = Starlette(routes=[
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.completions, methods=["POST"]),
    ], exception_handlers={HTTPException: _not_found})
    app.state.api = api
    return BearerAuth(app, token)
