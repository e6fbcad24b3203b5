"""Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps").

On a copy of the network (never the cached one), the weighted layers are re-initialised from the logits
down, one more group per step (`reset_parameters()`, torch's own initialisation of each layer, from a seeded
generator), and the checked method's map of the same image and target is made again. Each step reports how
alike the new map is to the original, both reduced to Σ_c |a_c| (absolute values summed over channels):

    spearman   Spearman rank correlation of the two maps' values (scipy)
    ssim       structural similarity of the two maps, each divided by its maximum (scikit-image, data range 1)

A method that explains the model loses similarity quickly; one whose maps survive the model's destruction
(guided backpropagation on a ReLU network: Adebayo et al.'s figure 2) shows the image, not the model.
Weighted layers are the modules with parameters of their own, in the order the forward pass runs them; a
normalisation layer goes with the layer before it. With more layers than `steps`, consecutive layers are
randomised together. A constant map has no rank correlation: its `spearman` is null.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from core.kinds.params import Workload
from core.methods import Attribution, Network, Output, progress_part
from core.model_record import ModelRecord
from core.preprocessing import from_tensor
from workers.methods.mechanics.attributions import attribute, torch_classify
from workers.methods.mechanics.pictures import captioned_row, overlay, tile_side
from workers.methods.task import Task

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def weighted_layers(module: nn.Module, x: torch.Tensor) -> list[list[str]]:
    """Names of the modules with parameters of their own, grouped (a norm layer with the layer before it),
    in the order one forward pass of `x` first runs them."""
    names = {id(m): name for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))}
    seen: list[tuple[str, nn.Module]] = []

    def hook(m, _inputs, _output):
        if id(m) in names and all(m is not other for _, other in seen):
            seen.append((names[id(m)], m))

    handles = [m.register_forward_hook(hook) for m in module.modules() if id(m) in names]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    for name, m in seen:
        if groups and isinstance(m, NORMS):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def cascade(groups: list[list[str]], steps: int) -> list[list[list[str]]]:
    """The groups top-down, split into at most `steps` consecutive runs: the groups each step adds."""
    top_down = groups[::-1]
    parts = np.array_split(np.arange(len(top_down)), min(steps, len(top_down)))
    return [[top_down[i] for i in part] for part in parts if len(part)]


def randomise(module: nn.Module, names: list[str], seed: int) -> None:
    """Re-initialise the named modules with their own `reset_parameters()` (torch's default initialisation),
    drawing from a generator seeded with `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            layer = module.get_submodule(name)
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
            else:  # a layer torch cannot re-initialise: scaled normal weights, zero biases
                for parameter in layer.parameters(recurse=False):
                    nn.init.normal_(parameter, std=float(parameter.std()) if parameter.numel() > 1 else 1.0)


def reduce(attribution: np.ndarray) -> np.ndarray:
    """C×h×w → h×w: absolute values summed over channels (float64)."""
    return np.abs(np.asarray(attribution, np.float64)).sum(axis=0)


def similarity(original: np.ndarray, other: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman ρ, SSIM) of two reduced maps; None where undefined (a constant map; a map under 3 px a side)."""
    constant = np.ptp(original) == 0 or np.ptp(other) == 0
    rho = np.nan if constant else spearmanr(original.ravel(), other.ravel()).statistic
    side = min(original.shape)
    ssim = None
    if side >= 3:
        a, b = (m / m.max() if m.max() > 0 else m for m in (original, other))
        ssim = float(structural_similarity(a, b, data_range=1.0, win_size=min(7, side - (side + 1) % 2)))
    return (None if np.isnan(rho) else float(rho)), ssim


@dataclass
class Copy:
    """A deep copy of a network (a `core.methods.Network`) whose layers are the copy's own modules."""

    module: nn.Module
    record: ModelRecord
    original: Network

    @classmethod
    def of(cls, network: Network) -> Copy:
        return cls(copy.deepcopy(network.module), network.record, network)

    def layer_module(self, name: str) -> nn.Module:
        paths = {id(m): path for path, m in self.original.module.named_modules()}
        return self.module.get_submodule(paths[id(self.original.layer_module(name))])


def run(task: Task) -> Output:
    """`similarity` table (one row per step: `layer`, the lowest weighted layer randomised so far; `layers`,
    those randomised at this step; `spearman`; `ssim`), `cascade` picture, metrics `final_spearman`,
    `final_ssim`, `target` (the original map's, kept through the cascade)."""
    p, network, x = task.params, task.network, task.x.detach()
    inner = p.inner().resolve(network.record)
    per_map = inner.method_steps(Workload(network.record, batch=task.batch, forward_batch=task.forward_batch))
    total = (p.steps + 1) * per_map

    def make(net: Network, params, done: int) -> Attribution:
        return attribute(p.method, params, net, x, classify_for(net, task),
                         batch=task.batch, forward_batch=task.forward_batch,
                         model=task.model if net is task.network else None,
                         progress=progress_part(task.progress, done * per_map, per_map, total))

    original = make(network, inner, 0)
    if "target" in original.metrics:  # keep the explained class (or unit) through the cascade
        inner = inner.model_copy(update={"target": int(original.metrics["target"])})
    elif "position" in original.metrics:
        inner = inner.model_copy(update={"position": tuple(original.metrics["position"])})
    randomised = Copy.of(network)
    steps = cascade(weighted_layers(randomised.module, x), p.steps)
    base = reduce(original.attribution)
    rows, maps = [], [base]
    for step, groups in enumerate(steps, 1):
        names = [name for group in groups for name in group]
        randomise(randomised.module, names, p.seed + step)
        current = reduce(make(randomised, inner, step).attribution)
        rho, ssim = similarity(base, current)
        rows.append({"step": step, "layer": groups[-1][0], "layers": names, "spearman": rho, "ssim": ssim})
        maps.append(current)
    task.progress(total, total)
    metrics = {"method": p.method, "steps": len(rows), "final_spearman": rows[-1]["spearman"],
               "final_ssim": rows[-1]["ssim"]}
    metrics.update({k: original.metrics[k] for k in ("target", "target_label") if k in original.metrics})
    picture = cascade_picture(x, network.record, maps, rows)
    return Output(pictures={"cascade": picture}, tables={"similarity": rows}, metrics=metrics)


def classify_for(network: Network, task: Task):
    """The original network's ONNX Runtime forward when the runner gave one, else (and for a randomised copy)
    the network's own."""
    if network is task.network and task.classify is not None:
        return task.classify
    return torch_classify(network)


def cascade_picture(x: torch.Tensor, record: ModelRecord, maps: list[np.ndarray], rows: list[dict]) -> np.ndarray:
    """The original map, then each step's, over the image, in one row; captions: the lowest layer randomised
    so far and ρ."""
    fitted = from_tensor(x[0].cpu().numpy(), record)
    side = tile_side(len(maps))
    tiles = [overlay(fitted, m / m.max() if m.max() > 0 else m, side) for m in maps]
    captions = [("original", "")] + [(row["layer"], "rho " + ("-" if row["spearman"] is None else f"{row['spearman']:.2f}"))
                                     for row in rows]
    return captioned_row(tiles, captions)
