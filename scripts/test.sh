#!/usr/bin/env bash
# Set up everything and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=test . scripts/setup.sh
# The architecture (import contracts in pyproject.toml) and the lint rules hold before any test runs.
lint-imports
ruff check .
exec python -m pytest -q tests "$@"
