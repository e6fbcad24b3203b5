"""Where the benches write what they measured: a dated section of `bench/RESULTS.md` per run, naming the machine.

Figures live here, not in docstrings or the README: a docstring says why the code is as it is, and a figure is
only true of one machine on one day.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Benchmark results\n\nWritten by the benches themselves (`bench/results.py`), newest last: each section is "
          "one run, with its date, command and machine. Ratios compare with a baseline measured in the same run.\n")


def machine() -> str:
    """CPU model, cores this process may use, and the GPU when torch sees one."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{model}, {cores} cores, {gpu}, Python {platform.python_version()}, {platform.system()}"


def load_average(all_three: bool = False) -> str:
    """The machine's load average now, as the benches print it: the 1-minute figure, or with `all_three` the 1, 5 and
    15-minute ones separated by spaces (two decimals each)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg()[:3 if all_three else 1])


def record(title: str, lines: list[str]) -> None:
    """Append one run's figures (`lines`, as printed) under a dated heading with the command that made them."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    script = Path(sys.argv[0]).resolve()
    module = ".".join(script.relative_to(RESULTS.parents[1]).with_suffix("").parts) if script.is_file() else "?"
    command = " ".join(["python", "-m", module, *sys.argv[1:]])
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    body = "\n".join(f"    {line}" for line in lines)
    RESULTS.write_text(f"{text.rstrip()}\n\n## {title}, {stamp}\n\n`{command}` at {commit()} on {machine()}\n\n"
                       f"{body}\n")


def commit() -> str:
    """The checked-out commit (with `+` when the tree has changes), so a figure names the code that made it."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=RESULTS.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"{head}{'+' if dirty else ''}"
