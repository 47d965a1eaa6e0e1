"""Object storage on S3 or an S3-compatible server, through obstore.

Each object carries its metadata itself: ``Content-Type`` as the standard header and the
rest as user metadata (``x-amz-meta-sha256``, ``-size``, ``-source-url``, ``-title``,
``-duration-seconds``). S3 user metadata must be ASCII, so every value is
percent-encoded (:func:`urllib.parse.quote`, nothing left unencoded but unreserved
characters) and decoded on ``stat``. ``stat`` is a HEAD request (obstore ``get`` with
``head=True``, whose result carries the attributes; ``obstore.head`` does not).

``put_file`` hands obstore the file path: up to ``chunk_size`` it is one PUT, above it a
multipart upload streamed in parts (at most ``max_concurrency`` parts in memory). Both
are atomic by S3's nature: the key shows the old object until the PUT or the
CompleteMultipartUpload succeeds.
"""

from __future__ import annotations

import asyncio
import math
import os
import urllib.parse
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store as _ObstoreS3Store

from service.storage.base import ObjectMetadata, StorageError, validate_key

if TYPE_CHECKING:
    from pathlib import Path

    from obstore import Attributes
    from obstore.store import ClientConfig, S3Config

#: AWS limit on user-defined metadata (keys plus values, as sent). Checked before upload
#: so an S3-compatible test server that does not enforce it fails the same way.
USER_METADATA_LIMIT = 2048

_META_SHA256 = "sha256"
_META_SIZE = "size"
_META_SOURCE_URL = "source-url"
_META_TITLE = "title"
_META_DURATION = "duration-seconds"
_CHECK_PREFIX = "_readyz-probe"


def _first_line(exc: BaseException) -> str:
    """obstore messages carry a multi-line debug dump after the first line; the cause keeps it."""
    return str(exc).strip().split("\n", 1)[0]


def _encode(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _decode(value: str) -> str:
    return urllib.parse.unquote(value, errors="strict")


def encode_user_metadata(metadata: ObjectMetadata) -> dict[str, str]:
    """The user metadata (without ``x-amz-meta-``) that represents ``metadata``."""
    encoded = {
        _META_SHA256: metadata.sha256,
        _META_SIZE: str(metadata.size),
        _META_SOURCE_URL: _encode(metadata.source_url),
    }
    if metadata.title is not None:
        encoded[_META_TITLE] = _encode(metadata.title)
    if metadata.duration_seconds is not None:
        encoded[_META_DURATION] = repr(float(metadata.duration_seconds))
    return encoded


def decode_user_metadata(content_type: str | None,
                         user: dict[str, str]) -> ObjectMetadata | None:
    """Inverse of :func:`encode_user_metadata`; ``None`` if the object lacks or garbles it."""
    try:
        sha256 = user[_META_SHA256]
        size = int(user[_META_SIZE])
        source_url = _decode(user[_META_SOURCE_URL])
        title = _decode(user[_META_TITLE]) if _META_TITLE in user else None
        duration = float(user[_META_DURATION]) if _META_DURATION in user else None
        if duration is not None and not math.isfinite(duration):
            return None
        return ObjectMetadata(content_type=content_type or "application/octet-stream",
                              size=size, sha256=sha256, source_url=source_url,
                              title=title, duration_seconds=duration)
    except (KeyError, ValueError):  # not written by put_file (or edited by hand)
        return None


class S3Store:
    """An :class:`~service.storage.base.ObjectStore` in one bucket under an optional prefix.

    Credentials left ``None`` fall back to obstore's own chain (the ``AWS_*`` environment,
    web identity, ECS/EC2 metadata). Note that obstore always reads the ``AWS_*``
    environment variables first and lets explicit arguments override them.
    """

    def __init__(self, bucket: str, prefix: str = "", *, region: str = "us-east-1",
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 session_token: str | None = None, endpoint_url: str | None = None,
                 chunk_size: int = 8 * 1024 * 1024, max_concurrency: int = 4,
                 check_timeout_seconds: float = 5.0) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self._chunk_size = chunk_size
        self._max_concurrency = max_concurrency
        self._check_timeout = check_timeout_seconds
        config: S3Config = {"region": region}
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        if session_token is not None:
            config["session_token"] = session_token
        client: ClientConfig = {"connect_timeout": "5s"}
        if endpoint_url is not None:
            config["endpoint"] = endpoint_url.rstrip("/")
            client["allow_http"] = urllib.parse.urlsplit(endpoint_url).scheme == "http"
        self._store = _ObstoreS3Store(bucket, prefix=prefix or None, config=config,
                                      client_options=client)

    def _key(self, key: str) -> str:
        return validate_key(key)

    def uri(self, key: str) -> str:
        full = f"{self.prefix}/{self._key(key)}" if self.prefix else self._key(key)
        return f"s3://{self.bucket}/{full}"

    async def stat(self, key: str) -> ObjectMetadata | None:
        try:
            result = await obstore.get_async(self._store, self._key(key),
                                             options={"head": True})
        except FileNotFoundError:  # obstore raises the builtin for a missing object
            return None
        except BaseError as exc:
            raise StorageError(f"cannot stat {self.uri(key)}: {_first_line(exc)}") from exc
        attributes = result.attributes
        content_type = attributes.get("Content-Type")
        user = {name.lower(): value for name, value in attributes.items()}
        metadata = decode_user_metadata(content_type, user)
        if metadata is None or metadata.size != result.meta["size"]:
            return None
        return metadata

    async def put_file(self, key: str, path: Path, metadata: ObjectMetadata) -> None:
        key = self._key(key)
        user = encode_user_metadata(metadata)
        user_size = sum(len(name) + len(value) for name, value in user.items())
        if user_size > USER_METADATA_LIMIT:
            raise ValueError(f"encoded user metadata is {user_size} bytes, over S3's "
                             f"{USER_METADATA_LIMIT}-byte limit (shorten source_url/title)")
        try:
            size = (await asyncio.to_thread(os.stat, path)).st_size
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {_first_line(exc)}") from exc
        if size != metadata.size:
            raise ValueError(f"metadata.size is {metadata.size} but {path} has {size} bytes")
        attributes: Attributes = {"Content-Type": metadata.content_type, **user}
        try:
            await obstore.put_async(self._store, key, path, attributes=attributes,
                                    chunk_size=self._chunk_size,
                                    max_concurrency=self._max_concurrency)
        except (BaseError, OSError) as exc:
            raise StorageError(f"cannot write {self.uri(key)}: {_first_line(exc)}") from exc

    async def check(self) -> None:
        # A ListObjectsV2 of an empty probe prefix: one small request that fails on a
        # missing bucket (NoSuchBucket) and on bad credentials. A HEAD would not do: its
        # 404 has no body, so a missing bucket looks like a missing key.
        try:
            async with asyncio.timeout(self._check_timeout):
                async for _ in obstore.list(self._store, _CHECK_PREFIX, chunk_size=1):
                    break
        except TimeoutError as exc:
            raise StorageError(f"s3://{self.bucket}: no answer within "
                               f"{self._check_timeout:g}s") from exc
        except (BaseError, OSError) as exc:
            raise StorageError(f"s3://{self.bucket} is not usable: {_first_line(exc)}") from exc

    async def close(self) -> None:
        return None  # obstore's client has nothing to close; its pool goes with the object
