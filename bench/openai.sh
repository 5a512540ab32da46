#!/usr/bin/env bash
# The OpenAI-compatible routes, on one server and in one run (bench/openai_bench.py does the work):
#  1. POST /v1/completions against POST /v1/generate: the same 64-token prompt (bench/run.sh's),
#     greedy, 32 new tokens, at 1 and 32 closed-loop clients, ROUNDS rounds with the two routes
#     back to back (order alternating) so that the machine's drift hits both; generated tokens/s
#     and the median ratio completions/generate (target: within 5%). /v1/completions has no
#     minimum length: every answer is checked for finish_reason "length" and 32 tokens, and the
#     report counts them.
#  2. POST /v1/embeddings, one input per request (texts of 8-64 tokens), at 1 and 32 clients,
#     against an in-process ceiling (onnxruntime in Python on the same encoder_model.onnx, batch 32,
#     mean pooling and normalization in numpy), interleaved by round; inputs/s and the ratio
#     HTTP/ceiling (target: at least 0.8), and the server's embeddings against the reference.
#  3. The CPU (flags, cores, t5serve's int8 kernel) and the commit, with the figures, in
#     bench/results/DATE-openai-MODEL.md and .jsonl.
#   bench/openai.sh                  full run (4-7 minutes on 2 cores, after the build)
#   QUICK=1 bench/openai.sh          smoke run (about a minute): few requests, 2 rounds; writes to
#                                    bench/work/results/ unless RESULTS_DIR says otherwise
# Environment: MODEL (model directory, default models/t5-small-shape-int8), PORT (default 18950),
# SERVER_FLAGS (extra `t5serve serve` flags), SKIP_BUILD=1 (use target/release/t5serve as it is),
# RESULTS_DIR, and the sizes ROUNDS, GEN_REQUESTS_1, GEN_REQUESTS_32, EMB_REQUESTS_1,
# EMB_REQUESTS_32, CEILING_SECONDS (bench/openai_bench.py). Not a test: no assertions on figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/t5-small-shape-int8}"
MODEL="${MODEL%/}"
PORT="${PORT:-18950}"
WORK=bench/work
PY=.venv/bin/python
# shellcheck source=bench/serve.sh
. bench/serve.sh
# start_server's EXIT trap kills the server; make an interrupt run it too.
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-2}" GEN_REQUESTS_1="${GEN_REQUESTS_1:-4}" GEN_REQUESTS_32="${GEN_REQUESTS_32:-32}" \
    EMB_REQUESTS_1="${EMB_REQUESTS_1:-16}" EMB_REQUESTS_32="${EMB_REQUESTS_32:-64}" CEILING_SECONDS="${CEILING_SECONDS:-0.5}"
  RESULTS_DIR="${RESULTS_DIR:-$WORK/results}"
else
  export ROUNDS="${ROUNDS:-5}" GEN_REQUESTS_1="${GEN_REQUESTS_1:-40}" GEN_REQUESTS_32="${GEN_REQUESTS_32:-256}" \
    EMB_REQUESTS_1="${EMB_REQUESTS_1:-200}" EMB_REQUESTS_32="${EMB_REQUESTS_32:-800}" CEILING_SECONDS="${CEILING_SECONDS:-4}"
  RESULTS_DIR="${RESULTS_DIR:-bench/results}"
fi
export NEW_TOKENS=32
mkdir -p "$WORK" "$RESULTS_DIR"

prepare_bench "$MODEL" "$PY"

NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-openai-$(basename "$MODEL")"
OUT="$WORK/openai-results.jsonl"
FLAGS=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')
CPU=$(cpu_report)
echo "CPU: $CPU"
echo "CPU flags: $FLAGS"
COMMAND="$(env | grep -E '^(QUICK|MODEL|SERVER_FLAGS|ROUNDS|GEN_REQUESTS_1|GEN_REQUESTS_32|EMB_REQUESTS_1|EMB_REQUESTS_32|CEILING_SECONDS)=' | sort | tr '\n' ' ')bench/openai.sh"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
"$PY" - "$OUT" "$MODEL" "$CPU" "$FLAGS" "$COMMIT" "$DIRTY" "${SERVER_FLAGS:-}" "$COMMAND" "${QUICK:-}" <<'PY'
import datetime, json, platform, sys
import onnxruntime
out, model, cpu, flags, commit, dirty, server_flags, command, quick = sys.argv[1:]
meta = {"kind": "meta", "model": model, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(), "cpu": json.loads(cpu), "cpu_flags": flags.split(), "git_commit": commit,
        "git_dirty": dirty == "true", "server_flags": server_flags, "command": command, "quick": bool(quick),
        "onnxruntime": onnxruntime.__version__}
open(out, "w").write(json.dumps(meta) + "\n")
PY
"$PY" bench/openai_bench.py inputs "$MODEL" "$WORK"

# shellcheck disable=SC2086
start_server "$WORK/openai-server.log" --model "$MODEL" --max-concurrent-requests 1024 ${SERVER_FLAGS:-}
# The client in the background and waited for, so that an interrupt or kill runs the traps at
# once: the EXIT trap then stops the client (and its ONNX Runtime subprocess) and the server.
"$PY" bench/openai_bench.py run "http://127.0.0.1:$PORT" "$MODEL" "$WORK" "$OUT" "$SERVER" &
CLIENT=$!
trap 'kill "$CLIENT" "$SERVER" 2>/dev/null || true' EXIT
wait "$CLIENT"
stop_server
if grep -q -E ' ERROR |panicked' "$WORK/openai-server.log"; then
  echo "the server logged errors ($WORK/openai-server.log):" >&2
  grep -E ' ERROR |panicked' "$WORK/openai-server.log" | head -5 >&2
fi

"$PY" bench/openai_bench.py report "$OUT" | tee "$NAME.md"
cp "$OUT" "$NAME.jsonl"
echo "wrote $NAME.md and $NAME.jsonl"
