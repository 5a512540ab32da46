#!/usr/bin/env bash
# Open-loop latency against the arrival rate: Poisson arrivals at fractions of the saturation rate
# (the request rate measured closed-loop at concurrency 32), 64-token inputs, 32 new tokens.
# Reports p50 / p99 and their ratio to the single-request p50, plus how busy the decode thread
# was (prefill and step seconds per second, from /metrics).
#   bench/open_loop.sh [MODEL]      (default models/t5-small-shape-int8; run bench/run.sh first)
# Environment: FRACTIONS (default "0.125 0.25 0.375 0.5"), REQUESTS (per rate, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-models/t5-small-shape-int8}"
FRACTIONS="${FRACTIONS:-0.125 0.25 0.375 0.5}"
REQUESTS="${REQUESTS:-200}"
PORT="${PORT:-18934}"
WORK=bench/work
# shellcheck source=bench/serve.sh
. bench/serve.sh
require_prompt
build
start_server "$WORK/open-server.log" --model "$MODEL" --max-concurrent-requests 1024
URL="http://127.0.0.1:$PORT"
$LOADGEN "$URL" closed 4 8 "$PROMPT" 32 >/dev/null
single=$($LOADGEN "$URL" closed 1 20 "$PROMPT" 32)
sat=$($LOADGEN "$URL" closed 32 192 "$PROMPT" 32)
busy() { curl -s "$URL/metrics" | awk '{n = $1; sub(/\{.*/, "", n)} n == "t5serve_encoder_duration_seconds_sum" || n == "t5serve_decode_step_duration_seconds_sum" {s += $2} END {print s}'; }
echo "model $MODEL; single: $single"
echo "saturation (closed loop, 32 clients): $sat"
for f in $FRACTIONS; do
  rate=$(.venv/bin/python -c "import json; print(json.loads('$sat')['requests_per_s'] * $f)")
  b0=$(busy)
  run=$($LOADGEN "$URL" open "$rate" "$REQUESTS" "$PROMPT" 32 11)
  b1=$(busy)
  .venv/bin/python - "$f" "$single" "$run" "$b0" "$b1" <<'PY'
import json, sys
f, single, run = float(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
busy = (float(sys.argv[5]) - float(sys.argv[4])) / run["wall_s"]
s = single["p50_s"]
print(f"| {f:.3f} | {run['param']:.1f} | {run['p50_s'] * 1000:.0f} | {run['p99_s'] * 1000:.0f} | "
      f"{run['p50_s'] / s:.2f}x | {run['p99_s'] / s:.2f}x | {100 * busy:.0f}% |")
PY
done
