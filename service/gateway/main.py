"""``python -m service gateway``: the callback port and the admin port in one process."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry

from service.config.gateway import GatewayConfig
from service.gateway.app import DURABLE_KEY, create_app
from service.runtime import Listener, ShutdownFlag, admin_listener, serve

log = structlog.get_logger(__name__)


async def run_gateway(config: GatewayConfig) -> None:
    if config.security.auth_mode == "none":
        log.warning("auth_disabled", detail="AUTH_MODE=none: callbacks are not verified; "
                    "never run this way on a public address")
    log.info("gateway_starting", schemes=[str(s) for s in config.security.schemes],
             events_topic=config.topics.events, rejected_topic=config.topics.rejected)
    registry = CollectorRegistry()
    app = create_app(config, registry=registry)
    shutdown = ShutdownFlag()
    shutdown.install()

    # Ready while the broker, or else the spool, can keep records.
    checks = {"durable": app[DURABLE_KEY].check}
    await serve(
        [
            Listener(app, config.http_host, config.http_port, "callbacks"),
            admin_listener(config.process, registry, shutdown, checks),
        ],
        shutdown=shutdown,
        shutdown_timeout=config.process.shutdown_timeout_seconds,
    )
