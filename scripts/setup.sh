#!/usr/bin/env bash
# Sets nfp up on a fresh Debian 12 machine, as root: system packages, a virtual environment in
# .venv, and the project with all its extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev          # the interpreter (the torch wheel is for 3.11)
  libportaudio2 libasound2-plugins          # microphone input through sounddevice / ALSA / Pulse
  pulseaudio pulseaudio-utils               # the virtual microphone of the tests
  xvfb openbox xdotool                      # the app on a real X server in the tests and benches
  gcc                                       # the bundle's codec stubs (packaging/stub_codecs.py)
  espeak-ng sox                             # babble noise for training and evaluation
  wesnoth-1.16-music                        # real music for the end-to-end tests and the demo
)

# Qt's platform plugins (X11, Wayland, offscreen): one list, also the .deb's dependencies.
read -r -a QT_PACKAGES <<< "$(grep -v '^#' packaging/qt-runtime-packages.txt | tr '\n' ' ')"
missing=()
for pkg in "${APT_PACKAGES[@]}" "${QT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The constraints file pins the CPU build of torch: without it pip pulls gigabytes of CUDA.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[gui,train,dev,build,cluster]"
echo "nfp is set up: .venv/bin/nfp, .venv/bin/nfp-desktop"
