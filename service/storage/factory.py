"""Open the archive's object store from its settings (``service.config.storage``).

``store_for`` makes no request; the one check left to it is the S3 prefix, which must
be a valid object key (the store's own rule), reported as ``ARCHIVE_STORAGE_URL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.config.env import ConfigError
from service.config.storage import (
    STORAGE_URL_VARIABLE,
    FilesystemSettings,
    StorageSettings,
    read_storage_settings,
)
from service.storage.base import validate_key
from service.storage.filesystem import FilesystemStore
from service.storage.s3 import S3Store

if TYPE_CHECKING:
    from service.config.env import Env
    from service.storage.base import ObjectStore


def store_for(settings: StorageSettings) -> ObjectStore:
    """The store ``settings`` describe (nothing is contacted yet)."""
    if isinstance(settings, FilesystemSettings):
        return FilesystemStore(settings.root)
    if settings.prefix:
        try:
            validate_key(settings.prefix)
        except ValueError as exc:
            raise ConfigError(STORAGE_URL_VARIABLE, f"invalid prefix in "
                              f"s3://{settings.bucket}/{settings.prefix}: {exc}") from None
    return S3Store(settings.bucket, settings.prefix, region=settings.region,
                   access_key_id=settings.access_key_id,
                   secret_access_key=settings.secret_access_key,
                   session_token=settings.session_token, endpoint_url=settings.endpoint_url)


def open_store(url: str, env: Env) -> ObjectStore:
    """The store that ``url`` (an ``ARCHIVE_STORAGE_URL`` value) and ``env`` name."""
    return store_for(read_storage_settings(url, env))
