#!/usr/bin/env bash
# Sets everything up, indexes a music folder (default: Debian's Wesnoth soundtrack), then
# identifies a noisy 5 s excerpt of one of its tracks. Usage: bash scripts/demo.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FOLDER=${1:-/usr/share/games/wesnoth/1.16/data/core/music}
DB=${NFP_DEMO_DB:-$HOME/.local/share/nfp/library}
.venv/bin/nfp index "$FOLDER" --db "$DB"
.venv/bin/nfp info --db "$DB"
QUERY=$(mktemp --suffix=.wav)
.venv/bin/python scripts/make_excerpt.py "$FOLDER" "$QUERY"
.venv/bin/nfp identify "$QUERY" --db "$DB"
.venv/bin/nfp identify "$QUERY" --db "$DB" --json
