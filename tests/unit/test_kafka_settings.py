"""Kafka settings that cannot work stop start-up, naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import codec

from service.config.env import ConfigError, Env
from service.config.kafka import KafkaSettings, read_compression_type


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_compression_type_is_usable_out_of_the_box(compression: str) -> None:
    assert read_compression_type(Env({"KAFKA_COMPRESSION_TYPE": compression})) == compression


@pytest.mark.parametrize(("compression", "check"), [
    ("zstd", "has_zstd"), ("lz4", "has_lz4"), ("snappy", "has_snappy")])
def test_a_codec_without_its_library_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, compression: str, check: str,
) -> None:
    monkeypatch.setattr(codec, check, lambda: False)  # as without cramjam installed
    with pytest.raises(ConfigError, match=rf"^KAFKA_COMPRESSION_TYPE: {compression} needs "
                                          "the cramjam package") as raised:
        read_compression_type(Env({"KAFKA_COMPRESSION_TYPE": compression}))
    assert raised.value.name == "KAFKA_COMPRESSION_TYPE"


def test_an_unreadable_ca_file_stops_start_up(tmp_path: Path) -> None:
    env = Env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_SECURITY_PROTOCOL": "SSL",
               "KAFKA_SSL_CA_FILE": str(tmp_path / "missing-ca.pem")})
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CA_FILE: cannot load"):
        KafkaSettings.from_env(env, client_id="test")


def test_a_readable_ca_file_is_accepted(tmp_path: Path) -> None:
    env = Env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_SECURITY_PROTOCOL": "SSL"})
    settings = KafkaSettings.from_env(env, client_id="test")  # system CAs
    assert settings.client_kwargs()["ssl_context"] is not None
