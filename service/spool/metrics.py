"""The spool's Prometheus metrics, read from the spool and the forwarder at scrape time.

Registered whether or not a spool is configured (then every value is 0), so
dashboards and alerts find the same names on every gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.spool.forwarder import Forwarder
from service.spool.store import Spool


class SpoolCollector(Collector):
    def __init__(self, spool: Spool | None, forwarder: Forwarder | None) -> None:
        self._spool = spool
        self._forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        spool, forwarder = self._spool, self._forwarder
        yield GaugeMetricFamily(
            "gateway_spool_enabled", "1 when SPOOL_DIR is set and the spool is open.",
            value=1 if spool is not None and spool.is_open else 0)
        yield GaugeMetricFamily(
            "gateway_spool_bytes", "Bytes of the spool's segment files.",
            value=spool.bytes if spool else 0)
        yield GaugeMetricFamily(
            "gateway_spool_max_bytes", "SPOOL_MAX_BYTES: past it, callbacks get 503.",
            value=spool.max_bytes if spool else 0)
        yield GaugeMetricFamily(
            "gateway_spool_records", "Records in the spool not yet acknowledged by Kafka.",
            value=spool.records if spool else 0)
        yield GaugeMetricFamily(
            "gateway_spool_oldest_record_age_seconds",
            "Age of the oldest record still in the spool (0 when empty).",
            value=spool.oldest_age_seconds() if spool else 0.0)
        yield CounterMetricFamily(
            "gateway_spool_appended", "Records written to the spool (and fsynced, or refused).",
            value=spool.appended if spool else 0)
        yield CounterMetricFamily(
            "gateway_spool_fsyncs", "Group commits: one fsync covers every append waiting.",
            value=spool.fsyncs if spool else 0)
        yield CounterMetricFamily(
            "gateway_spool_fsync_seconds", "Time spent in the spool's fsyncs.",
            value=spool.fsync_seconds if spool else 0.0)
        refused = CounterMetricFamily(
            "gateway_spool_refused", "Appends the spool could not keep, by reason.",
            labels=["reason"])
        for reason, count in sorted((spool.refused if spool else {}).items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            "gateway_spool_forwarded", "Spooled records acknowledged by Kafka (rate: forwarding "
            "rate).", value=forwarder.forwarded if forwarder else 0)
        failures = CounterMetricFamily(
            "gateway_spool_forward_failures", "Forwarding attempts that failed, by reason.",
            labels=["reason"])
        for reason, count in sorted((forwarder.failures if forwarder else {}).items()):
            failures.add_metric([reason], count)
        yield failures
