"""PNG files written by `core.render.png` (own writer, ISA-L deflate) read back pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import render


@pytest.mark.parametrize("mode, shape", [("L", (37, 53)), ("RGB", (224, 224, 3)), ("RGBA", (5, 7, 4)),
                                         ("RGB", (1, 9, 3)), ("RGB", (9, 1, 3))])
def test_png_reads_back_exactly(mode, shape):
    pixels = np.random.default_rng(len(shape) * shape[0]).integers(0, 256, shape, dtype=np.uint8)
    data = render.png(Image.fromarray(pixels if mode != "L" else pixels))
    back = Image.open(io.BytesIO(data))
    assert back.mode == mode
    np.testing.assert_array_equal(np.asarray(back), pixels)


def test_feature_grid_png_keeps_its_palette():
    maps = np.random.default_rng(0).random((10, 12, 12)).astype(np.float32)
    grid = render.feature_grid(maps, cmap="viridis")
    back = Image.open(io.BytesIO(render.png(grid)))
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(grid))
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(grid.convert("RGB")))


def test_other_modes_go_through_pillow():
    image = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    assert image.mode not in ("L", "RGB", "RGBA", "P")
    back = Image.open(io.BytesIO(render.png(image)))
    np.testing.assert_array_equal(np.asarray(back, dtype=np.int32), np.arange(12).reshape(3, 4) * 1000)


@pytest.mark.parametrize("shape", [(1280, 7, 7), (480, 14, 14), (3, 300, 2), (1, 1, 1)])
def test_feature_grid_png_is_png_of_the_grid(shape):
    """The direct writer (the activations view's path) gives the very bytes of `png(feature_grid(...))`, and a
    grid taller than one deflate block reads back pixel for pixel."""
    maps = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
    grid = render.feature_grid(maps, per="layer", cmap="magma")
    data = render.feature_grid_png(maps, per="layer", cmap="magma")
    assert data == render.png(grid)
    back = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(grid))
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(grid.convert("RGB")))


def test_tall_rgb_reads_back_across_blocks():
    """An RGB image of more rows than one deflate block: the Up filter carries across the block edges."""
    pixels = np.random.default_rng(1).integers(0, 256, (700, 150, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(render.png(pixels)))), pixels)


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
