"""Dataset throughput (images/s) of `top_activations` against its limit: bare batched ONNX Runtime.

Makes a few hundred 224×224 JPEGs from scikit-image's sample photos (random crops, flips), keeps
them as a dataset in a temporary data dir, then times, on the built-in model:

- the limit: decode + resize/crop + normalise each image (`core.images`, `core.preprocessing`), then a batched ORT
  forward to the class scores — one after the other, the plain way;
- `top_activations` as a worker runs it (the dataset feed, its ORT session, the per-channel top-k,
  the patch pass, then its `Output` encoded by `workers/artifacts.py`: JSON and PNG), for one channel
  and for every channel of the last layer at once.

Usage: python bench/datasets.py [--images 300] [--batch 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import images, preprocessing  # noqa: E402
from core.kinds.registry import KINDS  # noqa: E402
from core.methods import DatasetTask, no_progress  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.datasets import DatasetStore, Upload  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402
from models.runtimes import Runtimes  # noqa: E402
from workers.artifacts import output_artifacts  # noqa: E402
from workers.dataset_feed import open_feed  # noqa: E402
from workers.methods.dataset import top_activations  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel"]


def photos(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` 224×224 JPEGs (quality 90): random square crops (40–100 % of the short side), half mirrored."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        side = int(min(image.size) * rng.uniform(0.4, 1.0))
        left, top = int(rng.integers(0, image.width - side + 1)), int(rng.integers(0, image.height - side + 1))
        crop = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=90)
        out.append((f"{PHOTOS[i % len(PHOTOS)]}-{i:04d}.jpg", buf.getvalue()))
    return out


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = Settings()
    data = Path(tempfile.mkdtemp(prefix="convscope-bench-"))
    (data / "models").symlink_to((base.data_dir if base.data_dir.is_absolute() else ROOT / base.data_dir)
                                 .joinpath("models").resolve())
    settings = base.model_copy(update={"data_dir": data, "dataset_batch": args.batch})
    store = ModelStore(data)
    record = store.get(BUILTIN_ID)
    files = photos(args.images)
    dataset, _ = DatasetStore(data, settings.dataset_ttl_s).create(
        [Upload(name, io.BytesIO(b), len(b), archive=False) for name, b in files], None, settings)

    rt = Runtimes(store, settings).get(record)

    def bare() -> None:
        for start in range(0, dataset.count, args.batch):
            x = np.concatenate([preprocessing.to_tensor(preprocessing.fit(images.decode(
                dataset.read(i), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels),
                record), record) for i in range(start, min(start + args.batch, dataset.count))])
            rt.logits(x)

    def top(**params):
        resolved = KINDS["top_activations"].params(**params).resolve(record)
        return lambda: output_artifacts(top_activations.run(DatasetTask(
            record, resolved, open_feed(settings, store, record, dataset, no_progress))))

    one_channel = top(channel=0, k=9)
    all_channels = top(k=9)
    one_channel(), all_channels()  # build the sessions once, as a warm worker has them
    rt.logits(np.zeros((args.batch, 3, 224, 224), np.float32))
    n = dataset.count
    rows = [("bare: decode + batched ORT forward (limit)", *best_of(bare, args.repeat)),
            ("top_activations, 1 channel of _relu1, k 9", *best_of(one_channel, args.repeat)),
            ("top_activations, all 1280 channels, k 9", *best_of(all_channels, args.repeat))]
    limit = n / rows[0][1]
    print(f"built-in model {BUILTIN_ID}, {n} JPEG images 224×224, batch {args.batch}, ONNX Runtime "
          f"{rt.plain.get_providers()[0]}, intra threads {settings.ort_intra_threads}, best of {args.repeat}")
    print(f"{'what':44} {'s (best)':>9} {'s (median)':>10} {'images/s':>9} {'limit ÷ this':>12}")
    for name, best, median in rows:
        print(f"{name:44} {best:9.2f} {median:10.2f} {n / best:9.1f} {limit / (n / best):12.2f}")


if __name__ == "__main__":
    main()
