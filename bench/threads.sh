#!/usr/bin/env bash
# Thread settings, measured through HTTP on the fp32 and int8 t5-small-shaped models at
# concurrency 1, 8 and 32 (64-token inputs, exactly 32 new tokens):
#   - ONNX Runtime: one global pool shared by every session against a pool per session, with
#     spinning on and off;
#   - the HTTP side: tokio worker threads (http_threads) 1 and 2, with the best ORT setting;
#   - two decode lanes (decode_lanes = 2: each with its own sessions on one core, prefilling
#     inline), with and without the solo sessions a lane uses while the other is idle.
# The pool settings are measured on one lane (--decode-lanes 1; the auto default gives an int8
# model two lanes, whose sessions have a pool each).
#   bench/threads.sh        (run bench/run.sh once first: it makes the models and the prompt)
# Prints one line per setting and concurrency (generated tokens/s, p50 and p99 ms) and keeps them
# in bench/work/threads.jsonl. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE="${SHAPE:-t5-small}"
PORT="${PORT:-18932}"
WORK=bench/work
# shellcheck source=bench/serve.sh
. bench/serve.sh
require_prompt
build
OUT="$WORK/threads.jsonl"
: > "$OUT"
SETTINGS=(
  "--decode-lanes 1 --ort-thread-pool global --intra-op-spinning false"
  "--decode-lanes 1 --ort-thread-pool global --intra-op-spinning true"
  "--decode-lanes 1 --ort-thread-pool per-session --intra-op-spinning false"
  "--decode-lanes 1 --ort-thread-pool per-session --intra-op-spinning true"
  "--decode-lanes 1 --ort-thread-pool global --intra-op-spinning true --http-threads 2"
  "--decode-lanes 2 --solo-sessions true"
  "--decode-lanes 2 --solo-sessions false"
)
for model in "models/$SHAPE-shape" "models/$SHAPE-shape-int8"; do
  for flags in "${SETTINGS[@]}"; do
    # shellcheck disable=SC2086
    start_server "$WORK/threads-server.log" --model "$model" --max-concurrent-requests 1024 $flags
    for c in 1 8 32; do
      n=$(( c == 1 ? 10 : c * 4 ))
      line=$($LOADGEN "http://127.0.0.1:$PORT" closed "$c" "$n" "$PROMPT" 32)
      echo "{\"model\":\"$model\",\"flags\":\"$flags\",\"concurrency\":$c,\"run\":$line}" >> "$OUT"
    done
    stop_server
  done
done
.venv/bin/python - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | setting | c=1 | c=8 | c=32 | p50 ms at 1 / 8 / 32 |")
print("|---|---|---|---|---|---|")
seen = {}
for r in rows:
    seen.setdefault((r["model"], r["flags"]), {})[r["concurrency"]] = r["run"]
for (model, flags), by_c in seen.items():
    tps = " | ".join(f"{by_c[c]['tokens_per_s']:.0f}" for c in (1, 8, 32))
    p50 = " / ".join(f"{by_c[c]['p50_s'] * 1000:.0f}" for c in (1, 8, 32))
    print(f"| {model.split('/')[-1]} | `{flags}` | {tps} | {p50} |")
PY
