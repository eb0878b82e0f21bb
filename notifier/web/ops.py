"""The operator's endpoints: Prometheus metrics and the health check."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..ops.metrics import Health, Metrics
from .server import Routes


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
