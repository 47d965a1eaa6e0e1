"""The provider documentation's Flask receiver, run under Flask's development server as the
documentation shows (``app.run``, threaded, one line per request from werkzeug, its prints).

Two changes, both for the benchmark's safety: it binds 127.0.0.1 on the port given instead
of 0.0.0.0:3000, and the "Download audio file example" block is left out, because it would
fetch every ``audio_url`` from the internet (benchmark traffic stays on loopback).

    python tests/bench/contenders/flask_receiver.py PORT
"""

from __future__ import annotations

import sys

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.route("/extend-music-callback", methods=["POST"])
def handle_callback() -> tuple[Response, int]:
    data = request.json
    assert isinstance(data, dict)  # the documentation's code assumes an object
    code = data.get("code")
    msg = data.get("msg")
    callback_data = data.get("data", {})
    task_id = callback_data.get("task_id")
    callback_type = callback_data.get("callbackType")
    music_data = callback_data.get("data", [])

    print(f"Received music extension callback: {task_id}, type: {callback_type}, "
          f"status: {code}, message: {msg}")

    if code == 200:
        print("Music extension completed")
        print(f"Extended {len(music_data)} music tracks:")
        for i, music in enumerate(music_data):
            print(f"Music {i + 1}:")
            print(f"  Title: {music.get('title')}")
            print(f"  Duration: {music.get('duration')} seconds")
            print(f"  Audio URL: {music.get('audio_url')}")
            print(f"  Cover URL: {music.get('image_url')}")
    else:
        print(f"Music extension failed: {msg}")
        if code == 400:
            print("Parameter error or content violation")
        elif code == 451:
            print("File download failed")
        elif code == 500:
            print("Server internal error")

    return jsonify({"status": "received"}), 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
