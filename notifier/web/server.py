"""One small HTTP server on the service's own event loop (aiohttp's low-level
server with a route table of our own).

A crowd of clients must not cost the service anything that matters: there is
no thread per connection, a connection that sends nothing complete for
``IDLE_S`` is closed, and beyond ``MAX_CONNECTIONS`` the oldest one is closed
to make room, so idle clients can neither pile up nor lock out a scrape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Routes = Mapping[tuple[str, str], Handler]  # (method, path) → handler

IDLE_S = 10.0  # a request's head must arrive within this; an idle keep-alive ends after it
MAX_CONNECTIONS = 100
MAX_LINE = 8190  # a request line or header longer than this is refused (400)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets); an empty host is loopback."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _BoundedServer(web.Server):
    """aiohttp's server, holding at most ``max_connections``: a new one
    closes the oldest (an idle client, almost always: answers take ms)."""

    def __init__(self, handler: Handler, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        open_now = self.connections
        for oldest in open_now[: max(0, len(open_now) - self.max_connections)]:
            oldest.force_close()


class HttpServer:
    def __init__(
        self, listen: str, routes: Routes, *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.host, self._port = parse_listen(listen)
        self.routes = dict(routes)
        server = _BoundedServer(
            self._dispatch,
            max_connections=max_connections,
            keepalive_timeout=IDLE_S,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            access_log=None,  # a line per scrape is noise; the service logs what matters
        )
        # On stop a request under way gets 2 s (aiohttp's default is 60).
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        """Listen; OSError when the address cannot be had."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        known = sorted(path for _, path in self.routes)
        if any(path == request.path for _, path in self.routes):
            return web.Response(status=405, text=f"{request.method} is not allowed here\n")
        return web.Response(status=404, text=f"not found: try {' or '.join(known)}\n")
