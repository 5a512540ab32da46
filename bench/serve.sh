# Sourced by the bench scripts: builds, starts and stops the release binary on $PORT.
#   build [cargo flags...]           builds t5serve and the load generator; sets LOADGEN
#   start_server LOG serve-args...   sets SERVER, kills it on exit, waits until /health answers
#   stop_server                      stops it and waits
#   require_prompt                   sets PROMPT; fails unless bench/run.sh has written it

start_server() {
  local log="$1"
  shift
  target/release/t5serve serve --port "$PORT" "$@" > "$log" 2>&1 &
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

build() {
  cargo build --release --quiet "$@" --bin t5serve --example loadgen
  LOADGEN=target/release/examples/loadgen
}
