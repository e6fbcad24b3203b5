"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) with zennit's composites.

The target's one-hot is the output relevance; each layer hands its outputs' relevance to its inputs by the rule the
composite gives its type (`workers/methods/mechanics/lrp_composites.py`, applied by `lrp.py` there), BatchNorm
merged into the convolution before it and residual sums split in proportion to their inputs. The attribution is
the relevance at the input.
"""

from __future__ import annotations

import numpy as np
import torch

from core.methods import Attribution
from core.model_record import ModelRecord
from core.preprocessing import fill_value
from workers.methods.mechanics.backprop import gradient_heat, label_metrics, objective_of
from workers.methods.mechanics.lrp import input_relevance
from workers.methods.mechanics.lrp_composites import composite
from workers.methods.task import Task


def input_bounds(record: ModelRecord, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest values each input channel can take (1×C×1×1, model-input units): pixels 0 and 255
    through the record's preprocessing, the box of the z^B rule."""
    probe = np.zeros((1, x.shape[1], 1, 1), np.float32)
    low, high = (torch.from_numpy(np.array(fill_value(probe, level, record), np.float32)).to(x) for level in (0, 255))
    return torch.minimum(low, high), torch.maximum(low, high)


def run(task: Task) -> Attribution:
    """Relevance at the input, C×H×W (a share of the target's output relevance 1 per input value; it sums to 1 where
    the rules conserve it); heatmap: max over channels of |relevance|."""
    params, network = task.params, task.network
    objective = objective_of(params, network.record)
    bounds = input_bounds(network.record, task.x) if params.composite == "epsilon_gamma_box" else None
    rules = composite(params.composite, params.epsilon, params.gamma, bounds)
    relevance, info = input_relevance(network.module, task.x, objective.target, rules)
    attribution = relevance[0].float().cpu().numpy()
    task.progress(1, 1)
    return Attribution(attribution, gradient_heat(attribution), label_metrics(network, info))
