#!/usr/bin/env bash
# `t5serve batch` against the server, and its resident memory on a long file (bench/batch_bench.py
# does the work; issue 25: rows/s and tokens/s of batch on the t5-small-shaped model, fp32 and
# int8, beside the server at 32 clients in the same run, at least as fast since no HTTP is
# involved; resident memory on a 100,000-line file stays flat):
#  1. one file of ROWS generate requests (distinct inputs of 20-60 tokens, a task prefix and random
#     English words, fixed seed; greedy, max_new_tokens = min_new_tokens = NEW_TOKENS, so the work
#     is fixed);
#  2. for each model of MODELS, ROUNDS rounds, the order alternating by round (round 1: batch
#     first): `t5serve batch --input FILE --output ANSWERS --model M --max-concurrent-requests
#     1024 SERVER_FLAGS` (a fresh process, default read-ahead unless READ_AHEAD is set), rows/s
#     and tokens/s over the wall time from its `batch started` log line (the models loaded) to its
#     exit, and its own summary line's figures beside them; and a fresh `t5serve serve` with the
#     same model and flags driven by CLIENTS (32) closed-loop HTTP clients (Python threads, one
#     keep-alive http.client connection each) taking the same requests in file order, rows/s and
#     generated tokens/s from the start to the last answer; the ratio batch / server per round and
#     its median (target: at least 1.0), and the batch's texts against the server's by id;
#  3. memory: MEM_ROWS (100,000) short requests (5-15 tokens, MEM_NEW_TOKENS = 4 new tokens) on
#     MEM_MODEL through `t5serve batch`, its VmRSS from /proc/PID/status every RSS_EVERY (1) s:
#     RSS at 10%, 50% and 90% of the run (after the load), the max, the growth from 10% to 90%
#     (target: flat), and the output's line count;
#  4. the CPU (flags, cores, t5serve's int8 kernel) and the commit, with the figures, in
#     bench/results/DATE-batch.md and .jsonl.
#   bench/batch.sh                   full run (about 11-13 minutes on 2 cores, after the build)
#   QUICK=1 bench/batch.sh           smoke run (2-3 minutes): 1 round, small sizes; writes to
#                                    bench/work/results/ unless RESULTS_DIR says otherwise
# Environment: MODELS (model directories, default "models/t5-small-shape
# models/t5-small-shape-int8", built by prepare_bench when absent), MEM_MODEL (default
# models/t5-numbers, the smallest model at hand), PORT (default 18995), BIN (the t5serve binary,
# default target/release/t5serve; another path implies SKIP_BUILD=1), SKIP_BUILD=1 (use the binary
# as it is), SERVER_FLAGS (extra flags for every batch and server process), READ_AHEAD (the
# batch's --read-ahead; default: not passed), RESULTS_DIR, and the sizes ROUNDS (default 3), ROWS
# (default 512), NEW_TOKENS (32), CLIENTS (32), MEM_ROWS (100000), MEM_NEW_TOKENS (4), RSS_EVERY
# (1).
# Pythons: .venv (builds the benchmark models; bench/run.sh makes it) and .venv-test (tokenizers:
# the inputs, the clients; scripts/test.sh makes it); PY and TPY override them. On a 2-core machine
# stop other work for the run's length. Not a test: no assertions on figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${MODELS:-models/t5-small-shape models/t5-small-shape-int8}"
MEM_MODEL="${MEM_MODEL:-models/t5-numbers}"
MEM_MODEL="${MEM_MODEL%/}"
PORT="${PORT:-18995}"
WORK=bench/work
BWORK="$WORK/batch"
PY="${PY:-.venv/bin/python}"
TPY="${TPY:-.venv-test/bin/python}"
BIN="${BIN:-target/release/t5serve}"
[ "$BIN" = target/release/t5serve ] || SKIP_BUILD=1
# shellcheck source=bench/serve.sh
. bench/serve.sh

if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-1}" ROWS="${ROWS:-96}" MEM_ROWS="${MEM_ROWS:-3000}"
  RESULTS_DIR="${RESULTS_DIR:-$WORK/results}"
else
  export ROUNDS="${ROUNDS:-3}" ROWS="${ROWS:-512}" MEM_ROWS="${MEM_ROWS:-100000}"
  RESULTS_DIR="${RESULTS_DIR:-bench/results}"
fi
export NEW_TOKENS="${NEW_TOKENS:-32}" CLIENTS="${CLIENTS:-32}" MEM_NEW_TOKENS="${MEM_NEW_TOKENS:-4}" \
  RSS_EVERY="${RSS_EVERY:-1}"
mkdir -p "$BWORK" "$RESULTS_DIR"

"$TPY" -c 'import tokenizers' 2>/dev/null || {
  echo "no tokenizers in $TPY: create it as scripts/test.sh does (tests/python/requirements.txt), or set TPY" >&2
  exit 1
}
read -r -a MODEL_LIST <<< "$MODELS"
for i in "${!MODEL_LIST[@]}"; do
  MODEL_LIST[i]="${MODEL_LIST[i]%/}"
  # The build once, with the first model.
  if [ "$i" -eq 0 ]; then prepare_bench "${MODEL_LIST[i]}" "$PY"; else SKIP_BUILD=1 prepare_bench "${MODEL_LIST[i]}" "$PY"; fi
