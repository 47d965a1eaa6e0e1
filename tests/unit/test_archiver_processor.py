"""The archiver's processor, one step at a time.

A real :class:`FilesystemStore` in ``tmp_path``; the publisher and the download function
are fakes (the real downloads, Kafka and S3 are exercised in tests/integration)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry

from service.consumers.archiver.circuit import DownloadCircuit
from service.consumers.archiver.download import DownloadResult
from service.consumers.archiver.keys import archive_event_id, dead_letter_event_id
from service.consumers.archiver.metrics import ArchiverMetrics
from service.consumers.archiver.netguard import DownloadRefused
from service.consumers.archiver.plan import files_from_tracks, plan_event
from service.consumers.archiver.processor import ArchiveProcessor, ProcessorSettings
from service.consumers.archiver.storage import StorageUnavailableError
from service.contracts.registry import ARCHIVE_FAILED_V1, ARCHIVED_V1, EVENT_V1, SchemaRegistry
from service.contracts.vocabulary import FileRole
from service.kafka.consumer import Record
from service.kafka.producer import PublishError
from service.storage.base import ObjectMetadata, StorageError
from service.storage.filesystem import FilesystemStore
from tests.harness.factories import (
    consumer_record,
    event_record,
    event_value,
    file_value,
    track_value,
)
from tests.harness.fakes import FakeClock

SCHEMAS = SchemaRegistry.load()
AUDIO = b"RIFF....WAVEfmt " + bytes(range(256)) * 8
COVER = b"\x89PNG\r\n\x1a\n" + bytes(64)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
EVENT_ID = "0f5b3c1e9a7d4b2c8e6f1a3b5c7d9e0f"


# This file's data: task-1's event EVENT_ID, its tracks' audio and cover on two hosts (the
# fake fetch serves both URLs), built with the one factory.
track = functools.partial(track_value, audio="https://a.test/a.wav", image="https://b.test/c.png",
                          title="Iron Man", duration=12.5)
event = functools.partial(event_value, "task-1", event_id=EVENT_ID)


def record(value: dict[str, Any] | bytes, *, offset: int = 7,
           traceparent: str | None = None) -> Record:
    """An event as the gateway publishes it, on partition 2 (bytes: a record as it is)."""
    if isinstance(value, bytes):
        return consumer_record("events", value, key=b"task-1", partition=2, offset=offset)
    return event_record(value, partition=2, offset=offset, traceparent=traceparent)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: dict[str, Any]
    headers: dict[str, bytes]


@dataclass
class FakePublisher:
    sent: list[Sent] = field(default_factory=list)
    fail: bool = False

    async def publish(self, topic: str, *, key: bytes | None, value: bytes,
                      headers: list[tuple[str, bytes]], deadline: float) -> None:
        assert deadline > 0
        if self.fail:
            raise PublishError("publish_timeout", "no acknowledgement")
        self.sent.append(Sent(topic, key, orjson.loads(value), dict(headers)))

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class FakeFetch:
    """Serves ``bodies`` by URL; a URL mapped to an exception raises it (once per call)."""

    def __init__(self, bodies: dict[str, bytes | DownloadRefused | list[Any]]) -> None:
        self.bodies = bodies
        self.calls: list[str] = []
        self.roles: list[FileRole] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, dest: Path, role: FileRole) -> DownloadResult:
        self.calls.append(url)
        self.roles.append(role)
        if self.gate is not None:
            await self.gate.wait()
        body = self.bodies[url]
        if isinstance(body, list):
            body = body.pop(0) if len(body) > 1 else body[0]
        if isinstance(body, DownloadRefused):
            raise body
        await asyncio.to_thread(dest.write_bytes, body)
        kind = "audio/wav" if body.startswith(b"RIFF") else "image/png"
        return DownloadResult(dest, len(body), hashlib.sha256(body).hexdigest(), kind, url, 1)


class FlakyStore(FilesystemStore):
    def __init__(self, root: Path, *, fail: str | None = None,
                 refuse: bool = False) -> None:
        super().__init__(root)
        self.fail = fail
        self.refuse = refuse
        self.calls: list[str] = []

    async def stat(self, key: str) -> ObjectMetadata | None:
        self.calls.append("stat")
        if self.fail == "stat":
            raise StorageError("disk on fire")
        return await super().stat(key)

    async def put_file(self, key: str, path: Path, metadata: ObjectMetadata) -> None:
        self.calls.append("put")
        if self.fail == "put":
            raise StorageError("disk on fire")
        if self.refuse:
            raise ValueError("cannot represent this object")
        await super().put_file(key, path, metadata)


@dataclass
class Rig:
    processor: ArchiveProcessor
    store: FlakyStore
    publisher: FakePublisher
    fetch: FakeFetch
    metrics: ArchiverMetrics
    registry: CollectorRegistry
    tmp: Path

    def archived(self) -> list[Sent]:
        return self.publisher.to("archived")

    def dead(self) -> list[Sent]:
        return self.publisher.to("dead")

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def rig(tmp_path: Path, bodies: dict[str, Any] | None = None, *,
        circuit: DownloadCircuit | None = None, store: FlakyStore | None = None) -> Rig:
    registry = CollectorRegistry()
    metrics = ArchiverMetrics(registry)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    store = store or FlakyStore(tmp_path / "archive")
    publisher = FakePublisher()
    fetch = FakeFetch(bodies if bodies is not None else
                      {"https://a.test/a.wav": AUDIO, "https://b.test/c.png": COVER})
    processor = ArchiveProcessor(
        store=store, publisher=publisher, fetch=fetch,
        settings=ProcessorSettings("archived", "dead", SCHEMAS.schema_id(ARCHIVED_V1),
                                   SCHEMAS.schema_id(ARCHIVE_FAILED_V1), concurrency=2),
        metrics=metrics, tmp_dir=work, circuit=circuit, storage_base_delay=0.001)
    return Rig(processor, store, publisher, fetch, metrics, registry, work)


def refused(reason: Any, *, retryable: bool | None = None, status: int | None = None,
            attempts: int = 1) -> DownloadRefused:
    exc = DownloadRefused(reason, f"{reason} at https://secret.test/x?token=t",
                          retryable=retryable, status=status)
    exc.attempts = attempts
    return exc


# --------------------------------------------------------------------------- planning


def test_plan_takes_first_and_complete_tracks_with_audio() -> None:
    plan = plan_event(event(
        track("t1"),
        track("t2", audio=None, source_audio="https://a.test/s.mp3", image=None,
              source_image="https://b.test/s.png"),
        track("t3", audio=None, image="https://b.test/never.png"),  # no audio yet: skipped
        track(None),  # no id: counted
        track("t1"),  # the same track twice: once
        track("t4", image=None),
        "not a track",  # type: ignore[arg-type]
    ))
    assert plan is not None
    assert plan.tracks_without_id == 1
    summary = [(j.track_id, j.role, j.urls, j.key) for j in plan.jobs]
    assert summary == [
        ("t1", "audio", ("https://a.test/a.wav",), "task-1/t1/audio"),
        ("t1", "cover", ("https://b.test/c.png",), "task-1/t1/cover"),
        ("t2", "audio", ("https://a.test/s.mp3",), "task-1/t2/audio"),
        ("t2", "cover", ("https://b.test/s.png",), "task-1/t2/cover"),
        ("t4", "audio", ("https://a.test/a.wav",), "task-1/t4/audio"),
    ]
    assert plan.jobs[0].duration_seconds == 12.5
    assert plan.jobs[1].duration_seconds is None  # a cover has no duration


def test_plan_keeps_both_urls_in_order_without_duplicates() -> None:
    plan = plan_event(event(track(source_audio="https://a.test/src.wav",
                                  source_image="https://b.test/c.png")))
    assert plan is not None
    assert plan.jobs[0].urls == ("https://a.test/a.wav", "https://a.test/src.wav")
    assert plan.jobs[1].urls == ("https://b.test/c.png",)


@pytest.mark.parametrize("duration", [-1, float("nan"), "12", True, None])
def test_plan_drops_unusable_durations(duration: object) -> None:
    plan = plan_event(event(track(duration=duration)))
    assert plan is not None
    assert plan.jobs[0].duration_seconds is None


@pytest.mark.parametrize("stage", ["text", "error"])
def test_plan_ignores_other_stages(stage: str) -> None:
    plan = plan_event(event(track(), stage=stage))
    assert plan is not None
    assert plan.jobs == ()


@pytest.mark.parametrize("value", [None, [], {"task_id": "t"}, {"task_id": "", "stage": "first",
                                                                 "tracks": []},
                                   {"task_id": "t", "stage": "first", "tracks": {}}])
def test_plan_refuses_what_is_not_an_event(value: object) -> None:
    assert plan_event(value) is None


# --------------------------------------------------------------------------- processing


async def test_stores_both_objects_and_reports_them(tmp_path: Path) -> None:
    r = rig(tmp_path)
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as logs:
        await r.processor.process(record(event(track()), traceparent=TRACEPARENT))

    root = tmp_path / "archive"
    assert (root / "task-1/tr1/audio").read_bytes() == AUDIO
    assert (root / "task-1/tr1/cover").read_bytes() == COVER
    sidecar = orjson.loads((root / "task-1/tr1/audio.json").read_bytes())
    assert sidecar["sha256"] == hashlib.sha256(AUDIO).hexdigest()
    assert sidecar["title"] == "Iron Man"

    reports = {s.value["object"]: s for s in r.archived()}
    assert set(reports) == {"audio", "cover"}
    audio = reports["audio"]
    assert SCHEMAS.errors(ARCHIVED_V1, audio.value) == []
    assert audio.key == b"task-1"
    assert audio.value == {
        "task_id": "task-1", "track_id": "tr1", "object": "audio", "kind": "extend-music",
        "uri": (root / "task-1/tr1/audio").as_uri(), "size": len(AUDIO),
        "sha256": hashlib.sha256(AUDIO).hexdigest(), "content_type": "audio/wav",
        "source_url": "https://a.test/a.wav", "source_event_id": EVENT_ID,
        "title": "Iron Man", "duration_seconds": 12.5, "already_stored": False,
    }
    assert audio.headers["ce_id"].decode() == archive_event_id(
        "task-1", "tr1", "audio", hashlib.sha256(AUDIO).hexdigest())
    assert audio.headers["ce_type"] == b"music.archive.stored"
    assert audio.headers["ce_source"] == b"/archiver"
    assert audio.headers["ce_subject"] == b"task-1"
    assert audio.headers["ce_dataschema"].decode() == SCHEMAS.schema_id(ARCHIVED_V1)
    assert audio.headers["traceparent"] == TRACEPARENT.encode()
    assert r.dead() == []
    assert r.metric("archiver_objects_stored_total", object="audio", result="stored") == 1
    assert r.metric("archiver_downloads_total", outcome="ok") == 2
    assert r.metric("archiver_download_bytes_total", outcome="ok") == len(AUDIO) + len(COVER)
    assert r.metric("archiver_in_flight_downloads") == 0
    assert list(r.tmp.iterdir()) == []  # temporary files are gone

    lines = [line for line in logs if line["event"] == "object_archived"]
    assert len(lines) == 2
    for line in lines:
        assert line["task_id"] == "task-1"
        assert line["event_id"] == EVENT_ID
        assert line["trace_id"] == TRACEPARENT.split("-")[1]
        assert "duration_ms" in line
        assert line["size"] in (len(AUDIO), len(COVER))
        assert not any("https://" in str(v) for v in line.values())


async def test_an_object_already_stored_is_reported_without_downloading(tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.processor.process(record(event(track())))
    first = {s.value["object"]: s for s in r.archived()}
    r.publisher.sent.clear()
    r.fetch.calls.clear()
    # Re-delivery with URLs that meanwhile expired: nothing is fetched.
    await r.processor.process(record(event(track(audio="https://a.test/expired"))))
    assert r.fetch.calls == []
    again = {s.value["object"]: s for s in r.archived()}
    for kind in ("audio", "cover"):
        assert again[kind].value["already_stored"] is True
        assert again[kind].headers["ce_id"] == first[kind].headers["ce_id"]
        assert {k: v for k, v in again[kind].value.items() if k != "already_stored"} == \
            {k: v for k, v in first[kind].value.items() if k != "already_stored"}
    assert r.metric("archiver_objects_stored_total", object="audio",
                    result="already_stored") == 1


async def test_first_and_complete_in_flight_together_download_once(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.fetch.gate = asyncio.Event()
    first = asyncio.create_task(r.processor.process(record(event(track(), stage="first"))))
    complete = asyncio.create_task(r.processor.process(
        record(event(track(), stage="complete", event_id="e" * 32), offset=8)))
    await asyncio.sleep(0.05)
    r.fetch.gate.set()
    await asyncio.gather(first, complete)
    assert sorted(r.fetch.calls) == ["https://a.test/a.wav", "https://b.test/c.png"]
    results = sorted((s.value["object"], s.value["already_stored"]) for s in r.archived())
    assert results == [("audio", False), ("audio", True), ("cover", False), ("cover", True)]
    assert len(r.processor.locks) == 0


async def test_the_fallback_url_is_tried_when_the_first_fails(tmp_path: Path) -> None:
    r = rig(tmp_path, {"https://a.test/a.wav": refused("http_status", status=404),
                       "https://a.test/src.wav": AUDIO})
    await r.processor.process(record(event(track(source_audio="https://a.test/src.wav",
                                                 image=None))))
    assert r.fetch.calls == ["https://a.test/a.wav", "https://a.test/src.wav"]
    [report] = r.archived()
    assert report.value["source_url"] == "https://a.test/src.wav"
    assert r.dead() == []


async def test_a_permanent_failure_is_dead_lettered(tmp_path: Path) -> None:
    r = rig(tmp_path, {"https://a.test/a.wav": refused("http_status", status=404, attempts=1),
                       "https://a.test/src.wav": refused("too_large"),
                       "https://b.test/c.png": COVER})
    with structlog.testing.capture_logs() as logs:
        await r.processor.process(record(
            event(track(source_audio="https://a.test/src.wav")), offset=41))
    [dead] = r.dead()
    assert SCHEMAS.errors(ARCHIVE_FAILED_V1, dead.value) == []
    assert dead.key == b"task-1"
    value = dead.value
    assert (value["object"], value["url"], value["reason"]) == (
        "audio", "https://a.test/a.wav", "http_status")
    assert "fallback too_large" in value["detail"]
    assert (value["topic"], value["partition"], value["offset"]) == ("events", 2, 41)
    assert value["attempts"] == 2
    assert value["source_event_id"] == EVENT_ID
    assert dead.headers["ce_id"].decode() == dead_letter_event_id("task-1", "tr1", "audio",
                                                                  EVENT_ID)
    assert dead.headers["reason"] == b"http_status"
    assert [s.value["object"] for s in r.archived()] == ["cover"]
    assert r.metric("archiver_dead_lettered_total", reason="http_status") == 1
    assert r.metric("archiver_downloads_total", outcome="too_large") == 1
    assert not (tmp_path / "archive/task-1/tr1/audio").exists()
    [line] = [line for line in logs if line["event"] == "object_dead_lettered"]
    assert line["host"] == "a.test"
    assert "token" not in str(line)


async def test_retries_are_counted(tmp_path: Path) -> None:
    r = rig(tmp_path, {"https://a.test/a.wav": refused("timeout", attempts=4)})
    await r.processor.process(record(event(track(image=None))))
    assert r.metric("archiver_retries_total") == 3
    assert r.dead()[0].value["reason"] == "timeout"


@pytest.mark.parametrize("operation", ["stat", "put"])
async def test_storage_failures_are_never_dead_lettered(tmp_path: Path, operation: str) -> None:
    store = FlakyStore(tmp_path / "archive", fail=operation)
    r = rig(tmp_path, store=store)
    with pytest.raises(StorageUnavailableError):
        await r.processor.process(record(event(track(image=None))))
    assert r.publisher.sent == []
    assert store.calls.count(operation) == 3
    assert r.metric("archiver_storage_failures_total", operation=operation) == 3
    assert list(r.tmp.iterdir()) == []


async def test_an_object_the_store_cannot_represent_is_dead_lettered(tmp_path: Path) -> None:
    r = rig(tmp_path, store=FlakyStore(tmp_path / "archive", refuse=True))
    await r.processor.process(record(event(track(image=None))))
    [dead] = r.dead()
    assert dead.value["reason"] == "storage"
    assert SCHEMAS.errors(ARCHIVE_FAILED_V1, dead.value) == []


async def test_a_publish_failure_stops_processing(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.publisher.fail = True
    with pytest.raises(PublishError):
        await r.processor.process(record(event(track())))
    # Audio and cover run concurrently: the failed report cancels the other object, which
    # may or may not be stored in the end (a write already in its worker thread completes,
    # atomically). Either way, what is stored is never fetched again.
    urls = {"audio": "https://a.test/a.wav", "cover": "https://b.test/c.png"}
    r.publisher.fail = False
    r.fetch.calls.clear()
    await r.processor.process(record(event(track())))
    fetched = {kind for kind, url in urls.items() if url in r.fetch.calls}
    reports = {s.value["object"]: s.value["already_stored"] for s in r.archived()}
    assert set(reports) == set(urls)
    assert all(reports[kind] == (kind not in fetched) for kind in urls)
    assert fetched != set(urls)  # the object whose report failed was stored, not refetched


@pytest.mark.parametrize("value", [b"{not json", b"[]", orjson.dumps({"task_id": "x"})])
async def test_malformed_events_are_skipped(tmp_path: Path, value: bytes) -> None:
    r = rig(tmp_path)
    await r.processor.process(record(value))
    assert r.publisher.sent == []
    assert r.metric("archiver_skipped_total", reason="malformed_event") == 1


async def test_tracks_without_id_are_counted(tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.processor.process(record(event(track(None))))
    assert r.publisher.sent == []
    assert r.metric("archiver_skipped_total", reason="track_without_id") == 1


async def test_unusable_files_are_counted(tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.processor.process(record(event(kind="wav", files=[
        file_value("hologram", "https://a.test/a.wav")])))
    assert r.publisher.sent == []
    assert r.metric("archiver_skipped_total", reason="unusable_file") == 1


# --------------------------------------------------------------------------- every kind


@pytest.mark.parametrize(("kind", "role", "track_id"), [
    ("music-video", "video", None), ("wav", "wav", "tr1"), ("cover-image", "image", None),
    ("vocal-separation", "drums", None), ("generate-music", "audio", "tr1"),
])
async def test_any_role_is_fetched_with_its_role_stored_and_reported(
        tmp_path: Path, kind: str, role: FileRole, track_id: str | None) -> None:
    r = rig(tmp_path)
    document = event(kind=kind, files=[file_value(role, "https://a.test/a.wav",
                                                  track_id=track_id)])
    assert SCHEMAS.errors(EVENT_V1, document) == []
    await r.processor.process(record(document))
    assert r.fetch.roles == [role]
    [report] = r.archived()
    assert SCHEMAS.errors(ARCHIVED_V1, report.value) == []
    segment = track_id or "_"
    assert (report.value["object"], report.value["track_id"], report.value["kind"]) == (
        role, track_id, kind)
    assert report.value["uri"] == (tmp_path / f"archive/task-1/{segment}/{role}").as_uri()
    assert (tmp_path / f"archive/task-1/{segment}/{role}").read_bytes() == AUDIO
    assert report.headers["ce_id"].decode() == archive_event_id(
        "task-1", track_id, role, hashlib.sha256(AUDIO).hexdigest())
    assert r.metric("archiver_objects_stored_total", object=role, result="stored") == 1


async def test_a_file_without_a_track_is_dead_lettered_within_the_contract(
        tmp_path: Path) -> None:
    r = rig(tmp_path, {"https://a.test/v.mp4": refused("too_large")})
    await r.processor.process(record(event(kind="music-video", files=[
        file_value("video", "https://a.test/v.mp4")])))
    [dead] = r.dead()
    assert SCHEMAS.errors(ARCHIVE_FAILED_V1, dead.value) == []
    assert (dead.value["track_id"], dead.value["object"], dead.value["kind"],
            dead.value["reason"]) == (None, "video", "music-video", "too_large")
    assert dead.headers["ce_id"].decode() == dead_letter_event_id("task-1", None, "video",
                                                                  EVENT_ID)


async def test_a_kind_the_contract_does_not_know_is_left_out_of_the_report(
        tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.processor.process(record(event(kind="karaoke", files=[
        file_value("audio", "https://a.test/a.wav")])))
    [report] = r.archived()
    assert "kind" not in report.value
    assert SCHEMAS.errors(ARCHIVED_V1, report.value) == []


async def test_legacy_and_files_events_of_one_track_store_it_once(tmp_path: Path) -> None:
    """An old record (no files) and a new one for the same track share keys and ids."""
    r = rig(tmp_path)
    await r.processor.process(record(event(track())))
    files, _ = files_from_tracks([track()])
    await r.processor.process(record(event(track(), files=files, event_id="e" * 32)))
    assert sorted(r.fetch.calls) == ["https://a.test/a.wav", "https://b.test/c.png"]
    by_object: dict[str, set[bytes]] = {}
    for sent in r.archived():
        by_object.setdefault(sent.value["object"], set()).add(sent.headers["ce_id"])
    assert {role: len(ids) for role, ids in by_object.items()} == {"audio": 1, "cover": 1}


# --------------------------------------------------------------------------- circuit


def test_circuit_needs_failures_on_several_hosts() -> None:
    clock = FakeClock()
    circuit = DownloadCircuit(min_samples=4, min_hosts=2, clock=clock)
    for _ in range(10):
        circuit.record("one.test", ok=False)
    assert not circuit.is_open  # a single dead host is that host's problem
    circuit.record("two.test", ok=False)
    assert circuit.is_open


def test_circuit_needs_a_high_failure_ratio_within_the_window() -> None:
    clock = FakeClock()
    circuit = DownloadCircuit(min_samples=4, min_hosts=2, threshold=0.9,
                              window_seconds=60, clock=clock)
    for host in ("a.test", "b.test", "a.test"):
        circuit.record(host, ok=False)
    circuit.record("c.test", ok=True)
    for host in ("a.test", "b.test", "a.test", "b.test"):
        circuit.record(host, ok=False)
    assert not circuit.is_open  # 7 of 8 failed: under 90 %
    clock.now += 61  # the old samples leave the window
    for host in ("a.test", "b.test", "a.test", "b.test"):
        circuit.record(host, ok=False)
    assert circuit.is_open


def test_circuit_cools_down_probes_and_closes_on_success() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    circuit = DownloadCircuit(min_samples=2, min_hosts=2, cooldown_seconds=5,
                              max_cooldown_seconds=15, clock=clock, on_change=changes.append)
    circuit.record("a.test", ok=False)
    circuit.record("b.test", ok=False)
    assert circuit.remaining_cooldown() == 5
    circuit.record("a.test", ok=False)  # a download that started before: no change
    assert circuit.remaining_cooldown() == 5
    clock.now += 5
    assert circuit.remaining_cooldown() == 0  # probes may run
    circuit.record("a.test", ok=False)  # a probe failed: longer
    assert circuit.remaining_cooldown() == 10
    clock.now += 10
    circuit.record("a.test", ok=False)
    assert circuit.remaining_cooldown() == 15  # capped
    clock.now += 15
    circuit.record("b.test", ok=True)
    assert not circuit.is_open
    assert changes == [True, False]
    circuit.record("a.test", ok=False)
    assert not circuit.is_open  # the window starts afresh


async def test_objects_are_held_not_dead_lettered_while_the_circuit_is_open(
        tmp_path: Path) -> None:
    circuit = DownloadCircuit(min_samples=2, min_hosts=2, cooldown_seconds=0.05)
    circuit.record("x.test", ok=False)
    circuit.record("y.test", ok=False)
    assert circuit.remaining_cooldown() > 0
    network = refused("network", attempts=2)
    r = rig(tmp_path, {"https://a.test/a.wav": [network, network, AUDIO]}, circuit=circuit)
    assert r.metric("archiver_download_circuit_open") == 0  # set on changes only
    await asyncio.wait_for(r.processor.process(record(event(track(image=None)))), 10)
    assert r.fetch.calls == ["https://a.test/a.wav"] * 3
    assert r.dead() == []
    assert [s.value["object"] for s in r.archived()] == ["audio"]
    assert not circuit.is_open
    assert r.metric("archiver_download_circuit_open") == 0


async def test_permanent_failures_are_dead_lettered_even_with_the_circuit_open(
        tmp_path: Path) -> None:
    circuit = DownloadCircuit(min_samples=2, min_hosts=2, cooldown_seconds=0.01)
    circuit.record("x.test", ok=False)
    circuit.record("y.test", ok=False)
    r = rig(tmp_path, {"https://a.test/a.wav": refused("forbidden_address")}, circuit=circuit)
    await asyncio.wait_for(r.processor.process(record(event(track(image=None)))), 10)
    assert [d.value["reason"] for d in r.dead()] == ["forbidden_address"]
