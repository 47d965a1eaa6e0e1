"""The spool on a real directory: order, group commit, bounds, damage and restarts."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.spool.framing import SpoolRecord, encode_frame
from service.spool.store import (
    Batch,
    Spool,
    SpoolFullError,
    SpoolLockedError,
    SpoolWriteError,
    segment_paths,
)

SpoolFactory = Callable[..., Spool]


def record(number: int, size: int = 200) -> SpoolRecord:
    return SpoolRecord(topic="events", key=f"task-{number}".encode(),
                       value=f'{{"n":{number},"pad":"{"x" * size}"}}'.encode(),
                       headers=[("ce_id", f"{number:032x}".encode())],
                       spooled_at_ms=1_700_000_000_000 + number)


def numbers(batch: Batch) -> list[int]:
    return [int(entry.record.key.decode().removeprefix("task-"))  # type: ignore[union-attr]
            for entry in batch.entries]


@pytest.fixture
async def spools(tmp_path: Path) -> AsyncIterator[SpoolFactory]:
    opened: list[Spool] = []

    def make(directory: Path = tmp_path / "spool", **options: int) -> Spool:
        spool = Spool(directory, max_bytes=options.pop("max_bytes", 64 * 1024 * 1024),
                      clock=lambda: 1_700_000_100.0, **options)
        spool.open()
        opened.append(spool)
        return spool

    yield make
    for spool in opened:
        await spool.close()


async def started(spool: Spool) -> Spool:
    await spool.start()
    return spool


async def test_records_come_back_in_arrival_order_and_an_acknowledged_spool_leaves_no_file(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    spool = await started(spools())
    for number in range(10):
        await spool.append(record(number))
    assert spool.records == 10
    assert spool.bytes == sum(len(encode_frame(record(n))) for n in range(10))
    assert spool.oldest_age_seconds() == pytest.approx(100.0)
    batch = await spool.read_batch(max_records=100, max_bytes=10**9)
    assert numbers(batch) == list(range(10))
    assert batch.entries[3].record == record(3)
    assert numbers(await spool.read_batch(100, 10**9)) == list(range(10))  # no ack: same again
    spool.acknowledge(batch.end, len(batch.entries))
    assert (spool.records, spool.bytes, spool.oldest_age_seconds()) == (0, 0, 0.0)
    assert segment_paths(tmp_path / "spool") == []


async def test_a_partial_acknowledgement_resumes_at_the_first_unacknowledged_record(
    spools: SpoolFactory,
) -> None:
    spool = await started(spools())
    for number in range(6):
        await spool.append(record(number))
    batch = await spool.read_batch(max_records=4, max_bytes=10**9)
    assert numbers(batch) == [0, 1, 2, 3]
    spool.acknowledge(batch.entries[1].end, 2)
    assert spool.records == 4
    assert numbers(await spool.read_batch(100, 10**9)) == [2, 3, 4, 5]


async def test_segments_rotate_and_each_is_deleted_once_all_its_records_are_acknowledged(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    frame = len(encode_frame(record(0)))
    spool = await started(spools(segment_bytes=3 * frame))
    for number in range(8):
        await spool.append(record(number))
    segments = segment_paths(tmp_path / "spool")
    assert len(segments) == 3  # 3 + 3 + 2 records
    batch = await spool.read_batch(max_records=4, max_bytes=10**9)
    assert numbers(batch) == [0, 1, 2, 3]  # a batch crosses segment boundaries
    spool.acknowledge(batch.end, 4)
    assert segment_paths(tmp_path / "spool") == segments[1:]  # the first one is done
    rest = await spool.read_batch(100, 10**9)
    assert numbers(rest) == [4, 5, 6, 7]
    spool.acknowledge(rest.end, 4)
    assert segment_paths(tmp_path / "spool") == []
    await spool.append(record(8))  # a new segment after everything was deleted
    assert [seq for seq, _ in segment_paths(tmp_path / "spool")] == [segments[-1][0] + 1]
    assert numbers(await spool.read_batch(100, 10**9)) == [8]


async def test_concurrent_appends_share_fsyncs(
    spools: SpoolFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    spool = await started(spools())
    await asyncio.gather(*(spool.append(record(n)) for n in range(300)))
    assert spool.records == 300
    assert calls == spool.fsyncs
    assert 1 <= spool.fsyncs <= 10, spool.fsyncs  # one per group, not one per record
    assert numbers(await spool.read_batch(1000, 10**9)) == list(range(300))


async def test_an_append_returns_only_after_its_fsync(
    spools: SpoolFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = os.fdatasync

    def held_fdatasync(fd: int) -> None:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", held_fdatasync)
    spool = await started(spools())
    append = asyncio.create_task(spool.append(record(1)))
    await asyncio.sleep(0.2)
    assert not append.done()
    assert (await spool.read_batch(10, 10**9)).entries == []  # not durable: not forwarded
    release.set()
    await asyncio.wait_for(append, 5)
    assert numbers(await spool.read_batch(10, 10**9)) == [1]


async def test_a_full_spool_refuses_instead_of_half_keeping(spools: SpoolFactory) -> None:
    """The bound counts segment files: space comes back when a segment is deleted."""
    frame = len(encode_frame(record(0)))
    spool = await started(spools(max_bytes=3 * frame + 10, segment_bytes=frame))
    for number in range(3):
        await spool.append(record(number))
    assert spool.unwritable(room=frame) == "spool_full"
    with pytest.raises(SpoolFullError):
        await spool.append(record(3))
    assert spool.refused["spool_full"] == 1
    assert spool.records == 3
    batch = await spool.read_batch(1, 10**9)
    spool.acknowledge(batch.end, 1)
    assert spool.unwritable(room=frame) is None
    await spool.append(record(3))
    assert numbers(await spool.read_batch(10, 10**9)) == [1, 2, 3]


async def test_a_failed_fsync_fails_its_appends_and_marks_the_spool_unwritable(
    spools: SpoolFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool = await started(spools())
    await spool.append(record(0))

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(SpoolWriteError):
        await spool.append(record(1))
    assert spool.unwritable() == "spool_write_failed"
    monkeypatch.undo()
    await spool.append(record(2))
    assert spool.unwritable() is None


async def test_a_restart_resumes_from_disk_in_order_and_writes_a_new_segment(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    first = await started(spools())
    for number in range(5):
        await first.append(record(number))
    batch = await first.read_batch(2, 10**9)
    first.acknowledge(batch.end, 2)  # 0 and 1 forwarded; their segment is still there
    await first.close()
    before = segment_paths(tmp_path / "spool")

    second = await started(spools())
    # Acknowledgements are not persisted: 0 and 1 come again (duplicates, never losses).
    assert second.records == 5
    assert second.oldest_age_seconds() == pytest.approx(100.0)
    await second.append(record(5))
    after = segment_paths(tmp_path / "spool")
    assert after[:len(before)] == before
    assert len(after) == len(before) + 1  # the old segment is never appended to
    assert numbers(await second.read_batch(100, 10**9)) == [0, 1, 2, 3, 4, 5]


async def test_a_torn_tail_after_a_crash_is_skipped_without_losing_what_came_before(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    first = await started(spools())
    for number in range(3):
        await first.append(record(number))
    await first.close()
    (_, path), = segment_paths(tmp_path / "spool")
    with path.open("ab") as file:  # the crash happened in the middle of the next write
        file.write(encode_frame(record(3))[:40])

    second = await started(spools())
    assert second.records == 3
    batch = await second.read_batch(100, 10**9)
    assert numbers(batch) == [0, 1, 2]
    second.acknowledge(batch.end, 3)
    assert segment_paths(tmp_path / "spool") == []  # the torn bytes went with the segment


async def test_a_corrupt_record_in_the_middle_costs_only_itself(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    first = await started(spools())
    for number in range(5):
        await first.append(record(number))
    await first.close()
    (_, path), = segment_paths(tmp_path / "spool")
    data = bytearray(path.read_bytes())
    frame = len(encode_frame(record(0)))
    data[2 * frame + 30] ^= 0xFF  # inside record 2
    path.write_bytes(bytes(data))

    second = await started(spools())
    assert second.records == 4
    batch = await second.read_batch(100, 10**9)
    assert numbers(batch) == [0, 1, 3, 4]
    second.acknowledge(batch.end, 4)
    assert second.records == 0
    assert segment_paths(tmp_path / "spool") == []


async def test_a_segment_with_nothing_readable_is_discarded_at_start(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / f"{7:020d}.seg").write_bytes(b"\x00" * 100)
    (directory / "notes.txt").write_text("not a segment")
    spool = await started(spools())
    assert (spool.records, spool.bytes) == (0, 0)
    assert segment_paths(directory) == []
    await spool.append(record(1))
    assert [seq for seq, _ in segment_paths(directory)] == [8]  # numbering continues


async def test_one_process_at_a_time_holds_a_spool_directory(
    spools: SpoolFactory, tmp_path: Path,
) -> None:
    first = spools()
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path / "spool", max_bytes=10**6).open()
    await first.close()
    second = spools()
    assert second.is_open
