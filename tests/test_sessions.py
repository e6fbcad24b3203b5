"""The byte-bounded ONNX Runtime session cache (models/sessions.py) and outputs added without parsing weights."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from core.settings import Settings
from models import runtime
from models.runtimes import Runtimes
from models.sessions import SessionCache, estimate_bytes
from tests import onnx_builders
from tests.conftest import BUILTIN_DATA

ROOT = Path(__file__).resolve().parents[1]


class Session:
    """Stands in for an ONNX Runtime session in the cache's unit tests (the cache never calls it)."""

    def __init__(self, name: str):
        self.name = name


def test_least_recently_used_go_first_and_probes_before_plain_sessions():
    cache = SessionCache(budget_bytes=400)  # room for three, with a build's transient double
    cache.get("a", lambda: Session("a"), 100)
    cache.get("a-probe", lambda: Session("a-probe"), 100, probe=True)
    cache.get("b", lambda: Session("b"), 100)
    cache.get("a", lambda: Session("never"), 100)  # a hit: a is now the most recent
    cache.get("c", lambda: Session("c"), 100)  # no room to build: the probe goes although b is older
    assert not cache.held("a-probe") and cache.held("a") and cache.held("b") and cache.held("c")
    cache.get("d", lambda: Session("d"), 100)  # no probe left: the least recently used plain one (b)
    assert [k for k in ("a", "b", "c", "d") if cache.held(k)] == ["a", "c", "d"]
    assert cache.stats() == {"sessions": 3, "bytes": 300, "probes": 0, "evictions": 2, "builds": 5,
                             "build_seconds": cache.stats()["build_seconds"]}
    big = cache.get("huge", lambda: Session("huge"), 10_000)  # larger than the budget: kept alone, still served
    assert big.name == "huge" and cache.stats()["sessions"] == 1


def test_a_size_given_as_a_callable_is_asked_only_when_the_session_is_built():
    cache = SessionCache(budget_bytes=400)
    asked = []

    def size() -> int:
        asked.append(1)
        return 150

    for _ in range(3):
        cache.get("a", lambda: Session("a"), size)
    assert len(asked) == 1 and cache.stats()["bytes"] == 150


def test_concurrent_requests_for_one_session_wait_for_one_build():
    cache, builds = SessionCache(budget_bytes=10**9), []

    def build():
        builds.append(1)
        time.sleep(0.2)
        return Session("x")

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("x", build, 1))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({id(s) for s in got}) == 1


def test_with_outputs_matches_adding_them_through_the_protobuf(tmp_path):
    data = onnx_builders.export(onnx_builders.seeded(onnx_builders.ClassicNet()), opset=13)
    model = onnx.load_model_from_string(data)
    (tmp_path / "m.onnx").write_bytes(data)
    names = [node.output[0] for node in model.graph.node if node.op_type in ("Conv", "Relu", "MaxPool")]
    names.append(model.graph.output[0].name)  # already an output: not added twice
    fast = runtime.session_from_file(tmp_path / "m.onnx", extra_outputs=names)
    slow = runtime.session(model, extra_outputs=names)
    assert [o.name for o in fast.get_outputs()] == [o.name for o in slow.get_outputs()]
    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    for a, b in zip(fast.run(None, {"input": x} if fast.get_inputs()[0].name == "input" else
                             {fast.get_inputs()[0].name: x}), slow.run(None, {slow.get_inputs()[0].name: x})):
        np.testing.assert_array_equal(a, b)
    runtime.with_outputs(tmp_path / "m.onnx", names, tmp_path / "out.onnx")
    rewritten = onnx.load(str(tmp_path / "out.onnx"))
    assert len(rewritten.graph.initializer) == len(model.graph.initializer)
    assert [o.name for o in rewritten.graph.output] == [model.graph.output[0].name] + names[:-1]


