"""Shared-memory regions the server writes predictions into, so responses carry no payload over gRPC.

A response of a 262,144-pair batch is 1 MB of float32. Sent in the gRPC message it is serialized by the server,
parsed by the client's gRPC thread and copied once more into numpy; measured on this project's 2-core machine the
way back from the model to the client grew from 1.1 ms (600 pairs) to 3.7 ms (200,000 pairs). With a system
shared-memory region registered with the server (`triton_output_shm`, on by default), Triton copies the output into
the region and the client reads it from there.

One region per request in flight (`OutputRegions.take` returns None when all are busy: that request then
gets its predictions in the message as before). Regions are POSIX shared memory named `dlrmbench<pid>o<i>`,
unlinked by `close()`.
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

PREFIX = "dlrmbench{pid}o"


@dataclass
class Region:
    """One registered region: Triton's name for it, its memory, its size in bytes."""

    name: str
    memory: shared_memory.SharedMemory
    byte_size: int

    def read(self, count: int) -> np.ndarray:
        """A copy of the first `count` float32 values (the region is reused by the next request)."""
        return np.frombuffer(self.memory.buf, dtype=np.float32, count=count).copy()


class OutputRegions:
    """`count` regions of `byte_size` bytes, registered with the server behind `client` (tritonclient.grpc)."""

    def __init__(self, client: Any, count: int, byte_size: int) -> None:
        self.client = client
        self.free: "queue.SimpleQueue[Region]" = queue.SimpleQueue()
        self.regions: list[Region] = []
        prefix = PREFIX.format(pid=os.getpid())
        try:
            for index in range(count):
                name = f"{prefix}{index}"
                memory = shared_memory.SharedMemory(name=name, create=True, size=byte_size)
                region = Region(name, memory, byte_size)
                self.regions.append(region)
                client.register_system_shared_memory(name, f"/{name}", byte_size)
                self.free.put(region)
        except BaseException:
            self.close()
            raise

    def take(self, byte_size: int) -> Region | None:
        """A free region of at least `byte_size` bytes, or None."""
        if byte_size > (self.regions[0].byte_size if self.regions else 0):
            return None
        try:
            return self.free.get_nowait()
        except queue.Empty:
            return None

    def give_back(self, region: Region) -> None:
        self.free.put(region)

    def close(self) -> None:
        """Unregister (if the server still answers) and unlink every region; idempotent."""
        for region in self.regions:
            try:
                self.client.unregister_system_shared_memory(region.name, client_timeout=2.0)
            except Exception:  # the server may be gone: the memory is still ours to free
                pass
            try:
                region.memory.close()
                region.memory.unlink()
            except (FileNotFoundError, BufferError):
                pass
        self.regions = []
