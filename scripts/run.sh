#!/usr/bin/env bash
# Set up everything, start CONVSCOPE_WORKERS job workers (default 1) and serve the API.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
pids=()
for _ in $(seq "${CONVSCOPE_WORKERS:-1}"); do
  python -m workers & pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
python -m service.cli serve
