"""Maximally activating images and patches (Zeiler & Fergus 2014, fig. 2; Girshick et al. 2014).

For each channel c of a layer, the k dataset images on which the channel's strongest activation
(max over positions y, x of A[c, y, x]) is largest — one entry per image, at that image's argmax
position — found in one pass over the dataset for every channel at once. The patch shown is the
unit's receptive field on the model input: rows `start + y*stride … start + y*stride + size - 1`
(likewise columns), clipped to the image. Activations are in the layer's own units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.record import ReceptiveField
from service import render
from workers.dataset_feed import DatasetOutput, DatasetTask

BACKGROUND = 32
MAX_PICTURE_PX = 4096


@dataclass
class TopK:
    """Per channel, the k best (activation, image, position) so far, best first — a bounded heap for
    every channel at once, kept as C×k arrays and merged with each batch's candidates."""

    value: np.ndarray  # C×k float32, -inf where empty
    image: np.ndarray  # C×k int64, -1 where empty
    position: np.ndarray  # C×k int64: flat index y*w + x on the layer's grid

    @classmethod
    def empty(cls, channels: int, k: int) -> "TopK":
        return cls(np.full((channels, k), -np.inf, np.float32), np.full((channels, k), -1, np.int64),
                   np.zeros((channels, k), np.int64))

    def update(self, maps: np.ndarray, indices: np.ndarray) -> None:
        """Merge a batch: `maps` N×C×h×w activations of the images `indices` (N)."""
        n, c = maps.shape[:2]
        flat = maps.reshape(n, c, -1)
        position = flat.argmax(axis=2)  # first maximum, row-major
        value = np.take_along_axis(flat, position[..., None], axis=2)[..., 0]
        values = np.concatenate([self.value, value.T], axis=1)
        images = np.concatenate([self.image, np.broadcast_to(indices[None, :], (c, n))], axis=1)
        positions = np.concatenate([self.position, position.T], axis=1)
        # Highest activation first; ties go to the lower image index (deterministic, like a stable sort).
        order = np.lexsort((np.where(images < 0, np.iinfo(np.int64).max, images), -values), axis=1)
        keep = order[:, :self.value.shape[1]]
        self.value = np.take_along_axis(values, keep, axis=1)
        self.image = np.take_along_axis(images, keep, axis=1)
        self.position = np.take_along_axis(positions, keep, axis=1)


def receptive_box(rf: ReceptiveField, y: int, x: int, height: int, width: int) -> list[int]:
    """[x0, y0, x1, y1] (x1, y1 exclusive) of unit (y, x)'s receptive field, clipped to the H×W input."""
    top, left = rf.start + y * rf.stride, rf.start + x * rf.stride
    return [max(left, 0), max(top, 0), min(left + rf.size, width), min(top + rf.size, height)]


def letterbox(patch: np.ndarray, side: int) -> np.ndarray:
    """A patch scaled to fit a side×side tile, aspect kept, the rest background grey."""
    h, w = patch.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(patch).resize(size, Image.BICUBIC))
    tile = np.full((side, side, 3), BACKGROUND, np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    tile[top:top + size[1], left:left + size[0]] = resized
    return tile


def tile_side(channels: int, k: int) -> int:
    """Pixels per patch tile so that the whole picture stays within MAX_PICTURE_PX (40 to 96: smaller tiles would be upscaled by `tile_grid`)."""
    side = math.ceil(math.sqrt(channels)) * math.ceil(math.sqrt(k))
    return int(np.clip(MAX_PICTURE_PX // max(side, 1), 40, 96))


def patches_picture(per_channel: list[list[np.ndarray]], k: int, tile: int) -> Image.Image:
    """One block of k tiles per channel (a near-square grid, best top-left), blocks in a near-square grid."""
    empty = np.full((tile, tile, 3), BACKGROUND, np.uint8)
    blocks = [np.asarray(render.tile_grid(np.stack(tiles + [empty] * (k - len(tiles))), background=BACKGROUND))
              for tiles in per_channel]
    if len(blocks) == 1:
        return Image.fromarray(blocks[0])
    return render.tile_grid(np.stack(blocks), background=96)


def run(task: DatasetTask) -> DatasetOutput:
    """`top.json` (per channel, best first) and `patches.png`; metrics: layer, channels, k, images."""
    params, record, feed = task.params, task.record, task.feed
    layer = record.layer(params.layer)
    channels = [params.channel] if params.channel is not None else list(range(layer.shape[0]))
    top = TopK.empty(len(channels), params.k)
    later = feed.steps_for(min(len(feed), len(channels) * params.k))
    for batch in feed.batches([layer.name], extra_steps=later):
        maps = batch.features[layer.name]
        top.update(maps[:, channels] if params.channel is not None else maps, batch.indices)
    grid_w = layer.shape[2]
    height, width = record.input.height, record.input.width
    entries = [[] for _ in channels]
    for row in range(len(channels)):
        for value, image, position in zip(top.value[row], top.image[row], top.position[row]):
            if image >= 0:
                y, x = divmod(int(position), grid_w)
                entries[row].append({"channel": channels[row], "image_index": int(image),
                                     "name": feed.name(int(image)), "activation": float(value), "position": [y, x],
                                     "box": receptive_box(layer.receptive_field, y, x, height, width)})
    # Crop the winners' patches one source image at a time; only the small tiles are kept.
    tile = tile_side(len(channels), params.k)
    wanted: dict[int, list[tuple[int, int]]] = {}
    for row, found in enumerate(entries):
        for rank, entry in enumerate(found):
            wanted.setdefault(entry["image_index"], []).append((row, rank))
    tiles: dict[tuple[int, int], np.ndarray] = {}
    for index, pixels in feed.images(wanted):
        for row, rank in wanted[index]:
            x0, y0, x1, y1 = entries[row][rank]["box"]
            tiles[row, rank] = letterbox(pixels[y0:y1, x0:x1], tile)
    per_channel = [[tiles[row, rank] for rank in range(len(found))] for row, found in enumerate(entries)]
    flat = [entry for found in entries for entry in found]
    return DatasetOutput(
        artifacts={"top.json": json.dumps(flat).encode(),
                   "patches.png": render.png(patches_picture(per_channel, params.k, tile))},
        metrics={"layer": layer.name, "channels": len(channels), "k": params.k, "images": len(feed),
                 "receptive_field": layer.receptive_field.model_dump()})
