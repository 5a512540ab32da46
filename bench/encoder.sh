#!/usr/bin/env bash
# The encoder-only routes and the encoder cache, in one run (bench/encoder_bench.py does the work;
# issue 23: /embed and /rerank at batch 32 through HTTP at least 0.8 of an in-process ceiling, and
# the encoder cache on a labelling run):
#  1. one server, `t5serve serve --model MODEL --max-concurrent-requests 1024 --encoder-cache-mb 0`:
#     POST /embed (TEI: {"inputs": [...]}) and POST /rerank (TEI: {"query", "texts": [...]}) at 1
#     and at 32 closed-loop clients with one item per request, and one client with 32 items per
#     request; items/s; every item a text not sent before (number words in four languages,
#     10-60 tokens, fixed seed), so nothing repeats between requests;
#  2. the ceiling, in the same rounds (order alternating with the HTTP step): onnxruntime in
#     Python over the same model directory's encoder_model.onnx (and decoder_model.onnx's first
#     step for rerank, logits[:,0,true]-logits[:,0,false]) in padded batches of 32 of the round's
#     32-client texts, pooling + L2 normalization in numpy, CEILING_THREADS intra-op threads (one
#     per core by default, as the server), tokenization inside the clock (and, beside it, without,
#     and as two sessions side by side); ratio server items/s / ceiling items/s per case and round,
#     the median over the rounds (target: at least 0.8 for 32 clients and 32 items per request),
#     and the server's answers against the Python reference;
#  3. a labelling run: POST /v1/classify over the same CLASSIFY_INPUTS (1,000) inputs under three
#     label sets in turn (the model's classify labels, else English/German/French/Spanish;
#     true/false; the four language names in German), template "language: {text}", requests of 32
#     inputs from 4 clients, timed end to end per label set, on a fresh server with
#     --encoder-cache-mb 0 ("off") and one with --encoder-cache-mb 512 ("on"), LABEL_ROUNDS rounds
#     (order alternating); seconds and inputs/s per set, the cache's speed-up for sets 2 and 3,
#     t5serve_encoder_cache_{hits,misses}_total, _bytes, _evictions_total from /metrics (summed over
#     labels; "absent" when the server has none), and the cached run's answers (labels and scores)
#     against the uncached run's, mismatches counted;
#  4. the CPU (flags, cores, t5serve's int8 kernel), the servers' thread layout (their logs) and
#     the commit, with the figures, in bench/results/DATE-encoder-MODEL.md and .jsonl.
#   bench/encoder.sh                 full run (about 6-8 minutes on 2 cores with t5-numbers, after the build)
#   QUICK=1 bench/encoder.sh         smoke run (1-2 minutes): 1 round, small sizes; writes to
#                                    bench/work/results/ unless RESULTS_DIR says otherwise
# Environment: MODEL (model directory, default models/t5-numbers; models/t5-small-shape-int8 is
# built by prepare_bench when absent, as bench/oip.sh does), PORT (default 18990), BIN (the t5serve
# binary, default target/release/t5serve; another path implies SKIP_BUILD=1), SKIP_BUILD=1 (use
# the binary as it is), SERVER_FLAGS (extra `t5serve serve` flags for every server),
# CACHE_OFF_FLAGS (default "--encoder-cache-mb 0": part 1 and the "off" labelling servers) and
# CACHE_ON_FLAGS (default "--encoder-cache-mb 512": the cache must hold the run's inputs, about
# 340 KB each on t5-numbers, mostly the first step's 32,128 logits and the cross-attention K/V; at
# 256 MB the 1,000 inputs cycle through a smaller LRU and every lookup misses): set both empty to run against a binary
# without the flag (a smoke run of the script only; the report says so), RESULTS_DIR, and the
# sizes ROUNDS (default 3), ITEMS_1 (items of a 1-client run, default 200), ITEMS_32 (items of a
# 32-client and of a 32-per-request run, default 1024), WARMUP_ITEMS, CEILING_SECONDS (default 3),
# CEILING_THREADS (default: one per core), RERANK_QUERY (default "language"), CLASSIFY_INPUTS
# (default 1000), CLASSIFY_BATCH (32), CLASSIFY_CLIENTS (4), CLASSIFY_TEMPLATE
# ("language: {text}"), LABEL_ROUNDS (default 2).
# Pythons: .venv (num2words, tokenizers: the inputs; bench/run.sh makes it) and .venv-test
# (onnxruntime, numpy, tokenizers: the clients and the ceiling; scripts/test.sh makes it); PY and
# TPY override them. Not a test: no assertions on figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/t5-numbers}"
MODEL="${MODEL%/}"
PORT="${PORT:-18990}"
WORK=bench/work
EWORK="$WORK/encoder"
PY="${PY:-.venv/bin/python}"
TPY="${TPY:-.venv-test/bin/python}"
BIN="${BIN:-target/release/t5serve}"
[ "$BIN" = target/release/t5serve ] || SKIP_BUILD=1
CACHE_OFF_FLAGS="${CACHE_OFF_FLAGS---encoder-cache-mb 0}"
CACHE_ON_FLAGS="${CACHE_ON_FLAGS---encoder-cache-mb 512}"
# shellcheck source=bench/serve.sh
. bench/serve.sh

