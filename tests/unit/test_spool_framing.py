"""Spool frames: what is written reads back exactly, and damage never costs intact records."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from service.spool.framing import (
    HEADER_BYTES,
    MAGIC,
    Frame,
    SpoolRecord,
    decode_frames,
    decode_payload,
    encode_frame,
    encode_payload,
)

names = st.text(min_size=0, max_size=40)
records = st.builds(
    SpoolRecord,
    topic=names,
    key=st.one_of(st.none(), st.binary(max_size=64)),
    value=st.binary(max_size=2048),
    headers=st.lists(st.tuples(names, st.binary(max_size=64)), max_size=10),
    spooled_at_ms=st.integers(min_value=0, max_value=2**64 - 1),
)


def record(number: int, size: int = 100) -> SpoolRecord:
    return SpoolRecord(topic="music.callbacks.v1", key=f"task-{number}".encode(),
                       value=b'{"n":%d,"pad":"' % number + b"x" * size + b'"}',
                       headers=[("ce_id", f"{number:032x}".encode()),
                                ("content-type", b"application/json")],
                       spooled_at_ms=1_700_000_000_000 + number)


def values(decoded_frames: list[Frame]) -> list[bytes]:
    return [frame.record.value for frame in decoded_frames]


@given(records)
def test_a_record_survives_encoding_byte_for_byte(original: SpoolRecord) -> None:
    assert decode_payload(encode_payload(original)) == original
    decoded = decode_frames(encode_frame(original), final=True)
    assert [frame.record for frame in decoded.frames] == [original]
    assert (decoded.consumed, decoded.corrupt, decoded.torn) == (
        len(encode_frame(original)), [], None)


@given(st.lists(records, max_size=8), st.data())
def test_any_split_of_a_run_decodes_to_the_same_records(
    originals: list[SpoolRecord], data: st.DataObject,
) -> None:
    """Decoding chunk by chunk (as the reader does) loses and invents nothing."""
    run = b"".join(encode_frame(item) for item in originals)
    cut = data.draw(st.integers(min_value=0, max_value=len(run)))
    first = decode_frames(run[:cut], final=False)
    rest = decode_frames(run[first.consumed:], final=True)
    assert [f.record for f in first.frames + rest.frames] == originals
    assert first.corrupt == rest.corrupt == []


def test_a_torn_tail_is_reported_and_every_record_before_it_is_kept() -> None:
    run = b"".join(encode_frame(record(n)) for n in range(3))
    last = encode_frame(record(3))
    for cut in (1, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 5, len(last) - 1):
        decoded = decode_frames(run + last[:cut], final=True)
        assert values(decoded.frames) == [record(n).value for n in range(3)], cut
        assert decoded.torn == (len(run), len(run) + cut)
        assert decoded.consumed == len(run) + cut
        assert decoded.corrupt == []


def test_an_unfinished_frame_in_a_non_final_run_asks_for_more_bytes() -> None:
    frame = encode_frame(record(1, size=5000))
    decoded = decode_frames(frame[:100], final=False)
    assert (decoded.frames, decoded.consumed, decoded.need) == ([], 0, len(frame))
    assert decoded.torn is None


def test_a_corrupt_record_in_the_middle_is_skipped_and_the_next_ones_are_kept() -> None:
    frames = [encode_frame(record(n)) for n in range(5)]
    damaged = bytearray(frames[2])
    damaged[HEADER_BYTES + 20] ^= 0xFF  # one flipped byte in the payload: the CRC catches it
    run = b"".join(frames[:2]) + bytes(damaged) + b"".join(frames[3:])
    decoded = decode_frames(run, final=True)
    assert values(decoded.frames) == [record(n).value for n in (0, 1, 3, 4)]
    start = len(frames[0]) + len(frames[1])
    assert decoded.corrupt == [(start, start + len(frames[2]))]
    assert decoded.torn is None


def test_a_damaged_length_or_magic_is_caught_too() -> None:
    frames = [encode_frame(record(n)) for n in range(3)]
    for position in (0, 5, 9):  # magic, length, CRC
        damaged = bytearray(frames[1])
        damaged[position] ^= 0x40
        decoded = decode_frames(frames[0] + bytes(damaged) + frames[2], final=True)
        assert values(decoded.frames) == [record(0).value, record(2).value], position
        assert decoded.corrupt_bytes == len(frames[1])


def test_garbage_between_records_is_skipped_even_if_it_contains_the_magic() -> None:
    garbage = b"\x00" * 7 + MAGIC + b"\xff" * 30
    run = encode_frame(record(1)) + garbage + encode_frame(record(2))
    decoded = decode_frames(run, final=True)
    assert values(decoded.frames) == [record(1).value, record(2).value]
    assert decoded.corrupt_bytes == len(garbage)


def test_damage_at_the_end_of_a_non_final_run_keeps_a_possible_magic_prefix() -> None:
    run = encode_frame(record(1)) + b"\x00" * 50 + MAGIC[:2]
    decoded = decode_frames(run, final=False)
    assert values(decoded.frames) == [record(1).value]
    assert decoded.consumed == len(run) - (len(MAGIC) - 1)


def test_the_checksum_covers_the_length_field() -> None:
    payload = encode_payload(record(1))
    frame = encode_frame(record(1))
    assert int.from_bytes(frame[8:12], "big") == zlib.crc32(
        payload, zlib.crc32(len(payload).to_bytes(4, "big")))
