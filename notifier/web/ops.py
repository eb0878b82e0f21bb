"""The operator's endpoints: Prometheus metrics, the health check, and the
status page (with /status.txt for the ``status`` command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..config import Config
from ..ops.metrics import Health, Metrics
from ..ops.overview import gather
from .server import Routes
from .status_page import page_routes

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


def operator_routes(config: Config, service: Service) -> Routes:
    """/metrics and /healthz; the status page at / unless metrics.status_page is off."""
    routes = dict(ops_routes(service.metrics, service.health))
    if config.metrics.status_page:
        token = config.metrics.admin_token
        routes |= page_routes(
            lambda offset: gather(service.store, config, service.clock(), service, offset=offset),
            token=token.get_secret_value() if token is not None else None,
            retry=service.retry_dead_letter,
            poll_now=service.poll_now,
        )
    return routes
