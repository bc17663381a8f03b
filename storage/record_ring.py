"""The evidence writer's record buffers and the file's SHA-256, computed beside the writer.

The writer seals each chunk into a buffer of this ring, writes that buffer to the card with one
syscall, and hands the same buffer to the hash: the bytes written are the bytes hashed, and no
chunk costs an allocation or a copy (a fresh 256 KiB buffer per chunk cost more CPU than the
encryption: the allocator hands large blocks back to the kernel and takes them again, page fault
by page fault; docs/benchmarks.md).

The SHA-256 runs on a thread of its own, fed in file order (hashlib releases the GIL on large
buffers, so hashing overlaps the next chunk's encryption and write). Invariant: a buffer goes back
to the free list only after the hash has taken it in, so `take()` never hands out bytes the hash
has still to read; when every buffer waits for the hash, `take()` blocks (the ring bounds memory).
Hand-offs go through `queue.SimpleQueue` (C, one lock each) rather than an executor's futures.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from queue import SimpleQueue

DEFAULT_RING_BUFFERS = 3
"""One being filled, one being hashed, one spare: the writer rarely waits for the hash."""


class HashedRecordRing:
    """`count` reusable record buffers of `buffer_bytes`, and the SHA-256 of what went through.

    Single owner (the writer thread) for `take`, `hash_record`, `hash_bytes` and `hexdigest`.
    Call `hexdigest()` (or `close()`) exactly once at the end: it stops the thread.
    """

    def __init__(self, buffer_bytes: int, count: int = DEFAULT_RING_BUFFERS) -> None:
        if count < 1 or buffer_bytes < 1:
            raise ValueError("a ring needs at least one buffer of at least one byte")
        self.buffer_bytes = buffer_bytes
        self._free: SimpleQueue[bytearray] = SimpleQueue()
        for _ in range(count):
            self._free.put(bytearray(buffer_bytes))
        # (buffer to give back or None, the bytes to hash); None ends the thread.
        self._todo: SimpleQueue[tuple[bytearray | None, bytes | memoryview] | None] = SimpleQueue()
        self._hash = hashlib.sha256()
        self._failures: list[BaseException] = []  # what the thread met, if anything
        # The thread holds the queues and the hash, not the ring: a ring dropped without
        # close() is still collected, and its finalizer ends the thread.
        self._thread = threading.Thread(
            target=_hash_in_order,
            args=(self._todo, self._free, self._hash, self._failures),
            name="sha256",
            daemon=True,
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, self._todo.put, None)
        self._stopped = False
        self._digest: str | None = None

    def take(self) -> bytearray:
        """A free buffer: blocks while every buffer still waits for the hash."""
        return self._free.get()

    def hash_record(self, record: memoryview, buffer: bytearray | None) -> None:
        """Hash `record` (as written) next; `buffer` (the ring buffer `record` views, or None
        for one of the caller's own) comes back to the free list once it is hashed."""
        self._todo.put((buffer, record))

    def give_back(self, buffer: bytearray) -> None:
        """Return a taken buffer that was not written (nothing to hash)."""
        self._free.put(buffer)

    def hash_bytes(self, data: bytes) -> None:
        """Hash bytes that are not in a ring buffer (the header) next."""
        self._todo.put((None, data))

    def hexdigest(self) -> str:
        """The SHA-256 of everything handed over, in order; stops the thread (idempotent)."""
        if self._digest is None:
            if self._stopped:
                raise RuntimeError("the ring was closed before its digest was asked for")
            self._stop()
            if self._failures:
                raise RuntimeError("the evidence file's SHA-256 failed") from self._failures[0]
            self._digest = self._hash.hexdigest()
        return self._digest

    def close(self) -> None:
        """Stop the thread without needing the digest (idempotent)."""
        if not self._stopped:
            self._stop()

    def _stop(self) -> None:
        self._stopped = True
        self._finalizer()  # puts the end marker, once
        self._thread.join()


_Todo = SimpleQueue[tuple[bytearray | None, bytes | memoryview] | None]


def _hash_in_order(
    todo: _Todo,
    free: SimpleQueue[bytearray],
    digest: hashlib._Hash,
    failures: list[BaseException],
) -> None:
    """The ring's thread: hash each piece in the order given, then free its buffer."""
    while (item := todo.get()) is not None:
        buffer, data = item
        if not failures:
            try:
                digest.update(data)
            except BaseException as exc:  # reported by hexdigest(); buffers still come back
                failures.append(exc)
        if buffer is not None:
            free.put(buffer)
