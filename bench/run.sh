#!/usr/bin/env bash
# Throughput/latency benchmark: t5serve over HTTP against optimum ORT and CTranslate2 on the same
# t5-small-shaped model (random weights), 64-token inputs, exactly 32 new tokens per request.
#   bench/run.sh            (needs Python tooling: it creates .venv from scripts/requirements.txt)
# Environment: SHAPE (t5-small | t5-base), SERVER_FLAGS (extra `t5serve serve` flags, e.g.
# "--intra-op-spinning true"), SKIP_ENGINES=1 (t5serve only, to compare its own settings).
# Prints figures and a ratio table, and writes them to bench/results/. Not a test: no assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE="${SHAPE:-t5-small}"
MODEL="models/${SHAPE}-shape"
NEW_TOKENS=32
PORT="${PORT:-18931}"
WORK=bench/work
mkdir -p "$WORK" bench/results

scripts/setup_ort.sh >/dev/null
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -r scripts/requirements.txt -r bench/requirements.txt
if [ ! -f "$MODEL/encoder_model.onnx" ] || [ ! -d "$MODEL-hf" ]; then
  .venv/bin/python scripts/make_test_models.py --shape "$SHAPE"
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
cargo build --release --quiet --bin t5serve --example loadgen
LOADGEN=target/release/examples/loadgen

# shellcheck disable=SC2086
target/release/t5serve serve --model "$MODEL" --port "$PORT" --max-concurrent-requests 1024 ${SERVER_FLAGS:-} \
  > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fs "localhost:$PORT/health" >/dev/null && break; sleep 0.5; done
URL="http://127.0.0.1:$PORT"

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
for c in 1 8 32; do
  n=$(( c == 1 ? 10 : c * 4 ))
  $LOADGEN "$URL" closed "$c" "$n" "$WORK/prompt.txt" "$NEW_TOKENS" | sed "s/^/{\"engine\":\"t5serve\",\"batch\":$c,\"run\":/; s/$/}/" | tee -a "$RESULTS"
done
# Open loop: Poisson arrivals at half the saturation rate measured at concurrency 32.
SAT=$(tail -1 "$RESULTS" | .venv/bin/python -c 'import json,sys; print(json.loads(sys.stdin.read())["run"]["requests_per_s"])')
RATE=$(.venv/bin/python -c "print($SAT / 2)")
$LOADGEN "$URL" open "$RATE" 120 "$WORK/prompt.txt" "$NEW_TOKENS" 7 | sed 's/^/{"engine":"t5serve-open","batch":0,"run":/; s/$/}/' | tee -a "$RESULTS"
kill $SERVER; wait $SERVER 2>/dev/null || true; trap - EXIT

if [ -z "${SKIP_ENGINES:-}" ]; then
  .venv/bin/python bench/engines.py "$MODEL" "$MODEL-hf" "$WORK/prompt.txt" "$NEW_TOKENS" | tee -a "$RESULTS"
  .venv/bin/python bench/report.py "$RESULTS" "$SHAPE" "${SERVER_FLAGS:-}" | tee "bench/results/$(date +%Y-%m-%d)-${SHAPE}-$(hostname -s).md"
else
  .venv/bin/python bench/report.py "$RESULTS" "$SHAPE" "${SERVER_FLAGS:-}"
fi
