"""schemathesis against the live gateway and the real broker, on a route of every provider
shape and on POST /tasks: no 500, every answer documented."""

from __future__ import annotations

import re
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
from service.core.kinds import KINDS, kind_named
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.kafka_broker import KafkaBroker, run_async
from tests.harness.loopback import free_port
from tests.harness.paths import REPO
from tests.harness.processes import ServiceProcess

DOCUMENT = schemathesis.openapi.from_path(REPO / "schemas" / "gateway.openapi.json")
EXTEND_MUSIC = kind_named("extend-music")
# One route per provider shape: the track family's other eight routes differ from
# extend-music only by name (all fifteen are posted to in test_gateway_kinds.py), and
# 60 examples on each of fifteen routes took three minutes on the shared machine.
SHAPES = DOCUMENT.include(path_regex="^(" + "|".join(
    re.escape(kind.route) for kind in KINDS if kind.schema != EXTEND_MUSIC.schema) + ")$")
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


def call_and_validate(case: Case[Any], live_gateway: str) -> None:
    case.query = {**(case.query or {}), "token": TOKEN}
    case.call_and_validate(base_url=live_gateway, checks=CHECKS)


@pytest.mark.kafka
@DOCUMENT.include(path=EXTEND_MUSIC.route).parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_conforms_to_its_openapi_document(case: Case[Any], live_gateway: str) -> None:
    call_and_validate(case, live_gateway)


@pytest.mark.kafka
@SHAPES.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_other_callback_shape_conforms_to_the_document(
    case: Case[Any], live_gateway: str,
) -> None:
    call_and_validate(case, live_gateway)


@pytest.mark.kafka
@DOCUMENT.include(path="/tasks").parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_post_tasks_conforms_to_the_document(case: Case[Any], live_gateway: str) -> None:
    call_and_validate(case, live_gateway)
