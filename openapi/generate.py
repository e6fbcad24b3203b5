"""Write openapi/openapi.json from the app itself: `python -m openapi.generate` (or `--check`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PATH = Path(__file__).with_name("openapi.json")


def render() -> str:
    from service.app import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if PATH.exists() and PATH.read_text() == text else "openapi/openapi.json is stale")
    PATH.write_text(text)


if __name__ == "__main__":
    main()
