"""Render every image-making kind at its default parameters on the built-in model and save the
pictures under docs/kinds/ plus one contact sheet (docs/kinds/contact_sheet.png), for people to
look at. Usage: python bench/contact_sheet.py"""

# ruff: noqa: E402 (the project's imports follow the sys.path line that makes them importable)
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.kinds import making as P
from core.settings import Settings
from core.stores.models import ModelStore
from models.builtin import BUILTIN_ID
from tests.workers.test_image_making import task
from workers.methods.making import adversarial, class_model, deepdream, feature_vis, inversion, style_transfer, texture
from workers.networks import load_network

OUT = ROOT / "docs" / "kinds"
TILE = 224


def main() -> None:
    torch.manual_seed(0)
    store = ModelStore(Settings().data_dir)
    network = load_network(store.get(BUILTIN_ID), store, torch.device("cpu"))
    runs = [  # every kind's image input is chelsea (deepdream works at its own size)
        ("class_model: goldfish", class_model, P.ClassModelParams(target="goldfish"), None),
        ("feature_vis: _blocks.5._relu1 #7", feature_vis, P.FeatureVisParams(layer="_blocks.5._relu1", channel=7),
         None),
        ("inversion of chelsea", inversion, P.InversionParams(), None),
        ("deepdream on chelsea", deepdream, P.DeepdreamParams(), None),
        ("adversarial: cat -> ostrich", adversarial, P.AdversarialParams(target="ostrich"), None),
        ("texture from chelsea", texture, P.TextureParams(), None),
        ("style: chelsea x coffee", style_transfer, P.StyleTransferParams(), "coffee"),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    tiles = []
    for title, module, params, style in runs:
        start = time.perf_counter()
        made = module.run(task(network, params, "chelsea", style=style))
        print(f"{title}: {time.perf_counter() - start:.1f} s, {made.metrics}")
        for name, pixels in made.images.items():
            stem = module.__name__.rsplit(".", 1)[-1]
            Image.fromarray(pixels).save(OUT / f"{stem}_{name}")
            tiles.append((f"{title}" + ("" if name == "image.png" else f" ({name[:-4]})"), pixels))
    cols = 4
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * TILE, rows * (TILE + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, pixels) in enumerate(tiles):
        image = Image.fromarray(pixels)
        image.thumbnail((TILE, TILE))
        x, y = (i % cols) * TILE, (i // cols) * (TILE + 18)
        sheet.paste(image, (x + (TILE - image.width) // 2, y + 18))
        draw.text((x + 4, y + 3), title, fill="black")
    sheet.save(OUT / "contact_sheet.png")
    print(f"wrote {OUT / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
