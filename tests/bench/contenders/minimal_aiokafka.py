"""The minimal prototype: aiohttp + orjson + aiokafka ``send_and_wait`` (acks=all, idempotent).

No validation, no verification, no logging: parse, key by task id, publish the body as it
came, answer 200 once the broker acknowledged it.

    python tests/bench/contenders/minimal_aiokafka.py PORT BOOTSTRAP TOPIC
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

PRODUCER: web.AppKey[AIOKafkaProducer] = web.AppKey("producer", AIOKafkaProducer)
TOPIC: web.AppKey[str] = web.AppKey("topic", str)


async def callback(request: web.Request) -> web.Response:
    body = await request.read()
    task_id = orjson.loads(body)["data"]["task_id"]
    await request.app[PRODUCER].send_and_wait(request.app[TOPIC], body, key=task_id.encode())
    return web.Response(body=orjson.dumps({"status": "received"}),
                        content_type="application/json")


def main() -> None:
    port, bootstrap, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        app[PRODUCER] = producer
        yield
        await producer.stop()

    app = web.Application()
    app[TOPIC] = topic
    app.cleanup_ctx.append(producer_ctx)
    app.router.add_post("/callback", callback)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
