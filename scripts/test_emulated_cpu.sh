#!/usr/bin/env bash
# The bundled model's int8 oracle on another CPU than this one, emulated: qemu's user-mode emulator
# runs the CPU reference (scripts/cpu_reference.py) and the bundled-model tests as that CPU would,
# with its int8 kernel (src/model/cpu.rs). With the default, Haswell (AVX2 + FMA, no AVX-512, no
# VNNI), ONNX Runtime takes its saturating u8 x s8 kernel, and the figures are those of a real AVX2
# machine (the beam score -2.2041941 that such a machine gave for "translate English to German:
# fifty-three" comes out to the digit).
#   scripts/test_emulated_cpu.sh [QEMU_CPU] [TEST_FILTER]
# QEMU_CPU: a `qemu-x86_64 -cpu help` model (default Haswell); TEST_FILTER: which tests of
# tests/bundled_model.rs run (default min_new_tokens, the beam-search oracle; "" runs all three,
# about half an hour). Emulation is 20-50 times slower than the machine: about 15 minutes with the
# defaults. Run scripts/test.sh once first (it builds and installs the Python tooling).
set -euo pipefail
cd "$(dirname "$0")/.."
QEMU_CPU="${1:-Haswell}"
FILTER="${2-min_new_tokens}"
command -v qemu-x86_64 >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; }
emulated() { qemu-x86_64 -cpu "$QEMU_CPU" "$@" 2> >(grep -v "TCG doesn't support" >&2); }
cargo build --locked --quiet
cargo test --locked --no-run --quiet --test bundled_model
binary=$(cargo test --locked --no-run --test bundled_model --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*bundled_model[^"]*\)".*/\1/p' | tail -1)
cpu=$(emulated target/debug/t5serve cpu)
echo "emulated $QEMU_CPU: $cpu"
out="target/cpu-reference-$QEMU_CPU"
# The scripts re-exec Python once with MALLOC_MMAP_MAX_ set; preset, so that the exec stays emulated.
MALLOC_MMAP_MAX_=0 emulated .venv/bin/python scripts/cpu_reference.py "$out" --cpu "$cpu"
T5SERVE_CPU_REFERENCE="$out" emulated "$binary" --test-threads 1 "$FILTER"
