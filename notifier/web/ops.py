"""The operator's endpoints: Prometheus metrics, the health check, and the
status page (with /status.txt for the ``status`` command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..config import Config
from ..ops.metrics import Health, Metrics
from ..ops.overview import Overview, gather
from .server import Routes
from .status_page import Action, page_routes

if TYPE_CHECKING:
    from ..app import Service


def ops_routes(metrics: Metrics, health: Health) -> Routes:
    async def serve_metrics(request: web.BaseRequest) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(request: web.BaseRequest) -> web.Response:
        healthy, why = health()
        text = "ok\n" if healthy else f"unhealthy: {why}\n"
        return web.Response(status=200 if healthy else 503, text=text)

    return {("GET", "/metrics"): serve_metrics, ("GET", "/healthz"): healthz}


FRESH_S = 2.0  # an overview this young is served again (tabs refreshing, a burst of `status`)


def operator_routes(config: Config, service: Service) -> Routes:
    """/metrics and /healthz; the status page at / when metrics.page_on."""
    routes = dict(ops_routes(service.metrics, service.health))
    if not config.metrics.page_on:
        return routes
    made: dict[tuple[int, int, str | None], tuple[float, Overview]] = {}

    async def overview(offset: int, limit: int, account: str | None) -> Overview:
        now = service.monotonic()
        at, ready = made.get((offset, limit, account), (-FRESH_S, None))
        if ready is None or now - at >= FRESH_S:
            made.clear()  # one page at a time is kept
            ready = await gather(service.store, config, service.clock(), service,
                                 account=account, offset=offset, limit=limit)  # fmt: skip
            made[(offset, limit, account)] = (now, ready)
        return ready

    def then_fresh(action: Action) -> Action:
        async def act(target: int, account: str | None) -> str:
            try:
                return await action(target, account)
            finally:
                made.clear()  # the page after an action shows its effect

        return act

    async def retry(outbox_id: int, account: str | None) -> str:
        return await service.retry_dead_letter(outbox_id)

    token = config.metrics.admin_token
    routes |= page_routes(
        overview,
        token=token.get_secret_value() if token is not None else None,
        retry=then_fresh(retry),
        poll_now=then_fresh(service.poll_now),
        hosts=config.metrics.hosts,
    )
    return routes
