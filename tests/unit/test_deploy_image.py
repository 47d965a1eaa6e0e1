"""The image recipe: hadolint-clean, multi-stage, pinned, locked, non-root, no pip at run time.

There is no container engine on the development machine or in CI, so the image itself is
not built here; what it runs (the locked dependencies and the wheel, installed into a
fresh virtualenv) is exercised by tests/integration/test_wheel_install.py.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.harness.deployment import DEPLOY
from tests.harness.paths import REPO

DOCKERFILE = DEPLOY / "Dockerfile"
LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "requirements-build.lock"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def pinned(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock file."""
    text = re.sub(r"\\\n", " ", lock.read_text(encoding="utf-8"))
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s*(.*)$", line)
        if match:
            found[match[1].lower().replace("_", "-")] = (match[2],
                                                         match[3].count("--hash=sha256:"))
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([HADOLINT, "--no-color", DOCKERFILE], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_is_pinned_by_digest_and_the_final_stage_runs_as_non_root() -> None:
    (arg,) = [a for keyword, a in instructions() if keyword == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+[-\w.]*@sha256:[0-9a-f]{64}", arg)
    build, final = stages()
    assert build[0][1] == "${PYTHON_IMAGE} AS build"
    assert final[0][1] == "${PYTHON_IMAGE}"
    users = [a for keyword, a in final if keyword == "USER"]
    assert users == ["10001:10001"]
    assert [a for keyword, a in final if keyword == "ENTRYPOINT"] == ['["python", "-m", "service"]']


def test_the_final_stage_has_no_pip_and_installs_nothing() -> None:
    build, final = stages()
    runs = " ".join(a for keyword, a in final if keyword == "RUN")
    assert "pip uninstall --yes pip" in runs
    assert "pip install" not in runs
    assert "/opt/venv/bin/pip uninstall --yes pip" in " ".join(a for k, a in build if k == "RUN")
    copies = [a for keyword, a in final if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_dependencies_come_from_the_lock_with_hashes() -> None:
    build, _ = stages()
    runs = " ".join(a for keyword, a in build if keyword == "RUN")
    assert "--require-hashes --no-deps -r deploy/requirements.lock" in runs
    assert "--require-hashes --no-deps -r deploy/requirements-build.lock" in runs
    assert "--no-build-isolation" in runs  # the wheel is built with the locked setuptools


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                keep = negated
        return keep

    for keyword, arguments in instructions():
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert included(source), f"{source} is excluded by .dockerignore"
    assert not included("tests/conftest.py")
    assert not included(".venv/bin/python")


def test_the_lock_pins_every_dependency_of_the_project_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    lock = pinned(LOCK)
    for requirement in map(Requirement, project["project"]["dependencies"]):
        name = requirement.name.lower().replace("_", "-")
        assert name in lock, f"{name} is not in {LOCK.name}: run make lock"
        version, hashes = lock[name]
        assert requirement.specifier.contains(version), f"{name}=={version}: run make lock"
    assert all(hashes > 0 for _, hashes in lock.values())
    build_lock = pinned(BUILD_LOCK)
    for requirement in map(Requirement, project["build-system"]["requires"]):
        version, hashes = build_lock[requirement.name.lower()]
        assert requirement.specifier.contains(version)
        assert hashes > 0
    assert "--find-links" not in LOCK.read_text() + BUILD_LOCK.read_text()
