"""Typed reading of environment variables, each error naming the variable.

Configuration is read once at start-up (12-factor). Every reader raises
``ConfigError`` whose message starts with the variable's name, so a bad
deployment fails fast and says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Env:
    """Reads variables from a mapping (``os.environ`` by default, a dict in tests)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def names(self, prefix: str) -> list[str]:
        """The set variables whose names start with ``prefix`` (to refuse misspelt ones)."""
        return sorted(name for name in self._environ
                      if name.startswith(prefix) and self.raw(name) is not None)

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional_text(self, name: str) -> str | None:
        return self.raw(name)

    def secret(self, name: str) -> str | None:
        """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Kubernetes/Docker)."""
        direct = self.raw(name)
        file_name = self.raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise ConfigError(name, f"set either {name} or {name}_FILE, not both")
        if file_name is None:
            return direct
        try:
            content = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", f"cannot read {file_name!r}: {exc.strerror}") from exc
        if not content:
            raise ConfigError(f"{name}_FILE", f"{file_name!r} is empty")
        return content

    def secret_list(self, name: str) -> tuple[str, ...]:
        value = self.secret(name)
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def text_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, f"expected true or false, got {value!r}")

    def integer(self, name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        return _bounded(name, self.raw(name), default, int, minimum=minimum, maximum=maximum)

    def number(self, name: str, default: float, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
        return _bounded(name, self.raw(name), default, float, minimum=minimum, maximum=maximum)

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=0, maximum=65535)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def _bounded(name: str, value: str | None, default: T, parse: Callable[[str], T],
             *, minimum: T | None, maximum: T | None) -> T:
    if value is None:
        return default
    try:
        number = parse(value)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {value!r}") from None
    if number != number:  # noqa: PLR0124 - NaN is never a valid setting
        raise ConfigError(name, f"expected a number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and number > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return number
