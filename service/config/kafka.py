"""Kafka client settings shared by every process (producer and consumers)."""

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
    compression = env.choice("KAFKA_COMPRESSION_TYPE", "gzip", COMPRESSION_TYPES)
    available = _CODEC_AVAILABLE.get(compression)
    if available is not None and not getattr(codec, available)():
        raise ConfigError(
            "KAFKA_COMPRESSION_TYPE",
            f"{compression} needs the cramjam package, which is not installed "
            "(pip install cramjam, or choose gzip or none)",
        )
    return compression


def max_record_bytes(max_body_bytes: int) -> int:
    """Largest record the gateway may produce for a body of ``max_body_bytes``.

    An event carries the body twice (``raw`` and the track fields copied from it)
    plus JSON re-escaping and headers; four times the body and 64 KiB of slack
    bounds it. Producer ``max_request_size`` and topic ``max.message.bytes`` both
    use this figure so the largest accepted body always fits.
    """
    return max(1024 * 1024, 4 * max_body_bytes + 64 * 1024)
