"""Every gradient kind declares its progress total before it runs (`Params.total_steps`), and its method
reports exactly its own part of it (`Params.method_steps`: all of it, except for attribution kinds, whose
deletion/insertion scores the runner computes after the method) at every step, ending on it: the runner
writes the total when it claims a job, so a client polling a `started` job sees it from the start and
never sees it change."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from core.kinds.kind import Engine, Source
from core.kinds.params import Workload
from core.kinds.registry import KINDS
from tests.workers.conftest import SmallNet, small_record
from workers.methods import method_of
from workers.methods.task import Task, TensorImage
from workers.networks import Network

BATCH = 3
CASES = [  # (kind, params): several totals per kind where the params change how many steps there are
    ("saliency", {}),
    ("guided_backprop", {}),
    ("guided_backprop", {"layer": "relu2", "channel": 3}),
    ("deconvnet", {"target": 2}),
    ("gradcam", {}),
    ("gradcam_plus_plus", {"layer": "relu1"}),
    ("xgradcam", {}),
    ("layercam", {"target": 1}),
    ("hirescam", {}),
    ("lrp", {}),
    ("lrp", {"composite": "epsilon_gamma_box"}),
    ("smoothgrad", {"samples": 7}),
    ("smoothgrad", {"samples": 1}),
    ("integrated_gradients", {"steps": 10, "rule": "riemann_middle"}),
    ("integrated_gradients", {"steps": 3}),
    ("class_model", {"target": 1, "size": 32, "steps": 5, "preview_every": 2}),
    ("feature_vis", {"layer": "relu2", "channel": 1, "size": 32, "steps": 4}),
    ("layer_atlas", {"layer": "relu2", "channels": [0, 1, 2], "size": 32, "steps": 2, "batch": 2}),
    ("layer_atlas", {"layer": "relu1", "size": 32, "steps": 1, "diversity": 2}),
    ("neuron_groups", {"layer": "relu2", "groups": 3, "size": 32, "steps": 2, "batch": 2}),
    ("caricature", {"layer": "relu2", "steps": 3, "preview_every": 1}),
    ("feature_vis", {"layer": "relu1", "channel": 0, "position": [3, 4], "size": 32, "steps": 3,
                     "parameterisation": "pixel"}),
    ("inversion", {"steps": 4}),
    ("deepdream", {"octaves": 3, "steps": 2, "octave_scale": 1.2, "jitter": 2, "preview_every": 1}),
    ("deepdream", {"octaves": 1, "steps": 3}),
    ("adversarial", {"target": 3, "steps": 5}),
    ("adversarial", {"target": 3, "method": "fgsm"}),
    ("texture", {"size": 32, "steps": 3}),
    ("style_transfer", {"size": 32, "steps": 3}),
    ("sanity_check", {}),  # 3 weighted layers: fewer steps than the 16 allowed for, so it ends early
    ("sanity_check", {"method": "smoothgrad", "method_params": {"samples": 5}, "steps": 2}),
    ("sanity_check", {"method": "rise", "method_params": {"masks": 70, "cell": 4}}),
    ("sanity_check", {"method": "scorecam", "steps": 2}),
    ("compare", {"methods": ["ablationcam", "eigencam", "hirescam"], "evaluation_steps": 4}),
    ("compare", {"methods": ["saliency", "integrated_gradients", "kernel_shap"], "evaluation_steps": 20,
                 "method_params": {"integrated_gradients": {"steps": 7}, "kernel_shap": {"samples": 40}}}),
]


class AnySizeNet(SmallNet):
    """The small seeded net, pooled to 4×4 before its classifier so that any input size ≥ 16 px runs
    (at 16 px: exactly `SmallNet`); image-making kinds render at 32 px and up."""

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_max_pool2d(self.features(x), 4), 1))


@pytest.fixture(scope="module")
def network() -> Network:
    torch.manual_seed(0)
    module: nn.Module = AnySizeNet().eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return Network(module, small_record(), module.get_submodule)


def image(seed: int, side: int = 24) -> TensorImage:
    """A seeded image input: `x` the 16-px model input, `rgb` at its own `side`-px size (deepdream's)."""
    generator = torch.Generator().manual_seed(seed)
    return TensorImage(torch.randn(1, 3, 16, 16, generator=generator), torch.rand(1, 3, side, side, generator=generator))


def test_every_gradient_kind_is_covered():
    """Every torch kind that needs no dataset (activation_atlas's progress is checked as a job: tests/jobs/test_atlas.py)."""
    needs_dataset = {name for name, kind in KINDS.items()
                     if any(read.source is Source.DATASET and read.required for read in kind.reads)}
    assert {kind for kind, _ in CASES} == {name for name, kind in KINDS.items()
                                           if kind.engine is Engine.TORCH and name not in needs_dataset}


@pytest.mark.parametrize("kind, raw", CASES, ids=[f"{kind}-{n}" for n, (kind, _) in enumerate(CASES)])
def test_method_reports_the_declared_total_at_every_step(network, kind, raw):
    registered = KINDS[kind]
    params = registered.params(**raw).resolve(network.record)
    declared = params.method_steps(Workload(network.record, batch=BATCH))
    calls: list[tuple[int, int]] = []
    inputs = {read.name: image(n) for n, read in enumerate(registered.reads) if read.source is Source.IMAGE}
    task = Task(network, inputs["image"].x if "image" in inputs else None, params,
                lambda step, total: calls.append((step, total)), batch=BATCH, inputs=inputs)
    method_of(registered)(task)
    assert declared >= 1 and calls, "the method reported no progress"
    assert {total for _, total in calls} == {declared}, calls
    steps = [step for step, _ in calls]
    assert steps == sorted(steps) and 0 <= steps[0] and steps[-1] == declared, calls


def test_declared_totals_follow_the_params():
    record = small_record()
    work = Workload(record, batch=4)
    total = {kind: KINDS[kind].params(**raw).resolve(record).total_steps(work) for kind, raw in [
        ("smoothgrad", {"samples": 9}), ("integrated_gradients", {"steps": 8}), ("deepdream", {"octaves": 4, "steps": 7}),
        ("feature_vis", {"layer": "relu2", "channel": 0, "steps": 33}), ("saliency", {"evaluate": False}),
        ("gradcam", {"evaluation_steps": 40})]}
    # the scores: ROAD's 2 × 9 × (1 + 4) = 90 imputed copies at 32 a batch (3 steps), then deletion/insertion's
    # 2 × steps + 1 (65 by default: 3 steps; 81 at 40 steps: 3 steps)
    assert total == {"smoothgrad": 3 + 3 + 3, "integrated_gradients": 2 + 3 + 3, "deepdream": 28, "feature_vis": 33,
                     "saliency": 1, "gradcam": 1 + 3 + 3}
