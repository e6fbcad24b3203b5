"""`convscope-client`: the convscope API from a shell script.

    convscope-client predict efficientnet-lite0 cat.jpg --top-k 3
    convscope-client run gradcam efficientnet-lite0 cat.jpg --param target=281 -o out/
    convscope-client --json jobs --status finished

The service is `--url` (or $CONVSCOPE_URL, default http://127.0.0.1:8000), the key `--api-key` (or
$CONVSCOPE_API_KEY). Results go to stdout (plain lines, or one JSON document with `--json`); progress and errors
to stderr. Exit status: 0 done; 1 the service refused (its status, code and message on stderr) or the job failed
or was canceled; 2 a usage error (bad arguments, a missing file); 3 the service could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from convscope_client.client import Client
from convscope_client.errors import ConvscopeError

EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{8,128}")
DATASET_IMAGE = re.compile(r"([A-Za-z0-9_-]{1,128}):(\d+)")


class UsageError(Exception):
    pass


def image_argument(value: str) -> str | Path | tuple[str, int]:
    """A file when one exists at `value`; else an image id (a word with no path in it) or `DATASET_ID:INDEX`."""
    if os.path.isfile(value):
        return Path(value)
    if IMAGE_ID.fullmatch(value):
        return value
    if found := DATASET_IMAGE.fullmatch(value):
        return found[1], int(found[2])
    raise UsageError(f"no such file: {value}")


def param(text: str) -> tuple[str, Any]:
    """`k=v`, the value read as JSON when it parses (`target=281`, `channels=[1,2]`), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def plain(value: Any) -> Any:
    """JSON-ready: models dumped, lists of them too."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


class Progress:
    """A tqdm bar on stderr when tqdm is installed (the `cli` extra), else a plain line on a terminal."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet, self.bar = label, quiet, None
        self.tty = sys.stderr.isatty()

    def __call__(self, step: int, total: int) -> None:
        if self.quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            if self.tty:
                print(f"\r{self.label}: {step}/{total}", end="", file=sys.stderr, flush=True)
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit="step", file=sys.stderr)
        self.bar.total = total
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty and not self.quiet:
            print(file=sys.stderr)


