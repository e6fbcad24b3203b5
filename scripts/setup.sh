#!/usr/bin/env bash
# Set up convscope on this machine: virtual environment, install, built-in model, Redis.
# Sourced by scripts/run.sh and scripts/test.sh; `EXTRAS=test` adds the test dependencies.
# Says in a few lines what it does; pip's and the exporter's output go to var/log/setup.log, whose
# last lines are shown when a step fails; the export's warnings are shown after it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${CONVSCOPE_VENV:-.venv}"
PY="${PYTHON:-python3}"
mkdir -p var/log
SETUP_LOG=var/log/setup.log
echo "== convscope setup, $(date -u '+%F %T') UTC" > "$SETUP_LOG"

setup_say() { echo "setup: $*"; }
# Run a command with its output appended to the log; its exit status is the command's.
setup_logged() { echo "+ $*" >> "$SETUP_LOG"; "$@" >> "$SETUP_LOG" 2>&1; }
setup_failed() {
  echo "setup: $1 failed; the last lines of $SETUP_LOG:" >&2
  tail -n 40 "$SETUP_LOG" | sed 's/^/  | /' >&2
  exit 1
}
# Show the warnings and errors (pattern $2, less pattern $3) that the log gained since line $1.
setup_show_warnings() {
  tail -n "+$(($1 + 1))" "$SETUP_LOG" | grep -E "$2" | grep -Ev "${3:-^$}" | head -n 20 | sed 's/^/  ! /' || true
}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "convscope needs Python >= 3.11 ($PY is older)"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  setup_say "creating the virtual environment $VENV"
  setup_logged "$PY" -m venv "$VENV" || setup_failed "creating $VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Install (again) only when pyproject.toml or the extras changed.
stamp="$VENV/.convscope-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${EXTRAS:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  setup_say "installing packages into $VENV${EXTRAS:+ (with extras: $EXTRAS)}; takes a few minutes the first time (log: $SETUP_LOG)"
  pip_install=(python -m pip install --progress-bar off --root-user-action=ignore --disable-pip-version-check)
  from=$(wc -l < "$SETUP_LOG")
  setup_logged "${pip_install[@]}" --upgrade pip || setup_failed "upgrading pip"
  # A CPU build of torch where one is offered locally; otherwise pip's default build.
  python -c 'import torch' 2>/dev/null || setup_logged "${pip_install[@]}" "torch==2.13.0" \
    || setup_logged "${pip_install[@]}" torch || setup_failed "installing torch"
  # Keep that torch: without the pin, a dependency (torchvision, for the tests' grad-cam) may pull another build.
  torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])' 2>> "$SETUP_LOG")"
  setup_logged "${pip_install[@]}" -e ".${EXTRAS:+[$EXTRAS]}" "torch==$torch_version" || setup_failed "installing convscope"
  setup_show_warnings "$from" '^(ERROR|WARNING):' 'is ignored: it is neither a file nor a directory'  # pip.conf's local indexes
  echo "$want" > "$stamp"
fi

# The browser tests (tests/browser/) drive Debian's chromium through Playwright; Playwright's own
# browser download is not reachable from these machines, so the system package is installed instead.
if [[ ",${EXTRAS:-}," == *,test,* ]] && [ -z "${CONVSCOPE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  setup_say "installing chromium for the browser tests (apt-get install -y chromium; log: $SETUP_LOG)"
  apt=(apt-get); [ "$(id -u)" -eq 0 ] || apt=(sudo -n apt-get)
  export DEBIAN_FRONTEND=noninteractive
  setup_logged "${apt[@]}" install -y chromium \
    || { setup_logged "${apt[@]}" update && setup_logged "${apt[@]}" install -y chromium; } \
    || setup_failed "installing chromium (needs root or sudo; or set CONVSCOPE_CHROMIUM to a Chromium binary)"
  command -v chromium >/dev/null || setup_failed "installing chromium (no chromium on PATH after apt-get)"
fi

# The built-in model: exported to ONNX once, then registered in the model store.
if ! python -m models.builtin --check 2>> "$SETUP_LOG"; then
  setup_say "exporting the built-in model EfficientNet-Lite0 to ONNX (about two minutes, once)"
  from=$(wc -l < "$SETUP_LOG")
  setup_logged python -m models.builtin || setup_failed "exporting the built-in model"
  setup_show_warnings "$from" 'Warning|WARNING|ERROR'
fi

# Redis: $REDIS_URL if set; else the local server on 6379; else start one.
if [ -z "${REDIS_URL:-}" ] && [ -z "${CONVSCOPE_REDIS_URL:-}" ]; then
  export REDIS_URL="redis://127.0.0.1:6379/0"
  if python -c 'import redis,sys; redis.Redis(socket_connect_timeout=1).ping()' 2>/dev/null; then
    setup_say "Redis: found on 127.0.0.1:6379"
  elif command -v redis-server >/dev/null; then
    mkdir -p var/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
    for _ in $(seq 50); do python -c 'import redis; redis.Redis().ping()' 2>/dev/null && break; sleep 0.1; done
    python -c 'import redis; redis.Redis().ping()' 2>/dev/null \
      || { echo "setup: redis-server did not answer on 127.0.0.1:6379; see var/redis/redis.log" >&2; exit 1; }
    setup_say "Redis: started redis-server on 127.0.0.1:6379 (log: var/redis/redis.log)"
  else
    echo "convscope needs Redis: install it (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL"; exit 1
  fi
else
  setup_say "Redis: using $(echo "${REDIS_URL:-$CONVSCOPE_REDIS_URL}" | sed -E 's#//[^@/]*@#//***@#')"  # no password shown
fi
