#!/usr/bin/env bash
# Paired A/B of two t5serve binaries (a change against its base): ROUNDS rounds, each running A
# then B (B then A in even rounds) on the same model, prompt and concurrencies, so that the
# machine's drift (20-30% within minutes here) hits both alike; prints each round's tokens/s and
# the median of the per-round ratios B/A. Not a test: no assertions.
#   bench/ab.sh A_BINARY B_BINARY [MODEL_DIR...]   (default: the t5-small shape, int8 and fp32)
# Needs bench/run.sh's prompt (bench/work/prompt.txt) and loadgen (cargo build --release --example loadgen).
# Environment: ROUNDS (default 5), CONCURRENCY (default "1 8 32"), NEW_TOKENS (default 32), B_MODEL
# (a model directory side B serves instead of each MODEL_DIR: two models on one binary, e.g. the
# int4 copy against the int8 one: bench/ab.sh B B models/t5-small-shape-int8 with
# B_MODEL=models/t5-small-shape-int4).
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"
B="$2"
shift 2
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(models/t5-small-shape-int8 models/t5-small-shape)
ROUNDS="${ROUNDS:-5}"
PORT="${PORT:-18932}"
WORK=bench/work
LOADGEN=target/release/examples/loadgen
PROMPT="$WORK/prompt.txt"
[ -f "$PROMPT" ] || { echo "no $PROMPT: run bench/run.sh first" >&2; exit 1; }
[ -x "$LOADGEN" ] || cargo build --release --quiet --example loadgen
# shellcheck source=bench/serve.sh
. bench/serve.sh
echo "CPU: $(cpu_report)"
OUT="$WORK/ab.jsonl"
: > "$OUT"
# Both binaries on their built-in defaults: config/default.toml may name keys the older one lacks.
EMPTY="$WORK/ab-empty.toml"
: > "$EMPTY"

# run BINARY LABEL MODEL ROUND PAIR: one server on MODEL (the pair's side LABEL; PAIR names the pair), every concurrency, one JSON line each.
run() {
  local flags
  if [ "$2" = A ]; then flags="${A_FLAGS:-}"; else flags="${B_FLAGS:-}"; fi
  # shellcheck disable=SC2086
  "$1" serve --config "$EMPTY" --port "$PORT" --model "$3" --max-concurrent-requests 1024 $flags > "$WORK/ab-server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 240); do
    curl -fs "localhost:$PORT/health" >/dev/null && break
    sleep 0.25
  done
  local url="http://127.0.0.1:$PORT"
  $LOADGEN "$url" closed 4 8 "$PROMPT" "${NEW_TOKENS:-32}" >/dev/null
  for c in ${CONCURRENCY:-1 8 32}; do
    local n=$(( c == 1 ? 20 : c * 6 ))
    $LOADGEN "$url" closed "$c" "$n" "$PROMPT" "${NEW_TOKENS:-32}" \
      | sed "s|^|{\"side\":\"$2\",\"model\":\"$5\",\"served\":\"$3\",\"round\":$4,\"batch\":$c,\"run\":|; s|$|}|" >> "$OUT"
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for model in "${MODELS[@]}"; do
  for r in $(seq 1 "$ROUNDS"); do
    b_model="${B_MODEL:-$model}"
    if [ $((r % 2)) -eq 1 ]; then run "$A" A "$model" "$r" "$model"; run "$B" B "$b_model" "$r" "$model"; else run "$B" B "$b_model" "$r" "$model"; run "$A" A "$model" "$r" "$model"; fi
  done
done

python3 - "$OUT" "${A_FLAGS:-}" "${B_FLAGS:-}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for model in dict.fromkeys(r["model"] for r in rows):
    served = {r["served"] for r in rows if r["model"] == model and r["side"] == "B"} - {model}
    other = f" (B serves {', '.join(served)})" if served else ""
    flags = " ".join(f"{k}: {v}" for k, v in (("A flags", sys.argv[2]), ("B flags", sys.argv[3])) if v)
    other += f" ({flags})" if flags else ""
    print(f"\n{model}{other}: generated tokens/s per round (A / B), and the median of the rounds' ratios B/A")
    print("| concurrency | A | B | median B/A | rounds' B/A |\n|---|---|---|---|---|")
    for c in sorted({r["batch"] for r in rows if r["model"] == model}):
        side = lambda s: {r["round"]: r["run"]["tokens_per_s"] for r in rows if (r["model"], r["batch"], r["side"]) == (model, c, s)}
        a, b = side("A"), side("B")
        ratios = [b[k] / a[k] for k in sorted(a) if k in b]
        print(f"| {c} | {statistics.median(a.values()):.0f} | {statistics.median(b.values()):.0f} | "
              f"{statistics.median(ratios):.3f} | {', '.join(f'{x:.2f}' for x in ratios)} |")
PY