def save(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# Commands: each returns what to print (a model, a list, a string, or None).
def cmd_models(client: Client, args: argparse.Namespace) -> Any:
    return client.models()


def cmd_model(client: Client, args: argparse.Namespace) -> Any:
    return client.model(args.model)


def cmd_upload_model(client: Client, args: argparse.Namespace) -> Any:
    return client.upload_model(args.file, name=args.name, labels=args.labels, preprocess=args.preprocess)


def cmd_delete_model(client: Client, args: argparse.Namespace) -> Any:
    client.delete_model(args.model)


def cmd_predict(client: Client, args: argparse.Namespace) -> Any:
    return client.predict(args.model, image_argument(args.image), top_k=args.top_k)


def cmd_activations(client: Client, args: argparse.Namespace) -> Any:
    answer = client.activations(args.model, image_argument(args.image), args.layer, format=args.format,
                                channels=args.channels, normalize=args.normalize)  # None: left out of the body
    return answer if args.format == "json" else str(save(answer, Path(args.output or f"activations.{args.format}")))


def cmd_occlusion(client: Client, args: argparse.Namespace) -> Any:
    answer = client.occlusion(args.model, image_argument(args.image), format=args.format, target=args.target,
                              patch=args.patch, stride=args.stride, fill=args.fill)  # None: left out of the body
    return answer if args.format == "json" else str(save(answer, Path(args.output or f"occlusion.{args.format}")))


def cmd_run(client: Client, args: argparse.Namespace) -> Any:
    image = image_argument(args.image) if args.image else None
    style = image_argument(args.style_image) if args.style_image else None
    progress = Progress(args.kind, args.quiet)
    try:
        job = client.run(args.kind, args.model, image, style_image=style, dataset=args.dataset,
                         params=dict(args.param), on_progress=progress)
    finally:
        progress.close()
    folder = Path(args.output or job.id)
    saved = [str(save(job.artifact(name), folder / name)) for name in job.artifact_names]
    if args.json:
        return {"job": plain(job), "saved": saved}
    return saved


def cmd_jobs(client: Client, args: argparse.Namespace) -> Any:
    return client.jobs(status=args.status, kind=args.kind, limit=args.limit)


def cmd_job(client: Client, args: argparse.Namespace) -> Any:
    return client.job(args.job)


def cmd_cancel(client: Client, args: argparse.Namespace) -> Any:
    return client.cancel(args.job)


def cmd_upload_image(client: Client, args: argparse.Namespace) -> Any:
    return client.upload_image(Path(args.file))


def cmd_datasets(client: Client, args: argparse.Namespace) -> Any:
    return client.datasets()


def cmd_dataset(client: Client, args: argparse.Namespace) -> Any:
    return client.dataset(args.dataset)


def cmd_upload_dataset(client: Client, args: argparse.Namespace) -> Any:
    return client.upload_dataset(args.paths[0] if len(args.paths) == 1 else [Path(p) for p in args.paths], args.name)


def cmd_delete_dataset(client: Client, args: argparse.Namespace) -> Any:
    client.delete_dataset(args.dataset)


# Plain output: one line per item, tab-separated, for `cut` and `while read`.
def lines(value: Any) -> list[str]:
    from convscope_client import models as m

    if value is None:
        return []
    if isinstance(value, list):
        return [line for item in value for line in lines(item)]
    if isinstance(value, m.Prediction):
        return [f"{value.index}\t{value.label}\t{value.probability:.6f}\t{value.logit:.4f}"]
    if isinstance(value, m.ModelInfo):
        return [f"{value.id}\t{value.name}\t{value.source}\t{value.num_classes}"]
    if isinstance(value, m.Job):
        error = f"\t{value.error.code}: {value.error.message}" if value.error else ""
        return [f"{value.id}\t{value.kind}\t{value.status}\t{value.progress.step}/{value.progress.total}{error}"]
    if isinstance(value, (m.DatasetSummary, m.DatasetCreated)):
        return [f"{value.id}\t{value.count}\t{value.name}"]
    if isinstance(value, m.ImageInfo):
        return [f"{value.id}\t{value.width}x{value.height}\t{value.format}"]
    if isinstance(value, BaseModel):
        return [value.model_dump_json(indent=2)]
    return [str(value)]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="convscope-client", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    top.add_argument("--url", default=os.environ.get("CONVSCOPE_URL", "http://127.0.0.1:8000"))
    top.add_argument("--api-key", default=os.environ.get("CONVSCOPE_API_KEY"))
    top.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    top.add_argument("--json", action="store_true", help="print one JSON document (machine output)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # --json after the command too; SUPPRESS keeps the top's value
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(handler=handler)
        return p

    command("models", cmd_models, "list the models")
    command("model", cmd_model, "one model with its layers").add_argument("model")
    p = command("upload-model", cmd_upload_model, "upload an ONNX model")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--labels", help="a text file, one label a line")
    p.add_argument("--preprocess", type=json.loads, help="JSON: mean, std, scale, color, resize, crop")
    command("delete-model", cmd_delete_model, "delete an uploaded model").add_argument("model")

    p = command("predict", cmd_predict, "top-k classes of an image (a file, an uploaded image id, or DATASET_ID:INDEX)")
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("--top-k", type=int, default=5)
    p = command("activations", cmd_activations, "a layer's feature maps: PNG grid, npy, or JSON statistics")
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("layer")
    p.add_argument("--channels", type=lambda text: [int(c) for c in text.split(",")], help="e.g. 0,1,5")
    p.add_argument("--normalize", choices=["channel", "layer"])
    p.add_argument("--format", choices=["png", "json", "npy"], default="png")
    p.add_argument("-o", "--output", help="file for png/npy (default activations.<format>)")
    p = command("occlusion", cmd_occlusion, "occlusion sensitivity: PNG heatmap, npy or JSON map")
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("--target", type=lambda text: int(text) if text.isdigit() else text)
    p.add_argument("--patch", type=int)
    p.add_argument("--stride", type=int)
    p.add_argument("--fill", type=lambda text: float(text) if text.replace(".", "", 1).isdigit() else text)
    p.add_argument("--format", choices=["png", "json", "npy"], default="png")
    p.add_argument("-o", "--output", help="file for png/npy (default occlusion.<format>)")

    p = command("run", cmd_run, "run a job of any kind to its end and save its artifacts; prints their paths")
    p.add_argument("kind")
    p.add_argument("model")
    p.add_argument("image", nargs="?")
    p.add_argument("--style-image")
    p.add_argument("--dataset")
    p.add_argument("--param", "-p", type=param, action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the kind (value as JSON, else text); repeat for more")
    p.add_argument("-o", "--output", help="folder for the artifacts (default: the job id)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p = command("jobs", cmd_jobs, "your jobs, newest first")
    p.add_argument("--status", choices=["queued", "started", "finished", "failed", "canceled"])
    p.add_argument("--kind")
    p.add_argument("--limit", type=int)
    command("job", cmd_job, "one job").add_argument("job")
    command("cancel", cmd_cancel, "cancel a job").add_argument("job")

    command("upload-image", cmd_upload_image, "upload an image; prints its id").add_argument("file")
    command("datasets", cmd_datasets, "your datasets")
    command("dataset", cmd_dataset, "one dataset with its images").add_argument("dataset")
    p = command("upload-dataset", cmd_upload_dataset, "upload an archive, a folder or image files; prints its id")
    p.add_argument("paths", nargs="+")
    p.add_argument("--name", help="display name (default: the file's)")
    command("delete-dataset", cmd_delete_dataset, "delete a dataset").add_argument("dataset")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error, as argparse does
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            result = args.handler(client, args)
    except ConvscopeError as error:
        print(f"convscope-client: {error}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": {"status": error.status, "code": error.code, "message": error.message,
                                        "details": error.details}}))
        return EXIT_API
    except (UsageError, OSError) as error:  # a missing file, a folder that cannot be written
        print(f"convscope-client: {error}", file=sys.stderr)
        return EXIT_USAGE
    except httpx.TransportError as error:
        print(f"convscope-client: cannot reach {args.url}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(plain(result), indent=2))
    else:
        for line in lines(result):
            print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
