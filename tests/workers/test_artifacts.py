"""How a method's typed result becomes the files a job stores (`workers/artifacts.py`): names, media types,
and contents that decode back to what the method returned."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from core.jobs.status import media_type
from core.methods import Output
from workers.artifacts import artifacts_of, output_artifacts


def test_an_output_is_encoded_as_png_json_and_npy_files_by_name():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 3, 4), dtype=np.uint8)
    x = rng.normal(size=(1, 3, 4, 4)).astype(np.float32)
    table = [{"channel": 0, "activation": 1.5, "box": [0, 0, 3, 3]}, {"name": "ä.png", "dead": True}]
    out = Output(pictures={"patches": rgb, "units": rgba}, tables={"top": table, "empty": []},
                 arrays={"input": x}, metrics={"k": 2})
    files = output_artifacts(out)
    assert list(files) == ["top.json", "empty.json", "patches.png", "units.png", "input.npy"]
    assert [media_type(name) for name in files] == ["application/json"] * 2 + ["image/png"] * 2 + [
        "application/x-npy"]
    assert files == artifacts_of(out)
    assert json.loads(files["top.json"]) == table and files["top.json"] == json.dumps(table).encode()
    assert json.loads(files["empty.json"]) == []
    for name, pixels, mode in (("patches.png", rgb, "RGB"), ("units.png", rgba, "RGBA")):
        decoded = Image.open(io.BytesIO(files[name]))
        assert decoded.format == "PNG" and decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), pixels)
    loaded = np.load(io.BytesIO(files["input.npy"]), allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, x)


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                    np.zeros((4, 4, 2), np.uint8)])
def test_a_picture_that_is_not_rgb_or_rgba_uint8_is_refused(pixels):
    with pytest.raises(ValueError, match="not H×W×3 or H×W×4 uint8"):
        output_artifacts(Output(pictures={"bad": pixels}))


def test_the_early_files_are_those_the_ending_would_make_and_are_not_made_again():
    """`early_artifacts` (stored while the method runs) is the `input.npy` that attributions and made images carry;
    outputs and kinds without an image get none. Given to `artifacts_of`, the very same bytes are used."""
    from core.methods import Attribution, ImageInput, Made
    from workers.artifacts import early_artifacts

    rng = np.random.default_rng(1)
    fitted = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = ImageInput(fitted, fitted, rng.normal(size=(1, 3, 8, 8)).astype(np.float32))
    attribution = Attribution(rng.normal(size=(3, 8, 8)).astype(np.float32), rng.random((8, 8)), {})
    made = Made({"image.png": fitted})
    for out in (attribution, made):
        early = early_artifacts(type(out), image)
        assert list(early) == ["input.npy"] and early["input.npy"] == artifacts_of(out, image)["input.npy"]
        files = artifacts_of(out, image, early)
        assert files["input.npy"] is early["input.npy"] and list(files)[0] == "input.npy"
        assert files == artifacts_of(out, image)
    assert early_artifacts(Output, image) == {} and early_artifacts(Made, None) == {}
    assert "input.npy" not in artifacts_of(made, None, early_artifacts(Made, None))
