"""What a job stores: its outputs encoded as files (npy, PNG) for `GET /v1/jobs/{id}/artifacts/{name}`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core import render
from workers.methods.making import Made
from workers.methods.task import Attribution

HEATMAP_COLORMAP = "jet"


def attribution_artifacts(x: np.ndarray, image: Image.Image, out: Attribution) -> dict[str, bytes]:
    """`input.npy` (the exact 1×C×H×W model input), `attribution.npy` (float32), and `heatmap.png`:
    the heat over the image the model saw, with a colour map a person can read."""
    return {
        "input.npy": render.npy(x),
        "attribution.npy": render.npy(out.attribution.astype(np.float32)),
        "heatmap.png": render.png(render.overlay(image, out.heat, cmap=HEATMAP_COLORMAP, alpha=0.5)),
    }


def made_artifacts(x: np.ndarray | None, out: Made) -> dict[str, bytes]:
    """`input.npy` when the kind read an image, then each made image as PNG (`image.png`, ...)."""
    files = {"input.npy": render.npy(x)} if x is not None else {}
    files.update({name: render.png(pixels) for name, pixels in out.images.items()})
    return files


def artifacts_of(x: np.ndarray | None, image: Image.Image | None, out) -> dict[str, bytes]:
    """Encode a method's output by its type (one function per output type)."""
    if isinstance(out, Attribution):
        return attribution_artifacts(x, image, out)
    if isinstance(out, Made):
        return made_artifacts(x, out)
    raise TypeError(f"no artifact encoder for {type(out).__name__}")
