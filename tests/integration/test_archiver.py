"""The archiver in-process (``run_archiver``) against the real broker, real storage (a
directory, and S3Proxy) and local HTTP servers on 127.0.0.1 that serve real audio (a WAV
generated here) and images (a PNG generated here).

Network safety: the ``jail`` fixture of tests/integration/conftest.py is active for every
test here: a connect to a non-loopback address or a lookup of a real name
fails and fails the test. Names in payload URLs are answered by an injected resolver.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from prometheus_client import CollectorRegistry

from service.config.archiver import ArchiverConfig
from service.config.env import Env
from service.consumers.archiver.keys import archive_event_id
from service.consumers.archiver.main import run_archiver
from service.contracts.registry import ARCHIVE_FAILED_V1, ARCHIVED_V1, SchemaRegistry
from service.contracts.vocabulary import FILE_ROLES, STEM_ROLES, FileRole
from service.runtime import ShutdownFlag
from service.storage.base import ObjectMetadata
from service.storage.factory import open_store
from tests.harness.environments import archiver_env, archiver_topics
from tests.harness.factories import event_value, file_value, object_id, track_value
from tests.harness.fakes import FakeResolver
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_fixtures import KafkaTopicFactory
from tests.harness.kafka_records import (
    headers_of,
    produce_events,
    read_records,
    unique,
    values_of,
)
from tests.harness.loopback import Canary, Jail, free_port
from tests.harness.media_server import PNG, WAV, Handler, Media, Servers, png_handler, wav_handler
from tests.harness.s3proxy import S3ProxyServer

# Every test here runs in the network jail (tests/integration/conftest.py): no packet
# leaves loopback, no real name resolves.
pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("jail")]

SCHEMAS = SchemaRegistry.load()
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SHA_WAV = hashlib.sha256(WAV).hexdigest()
SHA_PNG = hashlib.sha256(PNG).hexdigest()


# --------------------------------------------------------------------------- media server


def status_then(statuses: list[int], handler: Handler) -> Handler:
    remaining = list(statuses)

    async def flaky(request: web.Request) -> web.StreamResponse:
        if remaining:
            return web.Response(status=remaining.pop(0))
        return await handler(request)

    return flaky


def redirect_to(location: str) -> Handler:
    async def bounce(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": location})

    return bounce


# --------------------------------------------------------------------------- running it


@dataclass
class Running:
    env: dict[str, str]
    config: ArchiverConfig
    registry: CollectorRegistry
    shutdown: ShutdownFlag
    task: asyncio.Task[int]

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.config.process.admin_port}"

    async def stop(self) -> int:
        self.shutdown.event.set()
        return await asyncio.wait_for(self.task, 30)

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.admin + path) as r:
            return r.status, await r.text()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not self.task.done(), "the archiver stopped early"
            try:
                status, _ = await self.get("/readyz")
            except aiohttp.ClientError:
                status = 0
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("archiver not ready in time")

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def archivers() -> AsyncIterator[Start]:
    started: list[Running] = []

    async def start(env: dict[str, str], *, resolver: AbstractResolver | None = None,
                    ready: bool = True) -> Running:
        config = ArchiverConfig.from_env(Env(env), file_roles=FILE_ROLES)
        registry = CollectorRegistry()
        shutdown = ShutdownFlag()
        task = asyncio.create_task(run_archiver(config, registry=registry, resolver=resolver,
                                                shutdown=shutdown))
        running = Running(env, config, registry, shutdown, task)
        started.append(running)
        if ready:
            await running.wait_ready()
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.stop()


def loopback_only(jail: Jail, *allowed_ports: int) -> list[tuple[str, int]]:
    """Connections the jail saw to anything but the given loopback ports."""
    return [(host, port) for host, port in jail.connects if port not in allowed_ports]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
async def test_happy_path_stores_audio_and_covers_and_reports_them(
    *, backend: str, kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory,
    servers: Servers, archivers: Start, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    media = await Media(servers).start({"/a.wav": wav_handler(), "/c.png": png_handler(),
                                        "/src.wav": wav_handler("audio/x-wav"),
                                        "/src.png": png_handler()})
    if backend == "s3":
        s3: S3ProxyServer = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        storage_url = f"s3://{bucket}/archive"
        extra = {"AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_ACCESS_KEY_ID": s3.access_key_id,
                 "AWS_SECRET_ACCESS_KEY": s3.secret_access_key, "AWS_REGION": s3.region}
    else:
        storage_url, extra = (tmp_path / "archive").as_uri(), {}
    topics = archiver_topics(kafka_topic_factory)
    env = archiver_env(kafka_broker.bootstrap_servers, topics, storage_url, **extra)
    title = "Ünïcødé 🎵 «Song» 100% a/b"
    document = event_value(
        "task/happy 1",  # ids are percent-encoded into the key
        track_value("t1", audio=media.url("/a.wav"), image=media.url("/c.png")),
        track_value("t2", source_audio=media.url("/src.wav"), source_image=media.url("/src.png"),
                    title=title, duration=187.25),
        track_value("t3"),  # no audio yet: nothing to do
    )
    await produce_events(kafka_broker.bootstrap_servers, topics[0], document,
                         traceparent=TRACEPARENT)
    archiver = await archivers(env)

    records = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=4)
    reports = {object_id(v): (v, headers_of(r)) for v, r in zip(values_of(records), records,
                                                                 strict=True)}
    assert len(records) == 4
    prefix = "task%2Fhappy%201"
    expected: dict[tuple[str, FileRole], tuple[str, str, int, str]] = {
        ("t1", "audio"): (media.url("/a.wav"), SHA_WAV, len(WAV), "audio/wav"),
        ("t1", "cover"): (media.url("/c.png"), SHA_PNG, len(PNG), "image/png"),
        ("t2", "audio"): (media.url("/src.wav"), SHA_WAV, len(WAV), "audio/x-wav"),
        ("t2", "cover"): (media.url("/src.png"), SHA_PNG, len(PNG), "image/png"),
    }
    store = open_store(storage_url, Env(env))
    for (track_id, kind), (url, sha, size, content_type) in expected.items():
        value, headers = reports[("task/happy 1", track_id, kind)]
        assert SCHEMAS.errors(ARCHIVED_V1, value) == []
        key = f"{prefix}/{track_id}/{kind}"
        assert value["uri"] == store.uri(key)
        assert (value["sha256"], value["size"], value["content_type"], value["source_url"]) \
            == (sha, size, content_type, url)
        assert value["source_event_id"] == document["event_id"]
        assert value["already_stored"] is False
        assert value["title"] == ("Night Drive" if track_id == "t1" else title)
        assert headers["ce_id"] == archive_event_id("task/happy 1", track_id, kind, sha)
        assert headers["ce_type"] == "music.archive.stored"
        assert headers["ce_source"] == "/archiver"
        assert headers["traceparent"] == TRACEPARENT
        assert records[0].key == b"task/happy 1"
        # The object and its metadata, read back through the store.
        assert await store.stat(key) == ObjectMetadata(
            content_type=content_type, size=size, sha256=sha, source_url=url,
            title=value["title"], duration_seconds=value["duration_seconds"])
    assert reports[("task/happy 1", "t2", "audio")][0]["duration_seconds"] == 187.25
    assert reports[("task/happy 1", "t1", "cover")][0]["duration_seconds"] is None

    if backend == "s3":
        assert sorted(s3.list_keys(bucket)) == sorted(
            f"archive/{prefix}/{t}/{k}" for t, k in expected)
        _, body = s3.request("GET", f"/{bucket}/archive/{prefix}/t1/audio")
        assert body == WAV
    else:
        root = tmp_path / "archive" / prefix
        assert (root / "t1" / "audio").read_bytes() == WAV
        assert (root / "t2" / "cover").read_bytes() == PNG
        assert sorted(p.name for p in (root / "t1").iterdir()) == [
            "audio", "audio.json", "cover", "cover.json"]

    status, metrics = await archiver.get("/metrics")
    assert status == 200
    for line in [
        'archiver_objects_stored_total{object="audio",result="stored"} 2.0',
        'archiver_objects_stored_total{object="cover",result="stored"} 2.0',
        'archiver_downloads_total{outcome="ok"} 4.0',
        f'archiver_download_bytes_total{{outcome="ok"}} {float(2 * (len(WAV) + len(PNG)))}',
        "archiver_download_seconds_count 4.0",
        "archiver_retries_total 0.0",
        'archiver_dead_lettered_total{reason="storage"} 0.0',
        "archiver_in_flight_downloads 0.0",
        'archiver_messages_total{outcome="ok"} 1.0',
    ]:
        assert line in metrics, line
    assert "archiver_consumer_lag{" in metrics
    assert await archiver.stop() == 0
    assert media.hits == {"/a.wav": 1, "/c.png": 1, "/src.wav": 1, "/src.png": 1}


async def test_redelivery_duplicates_and_first_then_complete_store_each_object_once(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    archivers: Start, tmp_path: Path,
) -> None:
    media = await Media(servers).start({"/1.wav": wav_handler(), "/1.png": png_handler(),
                                        "/2.wav": wav_handler(), "/2.png": png_handler(),
                                        "/1-later.wav": wav_handler()})
    topics = archiver_topics(kafka_topic_factory)
    env = archiver_env(kafka_broker.bootstrap_servers, topics, (tmp_path / "a").as_uri())
    one = track_value("t1", audio=media.url("/1.wav"), image=media.url("/1.png"))
    first = event_value("task-dup", one, stage="first")
    # The complete callback names another URL for t1: it must not replace the stored one.
    complete = event_value("task-dup", {**one, "audio_url": media.url("/1-later.wav")},
                           track_value("t2", audio=media.url("/2.wav"), image=media.url("/2.png")))
    await produce_events(kafka_broker.bootstrap_servers, topics[0], first, complete, complete,
                         traceparent=TRACEPARENT)

    archiver = await archivers(env)
    records = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=10)
    assert len(records) == 2 + 4 + 4
    assert await archiver.stop() == 0
    # Re-delivery of everything (a new group starts from the beginning): reported, not redone.
    again = await archivers({**env, "ARCHIVER_GROUP_ID": unique("archiver"),
                             "ADMIN_PORT": str(free_port())})
    records = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=20)
    assert len(records) == 20
    assert await again.stop() == 0

    by_object: dict[tuple[str, str, str], list[tuple[str, bool]]] = {}
    for record, value in zip(records, values_of(records), strict=True):
        by_object.setdefault(object_id(value), []).append(
            (headers_of(record)["ce_id"], value["already_stored"]))
    assert sorted(by_object) == [("task-dup", "t1", "audio"), ("task-dup", "t1", "cover"),
                                 ("task-dup", "t2", "audio"), ("task-dup", "t2", "cover")]
    for reports in by_object.values():
        assert len({ce_id for ce_id, _ in reports}) == 1  # re-reports share the id
        assert [stored for stored in reports if not stored[1]] == reports[:1]  # stored once
    assert media.hits == {"/1.wav": 1, "/1.png": 1, "/2.wav": 1, "/2.png": 1}
    root = tmp_path / "a" / "task-dup"
    assert (root / "t1" / "audio").read_bytes() == WAV
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert files == ["t1", "t1/audio", "t1/audio.json", "t1/cover", "t1/cover.json",
                     "t2", "t2/audio", "t2/audio.json", "t2/cover", "t2/cover.json"]
    dead = await read_records(kafka_broker.bootstrap_servers, topics[2], expect=0, timeout=0.5)
    assert dead == []


async def test_failed_downloads_are_dead_lettered_with_their_reason(
    *, kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    archivers: Start, tmp_path: Path, jail: Jail,
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await servers.release.wait()
        return web.Response(body=WAV, content_type="audio/wav")

    big = wav_handler(body=WAV * 12)  # ~1 MiB, over the 300 KB limit below
    resolver = FakeResolver({"evil.test": ["10.0.0.5"]})
    routes: dict[str, Handler] = {
        "/ok.wav": wav_handler(), "/ok.png": png_handler(),
        "/flaky.wav": status_then([503], wav_handler()),
        "/missing.wav": status_then([404] * 10, wav_handler()),
        "/big.wav": big,
        "/page.html": wav_handler("text/html; charset=utf-8", b"<html>expired</html>"),
        "/slow.wav": slow,
        "/to-file": redirect_to("file:///etc/passwd"),
        "/to-metadata": redirect_to("http://169.254.169.254/latest/meta-data/"),
        "/to-private": redirect_to("http://evil.test:8080/x.wav"),  # -> 10.0.0.5
    }
    media = await Media(servers).start(routes)
    topics = archiver_topics(kafka_topic_factory)
    env = archiver_env(kafka_broker.bootstrap_servers, topics, (tmp_path / "a").as_uri(),
                       ARCHIVE_MAX_BYTES="300000", ARCHIVE_TOTAL_TIMEOUT_SECONDS="1",
                       ARCHIVE_RETRY_ATTEMPTS="2")
    cases = {
        "t-missing": ("/missing.wav", "http_status", 1),
        "t-big": ("/big.wav", "too_large", 1),
        "t-html": ("/page.html", "bad_content_type", 1),
        "t-slow": ("/slow.wav", "timeout", 2),
        "t-file": ("/to-file", "forbidden_scheme", 1),
        "t-metadata": ("/to-metadata", "forbidden_address", 1),
        "t-private": ("/to-private", "forbidden_address", 1),
    }
    document = event_value(
        "task-fail",
        track_value("t-ok", audio=media.url("/ok.wav"), image=media.url("/ok.png")),
        track_value("t-flaky", audio=media.url("/flaky.wav")),
        *(track_value(track_id, audio=media.url(path)) for track_id, (path, _, _) in cases.items()),
    )
    [placed] = await produce_events(kafka_broker.bootstrap_servers, topics[0], document,
                                    traceparent=TRACEPARENT)
    archiver = await archivers(env, resolver=resolver)

    dead = await read_records(kafka_broker.bootstrap_servers, topics[2], expect=len(cases))
    archived = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=3)
    assert sorted(object_id(v)[1:] for v in values_of(archived)) == [
        ("t-flaky", "audio"), ("t-ok", "audio"), ("t-ok", "cover")]
    assert len(dead) == len(cases)
    for record, value in zip(dead, values_of(dead), strict=True):
        assert SCHEMAS.errors(ARCHIVE_FAILED_V1, value) == []
        path, reason, attempts = cases[value["track_id"]]
        assert record.key == b"task-fail"
        assert (value["object"], value["url"], value["reason"]) == ("audio", media.url(path),
                                                                   reason)
        assert value["attempts"] == attempts
        assert (value["topic"], value["partition"], value["offset"]) == (
            topics[0], placed.partition, placed.offset)
        assert value["source_event_id"] == document["event_id"]
        assert value["detail"]
        assert headers_of(record)["reason"] == reason
        assert headers_of(record)["traceparent"] == TRACEPARENT
    for _, reason, _ in cases.values():
        assert archiver.metric("archiver_dead_lettered_total", reason=reason) >= 1
    assert archiver.metric("archiver_dead_lettered_total", reason="forbidden_address") == 2
    assert archiver.metric("archiver_retries_total") == 1 + 1  # flaky once, slow once
    assert archiver.metric("archiver_downloads_total", outcome="ok") == 3
    assert archiver.metric("archiver_download_circuit_open") == 0  # one host: data problem
    assert media.hits["/flaky.wav"] == 2
    assert media.hits["/missing.wav"] == 1  # 404 is permanent: no retry
    assert resolver.calls == ["evil.test"]
    assert await archiver.stop() == 0
    # Nothing partial or refused reached storage.
    root = tmp_path / "a" / "task-fail"
    assert sorted(p.name for p in root.iterdir()) == ["t-flaky", "t-ok"]
    assert media.server is not None
    kafka_port = int(kafka_broker.bootstrap_servers.rsplit(":", 1)[1])
    admin_port = archiver.config.process.admin_port
    assert loopback_only(jail, kafka_port, media.server.port, admin_port) == []


async def test_names_resolving_to_forbidden_addresses_are_refused_without_connecting(
    *, kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory,
    canaries: dict[str, Canary], archivers: Start, tmp_path: Path, jail: Jail,
) -> None:
    v4 = canaries["127.0.0.1"].port
    v6 = canaries["::1"].port if "::1" in canaries else v4
    resolver = FakeResolver({"private.test": ["10.0.0.5"], "metadata.test": ["169.254.169.254"],
                             "loopback.test": ["127.0.0.1"], "loopback6.test": ["::1"],
                             "mixed.test": ["192.168.1.1", "127.0.0.1", "fd00::1"]})
    urls = {
        "t-private": f"http://private.test:{v4}/a.wav",
        "t-metadata": "http://metadata.test/latest/meta-data/",
        "t-loopback": f"http://loopback.test:{v4}/a.wav",
        "t-loopback6": f"http://loopback6.test:{v6}/a.wav",
        "t-mixed": f"http://mixed.test:{v4}/a.wav",
        "t-literal": f"http://127.0.0.1:{v4}/a.wav",
        "t-octal": f"http://0177.0.0.1:{v4}/a.wav",
        "t-mapped": f"http://[::ffff:127.0.0.1]:{v4}/a.wav",
        "t-ftp": f"ftp://127.0.0.1:{v4}/a.wav",
    }
    topics = archiver_topics(kafka_topic_factory)
    # Production setting: loopback refused like any other internal address.
    env = archiver_env(kafka_broker.bootstrap_servers, topics, (tmp_path / "a").as_uri(),
                       ARCHIVE_ALLOW_LOOPBACK="false")
    document = event_value("task-ssrf",
                           *(track_value(t, audio=u, image=u) for t, u in urls.items()))
    await produce_events(kafka_broker.bootstrap_servers, topics[0], document,
                         traceparent=TRACEPARENT)
    archiver = await archivers(env, resolver=resolver)

    dead = await read_records(kafka_broker.bootstrap_servers, topics[2], expect=2 * len(urls))
    assert len(dead) == 2 * len(urls)
    reasons = {(v["track_id"], v["object"]): v["reason"] for v in values_of(dead)}
    for track_id in urls:
        expected = "forbidden_scheme" if track_id == "t-ftp" else "forbidden_address"
        assert reasons[(track_id, "audio")] == reasons[(track_id, "cover")] == expected
    assert all(SCHEMAS.errors(ARCHIVE_FAILED_V1, v) == [] for v in values_of(dead))
    assert archiver.metric("archiver_downloads_total", outcome="ok") == 0
    assert await archiver.stop() == 0
    assert all(canary.accepted == 0 for canary in canaries.values())
    kafka_port = int(kafka_broker.bootstrap_servers.rsplit(":", 1)[1])
    # Not one connect(2) for a payload URL: only Kafka and the test's own /readyz polls.
    assert loopback_only(jail, kafka_port, archiver.config.process.admin_port) == []
    assert sorted(set(resolver.calls)) == ["loopback.test", "loopback6.test", "metadata.test",
                                           "mixed.test", "private.test"]
    assert not (tmp_path / "a" / "task-ssrf").exists()


async def test_storage_outage_is_not_dead_lettered_and_nothing_is_committed(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    archivers: Start, tmp_path: Path,
) -> None:
    media = await Media(servers).start({"/a.wav": wav_handler()})
    blocker = tmp_path / "mount"
    blocker.write_bytes(b"not a directory")  # the storage "device" is broken
    topics = archiver_topics(kafka_topic_factory)
    env = archiver_env(kafka_broker.bootstrap_servers, topics, (blocker / "archive").as_uri())
    await produce_events(kafka_broker.bootstrap_servers, topics[0],
                         event_value("task-outage", track_value("t1", audio=media.url("/a.wav"))),
                         traceparent=TRACEPARENT)

    broken = await archivers(env, ready=False)
    assert await asyncio.wait_for(broken.task, 30) == 1  # an outage stops the process
    assert broken.metric("archiver_storage_failures_total", operation="put") == 3
    assert broken.metric("archiver_messages_total", outcome="error") == 1
    assert await read_records(kafka_broker.bootstrap_servers, topics[2], expect=0,
                              timeout=0.5) == []

    blocker.unlink()  # repaired; the restarted process gets the same event again
    fixed = await archivers({**env, "ADMIN_PORT": str(free_port())})
    [report] = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=1)
    assert orjson.loads(report.value or b"")["already_stored"] is False
    assert await fixed.stop() == 0
    assert (blocker / "archive" / "task-outage" / "t1" / "audio").read_bytes() == WAV
    assert media.hits["/a.wav"] == 2
    assert await read_records(kafka_broker.bootstrap_servers, topics[2], expect=0,
                              timeout=0.5) == []


# --------------------------------------------------------------------------- every kind

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 64
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(200)) + b"\xff\xd9"


def stem_path(name: str) -> str:
    return "/bass.bin" if name == "bass" else f"/{name}.mp3"


def stem(name: str) -> bytes:
    """A distinct small "MP3" per stem (ID3 header, then bytes of its own)."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + name.encode() * 512


