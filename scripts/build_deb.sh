#!/usr/bin/env bash
# Packs the built bundle (dist/nfp-desktop, from scripts/build_app.sh) as a Debian package:
# the app in /opt/nfp, `nfp` and `nfp-desktop` on the PATH, a menu entry and icons.
#   dist/nfp_<version>_amd64.deb    install: apt install ./dist/nfp_<version>_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
APP=dist/nfp-desktop
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ROOT=build/deb/nfp_${VERSION}_amd64
rm -rf "$ROOT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications"
cp -a "$APP" "$ROOT/opt/nfp"
ln -s /opt/nfp/nfp-desktop "$ROOT/usr/bin/nfp-desktop"
ln -s /opt/nfp/nfp-desktop "$ROOT/usr/bin/nfp"  # the launcher reads its name (packaging/launcher.py)
install -m 644 packaging/nfp-desktop.desktop "$ROOT/usr/share/applications/"
install -D -m 644 nfp_desktop/icons/nfp.svg "$ROOT/usr/share/icons/hicolor/scalable/apps/nfp.svg"
for png in nfp_desktop/icons/nfp-*.png; do
  size=$(basename "$png" .png | cut -d- -f2)
  install -D -m 644 "$png" "$ROOT/usr/share/icons/hicolor/${size}x${size}/apps/nfp.png"
done
DEPENDS=$(grep -v '^#' packaging/qt-runtime-packages.txt | tr -s ' \n' ' ' | sed 's/ *$//; s/ /, /g')
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: nfp
Version: $VERSION
Architecture: amd64
Maintainer: nfp developers <nfp@localhost>
Depends: libc6 (>= 2.28), libportaudio2, $DEPENDS
Recommends: pulseaudio-utils
Section: sound
Priority: optional
Installed-Size: $(du -sk "$ROOT" | cut -f1)
Homepage: https://localhost/nfp
Description: identify music from your own library, Shazam-style
 nfp indexes a music folder with neural audio fingerprints and names the track and
 the position of what the microphone (or the computer itself) plays, or of a file.
 Includes the desktop app (nfp-desktop) and the command line (nfp).
CONTROL
# The menu and icon caches are refreshed where the tools exist; nothing else runs as root.
for script in postinst postrm; do
  cat > "$ROOT/DEBIAN/$script" <<'HOOK'
#!/bin/sh
set -e
command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
HOOK
  chmod 755 "$ROOT/DEBIAN/$script"
done
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "dist/nfp_${VERSION}_amd64.deb" >/dev/null
echo "dist/nfp_${VERSION}_amd64.deb"
