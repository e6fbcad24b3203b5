"""Dynamic batching of forward runs (models/batching.py): requests that arrive together run as one batch and
each gets exactly what it would get alone; fixed-batch-1 models are never batched; errors reach everyone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.settings import Settings
from models.batching import DynamicBatcher, best_batch, in_lane, running_alone
from models.runtimes import Runtimes, Twins
from models.sessions import estimate_bytes


def together(fn, inputs):
    """fn(x) for every x, each in its own thread, released at once; results in order."""
    results, errors = [None] * len(inputs), []
    start = threading.Barrier(len(inputs))

    def call(i):
        start.wait()
        try:
            results[i] = fn(inputs[i])
        except Exception as exc:
            errors.append(exc)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


@pytest.fixture
def images():
    rng = np.random.default_rng(2)
    return [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(6)]


def test_predictions_that_arrive_together_are_one_batch_with_the_numbers_of_each_alone(builtin_store, builtin, images):
    alone = Runtimes(builtin_store, Settings(ort_intra_threads=1)).get(builtin)
    expected = [alone.logits(x) for x in images]
    runtimes = Runtimes(builtin_store, Settings(ort_intra_threads=1, forward_batch_tune=False), batch_rows=8, batch_wait_s=0.2)
    rt = runtimes.get(builtin)
    rt.logits(images[0])  # the session is built before the race
    before = runtimes.batcher.figures.batches
    got, errors = together(rt.logits, images)
    assert not errors
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    figures = runtimes.batcher.figures
    assert figures.batches - before < len(images)  # at least two of them shared a run
    assert figures.rows == figures.requests == len(images) + 1


def test_activations_of_one_layer_batch_and_equal_the_probe(builtin_store, builtin, images):
    runtimes = Runtimes(builtin_store, Settings(ort_intra_threads=1, forward_batch_tune=False), batch_rows=4, batch_wait_s=0.2)
    rt = runtimes.get(builtin)
    name = builtin.layers[10].name
    got, errors = together(lambda x: rt.layer(x, name), images)
    assert not errors
    probe = rt.probe
    for x, maps in zip(images, got):
        np.testing.assert_array_equal(maps, probe.run([name], {builtin.input_name: x})[0])
    assert runtimes.batcher.figures.batches >= 2  # at most 4 rows a batch


def test_a_model_with_a_fixed_batch_of_one_is_run_one_image_at_a_time(builtin_store, builtin, images):
    fixed = builtin.model_copy(update={"max_batch": 1})
    runtimes = Runtimes(builtin_store, Settings(ort_intra_threads=1, forward_batch_tune=False), batch_rows=8, batch_wait_s=0.05)
    got, errors = together(runtimes.get(fixed).logits, images)
    assert not errors and all(g.shape == (1, 1000) for g in got)
    assert runtimes.batcher.figures.batches == 0


def test_an_error_in_a_batch_reaches_every_request_of_it():
    class Failing:
        def run(self, outputs, feeds):
            raise RuntimeError("the run failed")

    batcher = DynamicBatcher(max_rows=8, max_wait_s=0.2)
    _, errors = together(lambda x: batcher.run("k", Failing(), ["y"], "x", x),
                         [np.zeros((1, 2), np.float32) for _ in range(4)])
    assert len(errors) == 4 and all("the run failed" in str(e) for e in errors)


def test_a_request_larger_than_the_batch_runs_alone_and_rows_are_never_split():
    class Echo:
        def __init__(self):
            self.sizes = []

        def run(self, outputs, feeds):
            self.sizes.append(len(feeds["x"]))
            return [feeds["x"] * 2]

    echo = Echo()
    batcher = DynamicBatcher(max_rows=4, max_wait_s=0.2)
    inputs = [np.full((n, 1), n, np.float32) for n in (3, 6, 1, 2)]
    got, errors = together(lambda x: batcher.run("k", echo, ["y"], "x", x)[0], inputs)
    assert not errors and all(np.array_equal(g, x * 2) for g, x in zip(got, inputs))
    assert max(echo.sizes) == 6 and sum(echo.sizes) == 12 and all(s <= 4 for s in echo.sizes if s != 6)


def test_requests_for_the_very_same_input_in_one_batch_are_computed_once():
    class Echo:
        def __init__(self):
            self.sizes = []

        def run(self, outputs, feeds):
            self.sizes.append(len(feeds["x"]))
            return [feeds["x"] + 1]

    echo = Echo()
    batcher = DynamicBatcher(max_rows=8, max_wait_s=0.3)
    shared, other = np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32)
    got, errors = together(lambda x: batcher.run("k", echo, ["y"], "x", x)[0], [shared, other, shared, shared])
    assert not errors and echo.sizes == [2]  # one batch, two distinct rows
    assert [g[0, 0] for g in got] == [1, 2, 1, 1]


@pytest.mark.parametrize("wait_s", [0.0, 0.001])
def test_many_threads_many_calls_each_get_their_own_rows(wait_s):
    class Double:
        def run(self, outputs, feeds):
            return [feeds["x"] * 2, feeds["x"].sum(axis=1)]

    batcher = DynamicBatcher(max_rows=5, max_wait_s=wait_s)
    session = Double()

    def calls(seed):
        rng = np.random.default_rng(int(seed[0, 0]))
        for _ in range(40):
            x = rng.random((int(rng.integers(1, 4)), 3)).astype(np.float32)
            doubled, summed = batcher.run("k", session, ["a", "b"], "x", x)
            assert np.array_equal(doubled, x * 2) and np.array_equal(summed, x.sum(axis=1))
        return True

    got, errors = together(calls, [np.full((1, 1), i, np.float32) for i in range(16)])
    assert not errors and all(got)
    assert batcher.figures.requests == 16 * 40 and batcher.figures.batches <= 16 * 40


def test_the_api_sessions_take_the_cores_and_do_not_spin_by_default():
    import os

    from models import runtime
    from models.runtimes import ort_threads

    assert Settings().ort_intra_threads == 0 and ort_threads(0) == len(os.sched_getaffinity(0)) and ort_threads(3) == 3
    assert Settings().ort_allow_spinning is False
    options = runtime._options(2, 1, allow_spinning=False)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


class Alone:
    """A session stand-in that records, per run, whether the batcher ran it alone; the first run waits for `go`."""

    def __init__(self):
        self.seen, self.started, self.go = [], threading.Event(), threading.Event()

    def run(self, outputs, feeds):
        self.seen.append((int(feeds["x"][0, 0]), running_alone()))
        self.started.set()
        self.go.wait(10)
        return [feeds["x"]]


def test_a_batch_runs_alone_only_with_no_other_running_waiting_or_coming_nor_any_thread_runnable(monkeypatch):
    from models import batching

    busy = 0  # threads runnable elsewhere on the machine
    monkeypatch.setattr(batching, "runnable_elsewhere", lambda: busy)
    session, one, two = Alone(), np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)
    batcher = DynamicBatcher(max_rows=1, instances=2)
    first = threading.Thread(target=batcher.run, args=("a", session, ["y"], "x", one))
    first.start()
    assert session.started.wait(10)
    second = threading.Thread(target=batcher.run, args=("b", session, ["y"], "x", two))  # beside it, another key
    second.start()
    while len(session.seen) < 2 and second.is_alive():
        second.join(0.01)
    session.go.set()
    first.join(10)
    second.join(10)
    assert session.seen == [(0, True), (1, False)] and not running_alone()

    session, coming = Alone(), 2  # the API: another view admitted, on its way to the batcher
    session.go.set()
    batcher = DynamicBatcher(max_rows=1, instances=2, coming=lambda: coming)
    batcher.run("a", session, ["y"], "x", one)
    coming = 1
    batcher.run("a", session, ["y"], "x", one)
    busy = 1  # another process's thread wants a core
    batcher.run("a", session, ["y"], "x", one)
    assert session.seen == [(0, False), (0, True), (0, False)]


def test_runnable_elsewhere_counts_threads_that_want_a_core():
    import subprocess
    import sys
    import time

    from models.batching import runnable_elsewhere

    assert runnable_elsewhere() is not None
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process's busy thread
    try:
        time.sleep(0.5)
        during = max(runnable_elsewhere() for _ in range(50))
    finally:
        spinner.kill()
        spinner.wait()
    assert during >= 1


def test_twins_spin_for_a_lone_run_and_sleep_beside_others(builtin_store, builtin, monkeypatch):
    from models import batching

    runtimes = Runtimes(builtin_store, Settings(ort_intra_threads=2, forward_batch_tune=False), batch_rows=4)
    rt = runtimes.get(builtin)
    twins = rt.plain
    assert isinstance(twins, Twins) and rt.variant_bytes("plain") == 2 * estimate_bytes(builtin, probe=False)
    assert isinstance(rt.probe, Twins)  # a layer's first activations run on it
    quiet, quick = twins.quiet.get_session_options(), twins.quick.get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert quick.get_session_config_entry("session.force_spinning_stop") == "1"  # it spins in a run, not after it
    with pytest.raises(RuntimeError):  # not set: ONNX Runtime's default, its pool threads spin between ops
        quick.get_session_config_entry("session.intra_op.allow_spinning")
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {builtin.input_name: x}
    np.testing.assert_array_equal(twins.quick.run([builtin.logits_name], feeds)[0],
                                  twins.quiet.run([builtin.logits_name], feeds)[0])  # the same numbers, either way
    ran = []
    for name in ("quiet", "quick"):
        session = getattr(twins, name)
        setattr(twins, name, type("Seen", (), {"run": lambda self, o, f, opt=None, n=name, s=session: ran.append(n)
                                               or s.run(o, f, opt)})())
    x = np.zeros((1, 3, 224, 224), np.float32)
    busy = 0  # threads runnable besides the caller
    monkeypatch.setattr(batching, "runnable_elsewhere", lambda: busy)
    rt.logits(x)  # alone on an idle machine: the twin that spins
    busy = 1  # another process (a worker's job) wants a core its pool threads would spin on
    rt.logits(x)
    assert ran == ["quick", "quiet"]
    assert not isinstance(Runtimes(builtin_store, Settings(ort_intra_threads=2)).get(builtin).plain, Twins)  # no batcher
    assert not isinstance(Runtimes(builtin_store, Settings(ort_intra_threads=1), batch_rows=4).get(builtin).plain, Twins)
    assert not isinstance(Runtimes(builtin_store, Settings(ort_intra_threads=2, ort_spin_alone=False), batch_rows=4)
                          .get(builtin).plain, Twins)


class Slow:
    """A session stand-in that records how many of its runs (over every instance of it) overlap."""

    now = most = 0
    lock = threading.Lock()

    def run(self, outputs, feeds):
        import time

        with Slow.lock:
            Slow.now += 1
            Slow.most = max(Slow.most, Slow.now)
        time.sleep(0.05)
        with Slow.lock:
            Slow.now -= 1
        return [feeds["x"]]


def test_up_to_instances_batches_of_one_key_run_at_once():
    for instances in (1, 2):
        Slow.most = 0
        batcher = DynamicBatcher(max_rows=1, instances=instances)
        got, errors = together(lambda x, b=batcher: b.run("k", Slow(), ["y"], "x", x)[0],
                               [np.full((1, 1), i, np.float32) for i in range(6)])
        assert not errors and [int(g[0, 0]) for g in got] == list(range(6))
        assert Slow.most == instances


def test_requests_batch_only_with_requests_of_their_own_lane():
    """While one batch runs, six requests of one session wait: three in the yielding lane, three not. They go as
    two batches, one per lane, each answered with its own rows; with no lanes they would be one batch."""
    session, batcher = Alone(), DynamicBatcher(max_rows=8, instances=1)

    def run(x: np.ndarray, lane: str = ""):
        with in_lane(lane):
            return batcher.run("k", session, ["y"], "x", x)[0]
    first = threading.Thread(target=run, args=(np.full((1, 1), -1, np.float32),))
    first.start()
    assert session.started.wait(10)
    got, errors = [None] * 6, []

    def each(i: int):
        try:
            got[i] = run(np.full((1, 1), i, np.float32), "low" if i % 2 else "")
        except Exception as exc:
            errors.append(exc)
    waiting = [threading.Thread(target=each, args=(i,)) for i in range(6)]
    for thread in waiting:
        thread.start()
    while sum(len(q.waiting) for q in batcher._queues.values()) < 6:
        threading.Event().wait(0.005)
    session.go.set()
    for thread in (first, *waiting):
        thread.join(10)
    assert not errors and [int(g[0, 0]) for g in got] == list(range(6))
    assert batcher.figures.batches == 3 and batcher.figures.requests == 7  # the first batch, then one per lane


def test_instances_bound_the_runs_over_all_keys():
    """Six different sessions (keys) at once still run at most `instances` batches at a time: the intra-op
    threads of runs side by side never outnumber the cores they were sized for."""
    for instances in (1, 2):
        Slow.most = 0
        batcher = DynamicBatcher(max_rows=8, instances=instances)
        got, errors = together(lambda x, b=batcher: b.run(f"key-{int(x[0, 0])}", Slow(), ["y"], "x", x)[0],
                               [np.full((1, 1), i, np.float32) for i in range(6)])
        assert not errors and [int(g[0, 0]) for g in got] == list(range(6))
        assert Slow.most == instances


class Timed:
    """A session stand-in that sleeps `seconds` a run and records each run's (start, end) in `runs`."""

    def __init__(self, seconds: float, runs: list):
        self.seconds, self.runs = seconds, runs

    def run(self, outputs, feeds):
        import time

        start = time.perf_counter()
        time.sleep(self.seconds)
        self.runs.append((start, time.perf_counter()))
        return [feeds["x"]]


