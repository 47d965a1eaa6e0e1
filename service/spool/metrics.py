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
        gauges = [
            ("gateway_spool_enabled", "1 when SPOOL_DIR is set and the spool is open.",
             1 if spool is not None and spool.is_open else 0),
            ("gateway_spool_bytes", "Bytes of the spool's segment files.",
             spool.bytes if spool else 0),
            ("gateway_spool_max_bytes", "SPOOL_MAX_BYTES: past it, callbacks get 503.",
             spool.max_bytes if spool else 0),
            ("gateway_spool_records", "Records in the spool not yet acknowledged by Kafka.",
             spool.records if spool else 0),
            ("gateway_spool_oldest_record_age_seconds",
             "Age of the oldest record still in the spool (0 when empty).",
             spool.oldest_age_seconds() if spool else 0.0),
        ]
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        counters = [
            ("gateway_spool_appended", "Records written to the spool (fsynced or refused).",
             spool.appended if spool else 0),
            ("gateway_spool_fsyncs", "Group commits: one fsync covers every append waiting.",
             spool.fsyncs if spool else 0),
            ("gateway_spool_fsync_seconds", "Time spent in the spool's fsyncs.",
             spool.fsync_seconds if spool else 0.0),
            ("gateway_spool_forwarded",
             "Spooled records acknowledged by Kafka (its rate is the forwarding rate).",
             forwarder.forwarded if forwarder else 0),
        ]
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        by_reason = [
            ("gateway_spool_refused", "Appends the spool could not keep, by reason.",
             spool.refused if spool else {}),
            ("gateway_spool_forward_failures", "Forwarding attempts that failed, by reason.",
             forwarder.failures if forwarder else {}),
        ]
        for name, documentation, counts in by_reason:
            family = CounterMetricFamily(name, documentation, labels=["reason"])
            for reason, count in sorted(counts.items()):
                family.add_metric([reason], count)
            yield family
