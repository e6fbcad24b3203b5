"""The one image pipeline's front: bytes → checked, decoded 8-bit RGB image → `ImageInput` for a model.

Limits are checked on the header, before any pixel is decoded, so a decompression bomb
(a few KB declaring 30000×30000 pixels) costs nothing. Every failure is a 4xx `ConvscopeError`.
What the model's preprocessing then makes of the decoded image (resize, crop, tensor) is `core.preprocessing`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import warnings

import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from core import preprocessing
from core.errors import BadRequest, TooLarge, UnsupportedMedia
from core.methods import ImageInput
from core.model_record import ModelRecord

FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "MPO"}
Image.MAX_IMAGE_PIXELS = None  # our own limit, checked on the header, replaces Pillow's warning


def image_id(data: bytes) -> str:
    """Content-derived id: the same bytes always get the same id."""
    return hashlib.sha256(data).hexdigest()[:32]


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an uploaded file to an RGB (or L) image, EXIF orientation applied, first frame only."""
    if not data:
        raise BadRequest("the image file is empty", code="empty_image")
    if len(data) > max_bytes:
        raise TooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes}", code="image_too_large")
    Image.init()  # registers every plugin once; `formats=` looks names up without loading them
    try:
        image = Image.open(io.BytesIO(data), formats=sorted(FORMATS & set(Image.OPEN)))
    except UnidentifiedImageError:
        raise UnsupportedMedia("the file is not an image in a format convscope reads "
                               "(PNG, JPEG, WebP, BMP, GIF, TIFF)", code="unsupported_image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadRequest(f"the image header could not be read: {exc}", code="corrupt_image") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadRequest("the image has no pixels", code="corrupt_image")
    if width * height > max_pixels:
        raise TooLarge(f"the image is {width}×{height} pixels; the limit is {max_pixels} pixels",
                       code="image_too_large", details={"width": width, "height": height})
    try:
        pixels = _plain_png(image, data)
        if pixels is not None:
            return to_8bit_rgb(Image.fromarray(pixels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_8bit_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"the image is truncated or corrupt: {exc}", code="corrupt_image") from None


_SPNG_COLOURS = {0, 2, 6}  # PNG colour types libspng hands back as they are: grey, RGB, RGBA (8 bits each)


def _plain_png(image: Image.Image, data: bytes) -> np.ndarray | None:
    """The pixels of an 8-bit grey, RGB or RGBA PNG with no EXIF chunk, decoded by libspng
    (`pyspng`), which is faster than Pillow and gives the same pixels. None for any other file,
    which Pillow decodes (palettes, 16 bits, grey with alpha, orientation). A file libspng refuses is corrupt
    (`ValueError`), as Pillow would find it."""
    if image.format != "PNG" or len(data) < 26 or b"eXIf" in data:  # (a chance match in the data: Pillow decodes)
        return None
    depth, colour = data[24], data[25]  # IHDR, the first chunk: width, height, bit depth, colour type
    if depth != 8 or colour not in _SPNG_COLOURS:
        return None
    try:
        return pyspng.load(data)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def format_of(data: bytes) -> str:
    """Lower-case format name of an image file that `decode` accepted (png, jpeg, ...)."""
    return (Image.open(io.BytesIO(data)).format or "unknown").lower()


def to_8bit_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB: 16-bit and float rescaled, alpha composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def prepare(data: bytes, record: ModelRecord, *, max_bytes: int, max_pixels: int,
            max_resized_pixels: int | None = None) -> ImageInput:
    """Image bytes → `ImageInput`: the decoded upload, the image the model sees, the exact model input."""
    return prepare_pixels(np.asarray(decode(data, max_bytes=max_bytes, max_pixels=max_pixels)), record,
                          max_resized_pixels=max_resized_pixels)


def prepare_pixels(pixels: np.ndarray, record: ModelRecord, *, max_resized_pixels: int | None = None) -> ImageInput:
    """H×W×3 uint8 RGB pixels as `decode` made them → `ImageInput` (what `prepare` does after decoding)."""
    fitted = preprocessing.fit(Image.fromarray(pixels), record, max_pixels=max_resized_pixels)
    return ImageInput(pixels, np.asarray(fitted), preprocessing.to_tensor(fitted, record))


class InputCache:
    """Small LRU of prepared inputs keyed by (image bytes digest, model id, model digest).

    Clients that look at one image through many layers send the same bytes again and again;
    decoding, resizing and normalising them once takes that work off every request after the first.
    """

    def __init__(self, size: int = 64):
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make, check=None):
        """The value at `key`, made by `make()` on a miss; `check()` runs before a cached value is returned and
        may refuse it by raising (a miss has nothing to check: `make` fetches what it needs)."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
        if hit is not None:
            if check is not None:
                check()
            return hit
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
