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
