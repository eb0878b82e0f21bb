"""Prometheus metrics and /healthz, served from a small thread of their own
(a scrape never waits for the event loop, and never blocks it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "planfix_notifier"
Health = Callable[[], tuple[bool, str]]  # (healthy, why not)


class Metrics:
    """Every metric the service exposes, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter(f"{PREFIX}_polls", "Task polls by result", ["result"], registry=r)
        self.requests = Counter(
            f"{PREFIX}_planfix_requests", "PlanFix requests by method and result",
            ["method", "result"], registry=r,
        )  # fmt: skip
        self.quota_used = Gauge(f"{PREFIX}_quota_used", "Requests used this quota day", registry=r)
        self.quota_remaining = Gauge(
            f"{PREFIX}_quota_remaining", "Requests left this quota day", registry=r
        )
        self.events = Counter(f"{PREFIX}_events", "Events raised by kind", ["kind"], registry=r)
        self.deliveries = Counter(
            f"{PREFIX}_deliveries", "Delivery attempts by channel and result",
            ["channel", "result"], registry=r,
        )  # fmt: skip
        self.outbox_pending = Gauge(f"{PREFIX}_outbox_pending", "Deliveries waiting", registry=r)
        self.outbox_dead = Gauge(f"{PREFIX}_outbox_dead", "Dead letters kept", registry=r)
        self.last_poll = Gauge(
            f"{PREFIX}_last_successful_poll_timestamp_seconds",
            "When a poll last got an answer from PlanFix", registry=r,
        )  # fmt: skip
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds", "One poll request, end to end", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.watched = Gauge(f"{PREFIX}_watched_tasks", "Tasks being watched", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            self.server.refresh()
            self._answer(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            healthy, why = self.server.health()
            body = b"ok\n" if healthy else f"unhealthy: {why}\n".encode()
            self._answer(200 if healthy else 503, body, "text/plain; charset=utf-8")
        else:
            self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, listen: str, metrics: Metrics, health: Health, refresh: Callable[[], None]
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.metrics = metrics
        self.health = health
        self.refresh = refresh
        super().__init__((host.strip("[]") or "127.0.0.1", int(port)), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
