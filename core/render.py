"""Pictures for people: colour maps, feature-map grids, heatmaps over images, filter tiles, PNG bytes.

Pure numpy + Pillow (+ matplotlib's colour tables); shared by the API and the workers. PNG files of
8-bit grey, RGB, RGBA and palette images are written here (`png`): rows filtered with PNG's `Up` filter
in numpy (none for palette images) and deflated by ISA-L (`isal`, level 2) — about a tenth of Pillow's
time at `compress_level=1` for files of the same size (224×224 heatmap: 0.7 vs 7 ms; 640×640 feature
grid: 1.0 vs 4.6 ms, on one core of the shared test machine) — and, in parts of at least 256 KB, on several
threads (a 2090² grid of 1280 random 7×7 maps: 1.5 → 0.6 ms of deflate on two cores; the built-in model's last
layer on the cat, which deflates faster: 1.5 → 1.3 ms for the whole PNG). Grids are kept
as their distinct rows and how often each repeats, so a zoomed grid is never made whole to be written.
Other modes go through Pillow.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import isal_zlib as _deflate
from PIL import Image

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
    # The cells as a (rows, h, cols, w, zoom[, k]) view of the canvas, each tile pixel broadcast over its zoom
    # columns: one assignment for the complete rows of tiles, one for the last, partial row.
    cells = canvas[1:, GAP:].reshape(rows, h + 1, cols, tw + GAP, *depth)[:, :h, :, :tw]
    cells = cells.reshape(rows, h, cols, w, zoom, *depth)
    spread = tiles[:, :, :, None]  # n × h × w × 1 [× k]
    full = n // cols
    cells[:full] = spread[:full * cols].reshape(full, cols, h, w, 1, *depth).swapaxes(1, 2)
    if full < rows:
        cells[full, :, :n - full * cols] = spread[full * cols:].swapaxes(0, 1)
    return canvas, counts


def feature_grid(maps: np.ndarray, *, per: str = "channel", cmap: str = "inferno") -> Image.Image:
    """C×H×W feature maps → a colour-mapped grid, channel 0 top-left, row by row.

    Built as a palette image (255 colour-map entries + one for the gaps): a third of the bytes
    of RGB, so the PNG encodes about three times faster.
    """
    grid = Image.fromarray(np.repeat(*_feature_indices(maps, per), axis=0), "P")
    grid.putpalette(_grid_palette(cmap).tobytes())
    return grid


def feature_grid_png(maps: np.ndarray, *, per: str = "channel", cmap: str = "inferno") -> bytes:
    """`png(feature_grid(...))`, the same bytes, written from the grid's distinct rows: the zoomed grid (4.4 MB
    for 1280 maps of 7×7) is never made, nor deflated."""
    rows, counts = _feature_indices(maps, per)
    return _png_rows(rows, 3, palette=_grid_palette(cmap), counts=counts)


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
    mixed = np.asarray(image.convert("RGB")) * np.float32(1 - alpha)  # float32 throughout: a job's PNG in under 1 ms
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


_PNG_COLOR = {"L": 0, "RGB": 2, "RGBA": 6, "P": 3}


def png(image: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of an image (fast compression: these are made per request)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode not in _PNG_COLOR:
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    pixels = np.asarray(image, dtype=np.uint8)
    if image.mode != "P":
        return _png_rows(pixels, _PNG_COLOR[image.mode])
    palette = np.frombuffer(bytes((image.getpalette() or [])[:3 * 256]), np.uint8).reshape(-1, 3)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int):
        transparency = bytes([255] * transparency + [0])
    return _png_rows(pixels, 3, palette=palette, transparency=transparency if isinstance(transparency, bytes) else None)


_ROWS_PER_BLOCK_BYTES = 1 << 17  # rows are filtered and deflated in blocks of about this many bytes
_PART_BYTES = 1 << 18  # larger images are deflated in parts of at least this many bytes, on several threads
_PARTS = min(4, os.cpu_count() or 1)
_ADLER_MOD = 65521


def _png_rows(pixels: np.ndarray, color: int, *, palette: np.ndarray | None = None,
              transparency: bytes | None = None, counts: np.ndarray | None = None) -> bytes:
    """PNG bytes of H×W (grey or palette indices) or H×W×k uint8 pixels of PNG colour type `color`, row i
    repeated `counts[i]` times (once each without `counts`).

    Rows get PNG's `Up` filter (each byte minus the one above it; none for palette images) and are deflated
    block by block through one small buffer, so a large image is never made or copied whole. A large image is
    deflated in parts on as many threads (ISA-L lets go of the GIL), as pigz does: each part a deflate stream of
    its own that ends byte-aligned, the parts one after the other one stream, their Adler-32s combined."""
    width = pixels.shape[1]
    rows = pixels.reshape(pixels.shape[0], -1)
    if counts is not None:  # which given row each image row is
        rows = _Repeated(rows, np.repeat(np.arange(len(rows)), counts))
    height, stride = len(rows), rows.shape[1]
    n_parts = max(1, min(_PARTS, height, height * (stride + 1) // _PART_BYTES))
    bounds = [height * i // n_parts for i in range(n_parts + 1)]
    later = [_pool(os.getpid()).submit(_deflate_rows, rows, color, bounds[i], bounds[i + 1], i == n_parts - 1)
             for i in range(1, n_parts)]
    streams = [_deflate_rows(rows, color, bounds[0], bounds[1], n_parts == 1), *(part.result() for part in later)]
    adler = 1
    for _, part_adler, length in streams:
        adler = _adler_combine(adler, part_adler, length)
    idat = b"".join([b"\x78\x01", *(stream for stream, _, _ in streams), struct.pack(">I", adler)])
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", np.ascontiguousarray(palette, np.uint8).tobytes()))
    if transparency:
        chunks.append(_chunk(b"tRNS", transparency))
    chunks.append(_chunk(b"IDAT", idat))
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _deflate_rows(rows, color: int, start: int, stop: int, last: bool) -> tuple[bytes, int, int]:
    """Rows [start, stop) filtered and deflated as a raw deflate stream (the final one if `last`, else ending
    byte-aligned by a sync flush), with the Adler-32 and the length of the filtered bytes."""
    up = color != 3
    stride = rows.shape[1]
    per_block = max(1, _ROWS_PER_BLOCK_BYTES // (stride + 1))
    buffer = np.empty((min(per_block, stop - start), stride + 1), np.uint8)
    buffer[:, 0] = 2 if up else 0
    deflate = _deflate.compressobj(2, _deflate.DEFLATED, -15)
    parts, adler = [], 1
    for first in range(start, stop, per_block):
        out = buffer[:min(per_block, stop - first)]
        if not up:
            out[:, 1:] = rows[first:first + len(out)]
        else:  # the first row's "row above" is zeros, as PNG defines it
            block = rows[first:first + len(out)]
            above = rows[first - 1:first + len(block) - 1] if first else np.vstack([np.zeros_like(block[:1]), block[:-1]])
            np.subtract(block, above, out=out[:, 1:])
        parts.append(deflate.compress(out))
        adler = _deflate.adler32(out, adler)
    parts.append(deflate.flush() if last else deflate.flush(_deflate.Z_SYNC_FLUSH))
    return b"".join(parts), adler, (stop - start) * (stride + 1)


@functools.cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """The deflating threads of process `pid`: a process forked after a PNG was written makes its own (the
    parent's threads do not exist in it, and its copy of the parent's pool would wait for them forever)."""
    return ThreadPoolExecutor(max(1, _PARTS - 1), thread_name_prefix="png")


def _adler_combine(first: int, second: int, second_len: int) -> int:
    """Adler-32 of two byte strings one after the other, from theirs and the second's length (zlib's
    `adler32_combine`: A adds up, and each byte of the first counts once more for every byte of the second)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    return ((b1 + b2 + second_len * (a1 - 1)) % _ADLER_MOD) << 16 | (a1 + a2 - 1) % _ADLER_MOD


class _Repeated:
    """Rows of an image some of whose rows repeat, read in slices without making the image: `which[i]` is
    the given row that image row i is."""

    def __init__(self, rows: np.ndarray, which: np.ndarray):
        self.rows, self.which, self.shape = rows, which, (len(which), rows.shape[1])

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, span: slice) -> np.ndarray:
        return self.rows[self.which[span]]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF)


def npy(array: np.ndarray) -> bytes:
    """`.npy` bytes, float32 little-endian."""
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array, dtype="<f4"), allow_pickle=False)
    return out.getvalue()
