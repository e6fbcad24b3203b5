"""Maximally activating images and patches (Zeiler & Fergus 2014, fig. 2; Girshick et al. 2014).

For each channel c of a layer, the k dataset images on which the channel's strongest activation
(max over positions y, x of A[c, y, x]) is largest — one entry per image, at that image's argmax
position — found in one pass over the dataset for every channel at once. The patch shown is the
unit's receptive field on the model input: rows `start + y*stride … start + y*stride + size - 1`
(likewise columns), clipped to the input (`input_box`, model-input pixels); `box` is the same region in
the dataset image's own pixels (`core.preprocessing.original_box`: the resize and centre crop undone, clipped
to the image). Activations are in the layer's own units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from core import preprocessing
from core.methods import ActivationFeed, DatasetTask, Output
from core.model_record import Layer, ModelRecord, ReceptiveField

BACKGROUND = 32  # grey of empty tile area
BLOCK_BACKGROUND = 96  # grey between channels' blocks
TILE_GAP, BLOCK_GAP = 2, 8  # pixels
MAX_PICTURE_PX = 3072


@dataclass
class TopK:
    """Per channel, the k best (activation, image, position) so far, best first — a bounded heap for
    every channel at once, kept as C×k arrays and merged with each batch's candidates."""

    value: np.ndarray  # C×k float32, -inf where empty
    image: np.ndarray  # C×k int64, -1 where empty
    position: np.ndarray  # C×k int64: flat index y*w + x on the layer's grid

    @classmethod
    def empty(cls, channels: int, k: int) -> TopK:
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
    """A patch scaled to fit a side×side tile, aspect kept (nearest when enlarging, so small fields stay
    crisp; bilinear when shrinking), the rest background grey."""
    h, w = patch.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale >= 1:
        resized = Image.fromarray(patch).resize(size, Image.NEAREST)
    else:
        resized = Image.fromarray(patch).resize(size, Image.BILINEAR, reducing_gap=2.0)
    tile = np.full((side, side, 3), BACKGROUND, np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    tile[top:top + size[1], left:left + size[0]] = np.asarray(resized)
    return tile


@dataclass(frozen=True)
class Layout:
    """Where patches go in `patches.png`: one block of k tiles per channel (near-square, best top-left),
    blocks in a near-square grid, the picture at most MAX_PICTURE_PX wide (tiles 16 to 96 px)."""

    channels: int
    k: int

    @property
    def block_cols(self) -> int:
        return math.ceil(math.sqrt(self.channels))

    @property
    def tile_cols(self) -> int:
        return math.ceil(math.sqrt(self.k))

    @cached_property
    def tile(self) -> int:
        across = self.block_cols * self.tile_cols
        return min(max((MAX_PICTURE_PX - (self.block_cols + 1) * BLOCK_GAP) // across - TILE_GAP, 16), 96)

    @cached_property
    def block_size(self) -> tuple[int, int]:
        rows = math.ceil(self.k / self.tile_cols)
        return rows * (self.tile + TILE_GAP) - TILE_GAP, self.tile_cols * (self.tile + TILE_GAP) - TILE_GAP

    def canvas(self) -> np.ndarray:
        bh, bw = self.block_size
        rows = math.ceil(self.channels / self.block_cols)
        canvas = np.full((rows * (bh + BLOCK_GAP) + BLOCK_GAP, self.block_cols * (bw + BLOCK_GAP) + BLOCK_GAP, 3),
                         BLOCK_BACKGROUND, np.uint8)
        for row in range(self.channels):
            y, x = self.origin(row, 0)
            canvas[y:y + bh, x:x + bw] = BACKGROUND
        return canvas

    def origin(self, row: int, rank: int) -> tuple[int, int]:
        bh, bw = self.block_size
        br, bc = divmod(row, self.block_cols)
        tr, tc = divmod(rank, self.tile_cols)
        return (BLOCK_GAP + br * (bh + BLOCK_GAP) + tr * (self.tile + TILE_GAP),
                BLOCK_GAP + bc * (bw + BLOCK_GAP) + tc * (self.tile + TILE_GAP))


def winners(top: TopK, channels: list[int], layer: Layer, record: ModelRecord,
            feed: ActivationFeed) -> list[list[dict]]:
    """Per channel, its `top.json` entries, best first; `input_box` in model-input pixels and `box` in the
    image's own pixels, each clipped to its image."""
    grid_w = layer.shape[2]
    height, width = record.input.height, record.input.width
    entries = [[] for _ in channels]
    for row, channel in enumerate(channels):
        for value, image, position in zip(top.value[row], top.image[row], top.position[row]):
            if image >= 0:
                y, x = divmod(int(position), grid_w)
                input_box = receptive_box(layer.receptive_field, y, x, height, width)
                entries[row].append({"channel": channel, "image_index": int(image), "name": feed.name(int(image)),
                                     "activation": float(value), "position": [y, x],
                                     "box": preprocessing.original_box(input_box, *feed.size(int(image)), record),
                                     "input_box": input_box})
    return entries


def draw(entries: list[list[dict]], k: int, feed: ActivationFeed) -> np.ndarray:
    """The `patches` picture (H×W×3 uint8): each winner's patch cropped from its image (loaded once, one
    image at a time) and drawn straight into the picture; a deep layer's fields cover the whole image,
    so one tile per (image, box) serves many channels."""
    layout = Layout(len(entries), k)
    canvas = layout.canvas()
    wanted: dict[int, list[tuple[int, int]]] = {}
    for row, found in enumerate(entries):
        for rank, entry in enumerate(found):
            wanted.setdefault(entry["image_index"], []).append((row, rank))
    for index, pixels in feed.images(sorted(wanted)):
        tiles: dict[tuple, np.ndarray] = {}
        for row, rank in wanted[index]:
            box = tuple(entries[row][rank]["input_box"])
            if box not in tiles:
                x0, y0, x1, y1 = box
                tiles[box] = letterbox(pixels[y0:y1, x0:x1], layout.tile)
            y, x = layout.origin(row, rank)
            canvas[y:y + layout.tile, x:x + layout.tile] = tiles[box]
    return canvas


def run(task: DatasetTask) -> Output:
    """Tables `top` (entries channel by channel, best first), pictures `patches` (the mosaic, H×W×3 uint8);
    metrics: layer, channels, k, images, receptive field."""
    params, record, feed = task.params, task.record, task.feed
    layer = record.layer(params.layer)
    channels = [params.channel] if params.channel is not None else list(range(layer.shape[0]))
    top = TopK.empty(len(channels), params.k)
    for batch in feed.batches([layer.name], extra_steps=feed.steps_for(min(len(feed), len(channels) * params.k))):
        maps = batch.features[layer.name]
        top.update(maps[:, channels] if params.channel is not None else maps, batch.indices)
    entries = winners(top, channels, layer, record, feed)
    return Output(
        tables={"top": [e for found in entries for e in found]},
        pictures={"patches": draw(entries, params.k, feed)},
        metrics={"layer": layer.name, "channels": len(channels), "k": params.k, "images": len(feed),
                 "receptive_field": layer.receptive_field.model_dump()})
