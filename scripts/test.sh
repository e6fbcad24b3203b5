#!/usr/bin/env bash
# Set up everything and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=test . scripts/setup.sh
exec python -m pytest -q tests "$@"
