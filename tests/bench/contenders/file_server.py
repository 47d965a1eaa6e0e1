"""A loopback file server standing in for the provider's CDN in the archiver benchmark.

Every ``*.mp3`` path answers the same 8 KiB ``audio/mpeg`` body, every other path a
2 KiB ``image/jpeg`` one.

    python -m tests.bench.contenders.file_server PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

AUDIO = bytes(range(256)) * 32
COVER = bytes(range(256)) * 8


async def serve_file(request: web.Request) -> web.Response:
    if request.path.endswith(".mp3"):
        return web.Response(body=AUDIO, content_type="audio/mpeg")
    return web.Response(body=COVER, content_type="image/jpeg")


def main() -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", serve_file)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
