"""Bounded per-task state for the metrics consumer (pure: no I/O, injected clock).

One entry per task id remembers which stages the task has reached, when its
``text`` and ``first`` callbacks were received, and the last few event ids seen
for it (duplicate detection). The table is bounded two ways:

* **TTL**: an entry not touched for ``ttl_seconds`` is dropped;
* **max entries**: inserting beyond ``max_entries`` drops the least recently
  touched entry.

Entries live in an ``OrderedDict`` in least-recently-touched order, so a
lookup, a touch, an expiry and an eviction are each O(1) (expiry is amortized:
an entry is expired once). Each entry also records the Kafka partition its
events came from: events are keyed by task id, so a task lives on one
partition, and when the consumer loses partitions in a rebalance,
``drop_partitions`` forgets exactly the tasks of those partitions (their new
owner rebuilds them from the events it reads). That is the documented limit:
state is only as complete as the window it has seen; a duplicate or a late
stage arriving after its task was expired, evicted or dropped (or after a
restart) is counted as new.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Final, Generic, TypeVar

# (topic, partition): aiokafka's TopicPartition is a named tuple that compares
# and hashes equal to the plain tuple, so either works as a key.
Partition = tuple[str, int]
K = TypeVar("K", bound=Hashable)

DEFAULT_MAX_IDS_PER_TASK: Final = 16


class TaskEntry:
    """What is remembered about one task (slots keep it small: see the benchmark)."""

    __slots__ = ("first_at", "ids", "partition", "stages", "text_at", "touched")

    def __init__(self, partition: Partition, now: float) -> None:
        self.partition = partition
        self.touched = now
        self.stages = 0  # bit mask of stages reached, see processor.STAGE_BITS
        self.text_at: float | None = None  # received_at (epoch seconds) of `text`
        self.first_at: float | None = None  # received_at (epoch seconds) of `first`
        self.ids: list[str] | None = None  # most recent event ids, oldest first

    def has_seen(self, event_id: str) -> bool:
        return self.ids is not None and event_id in self.ids

    def remember(self, event_id: str, limit: int) -> None:
        """Remember ``event_id``, keeping at most ``limit`` ids (the oldest is forgotten)."""
        if self.ids is None:
            self.ids = [event_id]
            return
        self.ids.append(event_id)
        if len(self.ids) > limit:
            del self.ids[0]  # limit is small and fixed: O(1)


class EvictionCounts:
    """Why entries left the table, since start (exported as a counter by the caller)."""

    __slots__ = ("capacity", "revoked", "ttl")

    def __init__(self) -> None:
        self.ttl = 0
        self.capacity = 0
        self.revoked = 0


class TaskStates(Generic[K]):
    """Task id → :class:`TaskEntry`, bounded by TTL and by count."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float],
        max_ids_per_task: int = DEFAULT_MAX_IDS_PER_TASK,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_ids_per_task < 1:
            raise ValueError("max_ids_per_task must be at least 1")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_ids_per_task = max_ids_per_task
        self.evictions = EvictionCounts()
        self._clock = clock
        self._entries: OrderedDict[K, TaskEntry] = OrderedDict()
        self._by_partition: dict[Partition, set[K]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> TaskEntry | None:
        """The live entry for ``key`` (without touching it), or None."""
        self.expire()
        return self._entries.get(key)

    def touch(self, key: K, partition: Partition) -> TaskEntry:
        """The entry for ``key``, created if needed, now the most recently touched."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            entry = TaskEntry(partition, now)
            self._entries[key] = entry
            self._member(partition).add(key)
            while len(self._entries) > self.max_entries:
                self._pop_oldest()
                self.evictions.capacity += 1
            return entry
        self._entries.move_to_end(key)
        entry.touched = now
        if entry.partition != partition:  # the topic was repartitioned: follow the task
            self._leave(entry.partition, key)
            entry.partition = partition
            self._member(partition).add(key)
        return entry

    def seen(self, entry: TaskEntry, event_id: str) -> bool:
        """True when ``event_id`` was already seen for this task; else remember it."""
        if entry.has_seen(event_id):
            return True
        entry.remember(event_id, self.max_ids_per_task)
        return False

    def drop_partitions(self, partitions: Iterable[Partition]) -> int:
        """Forget every task of ``partitions`` (they were revoked); return how many."""
        dropped = 0
        for partition in partitions:
            keys = self._by_partition.pop((partition[0], partition[1]), None)
            if not keys:
                continue
            for key in keys:
                del self._entries[key]
            dropped += len(keys)
        self.evictions.revoked += dropped
        return dropped

    def expire(self) -> int:
        """Drop the entries older than the TTL; return how many."""
        return self._expire(self._clock())

    def partitions(self) -> dict[Partition, int]:
        """Entries per partition (for tests and diagnostics)."""
        return {partition: len(keys) for partition, keys in self._by_partition.items()}

    def _expire(self, now: float) -> int:
        expired = 0
        deadline = now - self.ttl_seconds
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.touched > deadline:
                break
            self._pop_oldest()
            expired += 1
        self.evictions.ttl += expired
        return expired

    def _pop_oldest(self) -> None:
        key, entry = self._entries.popitem(last=False)
        self._leave(entry.partition, key)

    def _member(self, partition: Partition) -> set[K]:
        keys = self._by_partition.get(partition)
        if keys is None:
            keys = self._by_partition[partition] = set()
        return keys

    def _leave(self, partition: Partition, key: K) -> None:
        keys = self._by_partition.get(partition)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_partition[partition]
