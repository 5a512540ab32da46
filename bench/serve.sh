# Sourced by the bench scripts: builds, starts and stops the release binary (or $BIN) on $PORT.
#   build [cargo flags...]           builds t5serve and the load generator; sets LOADGEN
#   start_server LOG serve-args...   sets SERVER, kills it on exit, waits until /health answers
#   stop_server                      stops it and waits
#   require_prompt                   sets PROMPT; fails unless bench/run.sh has written it
#   prepare_bench MODEL PY           the bench model (built when it is a benchmark shape), ONNX Runtime, the binary
#   cpu_report                       the CPU as JSON: model name, cores, and what `t5serve cpu` says
#                                    (the instruction sets that decide ONNX Runtime's kernels)

start_server() {
  local log="$1"
  shift
  "${BIN:-target/release/t5serve}" serve --port "$PORT" "$@" > "$log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 240); do
    curl -fs "localhost:$PORT/health" >/dev/null && return 0
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.5
  done
  echo "the server did not become ready; its log ($log):" >&2
  tail -20 "$log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  trap - EXIT
}

require_prompt() {
  PROMPT="$WORK/prompt.txt"
  [ -f "$PROMPT" ] || { echo "no $PROMPT: run bench/run.sh first" >&2; exit 1; }
}

# Figures from CPUs whose reports differ are not comparable (int8 kernels differ by instruction
# set; src/model/cpu.rs): every result records this, and `build` prints it.
cpu_report() {
  local name
  name=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  "${BIN:-target/release/t5serve}" cpu | sed "s/^{/{\"model_name\":\"$name\",\"cores\":$(nproc),/"
}

build() {
  cargo build --release --quiet "$@" --bin t5serve --example loadgen
  LOADGEN=target/release/examples/loadgen
  echo "CPU: $(cpu_report)"
}

# Everything a benchmark of model directory $1 needs, with the Python of $2: the benchmark shapes
# are built when absent (scripts/make_test_models.py, then scripts/quantize_model.py for the int8
# copy; any other model directory must exist), ONNX Runtime, and the release binary (unless
# SKIP_BUILD is set).
prepare_bench() {
  local model="$1" py="$2" base shape
  [ -x "$py" ] || { echo "no $py: create it as bench/run.sh does (scripts/requirements.txt)" >&2; exit 1; }
  if [ ! -f "$model/encoder_model.onnx" ]; then
    case "$model" in
      models/t5-small-shape | models/t5-base-shape | models/t5-small-shape-int8 | models/t5-base-shape-int8)
        base="${model%-int8}"
        shape="${base#models/}"
        [ -f "$base/encoder_model.onnx" ] || "$py" scripts/make_test_models.py --shape "${shape%-shape}"
        [ "$base" = "$model" ] || "$py" scripts/quantize_model.py "$base" "$model" ;;
      *) echo "no $model/encoder_model.onnx" >&2; exit 1 ;;
    esac
  fi
  scripts/setup_ort.sh >/dev/null
  [ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin t5serve
}
