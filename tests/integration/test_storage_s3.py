"""S3Store against a real S3-compatible server (S3Proxy, signatures checked)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
from typing import TYPE_CHECKING

import obstore
import pytest

from service.config.env import ConfigError, Env
from service.storage.base import ObjectMetadata, ObjectStore, StorageError
from service.storage.factory import open_store
from service.storage.s3 import S3Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.harness.s3proxy import S3ProxyServer

TITLE = "Ünïcødé 🎵 — «Song» 日本語 100% a/b"


def _metadata(content: bytes, *, title: str | None = TITLE,
              duration: float | None = 187.25,
              content_type: str = "audio/mpeg") -> ObjectMetadata:
    return ObjectMetadata(content_type=content_type, size=len(content),
                          sha256=hashlib.sha256(content).hexdigest(),
                          source_url="https://cdn.example.test/ä.mp3?x=1&y=%C3%A4",
                          title=title, duration_seconds=duration)


def _store(server: S3ProxyServer, bucket: str, prefix: str = "archive", *,
           secret: str | None = None, chunk_size: int = 8 * 1024 * 1024,
           max_concurrency: int = 4) -> S3Store:
    return S3Store(bucket, prefix, region=server.region, endpoint_url=server.endpoint_url,
                   access_key_id=server.access_key_id,
                   secret_access_key=secret or server.secret_access_key,
                   chunk_size=chunk_size, max_concurrency=max_concurrency)


@contextlib.contextmanager
def _closed_loopback_port() -> Iterator[int]:
    """A loopback port that nothing listens on (bound, never listening, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _write(tmp_path: Path, content: bytes, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.s3
async def test_put_and_stat_roundtrip(s3_server: S3ProxyServer, s3_bucket: str,
                                      tmp_path: Path) -> None:
    store = _store(s3_server, s3_bucket)
    assert isinstance(store, ObjectStore)
    await store.check()
    key = "task%2F1/track-%C3%A4/audio"
    assert await store.stat(key) is None

    content = os.urandom(100_000)
    metadata = _metadata(content)
    await store.put_file(key, _write(tmp_path, content), metadata)

    assert await store.stat(key) == metadata
    assert store.uri(key) == f"s3://{s3_bucket}/archive/{key}"
    # The key is stored exactly as given, under the prefix (no double encoding).
    assert s3_server.list_keys(s3_bucket) == [f"archive/{key}"]
    # Content and the standard Content-Type header, as any S3 client sees them.
    _, body = s3_server.request("GET", f"/{s3_bucket}/archive/{key}")
    assert body == content
    raw = obstore.store.S3Store(s3_bucket, config={
        "endpoint": s3_server.endpoint_url, "region": s3_server.region,
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key}, client_options={"allow_http": True})
    head = await obstore.get_async(raw, f"archive/{key}", options={"head": True})
    attributes = head.attributes
    assert attributes["Content-Type"] == "audio/mpeg"
    # User metadata is ASCII on the wire: non-ASCII values are percent-encoded.
    assert all(value.isascii() for value in attributes.values())
    assert attributes["title"] == "%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%F0%9F%8E%B5%20%E2%80%94%20%C2%ABSong%C2%BB%20%E6%97%A5%E6%9C%AC%E8%AA%9E%20100%25%20a%2Fb"  # noqa: E501
    assert attributes["sha256"] == metadata.sha256
    assert attributes["size"] == str(len(content))
    await store.close()


@pytest.mark.s3
async def test_overwrite_and_optional_fields(s3_server: S3ProxyServer, s3_bucket: str,
                                             tmp_path: Path) -> None:
    store = _store(s3_server, s3_bucket, prefix="")
    await store.put_file("cover", _write(tmp_path, b"one"), _metadata(b"one"))
    second = b"second image"
    replacement = _metadata(second, title=None, duration=None, content_type="image/jpeg")
    await store.put_file("cover", _write(tmp_path, second, "b.bin"), replacement)
    assert await store.stat("cover") == replacement
    assert store.uri("cover") == f"s3://{s3_bucket}/cover"


@pytest.mark.s3
async def test_20_mib_object_is_streamed_as_multipart(s3_server: S3ProxyServer,
                                                      s3_bucket: str, tmp_path: Path) -> None:
    chunk = 5 * 1024 * 1024
    store = _store(s3_server, s3_bucket, chunk_size=chunk, max_concurrency=2)
    content = os.urandom(20 * 1024 * 1024 + 123)
    metadata = _metadata(content)
    await store.put_file("big/audio", _write(tmp_path, content), metadata)

    assert await store.stat("big/audio") == metadata
    raw = obstore.store.S3Store(s3_bucket, config={
        "endpoint": s3_server.endpoint_url, "region": s3_server.region,
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key}, client_options={"allow_http": True})
    result = await obstore.get_async(raw, "archive/big/audio")
    # A multipart ETag ("<md5>-<parts>") shows the file went up in chunk-sized parts.
    e_tag = result.meta["e_tag"] or ""
    assert e_tag.strip('"').endswith(f"-{math.ceil(len(content) / chunk)}")
    assert hashlib.sha256(bytes(await result.bytes_async())).hexdigest() == metadata.sha256


@pytest.mark.s3
async def test_objects_without_our_metadata_are_absent(s3_server: S3ProxyServer,
                                                       s3_bucket: str) -> None:
    s3_server.request("PUT", f"/{s3_bucket}/archive/foreign", body=b"not ours")
    assert await _store(s3_server, s3_bucket).stat("foreign") is None


@pytest.mark.s3
async def test_wrong_credentials_raise(s3_server: S3ProxyServer, s3_bucket: str,
                                       tmp_path: Path) -> None:
    store = _store(s3_server, s3_bucket, secret="not-the-secret")
    source = _write(tmp_path, b"data")
    with pytest.raises(StorageError, match="403 Forbidden"):
        await store.check()
    with pytest.raises(StorageError):
        await store.stat("k")
    with pytest.raises(StorageError):
        await store.put_file("k", source, _metadata(b"data"))
    assert s3_server.list_keys(s3_bucket) == []


@pytest.mark.s3
async def test_missing_bucket_fails_check(s3_server: S3ProxyServer) -> None:
    with pytest.raises(StorageError):
        await _store(s3_server, "no-such-bucket-here").check()


async def test_unreachable_endpoint_fails_check_quickly() -> None:
    with _closed_loopback_port() as port:
        store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{port}",
                        access_key_id="a", secret_access_key="b", check_timeout_seconds=2)
        with pytest.raises(StorageError, match="s3://bucket"):
            await store.check()


@pytest.mark.s3
async def test_caller_errors_are_value_errors(s3_server: S3ProxyServer, s3_bucket: str,
                                              tmp_path: Path) -> None:
    store = _store(s3_server, s3_bucket)
    source = _write(tmp_path, b"12345")
    with pytest.raises(ValueError, match=r"metadata\.size"):
        await store.put_file("k", source, _metadata(b"1234"))
    long_title = _metadata(b"12345", title="日本語" * 100)
    with pytest.raises(ValueError, match="2048-byte limit"):
        await store.put_file("k", source, long_title)
    for key in ("../k", "/k", "a//b", "a/b.json", ""):
        with pytest.raises(ValueError, match="key"):
            await store.put_file(key, source, _metadata(b"12345"))
    assert s3_server.list_keys(s3_bucket) == []


@pytest.mark.s3
async def test_open_store_from_env(s3_server: S3ProxyServer, s3_bucket: str,
                                   tmp_path: Path) -> None:
    env = Env({
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_REGION": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
    })
    store = open_store(f"s3://{s3_bucket}/prefix/", env)
    await store.check()
    content = b"via the factory"
    await store.put_file("t/audio", _write(tmp_path, content), _metadata(content))
    assert await store.stat("t/audio") == _metadata(content)
    assert store.uri("t/audio") == f"s3://{s3_bucket}/prefix/t/audio"
    assert s3_server.list_keys(s3_bucket) == ["prefix/t/audio"]
    await store.close()


@pytest.mark.parametrize(("environ", "url", "variable"), [
    ({}, "s3://Bad_Bucket/x", "ARCHIVE_STORAGE_URL"),
    ({}, "s3://bucket/a/../b", "ARCHIVE_STORAGE_URL"),
    ({}, "s3://bucket/p?versionId=1", "ARCHIVE_STORAGE_URL"),
    ({"AWS_ACCESS_KEY_ID": "a"}, "s3://bucket", "AWS_SECRET_ACCESS_KEY"),
    ({"AWS_SECRET_ACCESS_KEY": "b"}, "s3://bucket", "AWS_ACCESS_KEY_ID"),
    ({"AWS_SESSION_TOKEN": "t"}, "s3://bucket", "AWS_SESSION_TOKEN"),
    ({"AWS_ENDPOINT_URL": "127.0.0.1:9000"}, "s3://bucket", "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "ftp://127.0.0.1"}, "s3://bucket", "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:99999"}, "s3://bucket", "AWS_ENDPOINT_URL"),
    ({"AWS_REGION": "Not A Region"}, "s3://bucket", "AWS_REGION"),
    ({"AWS_DEFAULT_REGION": "bad region"}, "s3://bucket", "AWS_DEFAULT_REGION"),
])
def test_open_store_errors_name_the_variable(environ: dict[str, str], url: str,
                                             variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: ") as info:
        open_store(url, Env(environ))
    assert info.value.name == variable


def test_open_store_region_fallbacks() -> None:
    def region(environ: dict[str, str]) -> str:
        store = open_store("s3://bucket", Env({"AWS_ACCESS_KEY_ID": "a",
                                                "AWS_SECRET_ACCESS_KEY": "b", **environ}))
        assert isinstance(store, S3Store)
        return store.region

    assert region({}) == "us-east-1"
    assert region({"AWS_DEFAULT_REGION": "eu-west-1"}) == "eu-west-1"
    assert region({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"}) == (
        "eu-central-1")
