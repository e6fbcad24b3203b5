"""`core.images.fit` puts the crop where torchvision's Resize + CenterCrop put it, `original_box` undoes it, and
`Preprocess.crop` takes the sizes torchvision's CenterCrop takes. References: the arithmetic of torchvision's
`_compute_resized_output_size` and `center_crop` written out by hand, and torchvision itself on the same image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from core import images
from core.model_record import InputSpec, ModelRecord, Preprocess

# (width, height): 199×203 from a dataset; 451×300 where truncation and rounding of the long side differ
# (384.85 → 384); 256×259 where the crop offset is 17.5 (round half to even → 18); both orientations.
SIZES = [(199, 203), (203, 199), (451, 300), (300, 451), (256, 259), (259, 256), (224, 224), (640, 97)]


def record_for(preprocess: Preprocess, height: int = 224, width: int = 224) -> ModelRecord:
    return ModelRecord(id="m", name="m", source="upload", input=InputSpec(channels=3, height=height, width=width),
                       preprocess=preprocess, num_classes=10, onnx_sha256="0" * 64, input_name="x", logits_name="y")


def picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def torchvision_by_hand(image: Image.Image, resize: int, crop_h: int, crop_w: int) -> np.ndarray:
    """Resize(resize, BICUBIC) + CenterCrop((crop_h, crop_w)) with torchvision's arithmetic spelled out."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    resized = np.asarray(image.resize((new_w, new_h), Image.BICUBIC))
    out = np.zeros((crop_h, crop_w, 3), np.uint8)  # CenterCrop pads with 0 where the crop is larger
    top = int(round((new_h - crop_h) / 2.0)) if crop_h <= new_h else -((crop_h - new_h) // 2)
    left = int(round((new_w - crop_w) / 2.0)) if crop_w <= new_w else -((crop_w - new_w) // 2)
    ys, xs = slice(max(top, 0), min(top + crop_h, new_h)), slice(max(left, 0), min(left + crop_w, new_w))
    out[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left] = resized[ys, xs]
    return out


@pytest.mark.parametrize("width, height", SIZES)
def test_fit_crops_where_torchvision_resize_and_center_crop_do(width, height):
    image = picture(width, height)
    for crop in (True, 224):  # the same crop: to the input size, or named as CenterCrop(224) names it
        record = record_for(Preprocess(resize=256, crop=crop))
        np.testing.assert_array_equal(np.asarray(images.fit(image, record)), torchvision_by_hand(image, 256, 224, 224))


@pytest.mark.parametrize("width, height", [(199, 203), (451, 300), (256, 259)])
def test_fit_pads_like_center_crop_when_the_crop_is_larger_than_the_resized_image(width, height):
    image = picture(width, height)
    record = record_for(Preprocess(resize=200, crop=[224, 320]), height=224, width=320)
    np.testing.assert_array_equal(np.asarray(images.fit(image, record)), torchvision_by_hand(image, 200, 224, 320))


@pytest.mark.parametrize("width, height", SIZES)
def test_fit_equals_torchvision_itself(width, height):
    try:
        from torchvision import transforms
    except Exception as exc:  # not installed, or built for another torch ("operator torchvision::nms does not exist")
        pytest.skip(f"torchvision cannot be imported: {exc}")
    image = picture(width, height)
    for resize, crop in ((256, 224), (200, (224, 320))):
        reference = transforms.Compose([transforms.Resize(resize, transforms.InterpolationMode.BICUBIC),
                                        transforms.CenterCrop(crop)])(image)
        size = (crop, crop) if isinstance(crop, int) else crop
        record = record_for(Preprocess(resize=resize, crop=crop), *size)
        np.testing.assert_array_equal(np.asarray(images.fit(image, record)), np.asarray(reference))


def test_crop_is_read_as_torchvision_center_crop_writes_it():
    assert Preprocess(crop=224).crop == [224, 224] and Preprocess(crop=224).crop_size() == (224, 224)
    assert Preprocess(crop=[224]).crop == [224, 224]
    assert Preprocess(crop=[192, 256]).crop_size() == (192, 256)
    assert Preprocess(crop=True).crop is True and Preprocess(crop=True).crop_size() is None
    assert Preprocess(crop=False).crop is False
    assert Preprocess.model_validate_json('{"resize": 256, "crop": 224}').model_dump()["crop"] == [224, 224]
    for bad in (0, -3, [224, 224, 3], [], [0, 5], "big", 5000):
        with pytest.raises(ValidationError):
            Preprocess(crop=bad)


def test_original_box_inverts_resize_and_centre_crop_by_hand():
    """199×203 at resize 256, crop 224: resized to 256×261 (int(256·203/199) = 261), crop at left
    round(32/2) = 16, top round(37/2) = 18; x = (x' + 16)·199/256, y = (y' + 18)·203/261, starts floored,
    ends ceiled, clipped to 199×203."""
    record = record_for(Preprocess(resize=256, crop=224))
    assert images.placement(199, 203, record) == images.Placement((256, 261), 16, 18)
    # x0 = ⌊70·199/256⌋ = ⌊54.41⌋, y0 = 18·203/261 = 14 exactly, x1 = ⌈240·199/256⌉ = ⌈186.56⌉, y1 = ⌈242·203/261⌉
    assert images.original_box([54, 0, 224, 224], 199, 203, record) == [54, 14, 187, 189]
    assert images.original_box([0, 0, 7, 7], 199, 203, record) == [12, 14, 18, 20]  # ⌊16·199/256⌋, ⌈23·199/256⌉


def test_original_box_of_a_plain_resize_scales_each_axis():
    record = record_for(Preprocess(resize=None), height=64, width=64)
    assert images.original_box([0, 0, 64, 64], 199, 203, record) == [0, 0, 199, 203]
    # ⌊10·199/64⌋ = 31, ⌊20·203/64⌋ = 63, ⌈30·199/64⌉ = 94, ⌈40·203/64⌉ = 127
    assert images.original_box([10, 20, 30, 40], 199, 203, record) == [31, 63, 94, 127]


def test_original_box_of_padding_is_clipped_to_the_image():
    """Crop 224×320 of 200×203 (199×203 resized, short side 200): 60 px of padding left and right."""
    record = record_for(Preprocess(resize=200, crop=[224, 320]), height=224, width=320)
    assert images.placement(199, 203, record) == images.Placement((200, 204), -60, -(20 // 2))
    assert images.original_box([0, 0, 320, 224], 199, 203, record) == [0, 0, 199, 203]
    assert images.original_box([0, 0, 50, 5], 199, 203, record) == [0, 0, 0, 0]


@pytest.mark.parametrize("width, height", SIZES)
def test_original_box_covers_what_the_input_box_shows(width, height):
    """`original_box` scaled and shifted forward again (the way `fit` maps original to input pixels) contains the
    input box: it covers every pixel the box shows, and stays inside the image."""
    record = record_for(Preprocess(resize=256, crop=224))
    for box in ([0, 0, 224, 224], [40, 60, 100, 90], [200, 3, 224, 30]):
        x0, y0, x1, y1 = images.original_box(box, width, height, record)
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        where = images.placement(width, height, record)
        sx, sy = where.resized[0] / width, where.resized[1] / height
        right, bottom = where.resized[0] - where.left, where.resized[1] - where.top
        assert x0 * sx - where.left <= box[0] + 1e-9 and x1 * sx - where.left >= min(box[2], right) - 1e-9
        assert y0 * sy - where.top <= box[1] + 1e-9 and y1 * sy - where.top >= min(box[3], bottom) - 1e-9
