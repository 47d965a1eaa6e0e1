"""``deploy/nginx/callbacks.conf`` passes ``nginx -t`` and keeps ``?token=`` out of its logs.

nginx is Debian's binary, unpacked (not installed) by ``make fetch-deploy-tools``. The
certificate is a throwaway self-signed one made in the test's temporary directory, and
nginx listens on loopback ports only.
"""

from __future__ import annotations

import http.server
import re
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.deployment import DEPLOY, tool
from tests.harness.loopback import free_port

CONF = DEPLOY / "nginx" / "callbacks.conf"
TOKEN = "tok-must-not-be-logged-0123456789"


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # the gateway's answer, minus the gateway
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"status": "received"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def localized(tmp: Path, https_port: int, http_port: int, upstream_port: int) -> Path:
    """The shipped server blocks, wrapped in a minimal nginx.conf, moved to loopback and tmp."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=callbacks.example.com", "-keyout", str(tmp / "tls.key"),
         "-out", str(tmp / "tls.crt")], check=True, capture_output=True, timeout=60)
    conf = CONF.read_text(encoding="utf-8")
    replacements = {
        r"ssl_certificate\s+\S+;": f"ssl_certificate {tmp / 'tls.crt'};",
        r"ssl_certificate_key\s+\S+;": f"ssl_certificate_key {tmp / 'tls.key'};",
        r"access_log /var/log/nginx/\S+": f"access_log {tmp / 'access.log'}",
        r"listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        r"listen 80;": f"listen 127.0.0.1:{http_port};",
        r"server 127\.0\.0\.1:8080;": f"server 127.0.0.1:{upstream_port};",
    }
    for pattern, replacement in replacements.items():
        conf, count = re.subn(pattern, replacement, conf)
        assert count == (2 if "access_log" in pattern else 1), pattern
    (tmp / "callbacks.conf").write_text(conf)
    main = tmp / "nginx.conf"
    temp_paths = "\n".join(f"    {name}_temp_path {tmp / name};"
                           for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main.write_text(f"""
pid {tmp / 'nginx.pid'};
error_log {tmp / 'error.log'} warn;
events {{}}
http {{
    access_log {tmp / 'other-servers.log'};
{temp_paths}
    include {tmp / 'callbacks.conf'};
}}
""")
    return main


def test_the_config_passes_nginx_t_with_a_certificate(tmp_path: Path) -> None:
    main = localized(tmp_path, free_port(), free_port(), 8080)
    result = subprocess.run([tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(main)],
                            capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_callbacks_are_proxied_and_the_token_never_reaches_the_access_log(
    tmp_path: Path, upstream: int,
) -> None:
    https_port, http_port = free_port(), free_port()
    main = localized(tmp_path, https_port, http_port, upstream)
    nginx = subprocess.Popen(
        [tool("nginx"), "-p", str(tmp_path), "-c", str(main),
         "-g", "daemon off; master_process off;"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the throwaway self-signed certificate
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                request = urllib.request.Request(
                    f"https://127.0.0.1:{https_port}/callbacks/extend-music?token={TOKEN}",
                    data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310 - https to loopback
                    assert response.status == 200
                break
            except OSError:
                assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        for path in ("/metrics", "/readyz", "/"):
            request = urllib.request.Request(f"https://127.0.0.1:{https_port}{path}")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5, context=context)  # noqa: S310
            assert refused.value.code == 404
    finally:
        nginx.terminate()
        nginx.wait(10)
    log = (tmp_path / "access.log").read_text()
    assert '"POST /callbacks/extend-music HTTP/1.1" 200' in log
    assert TOKEN not in log
    assert "token" not in log
