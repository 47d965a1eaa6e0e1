"""Where the archive lives: ``ARCHIVE_STORAGE_URL`` and the usual AWS variables.

- ``file:///absolute/dir`` (percent-encoded like any file URL) -> :class:`FilesystemSettings`;
- ``s3://bucket`` or ``s3://bucket/prefix`` (the prefix taken literally, as the AWS CLI
  does) -> :class:`S3Settings`, from ``AWS_REGION`` (else ``AWS_DEFAULT_REGION``, else
  ``us-east-1``), ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (both or neither;
  neither means obstore's own chain: web identity, ECS/EC2 metadata), ``AWS_SESSION_TOKEN``
  and ``AWS_ENDPOINT_URL`` (an S3-compatible server; ``http://`` is accepted there, for a
  local or in-cluster endpoint). Secrets may also come from ``NAME_FILE``.

Every error is a :class:`ConfigError` naming the variable to fix. Reading opens nothing:
``service.storage.factory.store_for`` turns the settings into a store.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from service.config.env import ConfigError, Env

STORAGE_URL_VARIABLE: Final = "ARCHIVE_STORAGE_URL"
DEFAULT_REGION: Final = "us-east-1"
DEFAULT_STORAGE_DIR: Final = Path(".dev-data") / "archive"

# S3 bucket naming rules (general purpose buckets): 3-63 of a-z 0-9 . -, alphanumeric ends.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,64}")


@dataclass(frozen=True)
class FilesystemSettings:
    root: Path


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    #: Taken literally; checked as an object key when the store is opened.
    prefix: str = ""
    region: str = DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None


StorageSettings = FilesystemSettings | S3Settings


def default_storage_url() -> str:
    """``file://`` URL of ``./.dev-data/archive`` (absolute, from the working directory)."""
    return DEFAULT_STORAGE_DIR.resolve().as_uri()


def read_storage_settings(url: str, env: Env) -> StorageSettings:
    """The store that ``url`` (the value of ``ARCHIVE_STORAGE_URL``) names."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigError(STORAGE_URL_VARIABLE, f"not a URL: {exc}") from None
    if parts.query or parts.fragment:
        raise ConfigError(STORAGE_URL_VARIABLE, f"must have no query or fragment, got {url!r}")
    if parts.scheme == "file":
        return _filesystem(parts, url)
    if parts.scheme == "s3":
        return _s3(parts, url, env)
    raise ConfigError(STORAGE_URL_VARIABLE,
                      f"expected file:///absolute/dir or s3://bucket/prefix, got {url!r}")


def _filesystem(parts: urllib.parse.SplitResult, url: str) -> FilesystemSettings:
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(STORAGE_URL_VARIABLE,
                          f"file URLs must name a local path (file:///dir), got {url!r}")
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ConfigError(STORAGE_URL_VARIABLE,
                          f"expected file:///absolute/dir (not the root), got {url!r}")
    if ".." in path.split("/"):
        raise ConfigError(STORAGE_URL_VARIABLE, f"must not contain '..', got {url!r}")
    return FilesystemSettings(Path(path))


def _s3(parts: urllib.parse.SplitResult, url: str, env: Env) -> S3Settings:
    bucket = parts.netloc
    if "@" in bucket or ":" in bucket or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(STORAGE_URL_VARIABLE,
                          f"expected s3://bucket/prefix with a valid bucket name, got {url!r}")

    region_variable = "AWS_REGION" if env.raw("AWS_REGION") is not None else "AWS_DEFAULT_REGION"
    region = env.text(region_variable, DEFAULT_REGION)
    if not _REGION.fullmatch(region):
        raise ConfigError(region_variable, f"expected a region like eu-west-1, got {region!r}")

    access_key_id = env.optional_text("AWS_ACCESS_KEY_ID")
    secret_access_key = env.secret("AWS_SECRET_ACCESS_KEY")
    if access_key_id is None and secret_access_key is not None:
        raise ConfigError("AWS_ACCESS_KEY_ID", "missing while AWS_SECRET_ACCESS_KEY is set")
    if access_key_id is not None and secret_access_key is None:
        raise ConfigError("AWS_SECRET_ACCESS_KEY", "missing while AWS_ACCESS_KEY_ID is set")
    session_token = env.secret("AWS_SESSION_TOKEN")
    if session_token is not None and access_key_id is None:
        raise ConfigError("AWS_SESSION_TOKEN",
                          "set only together with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")

    endpoint_url = env.optional_text("AWS_ENDPOINT_URL")
    if endpoint_url is not None:
        endpoint = urllib.parse.urlsplit(endpoint_url)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise ConfigError("AWS_ENDPOINT_URL",
                              f"expected http(s)://host[:port], got {endpoint_url!r}")
        if endpoint.path.strip("/") or endpoint.query or endpoint.fragment:
            raise ConfigError("AWS_ENDPOINT_URL",
                              f"must have no path, query or fragment, got {endpoint_url!r}")
        try:
            _ = endpoint.port
        except ValueError:
            raise ConfigError("AWS_ENDPOINT_URL", f"invalid port in {endpoint_url!r}") from None

    return S3Settings(bucket, parts.path.strip("/"), region=region,
                      access_key_id=access_key_id, secret_access_key=secret_access_key,
                      session_token=session_token, endpoint_url=endpoint_url)
