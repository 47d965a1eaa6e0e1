"""Settings of the local stack (``python -m service dev``, what ``make run`` starts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.config import archiver, gateway, metrics_consumer, reconciler
from service.config.env import Env


@dataclass(frozen=True)
class DevStackSettings:
    #: Relative to the working directory (the checkout for make run), never inside an install.
    data_dir: Path = Path(".dev-data")
    #: None: start the embedded Tansu broker; else the cluster to use instead.
    bootstrap_servers: str | None = None
    #: Tansu's loopback port; 0 for a free one.
    broker_port: int = 0
    http_port: int = gateway.GatewayConfig.http_port
    gateway_admin_port: int = gateway.DEFAULT_ADMIN_PORT
    archiver_admin_port: int = archiver.DEFAULT_ADMIN_PORT
    metrics_admin_port: int = metrics_consumer.DEFAULT_ADMIN_PORT
    reconciler_admin_port: int = reconciler.DEFAULT_ADMIN_PORT
    #: The reconciler runs only with a provider key: without one it has no one to ask.
    start_reconciler: bool = False

    @classmethod
    def from_env(cls, env: Env) -> DevStackSettings:
        return cls(
            data_dir=Path(env.text("DEV_DATA_DIR", str(cls.data_dir))).resolve(),
            bootstrap_servers=env.optional_text("KAFKA_BOOTSTRAP_SERVERS"),
            broker_port=env.port("DEV_BROKER_PORT", cls.broker_port),
            http_port=env.port("HTTP_PORT", cls.http_port),
            gateway_admin_port=env.port("DEV_GATEWAY_ADMIN_PORT", cls.gateway_admin_port),
            archiver_admin_port=env.port("DEV_ARCHIVER_ADMIN_PORT", cls.archiver_admin_port),
            metrics_admin_port=env.port("DEV_METRICS_ADMIN_PORT", cls.metrics_admin_port),
            reconciler_admin_port=env.port("DEV_RECONCILER_ADMIN_PORT",
                                           cls.reconciler_admin_port),
            start_reconciler=(env.raw("PROVIDER_API_KEY") is not None
                              or env.raw("PROVIDER_API_KEY_FILE") is not None),
        )