# start_server and cpu_report (bench/serve.sh) run $BIN; start_server sets its own EXIT trap,
# and the one below is put back after it.

if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-1}" ITEMS_1="${ITEMS_1:-32}" ITEMS_32="${ITEMS_32:-128}" WARMUP_ITEMS="${WARMUP_ITEMS:-32}" \
    CEILING_SECONDS="${CEILING_SECONDS:-0.5}" CLASSIFY_INPUTS="${CLASSIFY_INPUTS:-256}" LABEL_ROUNDS="${LABEL_ROUNDS:-1}"
  RESULTS_DIR="${RESULTS_DIR:-$WORK/results}"
else
  export ROUNDS="${ROUNDS:-3}" ITEMS_1="${ITEMS_1:-200}" ITEMS_32="${ITEMS_32:-1024}" WARMUP_ITEMS="${WARMUP_ITEMS:-64}" \
    CEILING_SECONDS="${CEILING_SECONDS:-3}" CLASSIFY_INPUTS="${CLASSIFY_INPUTS:-1000}" LABEL_ROUNDS="${LABEL_ROUNDS:-2}"
  RESULTS_DIR="${RESULTS_DIR:-bench/results}"
fi
export CEILING_THREADS="${CEILING_THREADS:-$(nproc)}" RERANK_QUERY="${RERANK_QUERY:-language}" \
  CLASSIFY_BATCH="${CLASSIFY_BATCH:-32}" CLASSIFY_CLIENTS="${CLASSIFY_CLIENTS:-4}" \
  CLASSIFY_TEMPLATE="${CLASSIFY_TEMPLATE:-language: {text\}}"
mkdir -p "$EWORK" "$RESULTS_DIR"

"$PY" -c 'import num2words, tokenizers' 2>/dev/null || {
  echo "no num2words and tokenizers in $PY: create it as bench/run.sh does (scripts/requirements.txt), or set PY" >&2
  exit 1
}
"$TPY" -c 'import onnxruntime, numpy, tokenizers' 2>/dev/null || {
  echo "no onnxruntime, numpy and tokenizers in $TPY: create it as scripts/test.sh does (tests/python/requirements.txt), or set TPY" >&2
  exit 1
}
prepare_bench "$MODEL" "$PY"
[ -x "$BIN" ] || { echo "no $BIN: build it (cargo build --release) or set BIN" >&2; exit 1; }
# The cache flag must be one the binary has: fail here, clearly, rather than on a server that
# does not start.
CACHE_FLAG_PASSED=false
case "$CACHE_OFF_FLAGS $CACHE_ON_FLAGS" in
  *--encoder-cache-mb*)
    CACHE_FLAG_PASSED=true
    "$BIN" serve --help 2>/dev/null | grep -q -- '--encoder-cache-mb' || {
      echo "$BIN has no --encoder-cache-mb flag (issue 23's encoder cache): build a binary that has it; or, for a smoke" >&2
      echo "run of this script only, set CACHE_OFF_FLAGS= CACHE_ON_FLAGS= (the report then says the flag was not passed)" >&2
      exit 1
    } ;;
  *) echo "warning: CACHE_OFF_FLAGS and CACHE_ON_FLAGS pass no --encoder-cache-mb: the servers run with their default cache" >&2 ;;
esac

