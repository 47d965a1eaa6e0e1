"""Memory and speed of the metrics consumer's per-task state under a million task ids.

``python -m tests.bench.bench_metrics_state [--tasks N] [--max-entries N]``

Streams ``--tasks`` distinct task ids (default 1,000,000) through one
:class:`TaskStates` table with the default bound (``TASK_STATE_MAX_ENTRIES``,
100,000) and TTL, the way the consumer uses it: per task, three events
(text, first, complete) with their own 32-hex event ids, spread over six
partitions, recording the phase timestamps. Prints the peak traced memory
(tracemalloc), the steady-state size per entry and the events per second
(timed in a separate run without tracemalloc, which slows allocation).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import time
import tracemalloc

from service.config.env import Env
from service.config.metrics_consumer import MetricsConsumerConfig
from service.consumers.metrics.state import Partition, TaskStates

STAGES = ("text", "first", "complete")
PARTITIONS = 6


def _ids(task_number: int) -> tuple[str, list[str]]:
    digest = hashlib.sha256(task_number.to_bytes(8, "big")).hexdigest()
    task_id = digest[:32]  # provider task ids are 32 hex characters
    return task_id, [hashlib.md5(f"{task_id}{s}".encode(), usedforsecurity=False).hexdigest()
                     for s in STAGES]


def stream(states: TaskStates[str], tasks: int) -> int:
    events = 0
    partitions: list[Partition] = [("music.callbacks.v1", p) for p in range(PARTITIONS)]
    for number in range(tasks):
        task_id, event_ids = _ids(number)
        partition = partitions[number % PARTITIONS]
        for stage, event_id in zip(STAGES, event_ids, strict=True):
            entry = states.touch(task_id, partition)
            if states.seen(entry, event_id):
                continue
            if stage == "text":
                entry.text_at = float(number)
            elif stage == "first":
                entry.first_at = float(number) + 30.0
            entry.stages |= 1 << STAGES.index(stage)
            events += 1
    return events


def make_states(max_entries: int, ttl: float) -> TaskStates[str]:
    return TaskStates(ttl_seconds=ttl, max_entries=max_entries, clock=time.monotonic)


def main() -> None:
    defaults = MetricsConsumerConfig.from_env(Env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--max-entries", type=int,
                        default=defaults.task_state_max_entries)
    args = parser.parse_args()
    ttl = defaults.task_state_ttl_seconds

    # Speed, without tracemalloc's overhead (ids are made inside the loop in both runs).
    gc.collect()
    started = time.perf_counter()
    speed_states = make_states(args.max_entries, ttl)
    events = stream(speed_states, args.tasks)
    elapsed = time.perf_counter() - started
    del speed_states
    gc.collect()

    # Memory: everything the table allocates, while a million task ids go through it.
    tracemalloc.start()
    states = make_states(args.max_entries, ttl)
    stream(states, args.tasks)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(states) == min(args.max_entries, args.tasks), len(states)
    print(f"task ids streamed        {args.tasks:,} ({events:,} events, {PARTITIONS} partitions)")
    print(f"max entries (bound)      {args.max_entries:,}; entries at the end: {len(states):,}")
    print(f"evicted by capacity      {states.evictions.capacity:,}")
    print(f"peak traced memory       {peak / 2**20:.1f} MiB")
    print(f"memory at the end        {current / 2**20:.1f} MiB "
          f"({current / max(1, len(states)):.0f} bytes per entry)")
    print(f"throughput               {events / elapsed:,.0f} events/s "
          f"(touch + duplicate check, {elapsed:.1f} s incl. id generation)")


if __name__ == "__main__":
    main()
