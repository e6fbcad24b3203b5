"""What a job stores: its outputs encoded as files (npy, PNG, JSON) for `GET /v1/jobs/{id}/artifacts/{name}`."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from core import encoding, render
from core.methods import Attribution, ImageInput, Made, Output

HEATMAP_COLORMAP = "jet"


def early_artifacts(returns: type, image: ImageInput | None) -> dict[str, bytes]:
    """The files known once the inputs are loaded, before the method runs: `input.npy` (the exact 1×C×H×W model
    input) for the kinds whose files carry it, attributions and made images, when they read an image."""
    if image is None or not issubclass(returns, (Attribution, Made)):
        return {}
    return {"input.npy": encoding.npy(image.x)}


def attribution_artifacts(out: Attribution, image: ImageInput, early: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """`map_artifacts`, then `<name>.json` per table (`evaluation.json`)."""
    return {**map_artifacts(out, image, early), **table_artifacts(out)}


def map_artifacts(out: Attribution, image: ImageInput, early: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """The map's own files: `input.npy` (`early_artifacts`, or `early` as already made), `attribution.npy`
    (float32), and `heatmap.png`: the heat over the image the model saw, with a colour map a person can read; then
    `<name>.npy` per array (`ranking.npy`, `segments.npy`)."""
    files = {
        **(early if early is not None else early_artifacts(Attribution, image)),
        "attribution.npy": encoding.npy(out.attribution.astype(np.float32)),
        "heatmap.png": encoding.png(render.overlay(Image.fromarray(image.fitted), out.heat, cmap=HEATMAP_COLORMAP,
                                                 alpha=0.5)),
    }
    files.update({f"{name}.npy": encoding.npy(array) for name, array in out.arrays.items()})
    return files


def table_artifacts(out: Attribution) -> dict[str, bytes]:
    """`<name>.json` per table (`evaluation.json`: the map's scores)."""
    return {f"{name}.json": json.dumps(table).encode() for name, table in out.tables.items()}


def made_artifacts(out: Made, image: ImageInput | None, early: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """`input.npy` when the kind read an image (`early_artifacts`, or `early` as already made), then each made
    image as PNG (`image.png`, ...)."""
    files = dict(early if early is not None else early_artifacts(Made, image))
    files.update({name: encoding.png(pixels) for name, pixels in out.images.items()})
    return files


def output_artifacts(out: Output) -> dict[str, bytes]:
    """`<name>.json` per table (`json.dumps`), `<name>.png` per picture (H×W×3 RGB or H×W×4 RGBA uint8),
    `<name>.npy` per array (float32), in that order."""
    for name, pixels in out.pictures.items():
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise ValueError(f"picture {name!r} is {pixels.dtype} {pixels.shape}, not H×W×3 or H×W×4 uint8")
    files = {f"{name}.json": json.dumps(table).encode() for name, table in out.tables.items()}
    files.update({f"{name}.png": encoding.png(pixels) for name, pixels in out.pictures.items()})
    files.update({f"{name}.npy": encoding.npy(array) for name, array in out.arrays.items()})
    return files


def artifacts_of(out, image: ImageInput | None = None, early: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Encode a method's output by its type (one function per output type); `image`: the job's input image,
    when its kind reads one; `early`: what `early_artifacts` made of it before the method ran, not made again."""
    if isinstance(out, Attribution):
        return attribution_artifacts(out, image, early)
    if isinstance(out, Made):
        return made_artifacts(out, image, early)
    if isinstance(out, Output):
        return output_artifacts(out)
    raise TypeError(f"no artifact encoder for {type(out).__name__}")
