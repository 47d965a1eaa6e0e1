"""A non-editable install of the wheel, outside the checkout, serves the documented example.

What the image does, minus the container: the locked dependencies (hash-checked) and the
wheel built from the repository go into a fresh virtualenv in a temporary directory; the
installed ``python -m service`` creates the topics and runs the gateway (zstd compression)
against the harness's Kafka broker, and the provider's documented callback gets its 200.
Offline: the wheels come from ``.cache/wheels`` (``make fetch-deploy-tools``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.harness.environments import gateway_env
from tests.harness.examples import example
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import read_records
from tests.harness.loopback import free_port
from tests.harness.paths import REPO
from tests.harness.processes import ServiceProcess

WHEELS = REPO / ".cache" / "wheels"
# What the Dockerfile copies into its build stage.
SOURCES = ("pyproject.toml", "README.md", "schemas", "service")


def run(*command: str | Path, cwd: Path) -> str:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env,
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(tmp: Path) -> Path:
    """From a copy of what the image copies: no stale build/ of the checkout gets in."""
    source = tmp / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
        "--find-links", WHEELS, "--wheel-dir", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


@pytest.mark.kafka
async def test_the_installed_wheel_serves_the_documented_example(
    kafka_broker: KafkaBroker, tmp_path: Path,
) -> None:
    assert any(WHEELS.glob("*.whl")), "run `make fetch-deploy-tools` (make test does)"
    wheel = await asyncio.to_thread(build_wheel, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packaged = {Path(name).name for name in archive.namelist()
                    if name.startswith("service/contracts/schemas/")}
    assert packaged == {path.name for path in (REPO / "schemas").iterdir()}

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    await asyncio.to_thread(run, sys.executable, "-m", "venv", venv, cwd=tmp_path)
    offline = ("--quiet", "--no-index", "--find-links", str(WHEELS))
    await asyncio.to_thread(run, python, "-m", "pip", "install", *offline, "--require-hashes",
                            "--no-deps", "-r", REPO / "deploy" / "requirements.lock",
                            cwd=tmp_path)
    await asyncio.to_thread(run, python, "-m", "pip", "install", *offline, "--no-deps", wheel,
                            cwd=tmp_path)
    location = await asyncio.to_thread(
        run, python, "-c", "import service.contracts.registry as c; print(c.SCHEMAS_DIR)",
        cwd=tmp_path)
    assert Path(location.strip()).is_relative_to(venv), location
    assert not Path(location.strip()).is_relative_to(REPO)

    http_port, admin_port = free_port(), free_port()
    env = gateway_env(kafka_broker.bootstrap_servers, HTTP_PORT=str(http_port),
                      ADMIN_PORT=str(admin_port), HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1",
                      KAFKA_COMPRESSION_TYPE="zstd")
    workdir = tmp_path / "run"
    workdir.mkdir()
    topics = ServiceProcess(["topics", "ensure"], env, tmp_path, python=python, cwd=workdir)
    with topics:
        assert await asyncio.to_thread(topics.wait, 60) == 0, topics.output()
    callback = example("documented-complete.json")
    with ServiceProcess(["gateway"], env, tmp_path, python=python, cwd=workdir) as gateway:
        await asyncio.to_thread(gateway.wait_ready, admin_port)
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{http_port}/callbacks/extend-music", data=orjson.dumps(callback),
        ) as response:
            assert response.status == 200, await response.text()
            event_id = (await response.json())["event_id"]
    records = await read_records(kafka_broker.bootstrap_servers, env["EVENTS_TOPIC"], expect=1)
    assert [orjson.loads(record.value)["event_id"] for record in records] == [event_id]
