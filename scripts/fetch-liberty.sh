#!/usr/bin/env bash
# Fetch the OSU 0.18 um standard-cell Liberty file (osu018_stdcells.lib, from Debian's
# qflow-tech-osu018 package: Oklahoma State University's cells as shipped with qflow) into
# the git-ignored models/cells/. The shipped table assets/cells/osu018.toml was made from
# it with `perfwatt cells --liberty models/cells/osu018_stdcells.lib`; a test checks that
# they agree. The package is only unpacked, not installed (it depends on all of qflow).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=models/cells/osu018_stdcells.lib
if [ -f "$DEST" ]; then exit 0; fi
mkdir -p models/cells/.dl
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
download() { (cd models/cells/.dl && apt-get download qflow-tech-osu018 2>&1 | grep -v "^W: Download is performed unsandboxed" || true); }
download
# A machine whose package lists were never fetched cannot locate it: fetch them once.
if ! ls models/cells/.dl/qflow-tech-osu018_*.deb >/dev/null 2>&1; then
  $SUDO apt-get update -qq && download
fi
dpkg-deb -x models/cells/.dl/qflow-tech-osu018_*.deb models/cells/.dl/x
cp models/cells/.dl/x/usr/share/qflow/tech/osu018/osu018_stdcells.lib "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
rm -rf models/cells/.dl
echo "liberty: $DEST"
