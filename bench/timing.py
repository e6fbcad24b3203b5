"""Timing shared by the benchmarks: two calls timed alternately, so that load from elsewhere (or a shared
VM's drifting speed) falls on both alike."""

from __future__ import annotations

import statistics
import time


def alternate_ms(first, second, repeats: int) -> tuple[float, float]:
    """(median ms of `first`, median ms of `second`), after one warm-up call each, the two called in turn."""
    first(), second()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000