async def test_every_file_role_is_stored_with_its_content_type_under_its_key(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    archivers: Start, tmp_path: Path,
) -> None:
    served: dict[str, tuple[str, bytes]] = {
        "/v.mp4": ("video/mp4", MP4), "/w.wav": ("audio/wav", WAV),
        "/1.png": ("image/png", PNG), "/2.jpg": ("image/jpeg", JPEG),
        **{f"/{name}.mp3": ("audio/mpeg", stem(name)) for name in STEM_ROLES if name != "bass"},
        "/bass.bin": ("application/octet-stream", stem("bass")),
        "/g.mp3": ("audio/mpeg", stem("song")), "/g.jpg": ("image/jpeg", JPEG),
        "/old.wav": ("audio/x-wav", WAV), "/old.png": ("image/png", PNG),
    }
    routes: dict[str, Handler] = {path: wav_handler(ctype, body)
                                  for path, (ctype, body) in served.items()}
    routes["/expired.mp3"] = status_then([404] * 5, wav_handler())
    media = await Media(servers).start(routes)
    u = media.url
    topics = archiver_topics(kafka_topic_factory)
    root = tmp_path / "archive"
    env = archiver_env(kafka_broker.bootstrap_servers, topics, root.as_uri())
    generated = track_value("g1", audio=u("/g.mp3"), image=u("/g.jpg"), title="Song", duration=95.0)
    documents = [
        event_value("video-1", kind="music-video", files=[file_value("video", u("/v.mp4"))]),
        event_value("wav-1", kind="wav", files=[file_value("wav", u("/w.wav"), track_id="tr-w")]),
        event_value("image-1", kind="cover-image", files=[file_value("image", u("/1.png")),
                                                         file_value("image", u("/2.jpg"))]),
        event_value("sep-1", kind="vocal-separation", files=[  # every stem
            file_value(name, u(stem_path(name))) for name in STEM_ROLES]),
        event_value("gen-1", generated, kind="generate-music", files=[
            file_value("audio", u("/expired.mp3"), fallback=u("/g.mp3"), track_id="g1"),
            file_value("cover", u("/g.jpg"), track_id="g1")]),
        # no files[]: a record written before it existed
        event_value("old-1", track_value("o1", audio=u("/old.wav"), image=u("/old.png"))),
    ]
    # (task, track segment, object name) -> (kind, role, track id, path served)
    expected: dict[tuple[str, str, str], tuple[str, str, str | None, str]] = {
        ("video-1", "_", "video"): ("music-video", "video", None, "/v.mp4"),
        ("wav-1", "tr-w", "wav"): ("wav", "wav", "tr-w", "/w.wav"),
        ("image-1", "_", "image"): ("cover-image", "image", None, "/1.png"),
        ("image-1", "_", "image-2"): ("cover-image", "image", None, "/2.jpg"),
        **{("sep-1", "_", name): ("vocal-separation", name, None, stem_path(name))
           for name in STEM_ROLES},
        ("gen-1", "g1", "audio"): ("generate-music", "audio", "g1", "/g.mp3"),
        ("gen-1", "g1", "cover"): ("generate-music", "cover", "g1", "/g.jpg"),
        ("old-1", "o1", "audio"): ("extend-music", "audio", "o1", "/old.wav"),
        ("old-1", "o1", "cover"): ("extend-music", "cover", "o1", "/old.png"),
    }
    await produce_events(kafka_broker.bootstrap_servers, topics[0], *documents,
                         traceparent=TRACEPARENT)
    archiver = await archivers(env)

    records = await read_records(kafka_broker.bootstrap_servers, topics[1],
                                 expect=len(expected))
    assert len(records) == len(expected)
    store = open_store(root.as_uri(), Env(env))
    reports = {value["uri"]: value for value in values_of(records)}
    for (task_id, segment, name), (kind, role, track_id, path) in expected.items():
        key = f"{task_id}/{segment}/{name}"
        content_type, body = served[path]
        value = reports[store.uri(key)]
        assert SCHEMAS.errors(ARCHIVED_V1, value) == [], key
        assert (value["task_id"], value["track_id"], value["object"], value["kind"]) == (
            task_id, track_id, role, kind), key
        assert (value["content_type"], value["size"], value["source_url"]) == (
            content_type, len(body), u(path)), key
        assert (root / key).read_bytes() == body, key
        stored = await store.stat(key)
        assert stored is not None
        assert stored.content_type == content_type, key
    assert reports[store.uri("gen-1/g1/audio")]["duration_seconds"] == 95.0
    assert reports[store.uri("gen-1/g1/audio")]["title"] == "Song"
    assert reports[store.uri("video-1/_/video")]["title"] is None
    # The legacy record's objects keep the keys and ids they always had.
    old = reports[store.uri("old-1/o1/audio")]
    old_ids = {headers_of(r)["ce_id"] for r in records
               if orjson.loads(r.value or b"{}")["uri"] == old["uri"]}
    assert old_ids == {archive_event_id("old-1", "o1", "audio", SHA_WAV)}
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.suffix != ".json") == sorted("/".join(k) for k in expected)
    assert await read_records(kafka_broker.bootstrap_servers, topics[2], expect=0,
                              timeout=0.5) == []
    # Every role of the contract was stored.
    assert {value["object"] for value in reports.values()} == set(FILE_ROLES)
    assert archiver.metric("archiver_objects_stored_total", object="image",
                           result="stored") == 2
    assert archiver.metric("archiver_objects_stored_total", object="video",
                           result="stored") == 1
    assert await archiver.stop() == 0
    assert media.hits["/expired.mp3"] == 1  # then its fallback


