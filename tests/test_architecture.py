"""The house's shape holds: the API process never loads torch, and the import contracts are kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_api_loads_no_torch():
    probe = "import service.app, sys; assert 'torch' not in sys.modules, 'service.app pulled in torch'"
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def test_importing_a_method_loads_no_redis_rq_or_onnxruntime():
    probe = ("import sys, workers.methods.gradcam, workers.methods.top_activations, workers.methods.feature_vis; "
             "bad = {'redis', 'rq', 'onnxruntime', 'fastapi'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)
