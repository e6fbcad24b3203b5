"""A model's ONNX Runtime sessions for the forward views, and the process's set of them (`Runtimes`).

A model's sessions are built on first use (`models.runtime.session_from_file`) and kept in the process's
byte-bounded `models.sessions.SessionCache`:

    plain           the class scores only (ONNX Runtime can fuse every op): predictions, occlusion batches
    upto:<layer>    a layer's activations: the sub-graph that computes the layer and nothing after it
                    (`models.truncate`), so an early layer costs a fraction of a whole forward; the layers
                    before it that a fusing op reads (a residual Add) stay outputs, so the numbers are the
                    probe's, bit for bit. Evicted before plain sessions.
    probe           every layer as an output: the fallback for a layer whose sub-graph cannot be cut out

In the API on a CPU, each of these is built twice (`Twins`): a run that goes alone takes the twin whose intra-op
threads spin between ops, runs side by side the one whose threads sleep.

In the API, runs go through a `models.batching.DynamicBatcher` (one per `Runtimes`): predictions, occlusion
chunks and activations of the same layer that arrive together run as one batch. A model whose file fixes
the batch at one image (`max_batch` 1) is run one image at a time, never batched. The API also gives its runtimes a
`background` thread: a new session's batch size is measured there after its first run, a layer's first request runs
on the probe session (when one is held) while the layer's own session is built there, and `models.warm` warms
sessions there at start. Background work waits for a moment with no forward run in flight (`InFlight`, at most
`BACKGROUND_PATIENCE_S`): started beside the run of the request that asked for it, a session build or a batch
measurement would take the cores from that very run. What is computed on these sessions (predictions, activations,
occlusion) is `models.forward`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import Unavailable
from core.model_record import ModelRecord
from core.settings import Settings
from core.stores.models import ModelStore
from models import runtime
from models.batching import DynamicBatcher, best_batch, running_alone
from models.deadline import Limited
from models.sessions import SessionCache, estimate_bytes, keep_freed_buffers, upto_bytes
from models.truncate import cut_before, truncate

log = logging.getLogger("convscope.forward")
BACKGROUND_PATIENCE_S = 2.0  # the longest background work waits for a moment with no forward run in flight


class InFlight:
    """The forward runs in flight in this process (nested calls count once each), so that background work can
    wait for a moment with none."""

    def __init__(self):
        self._count = 0
        self._changed = threading.Condition()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                if not self._count:
                    self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is in flight, at most `timeout` s; whether that moment came."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


class Twins:
    """One session built twice, the same graph and threads: `quick`'s intra-op pool threads spin between the ops of a
    run (ONNX Runtime's default, stopped when the run ends), `quiet`'s sleep. A batch that runs alone on the machine
    (`models.batching.running_alone`) takes `quick`: a waking thread per op is what a lone run waits for. Otherwise
    `quiet`: beside another run, or beside another process (a worker's job), a spinning thread takes a core the
    other needs, and a parallel op whose thread was descheduled waits for it, so the slowest answers get slower.
    Anything else is `quiet`'s (outputs, providers), so callers see one session."""

    def __init__(self, quiet, quick):
        self.quiet, self.quick = quiet, quick

    def run(self, outputs, feeds, options=None) -> list[np.ndarray]:
        return (self.quick if running_alone() else self.quiet).run(outputs, feeds, options)

    def __getattr__(self, name: str):
        return getattr(self.quiet, name)


def when_quiet(background: Executor, in_flight: InFlight, fn: Callable, *args) -> None:
    """`fn(*args)` on the `background` thread once no forward run is in flight (at most `BACKGROUND_PATIENCE_S`
    later); nothing once the process is stopping."""
    def quietly() -> None:
        in_flight.wait_idle(BACKGROUND_PATIENCE_S)
        fn(*args)
    try:
        background.submit(quietly)
    except RuntimeError:  # shut down (`Runtimes.close`)
        pass


@dataclass
class ModelRuntime:
    """A model's ONNX Runtime sessions, reached through the process's `SessionCache`: each property access
    returns the cached session (built on first use from the model's verified local file). A caller that
    runs several batches takes the session once, so an eviction meanwhile never changes it mid-request."""

    record: ModelRecord
    settings: Settings
    sessions: SessionCache
    file: Callable[[], Path]
    batcher: DynamicBatcher | None = None
    intra_threads: int | None = None  # None: settings.ort_intra_threads
    background: Executor | None = None  # measures batch sizes off the request path (the API); None: in the first run
    used: Callable[[str, str], None] | None = None  # told (model id, variant) at each run (`models.warm.RecentSessions`)
    closing: threading.Event | None = None  # set when the process stops: background work ends at its next step
    time_limit_s: float | None = None  # runs of `_runs` stop after this (`models.deadline`; the API); None: no limit
    in_flight: InFlight = field(default_factory=InFlight)  # the process's runs, which background work lets go first
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _weights: dict = field(default_factory=dict)
    _uncut: set = field(default_factory=set)  # layers whose sub-graph could not be cut out (the probe serves them)
    _rows: dict = field(default_factory=dict)  # variant → images per run (`batch_rows`)
    _measuring: set = field(default_factory=set)  # variants whose batch size was handed to `background`
    _cutting: set = field(default_factory=set)  # layers whose sub-graph session is being built in `background`
    _measuring_lock: threading.Lock = field(default_factory=threading.Lock)  # one measure at a time, not under _lock

    def _key(self, variant: str) -> tuple[str, str, str]:
        return (self.record.id, self.record.onnx_sha256, variant)

    def held(self, variant: str) -> bool:
        """Whether the session `variant` is in the session cache now."""
        return self.sessions.held(self._key(variant))

    def _position(self, name: str) -> int:
        """Index of layer `name` in the layer list; the last layer's for a name not listed."""
        names = [layer.name for layer in self.record.layers or []]
        return names.index(name) if name in names else len(names) - 1

    def _threads(self) -> int:
        return ort_threads(self.settings.ort_intra_threads if self.intra_threads is None else self.intra_threads)

    def _build(self, extra_outputs: list[str] = (), path: Path | None = None, spinning: bool | None = None):
        s = self.settings
        return runtime.session_from_file(path or self.file(), extra_outputs=extra_outputs, intra_threads=self._threads(),
                                         inter_threads=s.ort_inter_threads, provider_setting=s.ort_providers,
                                         allow_spinning=s.ort_allow_spinning if spinning is None else spinning)

    @functools.cached_property
    def _twinned(self) -> bool:
        """Whether the forward views' sessions come as `Twins`: batched runs (the API), a pool to spin (more than one
        thread, on the CPU: on a GPU the twin would only hold a second copy of the weights in its memory), and
        sessions that do not spin already."""
        s = self.settings
        return (s.ort_spin_alone and not s.ort_allow_spinning and self.batcher is not None and self._threads() > 1
                and runtime.providers(s.ort_providers)[0] == "CPUExecutionProvider")

    def _build_views(self, extra_outputs: list[str] = (), path: Path | None = None):
        """A session of the forward views: `Twins` when `_twinned`, else one session."""
        quiet = self._build(extra_outputs, path)
        return Twins(quiet, self._build(extra_outputs, path, spinning=True)) if self._twinned else quiet

    def _runs(self, variant: str, session, outputs: list[str], x: np.ndarray) -> np.ndarray:
        """The first output for the rows of `x`, in runs of at most `batch_rows` images, through the dynamic
        batcher (batches capped at that size) when there is one and the model takes batches. Counted as a run in
        flight (`InFlight`) from before it may hand a batch measurement to the background thread."""
        with self.in_flight.running():
            return self._batched_runs(variant, session, outputs, x)

    def _batched_runs(self, variant: str, session, outputs: list[str], x: np.ndarray) -> np.ndarray:
        step = self.batch_rows(variant, session, outputs, x)
        if self.time_limit_s:
            session = Limited(session, self.time_limit_s)  # 503 `forward_timeout` past it
        if self.batcher is None or self.record.max_batch == 1:
            def run(rows: np.ndarray) -> list[np.ndarray]:
                return session.run(outputs, {self.record.input_name: rows})
        else:
            def run(rows: np.ndarray) -> list[np.ndarray]:
                return self.batcher.run(self._key(variant), session, outputs, self.record.input_name, rows,
                                        max_rows=step)
        outs = [run(x[i:i + step])[0] for i in range(0, len(x), step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def batch_rows(self, variant: str, session, outputs: list[str], x: np.ndarray) -> int:
        """Images per run of this session: 1 for a model whose file fixes the batch at one; with
        `forward_batch_tune`, the size up to `forward_batch_max` that costs least per image, measured on this
        machine the first time the session runs (`models.batching.best_batch`, on copies of the first row of `x`;
        once per session and process, since the best size depends on the machine); else `forward_batch_max`.
        With a `background` executor the size is measured there, after the first run, which runs as untuned
        (`forward_batch_max` images at most): a session's first request does not wait for the measuring."""
        if self.record.max_batch == 1:
            return 1
        limit = self.settings.forward_batch_max
        if not self.settings.forward_batch_tune:
            return limit
        rows = self._rows.get(variant)
        if rows is not None:
            return rows
        if self.background is None:
            return self.measure(variant, session, outputs, x)
        with self._lock:
            first = variant not in self._measuring
            self._measuring.add(variant)
        if first:
            self._later(self._measure_later, variant, session, outputs, x[:1].copy())
        return limit

    def _later(self, fn: Callable, *args) -> None:
        when_quiet(self.background, self.in_flight, fn, *args)

    def measure(self, variant: str, session, outputs: list[str], x: np.ndarray) -> int:
        """The batch size of the session `variant`, measured now unless known (`models.batching.best_batch`)."""
        with self._measuring_lock:
            rows = self._rows.get(variant)
            if rows is None:
                def run(n: int):
                    session.run(outputs, {self.record.input_name: np.repeat(x[:1], n, axis=0)})
                rows = self._rows[variant] = best_batch(run, self.settings.forward_batch_max)
                log.info("batch size measured", extra={"fields": {"model": self.record.id, "session": variant,
                                                                  "images_per_run": rows}})
        return rows

    def _measure_later(self, variant: str, session, outputs: list[str], x: np.ndarray) -> None:
        if self.closing is not None and self.closing.is_set():
            return
        try:
            self.measure(variant, session, outputs, x)
        except Exception:  # not retried: the session's runs stay untuned, and still run
            log.exception("batch size not measured", extra={"fields": {"model": self.record.id, "session": variant}})

    def measured(self, variant: str) -> int | None:
        """Images per run found for the session `variant`, None while not measured."""
        return self._rows.get(variant)

    def warm(self, variant: str) -> bool:
        """Build the session `variant` (`plain`, `probe` or `upto:<layer>`), measure its batch size and run it once on a
        blank image, as its first request would: for start-up and the background, off the request path. False when
        the process began to stop first (`closing`)."""
        if self.closing is not None and self.closing.is_set():
            return False
        if variant.startswith("upto:"):
            name = variant.removeprefix("upto:")
            session, variant = self.upto(name, now=True)
            outputs = [name]
        elif variant == "probe":
            session, outputs = self.probe, [self.record.layers[-1].name] if self.record.layers else []  # all of it
        else:
            session, outputs = self.plain, [self.record.logits_name]
        if self.closing is not None and self.closing.is_set():
            return False
        shape = self.record.input
        x = np.zeros((1, shape.channels, shape.height, shape.width), np.float32)
        if self.record.max_batch != 1 and self.settings.forward_batch_tune:
            self.measure(variant, session, outputs, x)
        for each in (session.quiet, session.quick) if isinstance(session, Twins) else (session,):
            each.run(outputs, {self.record.input_name: x})  # not `_runs`: a warm-up is not a use
        return True

    def variant_bytes(self, variant: str) -> int:
        """Estimated bytes of the session `variant` (what the session cache weighs it)."""
        twice = 2 if self._twinned else 1
        if variant.startswith("upto:"):
            return twice * upto_bytes(self.record, self._position(variant.removeprefix("upto:")))
        return twice * estimate_bytes(self.record, probe=variant == "probe")

    @property
    def plain(self):
        def build():
            session = self._build_views()
            if self.record.logits_name not in {o.name for o in session.get_outputs()}:
                session = self._build_views([self.record.logits_name])  # the input of a trailing Softmax
            return session
        return self.sessions.get(self._key("plain"), build, lambda: self.variant_bytes("plain"))

    @property
    def probe(self):
        return self.sessions.get(self._key("probe"),
                                 lambda: self._build_views([layer.name for layer in self.record.layers or []]),
                                 lambda: self.variant_bytes("probe"), probe=True)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W input → N×classes logits (one image per call for models with `max_batch` 1); only for a
        model with class scores (the routes refuse the others with 422 `no_class_scores`)."""
        if self.used is not None:
            self.used(self.record.id, "plain")
        return self._runs("plain", self.plain, [self.record.logits_name], x).reshape(len(x), -1)

    def layer(self, x: np.ndarray, name: str) -> np.ndarray:
        """N×C×H×W input → the layer's N×C'×H'×W' activations, from the layer's truncated session (the probe
        where the sub-graph could not be cut); one image per call for models with `max_batch` 1."""
        with self.in_flight.running():  # before `upto`, which may hand the layer's session to the background thread
            session, variant = self.upto(name)
            if self.used is not None:
                self.used(self.record.id, "probe" if name in self._uncut else f"upto:{name}")
            return self._runs(variant, session, [name], x)

    def upto(self, name: str, now: bool = False):
        """(session, variant) that computes layer `name`: the sub-graph up to it, cached as `upto:<name>`. With a
        `background` executor and the probe session held, a layer's first request is run on the probe (the same
        numbers) while its sub-graph is built and measured in the background; `now` builds it here."""
        if name in self._uncut:
            return self.probe, "probe"
        if not now and self.background is not None and not self.held(f"upto:{name}") and self.held("probe"):
            with self._lock:
                first = name not in self._cutting
                self._cutting.add(name)
            if first:
                self._later(self._cut_later, name)
            return self.probe, "probe"
        layers = [layer.name for layer in self.record.layers or []]
        position = self._position(name)

        def build():
            with runtime.scratch_onnx("convscope-upto-") as tmp:
                truncate(self.file(), name, tmp, probe_outputs=layers[:position])
                return self._build_views(path=tmp)
        try:
            return self.sessions.get(self._key(f"upto:{name}"), build, lambda: self.variant_bytes(f"upto:{name}"),
                                     probe=True), f"upto:{name}"
        except ValueError as exc:  # e.g. a layer no node makes: the probe has every layer
            log.info("layer served by the probe", extra={"fields": {"model": self.record.id, "layer": name,
                                                                    "why": str(exc)}})
            self._uncut.add(name)
            return self.probe, "probe"

    def _cut_later(self, name: str) -> None:
        try:
            self.warm(f"upto:{name}")
        except Exception:  # the next request of the layer meets the same error, and answers it
            log.exception("layer session not built", extra={"fields": {"model": self.record.id, "layer": name}})
        finally:
            with self._lock:
                self._cutting.discard(name)

    def from_layer(self, name: str, activations: np.ndarray, x: np.ndarray) -> np.ndarray:
        """N×c×h×w activations of layer `name` → N×classes logits: the graph cut before the layer
        (`models.truncate.cut_before`, cached as `from:<name>`), the model input `x` (1×C×H×W, repeated) fed to
        what bypasses the layer. Runs as given (the caller batches), one image per run for `max_batch` 1."""
        session, inputs = self.sessions.get(self._key(f"from:{name}"), lambda: self._cut_before(name),
                                            lambda: estimate_bytes(self.record, probe=False), probe=True)
        rows = 1 if self.record.max_batch == 1 else len(activations)
        outs = []
        for i in range(0, len(activations), rows):
            feeds = {inputs[0]: activations[i:i + rows]}
            feeds.update({other: np.repeat(x[:1], len(feeds[inputs[0]]), axis=0) for other in inputs[1:]})
            outs.append(session.run([self.record.logits_name], feeds)[0])
        return np.concatenate(outs).reshape(len(activations), -1)

    def _cut_before(self, name: str):
        layer = self.record.layer(name)
        with runtime.scratch_onnx("convscope-from-") as tmp:
            inputs = cut_before(self.file(), name, self.record.logits_name, tmp, list(layer.shape))
            return self._build(path=tmp), inputs  # one entry of the session cache

    def conv_weights(self, name: str) -> np.ndarray | None:
        """Weights of the convolution producing layer `name` (None when it is not a Conv); the ONNX
        file is parsed once per layer asked for, not on every request."""
        with self._lock:
            if name not in self._weights:
                import onnx

                from models.graph import conv_weights

                self._weights[name] = conv_weights(onnx.load_model(str(self.file())), name)
            return self._weights[name]

    def weight_graph(self):
        """The model's weights and tensor shapes for its expanded weights (`models.circuit.WeightGraph`, which
        keeps each layer's plan): built once per model, kept in the session cache, weighing the file's size."""
        from models.circuit import WeightGraph

        return self.sessions.get(self._key("circuit"), lambda: WeightGraph.load(self.file(), self.record),
                                 lambda: int(self.record.size_bytes or 0), probe=True)


def ort_threads(setting: int) -> int:
    """Intra-op threads of a session: `setting`, or with 0 the cores this process may run on."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_slots(settings: Settings) -> int:
    """Forward runs the API lets go at once (`forward_batch_instances`; 0: one per core this process may use).

    Runs of a session share its intra-op pool, whose workers take whichever run's work is ready while each run's
    own thread works on its run: a lone run gets every thread, and under load each core carries a run, so one run
    per core gets more images through than one run at a time without slowing a lone run (figures in
    bench/RESULTS.md)."""
    if settings.forward_batch_instances > 0:
        return settings.forward_batch_instances
    return ort_threads(0)


class Runtimes:
    """The process's `ModelRuntime`s (small handles: the sessions themselves live in one `SessionCache` of
    `budget_bytes`, by default `session_cache_bytes`). With `batch_rows` > 1, forward runs of the same
    session that arrive together are batched (`models.batching`; the API); `intra_threads` overrides
    `ort_intra_threads` (workers give their sessions their own thread share). With `background`, batch sizes are
    measured on a thread of its own, off the request path (the API; `models.warm` warms sessions there too), and
    `used(model id, variant)` is told of every run. With `time_limit_s`, forward runs (a request's together, within
    `models.deadline.request`) stop after that long with 503 `forward_timeout` (the API). `coming()` counts the
    requests on their way to the batcher (the API: forward views admitted), so that a run knows whether it runs alone."""

    def __init__(self, store: ModelStore, settings: Settings, budget_bytes: int | None = None, *,
                 batch_rows: int = 1, batch_wait_s: float = 0.0, batch_instances: int = 1,
                 intra_threads: int | None = None, background: bool = False,
                 used: Callable[[str, str], None] | None = None, time_limit_s: float | None = None,
                 coming: Callable[[], int] | None = None):
        keep_freed_buffers()  # runs reuse warm memory (see models.sessions)
        self.store = store
        self.settings = settings
        self.sessions = SessionCache(budget_bytes or settings.session_cache_bytes)
        self.batcher = DynamicBatcher(batch_rows, batch_wait_s, batch_instances, coming) if batch_rows > 1 else None
        self.intra_threads = intra_threads
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessions") if background else None
        self.in_flight = InFlight()
        self.closing = threading.Event()
        self.used = used
        self.time_limit_s = time_limit_s
        self._handles: dict[tuple[str, str], ModelRuntime] = {}
        self._lock = threading.Lock()

    def get(self, record: ModelRecord) -> ModelRuntime:
        """The model's runtime; its sessions are built on first use, one build per session at a time, so requests
        to other models go on meanwhile."""
        key = (record.id, record.onnx_sha256)
        with self._lock:
            hit = self._handles.get(key)
            if hit is None:
                for stale in [k for k in self._handles if k[0] == record.id]:  # the model was replaced
                    del self._handles[stale]
                hit = self._handles[key] = ModelRuntime(record, self.settings, self.sessions,
                                                        lambda: self._file(record), self.batcher, self.intra_threads,
                                                        self.background, self.used, self.closing,
                                                        time_limit_s=self.time_limit_s, in_flight=self.in_flight)
        return hit

    def _file(self, record: ModelRecord) -> Path:
        try:
            return self.store.blob_file(record.onnx_sha256)
        except (OSError, KeyError) as exc:
            raise Unavailable(f"the file of model {record.id!r} cannot be read ({exc.__class__.__name__})",
                              code="model_unavailable") from None

    def drop(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._handles if k[0] == model_id]:
                del self._handles[key]
        self.sessions.drop(lambda key: key[0] == model_id)

    def count(self) -> int:
        return self.sessions.stats()["sessions"]

    def close(self) -> None:
        """Stop the background thread: what it runs now ends at its next step (a session built or measured), nothing
        queued starts."""
        self.closing.set()
        if self.background is not None:
            self.background.shutdown(wait=True, cancel_futures=True)
