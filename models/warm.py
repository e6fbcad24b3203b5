"""Sessions made ready before a request needs them, so that no user pays for a cold start.

- At start, the built-in model's plain session (predictions, occlusion) and probe session (every layer) are built,
  their batch sizes measured and each run once before `/readyz` says ready (`Warmer.ready`); `/healthz` answers
  meanwhile.
- Then the sessions used most recently by any API process (`RecentSessions`, a short list in Redis) are warmed the
  same way, newest first, each only when it fits the session budget without evicting another.
- A session first built by a request has its batch size measured after that request (`ModelRuntime.batch_rows`),
  and a layer's first activations run on a probe session already held while the layer's own sub-graph session is
  built (`ModelRuntime.upto`).

All of it runs on the runtimes' one background thread (`Runtimes.background`), one task per session, so a batch size
a request left to measure waits behind at most the session being warmed, not the whole list; after start, each task
first waits for a moment with no forward run in flight (`models.runtimes.when_quiet`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from core.stores.models import ModelStore
from models.runtimes import Runtimes, when_quiet

log = logging.getLogger("convscope.forward")


class RecentSessions:
    """The sessions used most recently, shared by every API process: the sorted set `{prefix}sessions:recent` of
    `<model id>\\t<variant>` scored by the Unix time of its last use (seconds), trimmed to `keep` entries.

    Called as `used(model id, variant)` at every run (`Runtimes(used=...)`): it writes a session's use at most once
    per `every_s` seconds per process, through `submit` (the background thread: never on a request's thread)."""

    def __init__(self, client: redis.Redis, prefix: str, keep: int, every_s: float = 60.0,
                 submit: Callable | None = None):
        self.client, self.key, self.keep, self.every_s = client, f"{prefix}sessions:recent", keep, every_s
        self.submit = submit
        self._written: dict[tuple[str, str], float] = {}

    def __call__(self, model_id: str, variant: str) -> None:
        now = time.monotonic()
        last = self._written.get((model_id, variant))
        if self.keep == 0 or (last is not None and now - last < self.every_s):
            return
        self._written[(model_id, variant)] = now
        if self.submit is None:
            self._write(model_id, variant)
            return
        try:
            self.submit(self._write, model_id, variant)
        except RuntimeError:  # the background thread has stopped: the process is stopping
            pass

    def _write(self, model_id: str, variant: str) -> None:
        try:
            with self.client.pipeline() as pipe:
                pipe.zadd(self.key, {f"{model_id}\t{variant}": time.time()})
                pipe.zremrangebyrank(self.key, 0, -self.keep - 1)
                pipe.execute()
        except redis.RedisError as exc:  # a list for warming only: the request it came from is not affected
            log.info("recent session not listed", extra={"fields": {"model": model_id, "session": variant,
                                                                    "error": exc.__class__.__name__}})

    def newest(self) -> list[tuple[str, str]]:
        """(model id, variant), most recently used first; empty when Redis does not answer."""
        try:
            members = self.client.zrevrange(self.key, 0, self.keep - 1)
        except redis.RedisError:
            return []
        listed = [(m.decode() if isinstance(m, bytes) else m).partition("\t") for m in members]
        return [(model_id, variant) for model_id, _, variant in listed if model_id and variant]


class Warmer:
    """Warms `first` (by default the built-in models' plain and probe sessions: predictions, and any layer's first
    activations while its own session is built) and then sets `ready`; then the `recent`
    sessions, each when it fits the budget. Every session warmed goes into `warmed` as (model id, variant, seconds)."""

    def __init__(self, runtimes: Runtimes, store: ModelStore, recent: RecentSessions,
                 first: list[tuple[str, str]] | None = None, prepare: Callable[[], object] | None = None):
        assert runtimes.background is not None, "warming runs on the runtimes' background thread"
        self.runtimes, self.store, self.recent, self.first = runtimes, store, recent, first
        self.prepare = prepare  # anything else a first request would pay for (imports, tables), run first
        self.ready = threading.Event()
        self.warmed: list[tuple[str, str, float]] = []

    def start(self) -> None:
        self.runtimes.background.submit(self._start)

    def _start(self) -> None:
        try:
            if self.prepare is not None:
                self.prepare()
            if self.first is None:
                self.first = [(record.id, variant) for record in self.store.list() if record.source == "builtin"
                              for variant in ("plain", "probe")]
            for model_id, variant in self.first:
                if self.runtimes.closing.is_set():
                    break
                self.warm(model_id, variant, within_budget=False)
        except Exception:  # the store unreadable: /readyz says so, and the first request builds what it needs
            log.warning("sessions not warmed", exc_info=True)
        finally:
            self.ready.set()
        for model_id, variant in self.recent.newest():
            if (model_id, variant) not in (self.first or []) and not self.runtimes.closing.is_set():
                when_quiet(self.runtimes.background, self.runtimes.in_flight, self.warm, model_id, variant)

    def warm(self, model_id: str, variant: str, within_budget: bool = True) -> bool:
        """Build, measure and run the session once; False when the model is gone, the session would not fit the
        budget, or it failed (logged: the request that needs it will meet the same error and answer it)."""
        try:
            record = self.store.get(model_id)
        except Exception:  # the store unreadable: /readyz says so
            record = None
        if record is None:
            return False
        rt = self.runtimes.get(record)
        if within_budget and not rt.held(variant) and not self.runtimes.sessions.fits(
                rt.variant_bytes(variant)):
            log.info("session not warmed: over the budget", extra={"fields": {"model": model_id, "session": variant}})
            return False
        start = time.perf_counter()
        try:
            if not rt.warm(variant):
                return False
        except Exception:
            log.warning("session not warmed", exc_info=True, extra={"fields": {"model": model_id, "session": variant}})
            return False
        took = time.perf_counter() - start
        self.warmed.append((model_id, variant, took))
        log.info("session warmed", extra={"fields": {"model": model_id, "session": variant, "ms": round(took * 1000)}})
        return True
