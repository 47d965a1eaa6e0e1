"""Kafka settings composed into every process: the client (every process), the producer
(every process that publishes) and the record size that follows ``MAX_BODY_BYTES``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import codec
from aiokafka.helpers import create_ssl_context

from service.config.env import ConfigError, Env

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSION_TYPES: Final = ("none", "gzip", "snappy", "lz4", "zstd")
# aiokafka compresses snappy, lz4 and zstd with cramjam (a dependency of this project);
# asking before start-up turns a missing library into a named error, not a producer
# that never connects.
_CODEC_AVAILABLE: Final = {"snappy": "has_snappy", "lz4": "has_lz4", "zstd": "has_zstd",
                           "gzip": "has_gzip"}


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_file: str | None = None
    client_id: str = "music-callback-gateway"

    @classmethod
    def from_env(cls, env: Env, *, client_id: str) -> KafkaSettings:
        bootstrap = env.optional_text("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap is None:
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS", "is required (host:port[,host:port])")
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    "KAFKA_BOOTSTRAP_SERVERS", f"expected host:port entries, got {server!r}",
                )
        protocol = env.choice("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS)
        mechanism = env.optional_text("KAFKA_SASL_MECHANISM")
        username = env.optional_text("KAFKA_SASL_USERNAME")
        password = env.secret("KAFKA_SASL_PASSWORD")
        if protocol.startswith("SASL_"):
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    "KAFKA_SASL_MECHANISM",
                    f"required with {protocol}: one of {', '.join(SASL_MECHANISMS)}",
                )
            if username is None:
                raise ConfigError("KAFKA_SASL_USERNAME", f"required with {protocol}")
            if password is None:
                raise ConfigError("KAFKA_SASL_PASSWORD", f"required with {protocol}")
        ca_file = env.optional_text("KAFKA_SSL_CA_FILE")
        settings = cls(
            bootstrap_servers=bootstrap,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_ca_file=ca_file,
            client_id=client_id,
        )
        if protocol in ("SSL", "SASL_SSL"):
            settings._ssl_context()  # an unreadable CA file fails start-up, naming the variable
        return settings

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context: ssl.SSLContext = create_ssl_context(cafile=self.ssl_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "KAFKA_SSL_CA_FILE", f"cannot load {self.ssl_ca_file!r}: {exc}",
            ) from exc
        return context


def read_compression_type(env: Env) -> str:
    """``KAFKA_COMPRESSION_TYPE``, refused at start-up when its codec library is missing."""
    compression = env.choice("KAFKA_COMPRESSION_TYPE", ProducerSettings.compression_type,
                             COMPRESSION_TYPES)
    available = _CODEC_AVAILABLE.get(compression)
    if available is not None and not getattr(codec, available)():
        raise ConfigError(
            "KAFKA_COMPRESSION_TYPE",
            f"{compression} needs the cramjam package, which is not installed "
            "(pip install cramjam, or choose gzip or none)",
        )
    return compression


@dataclass(frozen=True)
class ProducerSettings:
    """How every process that publishes configures its producer (acks=all always)."""

    enable_idempotence: bool = True
    # zstd: the best ratio of the codecs Kafka has had since 2.1, and cheap: aiokafka's
    # gzip runs Python's gzip module at level 9 on every batch, which cost the gateway
    # about a tenth of its CPU per request (make bench); gzip stays a choice for consumers
    # that cannot read zstd.
    compression_type: str = "zstd"
    max_request_size: int = 1024 * 1024
    linger_ms: int = 0
    request_timeout_ms: int = 30_000

    @classmethod
    def from_env(cls, env: Env, *, max_request_size: int | None = None) -> ProducerSettings:
        """``max_request_size``: the largest record the process produces, when it is not
        the default (the gateway's follows ``MAX_BODY_BYTES``: ``max_record_bytes``)."""
        return cls(
            enable_idempotence=env.flag("KAFKA_ENABLE_IDEMPOTENCE", cls.enable_idempotence),
            compression_type=read_compression_type(env),
            max_request_size=cls.max_request_size if max_request_size is None
            else max_request_size,
            linger_ms=env.integer("KAFKA_LINGER_MS", cls.linger_ms, minimum=0, maximum=1000),
        )


def max_record_bytes(max_body_bytes: int) -> int:
    """Largest record the gateway may produce for a body of ``max_body_bytes``.

    An event carries the body twice (``raw`` and the track fields copied from it)
    plus JSON re-escaping and headers; four times the body and 64 KiB of slack
    bounds it. Producer ``max_request_size`` and topic ``max.message.bytes`` both
    use this figure so the largest accepted body always fits.
    """
    return max(1024 * 1024, 4 * max_body_bytes + 64 * 1024)


DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024


def read_max_body_bytes(env: Env) -> int:
    """``MAX_BODY_BYTES``: the gateway's largest body; topic and producer sizes follow it."""
    return env.integer("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024,
                       maximum=16 * 1024 * 1024)
