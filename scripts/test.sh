#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the whole test suite and the import contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/python -m pytest -q "$@"
