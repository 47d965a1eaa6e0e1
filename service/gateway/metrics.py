"""The gateway's Prometheus metrics (one registry per process, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.observability.metrics import LabelledChildren

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Several labelled children per request: each looked up once.
        self.child = LabelledChildren()
        self.requests = Counter(
            "gateway_requests", "HTTP requests on the callback port by route and status.",
            ["route", "status"], registry=registry,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time to answer a callback request.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Callback requests being handled now (past the source checks, up to MAX_IN_FLIGHT).",
            registry=registry,
        )
        self.publish_duration = Histogram(
            "gateway_publish_duration_seconds",
            "Time from send to broker acknowledgement, by topic role (events, rejected).",
            ["topic"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.publish_failures = Counter(
            "gateway_publish_failures",
            "Records the broker did not acknowledge in time (spooled or answered 503).",
            ["topic", "reason"], registry=registry,
        )
        self.events = Counter(
            "gateway_events_published",
            "Events accepted (acknowledged by the broker or fsynced to the spool), by kind and "
            "stage.",
            ["kind", "stage"], registry=registry,
        )
        self.spooled = Counter(
            "gateway_spooled_answers",
            "Answers given once the record was fsynced to the spool, by topic role.",
            ["topic"], registry=registry,
        )
        self.rejections = Counter(
            "gateway_rejections", "Bodies kept on the rejected topic, by reason.",
            ["reason"], registry=registry,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures", "Requests refused by source verification, by reason.",
            ["reason"], registry=registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused: scope=source (failure budget spent, 429), in_flight (503).",
            ["scope"], registry=registry,
        )

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, str(status)).inc()
        self.child(self.request_duration, route).observe(seconds)
