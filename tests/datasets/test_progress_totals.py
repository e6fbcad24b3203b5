"""Every dataset kind declares its progress total from its params, the dataset's size and the batch size
(`Params.total_steps`), and its method, on the real dataset feed, reports exactly that total at every
step and ends on it, whether or not fewer images than allowed for are loaded after the pass."""

from __future__ import annotations

import pytest

from core.kinds.dataset import load_steps, pass_steps
from core.kinds.kind import Engine, Source
from core.kinds.params import Workload
from core.kinds.registry import KINDS
from tests.datasets.conftest import photo_files, task_for
from workers.methods import method_of

CASES = [  # (kind, params, with a query image); the layer is the tiny net's last ReLU (5 channels, 16×16)
    ("top_activations", {"channel": 1, "k": 3}, False),
    ("top_activations", {"channel": 4, "k": 7}, False),  # 7 winners: the pass, then one more step
    ("top_activations", {"k": 4}, False),  # every channel: up to 12 images allowed for, fewer win
    ("embedding", {"method": "pca"}, False),
    ("neighbors", {"k": 3}, True),
    ("neighbors", {"k": 40}, True),  # more than the dataset holds
    ("unit_stats", {}, False),
]


def test_every_dataset_kind_is_covered():
    assert {kind for kind, _, _ in CASES} == {name for name, kind in KINDS.items() if kind.engine is Engine.ONNXRUNTIME
                                              and any(read.source is Source.DATASET for read in kind.reads)}


@pytest.mark.parametrize("kind, raw, query", CASES, ids=[f"{kind}-{n}" for n, (kind, _, _) in enumerate(CASES)])
def test_method_reports_the_declared_total_at_every_step(settings, tiny, dataset, kind, raw, query):
    _, store, record, layer = tiny
    calls: list[tuple[int, int]] = []
    task = task_for(settings, store, record, dataset, kind, lambda step, total: calls.append((step, total)),
                    image=photo_files()[2][1] if query else None, layer=layer, **raw)
    declared = task.params.total_steps(Workload(record, batch=settings.dataset_batch, images=dataset.count))
    method_of(KINDS[kind])(task)
    assert {total for _, total in calls} == {declared}, calls
    steps = [step for step, _ in calls]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == declared, calls


def test_declared_totals_count_batches_then_loads(settings, tiny, dataset):
    _, _, record, layer = tiny
    work = Workload(record, batch=settings.dataset_batch, images=dataset.count)  # 12 images, 5 a batch: 3 passes
    assert (pass_steps(12, 5), load_steps(12, 5), load_steps(5, 5), load_steps(6, 5), load_steps(0, 5)) == (3, 2, 0, 1, 0)

    def total(kind: str, **raw) -> int:
        return KINDS[kind].params(layer=layer, **raw).resolve(record).total_steps(work)

    assert total("unit_stats") == total("embedding") == 3
    assert total("top_activations", channel=0, k=7) == 3 + 1
    assert total("top_activations", k=1) == 3 + load_steps(5, 5)  # one winner for each of the 5 channels
    assert total("top_activations", k=3) == 3 + load_steps(12, 5)  # 15 allowed for, the dataset holds 12
    assert total("neighbors", k=100) == 3 + 2
