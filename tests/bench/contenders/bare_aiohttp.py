"""The ceiling: an aiohttp handler that reads the body and answers 200, nothing else.

    python tests/bench/contenders/bare_aiohttp.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

ANSWER = b'{"status":"received"}'


async def callback(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/callback", callback)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
