#!/usr/bin/env bash
# Classify throughput on the bundled model: /v1/classify with 32 inputs per request (held-out
# number words in four languages, the model's default labels and template), at concurrency 1
# and 4. Prints one JSON line per run; `tokens_per_s` there is classified inputs per second.
#   bench/classify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-18932}"
WORK=bench/work
mkdir -p "$WORK"
scripts/setup_ort.sh >/dev/null
python3 - tests/data/numbers_heldout.json "$WORK/classify_inputs.txt" <<'PY'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
texts = [c["prompt"].removeprefix("language: ") for c in cases if c["task"] == "language"]
open(sys.argv[2], "w").write("\n".join(texts) + "\n")
PY
# shellcheck source=bench/serve.sh
. bench/serve.sh
build
start_server "$WORK/classify-server.log" --model models/t5-numbers
for c in 1 4; do
  $LOADGEN "http://127.0.0.1:$PORT" classify "$c" $(( c * 10 )) "$WORK/classify_inputs.txt" 32 \
    | sed "s/^/{\"endpoint\":\"classify\",\"batch\":32,\"concurrency\":$c,\"run\":/; s/$/}/"
done
