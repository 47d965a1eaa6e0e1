"""The fault suite's instruments: a load generator that records every request and answer,
a verifier that reads the topic afterwards, and an RSS sampler for the gateway.

Every request carries a body of its own (a unique task id), so every 2xx answer has
exactly one expected event: its id, and the bytes it must carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from tests.harness.examples import example
from tests.harness.kafka_records import headers_of, read_records

STAGES = ("text", "first", "complete")


@dataclass(frozen=True, slots=True)
class Answer:
    task_id: str
    body: bytes
    started: float  # monotonic
    latency: float
    status: int | None  # None: no answer (connection refused or reset)
    event_id: str | None = None
    spooled: bool = False


class LoadGenerator:
    """``workers`` clients posting unique callbacks, each pausing ``pause`` s between posts."""

    def __init__(self, url: str, *, name: str, workers: int = 8, pause: float = 0.04,
                 max_requests: int = 20_000, timeout: float = 10.0) -> None:
        self.url = url
        self.name = name
        self.workers = workers
        self.pause = pause
        self.max_requests = max_requests
        self.timeout = timeout
        self.answers: list[Answer] = []
        self._template = example("documented-complete.json")
        self._stop = asyncio.Event()
        self.done = asyncio.Event()  # every worker has finished (max_requests reached)
        self._sent = 0

    def body(self, task_id: str, sequence: int) -> bytes:
        document = dict(self._template)
        document["data"] = {**self._template["data"], "task_id": task_id,
                            "callbackType": STAGES[sequence % len(STAGES)]}
        return orjson.dumps(document)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoadGenerator]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self._stop.set()
            await task

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.workers, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await asyncio.gather(*(self._worker(session, w) for w in range(self.workers)))
        finally:
            self.done.set()

    async def _worker(self, session: aiohttp.ClientSession, worker: int) -> None:
        sequence = 0
        while not self._stop.is_set() and self._sent < self.max_requests:
            self._sent += 1
            task_id = f"{self.name}-{worker}-{sequence}"
            body = self.body(task_id, sequence)
            sequence += 1
            started = time.monotonic()
            try:
                async with session.post(self.url, data=body,
                                        headers={"Content-Type": "application/json"}) as reply:
                    answer = await reply.json(content_type=None)
                    self.answers.append(Answer(
                        task_id, body, started, time.monotonic() - started, reply.status,
                        answer.get("event_id"), bool(answer.get("spooled"))))
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                self.answers.append(
                    Answer(task_id, body, started, time.monotonic() - started, None))
                await asyncio.sleep(0.05)  # the gateway is restarting: do not spin
            if self.pause:
                await asyncio.sleep(self.pause)


@dataclass(slots=True)
class Verdict:
    """What the topic says about the answers."""

    sent: int = 0
    acknowledged: int = 0  # 2xx
    spooled: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # 2xx without its event on the topic
    mismatched: list[str] = field(default_factory=list)  # wrong or differing content
    duplicates: int = 0
    max_latency: float = 0.0
    late: int = 0  # answered after the deadline


async def verify(bootstrap: str, topic: str, answers: list[Answer], *,
                 deadline: float) -> Verdict:
    verdict = Verdict(sent=len(answers))
    acknowledged = [a for a in answers if a.status is not None and 200 <= a.status < 300]
    verdict.acknowledged = len(acknowledged)
    verdict.spooled = sum(a.spooled for a in acknowledged)
    verdict.statuses = Counter("none" if a.status is None else str(a.status) for a in answers)
    answered = [a.latency for a in answers if a.status is not None]
    verdict.max_latency = max(answered, default=0.0)
    verdict.late = sum(latency > deadline for latency in answered)
    records = await read_records(bootstrap, topic, expect=len(acknowledged), timeout=60)
    copies: dict[str, set[tuple[bytes, tuple[tuple[str, bytes], ...]]]] = {}
    counts: Counter[str] = Counter()
    for record in records:
        event_id = headers_of(record)["ce_id"]
        counts[event_id] += 1
        copies.setdefault(event_id, set()).add((record.value or b"", tuple(record.headers)))
    verdict.duplicates = sum(count - 1 for count in counts.values())
    for answer in acknowledged:
        event_id = answer.event_id or ""
        if event_id not in copies:
            verdict.lost.append(answer.task_id)
            continue
        variants = copies[event_id]
        value = orjson.loads(next(iter(variants))[0])
        if len(variants) != 1 or value["raw"] != orjson.loads(answer.body) or (
                value["task_id"] != answer.task_id):
            verdict.mismatched.append(answer.task_id)
    return verdict


class RssSampler:
    """Peak resident memory of the processes it is told about, from /proc."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.pids: list[int] = []
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def watch(self, pid: int) -> None:
        self.pids.append(pid)

    def sample(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self.interval)

        self._task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024