async def test_each_role_has_its_own_size_limit_and_content_types(
    kafka_broker: KafkaBroker, kafka_topic_factory: KafkaTopicFactory, servers: Servers,
    archivers: Start, tmp_path: Path,
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    media = await Media(servers).start({
        "/big.mp4": wav_handler("video/mp4", big), "/big.mp3": wav_handler("audio/mpeg", big),
        "/small.png": png_handler(),
        "/song-as-video.mp4": wav_handler("audio/mpeg", stem("x")),
        "/video-as-image.png": wav_handler("video/mp4", MP4),
        "/image-as-audio.mp3": png_handler(),
    })
    u = media.url
    topics = archiver_topics(kafka_topic_factory)
    root = tmp_path / "archive"
    env = archiver_env(kafka_broker.bootstrap_servers, topics, root.as_uri(),
                       ARCHIVE_MAX_BYTES="300000", ARCHIVE_MAX_BYTES_COVER=str(len(PNG) - 1))
    documents = [
        event_value("video-ok", kind="music-video", files=[file_value("video", u("/big.mp4"))]),
        event_value("audio-big", kind="generate-music", files=[
            file_value("audio", u("/big.mp3"), track_id="t1"),
            file_value("cover", u("/small.png"), track_id="t1")]),
        event_value("bad-types", kind="music-video", files=[
            file_value("video", u("/song-as-video.mp4"))]),
        event_value("bad-image", kind="cover-image", files=[
            file_value("image", u("/video-as-image.png"))]),
        event_value("bad-stem", kind="vocal-separation", files=[
            file_value("vocal", u("/image-as-audio.mp3"))]),
    ]
    await produce_events(kafka_broker.bootstrap_servers, topics[0], *documents,
                         traceparent=TRACEPARENT)
    archiver = await archivers(env)

    dead = await read_records(kafka_broker.bootstrap_servers, topics[2], expect=5)
    [stored] = await read_records(kafka_broker.bootstrap_servers, topics[1], expect=1)
    video = orjson.loads(stored.value or b"")
    assert (video["task_id"], video["object"], video["size"]) == ("video-ok", "video", len(big))
    assert (root / "video-ok/_/video").read_bytes() == big
    failures = {(v["task_id"], v["object"]): (v["reason"], v["kind"]) for v in values_of(dead)}
    assert failures == {
        ("audio-big", "audio"): ("too_large", "generate-music"),
        ("audio-big", "cover"): ("too_large", "generate-music"),  # ARCHIVE_MAX_BYTES_COVER
        ("bad-types", "video"): ("bad_content_type", "music-video"),
        ("bad-image", "image"): ("bad_content_type", "cover-image"),
        ("bad-stem", "vocal"): ("bad_content_type", "vocal-separation"),
    }
    assert all(SCHEMAS.errors(ARCHIVE_FAILED_V1, v) == [] for v in values_of(dead))
    assert archiver.metric("archiver_dead_lettered_total", reason="too_large") == 2
    assert await archiver.stop() == 0
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "video-ok/_/video", "video-ok/_/video.json"]
