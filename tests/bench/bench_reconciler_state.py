"""Memory and speed of the reconciler's state: what a rebuild costs per record.

``python -m tests.bench.bench_reconciler_state [--tasks N]``

Feeds ``--tasks`` submissions (default 100,000, the default ``RECONCILE_MAX_OPEN_TASKS``)
and then three events per task (text, first, complete, as CloudEvents headers the way
the gateway writes them) through the same readers and table the reconciler uses, and
prints the peak traced memory with every task open (tracemalloc), the size per open
task, and the records per second of each phase (timed without tracemalloc). Kafka's own
fetching is not included: this is the reconciler's share of a rebuild.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import time
import tracemalloc

import orjson

from service.consumers.reconciler.records import read_progress, read_submission
from service.consumers.reconciler.state import TaskTable

STAGES = ("text", "first", "complete")


def _task_id(number: int) -> str:
    return hashlib.sha256(number.to_bytes(8, "big")).hexdigest()[:32]


def submissions(tasks: int) -> list[bytes]:
    return [orjson.dumps({"task_id": _task_id(n), "kind": "generate-music",
                          "submitted_at": "2026-11-25T10:00:00Z", "task_ref": f"order-{n}"})
            for n in range(tasks)]


def submit_all(table: TaskTable, values: list[bytes]) -> None:
    for number, value in enumerate(values):
        submission = read_submission(None, value, 0)
        table.submitted(submission.task_id, submission.kind, submission.submitted_at,
                        submission.task_ref, first_poll_at=submission.submitted_at + number)


def progress_all(table: TaskTable, tasks: int) -> int:
    applied = 0
    for number in range(tasks):
        task_id = _task_id(number)
        for stage in STAGES:
            headers = [("ce_subject", task_id.encode()),
                       ("ce_type", f"music.callback.generate-music.{stage}".encode()),
                       ("ce_source", b"/callbacks/generate-music")]
            progress = read_progress(task_id.encode(), b"{}", headers)
            table.observed(progress.task_id, progress.stage)
            applied += 1
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    values = submissions(args.tasks)

    gc.collect()
    tracemalloc.start()
    table = TaskTable(max_open=args.tasks)
    before = tracemalloc.get_traced_memory()[0]
    submit_all(table, values)
    open_bytes = tracemalloc.get_traced_memory()[0] - before
    progress_all(table, args.tasks)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()

    table = TaskTable(max_open=args.tasks)
    started = time.perf_counter()
    submit_all(table, values)
    submit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    events = progress_all(table, args.tasks)
    events_seconds = time.perf_counter() - started
    print(f"{args.tasks:,} open tasks: {open_bytes / 2**20:.1f} MiB traced "
          f"({open_bytes / args.tasks:.0f} bytes per open task, schedule included); "
          f"peak with the events applied {peak / 2**20:.1f} MiB")
    print(f"submissions: {args.tasks / submit_seconds:,.0f} records/s; "
          f"events (headers only): {events / events_seconds:,.0f} records/s; "
          f"open after the events: {len(table)}")


if __name__ == "__main__":
    main()
