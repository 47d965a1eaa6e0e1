"""What a developer writes in an afternoon: FastAPI + pydantic + aiokafka ``send_and_wait``.

Run by the harness as ``uvicorn tests.bench.contenders.fastapi_pydantic:app`` (uvicorn's
defaults: uvloop and httptools when installed, access log on) with ``BENCH_BOOTSTRAP`` and
``BENCH_TOPIC`` in the environment. acks=all and idempotence, like the gateway.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class Track(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    audio_url: str | None = None
    image_url: str | None = None
    title: str | None = None
    tags: str | None = None
    duration: float | None = None


class CallbackData(BaseModel):
    model_config = ConfigDict(extra="allow")

    callbackType: str  # noqa: N815 - the provider's field name
    task_id: str
    data: list[Track] | None = None


class Callback(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: int
    msg: str | None = None
    data: CallbackData


producer: AIOKafkaProducer | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global producer  # noqa: PLW0603 - the afternoon version: one module-level client
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["BENCH_BOOTSTRAP"], acks="all",
                                enable_idempotence=True)
    await producer.start()
    yield
    await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/callback")
async def callback(body: Callback) -> dict[str, str]:
    assert producer is not None  # started by the lifespan
    await producer.send_and_wait(os.environ["BENCH_TOPIC"], body.model_dump_json().encode(),
                                 key=body.data.task_id.encode())
    return {"status": "received"}
