"""Activation atlas (Carter, Armstrong, Schubert, Johnson & Olah, "Activation Atlas", Distill 2019).

The layer's activation vectors at `positions_per_image` random spatial positions of every dataset image are
reduced to 2-D (UMAP or t-SNE), a `grid` × `grid` lattice is laid over the map, and each cell holding at least
`min_count` vectors gets its mean vector as a direction. Each direction is feature-visualized (the dot product
with the direction at the centre of the layer's grid, weighted by their cosine similarity: the Distill
article's objective), all cells' icons optimised in batches (`icons`). `atlas.png` places the icons on the
lattice; `cells.json` gives each cell's count, the most frequent top-1 class of the images its vectors came
from, its icon, and how well the icon and the cell's own activations point along the direction.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from PIL import Image

from core import preprocessing
from core.methods import Output
from workers.methods.dataset import embedding
from workers.methods.mechanics import icons, objectives
from workers.methods.task import Task


def run(task: Task) -> Output:
    params, network, feed = task.params, task.network, task.feed
    record = network.record
    layer = record.layer(params.layer)
    cells_total = params.grid * params.grid
    vectors, owners, classes, passes = sample(task, layer.name)
    points = embedding.reduce(vectors, params.method, seed=params.seed)
    done = passes + 1
    total = done + cells_total
    task.progress(done, total)

    lattice = np.minimum((points * params.grid).astype(int), params.grid - 1)  # (x, y) cell of each vector
    members: dict[tuple[int, int], np.ndarray] = {}
    for cell in {(int(x), int(y)) for x, y in lattice}:
        chosen = np.flatnonzero((lattice[:, 0] == cell[0]) & (lattice[:, 1] == cell[1]))
        if len(chosen) >= params.min_count:
            members[cell] = chosen
    cells = sorted(members, key=lambda c: (c[1], c[0]))
    done += cells_total - len(cells)  # empty cells need no icon
    task.progress(done, total)

    made: dict[tuple[int, int], np.ndarray] = {}
    per_batch = icons.batch_size(network, params, task.icon_batch)
    for begin in range(0, len(cells), per_batch):
        batch = cells[begin:begin + per_batch]
        directions = torch.from_numpy(np.stack([vectors[members[c]].mean(axis=0) for c in batch]))
        seeds = [icons.icon_seed(params.seed, y, x) for x, y in batch]
        rgb = icons.render(network, params, seeds, objectives.direction_each(layer.name, directions, params.cossim_pow),
                           stop_after=layer.name, report=lambda *_, done=done, **__: task.progress(done, total))
        made.update(zip(batch, icons.to_uint8(rgb)))
        done += len(batch)
        task.progress(done, total)
        task.preview(done, lattice_picture(made, params))

    table, pictures = [], {}
    icon_cos = icon_cosines(network, layer.name, cells, made, vectors, members)
    for cell, cos in zip(cells, icon_cos):
        x, y = cell
        chosen = members[cell]
        direction = vectors[chosen].mean(axis=0)
        natural = cosine(vectors[chosen], direction)
        top_class, _ = Counter(classes[owners[chosen]].tolist()).most_common(1)[0]
        name = f"cell_{y}_{x}"
        pictures[name] = made[cell]
        table.append({"x": x, "y": y, "count": len(chosen), "top_class": int(top_class),
                      "top_label": record.labels[top_class] if record.labels and top_class >= 0 else None,
                      "image": f"{name}.png",
                      "icon_cosine": float(cos), "natural_cosine": float(natural.mean())})
    pictures["atlas"] = lattice_picture(made, params)
    better = sum(entry["icon_cosine"] > entry["natural_cosine"] for entry in table)
    return Output(pictures=pictures, tables={"cells": table}, metrics={
        "layer": layer.name, "method": params.method, "images": len(feed), "vectors": len(vectors),
        "cells": len(cells), "grid": params.grid, "icons_closer_than_natural": better})


def sample(task: Task, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One pass over the dataset: activation vectors at random positions (V×C float32), the image each came from
    (V), every image's top-1 class (N; -1 for a model without class scores) and the progress steps taken."""
    params, feed, record = task.params, task.feed, task.network.record
    rng = np.random.default_rng(params.seed)
    vectors, owners, classes, passes = [], [], [], 0
    extra = 1 + params.grid * params.grid
    for batch in feed.batches([layer], extra_steps=extra):
        maps = batch.features[layer]
        n, c, h, w = maps.shape
        for row in range(n):
            picked = rng.choice(h * w, size=min(params.positions_per_image, h * w), replace=False)
            vectors.append(maps[row].reshape(c, -1)[:, picked].T)
            owners.extend([int(batch.indices[row])] * len(picked))
        classes.extend(top1(task, record, batch.pixels))
        passes += 1
    return np.concatenate(vectors).astype(np.float32), np.asarray(owners), np.asarray(classes), passes


def top1(task: Task, record, pixels: np.ndarray) -> list[int]:
    """Top-1 class of each image (H×W×3 uint8 at the model's input size), -1 without class scores."""
    if task.classify is None or record.num_classes is None:
        return [-1] * len(pixels)
    x = np.concatenate([preprocessing.to_tensor(Image.fromarray(p), record) for p in pixels])
    return task.classify(x).argmax(axis=1).tolist()


def cosine(rows: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return rows @ direction / (np.linalg.norm(rows, axis=1) * np.linalg.norm(direction) + 1e-8)


def icon_cosines(network, layer: str, cells, made, vectors, members) -> list[float]:
    """Each icon's activation vector at the centre of the layer's grid, against its cell's direction."""
    if not cells:
        return []
    acts = icons.activations(network, layer, np.stack([made[c] for c in cells])).cpu().numpy()
    centre = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
    return [float(cosine(centre[i:i + 1], vectors[members[c]].mean(axis=0))[0]) for i, c in enumerate(cells)]


def lattice_picture(made: dict[tuple[int, int], np.ndarray], params) -> np.ndarray:
    """The icons on the grid × grid lattice (y down), white where a cell is empty or not made yet."""
    slots: list[np.ndarray | None] = [None] * (params.grid * params.grid)
    for (x, y), icon in made.items():
        slots[y * params.grid + x] = icon
    return icons.grid(slots, params.size, columns=params.grid, gap=1)
