#!/usr/bin/env bash
# Several models in one process, in one run (bench/models_bench.py does the work): the same model
# directory served under two ids, a and b, and
#  1. model a at 32 closed-loop clients (generated tokens/s, p50/p99) on a server serving only a;
#  2. the same on a server serving a and b, b loaded and idle;
#  3. both busy: 32 clients on a and 32 on b in the same window (each model's tokens/s, the sum,
#     fairness = min/max of the two), and an asymmetric case: 32 clients on a and 1 on b, b's
#     latency against b alone at 1 client;
#  4. the server's resident memory (VmRSS) with both loaded and idle, after
#     POST /v1/models/b/unload and after POST /v1/models/b/load again (a server started with
#     --model a=DIR --model-repository REPO, REPO a temporary folder with a symlink b -> DIR),
#     over CYCLES unload/load cycles.
# Workload: bench/openai_bench.py's 64-token prompt, greedy, exactly 32 new tokens (POST
# /v1/generate with min_new_tokens = max_new_tokens = 32). Cases 1-3 run in ROUNDS rounds, each
# round starting the one-model and the two-model server afresh (their order alternating by round,
# the two-model cases in reverse order in even rounds); every run is a timed window of DURATION s.
# The CPU (flags, cores, t5serve's int8 kernel) and the commit go with the figures, in
# bench/results/DATE-models-MODEL.md and .jsonl.
#   bench/models.sh                  full run (about 6 minutes on 2 cores, after the build)
#   QUICK=1 bench/models.sh          smoke run (about a minute and a half): 2 short rounds, 1 cycle;
#                                    writes to bench/work/results/ unless RESULTS_DIR says otherwise
# Environment: MODEL (model directory, default models/t5-small-shape-int8), PORT (default 18960),
# SERVER_FLAGS (extra `t5serve serve` flags, for every server), SKIP_BUILD=1 (use
# target/release/t5serve as it is), RESULTS_DIR, and the sizes ROUNDS (default 5), DURATION
# (seconds per timed run, default 8), WARMUP (seconds of traffic per model after a start, default
# 2), CYCLES (unload/load cycles, default 3). Not a test: no assertions on figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/t5-small-shape-int8}"
MODEL="${MODEL%/}"
PORT="${PORT:-18960}"
WORK=bench/work
PY=.venv/bin/python
# shellcheck source=bench/serve.sh
. bench/serve.sh

if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-2}" DURATION="${DURATION:-2}" WARMUP="${WARMUP:-1}" CYCLES="${CYCLES:-1}"
  RESULTS_DIR="${RESULTS_DIR:-$WORK/results}"
else
  export ROUNDS="${ROUNDS:-5}" DURATION="${DURATION:-8}" WARMUP="${WARMUP:-2}" CYCLES="${CYCLES:-3}"
  RESULTS_DIR="${RESULTS_DIR:-bench/results}"
fi
export NEW_TOKENS=32
mkdir -p "$WORK/models" "$RESULTS_DIR"

prepare_bench "$MODEL" "$PY"

