#!/usr/bin/env bash
# Open-loop latency against the arrival rate, as a curve: Poisson arrivals at fractions of the
# saturation rate (requests/s of a closed loop of 32 clients), 64-token inputs, 32 new tokens.
# For each rate: p50 / p99 and their ratio to the single-request p50 (1 client, closed loop), and
# how busy the decode thread was (prefill and step seconds per second, from /metrics). Then the
# figure: the highest tested fraction whose p99 stays within 2x the single-request p50, with every
# lower tested fraction within it too (the interpolated crossing beside it; bench/charts.py
# within_2x, bench/open_loop_report.py).
#   bench/open_loop.sh [MODEL]      (default models/t5-small-shape-int8; run bench/run.sh first)
# Environment:
#   FRACTIONS     default "0.0625 0.125 0.1875 0.25 0.3125 0.375 0.4375 0.5 0.625 0.75"
#   REQUESTS      per rate, default 200; SINGLE_REQUESTS (default 20) and SATURATION_REQUESTS
#                 (default 192) for the two closed-loop reference runs
#   OUT           JSON lines written here (default bench/work/open-loop.jsonl; truncated): a cpu row,
#                 the single-request run {"engine":NAME,"batch":1,"run":...}, the saturation run
#                 (batch 32), one {"engine":"NAME-open","fraction":F,"rate":R,"busy":B,"run":...} per
#                 rate, and one "NAME-open-within-2x" row with the figure. NAME is
#                 t5serve-<model directory>, with @LABEL when LABEL is set; every row carries
#                 "setting" (LABEL), "flags" (SERVER_FLAGS) and "model". bench/report.py --open-loop
#                 and bench/open_loop_report.py read it.
#   LABEL         the name of this setting (for a driver comparing settings; no spaces)
#   SERVER_FLAGS  extra `t5serve serve` flags. The levers of this measurement today:
#                   prefill priority:  --prefill-thread true|false (prefill on its own thread, overlapped
#                                      with the decoder steps, or inline on the decode thread, which then
#                                      steps only after it); --ort-thread-pool per-session with
#                                      --prefill-threads N (N cores' threads for prefill, the rest for
#                                      steps); --decode-lanes N (0 = auto: 2 for an int8 model on 2+ cores,
#                                      each lane prefilling inline on its share of the cores)
#                   splitting a large prefill: --max-prefill-tokens N (one prefill encodes at most N
#                                      padded tokens, rows x longest input; the rest wait for the next
#                                      one, with decoder steps in between). One prefill runs at a time;
#                                      it is also split into length buckets (scheduler/buckets.rs,
#                                      MAX_BUCKET_PADDING, a constant). --max-batch-size caps the rows
#                                      it can add (and the decode batch)
#                   cohort sizing:     --max-batch-size (rows decoding at once), --max-queue-delay-ms (how
#                                      long a request waits for others to start with), --max-cohorts
#                                      (only for a model without decoder_with_past_masked.onnx: with it,
#                                      new rows join the running batch instead of starting cohorts)
#                 bench/open_loop_levers.sh runs this once per setting.
#   PROMPT        the input text (default bench/work/prompt.txt, bench/run.sh's 64-token prompt)
#   NEW_TOKENS    default 32; PORT default 18934; SEED of the arrivals, default 11
#   BIN, SKIP_BUILD=1 (use BIN, default target/release/t5serve, and LOADGEN, default
#                 target/release/examples/loadgen, as they are), LOADGEN
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-models/t5-small-shape-int8}"
MODEL="${MODEL%/}"
FRACTIONS="${FRACTIONS:-0.0625 0.125 0.1875 0.25 0.3125 0.375 0.4375 0.5 0.625 0.75}"
REQUESTS="${REQUESTS:-200}"
NEW_TOKENS="${NEW_TOKENS:-32}"
PORT="${PORT:-18934}"
WORK=bench/work
OUT="${OUT:-$WORK/open-loop.jsonl}"
LABEL="${LABEL:-}"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
# shellcheck source=bench/serve.sh
. bench/serve.sh
trap 'exit 130' INT
trap 'exit 143' TERM
PROMPT="${PROMPT:-$WORK/prompt.txt}"
[ -f "$PROMPT" ] || { echo "no $PROMPT: run bench/run.sh first (or set PROMPT)" >&2; exit 1; }
case "$LABEL" in *[[:space:]]*) echo "LABEL must not contain spaces: '$LABEL'" >&2; exit 2 ;; esac
if [ -n "${SKIP_BUILD:-}" ]; then
  LOADGEN="${LOADGEN:-target/release/examples/loadgen}"
  echo "CPU: $(cpu_report)"
