"""Uploaded PNGs decoded by libspng (`core.images._plain_png`) give Pillow's very pixels, and what it does not
take (palettes, 16 bits, grey with alpha, EXIF orientation) still goes to Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core import images
from tests.conftest import sample

LIMITS = {"max_bytes": 10**8, "max_pixels": 10**8}


def png_of(image: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **save)
    return out.getvalue()


def with_chunk(data: bytes, tag: bytes, body: bytes) -> bytes:
    """The PNG with one more chunk just after IHDR (8 + 25 bytes in)."""
    chunk = struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return data[:33] + chunk + data[33:]


def pillow_rgb(data: bytes) -> np.ndarray:
    """What `decode` made of a PNG before libspng: Pillow's pixels, orientation applied, alpha on white."""
    from PIL import ImageOps

    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(images.to_8bit_rgb(ImageOps.exif_transpose(image)))


def rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    return exif


CAT = sample("chelsea")
ALPHA = np.dstack([CAT, (np.arange(CAT.shape[1]) % 256).astype(np.uint8)[None].repeat(CAT.shape[0], 0)])
CASES = {
    "rgb": png_of(Image.fromarray(CAT)),
    "rgb, fastest compression": png_of(Image.fromarray(CAT), compress_level=1),
    "rgba": png_of(Image.fromarray(ALPHA)),
    "grey": png_of(Image.fromarray(CAT[..., 0])),
    "rgb with gamma and a transparent colour": with_chunk(with_chunk(png_of(Image.fromarray(CAT)), b"gAMA",
                                                                     struct.pack(">I", 100000)),
                                                          b"tRNS", struct.pack(">HHH", 0, 0, 0)),
}
PILLOW_ONLY = {
    "palette": png_of(Image.fromarray(CAT).convert("P")),
    "grey with alpha": png_of(Image.fromarray(ALPHA).convert("LA")),
    "16-bit grey": png_of(Image.fromarray(sample("camera").astype(np.uint16) * 257)),
    "exif, rotated": png_of(Image.fromarray(CAT), exif=rotated()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_libspng_decodes_plain_pngs_to_pillows_pixels(case):
    data = CASES[case]
    assert images._plain_png(Image.open(io.BytesIO(data)), data) is not None  # this file takes the fast path
    np.testing.assert_array_equal(np.asarray(images.decode(data, **LIMITS)), pillow_rgb(data))


@pytest.mark.parametrize("case", sorted(PILLOW_ONLY))
def test_other_pngs_go_to_pillow(case):
    data = PILLOW_ONLY[case]
    assert images._plain_png(Image.open(io.BytesIO(data)), data) is None
    np.testing.assert_array_equal(np.asarray(images.decode(data, **LIMITS)), pillow_rgb(data))
    if case.startswith("exif"):
        assert images.decode(data, **LIMITS).size == (CAT.shape[0], CAT.shape[1])  # turned: as tall as it was wide


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_a_truncated_plain_png_is_corrupt(cut):
    data = CASES["rgb"]
    with pytest.raises(images.BadRequest) as caught:
        images.decode(data[:int(len(data) * cut)], **LIMITS)
    assert caught.value.code == "corrupt_image"
