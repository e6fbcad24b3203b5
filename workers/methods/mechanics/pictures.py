"""Pictures of several maps at once (`panel.png` of compare, `cascade.png` of sanity_check): each map's heat
over the image the model saw, captioned, in one row."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

CAPTION_PX = 28  # two lines of PIL's default font under each tile
GAP = 4
MAX_ROW_PX = 4096


def overlay(fitted: np.ndarray, heat: np.ndarray, side: int, cmap: str = "jet") -> np.ndarray:
    """side×side×3 uint8: the image (H×W×3 uint8) with heat (any h×w in [0, 1], resized bilinearly) half
    covering it in `cmap` colours, as `heatmap.png` shows a map."""
    heat = np.clip(np.nan_to_num(heat), 0, 1).astype(np.float32)
    heat = np.asarray(Image.fromarray(heat).resize((side, side), Image.BILINEAR), np.float32)
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255
    base = np.asarray(Image.fromarray(fitted).resize((side, side), Image.BILINEAR), np.float32)
    return (0.5 * base + 0.5 * colours + 0.5).astype(np.uint8)


def tile_side(tiles: int, largest: int = 224, smallest: int = 64) -> int:
    """Pixels per tile so that a row of `tiles` stays within MAX_ROW_PX (between `smallest` and `largest`)."""
    return int(np.clip((MAX_ROW_PX - GAP * tiles) // max(tiles, 1), smallest, largest))


def captioned_row(tiles: list[np.ndarray], captions: list[tuple[str, str]]) -> np.ndarray:
    """H×W×3 uint8: the (equal, square) tiles side by side on white, two caption lines under each."""
    side = tiles[0].shape[0]
    width = len(tiles) * (side + GAP) + GAP
    row = Image.new("RGB", (width, side + CAPTION_PX + 2 * GAP), "white")
    draw = ImageDraw.Draw(row)
    for i, (tile, (first, second)) in enumerate(zip(tiles, captions)):
        left = GAP + i * (side + GAP)
        row.paste(Image.fromarray(tile), (left, GAP))
        limit = max(side // 6, 4)  # characters of the default font (6 px each) that fit under a tile
        draw.text((left, side + GAP + 1), first[:limit], fill="black")
        draw.text((left, side + GAP + 1 + CAPTION_PX // 2), second[:limit], fill=(70, 70, 70))
    return np.asarray(row)
