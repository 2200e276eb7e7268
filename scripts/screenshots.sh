#!/usr/bin/env bash
# Takes the docs' screenshots (docs/screenshots/) on a real X server: Xvfb with the openbox
# window manager and Qt's xcb plugin, as a user's desktop shows the app.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshots}
Xvfb :97 -screen 0 1280x900x24 -nolisten tcp 2>/dev/null &
XVFB=$!
trap 'kill $XVFB ${WM:-} ${TRAY:-} 2>/dev/null || true' EXIT
sleep 0.5
DISPLAY=:97 openbox 2>/dev/null &
WM=$!
# A system tray for the tray icon's shots (apt install trayer); without one they are left out.
if command -v trayer >/dev/null; then
  DISPLAY=:97 trayer --edge top --align right --widthtype request --height 28 2>/dev/null &
  TRAY=$!
fi
sleep 0.5
env -u QT_QPA_PLATFORM DISPLAY=:97 .venv/bin/python -m nfp_desktop.screenshots "$OUT"
