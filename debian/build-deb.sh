#!/bin/sh
# Build the .deb from a copy of the work tree (so the checkout stays clean) and put
# it in dist/. Usage: debian/build-deb.sh [DIST_DIR]   (`make deb` calls this)
#
# The copy holds the tracked and the new, not-ignored files as they are on disk,
# so a build tests what is in the tree, not only what is committed. wgconfig's
# sdist is cached in .cache/ (the one download the build may need).
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIST=${1:-$REPO/dist}
VERSION=$(dpkg-parsechangelog -l "$REPO/debian/changelog" -S Version)
WORK=$REPO/build/deb
SRC=$WORK/wgsyncd-$VERSION

rm -rf "$WORK"
mkdir -p "$SRC" "$DIST"
cd "$REPO"
git ls-files -z --cached --others --exclude-standard \
  | (cd "$REPO" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
  | tar --null -T - -cf - | tar -C "$SRC" -xf -

mkdir -p "$REPO/.cache"
# pip for the one wgconfig download (only on a cold cache): the project's venv has
# it even where Debian's python3-pip is not installed.
if [ -z "${WGSYNCD_PIP_PYTHON:-}" ]; then
    WGSYNCD_PIP_PYTHON=python3
    [ -x "$REPO/.venv/bin/python" ] && WGSYNCD_PIP_PYTHON=$REPO/.venv/bin/python
fi
# Debian's own interpreter and tools only: a pyenv/venv python3 earlier on PATH
# would build against the wrong interpreter and site-packages.
cd "$SRC"
env PATH=/usr/sbin:/usr/bin:/sbin:/bin WGSYNCD_VENDOR_CACHE="$REPO/.cache" \
    WGSYNCD_PIP_PYTHON="$WGSYNCD_PIP_PYTHON" \
    dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log" >&2; echo "dpkg-buildpackage failed; full log: $WORK/build.log" >&2; exit 1; }

rm -f "$DIST"/wgsyncd_*_all.deb
mv "$WORK"/wgsyncd_"$VERSION"_all.deb "$DIST"/
echo "$DIST/wgsyncd_${VERSION}_all.deb"
