#!/usr/bin/env bash
# The levers of the open-loop figure (issue 26, item 5): bench/open_loop.sh's sweep once per
# setting below, each on a fresh server, then one markdown table of the figure per setting (the
# highest tested fraction of the 32-client saturation rate whose p99 stays within 2x the
# single-request p50; bench/open_loop_report.py states the definition) and one chart with a curve
# per setting. Not a test: no assertions on figures. Needs an idle machine: with the defaults each
# setting takes about 3 minutes on the t5-small int8 shape on 2 cores (saturation ~65 req/s; the
# arrivals alone take REQUESTS x sum(1 / fraction) / saturation = 200 x 46.4 / 65 s), so all of
# them about 20 minutes.
#   bench/open_loop_levers.sh [MODEL]      (default models/t5-small-shape-int8; run bench/run.sh first)
# Writes RESULTS_DIR/DATE-open-loop-levers-MODEL.jsonl (every sweep's rows, CPU included), .md and
# -open-loop.svg; each sweep's log stays in bench/work/open-loop-levers-LABEL.txt.
# Environment: ONLY (labels of the settings to run, space-separated; default all), RESULTS_DIR
# (default bench/results), and bench/open_loop.sh's FRACTIONS, REQUESTS, SINGLE_REQUESTS,
# SATURATION_REQUESTS, PROMPT, NEW_TOKENS, PORT, SEED, BIN, LOADGEN, SKIP_BUILD (the binary is
# built once, before the first setting).
set -euo pipefail
cd "$(dirname "$0")/.."

# The settings, LABEL|FLAGS (added to `t5serve serve --model MODEL --max-concurrent-requests 1024`).
# What each lever is: bench/open_loop.sh's header. Add a line when a new lever lands.
LEVERS=(
  "default|"                                                                              # int8: 2 lanes, each prefilling inline on its core
  "lanes1-prefill-thread|--decode-lanes 1"                                                # prefill overlapped, sharing the global pool with the steps
  "lanes1-prefill-inline|--decode-lanes 1 --prefill-thread false"                         # prefill first: the steps wait for it
  "lanes1-prefill-1core|--decode-lanes 1 --ort-thread-pool per-session --prefill-threads 1" # one core prefills, the other steps
  "queue-delay-0|--max-queue-delay-ms 0"                                                  # start at once, never wait for company
  "queue-delay-10|--max-queue-delay-ms 10"                                                # wait up to 10 ms to start with others
  "batch-16|--max-batch-size 16"                                                          # half the rows decoding at once (and per prefill)
  "prefill-256|--max-prefill-tokens 256"                                                  # a prefill encodes at most 256 padded tokens; more rows wait for the next
  "no-solo|--solo-sessions false"                                                         # a lone request keeps its lane's core instead of taking both
  "spinning-off|--intra-op-spinning false"                                                # pool threads block at once between ops instead of spinning
)

MODEL="${1:-models/t5-small-shape-int8}"
MODEL="${MODEL%/}"
RESULTS_DIR="${RESULTS_DIR:-bench/results}"
WORK=bench/work
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p "$WORK" "$RESULTS_DIR"
NAME="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-open-loop-levers-$(basename "$MODEL")"
ALL="$WORK/open-loop-levers.jsonl"
: > "$ALL"
COMMIT=$(git rev-parse HEAD)
DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DIRTY=true
# (grep finds nothing when no setting is in the environment: not an error.)
COMMAND="$(env | { grep -E '^(ONLY|FRACTIONS|REQUESTS|SINGLE_REQUESTS|SATURATION_REQUESTS|NEW_TOKENS|SEED|PROMPT|BIN)=' || true; } | sort | tr '\n' ' ')bench/open_loop_levers.sh $MODEL"

built="${SKIP_BUILD:-}"
ran=0
for lever in "${LEVERS[@]}"; do
  label="${lever%%|*}"
  flags="${lever#*|}"
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then
    continue
  fi
  echo "== $label: ${flags:-(default flags)}"
  out="$WORK/open-loop-levers-$label.jsonl"
  SKIP_BUILD="$built" LABEL="$label" SERVER_FLAGS="$flags" OUT="$out" bench/open_loop.sh "$MODEL" \
    | tee "$WORK/open-loop-levers-$label.txt"
  built=1
  # One cpu row for the whole file: the first sweep's (the machine does not change between them).
  if [ "$ran" -eq 0 ]; then cat "$out" >> "$ALL"; else grep -v '^{"engine": *"cpu"' "$out" >> "$ALL"; fi
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "no setting matches ONLY='${ONLY:-}'" >&2; exit 2; }

INPUT="bench/run.sh's 64-token prompt"
[ -z "${PROMPT:-}" ] || INPUT="the prompt in $PROMPT"
{
  echo "# Open-loop latency per lever setting, $(basename "$MODEL"), $(date +%Y-%m-%d) on $(hostname -s)"
  echo
  echo "Commit $COMMIT (uncommitted changes: $DIRTY); \`$COMMAND\`. Poisson arrivals at fractions of each"
  echo "setting's own 32-client saturation rate, $INPUT, ${NEW_TOKENS:-32} new tokens,"
  echo "${REQUESTS:-200} requests per rate; raw rows in $(basename "$NAME").jsonl."
  echo
  "$PY" bench/open_loop_report.py "$ALL" --chart "$NAME"
} > "$NAME.md"
cp "$ALL" "$NAME.jsonl"
cat "$NAME.md"
