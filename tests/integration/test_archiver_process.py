"""``python -m service archiver`` as a real process: configuration errors, kill -9 in the
middle of a download and restart, SIGTERM with a download in flight, admin port, logs.

The media server runs in the test process on 127.0.0.1; the archiver downloads from it with
the test-only ``ARCHIVE_ALLOW_LOOPBACK``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.harness.environments import archiver_env, archiver_topics
from tests.harness.factories import event_value, object_id, track_value
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_fixtures import KafkaTopicFactory
from tests.harness.kafka_records import headers_of, produce_events, read_records, values_of
from tests.harness.loopback import free_port
from tests.harness.media_server import PNG, WAV, Handler, Media, Servers, png_handler, wav_handler
from tests.harness.processes import ServiceProcess, assert_configuration_error

# Nothing in this process leaves loopback (the jail of tests/integration/conftest.py).
pytestmark = pytest.mark.usefixtures("jail")

Records = list[ConsumerRecord[bytes, bytes]]


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"ARCHIVE_CONCURRENCY": "0"}, "ARCHIVE_CONCURRENCY"),
    ({"ARCHIVE_MAX_BYTES": "fifty"}, "ARCHIVE_MAX_BYTES"),
    ({"ARCHIVE_MAX_BYTES_VIDEO": "0"}, "ARCHIVE_MAX_BYTES_VIDEO"),
    ({"ARCHIVE_STORAGE_URL": "ftp://archive.example/x"}, "ARCHIVE_STORAGE_URL"),
    ({"ARCHIVE_STORAGE_URL": "s3://music-archive", "AWS_ENDPOINT_URL": "127.0.0.1:9000"},
     "AWS_ENDPOINT_URL"),
    ({"ARCHIVE_ALLOWED_HOSTS": "https://cdn.example/"}, "ARCHIVE_ALLOWED_HOSTS"),
    ({"ARCHIVE_ALLOW_LOOPBACK": "sometimes"}, "ARCHIVE_ALLOW_LOOPBACK"),
    ({"ARCHIVE_RETRY_ATTEMPTS": "0"}, "ARCHIVE_RETRY_ATTEMPTS"),
])
def test_bad_configuration_fails_fast_naming_the_variable(
    overrides: dict[str, str], variable: str, tmp_path: Path,
) -> None:
    env = archiver_env("127.0.0.1:9", ("e", "a", "d"), (tmp_path / "a").as_uri(), **overrides)
    assert_configuration_error(["archiver"], env, variable, timeout=20)


class Stall:
    """Serves ``body``; the first request gets half of it, then nothing until released."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.stalled = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.stalled:
            return web.Response(body=self.body, content_type=self.content_type)
        self.stalled += 1
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        response.content_length = len(self.body)
        await response.prepare(request)
        await response.write(self.body[: len(self.body) // 2])
        self.reached.set()
        await self.release.wait()
        return response  # the client is gone by now; aiohttp drops the connection


async def read_until(bootstrap: str, topic: str, done: Callable[[Records], bool],
                     timeout: float = 30.0) -> Records:
    """Every record of ``topic`` from the beginning, once ``done(records)`` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: Records = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records):
            assert time.monotonic() < deadline, f"only {len(records)} records on {topic}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def committed_offsets(bootstrap: str, group: str, topic: str,
                            partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


def covers(expected: set[tuple[str, str, str]]) -> Callable[[Records], bool]:
    return lambda records: {object_id(v) for v in values_of(records)} >= expected


def info_lines_without_urls(lines: list[dict[str, Any]]) -> bool:
    return not any("http://" in orjson.dumps(line).decode() for line in lines
                   if line.get("level") in ("info", "warning", "error"))


@pytest.mark.kafka
async def test_kill_9_mid_download_then_restart_stores_everything_exactly_once(
    *, kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    tmp_path: Path,
) -> None:
    stall = Stall(WAV, "audio/wav")
    routes: dict[str, Handler] = {"/a1.wav": wav_handler(), "/c1.png": png_handler(),
                                  "/a2.wav": stall, "/c2.png": png_handler()}
    media = await Media(servers).start(routes)
    topics = archiver_topics(kafka_topic_factory)
    root = tmp_path / "archive"
    admin_port = free_port()
    env = archiver_env(kafka_broker.bootstrap_servers, topics, root.as_uri(),
                       ADMIN_PORT=str(admin_port), ARCHIVE_TOTAL_TIMEOUT_SECONDS="60",
                       ARCHIVE_READ_TIMEOUT_SECONDS="60")
    bootstrap = kafka_broker.bootstrap_servers
    first = event_value("task-a", track_value("a1", audio=media.url("/a1.wav"),
                                              image=media.url("/c1.png")))
    second = event_value("task-b", track_value("b1", audio=media.url("/a2.wav"),
                                               image=media.url("/c2.png")))
    await produce_events(bootstrap, topics[0], first, second)
    everything = {("task-a", "a1", "audio"), ("task-a", "a1", "cover"),
                  ("task-b", "b1", "audio"), ("task-b", "b1", "cover")}
    before_kill = everything - {("task-b", "b1", "audio")}

    victim = ServiceProcess(["archiver"], env, tmp_path).start()
    try:
        await asyncio.to_thread(victim.wait_ready, admin_port)
        await asyncio.wait_for(stall.reached.wait(), 30)
        await read_until(bootstrap, topics[1], covers(before_kill))
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{admin_port}/metrics")
        assert "archiver_in_flight_downloads 1.0" in metrics  # the stalled one
        assert 'archiver_objects_stored_total{object="cover",result="stored"} 2.0' in metrics
        assert victim.process is not None
        victim.process.kill()  # SIGKILL: no drain, no commit, no clean-up
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        victim.stop()
        stall.release.set()
    # No partial object under the final key.
    assert not (root / "task-b" / "b1" / "audio").exists()

    admin_port = free_port()
    survivor = ServiceProcess(["archiver"], {**env, "ADMIN_PORT": str(admin_port)},
                              tmp_path).start()
    try:
        await asyncio.to_thread(survivor.wait_ready, admin_port)
        records = await read_until(bootstrap, topics[1], covers(everything), timeout=45)
        survivor.signal(signal.SIGTERM)
        assert await asyncio.to_thread(survivor.wait, 20) == 0
    finally:
        survivor.stop()
    records = await read_records(bootstrap, topics[1], expect=len(records))

    # Every object stored once, with the served bytes, and nothing else on disk.
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert stored == ["task-a/a1/audio", "task-a/a1/audio.json", "task-a/a1/cover",
                      "task-a/a1/cover.json", "task-b/b1/audio", "task-b/b1/audio.json",
                      "task-b/b1/cover", "task-b/b1/cover.json"]
    for name, body in (("task-a/a1/audio", WAV), ("task-a/a1/cover", PNG),
                       ("task-b/b1/audio", WAV), ("task-b/b1/cover", PNG)):
        assert (root / name).read_bytes() == body
    # Reports: each object stored (already_stored false) at most once, re-reports share ids.
    by_object: dict[tuple[str, str, str], list[tuple[str, bool]]] = {}
    for record, value in zip(records, values_of(records), strict=True):
        by_object.setdefault(object_id(value), []).append(
            (headers_of(record)["ce_id"], value["already_stored"]))
    assert set(by_object) == everything
    for reports in by_object.values():
        assert len({ce_id for ce_id, _ in reports}) == 1
        assert sum(not already for _, already in reports) <= 1
    assert [already for _, already in by_object[("task-b", "b1", "audio")]] == [False]
    # What was stored before the kill is never downloaded again.
    assert media.hits == {"/a1.wav": 1, "/c1.png": 1, "/a2.wav": 2, "/c2.png": 1}
    assert await read_records(bootstrap, topics[2], expect=0, timeout=0.5) == []
    committed = await committed_offsets(bootstrap, env["ARCHIVER_GROUP_ID"], topics[0], 2)
    assert sum(offset or 0 for offset in committed.values()) == 2  # both events committed

    lines = survivor.log_lines()
    archived = [line for line in lines if line["event"] == "object_archived"]
    assert {(line["task_id"], line["track_id"], line["object"]) for line in archived} >= {
        ("task-b", "b1", "audio")}
    for line in archived:
        assert {"event_id", "size", "duration_ms", "process"} <= set(line)
        assert line["process"] == "archiver"
    assert info_lines_without_urls(victim.log_lines() + lines)


@pytest.mark.kafka
async def test_sigterm_abandons_the_stalled_download_and_commits_what_is_done(
    *, kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    tmp_path: Path,
) -> None:
    stall = Stall(WAV, "audio/wav")
    media = await Media(servers).start({"/ok.wav": wav_handler(), "/stall.wav": stall})
    topics = archiver_topics(kafka_topic_factory)
    root = tmp_path / "archive"
    admin_port = free_port()
    env = archiver_env(kafka_broker.bootstrap_servers, topics, root.as_uri(),
                       ADMIN_PORT=str(admin_port), ARCHIVE_TOTAL_TIMEOUT_SECONDS="60",
                       ARCHIVE_READ_TIMEOUT_SECONDS="60", SHUTDOWN_TIMEOUT_SECONDS="1")
    bootstrap = kafka_broker.bootstrap_servers
    # Same task id, so the same partition: the done event precedes the stalled one.
    done = event_value("task-t", track_value("ok", audio=media.url("/ok.wav")))
    stuck = event_value("task-t", track_value("stuck", audio=media.url("/stall.wav")))
    placed = await produce_events(bootstrap, topics[0], done, stuck)

    process = ServiceProcess(["archiver"], env, tmp_path).start()
    try:
        await asyncio.to_thread(process.wait_ready, admin_port)
        health = await asyncio.to_thread(_get, f"http://127.0.0.1:{admin_port}/healthz")
        assert orjson.loads(health) == {"status": "ok"}
        await asyncio.wait_for(stall.reached.wait(), 30)
        await read_until(bootstrap, topics[1], lambda records: len(records) >= 1)
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
        assert time.monotonic() - started < 10  # the 1 s grace, then abandoned
    finally:
        process.stop()
        stall.release.set()
    events = [line["event"] for line in process.log_lines()]
    assert "abandoned_in_flight" in events
    assert "consumer_stopped" in events
    assert events[-1] == "archiver_stopped"
    committed = await committed_offsets(bootstrap, env["ARCHIVER_GROUP_ID"], topics[0], 2)
    # Committed up to the stalled event, not past it: it is redone after a restart.
    assert committed[placed[1].partition] == placed[1].offset
    assert not (root / "task-t" / "stuck").exists()
    assert (root / "task-t" / "ok" / "audio").read_bytes() == WAV
    assert media.hits["/stall.wav"] == 1
    assert await read_records(bootstrap, topics[2], expect=0, timeout=0.5) == []


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URL
        body: bytes = response.read()
        return body.decode()
