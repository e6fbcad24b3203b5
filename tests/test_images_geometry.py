"""`core.preprocessing.fit` puts the crop where torchvision's Resize + CenterCrop put it, `original_box` undoes it, and
`Preprocess.crop` takes the sizes torchvision's CenterCrop takes. References: the arithmetic of torchvision's
`_compute_resized_output_size` and `center_crop` written out by hand, and torchvision itself on the same image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from core import preprocessing
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
        np.testing.assert_array_equal(np.asarray(preprocessing.fit(image, record)), torchvision_by_hand(image, 256, 224, 224))


@pytest.mark.parametrize("width, height", [(199, 203), (451, 300), (256, 259)])
def test_fit_pads_like_center_crop_when_the_crop_is_larger_than_the_resized_image(width, height):
    image = picture(width, height)
    record = record_for(Preprocess(resize=200, crop=[224, 320]), height=224, width=320)
    np.testing.assert_array_equal(np.asarray(preprocessing.fit(image, record)), torchvision_by_hand(image, 200, 224, 320))


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
        np.testing.assert_array_equal(np.asarray(preprocessing.fit(image, record)), np.asarray(reference))


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
    assert preprocessing.placement(199, 203, record) == preprocessing.Placement((256, 261), 16, 18)
    # x0 = ⌊70·199/256⌋ = ⌊54.41⌋, y0 = 18·203/261 = 14 exactly, x1 = ⌈240·199/256⌉ = ⌈186.56⌉, y1 = ⌈242·203/261⌉
    assert preprocessing.original_box([54, 0, 224, 224], 199, 203, record) == [54, 14, 187, 189]
    assert preprocessing.original_box([0, 0, 7, 7], 199, 203, record) == [12, 14, 18, 20]  # ⌊16·199/256⌋, ⌈23·199/256⌉


def test_original_box_of_a_plain_resize_scales_each_axis():
    record = record_for(Preprocess(resize=None), height=64, width=64)
    assert preprocessing.original_box([0, 0, 64, 64], 199, 203, record) == [0, 0, 199, 203]
    # ⌊10·199/64⌋ = 31, ⌊20·203/64⌋ = 63, ⌈30·199/64⌉ = 94, ⌈40·203/64⌉ = 127
    assert preprocessing.original_box([10, 20, 30, 40], 199, 203, record) == [31, 63, 94, 127]


def test_original_box_of_padding_is_clipped_to_the_image():
    """Crop 224×320 of 200×203 (199×203 resized, short side 200): 60 px of padding left and right."""
    record = record_for(Preprocess(resize=200, crop=[224, 320]), height=224, width=320)
    assert preprocessing.placement(199, 203, record) == preprocessing.Placement((200, 204), -60, -(20 // 2))
    assert preprocessing.original_box([0, 0, 320, 224], 199, 203, record) == [0, 0, 199, 203]
    assert preprocessing.original_box([0, 0, 50, 5], 199, 203, record) == [0, 0, 0, 0]


@pytest.mark.parametrize("width, height", SIZES)
def test_original_box_covers_what_the_input_box_shows(width, height):
    """`original_box` scaled and shifted forward again (the way `fit` maps original to input pixels) contains the
    input box: it covers every pixel the box shows, and stays inside the image."""
    record = record_for(Preprocess(resize=256, crop=224))
    for box in ([0, 0, 224, 224], [40, 60, 100, 90], [200, 3, 224, 30]):
        x0, y0, x1, y1 = preprocessing.original_box(box, width, height, record)
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        where = preprocessing.placement(width, height, record)
        sx, sy = where.resized[0] / width, where.resized[1] / height
        right, bottom = where.resized[0] - where.left, where.resized[1] - where.top
        assert x0 * sx - where.left <= box[0] + 1e-9 and x1 * sx - where.left >= min(box[2], right) - 1e-9
        assert y0 * sy - where.top <= box[1] + 1e-9 and y1 * sy - where.top >= min(box[3], bottom) - 1e-9


def whole_then_window(image: Image.Image, record: ModelRecord) -> np.ndarray:
    """The input `fit` would make by resizing the whole image and then cropping (padding with black)."""
    height, width = record.input.height, record.input.width
    where = preprocessing.placement(image.width, image.height, record)
    whole = np.asarray(image.resize(where.resized, Image.BICUBIC))
    out = np.zeros((height, width, 3), np.uint8)
    ys = slice(max(where.top, 0), min(where.top + height, where.resized[1]))
    xs = slice(max(where.left, 0), min(where.left + width, where.resized[0]))
    out[ys.start - where.top:ys.stop - where.top, xs.start - where.left:xs.stop - where.left] = whole[ys, xs]
    return out


@pytest.mark.parametrize("width, height", [(3, 2000), (2000, 3), (1, 900), (7, 700), (600, 5), (41, 3000)])
@pytest.mark.parametrize("resize, crop", [(256, True), (200, [224, 320]), (61, True)])
def test_a_thin_image_is_resized_in_its_window_only_and_matches_the_whole_resize(width, height, resize, crop):
    """Past `WHOLE_RESIZE_PIXELS` only the window the crop keeps is resized. Here (small enough to resize whole as
    a reference) the window equals the whole resize's crop but for a few pixels one or two levels off (Pillow keeps
    a box in float32), in both orders of Pillow's two passes and where the crop pads."""
    size = (224, 224) if crop is True else tuple(crop)
    record = record_for(Preprocess(resize=resize, crop=crop), *size)
    image = picture(width, height)
    where = preprocessing.placement(width, height, record)
    window = np.asarray(preprocessing._window(image, where, size[1], size[0])).astype(int)
    difference = np.abs(window - whole_then_window(image, record))
    assert difference.max() <= 2 and (difference > 0).mean() < 0.005, (difference.max(), (difference > 0).mean())


@pytest.mark.parametrize("width, height", [(1, 20000), (20000, 1), (1, 65000), (65000, 1), (2, 4_000_000)])
def test_fit_of_a_strip_makes_only_the_window(width, height):
    """A 1×65000 strip would be 256×16,640,000 pixels (12 GB of RGB, a minute of work) resized whole; the window
    alone is 224×224. (The peak memory of a real API process is held in tests/jobs/test_thin_images.py.)"""
    import time

    image = Image.new("RGB", (width, height), (200, 30, 90))
    record = record_for(Preprocess(resize=256, crop=True))
    started = time.perf_counter()
    fitted = preprocessing.fit(image, record)
    seconds = time.perf_counter() - started
    assert fitted.size == (224, 224) and seconds < 0.5, seconds
    assert np.abs(np.asarray(fitted).astype(int) - [200, 30, 90]).max() <= 1  # a flat colour stays that colour


def test_what_preprocessing_would_make_is_checked_against_the_limit():
    record = record_for(Preprocess(resize=None), height=512, width=512)
    image = picture(40, 30)
    assert preprocessing.fit(image, record, max_pixels=512 * 512).size == (512, 512)
    with pytest.raises(Exception) as refused:
        preprocessing.fit(image, record, max_pixels=512 * 511)
    error = refused.value
    assert error.status == 422 and error.code == "image_too_large_after_resize"
    assert error.details == {"width": 40, "height": 30, "resized_width": 512, "resized_height": 512,
                             "limit": 512 * 511}
    assert "40×30" in error.message and "512×512" in error.message
