#!/usr/bin/env bash
# The Open Inference Protocol (KServe v2) against t5serve's own route, on one server and in one
# run (bench/oip_bench.py does the work; issue 22: tokens/s through v2 REST and gRPC within 5% of
# /v1/generate at 1 and 32 clients):
#  1. one server, `t5serve serve --model MODEL --grpc-port GRPC_PORT --max-concurrent-requests 1024`;
#  2. the same workload through three routes: POST /v1/generate (JSON, bench/openai_bench.py's
#     client), POST /v2/models/ID/infer with Triton's tritonclient.http (binary tensors, its
#     default) and ModelInfer over gRPC with tritonclient.grpc, one client object per client
#     thread; ID is the model directory's name. Workload: bench/openai_bench.py's 64-token prompt,
#     greedy, exactly 32 new tokens (max_new_tokens = min_new_tokens = 32), one text per request;
#  3. each route at 1 and at 32 closed-loop clients, in timed windows of DURATION s, ROUNDS rounds
#     with the three routes' order rotating by round so that the machine's drift hits all three;
#     tokens/s (requests answered in the window x 32 / the window), p50/p99 latency, errors, and
#     the ratios v2 REST / v1 and gRPC / v1 per round and their median (target: within 5%);
#  4. the answers: v1's usage.generated_tokens against 32, and every route's text against v1's
#     answer to the prompt sent alone (greedy), mismatches counted;
#  5. the CPU (flags, cores, t5serve's int8 kernel) and the commit, with the figures, in
#     bench/results/DATE-oip-MODEL.md and .jsonl.
#   bench/oip.sh                     full run (about 5 minutes on 2 cores, after the build)
#   QUICK=1 bench/oip.sh             smoke run (about a minute): 2 short rounds; writes to
#                                    bench/work/results/ unless RESULTS_DIR says otherwise
# Environment: MODEL (model directory, default models/t5-small-shape-int8), PORT (default 18970),
# GRPC_PORT (default PORT + 1), SERVER_FLAGS (extra `t5serve serve` flags), SKIP_BUILD=1 (use
# target/release/t5serve as it is), RESULTS_DIR, and the sizes ROUNDS (default 5), DURATION
# (seconds per timed window, default 8), WARMUP (seconds of warm-up traffic per route, default 2);
# GRPC_OWN_CONNECTIONS=1 gives each gRPC client a connection of its own (by default Triton's
# clients, built with the same channel options, share one through gRPC's global subchannel pool).
# Pythons: .venv (transformers, for the prompt; bench/run.sh makes it) and .venv-test
# (tritonclient[http,grpc], tests/python/requirements.txt; scripts/test.sh makes it) for the
# clients. Not a test: no assertions on figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/t5-small-shape-int8}"
MODEL="${MODEL%/}"
PORT="${PORT:-18970}"
GRPC_PORT="${GRPC_PORT:-$((PORT + 1))}"
WORK=bench/work
PY=.venv/bin/python
TPY=.venv-test/bin/python
# shellcheck source=bench/serve.sh
. bench/serve.sh

if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-2}" DURATION="${DURATION:-2}" WARMUP="${WARMUP:-1}"
  RESULTS_DIR="${RESULTS_DIR:-$WORK/results}"
else
  export ROUNDS="${ROUNDS:-5}" DURATION="${DURATION:-8}" WARMUP="${WARMUP:-2}"
  RESULTS_DIR="${RESULTS_DIR:-bench/results}"
fi
export NEW_TOKENS=32
mkdir -p "$WORK/oip" "$RESULTS_DIR"

"$TPY" -c 'import tritonclient.grpc, tritonclient.http' 2>/dev/null || {
  echo "no tritonclient[http,grpc] in $TPY: create it as scripts/test.sh does (tests/python/requirements.txt)" >&2
  exit 1
}
prepare_bench "$MODEL" "$PY"

# Whatever the exit (an error, an interrupt, a kill): stop the client and the server running.
# start_server sets its own EXIT trap; this one is put back after it.
CLIENT=
SERVER=
cleanup() {
  [ -z "$CLIENT" ] || kill "$CLIENT" 2>/dev/null || true
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-oip-$(basename "$MODEL")"
OUT="$WORK/oip-results.jsonl"
LOG="$WORK/oip-server.log"
# shellcheck disable=SC2206
SERVE=(--model "$MODEL" --grpc-port "$GRPC_PORT" --max-concurrent-requests 1024 ${SERVER_FLAGS:-})
FLAGS=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')
CPU=$(cpu_report)
echo "CPU: $CPU"
echo "CPU flags: $FLAGS"
COMMAND="$(env | grep -E '^(QUICK|MODEL|SERVER_FLAGS|ROUNDS|DURATION|WARMUP|GRPC_OWN_CONNECTIONS)=' | sort | tr '\n' ' ')bench/oip.sh"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
"$PY" - "$OUT" "$MODEL" "$CPU" "$FLAGS" "$COMMIT" "$DIRTY" "${SERVER_FLAGS:-}" "$COMMAND" "${QUICK:-}" \
  "t5serve serve ${SERVE[*]}" <<'PY'
import datetime, json, os, platform, sys
import onnxruntime
out, model, cpu, flags, commit, dirty, server_flags, command, quick, serve = sys.argv[1:]
meta = {"kind": "meta", "model": model, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(), "cpu": json.loads(cpu), "cpu_flags": flags.split(), "git_commit": commit,
        "git_dirty": dirty == "true", "server_flags": server_flags, "command": command, "quick": bool(quick),
        "onnxruntime": onnxruntime.__version__, "serve": serve.strip(), "rounds": int(os.environ["ROUNDS"]),
        "duration_s": float(os.environ["DURATION"]), "warmup_s": float(os.environ["WARMUP"]),
        "new_tokens": int(os.environ["NEW_TOKENS"])}
open(out, "w").write(json.dumps(meta) + "\n")
PY
"$PY" bench/oip_bench.py inputs "$MODEL" "$WORK/oip"

start_server "$LOG" "${SERVE[@]}"
trap cleanup EXIT
echo "the server: pid $SERVER, HTTP on $PORT, gRPC on $GRPC_PORT"
# The client in the background and waited for, so that an interrupt runs the traps at once.
"$TPY" bench/oip_bench.py run "http://127.0.0.1:$PORT" "127.0.0.1:$GRPC_PORT" "$WORK/oip" "$OUT" "$SERVER" &
CLIENT=$!
wait "$CLIENT"
CLIENT=
stop_server
SERVER=
trap cleanup EXIT
"$TPY" bench/oip_bench.py log "$OUT" "oip" "$LOG" >/dev/null

"$TPY" bench/oip_bench.py report "$OUT" | tee "$NAME.md"
cp "$OUT" "$NAME.jsonl"
echo "wrote $NAME.md and $NAME.jsonl"
