"""``make bench``: every benchmark, one after the other (figures go in the README)."""

from __future__ import annotations

import importlib
import pkgutil

import tests.bench


def main() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(tests.bench.__path__)):
        if module.startswith("bench_"):
            print(f"\n== {module}", flush=True)
            importlib.import_module(f"tests.bench.{module}").main()


if __name__ == "__main__":
    main()