# Whatever the exit (an error, an interrupt, a kill): stop the client and the server running.
CLIENT=
SERVER=
cleanup() {
  [ -z "$CLIENT" ] || kill "$CLIENT" 2>/dev/null || true
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# client CMD ARGS...: bench/encoder_bench.py in the background, waited for, so that an interrupt
# runs the traps at once.
client() {
  "$TPY" bench/encoder_bench.py "$@" &
  CLIENT=$!
  wait "$CLIENT"
  CLIENT=
}
stop() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-encoder-$(basename "$MODEL")"
OUT="$WORK/encoder-results.jsonl"
# shellcheck disable=SC2206
BASE=(--model "$MODEL" --max-concurrent-requests 1024 ${SERVER_FLAGS:-})
# shellcheck disable=SC2206
SERVE_OFF=("${BASE[@]}" $CACHE_OFF_FLAGS)
# shellcheck disable=SC2206
SERVE_ON=("${BASE[@]}" $CACHE_ON_FLAGS)
FLAGS=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')
CPU=$(cpu_report)
echo "CPU: $CPU"
echo "CPU flags: $FLAGS"
COMMAND="$(env | grep -E '^(QUICK|MODEL|BIN|SERVER_FLAGS|CACHE_OFF_FLAGS|CACHE_ON_FLAGS|ROUNDS|ITEMS_1|ITEMS_32|WARMUP_ITEMS|CEILING_SECONDS|CEILING_THREADS|RERANK_QUERY|CLASSIFY_INPUTS|CLASSIFY_BATCH|CLASSIFY_CLIENTS|LABEL_ROUNDS)=' | sort | tr '\n' ' ')bench/encoder.sh"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
"$TPY" - "$OUT" "$MODEL" "$CPU" "$FLAGS" "$COMMIT" "$DIRTY" "${SERVER_FLAGS:-}" "$COMMAND" "${QUICK:-}" \
  "t5serve serve ${SERVE_OFF[*]}" "t5serve serve ${SERVE_ON[*]}" "$BIN" "$CACHE_FLAG_PASSED" "$TPY" <<'PY'
import datetime, json, platform, sys
import onnxruntime
(out, model, cpu, flags, commit, dirty, server_flags, command, quick, serve_off, serve_on, binary, passed,
 tpy) = sys.argv[1:]
meta = {"kind": "meta", "model": model, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(), "cpu": json.loads(cpu), "cpu_flags": flags.split(), "git_commit": commit,
        "git_dirty": dirty == "true", "server_flags": server_flags, "command": command, "quick": bool(quick),
        "onnxruntime": onnxruntime.__version__, "serve_off": serve_off.strip(), "serve_on": serve_on.strip(),
        "bin": binary, "cache_flag_passed": passed == "true",
        "ceiling_python": f"{tpy}, Python {platform.python_version()}"}
open(out, "w").write(json.dumps(meta) + "\n")
PY
rm -f "$EWORK"/answers-*.json
"$PY" bench/encoder_bench.py inputs "$MODEL" "$EWORK"

# Part 1 (and 2): /embed and /rerank against the ceiling, on a server without the cache.
start_server "$WORK/encoder-server-routes.log" "${SERVE_OFF[@]}"
trap cleanup EXIT
echo "the server: pid $SERVER, $BIN serve --port $PORT ${SERVE_OFF[*]}"
client run "http://127.0.0.1:$PORT" "$MODEL" "$EWORK" "$OUT" "$SERVER"
stop
"$TPY" bench/encoder_bench.py layout "$OUT" "routes (cache off)" "$WORK/encoder-server-routes.log" >/dev/null
"$TPY" bench/encoder_bench.py log "$OUT" "routes (cache off)" "$WORK/encoder-server-routes.log" >/dev/null

# Part 3: the labelling run, a fresh server for each, off and on alternating in order by round.
for r in $(seq 1 "$LABEL_ROUNDS"); do
  order="off on"
  [ $((r % 2)) -eq 1 ] || order="on off"
  for tag in $order; do
    log="$WORK/encoder-server-classify-$tag-$r.log"
    if [ "$tag" = off ]; then start_server "$log" "${SERVE_OFF[@]}"; else start_server "$log" "${SERVE_ON[@]}"; fi
    trap cleanup EXIT
    echo "labelling run, cache $tag, round $r: pid $SERVER"
    client classify "http://127.0.0.1:$PORT" "$EWORK" "$OUT" "$tag" "$r" "$SERVER"
    stop
    [ "$r" -gt 1 ] || "$TPY" bench/encoder_bench.py layout "$OUT" "classify (cache $tag)" "$log" >/dev/null
    "$TPY" bench/encoder_bench.py log "$OUT" "classify (cache $tag, round $r)" "$log" >/dev/null
  done
done
"$TPY" bench/encoder_bench.py compare "$EWORK" "$OUT"

"$TPY" bench/encoder_bench.py report "$OUT" | tee "$NAME.md"
cp "$OUT" "$NAME.jsonl"
echo "wrote $NAME.md and $NAME.jsonl"
