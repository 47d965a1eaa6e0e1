"""The metrics consumer's per-task state: bounded by count and age, dropped per partition."""

from __future__ import annotations

from collections import OrderedDict

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from service.config.shared import TopicNames
from service.consumers.metrics.exporter import MusicMetrics
from service.consumers.metrics.processor import MetricsProcessor, StateTables
from service.consumers.metrics.state import Partition, TaskStates
from tests.harness.fakes import FakeClock

P0: Partition = ("events", 0)
P1: Partition = ("events", 1)


def make(clock: FakeClock | None = None, *, ttl: float = 60.0, max_entries: int = 3,
         max_ids: int = 4) -> TaskStates[str]:
    return TaskStates(ttl_seconds=ttl, max_entries=max_entries, clock=clock or FakeClock(),
                      max_ids_per_task=max_ids)


def test_never_holds_more_than_max_entries_however_many_tasks_stream_through() -> None:
    states = make(max_entries=100)
    peak = 0
    for number in range(20_000):
        states.touch(f"task-{number}", (f"events-{number % 7}", number % 3))
        peak = max(peak, len(states))
    assert peak == 100
    assert len(states) == 100
    assert states.evictions.capacity == 19_900
    assert sum(states.partitions().values()) == 100  # membership follows evictions


def test_capacity_evicts_the_least_recently_touched_task() -> None:
    states = make(max_entries=3)
    for key in ("a", "b", "c"):
        states.touch(key, P0)
    states.touch("a", P0)  # a is now the most recent
    states.touch("d", P0)
    assert "b" not in states
    assert all(key in states for key in ("a", "c", "d"))


def test_entries_expire_ttl_after_their_last_touch() -> None:
    clock = FakeClock()
    states = make(clock, ttl=60.0, max_entries=10)
    states.touch("old", P0)
    clock.now += 30
    states.touch("young", P0)
    clock.now += 29.9
    states.touch("old", P0)  # refreshed just before it would expire
    clock.now += 30.1
    assert states.expire() == 1  # young: 60 s since its last touch
    assert "young" not in states
    assert "old" in states
    clock.now += 60
    assert states.get("old") is None
    assert len(states) == 0
    assert states.evictions.ttl == 2
    assert states.partitions() == {}


def test_an_expired_task_comes_back_as_new_state() -> None:
    clock = FakeClock()
    states = make(clock, ttl=10.0)
    entry = states.touch("t", P0)
    assert not states.seen(entry, "e1")
    entry.stages = 4
    clock.now += 10
    fresh = states.touch("t", P0)
    assert fresh is not entry
    assert fresh.stages == 0
    assert not states.seen(fresh, "e1")  # the documented window: an old duplicate counts again


def test_drop_partitions_forgets_exactly_the_tasks_of_those_partitions() -> None:
    states = make(max_entries=10)
    for key in ("a", "b"):
        states.touch(key, P0)
    for key in ("c", "d", "e"):
        states.touch(key, P1)
    states.touch("x", ("archived", 0))
    assert states.drop_partitions({TopicPartition("events", 1)}) == 3  # aiokafka's type works
    assert sorted(key for key in ("a", "b", "c", "d", "e", "x") if key in states) == [
        "a", "b", "x"]
    assert states.partitions() == {P0: 2, ("archived", 0): 1}
    assert states.drop_partitions([P1, ("nope", 9)]) == 0
    assert states.evictions.revoked == 3


def test_a_task_follows_its_partition_when_the_topic_is_repartitioned() -> None:
    states = make(max_entries=10)
    states.touch("t", P0)
    states.touch("t", P1)
    assert states.partitions() == {P1: 1}
    states.drop_partitions([P0])
    assert "t" in states


def test_duplicates_are_detected_per_task_within_a_bounded_id_window() -> None:
    states = make(max_entries=10, max_ids=3)
    a, b = states.touch("a", P0), states.touch("b", P0)
    assert not states.seen(a, "e1")
    assert states.seen(a, "e1")
    assert not states.seen(b, "e1")  # ids are per task
    for event_id in ("e2", "e3", "e4"):
        assert not states.seen(a, event_id)
    assert a.ids == ["e2", "e3", "e4"]  # never more than max_ids_per_task ids per task
    assert not states.seen(a, "e1")  # forgotten: the oldest id left the window


