"""The commit step commits only a contiguous prefix of processed offsets."""

from __future__ import annotations

from aiokafka import TopicPartition

from service.kafka.consumer import OffsetTracker

TP = TopicPartition("t", 0)


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.finished(TP, 12)
    assert tracker.take_commits() == {}
    tracker.finished(TP, 10)
    assert tracker.take_commits() == {TP: 11}
    tracker.finished(TP, 11)
    assert tracker.take_commits() == {TP: 13}
    assert tracker.in_flight() == 0


def test_revoked_partitions_are_forgotten_and_late_completions_ignored() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 1)
    tracker.forget([TP])
    tracker.finished(TP, 1)
    assert tracker.take_commits() == {}
    assert tracker.in_flight() == 0
