#!/usr/bin/env bash
# Builds the one-folder desktop app with PyInstaller and packs it:
#   dist/nfp-desktop/nfp-desktop (the app), dist/nfp-desktop/nfp (the command line, a link)
#   dist/nfp-desktop-linux-x86_64.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}  # an environment with the project and its `build` extra
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist \
  --workpath build/pyinstaller build.spec
APP=dist/nfp-desktop
ln -sf nfp-desktop "$APP/nfp"
# Only torch's own libraries carry debug symbols worth dropping; stripping numpy's or faiss's
# bundled libraries breaks them (DESIGN.md section 7).
strip --strip-unneeded "$APP"/_internal/torch/lib/libtorch_cpu.so "$APP"/_internal/torch/lib/libtorch_python.so
tar -C dist -czf dist/nfp-desktop-linux-x86_64.tar.gz nfp-desktop
du -sh "$APP" dist/nfp-desktop-linux-x86_64.tar.gz
