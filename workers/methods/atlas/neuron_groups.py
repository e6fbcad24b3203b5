"""Neuron groups (Olah, Satyanarayan, Johnson, Carter, Schubert, Ye & Mordvintsev, "The Building Blocks of
Interpretability", Distill 2018): a layer is read more easily as a few groups of channels than as hundreds of them.

The layer's activations on the image (the model's ONNX Runtime forward, as the activations view gives them, when the
runner provides it), laid out as positions × channels with the negative part set to 0, are factorised by
non-negative matrix factorisation, A ≈ W·H (scikit-learn's `NMF(init="nndsvd")`, coordinate descent): each of the
`groups` rows of H is a group's channel direction (`factors.npy`, k×C), each column of W its spatial map
(`maps.npy`, k×h×w). `explained` = 1 − ‖A − WH‖² / ‖A‖² (Frobenius); a group's `share` is its part of that, in
proportion to ⟨W_g H_g, WH⟩, its rank-one term's inner product with the whole reconstruction (non-negative, and the
shares sum to `explained`). Each group's direction is feature-visualized as the activation-atlas icons are (the dot
product with the direction at the centre of the layer's grid, weighted by cosine^`cossim_pow`), all groups' icons
optimised in batches. `groups.png` draws each position's dominant group over the image, stronger where the group's
map is stronger.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import NMF
from torch.nn import functional as F

from core.methods import Output
from workers.methods.mechanics import icons, objectives
from workers.methods.mechanics.attributions import TorchLayers
from workers.methods.mechanics.image_making import space_of, to_uint8
from workers.methods.task import Task

# The legend's colours (Building Blocks' semantic dictionary draws each group in its own colour), RGB.
PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
           "#808000", "#ffd8b1", "#000075", "#808080"]


def run(task: Task) -> Output:
    params, network = task.params, task.network
    layer = network.record.layer(params.layer)
    total = 1 + params.groups
    acts = layer_activations(task, layer.name)  # C×h×w
    channels, height, width = acts.shape
    matrix = positions(acts)
    maps, factors, iterations = factorise(matrix, params.groups, params.seed, params.max_iter)
    shares, explained = shares_of(matrix, maps, factors)
    task.progress(1, total)

    made = group_icons(task, layer.name, factors, total)
    photo = to_uint8(space_of(network).inverse(task.x).clamp(0, 1))
    spatial = maps.T.reshape(params.groups, height, width)
    table = [{"group": g, "channels": np.argsort(-factors[g], kind="stable")[:params.top_channels].tolist(),
              "weight": factors[g].tolist(), "share": float(shares[g]), "color": color(g), "image": f"group_{g}.png"}
             for g in range(params.groups)]
    negative = np.minimum(acts, 0)
    return Output(
        pictures={"groups": over_image(photo, spatial), **{f"group_{g}": made[g] for g in range(params.groups)}},
        tables={"groups": table},
        arrays={"maps": spatial.astype(np.float32), "factors": factors.astype(np.float32),
                "input": task.x.detach().cpu().numpy()},
        metrics={"layer": layer.name, "groups": params.groups, "explained": explained, "iterations": iterations,
                 "positions": height * width, "channels": channels,
                 "clipped": float((negative ** 2).sum() / max(float((acts ** 2).sum()), 1e-12))})


def layer_activations(task: Task, layer: str) -> np.ndarray:
    """The layer's C×h×w activations on the image: ONNX Runtime's (what the activations view answers) when the
    runner gives the model, else the network's own."""
    model = task.model or TorchLayers(task.network)
    return model.layer(task.x.detach().cpu().numpy(), layer)[0].astype(np.float32)


def positions(acts: np.ndarray) -> np.ndarray:
    """C×h×w activations → the (h·w) × C matrix NMF factorises, negative part set to 0 (float32)."""
    return np.maximum(acts.reshape(acts.shape[0], -1).T, 0).astype(np.float32)


def factorise(matrix: np.ndarray, groups: int, seed: int, max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(W: positions × groups, H: groups × channels, iterations run) of scikit-learn's NMF with NNDSVD start."""
    model = NMF(n_components=groups, init="nndsvd", random_state=seed % 2**32, max_iter=max_iter)
    maps = model.fit_transform(matrix)
    return maps, model.components_, int(model.n_iter_)


def shares_of(matrix: np.ndarray, maps: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, float]:
    """Each group's share of the explained fraction, and the fraction (see the module docstring)."""
    a = matrix.astype(np.float64)
    w, h = maps.astype(np.float64), factors.astype(np.float64)
    whole = w @ h
    energy = float((a * a).sum())
    if energy == 0:
        return np.zeros(len(h)), 0.0
    explained = 1.0 - float(((a - whole) ** 2).sum()) / energy
    parts = np.array([float((np.outer(w[:, g], h[g]) * whole).sum()) for g in range(len(h))])
    scale = explained / parts.sum() if parts.sum() > 0 else 0.0
    return parts * scale, explained


def group_icons(task: Task, layer: str, factors: np.ndarray, total: int) -> list[np.ndarray]:
    """A feature visualization of each group's direction (H×W×3 uint8), in batches; progress one step a group."""
    params, network = task.params, task.network
    per_batch = icons.batch_size(network, params, task.icon_batch)
    made: list[np.ndarray] = []
    for begin in range(0, len(factors), per_batch):
        batch = list(range(begin, min(begin + per_batch, len(factors))))
        directions = torch.from_numpy(np.ascontiguousarray(factors[batch], np.float32))
        seeds = [icons.icon_seed(params.seed, g) for g in batch]
        done = 1 + len(made)
        rgb = icons.render(network, params, seeds, objectives.direction_each(layer, directions, params.cossim_pow),
                           stop_after=layer, report=lambda *_, done=done, **__: task.progress(done, total))
        made.extend(icons.to_uint8(rgb))
        task.progress(1 + len(made), total)
        task.preview(1 + len(made), icons.grid(made, params.size))
    return made


def color(group: int) -> str:
    return PALETTE[group % len(PALETTE)]


def over_image(photo: np.ndarray, spatial: np.ndarray) -> np.ndarray:
    """Each pixel of the photo (H×W×3 uint8) tinted by the colour of its dominant group, the more opaque the
    stronger that group's (bilinearly upsampled) map is there."""
    height, width = photo.shape[:2]
    maps = F.interpolate(torch.from_numpy(spatial)[None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[0].clamp(min=0).numpy()
    dominant = maps.argmax(axis=0)
    strength = maps.max(axis=0) / max(float(maps.max()), 1e-12)
    rgb = np.array([[int(color(g)[i:i + 2], 16) for i in (1, 3, 5)] for g in range(len(spatial))], np.float32)
    alpha = (0.75 * np.sqrt(strength))[..., None]
    return (photo * (1 - alpha) + rgb[dominant] * alpha + 0.5).clip(0, 255).astype(np.uint8)
