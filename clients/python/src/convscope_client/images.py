"""What an `image` argument may be, and how it travels: as a multipart file part or as a JSON image reference.

    a path (str or os.PathLike) naming a file   the file, sent as multipart part `image`
    bytes                                        the encoded file (PNG, JPEG, ...), likewise
    a PIL image                                  encoded as PNG, likewise
    any other str                                an image id from `POST /v1/images`: {"id": ...}
    (dataset_id, index)                          an image of one of your datasets: {"dataset": ..., "index": ...}
    a dict                                       an ImageRef as the API writes it ({"id"}, {"data"}, {"dataset","index"})
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Union

ImageInput = Union[str, "os.PathLike[str]", bytes, tuple, dict, Any]  # Any: a PIL image
FilePart = tuple[str, bytes, str]  # (file name, bytes, media type), as httpx takes a file


def file_part(path: str | os.PathLike[str], media: str = "application/octet-stream") -> FilePart:
    """A file on disk as a file part: (its name, its bytes, `media`)."""
    path = Path(path)
    return path.name, path.read_bytes(), media


def image_arg(image: ImageInput) -> tuple[dict | None, FilePart | None]:
    """(a JSON image reference, None) or (None, a file part) for one `image` argument."""
    if isinstance(image, os.PathLike) or (isinstance(image, str) and os.path.isfile(image)):
        return None, file_part(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return None, ("image", bytes(image), "application/octet-stream")
    if isinstance(image, str):
        return {"id": image}, None
    if isinstance(image, tuple) and len(image) == 2:
        dataset, index = image
        return {"dataset": str(dataset), "index": int(index)}, None
    if isinstance(image, dict):
        return dict(image), None
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image, duck-typed: Pillow is optional
        out = io.BytesIO()
        image.save(out, format="PNG")
        return None, ("image.png", out.getvalue(), "image/png")
    raise TypeError(f"an image is a path, bytes, a PIL image, an image id or (dataset, index), not {type(image).__name__}")


def body_with_images(spec: dict, images: dict[str, ImageInput | None]) -> dict:
    """httpx request arguments for a body that takes images: JSON when every image is a reference, else
    multipart with each file in its own part and the rest of the body as JSON in part `spec`."""
    files: dict[str, FilePart] = {}
    body = {key: value for key, value in spec.items() if value is not None}
    for field, image in images.items():
        if image is None:
            continue
        ref, part = image_arg(image)
        if part is None:
            body[field] = ref
        else:
            files[field] = part
    if not files:
        return {"json": body}
    return {"files": files, "data": {"spec": json.dumps(body)}}
