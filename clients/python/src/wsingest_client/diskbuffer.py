"""The optional on-disk buffer: every message the client takes is appended to
a log file before ``send`` returns, and marked done once acked (or refused for
good). A process started later on the same directory resends, with the same
seq, ts and bytes, every message that was never answered.

File ``buffer.log`` in the directory, a sequence of records::

    magic b"WSB1" | body length u32 LE | crc32(body) u32 LE | body

    body = kind u8 | seq u64 LE | rest
      kind 1 "message": rest = points u32 | binary u8 | frame bytes
      kind 2 "done":    rest empty (acked, or refused for good)
      kind 3 "next":    rest empty; the next seq to use (after a compaction)

Appends are single ``os.write`` calls on an ``O_APPEND`` descriptor, so a
crash or ``kill -9`` of the process loses nothing the kernel has; with
``fsync=True`` each append is also flushed to the device (survives power
loss, costs a disk flush per message). A torn last record (power loss during
an append, never acknowledged to the caller as durable) is cut off on load.
The log is compacted (rewritten with only the pending messages, atomically
by rename) when it holds mostly done records. ``LOCK`` (flock) keeps a
second process off the same directory.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Union

from .errors import WsingestError

MAGIC = b"WSB1"
HEADER = struct.Struct("<4sII")
BODY = struct.Struct("<BQ")
MESSAGE = struct.Struct("<IB")
KIND_MESSAGE = 1
KIND_DONE = 2
KIND_NEXT = 3
COMPACT_MIN_BYTES = 1 << 20


@dataclass
class Stored:
    seq: int
    frame: Union[str, bytes]
    points: int


class DiskBuffer:
    """An append-only log of unacked messages in ``directory``."""

    def __init__(self, directory: Union[str, os.PathLike[str]], *, fsync: bool = False) -> None:
        self.dir = os.fspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "buffer.log")
        self.fsync = fsync
        self._lock_fd = os.open(os.path.join(self.dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            raise WsingestError(
                f"buffer directory {self.dir} is in use by another process ({e})"
            ) from e
        self._fd = -1
        self._bytes = 0
        self._live_bytes = 0
        self._live_sizes: dict[int, int] = {}

    def load(self) -> tuple[list[Stored], int]:
        """Read the log: the pending messages in seq order, and the next seq."""
        pending: dict[int, Stored] = {}
        sizes: dict[int, int] = {}
        next_seq = 1
        good = 0
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        pos = 0
        while pos + HEADER.size <= len(data):
            magic, length, crc = HEADER.unpack_from(data, pos)
            end = pos + HEADER.size + length
            if magic != MAGIC or end > len(data) or length < BODY.size:
                break
            body = data[pos + HEADER.size:end]
            if zlib.crc32(body) != crc:
                break
            kind, seq = BODY.unpack_from(body, 0)
            if kind == KIND_MESSAGE:
                points, binary = MESSAGE.unpack_from(body, BODY.size)
                raw = body[BODY.size + MESSAGE.size:]
                frame: Union[str, bytes] = raw if binary else raw.decode("utf-8")
                pending[seq] = Stored(seq, frame, points)
                sizes[seq] = end - pos
                next_seq = max(next_seq, seq + 1)
            elif kind == KIND_DONE:
                pending.pop(seq, None)
                sizes.pop(seq, None)
                next_seq = max(next_seq, seq + 1)
            elif kind == KIND_NEXT:
                next_seq = max(next_seq, seq)
            else:
                break
            pos = end
            good = end
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if good < len(data):
            # A torn or corrupt tail: never acknowledged as taken. Cut it off.
            os.ftruncate(self._fd, good)
        self._bytes = good
        self._live_sizes = sizes
        self._live_bytes = sum(sizes.values())
        return sorted(pending.values(), key=lambda s: s.seq), next_seq

    @staticmethod
    def _record(kind: int, seq: int, rest: bytes = b"") -> bytes:
        body = BODY.pack(kind, seq) + rest
        return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body

    def _write(self, rec: bytes) -> None:
        n = os.write(self._fd, rec)
        if n != len(rec):  # a short write on a regular file: disk full
            raise OSError(f"short write to {self.path}: {n} of {len(rec)} bytes")
        self._bytes += len(rec)
        if self.fsync:
            os.fdatasync(self._fd)

    def append(self, seq: int, frame: Union[str, bytes], points: int) -> None:
        binary = isinstance(frame, bytes)
        raw = frame if isinstance(frame, bytes) else frame.encode("utf-8")
        rec = self._record(KIND_MESSAGE, seq, MESSAGE.pack(points, 1 if binary else 0) + raw)
        self._write(rec)
        self._live_sizes[seq] = len(rec)
        self._live_bytes += len(rec)

    def done(self, seq: int, pending: Mapping[int, Any]) -> None:
        """``seq`` was answered; ``pending`` maps the seqs still unanswered to
        objects with ``frame`` and ``points`` (written out when the log is
        compacted)."""
        self._write(self._record(KIND_DONE, seq))
        self._live_bytes -= self._live_sizes.pop(seq, 0)
        if self._bytes > COMPACT_MIN_BYTES and self._bytes > 4 * self._live_bytes:
            self._compact(pending, seq + 1)

    def _compact(self, pending: Mapping[int, Any], next_seq: int) -> None:
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            top = max([next_seq] + [s + 1 for s in pending])
            out = [self._record(KIND_NEXT, top)]
            sizes: dict[int, int] = {}
            for s in sorted(pending):
                m = pending[s]
                binary = isinstance(m.frame, bytes)
                raw = m.frame if isinstance(m.frame, bytes) else m.frame.encode("utf-8")
                rec = self._record(KIND_MESSAGE, s, MESSAGE.pack(m.points, 1 if binary else 0) + raw)
                sizes[s] = len(rec)
                out.append(rec)
            data = b"".join(out)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._bytes = len(data)
        self._live_sizes = sizes
        self._live_bytes = sum(sizes.values())

    def close(self) -> None:
        if self._fd >= 0:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
