"""`clients/typescript/convscope.d.ts` is what the pinned openapi-typescript makes of `openapi/openapi.json` today,
and the README's TypeScript example type-checks against it (openapi-fetch, strict tsc)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import readme_block
from tests.conftest import ROOT

TYPESCRIPT = ROOT / "clients" / "typescript"
REGENERATE = "cd clients/typescript && npm ci && npm run generate"


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory) -> Path:
    """A copy of clients/typescript with its pinned tools installed (`npm ci`: the lockfile's exact versions)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Node.js 20 with npm runs this check)")
    folder = tmp_path_factory.mktemp("typescript")
    for name in ("package.json", "package-lock.json", "tsconfig.json", "example.ts"):
        shutil.copy(TYPESCRIPT / name, folder / name)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder


def test_the_typescript_types_are_current(toolchain):
    done = subprocess.run([str(toolchain / "node_modules" / ".bin" / "openapi-typescript"),
                           str(ROOT / "openapi" / "openapi.json"), "--output", str(toolchain / "convscope.d.ts")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh, committed = (toolchain / "convscope.d.ts").read_text(), (TYPESCRIPT / "convscope.d.ts").read_text()
    current = fresh == committed  # compared outside the assert: pytest's diff of two 200 KB texts says nothing
    assert current, f"clients/typescript/convscope.d.ts is out of date with openapi/openapi.json; regenerate it: {REGENERATE}"


def test_the_examples_type_check(toolchain):
    """`example.ts`, and the README's TypeScript block with its two free names declared."""
    shutil.copy(TYPESCRIPT / "convscope.d.ts", toolchain / "convscope.d.ts")
    block = readme_block("ts").replace("./clients/typescript/convscope", "./convscope")
    (toolchain / "readme.ts").write_text("declare const key: string, imageId: string;\n" + block)
    (toolchain / "tsconfig.readme.json").write_text(
        json.dumps({"extends": "./tsconfig.json", "files": ["convscope.d.ts", "readme.ts"]}))
    for project in ("tsconfig.json", "tsconfig.readme.json"):
        done = subprocess.run([str(toolchain / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p",
                               str(toolchain / project)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, project + ":\n" + done.stdout + done.stderr