def most_at_once(runs: list) -> int:
    edges = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_a_key_under_load_runs_as_many_batches_as_it_may_once_a_run_slot_is_free():
    """Two run slots, one held by another key's long run: the first request of key A runs in the other slot, the
    second leads but waits for a slot, and more queue behind it. When the first ends, the second takes its slot.
    When the other key's run ends, key A, whose queue never empties, must use that slot too: two of its batches at
    once, not one after the other while a slot stays free."""
    import time

    batcher = DynamicBatcher(max_rows=1, instances=2)
    runs_a: list = []
    threads = [threading.Thread(target=batcher.run, args=("b", Timed(0.3, []), ["y"], "x", np.zeros((1, 1), np.float32)))]
    threads += [threading.Thread(target=batcher.run, args=("a", Timed(0.1, runs_a), ["y"], "x",
                                                           np.full((1, 1), i, np.float32))) for i in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(30)
    assert len(runs_a) == 8 and most_at_once(runs_a) == 2


class Clock:
    """A fake clock that a fake run moves on by its cost: `per_image[n]` × n (a list: the cost of each run of n
    in turn, the last one repeated), plus `jitter` on every other call, and twice that for the first `slow_calls`
    calls (a VM in a slow phase)."""

    def __init__(self, per_image: dict[int, float | list[float]], jitter: float = 0.0, slow_calls: int = 0):
        self.now, self.per_image, self.jitter, self.slow_calls, self.calls = 0.0, per_image, jitter, slow_calls, []

    def __call__(self) -> float:
        return self.now

    def run(self, n: int) -> None:
        self.calls.append(n)
        costs = self.per_image[n] if isinstance(self.per_image[n], list) else [self.per_image[n]]
        cost = costs[min(self.calls.count(n), len(costs)) - 1] * n + (0.0 if len(self.calls) % 2 else self.jitter)
        self.now += cost * (2 if len(self.calls) <= self.slow_calls else 1)


@pytest.mark.parametrize("per_image, limit, best, tried", [
    ({1: 10.4, 2: 9.3, 4: 15.2, 8: 15.0, 16: 15.1, 32: 15.2}, 32, 2, [1, 2, 4]),  # this 2-core CPU: stops at the cliff
    ({1: 8.0, 2: 4.1, 4: 2.2, 8: 1.2, 16: 0.7, 32: 0.5}, 32, 32, [1, 2, 4, 8, 16, 32]),  # a GPU: the largest
    ({1: 8.0, 2: 4.1, 4: 2.2, 8: 1.2, 16: 0.7, 32: 0.5}, 8, 8, [1, 2, 4, 8]),  # never past the limit
    ({1: 10.0, 2: 9.8, 4: 9.9, 8: 11.0, 16: 13.0}, 16, 1, [1, 2, 4, 8, 16]),  # within 5 %: the smaller batch
])
def test_best_batch_is_the_size_cheapest_per_image(per_image, limit, best, tried):
    clock = Clock(per_image)
    assert best_batch(clock.run, limit, clock=clock) == best
    assert sorted(set(clock.calls)) == tried and all(clock.calls.count(n) == 6 for n in tried)  # warm-up + 1 + 4 rounds


def test_best_batch_times_each_size_by_its_usual_run_not_its_fastest():
    """Two threads on this machine, before the allocator kept buffers past 32 MB: a batch of 4 ran fast once,
    right after its warm-up, and slow from then on; pairs were the cheaper per image as a rule."""
    clock = Clock({1: 7.3, 2: 6.2, 4: [7.9, 5.7, 7.9, 7.8, 7.9, 8.0], 8: 7.5})
    assert best_batch(clock.run, 8, clock=clock) == 2


def test_best_batch_is_not_decided_by_a_disturbed_run():
    clock = Clock({1: 10.0, 2: [9.0, 9.0, 30.0, 9.0, 9.0, 9.0], 4: 20.0}, jitter=1.0)  # one run of pairs 3× slower
    assert best_batch(clock.run, 4, clock=clock) == 2


def test_best_batch_times_the_sizes_in_rounds_so_a_slow_phase_weighs_on_all_alike():
    """The machine runs at half speed while images alone are first run: timed only then, one size after the other,
    pairs would look 2× cheaper; timed again round after round, they are not 5 % cheaper, and images run alone."""
    clock = Clock({1: 10.0, 2: 9.8, 4: 15.0}, slow_calls=3)
    assert best_batch(clock.run, 4, clock=clock) == 1
    assert clock.calls[6:] == [1, 2, 4] * 4  # the rounds, after warm-up and a first timing of each


def test_a_session_runs_batches_of_the_measured_size_with_the_same_numbers(builtin_store, builtin, images, monkeypatch):
    import models.runtimes

    monkeypatch.setattr(models.runtimes, "best_batch", lambda run, limit: 2)  # whatever this machine measures
    rt = Runtimes(builtin_store, Settings(ort_intra_threads=1), batch_rows=8).get(builtin)
    seen = []
    session = rt.plain
    real = session.run
    monkeypatch.setattr(session, "run", lambda outputs, feed: seen.append(len(feed[builtin.input_name])) or
                        real(outputs, feed), raising=False)
    x = np.concatenate(images[:5])
    got = rt.logits(x)
    assert seen == [2, 2, 1] and rt.batch_rows("plain", session, [], x) == 2
    alone = Runtimes(builtin_store, Settings(ort_intra_threads=1, forward_batch_tune=False)).get(builtin)
    np.testing.assert_allclose(got, np.concatenate([alone.logits(image) for image in images[:5]]), rtol=0, atol=1e-5)
