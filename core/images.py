"""The one image pipeline: bytes → checked, decoded 8-bit image → the model's input tensor.

Limits are checked on the header, before any pixel is decoded, so a decompression bomb
(a few KB declaring 30000×30000 pixels) costs nothing. Every failure is a 4xx `ConvscopeError`.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyspng
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from core.errors import BadRequest, Invalid, TooLarge, UnsupportedMedia
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
    (`pyspng`): 2.2 ms for the 451 × 300 cat where Pillow takes 3.5, the same pixels. None for any other file,
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
    fitted = fit(Image.fromarray(pixels), record, max_pixels=max_resized_pixels)
    return ImageInput(pixels, np.asarray(fitted), to_tensor(fitted, record))


@dataclass(frozen=True)
class Placement:
    """Where `fit` puts a W×H image in the model's input: resized (bicubic) to `resized` = (w, h) pixels, then the
    input's H×W window taken from the resized image at (`left`, `top`), negative where the window is larger than
    the resized image and torchvision's `CenterCrop` pads it (black, 0)."""

    resized: tuple[int, int]
    left: int
    top: int


def placement(width: int, height: int, record: ModelRecord, size: tuple[int, int] | None = None) -> Placement:
    """The geometry of `fit` for an original image of width × height pixels, the input (H, W) = `size` or the
    record's: torchvision's `Resize(resize)` (short side to `resize`, long side `int(resize * long / short)`) then
    `CenterCrop((H, W))` (offset `int(round((outer - inner) / 2.0))`, or `-((inner - outer) // 2)` of padding);
    with `resize` null or `crop` false, a plain resize to the input size."""
    in_h, in_w = size or (record.input.height, record.input.width)
    pre = record.preprocess
    if pre.resize is None or pre.crop is False:
        return Placement((in_w, in_h), 0, 0)
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(pre.resize * long / short)
    new_w, new_h = (pre.resize, new_long) if width <= height else (new_long, pre.resize)
    return Placement((new_w, new_h), _centre_offset(new_w, in_w), _centre_offset(new_h, in_h))


