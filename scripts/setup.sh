#!/usr/bin/env bash
# Set up convscope on this machine: virtual environment, install, built-in model, Redis.
# Sourced by scripts/run.sh and scripts/test.sh; `EXTRAS=test` adds the test dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${CONVSCOPE_VENV:-.venv}"
PY="${PYTHON:-python3}"

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "convscope needs Python >= 3.11 ($PY is older)"; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Install (again) only when pyproject.toml or the extras changed.
stamp="$VENV/.convscope-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${EXTRAS:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # A CPU build of torch where one is offered locally; otherwise pip's default build.
  python -c 'import torch' 2>/dev/null || python -m pip install -q "torch==2.13.0" || python -m pip install -q torch
  # Keep that torch: without the pin, a dependency (torchvision, for the tests' grad-cam) may pull another build.
  torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
  python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}" "torch==$torch_version"
  echo "$want" > "$stamp"
fi

# The built-in model: exported to ONNX once, then registered in the model store.
python -m models.builtin

# Redis: $REDIS_URL if set; else the local server on 6379; else start one.
if [ -z "${REDIS_URL:-}" ] && [ -z "${CONVSCOPE_REDIS_URL:-}" ]; then
  export REDIS_URL="redis://127.0.0.1:6379/0"
  if ! python -c 'import redis,sys; redis.Redis(socket_connect_timeout=1).ping()' 2>/dev/null; then
    if command -v redis-server >/dev/null; then
      mkdir -p var/redis
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
      for _ in $(seq 50); do python -c 'import redis; redis.Redis().ping()' 2>/dev/null && break; sleep 0.1; done
    else
      echo "convscope needs Redis: install it (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL"; exit 1
    fi
  fi
fi
