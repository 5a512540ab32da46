#!/usr/bin/env bash
# Runs every test from a fresh clone: brings ONNX Runtime (PyPI wheel), then the Rust suite
# (unit tests, real-ORT parity tests on the committed models, HTTP tests on a real socket).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_ort.sh
cargo test --locked
