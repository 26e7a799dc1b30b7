#!/usr/bin/env bash
# Copy an EDiT artifact folder to the demo app's private files dir on the connected device:
#   files/artifacts/<NAME>/{manifest.json, program, test vectors}
# Only what the phone needs is pushed (not the PyTorch reference folder).
# usage: push_artifact.sh ART_DIR [NAME]     (the debug build must be installed: run-as)
set -euo pipefail
ART=${1:?usage: push_artifact.sh ART_DIR [NAME]}
NAME=${2:-$(basename "$ART")}
PKG=org.editmobile.demo
# The files to push: manifest.json plus what its "files" table lists for these roles.
FILES=$(python3 - "$ART/manifest.json" <<'PY'
import json, sys
files = json.load(open(sys.argv[1]))["files"]
print("manifest.json", *(files[r]["path"] for r in ("program", "bundled_program", "test_vectors") if files.get(r)))
PY
)
adb shell run-as "$PKG" mkdir -p "files/artifacts/$NAME"
for f in $FILES; do
  # adb cannot write into an app's private dir: stage in /data/local/tmp, copy with run-as.
  adb push "$ART/$f" "/data/local/tmp/edit_demo_$f"
  adb shell "run-as $PKG sh -c 'cat /data/local/tmp/edit_demo_$f > files/artifacts/$NAME/$f'"
  adb shell rm "/data/local/tmp/edit_demo_$f"
done
echo "pushed $FILES to $PKG files/artifacts/$NAME"
