"""The asyncio face of the evidence store: card I/O never runs on the event loop.

Each camera stream gets one worker thread, so its writes stay in order and a slow card stalls
only that camera's coroutine, never the loop. Every call awaits its own completion, which bounds
the work in flight to one operation per stream.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from storage.store import EvidenceStore, Recording, StreamWriter
from storage.writer import DurablePoint, SealedFile


class AsyncStreamWriter:
    def __init__(self, stream: StreamWriter) -> None:
        self._stream = stream
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"evidence-{stream.camera}"
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def append_media(self, data: bytes) -> None:
        await self._run(self._stream.append_media, data)

    async def add_metadata(self, obj: dict[str, Any]) -> None:
        await self._run(self._stream.add_metadata, obj)

    async def end_segment(self, segment: dict[str, Any]) -> DurablePoint:
        """Returns once the segment is durable (fsynced): the writer's acknowledgement."""
        durable: DurablePoint = await self._run(self._stream.end_segment, segment)
        return durable

    async def close(self) -> None:
        try:
            await self._run(self._stream.close)
        finally:
            self._worker.shutdown(wait=False)


class AsyncRecording:
    def __init__(self, recording: Recording) -> None:
        self._recording = recording
        self.streams: dict[str, AsyncStreamWriter] = {}

    @property
    def recording_id(self) -> str:
        return self._recording.recording_id

    @classmethod
    async def start(cls, store: EvidenceStore, facts: dict[str, Any]) -> AsyncRecording:
        recording = await asyncio.to_thread(store.start_recording, facts)
        return cls(recording)

    def open_stream(self, camera: str, **kwargs: Any) -> AsyncStreamWriter:
        stream = AsyncStreamWriter(self._recording.open_stream(camera, **kwargs))
        self.streams[camera] = stream
        return stream

    async def close(self) -> list[SealedFile]:
        """Seal all streams (in parallel, one thread each), then destroy the key."""
        results = await asyncio.gather(
            *(s.close() for s in self.streams.values()), return_exceptions=True
        )
        sealed = await asyncio.to_thread(self._recording.close)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        return sealed
