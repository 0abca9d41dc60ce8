"""The api process: uvicorn serving :mod:`services.api.app`, plus ``api.ctl`` for Ping.

Threads: main runs the asyncio event loop (uvicorn); ``ctl`` owns the ROUTER
that answers Ping for `circ up`/`status`/`doctor` (the Pong's details carry
the URL); each HTTP request drives chat from a thread of its own
(services.api.bridge). The listening socket is bound here, before uvicorn
starts, so a taken port is a clear fatal error and port 0 gets a real port
to report.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from typing import Any

import zmq

from protocol.codec import Codec
from protocol.openai_api import ApiRequest
from protocol.service_api import ErrorReply, Ping
from services.common.config import ApiConfig, Config
from services.common.daemon import Readiness, ShutdownFlag, serve_daemon
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.router import RouterServer
from services.common.zmqio import bind_router

log = get_logger("api")
POLL_TIMEOUT_MS = 200
# In-flight requests get this long to finish after SIGTERM (streams are cut after it).
GRACEFUL_S = 5


class PortTaken(RuntimeError):
    pass


def listen_socket(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortTaken(f"cannot listen on {host}:{port} ({exc.strerror}); set [api] port (or "
                        "CIRCADIAN_API_PORT) to a free port, or stop what uses it") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


class ApiServer:
    def __init__(self, paths: Paths, config: ApiConfig, ctx: zmq.Context | None = None) -> None:
        from services.common.api_token import ensure_token, is_loopback

        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("api")
        self.codec: Codec[Any] = Codec(ApiRequest)
        self.router = bind_router(self.ctx, paths.endpoint("api.ctl"))
        self.token = None if is_loopback(config.host) else ensure_token(paths)
        self.sock = listen_socket(config.host, config.port)
        self.url = url_of(self.sock)
        self.readiness.details.update(url=self.url, auth="token" if self.token else "loopback")

    def serve(self, stop: ShutdownFlag) -> None:
        import uvicorn

        from services.api.app import make_app

        app = make_app(self.paths, self.config, self.token)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=GRACEFUL_S,
                                               lifespan="off", proxy_headers=False, server_header=False))
        ctl = threading.Thread(target=self._ctl_loop, args=(stop, server), name="ctl", daemon=True)
        ctl.start()
        log.info("api.listening", url=self.url, auth=self.readiness.details["auth"])
        asyncio.run(self._serve(server, stop))
        stop.set()
        ctl.join(timeout=5)

    async def _serve(self, server: Any, stop: ShutdownFlag) -> None:
        async def watch() -> None:
            # uvicorn takes SIGTERM itself while it serves; this covers a stop requested elsewhere.
            while not server.should_exit:
                if stop.is_set():
                    server.should_exit = True
                if server.started:
                    self.readiness.ready = True
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch())
        try:
            await server.serve(sockets=[self.sock])
        finally:
            watcher.cancel()

    def _ctl_loop(self, stop: ShutdownFlag, server: Any) -> None:
        rpc = RouterServer("api", self.router, self.codec, self._answer, hint="api.ctl answers Ping only")
        rpc.serve(lambda: stop.is_set() or server.should_exit, poll_timeout_ms=POLL_TIMEOUT_MS)

    def _answer(self, request: Any, origin: bytes) -> Any:
        if isinstance(request, Ping):
            return self.readiness.pong(request.request_id)
        return ErrorReply(code="bad_request", message=f"api.ctl answers Ping only, not {type(request).__name__}")

    def close(self) -> None:
        self.router.close()
        self.sock.close()


def run(paths: Paths, config: Config) -> int:
    return serve_daemon("api", paths, lambda: ApiServer(paths, config.api))


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("api", run, argv)


if __name__ == "__main__":
    sys.exit(main())
