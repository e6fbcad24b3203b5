"""Streaming a dataset through a model on ONNX Runtime, in batches, in bounded memory.

The dataset kinds (`workers/methods/{top_activations,embedding,neighbors,unit_stats}.py`) see a
`core.methods.DatasetTask`: its `feed` (a `Feed`, which implements `core.methods.ActivationFeed`)
yields `FeatureBatch`es from `batches(layers)` — dataset indices, the images as the model saw them
(H×W×3 uint8, after resize and crop) and the requested layers' activations (N×C×h×w float32).
While ONNX Runtime runs one batch, a background thread decodes the next (through `core.images`,
the one image pipeline), so decoding hides behind the forward pass. At most `batch` × 3 decoded
images exist at once, whatever the dataset's size. After every batch the job's progress callback
runs; it raises to stop the job (cancel, time limit).

ORT sessions whose outputs are exactly the wanted layers are built once per worker process and
kept in a small LRU keyed by (model file, layers). The job runner opens a feed with `open_feed`
(`workers/inputs.py`).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx

from core import images
from core.errors import NotFound, Unavailable
from core.kinds.dataset import load_steps, pass_steps
from core.methods import FeatureBatch, Progress, no_progress
from core.model_record import ModelRecord
from core.settings import Settings
from core.stores.datasets import Dataset
from core.stores.models import ModelStore
from models import runtime


class LayerSessions:
    """ONNX Runtime sessions that output exactly some layers of a model (the rest of the graph pruned)."""

    def __init__(self, settings: Settings, capacity: int = 4):
        self.settings = settings
        self.capacity = capacity
        self._sessions: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, record: ModelRecord, data: Callable[[], bytes], layers: tuple[str, ...]):
        key = (record.onnx_sha256, layers)
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
        model = onnx.load_model_from_string(data())
        del model.graph.output[:]
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in layers)
        s = self.settings
        session = runtime.session(model, intra_threads=s.worker_torch_threads, inter_threads=s.ort_inter_threads,
                                  provider_setting=s.ort_providers)
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return session


class Feed:
    """A dataset as batches of model inputs and layer activations (see the module docstring)."""

    def __init__(self, dataset: Dataset, record: ModelRecord, session_for: Callable[[tuple[str, ...]], object],
                 settings: Settings, progress: Progress = no_progress, batch: int | None = None):
        self.dataset = dataset
        self.record = record
        self.session_for = session_for
        self.settings = settings
        self.progress = progress
        self.batch = batch or settings.dataset_batch
        self._done = self._total = 0

    def __len__(self) -> int:
        return self.dataset.count

    def name(self, index: int) -> str:
        return self.dataset.entries[index].name

    def size(self, index: int) -> tuple[int, int]:
        """(width, height) of image `index` as the dataset store decoded it when it was uploaded."""
        entry = self.dataset.entries[index]
        return entry.width, entry.height

    def prepare(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Image bytes → (H×W×3 uint8 at input size, 1×C×H×W model input)."""
        s = self.settings
        ready = images.prepare(data, self.record, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels,
                               max_resized_pixels=s.max_resized_pixels)
        return ready.fitted, ready.x

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            data = self.dataset.read(index)
        except (OSError, IndexError):
            raise NotFound(f"image {index} of dataset {self.dataset.id} is no longer stored (the dataset was "
                           "deleted or has expired)", code="dataset_not_found") from None
        return self.prepare(data)

    def images(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, H×W×3 uint8 at input size) of a few chosen images, one decoded at a time, in index order;
        progress continues after `batches` (see its `extra_steps`), one step per `batch` images, and reaches
        its total at the end (fewer images than `extra_steps` allowed for end early)."""
        for n, index in enumerate(sorted({int(i) for i in indices})):
            if n and n % self.batch == 0:
                self._step()
            yield index, self.load(index)[0]
        if self._done < self._total:
            self._done = self._total
            self.progress(self._done, self._total)

    def _step(self) -> None:
        self._done = min(self._done + 1, self._total)
        self.progress(self._done, self._total)

    def forward(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Activations (N×C×h×w float32) of `layers` for a model-input batch `x` (N×C×H×W)."""
        layers = tuple(layers)
        outputs = self.session_for(layers).run(list(layers), {self.record.input_name: x})
        return {name: np.asarray(value, np.float32) for name, value in zip(layers, outputs)}

    def batches(self, layers: Sequence[str], extra_steps: int = 0) -> Iterator[FeatureBatch]:
        """The whole dataset, `batch` images at a time; progress reported after each batch. `extra_steps`:
        steps the kind will take after this pass (`images` of `extra_steps * batch` winners)."""
        layers = tuple(dict.fromkeys(layers))
        self._done, self._total = 0, pass_steps(len(self), self.batch) + extra_steps
        self.progress(0, self._total)
        for indices, pixels, x in self._decoded():
            features = self.forward(x, layers)
            yield FeatureBatch(indices, pixels, features)
            self._step()

    def steps_for(self, images: int) -> int:
        """Progress steps `images` will take to load one by one."""
        return load_steps(images, self.batch)

    def _decoded(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Decoded batches, produced one ahead by a background thread (bounded queue)."""
        chunks = [range(start, min(start + self.batch, len(self))) for start in range(0, len(self), self.batch)]
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def produce() -> None:
            for chunk in chunks:
                try:
                    prepared = [self.load(i) for i in chunk]
                    item = (np.asarray(chunk, np.int64), np.stack([p for p, _ in prepared]),
                            np.concatenate([x for _, x in prepared]))
                except BaseException as exc:  # handed to the consumer, raised there
                    item = exc
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or isinstance(item, BaseException):
                    return

        worker = threading.Thread(target=produce, name="dataset-decode", daemon=True)
        worker.start()
        try:
            for _ in chunks:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join(timeout=5)


_sessions: LayerSessions | None = None
_sessions_lock = threading.Lock()


def layer_sessions(settings: Settings) -> LayerSessions:
    """The worker process's session cache (built on first use)."""
    global _sessions
    with _sessions_lock:
        if _sessions is None:
            _sessions = LayerSessions(settings)
        return _sessions


def open_feed(settings: Settings, models: ModelStore, record: ModelRecord, dataset: Dataset,
              progress: Progress = no_progress) -> Feed:
    """The feed of an opened `dataset` through `record`'s model, on this process's cached ORT sessions."""
    sessions = layer_sessions(settings)

    def model_bytes() -> bytes:
        try:
            return models.read_blob(record.onnx_sha256)  # verified; fetched once into this machine's cache
        except (OSError, KeyError) as exc:
            raise Unavailable(f"the file of model {record.id!r} cannot be read ({exc.__class__.__name__})",
                              code="model_unavailable") from None

    return Feed(dataset, record, lambda layers: sessions.get(record, model_bytes, layers), settings, progress)
