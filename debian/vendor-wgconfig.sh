#!/bin/sh
# Fetch wgconfig (not in Debian; AGPL-3.0-or-later) at a pinned version, check its
# hash, and unpack the package and its licence into DEST. Used by the .deb build
# (wgconfig travels inside the package, in wgsyncd's private path) and by the
# test run against Debian's own Python libraries.
set -eu
VERSION=1.2.0
SHA256=a9e564606d8eba67a1388e0df45a457fc96aca8796c84ce592c36cf7d4f056a2
DEST=${1:?usage: vendor-wgconfig.sh DEST [CACHE_DIR]}
CACHE=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/wgsyncd}
# pip to download with: Debian's python3-pip, or e.g. the project's venv
# (WGSYNCD_PIP_PYTHON=.venv/bin/python) on a machine without python3-pip.
PIP_PYTHON=${WGSYNCD_PIP_PYTHON:-python3}
TARBALL="$CACHE/wgconfig-$VERSION.tar.gz"
mkdir -p "$CACHE"
if ! echo "$SHA256  $TARBALL" | sha256sum -c --status 2>/dev/null; then
    rm -f "$TARBALL"
    "$PIP_PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
        -d "$CACHE" "wgconfig==$VERSION" 2>/dev/null \
      || "$PIP_PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$CACHE" "wgconfig==$VERSION" \
      || { echo "wgconfig $VERSION: download with $PIP_PYTHON -m pip failed (install python3-pip, or set" \
                "WGSYNCD_PIP_PYTHON to a python that has pip)" >&2; exit 1; }
fi
echo "$SHA256  $TARBALL" | sha256sum -c --quiet || { echo "wgconfig $VERSION: hash mismatch" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$TARBALL" -C "$work"
mkdir -p "$DEST"
rm -rf "$DEST/wgconfig"
cp -r "$work/wgconfig-$VERSION/src/wgconfig" "$DEST/wgconfig"
cp "$work/wgconfig-$VERSION/LICENSE" "$DEST/wgconfig/LICENSE"
find "$DEST/wgconfig" -name '__pycache__' -prune -exec rm -rf {} +
# the sdist marks the modules executable; they are libraries, not scripts
find "$DEST/wgconfig" -type d -exec chmod 0755 {} +
find "$DEST/wgconfig" -type f -exec chmod 0644 {} +
echo "wgconfig $VERSION -> $DEST/wgconfig"
