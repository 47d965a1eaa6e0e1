"""Spool record framing (pure): encode one record, decode a run of bytes back into records.

A frame on disk::

    magic (4 bytes) | payload length (u32, big endian) | CRC-32 (u32) | payload

The CRC covers the length field and the payload, so a damaged length is caught as
well as damaged content. The magic starts with 0xF5, a byte that never occurs in
UTF-8 text (every field we store is JSON or header text), which makes a false
re-synchronisation inside a payload very unlikely; a false one must then still
pass the CRC.

The payload is the record exactly as it would have been published::

    spooled_at_ms (u64) | topic (u16 length + UTF-8) | key flag (u8) + key (u32 + bytes)
    | value (u32 + bytes) | header count (u16) | per header: name (u16 + UTF-8), value (u32 + bytes)

Decoding never raises on damaged input. It reports three kinds of trouble:

* a *corrupt* region: a frame whose magic, length or CRC is wrong. The decoder
  skips to the next offset where a whole, valid frame starts (re-synchronises),
  so one damaged record does not cost the records after it.
* a *torn tail*: an incomplete or damaged end of a final run with no valid frame
  after it (a crash mid-write). Every record before it is returned.
* nothing to do yet: a non-final run ends inside a frame; ``consumed`` stops
  before it and ``need`` says how many bytes the caller must read to finish it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

Headers = list[tuple[str, bytes]]

MAGIC: Final = b"\xf5SP1"
_HEADER: Final = struct.Struct(">4sII")
HEADER_BYTES: Final = _HEADER.size
# Far above any record the gateway produces (max_record_bytes is at most ~64 MiB);
# a length beyond it can only be damage.
MAX_PAYLOAD_BYTES: Final = 128 * 1024 * 1024

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


class FrameError(ValueError):
    """A payload that does not parse (only raised by ``decode_payload``)."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One Kafka record exactly as the gateway would have published it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    spooled_at_ms: int = 0

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


def encode_payload(record: SpoolRecord) -> bytes:
    parts = [_U64.pack(record.spooled_at_ms), _text(record.topic)]
    if record.key is None:
        parts.append(_U8.pack(0))
    else:
        parts += [_U8.pack(1), _U32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        parts += [_text(name), _U32.pack(len(value)), value]
    return b"".join(parts)


def encode_frame(record: SpoolRecord) -> bytes:
    payload = encode_payload(record)
    length = _U32.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return _HEADER.pack(MAGIC, len(payload), crc) + payload


def _text(text: str) -> bytes:
    encoded = text.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise ValueError("topic and header names are limited to 65535 bytes")
    return _U16.pack(len(encoded)) + encoded


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise FrameError("payload shorter than its fields")
        chunk = bytes(self._data[self._pos:end])
        self._pos = end
        return chunk

    def number(self, kind: struct.Struct) -> int:
        value: int = kind.unpack(self.take(kind.size))[0]
        return value

    def text(self) -> str:
        try:
            return self.take(self.number(_U16)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("a name is not UTF-8") from exc

    def done(self) -> bool:
        return self._pos == len(self._data)


def decode_payload(payload: bytes | memoryview) -> SpoolRecord:
    reader = _Reader(memoryview(payload))
    spooled_at_ms = reader.number(_U64)
    topic = reader.text()
    flag = reader.number(_U8)
    if flag not in (0, 1):
        raise FrameError("bad key flag")
    key = reader.take(reader.number(_U32)) if flag else None
    value = reader.take(reader.number(_U32))
    headers = [(reader.text(), reader.take(reader.number(_U32)))
               for _ in range(reader.number(_U16))]
    if not reader.done():
        raise FrameError("trailing bytes after the last field")
    return SpoolRecord(topic=topic, key=key, value=value, headers=headers,
                       spooled_at_ms=spooled_at_ms)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded record and where its frame lies in the decoded run (``end`` exclusive)."""

    start: int
    end: int
    record: SpoolRecord


@dataclass(slots=True)
class Decoded:
    frames: list[Frame] = field(default_factory=list)
    # Bytes fully accounted for (frames and skipped damage); the next run starts here.
    consumed: int = 0
    # Skipped damage as (start, end) ranges; a torn tail is reported in ``torn`` instead.
    corrupt: list[tuple[int, int]] = field(default_factory=list)
    torn: tuple[int, int] | None = None
    # When > 0, a frame starting at ``consumed`` needs this many bytes in total.
    need: int = 0

    @property
    def corrupt_bytes(self) -> int:
        return sum(end - start for start, end in self.corrupt)


def decode_frames(data: bytes | memoryview, *, final: bool) -> Decoded:
    """Decode the frames of ``data``; ``final`` when nothing follows it in the file.

    Damage followed by a valid frame is reported in ``corrupt`` and skipped; damage
    with nothing valid after it in a final run is the torn tail.
    """
    view = memoryview(data)
    size = len(view)
    out = Decoded()
    pos = 0
    while pos < size:
        frame, need = _frame_at(view, pos)
        if frame is not None:
            out.frames.append(frame)
            pos = frame.end
            continue
        if need and not final:
            out.need = need
            break
        resume = _resync(view, pos + 1, accept_incomplete=not final)
        if resume is not None:
            out.corrupt.append((pos, resume))
            pos = resume
            continue
        if final:
            out.torn = (pos, size)
            pos = size
            break
        # The next valid frame may start in bytes not read yet; keep the last few
        # bytes, which could be the beginning of its magic.
        keep_from = max(pos + 1, size - len(MAGIC) + 1)
        out.corrupt.append((pos, keep_from))
        pos = keep_from
        break
    out.consumed = pos
    return out


def _frame_at(view: memoryview, pos: int) -> tuple[Frame | None, int]:
    """The frame starting at ``pos``; else (None, bytes needed) when it is only incomplete,
    or (None, 0) when it is damaged."""
    size = len(view)
    if size - pos < HEADER_BYTES:
        available = bytes(view[pos:size])
        return None, (HEADER_BYTES if MAGIC.startswith(available[:len(MAGIC)]) else 0)
    magic, length, crc = _HEADER.unpack_from(view, pos)
    if magic != MAGIC or length > MAX_PAYLOAD_BYTES:
        return None, 0
    end = pos + HEADER_BYTES + length
    if end > size:
        return None, HEADER_BYTES + length
    payload = view[pos + HEADER_BYTES:end]
    if zlib.crc32(payload, zlib.crc32(_U32.pack(length))) != crc:
        return None, 0
    try:
        record = decode_payload(payload)
    except FrameError:
        return None, 0
    return Frame(pos, end, record), 0


def _resync(view: memoryview, start: int, *, accept_incomplete: bool) -> int | None:
    """The next offset from ``start`` where a valid frame begins, if any; with
    ``accept_incomplete``, also one that may complete in bytes not read yet."""
    data = bytes(view)
    candidate = data.find(MAGIC, start)
    while candidate != -1:
        frame, need = _frame_at(view, candidate)
        if frame is not None or (need and accept_incomplete):
            return candidate
        candidate = data.find(MAGIC, candidate + 1)
    return None
