#!/usr/bin/env bash
# Builds the one-folder desktop app with PyInstaller and packs it:
#   dist/nfp-desktop/nfp-desktop (the app), dist/nfp-desktop/nfp (the command line, a link)
#   dist/nfp-desktop-linux-x86_64.tar.gz, and dist/nfp_<version>_amd64.deb (scripts/build_deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}  # an environment with the project and its `build` extra
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist \
  --workpath build/pyinstaller build.spec
APP=dist/nfp-desktop
ln -sf nfp-desktop "$APP/nfp"
"$PYTHON" packaging/stub_codecs.py "$APP"
# Drop debug information only, where a library carries it (PyAV's modules: 31 -> 5 MB; a pyenv
# libpython: 23 -> 6 MB). Symbols stay: stripping them broke numpy's and faiss's
# (docs/architecture.md, The app, live input and the bundle).
# readelf's listing is read whole: `readelf | grep -q` under pipefail failed whenever grep quit
# before readelf had written everything (SIGPIPE), which left some libraries unstripped (+35 MB).
find "$APP/_internal" -name "*.so*" -type f -print0 | while IFS= read -r -d '' lib; do
  sections=$(readelf -S "$lib" 2>/dev/null || true)
  if [[ $sections == *.debug_info* ]]; then strip --strip-debug "$lib"; fi
done
tar -C dist -czf dist/nfp-desktop-linux-x86_64.tar.gz nfp-desktop
bash scripts/build_deb.sh
du -sh "$APP" dist/nfp-desktop-linux-x86_64.tar.gz dist/*.deb
