"""PNG files written by `core.encoding.png` (own writer, ISA-L deflate) read back pixel for pixel."""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import pytest
from PIL import Image

from core import encoding, render


@pytest.mark.parametrize("mode, shape", [("L", (37, 53)), ("RGB", (224, 224, 3)), ("RGBA", (5, 7, 4)),
                                         ("RGB", (1, 9, 3)), ("RGB", (9, 1, 3))])
def test_png_reads_back_exactly(mode, shape):
    pixels = np.random.default_rng(len(shape) * shape[0]).integers(0, 256, shape, dtype=np.uint8)
    data = encoding.png(Image.fromarray(pixels if mode != "L" else pixels))
    back = Image.open(io.BytesIO(data))
    assert back.mode == mode
    np.testing.assert_array_equal(np.asarray(back), pixels)


def test_feature_grid_png_keeps_its_palette():
    maps = np.random.default_rng(0).random((10, 12, 12)).astype(np.float32)
    grid = render.feature_grid(maps, cmap="viridis")
    back = Image.open(io.BytesIO(encoding.png(grid)))
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(grid))
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(grid.convert("RGB")))


def test_other_modes_go_through_pillow():
    image = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    assert image.mode not in ("L", "RGB", "RGBA", "P")
    back = Image.open(io.BytesIO(encoding.png(image)))
    np.testing.assert_array_equal(np.asarray(back, dtype=np.int32), np.arange(12).reshape(3, 4) * 1000)


@pytest.mark.parametrize("shape", [(1280, 7, 7), (480, 14, 14), (3, 300, 2), (1, 1, 1)])
def test_feature_grid_png_is_png_of_the_grid(shape):
    """The direct writer (the activations view's path) gives the very bytes of `png(feature_grid(...))`, and a
    grid taller than one deflate block reads back pixel for pixel."""
    maps = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
    grid = render.feature_grid(maps, per="layer", cmap="magma")
    data = render.feature_grid_png(maps, per="layer", cmap="magma")
    assert data == encoding.png(grid)
    back = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(grid))
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(grid.convert("RGB")))


def test_tall_rgb_reads_back_across_blocks():
    """An RGB image of more rows than one deflate block: the Up filter carries across the block edges."""
    pixels = np.random.default_rng(1).integers(0, 256, (700, 150, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoding.png(pixels)))), pixels)


@pytest.mark.parametrize("alpha, tolerance", [(0.5, 0), (0.3, 1)])
def test_overlay_is_the_colour_map_of_the_upsampled_heat_blended_over_the_image(alpha, tolerance):
    """The reference in float64: the heat upsampled bilinearly as 8 bits, coloured by `colorize`, blended, rounded."""
    rng = np.random.default_rng(3)
    image = Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8))
    heat = rng.random((7, 7)).astype(np.float32)
    upsampled = Image.fromarray((heat * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    colours = render.colorize(np.asarray(upsampled, np.float64) / 255.0, "jet").astype(np.float64)
    expected = (np.asarray(image, np.float64) * (1 - alpha) + colours * alpha + 0.5).astype(np.uint8)
    made = np.asarray(render.overlay(image, heat, cmap="jet", alpha=alpha))
    assert made.shape == expected.shape and np.abs(made.astype(int) - expected).max() <= tolerance


def reference_grid(tiles: np.ndarray, background: int) -> np.ndarray:
    """`tile_grid`'s layout tile by tile: near-square, row by row, each tile zoomed (nearest) and GAP apart."""
    n, h, w, k = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = max(1, min(64 // max(h, w), (render.MAX_GRID_PX // cols) // w))
    gap = render.GAP
    canvas = np.full((rows * (h * zoom + gap) + gap, cols * (w * zoom + gap) + gap, k), background, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = gap + (i // cols) * (h * zoom + gap), gap + (i % cols) * (w * zoom + gap)
        canvas[top:top + h * zoom, left:left + w * zoom] = tile.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return canvas if k == 3 else canvas[..., 0]


@pytest.mark.parametrize("shape", [(7, 5, 3, 3), (40, 3, 4, 1), (1280, 7, 7, 1), (1, 1, 1, 3), (3, 300, 2, 1)])
def test_tile_grid_places_every_tile(shape):
    tiles = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(render.tile_grid(tiles)), reference_grid(tiles, 32))


@pytest.mark.parametrize("mode, shape", [("P", (900, 700)), ("RGB", (500, 400, 3))])
def test_an_image_deflated_in_parts_is_one_valid_stream(monkeypatch, mode, shape):
    """Parts of at least 64 KB, deflated on threads: zlib reads the joined stream (and checks its Adler-32),
    and the rows, repeated as `counts` says, read back exactly."""
    monkeypatch.setattr(encoding, "_PART_BYTES", 1 << 16)
    monkeypatch.setattr(encoding, "_PARTS", 4)
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 256, shape, dtype=np.uint8) // 16  # compressible, as grids are
    counts = rng.integers(1, 4, shape[0])
    data = encoding.png_rows(rows, 3 if mode == "P" else 2, palette=render._grid_palette("viridis") if mode == "P" else None,
                            counts=counts)
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    stride = rows[0].size + 1
    assert len(zlib.decompress(idat)) == counts.sum() * stride
    back = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(back, np.repeat(rows, counts, axis=0))


@pytest.mark.parametrize("first, second", [(b"", b""), (b"a", b""), (b"", b"xyz"), (bytes(range(256)) * 300, b"\xff" * 70000)])
def test_adler_combine_is_the_checksum_of_both(first, second):
    assert encoding._adler_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)


def test_a_forked_process_deflates_in_parts_with_threads_of_its_own(monkeypatch):
    """The pool of deflating threads is the process's own: a child forked after the parent wrote a PNG in parts
    writes one too (with the parent's pool it would wait forever for threads it does not have)."""
    import multiprocessing

    monkeypatch.setattr(encoding, "_PART_BYTES", 1 << 16)
    monkeypatch.setattr(encoding, "_PARTS", 2)
    rows = np.random.default_rng(7).integers(0, 16, (600, 400), dtype=np.uint8)
    parent = encoding.png_rows(rows, 0)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(encoding.png_rows, (rows, 0)).get(timeout=30)
    assert child == parent
