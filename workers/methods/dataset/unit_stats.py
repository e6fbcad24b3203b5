"""Per-channel statistics of a layer over a dataset: what each unit does on average, and dead units.

For channel c and image n let m[n, c] = max over positions of A[n, c, y, x]. Reported per channel:
`mean` (activation averaged over images and positions, in the layer's units), `max` (largest
activation seen), `fraction_zero` (fraction of images on which the channel never fires: m ≤ 0),
`sparsity` (fraction of all (image, position) activations ≤ 0), and `dead` — it never fires on at
least `dead_fraction` of the images (by default: on none of them). Dead filters, often a sign of
too high a learning rate, show up as activation maps that stay zero whatever the input (Karpathy, CS231n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.methods import DatasetTask, Output


@dataclass
class UnitTotals:
    """Running sums over the images seen so far (float64)."""

    images: int
    mean_sum: np.ndarray  # Σ_n mean over positions
    silent: np.ndarray  # images with m ≤ 0
    nonpositive: np.ndarray  # Σ_n fraction of positions ≤ 0
    peak: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> UnitTotals:
        return cls(0, np.zeros(channels), np.zeros(channels, np.int64), np.zeros(channels),
                   np.full(channels, -np.inf))

    def update(self, maps: np.ndarray) -> None:
        flat = maps.reshape(maps.shape[0], maps.shape[1], -1).astype(np.float64)
        per_image_max = flat.max(axis=2)
        self.images += flat.shape[0]
        self.mean_sum += flat.mean(axis=2).sum(axis=0)
        self.silent += (per_image_max <= 0).sum(axis=0)
        self.nonpositive += (flat <= 0).mean(axis=2).sum(axis=0)
        self.peak = np.maximum(self.peak, per_image_max.max(axis=0))

    def units(self, dead_fraction: float) -> list[dict]:
        n = max(self.images, 1)
        fraction_zero = self.silent / n
        return [{"channel": c, "mean": float(self.mean_sum[c] / n), "fraction_zero": float(fraction_zero[c]),
                 "dead": bool(fraction_zero[c] >= dead_fraction), "sparsity": float(self.nonpositive[c] / n),
                 "max": float(self.peak[c])} for c in range(len(self.mean_sum))]


def chart(units: list[dict], layer: str, images: int, dead_fraction: float) -> np.ndarray:
    """H×W×4 RGBA uint8 (matplotlib's Agg canvas, 100 dpi, 8–24 × 6 inches): mean activation per channel (top)
    and fraction of images with no firing (bottom); dead channels in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    channels = np.arange(len(units))
    dead = np.array([u["dead"] for u in units])
    colours = np.where(dead, "#d62728", "#1f77b4")
    width = float(np.clip(len(units) * 0.05, 8, 24))
    figure = Figure(figsize=(width, 6), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.bar(channels, [u["mean"] for u in units], width=1.0, color=colours, linewidth=0)
    top.set_ylabel("mean activation")
    top.axhline(0, color="black", linewidth=0.5)
    bottom.bar(channels, [u["fraction_zero"] for u in units], width=1.0, color=colours, linewidth=0)
    bottom.axhline(dead_fraction, color="#d62728", linestyle="--", linewidth=1, label=f"dead at ≥ {dead_fraction:g}")
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("images with no firing")
    bottom.set_xlabel("channel")
    bottom.set_xlim(-0.5, len(units) - 0.5)
    bottom.legend(loc="upper right", fontsize=8)
    figure.suptitle(f"{layer}: {int(dead.sum())} of {len(units)} channels dead over {images} images")
    canvas.draw()
    return np.array(canvas.buffer_rgba())


def run(task: DatasetTask) -> Output:
    """Tables `units` [{channel, mean, fraction_zero, dead, sparsity, max}], pictures `units` (the chart);
    metrics: layer, images, channels, dead count and the dead channels (first 1000)."""
    params, feed = task.params, task.feed
    totals = None
    for batch in feed.batches([params.layer]):
        maps = batch.features[params.layer]
        totals = totals or UnitTotals.empty(maps.shape[1])
        totals.update(maps)
    units = totals.units(params.dead_fraction)
    dead = [u["channel"] for u in units if u["dead"]]
    return Output(
        tables={"units": units},
        pictures={"units": chart(units, params.layer, totals.images, params.dead_fraction)},
        metrics={"layer": params.layer, "images": totals.images, "channels": len(units), "dead": len(dead),
                 "dead_channels": dead[:1000]})