def test_the_api_runtimes_keep_within_their_budget_and_a_request_in_flight_survives_eviction(builtin_store, builtin):
    plain, probe = estimate_bytes(builtin, probe=False), estimate_bytes(builtin, probe=True)
    assert probe > plain > builtin.size_bytes
    runtimes = Runtimes(builtin_store, Settings(), budget_bytes=plain + 1)
    rt = runtimes.get(builtin)
    x = np.zeros((1, 3, 224, 224), np.float32)
    held = rt.plain  # a request holding the plain session ...
    layer = builtin.layers[3].name
    assert rt.layer(x, layer).shape[1:] == tuple(builtin.layers[3].shape)  # ... while the probe evicts it
    stats = runtimes.sessions.stats()
    assert stats["sessions"] == 1 and stats["probes"] == 1 and stats["evictions"] == 1
    logits = held.run([builtin.logits_name], {builtin.input_name: x})[0]  # the evicted session still runs
    np.testing.assert_allclose(rt.logits(x), logits.reshape(1, -1), rtol=1e-5, atol=1e-5)
    assert runtimes.sessions.stats()["probes"] == 0  # the plain one came back and the probe made room
    runtimes.drop(builtin.id)
    assert runtimes.count() == 0


def test_sessions_are_built_without_the_cpu_arena():
    options = runtime._options(1, 1)
    assert options.enable_cpu_mem_arena is False
    assert runtime._provider_options(["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CUDAExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})
    assert "CPUExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not runtime.gpu_present(), reason="no GPU here")
def test_cuda_is_chosen_when_a_gpu_is_present():
    assert runtime.providers("auto")[0] == "CUDAExecutionProvider"


FORWARDS_ON_FRESH_THREADS = """
import json, resource, statistics, sys, threading
import numpy as np
from core.settings import Settings
from core.stores.models import ModelStore
from models import runtimes
from models.builtin import BUILTIN_ID
if sys.argv[2] == "glibc-default":
    runtimes.keep_freed_buffers = lambda: False
settings = Settings(data_dir=sys.argv[1])
store = ModelStore(settings.data_dir)
rt = runtimes.Runtimes(store, settings.model_copy(update={"forward_batch_tune": False})).get(store.get(BUILTIN_ID))
x = np.random.default_rng(0).random((int(sys.argv[3]), 3, 224, 224), np.float32)
medians = []
def forwards():
    faults = []
    for _ in range(30):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rt.logits(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    medians.append(statistics.median(faults[-10:]))
for _ in range(int(sys.argv[4])):  # one thread after another, as the API's pool hands requests to its threads
    thread = threading.Thread(target=forwards)
    thread.start()
    thread.join()
print(json.dumps(medians))
"""


def faults_per_forward(allocator: str, images: int = 1, threads: int = 16) -> list[float]:
    """Page faults per forward of the built-in model (median over a thread's last 10 of 30 runs of `images` at
    once) on `threads` fresh threads in turn."""
    done = subprocess.run([sys.executable, "-c", FORWARDS_ON_FRESH_THREADS, str(BUILTIN_DATA), allocator, str(images),
                           str(threads)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_forwards_reuse_warm_memory_on_every_thread(builtin_store):
    """Without the arena, glibc's default policy maps and unmaps a heap around every forward on some threads, and
    each forward there faults its buffers in again (2,549 pages, 7.1 → 10.5–10.9 ms; by hand, with
    `keep_freed_buffers` made a no-op: 23 of 128 and 4 of 64 threads). With it, no thread faults more than a few."""
    medians = faults_per_forward("tuned")
    assert max(medians) < 100, medians


def test_a_batch_with_a_buffer_past_the_mapping_threshold_reuses_warm_memory(builtin_store):
    """A batch of 4 needs a 40 MB buffer, past glibc's largest mapping threshold (32 MB): mapped and unmapped on
    every run unless mapping is off, 10,193 page faults a forward (7.7-7.9 against 6.0 ms an image)."""
    medians = faults_per_forward("tuned", images=4, threads=1)
    assert max(medians) < 100, medians
