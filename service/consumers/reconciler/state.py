"""The reconciler's state: which submitted tasks are still open, and when to ask (pure).

Everything here is rebuilt from the topics at start-up (no second database):

* ``open``: tasks submitted on the tasks topic with no terminal event (``complete`` or
  ``error``) yet, with the stages seen so far, at most ``max_open`` of them. Past it the
  oldest open task is forgotten (it will not be polled; counted as an eviction).
* a bounded memory (LRU, ``max_open`` entries) of the stages of tasks that are not
  open: finished ones, and ones whose events arrived before their submission (the two
  topics are read side by side), so that a late submission does not reopen them.
* a schedule (a heap of due times) of the next poll of every open task. Entries are
  never removed: an entry is stale once its task closed or was rescheduled, and is
  skipped when it comes up.

Times are wall-clock epoch seconds, like the ``submitted_at`` they are counted from.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from service.core.model import Stage

STAGE_BITS: Final[dict[Stage, int]] = {"text": 1, "first": 2, "complete": 4, "error": 8}
TERMINAL: Final = STAGE_BITS["complete"] | STAGE_BITS["error"]
_RANK: Final[dict[Stage, int]] = {"text": 0, "first": 1, "complete": 2, "error": 2}


@dataclass(slots=True, eq=False)
class OpenTask:
    task_id: str
    kind: str
    submitted_at: float
    task_ref: str | None
    stages: int = 0  # STAGE_BITS of the events seen for it
    next_poll_at: float = 0.0
    in_flight: bool = False  # a poll is running; it is rescheduled when it ends
    last_status: str | None = None  # the provider's last status word, for the horizon error

    def adds(self, stage: Stage) -> bool:
        """Whether an event of ``stage`` is news for this task: not seen, not behind a
        stage already reached, and nothing after a terminal stage."""
        if self.stages & (STAGE_BITS[stage] | TERMINAL):
            return False
        reached = [rank for name, rank in _RANK.items() if self.stages & STAGE_BITS[name]]
        return _RANK[stage] > max(reached, default=-1)


class TaskTable:
    def __init__(self, *, max_open: int) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.max_open = max_open
        self.open: dict[str, OpenTask] = {}  # insertion order: the oldest submission first
        self.evictions = 0
        self._known: OrderedDict[str, int] = OrderedDict()  # stage bits of tasks not open
        self._due: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self.open)

    def submitted(self, task_id: str, kind: str, submitted_at: float, task_ref: str | None,
                  *, first_poll_at: float) -> OpenTask | None:
        """Open a submitted task; None when it is open already or has finished. May evict
        the oldest open task (``evictions`` counts them)."""
        if task_id in self.open:
            return None
        stages = self._known.pop(task_id, 0)
        if stages & TERMINAL:
            self._remember(task_id, stages)
            return None
        if len(self.open) >= self.max_open:
            self._forget(next(iter(self.open.values())))
            self.evictions += 1
        task = OpenTask(task_id, kind, submitted_at, task_ref, stages=stages)
        self.open[task_id] = task
        self.schedule(task, first_poll_at)
        return task

    def observed(self, task_id: str, stage: Stage) -> OpenTask | None:
        """Note an event of ``task_id``; the task it closed (a terminal stage), if any."""
        bit = STAGE_BITS[stage]
        task = self.open.get(task_id)
        if task is None:
            self._remember(task_id, self._known.get(task_id, 0) | bit)
            return None
        task.stages |= bit
        if bit & TERMINAL:
            self._forget(task)
            return task
        return None

    def silent(self, now: float, after_seconds: float) -> int:
        """Open tasks past ``after_seconds`` since their submission (a scan: for scrapes)."""
        return sum(1 for task in self.open.values() if task.submitted_at + after_seconds <= now)

    def schedule(self, task: OpenTask, at: float) -> None:
        task.next_poll_at = at
        heapq.heappush(self._due, (at, next(self._sequence), task.task_id))

    def next_due(self, now: float) -> OpenTask | None:
        """The open task whose poll is due first, if it is due at ``now`` (taken off the
        schedule: reschedule it after the poll)."""
        while self._due:
            at, _, task_id = self._due[0]
            task = self.open.get(task_id)
            if task is None or task.next_poll_at != at or task.in_flight:
                heapq.heappop(self._due)  # stale
                continue
            if at > now:
                return None
            heapq.heappop(self._due)
            return task
        return None

    def next_due_at(self) -> float | None:
        """When the next live entry of the schedule is due (stale ones are dropped)."""
        while self._due:
            at, _, task_id = self._due[0]
            task = self.open.get(task_id)
            if task is not None and task.next_poll_at == at and not task.in_flight:
                return at
            heapq.heappop(self._due)
        return None

    def close(self, task: OpenTask) -> None:
        """Forget an open task that is finished (the reconciler gave up on it)."""
        if self.open.get(task.task_id) is task:
            self._forget(task)

    def is_open(self, task: OpenTask) -> bool:
        return self.open.get(task.task_id) is task

    def _forget(self, task: OpenTask) -> None:
        del self.open[task.task_id]
        self._remember(task.task_id, task.stages)

    def _remember(self, task_id: str, stages: int) -> None:
        self._known[task_id] = stages
        self._known.move_to_end(task_id)
        if len(self._known) > self.max_open:
            self._known.popitem(last=False)
