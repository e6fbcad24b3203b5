"""The model's preprocessing: where a decoded image lands in the model's input, and its pixels as the input tensor.

The geometry is torchvision's `Resize` + `CenterCrop`, computed (`placement`) so that it can be undone
(`original_box`) and so that a resize far larger than the window the crop keeps is never made (`fit`). The
tensor is `(pixel * scale - mean) / std` per channel in the model's colour order (`to_tensor`), and back
(`from_tensor`); `fill_value` is what an occluding patch holds in that space. Pixels are 8-bit (0–255); tensors
are float32 in model-input space.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from core.errors import Invalid
from core.model_record import ModelRecord


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
