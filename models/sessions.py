"""A byte-bounded cache of ONNX Runtime sessions, shared by every forward view of a process.

Entries are keyed by a tuple the caller chooses (`(model id, file digest, variant)`: `plain` for the
class scores, `probe` for every layer as an output; later variants such as truncated sub-graphs fit
the same scheme) and weighed by an estimate of the memory they hold (bytes: the weights, which every
session copies, plus the activations a run keeps; see `estimate_bytes`). When the total passes the
budget, sessions go least recently used first, probe sessions (large, rarely reused) before plain
ones; room is made before a session is built (twice its size: the build holds the parsed file
beside the session's own weights), and the one just built always stays, so a model larger than
the budget still runs.

Eviction only forgets a session: a request that already holds it keeps running on it, and its memory
goes when the last holder lets go. Sessions are built without the CPU arena (see
`models.runtime.session`), so what a released session held is handed back to the allocator, and
`malloc_trim` then returns glibc's free pages to the system. One session is built at a time per key
(concurrent requests for the same model wait for that one build); different keys build in parallel.

Without the arena, every run allocates its intermediate buffers from the C allocator and frees them at its end,
so glibc's policy decides whether the next run gets warm memory back. By default it does not on some threads: their
heap is full, so each forward maps a new heap for its buffers and unmaps it when they are freed, and the next forward
faults them in again, page by page, for as long as such a thread lives. `keep_freed_buffers` makes glibc keep them.
Torch's CPU tensors in the workers come from the same allocator, so the workers' methods gain from it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from core.model_record import ModelRecord

log = logging.getLogger("convscope.sessions")
FLOAT_BYTES = 4
BUILD_FACTOR = 2  # building a session holds the parsed file beside the session's own copy of the weights


def estimate_bytes(record: ModelRecord, probe: bool) -> int:
    """Memory a session of `record` holds, in bytes: its weights (the file's size) plus the activations of one
    image — every layer's output for a probe session, the two largest layer outputs for a plain one (ONNX
    Runtime reuses buffers between layers)."""
    sizes = sorted((_elements(layer.shape) * FLOAT_BYTES for layer in record.layers or []), reverse=True)
    held = sum(sizes) if probe else sum(sizes[:2])
    return int(record.size_bytes or 0) + held


def upto_bytes(record: ModelRecord, position: int) -> int:
    """Estimated bytes of the session up to the layer at `position` of the layer list: its share of the weights
    (layers up to it over all layers, of the file's size) and, as for a plain session, the two largest layer
    outputs up to it (one image; ONNX Runtime reuses buffers between the others)."""
    layers = record.layers or []
    if not layers:
        return estimate_bytes(record, probe=True)
    share = (position + 1) / len(layers)
    sizes = sorted((_elements(layer.shape) * FLOAT_BYTES for layer in layers[:position + 1]), reverse=True)
    return int(share * (record.size_bytes or 0)) + sum(sizes[:2])


def _elements(shape) -> int:
    n = 1
    for d in shape or []:
        n *= max(int(d or 1), 1)
    return n


@dataclass
class _Held:
    session: object
    bytes: int
    probe: bool


class SessionCache:
    """ONNX Runtime sessions within `budget_bytes` (estimated), least recently used first, probes first."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._held: OrderedDict[Hashable, _Held] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        self.evictions = 0
        self.builds = 0
        self.build_seconds = 0.0

    def get(self, key: Hashable, build: Callable[[], object], size: int | Callable[[], int], *, probe: bool = False):
        """The session at `key`, built by `build()` on first use (weighing `size` bytes; a callable is asked only
        then, so that a request that finds its session pays nothing for the estimate)."""
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                return held.session
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                held = self._held.get(key)
                if held is not None:
                    self._held.move_to_end(key)
                    return held.session
            size = size() if callable(size) else size
            with self._lock:  # make room first: while it is built, a session briefly needs about twice its size
                evicted = self._evict(keep=key, incoming=BUILD_FACTOR * size)
            if evicted:
                release_memory()
            start = time.perf_counter()
            session = build()
            with self._lock:
                self.builds += 1
                self.build_seconds += time.perf_counter() - start
                self._held[key] = _Held(session, size, probe)
                self._building.pop(key, None)
                evicted = self._evict(keep=key)
        if evicted:
            release_memory()
        return session

    def _evict(self, keep: Hashable, incoming: int = 0) -> int:
        """Drop least recently used sessions (probes first) until the total (plus `incoming` bytes about to be
        taken) fits; the caller holds the lock."""
        evicted = 0
        while self._total() + incoming > self.budget_bytes:
            victims = [k for k, h in self._held.items() if k != keep and h.probe] or \
                      [k for k in self._held if k != keep]
            if not victims:
                break
            gone = self._held.pop(victims[0])
            evicted += 1
            self.evictions += 1
            log.info("session evicted", extra={"fields": {"key": str(victims[0]), "bytes": gone.bytes,
                                                          "held_bytes": self._total()}})
        return evicted

    def _total(self) -> int:
        return sum(h.bytes for h in self._held.values())

    def drop(self, match: Callable[[Hashable], bool]) -> int:
        """Forget every session whose key `match`es (a deleted or replaced model); returns how many."""
        with self._lock:
            doomed = [k for k in self._held if match(k)]
            for key in doomed:
                del self._held[key]
        if doomed:
            release_memory()
        return len(doomed)

    def held(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._held

    def fits(self, size: int) -> bool:
        """Whether a session of `size` bytes could be built without evicting any (a build needs twice its size)."""
        with self._lock:
            return self._total() + BUILD_FACTOR * size <= self.budget_bytes

    def stats(self) -> dict:
        """sessions, bytes (estimated), probes, evictions, builds, build_seconds."""
        with self._lock:
            return {"sessions": len(self._held), "bytes": self._total(),
                    "probes": sum(1 for h in self._held.values() if h.probe), "evictions": self.evictions,
                    "builds": self.builds, "build_seconds": self.build_seconds}


# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -3, -4, -8
KEEP_BYTES = 64 << 20  # freed memory a heap keeps for reuse
BUFFER_BYTES = 32 << 20  # glibc's ceiling for its mapping threshold: buffers up to this size come from the heaps


@functools.cache
def _glibc():
    """The C library, when it is glibc (malloc_trim, mallopt); None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


@functools.cache
def keep_freed_buffers() -> bool:
    """Make glibc keep the buffers a forward frees for the next one, once per process. By default glibc maps a
    large buffer on its own and unmaps it when freed, so the next forward faults it in again page by page; it
    adapts its mapping threshold and trims its heaps above twice that. Here buffers come from the heaps: up to
    `BUFFER_BYTES` by the threshold, and past it too, since mapping is off (`M_MMAP_MAX` 0; a thread's heap holds
    up to 64 MB, and a buffer too large for one is still mapped). A heap keeps up to `KEEP_BYTES` free at its top,
    and a thread's emptied extra heap stays mapped (glibc unmaps it only when more than the top padding,
    `KEEP_BYTES`, would remain free before it). With the threshold alone, a batch's largest buffer could still be
    mapped anew and faulted in on every run; with mapping off it is reused. What is kept is bounded by the number of
    heaps (arenas), which this caps at the cores the process may use (glibc's default: eight per core), so that a
    process running many threads grows less than with glibc's defaults, and far less than with the keeping alone.
    `release_memory` still hands everything free back when a session is dropped. False where the C library is not
    glibc. Call it early: glibc fixes its arena limit once a process has more than eight."""
    libc = _glibc()
    if libc is None:
        return False
    arenas = len(os.sched_getaffinity(0))
    applied = [libc.mallopt(param, value) == 1 for param, value in  # each one, even when another is refused
               ((M_MMAP_THRESHOLD, BUFFER_BYTES), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_BYTES),
                (M_TOP_PAD, KEEP_BYTES), (M_ARENA_MAX, arenas))]
    return all(applied)


def release_memory() -> None:
    """Hand memory freed by dropped sessions back to the system (glibc keeps freed pages otherwise)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