done
SKIP_BUILD=1 prepare_bench "$MEM_MODEL" "$PY"
[ -x "$BIN" ] || { echo "no $BIN: build it (cargo build --release) or set BIN" >&2; exit 1; }
"$BIN" batch --help >/dev/null 2>&1 || { echo "$BIN has no batch subcommand (issue 25): build a binary that has it" >&2; exit 1; }

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

# client ARGS...: bench/batch_bench.py in the background, waited for, so that an interrupt runs
# the traps at once (the batch process is the driver's child; it stops it on SIGTERM).
client() {
  "$TPY" bench/batch_bench.py "$@" &
  CLIENT=$!
  wait "$CLIENT"
  CLIENT=
}
stop() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-batch"
OUT="$WORK/batch-results.jsonl"
# shellcheck disable=SC2206
BASE=(--max-concurrent-requests 1024 ${SERVER_FLAGS:-})
RA=()
[ -z "${READ_AHEAD:-}" ] || RA=(--read-ahead "$READ_AHEAD")
FLAGS=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')
CPU=$(cpu_report)
echo "CPU: $CPU"
echo "CPU flags: $FLAGS"
COMMAND="$(env | grep -E '^(QUICK|MODELS|MEM_MODEL|BIN|SERVER_FLAGS|READ_AHEAD|ROUNDS|ROWS|NEW_TOKENS|CLIENTS|MEM_ROWS|MEM_NEW_TOKENS|RSS_EVERY)=' | sort | tr '\n' ' ')bench/batch.sh"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
"$TPY" - "$OUT" "$MODELS" "$MEM_MODEL" "$CPU" "$FLAGS" "$COMMIT" "$DIRTY" "${SERVER_FLAGS:-}" "$COMMAND" "${QUICK:-}" \
  "t5serve batch --input FILE --output ANSWERS --model MODEL ${BASE[*]} ${RA[*]}" \
  "t5serve serve --port $PORT --model MODEL ${BASE[*]}" "$BIN" "${READ_AHEAD:-}" <<'PY'
import datetime, json, os, platform, subprocess, sys
(out, models, mem_model, cpu, flags, commit, dirty, server_flags, command, quick, batch_cmd, serve_cmd, binary,
 read_ahead) = sys.argv[1:]
meta = {"kind": "meta", "models": models.split(), "mem_model": mem_model,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpu": json.loads(cpu),
        "cpu_flags": flags.split(), "git_commit": commit, "git_dirty": dirty == "true", "server_flags": server_flags,
        "command": command, "quick": bool(quick), "batch_cmd": " ".join(batch_cmd.split()),
        "serve_cmd": " ".join(serve_cmd.split()), "bin": binary, "read_ahead": read_ahead or None,
        "rounds": int(os.environ["ROUNDS"]), "rss_every": float(os.environ["RSS_EVERY"]),
        "python": platform.python_version(),
        "dirty_paths": [l[3:] for l in subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                      capture_output=True, text=True).stdout.splitlines()]}
open(out, "w").write(json.dumps(meta) + "\n")
PY
"$TPY" bench/batch_bench.py inputs "${MODEL_LIST[0]}" "$BWORK" "$OUT" >/dev/null

# Part 1: batch and server on each model, the order alternating by round.
pos=0
for r in $(seq 1 "$ROUNDS"); do
  order="batch server"
  [ $((r % 2)) -eq 1 ] || order="server batch"
  for model in "${MODEL_LIST[@]}"; do
    tag=$(basename "$model")
    for step in $order; do
      pos=$((pos + 1))
      if [ "$step" = batch ]; then
        echo "round $r, $tag: batch"
        log="$BWORK/batch-$tag-$r.log"
        client batch "$BIN" "$BWORK/requests.jsonl" "$BWORK/answers-batch-$tag-$r.jsonl" "$log" "$OUT" "$model" "$r" "$pos" \
          -- --model "$model" "${BASE[@]}" "${RA[@]}"
        "$TPY" bench/batch_bench.py log "$OUT" "batch, $tag, round $r" "$log" >/dev/null
      else
        echo "round $r, $tag: server at $CLIENTS clients"
        log="$BWORK/server-$tag-$r.log"
        start_server "$log" --model "$model" "${BASE[@]}"
        trap cleanup EXIT
        client server "http://127.0.0.1:$PORT" "$BWORK/requests.jsonl" "$BWORK/answers-server-$tag-$r.jsonl" "$OUT" \
          "$model" "$r" "$pos" "$SERVER"
        stop
        "$TPY" bench/batch_bench.py log "$OUT" "server, $tag, round $r" "$log" >/dev/null
      fi
    done
    "$TPY" bench/batch_bench.py compare "$BWORK/answers-batch-$tag-$r.jsonl" "$BWORK/answers-server-$tag-$r.jsonl" \
      "$OUT" "$model" "$r"
  done
done

# Part 2: resident memory on the long file.
echo "memory: $MEM_ROWS lines on $MEM_MODEL"
log="$BWORK/memory.log"
client memory "$BIN" "$BWORK/memory.jsonl" "$BWORK/answers-memory.jsonl" "$log" "$OUT" "$MEM_MODEL" \
  -- --model "$MEM_MODEL" "${BASE[@]}" "${RA[@]}" >/dev/null
"$TPY" bench/batch_bench.py log "$OUT" "batch, memory run" "$log" >/dev/null

"$TPY" bench/batch_bench.py report "$OUT" | tee "$NAME.md"
cp "$OUT" "$NAME.jsonl"
echo "wrote $NAME.md and $NAME.jsonl"
