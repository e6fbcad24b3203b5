"""A layer atlas: every chosen channel's feature visualization, its diversity variants, its top dataset patches
and its statistics — OpenAI Microscope's unit pages for the client's own model.

Feature visualizations are made many channels at a time (`icons`): the batch holds `diversity` images per
channel, each maximising its channel's mean activation, the variants of one channel pushed apart by Lucid's
diversity term on their Gram matrices. Finished channels go to the runner's unit cache as soon as their
batch ends, so a cancelled atlas keeps them and the next atlas of the layer with the same params makes only
the channels it lacks. With a dataset, one pass over it gives every channel's top-k patches (as
`top_activations`) and its statistics (as `unit_stats`).
"""

from __future__ import annotations

import numpy as np
import torch

from core.methods import Output, UnitVisual
from workers.methods.dataset.top_activations import Layout, TopK, draw, winners
from workers.methods.dataset.unit_stats import UnitTotals
from workers.methods.mechanics import icons, objectives
from workers.methods.task import Task


def run(task: Task) -> Output:
    params, network = task.params, task.network
    record = network.record
    layer = record.layer(params.layer)
    channels: list[int] = list(params.channels)
    tops, stats, patches, done_steps = dataset_views(task, layer, channels)
    total = done_steps + len(channels)

    visuals: dict[int, UnitVisual] = {}
    for channel in channels:
        cached = task.units.get(channel)
        if cached is not None and len(cached.images) == params.diversity:
            visuals[channel] = cached
    task.progress(done_steps + len(visuals), total)
    todo = [c for c in channels if c not in visuals]
    per_batch = max(1, icons.batch_size(network, params, task.icon_batch) // params.diversity)

    def atlas_so_far(making: dict[int, np.ndarray]) -> np.ndarray:
        return icons.grid([visuals[c].images[0] if c in visuals else making.get(c) for c in channels], params.size)

    for begin in range(0, len(todo), per_batch):
        batch = todo[begin:begin + per_batch]

        def report(step: int, steps: int, preview: torch.Tensor | None = None, batch=batch) -> None:
            task.progress(done_steps + len(visuals), total)  # also where a cancel or the time limit stops it
            if preview is not None:
                made = icons.to_uint8(preview)[::params.diversity]
                task.preview(done_steps + len(visuals), atlas_so_far(dict(zip(batch, made))))

        for channel, visual in zip(batch, make(network, params, layer.name, batch, report)):
            task.units.put(channel, visual)
            visuals[channel] = visual
        task.progress(done_steps + len(visuals), total)
        task.preview(done_steps + len(visuals), atlas_so_far({}))

    entries, pictures = [], {}
    for row, channel in enumerate(channels):
        visual = visuals[channel]
        names = [f"unit_{channel}"] + [f"unit_{channel}_{i}" for i in range(1, len(visual.images))]
        pictures.update(zip(names, visual.images))
        if patches is not None:
            pictures[f"top_{channel}"] = patches[row]
        entries.append({"channel": channel, "images": [f"{n}.png" for n in names],
                        "objective": visual.objectives[0], "objectives": visual.objectives,
                        "top": tops[row] if tops is not None else [], "stats": stats[row] if stats is not None else None})
    pictures["atlas"] = icons.grid([visuals[c].images[0] for c in channels], params.size)
    means = np.array([v.objectives[0] for v in visuals.values()])
    return Output(pictures=pictures, tables={"atlas": entries}, metrics={
        "layer": layer.name, "channels": len(channels), "made": len(todo), "from_cache": len(channels) - len(todo),
        "diversity": params.diversity, "size": params.size, "steps": params.steps,
        "mean_objective": float(means.mean()), "images": len(task.feed) if task.feed is not None else 0})


def make(network, params, layer: str, channels: list[int], report=None) -> list[UnitVisual]:
    """One batch: `diversity` icons for each of `channels`, then each icon's channel mean on its 8-bit image."""
    d = params.diversity
    wanted = torch.tensor([c for c in channels for _ in range(d)])
    seeds = [icons.icon_seed(params.seed, c, i) for c in channels for i in range(d)]
    objective = objectives.channel_each(layer, wanted)
    if d > 1 and params.diversity_weight > 0:
        groups = [list(range(g * d, (g + 1) * d)) for g in range(len(channels))]
        objective = objective + objectives.diversity(layer, groups, wanted, params.diversity_weight)
    pixels = icons.to_uint8(icons.render(network, params, seeds, objective, stop_after=layer, report=report))
    acts = icons.activations(network, layer, pixels)
    values = acts[torch.arange(len(wanted)), wanted].mean(dim=(1, 2)).tolist()
    return [UnitVisual(list(pixels[g * d:(g + 1) * d]), values[g * d:(g + 1) * d]) for g in range(len(channels))]


def dataset_views(task: Task, layer, channels: list[int]):
    """With a dataset: per channel (in `channels` order) its top-k entries, its statistics and its patch strip,
    from one pass; and the progress steps that took. Without one: Nones and 0 steps."""
    feed, params = task.feed, task.params
    if feed is None:
        return None, None, None, 0
    k = params.k
    shown = min(len(feed), len(channels) * k) if k else 0
    extra = (feed.steps_for(shown) if k else 0) + len(channels)
    top = TopK.empty(len(channels), max(k, 1))
    totals = UnitTotals.empty(layer.shape[0])
    passes = 0
    for batch in feed.batches([layer.name], extra_steps=extra):
        maps = batch.features[layer.name]
        totals.update(maps)
        top.update(maps[:, channels], batch.indices)
        passes += 1  # one progress step per batch
    units = totals.units(params.dead_fraction)
    stats = [units[c] for c in channels]
    if not k:
        return [[] for _ in channels], stats, None, passes
    entries = winners(top, channels, layer, task.network.record, feed)
    mosaic = draw(entries, k, feed)
    layout = Layout(len(channels), k)
    bh, bw = layout.block_size
    strips = [mosaic[y:y + bh, x:x + bw] for y, x in (layout.origin(row, 0) for row in range(len(channels)))]
    return entries, stats, strips, passes + feed.steps_for(shown)
