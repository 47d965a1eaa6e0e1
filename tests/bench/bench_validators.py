"""Validator choice by measurement: jsonschema-rs vs fastjsonschema vs msgspec (decode+check).

    python -m tests.bench.bench_validators
"""

from __future__ import annotations

import timeit
from typing import Any

import fastjsonschema
import jsonschema_rs
import msgspec
import orjson

from service.contracts.registry import SCHEMAS_DIR
from service.core.kinds import kind_named
from tests.harness.examples import example_bytes


class Track(msgspec.Struct, forbid_unknown_fields=False):
    id: str | None = None
    audio_url: str | None = None
    title: str | None = None
    tags: str | None = None
    createTime: str | int | None = None  # noqa: N815 - the provider's field name
    duration: float | None = None


class Data(msgspec.Struct, forbid_unknown_fields=False):
    callbackType: str  # noqa: N815 - the provider's field name
    task_id: str | None = None
    data: list[Track] | None = None


class Callback(msgspec.Struct, forbid_unknown_fields=False):
    code: int
    data: Data
    msg: str | None = None


def main() -> None:
    schema: dict[str, Any] = orjson.loads(
        (SCHEMAS_DIR / f"{kind_named('extend-music').schema}.schema.json").read_bytes())
    body = example_bytes("real-first-partial.json")
    rs = jsonschema_rs.validator_for(schema)
    fast = fastjsonschema.compile(schema)
    decoder = msgspec.json.Decoder(Callback)
    runs = 20_000
    cases = {
        "orjson.loads only (baseline)": lambda: orjson.loads(body),
        "orjson + jsonschema-rs": lambda: rs.is_valid(orjson.loads(body)),
        "orjson + fastjsonschema": lambda: fast(orjson.loads(body)),
        "msgspec typed decode (no JSON Schema)": lambda: decoder.decode(body),
    }
    print(f"validating a {len(body)}-byte callback, {runs} runs each")
    for name, run in cases.items():
        seconds = min(timeit.repeat(run, number=runs, repeat=3))
        print(f"  {name:<40} {seconds / runs * 1e6:7.2f} us/op")


if __name__ == "__main__":
    main()