# Whatever the exit (an error, an interrupt, a kill): stop the client and the server running,
# and remove the temporary model repository. start_server sets its own EXIT trap; serve_start
# puts this one back.
CLIENT=
SERVER=
REPO=
cleanup() {
  [ -z "$CLIENT" ] || kill "$CLIENT" 2>/dev/null || true
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
  [ -z "$REPO" ] || rm -rf "$REPO"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
serve_start() {
  start_server "$@"
  trap cleanup EXIT
}
serve_stop() {
  stop_server
  SERVER=
  trap cleanup EXIT
}
# The Python client in the background and waited for, so that an interrupt runs the traps at once.
client() {
  "$PY" bench/models_bench.py "$@" &
  CLIENT=$!
  wait "$CLIENT"
  CLIENT=
}

NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-models-$(basename "$MODEL")"
OUT="$WORK/models-results.jsonl"
URL="http://127.0.0.1:$PORT"
SERVE_COMMON=(--max-concurrent-requests 1024)
# shellcheck disable=SC2206
EXTRA=(${SERVER_FLAGS:-})
ONE=(--model "a=$MODEL")
TWO=(--model "a=$MODEL" --model "b=$MODEL")
FLAGS=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')
CPU=$(cpu_report)
echo "CPU: $CPU"
echo "CPU flags: $FLAGS"
COMMAND="$(env | grep -E '^(QUICK|MODEL|SERVER_FLAGS|ROUNDS|DURATION|WARMUP|CYCLES)=' | sort | tr '\n' ' ')bench/models.sh"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
"$PY" - "$OUT" "$MODEL" "$CPU" "$FLAGS" "$COMMIT" "$DIRTY" "${SERVER_FLAGS:-}" "$COMMAND" "${QUICK:-}" \
  "t5serve serve ${ONE[*]} ${SERVE_COMMON[*]} ${EXTRA[*]}" "t5serve serve ${TWO[*]} ${SERVE_COMMON[*]} ${EXTRA[*]}" \
  "t5serve serve --model a=$MODEL --model-repository REPO ${SERVE_COMMON[*]} ${EXTRA[*]}" <<'PY'
import datetime, json, os, platform, sys
import onnxruntime
out, model, cpu, flags, commit, dirty, server_flags, command, quick, one, two, mem = sys.argv[1:]
meta = {"kind": "meta", "model": model, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(), "cpu": json.loads(cpu), "cpu_flags": flags.split(), "git_commit": commit,
        "git_dirty": dirty == "true", "server_flags": server_flags, "command": command, "quick": bool(quick),
        "onnxruntime": onnxruntime.__version__, "serve_one": one.strip(), "serve_two": two.strip(),
        "serve_memory": mem.strip(), "rounds": int(os.environ["ROUNDS"]), "duration_s": float(os.environ["DURATION"]),
        "warmup_s": float(os.environ["WARMUP"]), "cycles": int(os.environ["CYCLES"]),
        "new_tokens": int(os.environ["NEW_TOKENS"])}
open(out, "w").write(json.dumps(meta) + "\n")
PY
"$PY" bench/models_bench.py inputs "$MODEL" "$WORK/models"

# 1-3: the rounds.
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="one two"; else order="two one"; fi
  for kind in $order; do
    log="$WORK/models-server-$kind-$r.log"
    if [ "$kind" = one ]; then
      serve_start "$log" "${ONE[@]}" "${SERVE_COMMON[@]}" "${EXTRA[@]}"
    else
      serve_start "$log" "${TWO[@]}" "${SERVE_COMMON[@]}" "${EXTRA[@]}"
    fi
    echo "round $r/$ROUNDS: the server with $kind model(s), pid $SERVER"
    client run "$URL" "$WORK/models" "$OUT" "$SERVER" "$r" "$kind"
    serve_stop
    "$PY" bench/models_bench.py log "$OUT" "round $r, $kind" "$log" >/dev/null
  done
done

# 4: memory through unload and load.
REPO=$(mktemp -d "${TMPDIR:-/tmp}/t5serve-models-repo.XXXXXX")
ln -s "$(realpath "$MODEL")" "$REPO/b"
log="$WORK/models-server-memory.log"
serve_start "$log" --model "a=$MODEL" --model-repository "$REPO" "${SERVE_COMMON[@]}" "${EXTRA[@]}"
echo "memory: the server with a and the repository $REPO, pid $SERVER"
client memory "$URL" "$WORK/models" "$OUT" "$SERVER"
serve_stop
"$PY" bench/models_bench.py log "$OUT" "memory" "$log" >/dev/null

"$PY" bench/models_bench.py report "$OUT" | tee "$NAME.md"
cp "$OUT" "$NAME.jsonl"
echo "wrote $NAME.md and $NAME.jsonl"