def _centre_offset(outer: int, inner: int) -> int:
    """Where a centred window of `inner` pixels starts in `outer` pixels, as torchvision's `center_crop` places it."""
    if inner > outer:
        return -((inner - outer) // 2)
    return int(round((outer - inner) / 2.0))


def fit(image: Image.Image, record: ModelRecord, size: tuple[int, int] | None = None, *,
        max_pixels: int | None = None) -> Image.Image:
    """Resize (short side to `preprocess.resize`) and centre-crop to the model's input size (H, W) = `size` or the
    record's, exactly where torchvision's `Resize` + `CenterCrop` put the crop (`placement`).

    What is made is checked first (`max_pixels`, when given: 422 `image_too_large_after_resize`). A resized image
    far larger than the window the crop keeps (a 1×20000 strip becomes 256×5,120,000 pixels, of which 224×224 are
    kept) is not made: only the window is (`_window`)."""
    height, width = size or (record.input.height, record.input.width)
    where = placement(image.width, image.height, record, size)
    if max_pixels is not None:
        check_resized(image.width, image.height, (width, height), max_pixels)
    new_w, new_h = where.resized
    if new_w * new_h > max(WHOLE_RESIZE_PIXELS, 4 * width * height):
        return _window(image, where, width, height)
    image = image.resize(where.resized, Image.BICUBIC)
    if where.resized == (width, height) and where.left == where.top == 0:
        return image
    return image.crop((where.left, where.top, where.left + width, where.top + height))  # outside: black, 0


WHOLE_RESIZE_PIXELS = 4 * 1024 * 1024
"""Up to this many resized pixels the whole image is resized and then cropped, as torchvision does: every photo
up to the upload limit stays well under it (its short side becomes `resize`). Past it, only the window is."""

_BICUBIC_SUPPORT = 2.0  # Pillow's bicubic filter reaches 2 source pixels each side (× the scale when shrinking)


def _window(image: Image.Image, where: Placement, width: int, height: int) -> Image.Image:
    """The W×H window of the resized image at (`where.left`, `where.top`) (black where it falls outside), made
    without the resized image, from just the source pixels the window's filter taps reach.

    Pillow's `resize(box=…)` samples each output pixel where the whole resize would. The two passes are made one
    at a time, in the order Pillow's whole resize makes them (given both at once with a box, it may pick the other
    order, whose rounding differs). A sample point computed from a box (which Pillow keeps as float32) instead of
    the whole image differs in its last bits, so a few pixels may differ by one level from the whole resize."""
    (new_w, new_h), src_w, src_h = where.resized, image.width, image.height
    x0, y0 = max(where.left, 0), max(where.top, 0)  # the window, clipped to the resized image (the rest is padding)
    x1, y1 = min(where.left + width, new_w), min(where.top + height, new_h)
    sx, sy = src_w / new_w, src_h / new_h
    c0, c1 = _taps(x0, x1, sx, src_w)
    r0, r1 = _taps(y0, y1, sy, src_h)
    source = image.crop((c0, r0, c1, r1))
    across = (x0 * sx - c0, x1 * sx - c0)  # the window's edges in the cropped source
    down = (y0 * sy - r0, y1 * sy - r0)
    out_w, out_h = x1 - x0, y1 - y0
    shrinks_height_most = src_h - new_h > 0 and src_h - new_h > (src_w - new_w) * 2  # Pillow's choice of order
    if shrinks_height_most:
        tall = source.resize((c1 - c0, out_h), Image.BICUBIC, box=(0, down[0], c1 - c0, down[1]))
        part = tall.resize((out_w, out_h), Image.BICUBIC, box=(across[0], 0, across[1], out_h))
    else:
        wide = source.resize((out_w, r1 - r0), Image.BICUBIC, box=(across[0], 0, across[1], r1 - r0))
        part = wide.resize((out_w, out_h), Image.BICUBIC, box=(0, down[0], out_w, down[1]))
    if part.size == (width, height):
        return part
    out = Image.new(part.mode, (width, height))  # CenterCrop's padding: black, 0
    out.paste(part, (x0 - where.left, y0 - where.top))
    return out


def _taps(start: int, stop: int, scale: float, size: int) -> tuple[int, int]:
    """The source pixels [first, last) that resized pixels [start, stop) of one axis read (scale: source pixels
    per resized pixel), with a pixel to spare each side, clipped to the `size` pixels there are."""
    reach = _BICUBIC_SUPPORT * max(scale, 1.0) + 1
    return max(int(start * scale - reach), 0), min(int(stop * scale + reach) + 1, size)


def check_resized(width: int, height: int, made: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image whose preprocessing would make `made` = (w, h) pixels above `max_pixels` (a setting): the
    upload's own pixel limit does not see what a resize makes of a few pixels."""
    if made[0] * made[1] > max_pixels:
        raise Invalid(f"the {width}×{height} image would be resized to {made[0]}×{made[1]} pixels; the limit is "
                      f"{max_pixels} pixels", code="image_too_large_after_resize",
                      details={"width": width, "height": height, "resized_width": made[0],
                               "resized_height": made[1], "limit": max_pixels})


def original_box(box: Sequence[int], width: int, height: int, record: ModelRecord,
                 size: tuple[int, int] | None = None) -> list[int]:
    """A box [x0, y0, x1, y1] (x1, y1 exclusive) in model-input pixels → the same region in the pixels of the
    width × height image `fit` made that input from, clipped to it: the crop undone (+ left, + top), then the
    resize (× original / resized per axis), starts rounded down and ends up so every pixel it covers is in it."""
    where = placement(width, height, record, size)
    (new_w, new_h), x0, y0, x1, y1 = where.resized, *box

    def back(value: int, offset: int, original: int, resized: int, end: bool) -> int:
        scaled = (value + offset) * original
        edge = -(-scaled // resized) if end else scaled // resized
        return min(max(edge, 0), original)

    return [back(x0, where.left, width, new_w, False), back(y0, where.top, height, new_h, False),
            back(x1, where.left, width, new_w, True), back(y1, where.top, height, new_h, True)]


def to_tensor(image: Image.Image, record: ModelRecord) -> np.ndarray:
    """An image already at input size → 1×C×H×W float32: `(pixel * scale - mean) / std`.

    Computed once per 0–255 level and channel (a 256-entry table, the same float32 operations in the same
    order, so the same numbers) and looked up per pixel, straight into channel-first order."""
    pre = record.preprocess
    if pre.color == "L" or record.input.channels == 1:
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)[..., None]
    else:
        pixels = np.asarray(image, dtype=np.uint8)
        if pre.color == "BGR":
            pixels = pixels[..., ::-1]
    table = _levels(tuple(pre.mean[:pixels.shape[-1]]), tuple(pre.std[:pixels.shape[-1]]), pre.scale)
    x = np.empty((1, pixels.shape[-1], *pixels.shape[:2]), np.float32)
    for c in range(pixels.shape[-1]):
        np.take(table[c], pixels[..., c], out=x[0, c])
    return x


@functools.lru_cache(maxsize=64)
def _levels(mean: tuple, std: tuple, scale: float) -> np.ndarray:
    """C×256 float32: `(level * scale - mean) / std` for every 8-bit level, as `to_tensor` computes it per pixel."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = (levels * scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table = np.ascontiguousarray(table.T, dtype=np.float32)
    table.setflags(write=False)
    return table


def from_tensor(x: np.ndarray, record: ModelRecord) -> np.ndarray:
    """Inverse of `to_tensor`: C×H×W input-space values → H×W×3 uint8 RGB (for rendering)."""
    pre = record.preprocess
    channels = x.shape[0]
    mean = np.asarray(pre.mean[:channels], np.float32)[:, None, None]
    std = np.asarray(pre.std[:channels], np.float32)[:, None, None]
    pixels = ((x * std + mean) / pre.scale).transpose(1, 2, 0)
    if pre.color == "BGR":
        pixels = pixels[..., ::-1]
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


class InputCache:
    """Small LRU of prepared inputs keyed by (image bytes digest, model id, model digest).

    Clients that look at one image through many layers send the same bytes again and again;
    decoding, resizing and normalising them once saves about 10 ms a request.
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


def fill_value(x: np.ndarray, fill: str | float, record: ModelRecord) -> np.ndarray:
    """What an occluding patch holds, as a 1×C×H×W tensor in model-input space.

    mean: the image's per-channel mean; zero: 0 in input space; blur: the image blurred
    (Gaussian, radius = 1/16 of its size); a number: that grey level in 0–255 pixels.
    """
    if fill == "mean":
        return np.broadcast_to(x.mean(axis=(2, 3), keepdims=True), x.shape)
    if fill == "zero":
        return np.zeros_like(x)
    pre = record.preprocess
    channels = x.shape[1]
    mean = np.asarray(pre.mean[:channels], np.float32)[None, :, None, None]
    std = np.asarray(pre.std[:channels], np.float32)[None, :, None, None]
    if fill == "blur":
        image = Image.fromarray(from_tensor(x[0], record)).filter(ImageFilter.GaussianBlur(max(x.shape[2:]) / 16))
        pixels = np.asarray(image, np.float32)
        if pre.color == "BGR":
            pixels = pixels[..., ::-1]
        pixels = pixels[..., :channels].transpose(2, 0, 1)[None]
        return ((pixels * pre.scale - mean) / std).astype(np.float32)
    return np.broadcast_to(((float(fill) * pre.scale - mean) / std).astype(np.float32), x.shape)
