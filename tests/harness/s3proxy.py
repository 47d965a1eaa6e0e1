"""A real S3-compatible server for tests: S3Proxy with its in-memory (``transient``) backend.

S3Proxy (``org.gaul:s3proxy``) is published on Maven Central with a runnable shaded jar
(classifier ``jar-with-dependencies``, ``Main-Class: org.gaul.s3proxy.Main``), so fetching
it is a single ``mvn dependency:copy`` into ``<repo>/.cache/s3proxy-<version>/`` and
starting it is ``java -jar <jar> --properties <file>``.

The server checks AWS signatures (``s3proxy.authorization=aws-v2-or-v4``) against an
identity and credential generated per server with :mod:`secrets`. Neither obstore nor
the service can create buckets, so :meth:`S3ProxyServer.create_bucket` sends a PUT Bucket
request signed with the minimal Signature Version 4 implementation below (test code only).

``python -m tests.harness.s3proxy fetch`` only downloads the jar (to warm the cache).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING
from xml.etree import ElementTree

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

S3PROXY_GROUP = "org.gaul"
S3PROXY_ARTIFACT = "s3proxy"
S3PROXY_VERSION = "4.1.0"  # latest release on Maven Central when this was written
S3PROXY_CLASSIFIER = "jar-with-dependencies"

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache"
HOST = "127.0.0.1"
REGION = "us-east-1"

_FETCH_TIMEOUT_SECONDS = 900.0
_START_TIMEOUT_SECONDS = 90.0
_STOP_TIMEOUT_SECONDS = 15.0
_LOG_TAIL_CHARS = 6000
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# Loopback only: never route requests to the local server through an environment proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class S3ProxyError(RuntimeError):
    """S3Proxy could not be fetched, started, or answered a request with an error."""


# --------------------------------------------------------------------------- fetching


def jar_path(version: str = S3PROXY_VERSION) -> Path:
    """Where the shaded jar of ``version`` lives once fetched."""
    return (CACHE_DIR / f"s3proxy-{version}"
            / f"{S3PROXY_ARTIFACT}-{version}-{S3PROXY_CLASSIFIER}.jar")


def fetch(version: str = S3PROXY_VERSION) -> Path:
    """Download the shaded S3Proxy jar with Maven unless it is already cached; return its path.

    Idempotent and safe to run concurrently (a lock file serialises fetchers); the jar is
    copied into a temporary directory first and renamed into place, so an interrupted
    fetch never leaves a truncated jar under the final name.
    """
    target = jar_path(version)
    if target.is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise S3ProxyError("S3Proxy: 'mvn' is not on PATH; Maven is needed to fetch "
                           f"{S3PROXY_GROUP}:{S3PROXY_ARTIFACT}:{version}")
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / ".fetch.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # another process fetched it while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
        try:
            artifact = f"{S3PROXY_GROUP}:{S3PROXY_ARTIFACT}:{version}:jar:{S3PROXY_CLASSIFIER}"
            command = [mvn, "--batch-mode", "--strict-checksums", "-Dstyle.color=never",
                       "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                       f"-Dartifact={artifact}", f"-DoutputDirectory={staging}",
                       "-Dmdep.overWriteReleases=true"]
            try:
                result = subprocess.run(command, capture_output=True, text=True, check=False,
                                        timeout=_FETCH_TIMEOUT_SECONDS, cwd=staging)
            except subprocess.TimeoutExpired as exc:
                raise S3ProxyError(f"S3Proxy: '{' '.join(command)}' did not finish within "
                                   f"{_FETCH_TIMEOUT_SECONDS:.0f}s") from exc
            fetched = staging / target.name
            if result.returncode != 0 or not fetched.is_file():
                output = (result.stdout + result.stderr)[-_LOG_TAIL_CHARS:]
                raise S3ProxyError(
                    f"S3Proxy: fetching {artifact} failed (exit {result.returncode}):\n"
                    f"$ {' '.join(command)}\n{output}")
            fetched.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- signing


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def sign_v4(method: str, url: str, *, access_key_id: str, secret_access_key: str,
            region: str = REGION, payload_sha256: str = _EMPTY_SHA256,
            headers: Mapping[str, str] | None = None,
            now: dt.datetime | None = None) -> dict[str, str]:
    """Return the headers (incl. ``Authorization``) that sign a path-style S3 request (SigV4).

    Minimal by design: the URL's path must already be percent-encoded as it is sent, and
    its query parameters are sorted and re-encoded here as SigV4 requires.
    """
    parts = urllib.parse.urlsplit(url)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = moment.strftime("%Y%m%d")
    signed = {"host": parts.netloc, "x-amz-content-sha256": payload_sha256,
              "x-amz-date": amz_date}
    signed.update({name.lower(): value.strip() for name, value in (headers or {}).items()})
    names = sorted(signed)
    query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}="
                               f"{urllib.parse.quote(v, safe='-_.~')}" for k, v in query)
    canonical_request = "\n".join([
        method, parts.path or "/", canonical_query,
        "".join(f"{name}:{signed[name]}\n" for name in names),
        ";".join(names), payload_sha256])
    scope = f"{day}/{region}/s3/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_access_key}".encode(), day), region), "s3"),
                "aws4_request")
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    result = {name: value for name, value in signed.items() if name != "host"}
    result["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return result


# --------------------------------------------------------------------------- server


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class S3ProxyServer:
    """One S3Proxy JVM on a free loopback port, in-memory, with per-run credentials."""

    def __init__(self, *, version: str = S3PROXY_VERSION, java: str | None = None,
                 heap: str = "256m") -> None:
        self.version = version
        self._java = java or shutil.which("java") or "java"
        self._heap = heap
        self.region = REGION
        self.access_key_id = "test-" + secrets.token_hex(8)
        self.secret_access_key = secrets.token_urlsafe(30)
        self.port = 0
        self.endpoint_url = ""
        self._workdir: Path | None = None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # ----- lifecycle

    def start(self) -> S3ProxyServer:
        if self._process is not None:
            raise S3ProxyError("S3Proxy: already started")
        jar = fetch(self.version)
        self._workdir = Path(tempfile.mkdtemp(prefix="s3proxy-"))
        for attempt in range(3):
            self.port = _free_loopback_port()
            self.endpoint_url = f"http://{HOST}:{self.port}"
            properties = self._workdir / "s3proxy.properties"
            properties.write_text("\n".join([
                f"s3proxy.endpoint={self.endpoint_url}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={self.access_key_id}",
                f"s3proxy.credential={self.secret_access_key}",
                "jclouds.provider=transient",
                "jclouds.identity=unused",
                "jclouds.credential=unused",
                "",
            ]), encoding="utf-8")
            properties.chmod(0o600)
            log_path = self._workdir / f"s3proxy-{attempt}.log"
            self._log = log_path.open("wb")
            self._process = subprocess.Popen(
                [self._java, f"-Xmx{self._heap}",
                 # logback's start-up chatter would bury the useful lines of the log tail
                 "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener",
                 "-jar", str(jar),
                 "--properties", str(properties)],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                cwd=self._workdir, env={**os.environ, "LOG_LEVEL": "warn"})
            try:
                self._wait_until_answering()
            except S3ProxyError:
                tail = self.log_tail()
                lost_port = "Failed to bind" in tail or "Address already in use" in tail
                self.stop(keep_workdir=True)
                if lost_port and attempt < 2:
                    continue  # another process took the port between probe and bind
                self._cleanup_workdir()
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise S3ProxyError(f"S3Proxy exited with code {code} during start-up; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                # Unsigned: any HTTP answer (403 AccessDenied) proves it serves S3.
                with _OPENER.open(self.endpoint_url + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.2)
        raise S3ProxyError(f"S3Proxy did not answer on {self.endpoint_url} within "
                           f"{_START_TIMEOUT_SECONDS:.0f}s (last error: {last_error}); "
                           f"log tail:\n{self.log_tail()}")

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the server's combined stdout/stderr (for error messages)."""
        if self._log is None:
            return ""
        if not self._log.closed:
            self._log.flush()
        try:
            return Path(self._log.name).read_bytes()[-chars:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, *, keep_workdir: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        if self._log is not None:
            self._log.close()
        if not keep_workdir:
            self._log = None
            self._cleanup_workdir()

    def _cleanup_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> S3ProxyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # ----- signed requests (bucket management; obstore cannot create buckets)

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                body: bytes = b"", headers: Mapping[str, str] | None = None,
                expect: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
        """Send a SigV4-signed request; ``path`` is unencoded (``/bucket/key``)."""
        url = self.endpoint_url + urllib.parse.quote(path, safe="/-_.~")
        if query:
            url += "?" + urllib.parse.urlencode(sorted(query.items()),
                                                quote_via=urllib.parse.quote)
        headers = dict(headers or {})
        if body and not any(name.lower() == "content-type" for name in headers):
            # urllib's default (form-urlencoded) makes Jetty consume the body as a form.
            headers["Content-Type"] = "application/octet-stream"
        signed = sign_v4(method, url, access_key_id=self.access_key_id,
                         secret_access_key=self.secret_access_key, region=self.region,
                         payload_sha256=hashlib.sha256(body).hexdigest(), headers=headers)
        request = urllib.request.Request(url, data=body or None, method=method,  # noqa: S310
                                         headers={**headers, **signed})
        try:
            with _OPENER.open(request, timeout=30) as response:
                status, content = int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            status, content = exc.code, exc.read()
        if status not in expect:
            raise S3ProxyError(f"S3Proxy: {method} {path} answered {status}: "
                               f"{content[:2000].decode('utf-8', 'replace')}")
        return status, content

    def create_bucket(self, name: str) -> None:
        self.request("PUT", f"/{name}")

    def delete_bucket(self, name: str) -> None:
        """Delete every object in ``name`` (pages of up to 1000 keys), then the bucket."""
        while True:
            _, listing = self.request("GET", f"/{name}", query={"list-type": "2"})
            keys = _listed_keys(listing)
            for key in keys:
                self.request("DELETE", f"/{name}/{key}", expect=(200, 204))
            if not keys:
                break
        self.request("DELETE", f"/{name}", expect=(200, 204))

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys (first 1000) under ``prefix`` as the server stores them."""
        _, listing = self.request("GET", f"/{bucket}",
                                  query={"list-type": "2", "prefix": prefix})
        return _listed_keys(listing)


def _listed_keys(listing: bytes) -> list[str]:
    """Keys from a ListObjectsV2 answer of our own local server (trusted XML)."""
    root = ElementTree.fromstring(listing)  # noqa: S314 - our own loopback server's answer
    namespace = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
    return [element.text or "" for element in root.iter(f"{namespace}Key")]


def main(argv: list[str]) -> int:
    if argv == ["fetch"]:
        print(fetch())
        return 0
    print("usage: python -m tests.harness.s3proxy fetch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
