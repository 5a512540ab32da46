#!/usr/bin/env bash
# Brings the ONNX Runtime shared library from the PyPI wheel (no CDN) into .ort/.
# Usage: scripts/setup_ort.sh [cpu|gpu]   (default cpu)
# The server finds it through ORT_DYLIB_PATH (.cargo/config.toml sets it for cargo run / cargo test).
set -euo pipefail
ORT_VERSION=1.31.1
flavor="${1:-cpu}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.ort"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
pkg=onnxruntime
[ "$flavor" = gpu ] && pkg=onnxruntime-gpu
marker="$dest/.flavor"
if [ -f "$lib" ] && [ "$(cat "$marker" 2>/dev/null)" = "$flavor" ]; then
  echo "ONNX Runtime $ORT_VERSION ($flavor) already in $dest"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 -d "$tmp" "$pkg==$ORT_VERSION"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
            print("extracted", base)
PY
echo "$flavor" > "$marker"
echo "ONNX Runtime $ORT_VERSION ($flavor) ready: $lib"
