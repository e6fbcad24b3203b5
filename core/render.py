"""Pictures for people: colour maps, feature-map grids, heatmaps over images, filter tiles.

Pure numpy + Pillow (+ matplotlib's colour tables), shared by the API and the workers: arrays and Pillow images in,
uint8 pixels out; `core.encoding` turns them into file bytes. A grid is made as its distinct rows and how often
each repeats (`_grid`), so a zoomed grid can be written without ever being made whole (`feature_grid_png`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from core import encoding

GAP = 2  # pixels between tiles
MAX_GRID_PX = 2048


@functools.cache
def lut(name: str) -> np.ndarray:
    """256×3 uint8 table of a matplotlib colour map; KeyError for an unknown name."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in [0, 1] (any shape) → uint8 RGB of shape (..., 3)."""
    index = np.clip(np.nan_to_num(values) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lut(cmap)[index]


def normalize(maps: np.ndarray, per: str = "channel") -> np.ndarray:
    """Scale C×H×W maps to [0, 1], per channel or over the whole layer (min → 0, max → 1)."""
    maps = maps.astype(np.float32)
    axes = (1, 2) if per == "channel" else None
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1.0)


def tile_grid(tiles: np.ndarray, *, background: int = 32) -> Image.Image:
    """N×h×w×k uint8 tiles (k = 3: RGB, k = 1: palette indices) → one near-square image, tiles
    upscaled (nearest) to be readable."""
    canvas = np.repeat(*_grid(tiles, background), axis=0)
    return Image.fromarray(canvas, "P") if canvas.ndim == 2 else Image.fromarray(canvas)


def _grid(tiles: np.ndarray, background: int) -> tuple[np.ndarray, np.ndarray]:
    """`tile_grid`'s pixels as its distinct rows and how many times each is repeated (the grid is
    `np.repeat(rows, counts, axis=0)`): a gap once (GAP rows), then per row of tiles each tile row once
    (`zoom` rows) and a gap. H'×W (k = 1) or H'×W×3, written with two assignments and no per-tile loop."""
    n, h, w, k = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = max(1, min(64 // max(h, w, 1) or 1, (MAX_GRID_PX // cols) // max(w, 1) or 1))
    tw = w * zoom
    if k == 1:  # palette indices: 2-D, so that numpy copies whole rows (a trailing axis of 1 goes byte by byte)
        tiles = tiles[..., 0]
    depth = tiles.shape[3:]
    canvas = np.full((rows * (h + 1) + 1, cols * (tw + GAP) + GAP, *depth), background, np.uint8)
    counts = np.full(len(canvas), zoom)
    counts[::h + 1] = GAP
    # The cells as a (rows, h, cols, tw[, k]) view of the canvas, filled from the tiles widened to their zoom
    # (`np.repeat`: contiguous rows, copied whole, where broadcasting each pixel over its zoom columns copied
    # byte by byte): one assignment for the complete rows of tiles, one for the last, partial row.
    cells = canvas[1:, GAP:].reshape(rows, h + 1, cols, tw + GAP, *depth)[:, :h, :, :tw]
    wide = np.repeat(tiles, zoom, axis=2)  # n × h × tw [× k]
    full = n // cols
    cells[:full] = wide[:full * cols].reshape(full, cols, h, tw, *depth).swapaxes(1, 2)
    if full < rows:
        cells[full, :, :n - full * cols] = wide[full * cols:].swapaxes(0, 1)
    return canvas, counts


def feature_grid(maps: np.ndarray, *, per: str = "channel", cmap: str = "inferno") -> Image.Image:
    """C×H×W feature maps → a colour-mapped grid, channel 0 top-left, row by row.

    Built as a palette image (255 colour-map entries + one for the gaps): a third of the bytes
    of RGB to filter and deflate when it is written.
    """
    grid = Image.fromarray(np.repeat(*_feature_indices(maps, per), axis=0), "P")
    grid.putpalette(_grid_palette(cmap).tobytes())
    return grid


def feature_grid_png(maps: np.ndarray, *, per: str = "channel", cmap: str = "inferno") -> bytes:
    """`encoding.png(feature_grid(...))`, the same bytes, written from the grid's distinct rows: the zoomed grid
    (megabytes for a layer of a thousand small maps) is never made, nor deflated."""
    rows, counts = _feature_indices(maps, per)
    return encoding.png_rows(rows, 3, palette=_grid_palette(cmap), counts=counts)


def _feature_indices(maps: np.ndarray, per: str) -> tuple[np.ndarray, np.ndarray]:
    index = (np.clip(np.nan_to_num(normalize(maps, per)), 0, 1) * 254 + 0.5).astype(np.uint8)
    return _grid(index[..., None], background=255)


@functools.cache
def _grid_palette(cmap: str) -> np.ndarray:
    """256×3: the colour map in 255 entries, then the gaps' grey."""
    return np.vstack([lut(cmap)[np.linspace(0, 255, 255).round().astype(int)], [[32, 32, 32]]]).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, *, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """Blend a heatmap with values in [0, 1] (any h×w, upsampled bilinearly) over an RGB image."""
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    colours = lut(cmap)[np.asarray(heat_img)]  # what `colorize` makes of the 8-bit heat, without the float round trip
    mixed = np.asarray(image.convert("RGB")) * np.float32(1 - alpha)  # float32 throughout, not float64: per heatmap
    mixed += colours * np.float32(alpha)
    mixed += np.float32(0.5)
    return Image.fromarray(mixed.astype(np.uint8))


def filter_tiles(weights: np.ndarray) -> np.ndarray:
    """O×I×kh×kw conv weights → tiles: colour (one per filter) for a 3-channel input, else one grey
    tile per (output, input) slice. Each tile is scaled symmetrically about zero to 0–255."""
    weights = weights.astype(np.float32)
    if weights.shape[1] == 3:
        tiles = weights.transpose(0, 2, 3, 1)
        peak = np.abs(tiles).max(axis=(1, 2, 3), keepdims=True)
    else:
        tiles = weights.reshape(-1, *weights.shape[2:])[..., None].repeat(3, axis=-1)
        peak = np.abs(tiles).max(axis=(1, 2, 3), keepdims=True)
    tiles = tiles / np.where(peak > 0, peak, 1.0) * 127.5 + 127.5
    return np.clip(tiles + 0.5, 0, 255).astype(np.uint8)
