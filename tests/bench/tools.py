"""The benchmark's own toolchain, built or installed into ``.cache/bench`` (git-ignored).

* ``wrk`` (closed-loop maximum) is a Debian package: ``make bench`` installs it with apt-get
  when it is missing and the user is root. Without it the harness measures the closed loop
  with its own load generator instead, and says so in the output.
* ``loadgen`` (open loop, constant arrival rate) is the Go program in ``loadgen/``; it has no
  dependencies beyond Go's standard library and is rebuilt when its source changes.
* The Express contender's ``node_modules`` comes from ``npm ci`` against the committed lock
  file, in a copy of ``contenders/express`` under the cache.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Final

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parents[1]
CACHE: Final = REPO / ".cache" / "bench"
LOADGEN_SOURCE: Final = BENCH_DIR / "loadgen"
EXPRESS_SOURCE: Final = BENCH_DIR / "contenders" / "express"
_GO_FALLBACK: Final = Path("/usr/local/go/bin/go")  # where the Go tarball installs itself


class ToolError(RuntimeError):
    """A tool the benchmark needs could not be built or installed (message says which)."""


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolError(f"{' '.join(command)} failed ({result.returncode}):\n"
                        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def wrk() -> str | None:
    """Path of ``wrk`` if installed (``make bench-tools`` installs it)."""
    return shutil.which("wrk")


def loadgen() -> Path:
    """Build (when its source changed) and return the open-loop load generator."""
    go = shutil.which("go") or (str(_GO_FALLBACK) if _GO_FALLBACK.is_file() else None)
    if go is None:
        raise ToolError("Go is needed to build tests/bench/loadgen (go not on PATH)")
    sources = [*sorted(LOADGEN_SOURCE.glob("*.go")), LOADGEN_SOURCE / "go.mod"]
    binary = CACHE / f"loadgen-{_digest(*sources)}"
    if not binary.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        _run([go, "build", "-o", str(binary), "."], LOADGEN_SOURCE)
    return binary


def express_app() -> Path:
    """A folder with the Express receiver and its locked ``node_modules`` (npm ci, once)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ToolError("Node.js and npm are needed for the Express contender")
    files = [EXPRESS_SOURCE / n for n in ("package.json", "package-lock.json", "server.js")]
    target = CACHE / f"express-{_digest(*files)}"
    if not (target / "node_modules" / "express").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in files:
            shutil.copy2(file, target / file.name)
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], target)
    return target


def main() -> None:
    """Prepare everything ahead of a run (``make fetch-services`` does, so tests don't wait)."""
    print(f"loadgen: {loadgen()}")
    print(f"express: {express_app()}")
    print(f"wrk: {wrk() or 'not installed (make bench-tools); the loadgen measures instead'}")


if __name__ == "__main__":
    main()
