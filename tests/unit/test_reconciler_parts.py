"""The reconciler's pure parts: the task table, the budget and back-off, reading the two
topics, classifying the provider's answers, and its configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from service.config.env import ConfigError, Env
from service.config.reconciler import ReconcilerConfig
from service.consumers.reconciler.budget import PollBudget
from service.consumers.reconciler.provider import Fetched, classify, retry_after_seconds
from service.consumers.reconciler.records import (
    UnreadableRecordError,
    read_progress,
    read_submission,
)
from service.consumers.reconciler.state import TaskTable
from service.core.model import Stage

# ---- the task table ---------------------------------------------------------------------


def test_a_submitted_task_is_open_and_due_at_its_first_poll() -> None:
    table = TaskTable(max_open=10)
    task = table.submitted("a", "wav", 100.0, "ref", first_poll_at=700.0)
    assert task is not None
    assert (len(table), table.next_due(699.0), table.next_due_at()) == (1, None, 700.0)
    assert table.next_due(700.0) is task
    assert table.next_due(10_000.0) is None  # taken off the schedule until rescheduled
    table.schedule(task, 730.0)
    assert table.next_due(730.0) is task


def test_a_terminal_event_closes_the_task_and_leaves_no_due_poll() -> None:
    table = TaskTable(max_open=10)
    task = table.submitted("a", "wav", 0.0, None, first_poll_at=5.0)
    assert task is not None
    assert (table.silent(9.0, 10.0), table.silent(10.0, 10.0)) == (0, 1)
    assert table.observed("a", "complete") is task
    assert (len(table), table.silent(10.0, 10.0), table.next_due(100.0)) == (0, 0, None)
    # a submission read after its terminal event does not reopen it
    assert table.submitted("a", "wav", 0.0, None, first_poll_at=5.0) is None


def test_events_before_the_submission_are_remembered() -> None:
    """The two topics are read side by side: an event may come before its submission."""
    table = TaskTable(max_open=10)
    assert table.observed("early", "first") is None
    task = table.submitted("early", "sounds", 0.0, None, first_poll_at=0.0)
    assert task is not None
    assert not task.adds("first")
    assert not task.adds("text")  # behind the stage reached
    assert task.adds("complete")
    assert table.observed("done", "error") is None
    assert table.submitted("done", "sounds", 0.0, None, first_poll_at=0.0) is None


@pytest.mark.parametrize(("seen", "stage", "adds"), [
    ((), "text", True), ((), "complete", True), (("text",), "first", True),
    (("text",), "text", False), (("first",), "text", False), (("first",), "error", True),
    (("complete",), "error", False), (("error",), "complete", False),
])
def test_a_stage_is_news_only_when_ahead_of_what_the_task_reached(
    seen: tuple[Stage, ...], stage: Stage, adds: bool,
) -> None:
    table = TaskTable(max_open=10)
    for earlier in seen:
        table.observed("t", earlier)
    task = table.submitted("t", "mashup", 0.0, None, first_poll_at=0.0)
    if task is None:
        assert not adds  # a terminal stage: the task is not even open
        return
    assert task.adds(stage) is adds


def test_past_the_bound_the_oldest_open_task_is_evicted() -> None:
    table = TaskTable(max_open=2)
    for name in ("a", "b", "c"):
        table.submitted(name, "wav", 0.0, None, first_poll_at=float(ord(name)))
    assert list(table.open) == ["b", "c"]
    assert table.evictions == 1
    assert table.next_due(1000.0) is table.open["b"]  # a's schedule entry is stale


def test_the_memory_of_finished_tasks_is_bounded() -> None:
    table = TaskTable(max_open=3)
    for n in range(10):
        table.observed(f"done-{n}", "complete")
    assert table.submitted("done-0", "wav", 0.0, None, first_poll_at=0.0) is not None
    assert table.submitted("done-9", "wav", 0.0, None, first_poll_at=0.0) is None


def test_rescheduling_makes_the_old_entry_stale() -> None:
    table = TaskTable(max_open=3)
    task = table.submitted("a", "wav", 0.0, None, first_poll_at=1.0)
    assert task is not None
    table.schedule(task, 50.0)
    assert table.next_due(10.0) is None
    assert table.next_due_at() == 50.0


# ---- the budget --------------------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def budget(rate: float, fake: FakeTime, backoff_max: float = 60.0) -> PollBudget:
    return PollBudget(rate, backoff_max=backoff_max, clock=fake.clock, sleep=fake.sleep,
                      jitter=lambda _low, high: high)


async def test_the_budget_lets_through_its_rate_after_one_seconds_burst() -> None:
    fake = FakeTime()
    limit = budget(10, fake)
    for _ in range(10 + 50):
        await limit.acquire()
    assert fake.now == pytest.approx(5.0, abs=0.05)  # 10 at once, then 50 at 10 per second


async def test_refusals_pause_every_request_doubling_and_resume_at_the_rate() -> None:
    fake = FakeTime()
    limit = budget(10, fake)
    assert limit.slow_down() == 1.0
    assert limit.paused
    assert limit.slow_down() == 1.0  # a refusal of a request in flight does not escalate
    await limit.acquire()
    # the pause, then no burst: the time of one token
    assert fake.now == pytest.approx(1.0 + 0.1, abs=0.01)
    assert limit.slow_down() == 2.0
    await limit.acquire()
    assert limit.slow_down() == 4.0
    limit.answered()
    fake.now += 10
    assert limit.slow_down() == 1.0


async def test_back_off_is_capped_and_retry_after_is_honoured() -> None:
    fake = FakeTime()
    limit = budget(5, fake, backoff_max=3.0)
    for _ in range(5):
        limit.slow_down()
        await limit.acquire()
    assert limit.slow_down() == 3.0
    fake.now += 3.0
    assert limit.slow_down(retry_after=2.5) == 3.0  # the larger of the two
    fake.now += 3.0
    limit.answered()
    assert limit.slow_down(retry_after=600) == 3.0  # never beyond the ceiling


def test_the_budget_sleeps_for_real_by_default() -> None:
    limit = PollBudget(1000, backoff_max=1.0)
    asyncio.run(limit.acquire())
    assert limit.burst == 1000


# ---- the provider's answers ------------------------------------------------------------

@pytest.mark.parametrize(("code", "outcome"), [
    (200, "answer"), (429, "throttled"), (430, "throttled"), (455, "throttled"),
    (500, "provider_error"), (503, "provider_error"), (401, "rejected"), (404, "rejected"),
    (302, "rejected")])
def test_codes_are_classified(code: int, outcome: str) -> None:
    assert classify(code) == outcome


def test_error_labels_are_a_closed_set() -> None:
    assert Fetched("throttled", 430).error_label == "430"
    assert Fetched("rejected", 418).error_label == "other"
    assert Fetched("network", detail="TimeoutError").error_label == "timeout"
    assert Fetched("network", detail="ClientConnectorError").error_label == "network"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT",
                               now=1792567670.0) == pytest.approx(10.0)
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


# ---- the topics ------------------------------------------------------------------------

def test_a_submission_is_read_with_its_time_and_reference() -> None:
    value = orjson.dumps({"task_id": " t1 ", "kind": "wav", "task_ref": "r",
                          "submitted_at": "2026-11-25T10:00:00Z", "future": 1})
    submission = read_submission(b"t1", value, 0)
    assert (submission.task_id, submission.kind, submission.task_ref) == ("t1", "wav", "r")
    assert submission.submitted_at == 1795600800.0


def test_a_submission_without_a_time_is_dated_by_its_record() -> None:
    submission = read_submission(b"key-id", orjson.dumps({"kind": "midi"}), 1_700_000_000_000)
    assert (submission.task_id, submission.submitted_at) == ("key-id", 1_700_000_000.0)
    epoch_ms = orjson.dumps({"task_id": "t", "kind": "midi", "submitted_at": 1_700_000_000_500})
    assert read_submission(None, epoch_ms, 0).submitted_at == 1_700_000_000.5


@pytest.mark.parametrize(("value", "reason"), [
    (b"not json", "invalid_json"), (b"[]", "not_an_object"),
    (b'{"kind": "wav"}', "missing_task_id"), (b'{"task_id": "t", "kind": "opera"}',
                                              "unknown_kind"),
    (b'{"task_id": "t"}', "unknown_kind")])
def test_unreadable_submissions_say_why(value: bytes, reason: str) -> None:
    with pytest.raises(UnreadableRecordError, match=reason):
        read_submission(None, value, 0)


def test_progress_is_read_from_the_headers_of_a_callback_event() -> None:
    headers = [("ce_subject", b"t1"), ("ce_type", b"music.callback.wav.complete"),
               ("ce_source", b"/callbacks/wav")]
    progress = read_progress(b"t1", b"not even json", headers)  # the value is not needed
    assert (progress.task_id, progress.stage, progress.recovered_by) == ("t1", "complete", None)


def test_progress_of_a_recovered_event_says_how_it_came() -> None:
    headers = [("ce_subject", b"t1"), ("ce_type", b"music.callback.wav.error"),
               ("ce_source", b"/reconciler/wav")]
    value = orjson.dumps({"task_id": "t1", "stage": "error", "recovered_by": "horizon"})
    assert read_progress(b"t1", value, headers).recovered_by == "horizon"


def test_progress_without_headers_is_read_from_the_value() -> None:
    value = orjson.dumps({"task_id": "t2", "stage": "first"})
    progress = read_progress(None, value, None)
    assert (progress.task_id, progress.stage) == ("t2", "first")
    with pytest.raises(UnreadableRecordError, match="unknown_stage"):
        read_progress(b"t", orjson.dumps({"task_id": "t", "stage": "done"}), None)
    with pytest.raises(UnreadableRecordError, match="missing_task_id"):
        read_progress(None, orjson.dumps({"stage": "first"}), None)


# ---- configuration -----------------------------------------------------------------------

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "PROVIDER_API_BASE_URL": "http://127.0.0.1:9", "PROVIDER_API_KEY": "k" * 24}


def test_defaults_are_the_documented_ones() -> None:
    config = ReconcilerConfig.from_env(Env(BASE))
    assert (config.after_seconds, config.poll_interval_seconds, config.horizon_seconds,
            config.max_requests_per_second, config.max_open_tasks, config.process.admin_port) == (
        600.0, 30.0, 86400.0, 5.0, 100_000, 8084)
    assert config.topics.tasks == "music.tasks.submitted.v1"
    assert "k" * 24 not in repr(config)


def test_the_key_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    env = {**BASE, "PROVIDER_API_KEY_FILE": str(secret)}
    del env["PROVIDER_API_KEY"]
    assert ReconcilerConfig.from_env(Env(env)).provider_api_key == "from-a-file"


@pytest.mark.parametrize(("changes", "variable"), [
    ({"PROVIDER_API_BASE_URL": ""}, "PROVIDER_API_BASE_URL"),
    ({"PROVIDER_API_BASE_URL": "ftp://provider"}, "PROVIDER_API_BASE_URL"),
    ({"PROVIDER_API_BASE_URL": "https://user:pw@provider"}, "PROVIDER_API_BASE_URL"),
    ({"PROVIDER_API_BASE_URL": "https://provider?key=1"}, "PROVIDER_API_BASE_URL"),
    ({"PROVIDER_API_KEY": ""}, "PROVIDER_API_KEY"),
    ({"RECONCILE_AFTER_SECONDS": "90000"}, "RECONCILE_AFTER_SECONDS"),
    ({"RECONCILE_MAX_REQUESTS_PER_SECOND": "0"}, "RECONCILE_MAX_REQUESTS_PER_SECOND"),
    ({"RECONCILE_POLL_INTERVAL_SECONDS": "soon"}, "RECONCILE_POLL_INTERVAL_SECONDS"),
    ({"RECONCILE_MAX_OPEN_TASKS": "0"}, "RECONCILE_MAX_OPEN_TASKS"),
])
def test_bad_settings_name_their_variable(changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReconcilerConfig.from_env(Env({**BASE, **changes}))
    assert caught.value.name == variable
