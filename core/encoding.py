"""File bytes made per request and per job: PNG images and `.npy` arrays.

PNG files of 8-bit grey, RGB, RGBA and palette images are written here rather than by Pillow, because every view
and job writes some: rows are filtered with PNG's `Up` filter in numpy (none for palette images) and deflated by
ISA-L (`isal`, level 2), which makes files of about the same size in a fraction of the time of Pillow's
`compress_level=1`. Large images are deflated in parts on several threads, as pigz does. Rows may be given once
each with how often they repeat (`png_rows`), so a zoomed grid is never made whole to be written. Other modes go
through Pillow.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import isal_zlib as _deflate
from PIL import Image

_PNG_COLOR = {"L": 0, "RGB": 2, "RGBA": 6, "P": 3}


def png(image: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of an image (fast compression: these are made per request)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode not in _PNG_COLOR:
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    pixels = np.asarray(image, dtype=np.uint8)
    if image.mode != "P":
        return png_rows(pixels, _PNG_COLOR[image.mode])
    palette = np.frombuffer(bytes((image.getpalette() or [])[:3 * 256]), np.uint8).reshape(-1, 3)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int):
        transparency = bytes([255] * transparency + [0])
    return png_rows(pixels, 3, palette=palette, transparency=transparency if isinstance(transparency, bytes) else None)


_ROWS_PER_BLOCK_BYTES = 1 << 17  # rows are filtered and deflated in blocks of about this many bytes
_PART_BYTES = 1 << 18  # larger images are deflated in parts of at least this many bytes, on several threads
_PARTS = min(4, os.cpu_count() or 1)
_ADLER_MOD = 65521


def png_rows(pixels: np.ndarray, color: int, *, palette: np.ndarray | None = None,
             transparency: bytes | None = None, counts: np.ndarray | None = None) -> bytes:
    """PNG bytes of H×W (grey or palette indices) or H×W×k uint8 pixels of PNG colour type `color`, row i
    repeated `counts[i]` times (once each without `counts`).

    Rows get PNG's `Up` filter (each byte minus the one above it; none for palette images) and are deflated
    block by block through one small buffer, so a large image is never made or copied whole. A large image is
    deflated in parts on as many threads (ISA-L lets go of the GIL), as pigz does: each part a deflate stream of
    its own that ends byte-aligned, the parts one after the other one stream, their Adler-32s combined."""
    width = pixels.shape[1]
    rows = pixels.reshape(pixels.shape[0], -1)
    if counts is not None:  # which given row each image row is
        rows = _Repeated(rows, np.repeat(np.arange(len(rows)), counts))
    height, stride = len(rows), rows.shape[1]
    n_parts = max(1, min(_PARTS, height, height * (stride + 1) // _PART_BYTES))
    bounds = [height * i // n_parts for i in range(n_parts + 1)]
    later = [_pool(os.getpid()).submit(_deflate_rows, rows, color, bounds[i], bounds[i + 1], i == n_parts - 1)
             for i in range(1, n_parts)]
    streams = [_deflate_rows(rows, color, bounds[0], bounds[1], n_parts == 1), *(part.result() for part in later)]
    adler = 1
    for _, part_adler, length in streams:
        adler = _adler_combine(adler, part_adler, length)
    idat = b"".join([b"\x78\x01", *(stream for stream, _, _ in streams), struct.pack(">I", adler)])
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", np.ascontiguousarray(palette, np.uint8).tobytes()))
    if transparency:
        chunks.append(_chunk(b"tRNS", transparency))
    chunks.append(_chunk(b"IDAT", idat))
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _deflate_rows(rows, color: int, start: int, stop: int, last: bool) -> tuple[bytes, int, int]:
    """Rows [start, stop) filtered and deflated as a raw deflate stream (the final one if `last`, else ending
    byte-aligned by a sync flush), with the Adler-32 and the length of the filtered bytes."""
    up = color != 3
    stride = rows.shape[1]
    per_block = max(1, _ROWS_PER_BLOCK_BYTES // (stride + 1))
    buffer = np.empty((min(per_block, stop - start), stride + 1), np.uint8)
    buffer[:, 0] = 2 if up else 0
    deflate = _deflate.compressobj(2, _deflate.DEFLATED, -15)
    parts, adler = [], 1
    for first in range(start, stop, per_block):
        out = buffer[:min(per_block, stop - first)]
        if not up:
            out[:, 1:] = rows[first:first + len(out)]
        else:  # the first row's "row above" is zeros, as PNG defines it
            block = rows[first:first + len(out)]
            above = rows[first - 1:first + len(block) - 1] if first else np.vstack([np.zeros_like(block[:1]), block[:-1]])
            np.subtract(block, above, out=out[:, 1:])
        parts.append(deflate.compress(out))
        adler = _deflate.adler32(out, adler)
    parts.append(deflate.flush() if last else deflate.flush(_deflate.Z_SYNC_FLUSH))
    return b"".join(parts), adler, (stop - start) * (stride + 1)


@functools.cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """The deflating threads of process `pid`: a process forked after a PNG was written makes its own (the
    parent's threads do not exist in it, and its copy of the parent's pool would wait for them forever)."""
    return ThreadPoolExecutor(max(1, _PARTS - 1), thread_name_prefix="png")


def _adler_combine(first: int, second: int, second_len: int) -> int:
    """Adler-32 of two byte strings one after the other, from theirs and the second's length (zlib's
    `adler32_combine`: A adds up, and each byte of the first counts once more for every byte of the second)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    return ((b1 + b2 + second_len * (a1 - 1)) % _ADLER_MOD) << 16 | (a1 + a2 - 1) % _ADLER_MOD


class _Repeated:
    """Rows of an image some of whose rows repeat, read in slices without making the image: `which[i]` is
    the given row that image row i is."""

    def __init__(self, rows: np.ndarray, which: np.ndarray):
        self.rows, self.which, self.shape = rows, which, (len(which), rows.shape[1])

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, span: slice) -> np.ndarray:
        return self.rows[self.which[span]]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF)


def npy(array: np.ndarray) -> bytes:
    """`.npy` bytes, float32 little-endian."""
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array, dtype="<f4"), allow_pickle=False)
    return out.getvalue()
