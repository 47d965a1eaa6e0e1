"""``make bench``: the contenders table (``harness``), then the micro-benchmarks.

    python -m tests.bench.run_all [harness options, e.g. --smoke]
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import tests.bench
from tests.bench import harness


def main() -> int:
    status = harness.main(sys.argv[1:])
    for module in sorted(m.name for m in pkgutil.iter_modules(tests.bench.__path__)):
        if module.startswith("bench_"):
            print(f"\n== {module}", flush=True)
            importlib.import_module(f"tests.bench.{module}").main()
    return status


if __name__ == "__main__":
    sys.exit(main())