@pytest.mark.parametrize(("ttl", "max_entries", "max_ids"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bounds_must_be_positive(ttl: float, max_entries: int, max_ids: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        TaskStates(ttl_seconds=ttl, max_entries=max_entries, clock=FakeClock(),
                   max_ids_per_task=max_ids)


# An operation: touch a task on a partition, let time pass, or revoke a partition.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("touch"), st.integers(0, 30), st.integers(0, 3)),
        st.tuples(st.just("tick"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 3), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 12))
def test_behaves_like_a_simple_model_and_stays_within_bounds(
    ops: list[tuple[str, int, int]], max_entries: int,
) -> None:
    clock = FakeClock()
    ttl = 50.0
    states = make(clock, ttl=ttl, max_entries=max_entries)
    model: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key → (touched, partition)
    for op, a, b in ops:
        if op == "tick":
            clock.now += a
        elif op == "drop":
            states.drop_partitions([("events", a)])
            for key in [k for k, (_, p) in model.items() if p == a]:
                del model[key]
        else:
            key = f"t{a}"
            states.touch(key, ("events", b))
            for stale in [k for k, (t, _) in model.items() if t <= clock.now - ttl]:
                del model[stale]
            model.pop(key, None)
            model[key] = (clock.now, b)
            while len(model) > max_entries:
                model.popitem(last=False)
        assert len(states) <= max_entries
    states.expire()
    for stale in [k for k, (t, _) in model.items() if t <= clock.now - ttl]:
        del model[stale]
    assert [k for k in model if k in states] == list(model)
    assert len(states) == len(model)
    expected: dict[Partition, int] = {}
    for _, partition in model.values():
        expected[("events", partition)] = expected.get(("events", partition), 0) + 1
    assert states.partitions() == expected


# ---- the processor around the state: bad data never raises and never enters the state -------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=5),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={"event_id": json_values | st.just("e" * 32), "task_id": json_values | st.just("t"),
              "stage": json_values | st.sampled_from(["text", "first", "complete", "error"]),
              "code": json_values, "received_at": json_values | st.just("2026-01-01T00:00:00Z"),
              "tracks": json_values | st.lists(st.dictionaries(
                  st.sampled_from(["duration_seconds", "created_at"]), json_values))},
)
values = st.one_of(st.none(), st.binary(max_size=64),
                   st.builds(orjson.dumps, json_values), st.builds(orjson.dumps, event_like))
header_lists = st.lists(st.tuples(
    st.sampled_from(["ce_id", "ce_subject", "ce_type", "ce_time", "traceparent", "x"]),
    st.one_of(st.none(), st.binary(max_size=40))), max_size=6)


SHARED_METRICS = MusicMetrics(CollectorRegistry())


def sample(metric: Collector, name: str, labels: dict[str, str]) -> float:
    """One sample of one metric (the registry-wide lookup collects ~1000 series)."""
    return next((found.value for family in metric.collect() for found in family.samples
                 if found.name == name and found.labels == labels), 0.0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["events", "archived", "failed"]),
       st.one_of(st.none(), st.binary(max_size=20)), values, header_lists)
async def test_the_processor_never_raises_on_arbitrary_records(
    topic: str, key: bytes | None, value: bytes | None,
    headers: list[tuple[str, bytes | None]],
) -> None:
    # One registry for every example; the state is fresh per example, and the invalid
    # count is read as a difference.
    metrics = SHARED_METRICS
    processor = MetricsProcessor(
        topics=TopicNames(events="events", archived="archived", archive_failed="failed"),
        metrics=metrics,
        state=StateTables(ttl_seconds=60, max_entries=10, clock=FakeClock()),
    )
    record = ConsumerRecord(topic, 0, 0, 0, 0, key, value, None, 0, 0, headers)
    labels = {"topic": "archive_failed" if topic == "failed" else topic}
    before = sample(metrics.invalid, "music_invalid_records_total", labels)
    await processor.process(record)
    invalid = sample(metrics.invalid, "music_invalid_records_total", labels) - before
    entries = sum(sample(metrics.state_entries, "music_task_state_entries", {"table": table})
                  for table in ("events", "archive"))
    assert invalid in (0.0, 1.0)
    assert entries <= 1
    if invalid:
        assert entries == 0  # a record that cannot be read leaves no state behind
