"""Prometheus metrics, in a registry of the service's own (served by notifier/web)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
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
        self.quota_on_demand = Gauge(
            f"{PREFIX}_quota_on_demand_used",
            "Requests used this quota day on demand (pushes, poll, /watch): the reserve",
            registry=r,
        )  # fmt: skip
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
        self.pushes = Counter(
            f"{PREFIX}_pushes", "Pushes from PlanFix by result (accepted, refused, bad, …)",
            ["result"], registry=r,
        )  # fmt: skip
        self.awaiting_baseline = Gauge(
            f"{PREFIX}_tasks_awaiting_baseline",
            "Watched tasks whose card has not been read yet", registry=r,
        )  # fmt: skip

        self.round_done = Gauge(
            f"{PREFIX}_last_poll_round_timestamp_seconds",
            "When a poll round last completed (the poll loop is turning): the oldest of "
            "the accounts this instance polls", registry=r,
        )  # fmt: skip
        self.healthy = Gauge(
            f"{PREFIX}_healthy", "1 while /healthz says ok, else 0", registry=r
        )  # fmt: skip
        self.outbox_oldest = Gauge(
            f"{PREFIX}_outbox_oldest_pending_age_seconds",
            "Age of the oldest delivery still waiting (0 when none waits)", registry=r,
        )  # fmt: skip
        self.detection_delay = Histogram(
            f"{PREFIX}_detection_delay_seconds",
            "From a change's known moment in PlanFix (an overdue flip: the deadline) "
            "to its event here",
            ["kind"], registry=r, buckets=(15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
        )  # fmt: skip
        self.alert_latency = Histogram(
            f"{PREFIX}_alert_latency_seconds", "From an event to its delivery, per channel",
            ["channel"], registry=r, buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
        )  # fmt: skip

    def pushes_seen(self, result: str) -> None:
        self.pushes.labels(result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every series name this registry can export (monitoring/ must use only these)."""
        suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                    "histogram": ("_bucket", "_sum", "_count", "_created")}  # fmt: skip
        return {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in suffixes[family.type]
        }
