#!/usr/bin/env bash
# Throughput/latency benchmark: t5serve over HTTP, on the fp32 export and its int8 copy, against
# optimum ORT (fp32 and int8 graphs) and CTranslate2 (float32 and int8) on the same t5-small-shaped
# model (random weights), 64-token inputs, exactly 32 new tokens per request, greedy.
#   bench/run.sh            (needs Python tooling: it creates .venv from scripts/requirements.txt)
# Environment: SHAPE (t5-small | t5-base), SERVER_FLAGS (extra `t5serve serve` flags, e.g.
# "--ort-thread-pool per-session"), SKIP_ENGINES=1 (t5serve only, to compare its own settings),
# OPEN_REQUESTS (requests of each open-loop run, default 200), PAIRED_ROUNDS (rounds of the paired
# int8 comparison below, default 5; 0 skips it).
# Prints figures and a ratio table, and writes them to bench/results/ with SVG charts beside them
# (NAME-tokens.svg, NAME-open-loop.svg; bench/charts.py). Not a test: no assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE="${SHAPE:-t5-small}"
MODEL="models/${SHAPE}-shape"
NEW_TOKENS=32
PORT="${PORT:-18931}"
WORK=bench/work
# shellcheck source=bench/serve.sh
. bench/serve.sh
mkdir -p "$WORK" bench/results

scripts/setup_ort.sh >/dev/null
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -r scripts/requirements.txt -r bench/requirements.txt
if [ ! -f "$MODEL/encoder_model.onnx" ] || [ ! -d "$MODEL-hf" ]; then
  .venv/bin/python scripts/make_test_models.py --shape "$SHAPE"
fi
if [ ! -f "$MODEL-int8/quantization.json" ]; then
  .venv/bin/python scripts/quantize_model.py "$MODEL" "$MODEL-int8"
fi
# A 64-token input (63 pieces + EOS) with the model's own tokenizer.
.venv/bin/python - "$MODEL" "$WORK/prompt.txt" <<'PY'
import sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
words = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
         "boxing matches near the old harbour and count every ship that passes ").split() * 8
text = ""
for w in words:
    cand = (text + " " + w).strip()
    if len(tok(cand)["input_ids"]) > 64:
        break
    text = cand
assert len(tok(text)["input_ids"]) == 64, len(tok(text)["input_ids"])
open(sys.argv[2], "w").write(text)
PY
build

RESULTS="$WORK/results.jsonl"
echo "{\"engine\":\"cpu\",\"cpu\":$(cpu_report)}" > "$RESULTS"

# serve LOG DIR: starts t5serve on the model in DIR (with SERVER_FLAGS) and warms it up.
serve() {
  # shellcheck disable=SC2086
  start_server "$1" --model "$2" --max-concurrent-requests 1024 ${SERVER_FLAGS:-}
  URL="http://127.0.0.1:$PORT"
  $LOADGEN "$URL" closed 4 8 "$WORK/prompt.txt" "$NEW_TOKENS" >/dev/null
}

# closed FIELDS C: a closed-loop run at concurrency C (at least ~20 requests' worth of work),
# appended to the results as {FIELDS,"batch":C,"run":{...}}.
closed() {
  local n=$(( $2 == 1 ? 20 : $2 * 6 ))
  $LOADGEN "$URL" closed "$2" "$n" "$WORK/prompt.txt" "$NEW_TOKENS" \
    | sed "s/^/{$1,\"batch\":$2,\"run\":/; s/$/}/" | tee -a "$RESULTS"
}

# t5serve on the fp32 export and on its int8 copy (scripts/quantize_model.py), each through HTTP.
for variant in fp32 int8; do
  dir="$MODEL"
  [ "$variant" = int8 ] && dir="$MODEL-int8"
  serve "$WORK/server-$variant.log" "$dir"
  for c in 1 8 32; do
    closed "\"engine\":\"t5serve-$variant\"" "$c"
  done
  # Open loop: Poisson arrivals at half the saturation rate measured at concurrency 32.
  SAT=$(tail -1 "$RESULTS" | .venv/bin/python -c 'import json,sys; print(json.loads(sys.stdin.read())["run"]["requests_per_s"])')
  RATE=$(.venv/bin/python -c "print($SAT / 2)")
  $LOADGEN "$URL" open "$RATE" "${OPEN_REQUESTS:-200}" "$WORK/prompt.txt" "$NEW_TOKENS" 7 \
    | sed "s/^/{\"engine\":\"t5serve-$variant-open\",\"batch\":0,\"run\":/; s/$/}/" | tee -a "$RESULTS"
  stop_server
done

NAME="bench/results/$(date +%Y-%m-%d-%H%M)-${SHAPE}-$(hostname -s)"
if [ -z "${SKIP_ENGINES:-}" ]; then
  .venv/bin/python bench/engines.py "$MODEL" "$MODEL-int8" "$MODEL-hf" "$WORK/prompt.txt" "$NEW_TOKENS" | tee -a "$RESULTS"
else
  NAME="$NAME-t5serve-only"
fi
# Paired rounds for the int8 targets: this machine's speed drifts by 20-30% within minutes, so each
# round runs t5serve-int8 and CTranslate2 int8 back to back, and the report takes the median of the
# rounds' ratios.
ROUNDS="${PAIRED_ROUNDS:-5}"
if [ -z "${SKIP_ENGINES:-}" ] && [ "$ROUNDS" -gt 0 ]; then
  serve "$WORK/server-paired.log" "$MODEL-int8"
  for r in $(seq 1 "$ROUNDS"); do
    for c in 1 32; do
      closed "\"engine\":\"paired-t5serve-int8\",\"round\":$r" "$c"
      .venv/bin/python bench/engines.py "$MODEL" "$MODEL-int8" "$MODEL-hf" "$WORK/prompt.txt" "$NEW_TOKENS" ctranslate2-int8 "$c" \
        | sed "s/\"engine\": \"ctranslate2-int8\"/\"engine\": \"paired-ctranslate2-int8\", \"round\": $r/" | tee -a "$RESULTS"
    done
  done
  stop_server
fi
.venv/bin/python bench/report.py "$RESULTS" "$SHAPE" "${SERVER_FLAGS:-}" --charts "$NAME" | tee "$NAME.md"
cp "$RESULTS" "$NAME.jsonl"
