"""schemathesis against the live gateway and the real broker: no 500, every answer documented."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.config.env import Env
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.kafka_broker import KafkaBroker, run_async
from tests.support import free_port
from tests.support_kafka import gateway_config, gateway_env
from tests.support_process import REPO, ServiceProcess

SCHEMA = schemathesis.openapi.from_path(REPO / "schemas" / "gateway.openapi.json").include(
    path="/callbacks/extend-music",
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def live_gateway(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[str]:
    http_port, admin_port = free_port(), free_port()
    env = gateway_env(kafka_broker.bootstrap_servers, AUTH_MODE="verify", CALLBACK_TOKENS=TOKEN,
                      HTTP_PORT=str(http_port), ADMIN_PORT=str(admin_port),
                      HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1", MAX_IN_FLIGHT="10000")
    run_async(lambda: ensure_topics(gateway_config(env).kafka, project_topics(Env(env))))
    log_dir: Path = tmp_path_factory.mktemp("openapi")
    with ServiceProcess(["gateway"], env, log_dir) as gateway:
        gateway.wait_ready(admin_port)
        yield f"http://127.0.0.1:{http_port}"
        assert '"status":500' not in gateway.output()


@pytest.mark.kafka
@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_conforms_to_its_openapi_document(case: Case[Any], live_gateway: str) -> None:
    case.query = {**(case.query or {}), "token": TOKEN}
    case.call_and_validate(base_url=live_gateway, checks=CHECKS)
