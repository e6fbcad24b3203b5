"""The client as a user installs it: `pip install clients/python[arrays,cli]` into a fresh virtual environment
(no torch, no onnxruntime), and its command line used the way a shell script uses it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
from PIL import Image

from tests.clients.conftest import MODEL
from tests.conftest import ROOT

CLIENT = ROOT / "clients" / "python"
EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the client and all its extras installed from the local path."""
    home = tmp_path_factory.mktemp("client-venv")
    venv.create(home, with_pip=True, clear=True)
    python = home / "bin" / "python"
    # A copy of the source: pip's build writes into the source tree (build/, *.egg-info), which is shared.
    source = tmp_path_factory.mktemp("client-source") / "python"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    installed = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                                "--progress-bar", "off", f"{source}[arrays,cli]"], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return home


def in_venv(home: Path, code: str) -> str:
    done = subprocess.run([str(home / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_installed_client_pulls_in_no_torch_and_no_onnxruntime(client_venv):
    names = "print(json.dumps(sorted(d.metadata['Name'].lower() for d in md.distributions())))"
    installed = json.loads(in_venv(client_venv, "import json, importlib.metadata as md; " + names))
    assert "convscope-client" in installed
    heavy = [name for name in installed if name.startswith(("torch", "onnx", "nvidia-", "triton"))]
    assert not heavy, heavy
    requires = json.loads(in_venv(client_venv, "import json, importlib.metadata as md; "
                                                "print(json.dumps(md.requires('convscope-client')))"))
    core = sorted(r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert core == ["httpx", "pydantic"], requires
    modules = in_venv(client_venv, "import sys, convscope_client.cli; print(' '.join(sorted(sys.modules)))").split()
    assert not [m for m in modules if m.split(".")[0] in ("torch", "onnxruntime", "numpy", "PIL")], \
        "importing the client loaded a heavy or optional module"


def cli(home: Path, service, *args: str, cwd: Path, key: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update(CONVSCOPE_URL=service.url, **({"CONVSCOPE_API_KEY": service.key} if key else {}))
    return subprocess.run([str(home / "bin" / "convscope-client"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_a_script_predicts_and_runs_a_job_with_exit_codes_checked(client_venv, service, cat_file, tmp_path):
    predicted = cli(client_venv, service, "predict", MODEL, str(cat_file), "--top-k", "2", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    rows = [line.split("\t") for line in predicted.stdout.splitlines()]
    assert len(rows) == 2 and int(rows[0][0]) >= 0 and 0 < float(rows[0][2]) <= 1  # index, label, probability, logit

    as_json = cli(client_venv, service, "--json", "predict", MODEL, str(cat_file), "--top-k", "2", cwd=tmp_path)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)[0]["index"] == int(rows[0][0])

    ran = cli(client_venv, service, "run", "gradcam", MODEL, str(cat_file), "--param", "evaluate=false",
              "--param", f"target={rows[1][0]}", "-o", "out", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["job"]["status"] == "finished" and answer["job"]["params"]["target"] == int(rows[1][0])
    saved = {Path(path).name for path in answer["saved"]}
    assert {"heatmap.png", "attribution.npy", "input.npy"} <= saved
    assert Image.open(tmp_path / "out" / "heatmap.png").format == "PNG"

    jobs = cli(client_venv, service, "jobs", "--kind", "gradcam", cwd=tmp_path)
    assert jobs.returncode == 0 and answer["job"]["id"] in jobs.stdout


def test_exit_codes_tell_api_errors_from_usage_errors_and_an_unreachable_service(client_venv, service, cat_file,
                                                                                tmp_path):
    unknown = cli(client_venv, service, "predict", "no-such-model", str(cat_file), cwd=tmp_path)
    assert unknown.returncode == EXIT_API and "404" in unknown.stderr and not unknown.stdout
    no_key = cli(client_venv, service, "models", cwd=tmp_path, key=False)
    assert no_key.returncode == EXIT_API and "401" in no_key.stderr
    failed_json = cli(client_venv, service, "--json", "predict", "no-such-model", str(cat_file), cwd=tmp_path)
    assert json.loads(failed_json.stdout)["error"]["status"] == 404
    assert cli(client_venv, service, "predict", MODEL, "missing.jpg", cwd=tmp_path).returncode == EXIT_USAGE
    assert cli(client_venv, service, "run", "gradcam", MODEL, "--param", "oops", cwd=tmp_path).returncode == EXIT_USAGE
    assert cli(client_venv, service, "no-such-command", cwd=tmp_path).returncode == EXIT_USAGE
    unreachable = subprocess.run([str(client_venv / "bin" / "convscope-client"), "--url", "http://127.0.0.1:9",
                                  "models"], capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == EXIT_UNREACHABLE and "cannot reach" in unreachable.stderr