else
  build
fi
[ -x "$LOADGEN" ] || { echo "no $LOADGEN: cargo build --release --example loadgen" >&2; exit 1; }
mkdir -p "$WORK" "$(dirname "$OUT")"
NAME="t5serve-$(basename "$MODEL")${LABEL:+@$LABEL}"

# row JSON...: appends JSON lines to OUT with the setting's fields added to each.
row() {
  "$PY" - "$OUT" "$LABEL" "${SERVER_FLAGS:-}" "$MODEL" "$@" <<'PY'
import json, sys
out, label, flags, model, *rows = sys.argv[1:]
with open(out, "a") as f:
    for r in rows:
        r = json.loads(r)
        if r.get("engine") != "cpu":
            r.update(setting=label or None, flags=flags, model=model)
        f.write(json.dumps(r) + "\n")
PY
}

echo "{\"engine\":\"cpu\",\"cpu\":$(cpu_report)}" > "$OUT"
# shellcheck disable=SC2086
start_server "$WORK/open-server.log" --model "$MODEL" --max-concurrent-requests 1024 ${SERVER_FLAGS:-}
URL="http://127.0.0.1:$PORT"
$LOADGEN "$URL" closed 4 8 "$PROMPT" "$NEW_TOKENS" >/dev/null
single=$($LOADGEN "$URL" closed 1 "${SINGLE_REQUESTS:-20}" "$PROMPT" "$NEW_TOKENS")
sat=$($LOADGEN "$URL" closed 32 "${SATURATION_REQUESTS:-192}" "$PROMPT" "$NEW_TOKENS")
row "{\"engine\":\"$NAME\",\"batch\":1,\"run\":$single}" "{\"engine\":\"$NAME\",\"batch\":32,\"run\":$sat}"
busy() { curl -s "$URL/metrics" | awk '{n = $1; sub(/\{.*/, "", n)} n == "t5serve_encoder_duration_seconds_sum" || n == "t5serve_decode_step_duration_seconds_sum" {s += $2} END {print s + 0}'; }
# The first three lines keep the format bench/charts.py's open_loop_log reads from printed output.
echo "model $MODEL; single: $single"
echo "saturation (closed loop, 32 clients): $sat"
echo "setting: ${LABEL:-(none)}; server flags: ${SERVER_FLAGS:-(none)}"
echo "| fraction | rate req/s | p50 ms | p99 ms | p50 / single | p99 / single | decode busy |"
for f in $FRACTIONS; do
  rate=$("$PY" -c "import json, sys; print(json.loads(sys.argv[1])['requests_per_s'] * $f)" "$sat")
  b0=$(busy)
  run=$($LOADGEN "$URL" open "$rate" "$REQUESTS" "$PROMPT" "$NEW_TOKENS" "${SEED:-11}")
  b1=$(busy)
  line=$("$PY" - "$f" "$single" "$run" "$b0" "$b1" "$NAME" <<'PY'
import json, sys
f, single, run = float(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
busy = (float(sys.argv[5]) - float(sys.argv[4])) / run["wall_s"]
s = single["p50_s"]
print(f"| {f:g} | {run['param']:.1f} | {run['p50_s'] * 1000:.0f} | {run['p99_s'] * 1000:.0f} | "
      f"{run['p50_s'] / s:.2f}x | {run['p99_s'] / s:.2f}x | {100 * busy:.0f}% |")
print(json.dumps({"engine": f"{sys.argv[6]}-open", "fraction": f, "rate": run["param"], "busy": busy, "run": run}))
PY
)
  echo "${line%%$'\n'*}"
  row "${line#*$'\n'}"
done
stop_server
"$PY" bench/open_loop_report.py "$OUT" --rows > "$OUT.within"
while IFS= read -r r; do row "$r"; done < "$OUT.within"
rm -f "$OUT.within"
echo
"$PY" bench/open_loop_report.py "$OUT" --brief
echo "JSON lines: $OUT"
