"""Prometheus helpers shared by every process."""

from __future__ import annotations

from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

Metric = TypeVar("Metric", bound=MetricWrapperBase)


class LabelledChildren:
    """Labelled children looked up once: ``labels()`` validates its values and takes a lock
    on every call, several times per request or record. Only for label values from closed
    sets (routes, status codes, kinds, stages, reasons), so it stays small."""

    def __init__(self) -> None:
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def __call__(self, metric: Metric, *values: str) -> Metric:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]  # labels() returns the metric's own type
