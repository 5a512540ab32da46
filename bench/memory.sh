#!/usr/bin/env bash
# Memory on the hot path, with the benchmark build (`--features alloc-count`: a counting global
# allocator; src/alloc_count.rs):
#   - Rust-side heap allocations and bytes per decoder step (ONNX Runtime allocates in its own
#     arena and is not counted), from the server's histograms;
#   - resident memory (VmRSS) after a warm-up and after 10,000 more requests, and the change;
#   - t5serve_kv_cache_bytes at the end (0: nothing stays allocated for finished rows);
#   - resident memory right after start, after a burst of 1 MB-class inputs (BURST requests of a
#     body just under max_body_bytes, truncated to max_input_tokens, 16 at a time), and a minute
#     after the burst (ONNX Runtime's arena keeps its peak unless it is given back).
#   bench/memory.sh        (run bench/run.sh once first: it makes the models and the prompt)
# Environment: MODEL (default models/t5-small-shape-int8), REQUESTS (default 10000),
# CONCURRENCY (default 32), SERVER_FLAGS. Prints figures; not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/t5-small-shape-int8}"
REQUESTS="${REQUESTS:-10000}"
BURST="${BURST:-32}"
CONCURRENCY="${CONCURRENCY:-32}"
PORT="${PORT:-18933}"
WORK=bench/work
# shellcheck source=bench/serve.sh
. bench/serve.sh
require_prompt
build --features alloc-count
# shellcheck disable=SC2086
start_server "$WORK/memory-server.log" --model "$MODEL" --max-concurrent-requests 1024 ${SERVER_FLAGS:-}
URL="http://127.0.0.1:$PORT"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status"; }
echo "after start: VmRSS $(( $(rss_kb) / 1024 )) MiB"
# A metric summed over its series (most are split by the model label).
metric() { curl -s "$URL/metrics" | awk -v m="$1" '{n = $1; sub(/\{.*/, "", n)} n == m {s += $2; f = 1} END {if (f) print s}'; }

$LOADGEN "$URL" closed "$CONCURRENCY" 500 "$PROMPT" 32 >/dev/null
warm=$(rss_kb)
echo "after warm-up (500 requests): VmRSS $((warm / 1024)) MiB"
steps0=$(metric t5serve_decode_step_allocations_count); allocs0=$(metric t5serve_decode_step_allocations_sum)
bytes0=$(metric t5serve_decode_step_allocated_bytes_sum); rows0=$(metric t5serve_batch_size_sum)
start=$(date +%s)
: > "$WORK/memory-load.json"
done_requests=0
for part in 1 2 3 4; do
  n=$(( REQUESTS / 4 ))
  $LOADGEN "$URL" closed "$CONCURRENCY" "$n" "$PROMPT" 32 >> "$WORK/memory-load.json"
  done_requests=$(( done_requests + n ))
  echo "after $done_requests more requests ($(( $(date +%s) - start )) s): VmRSS $(( $(rss_kb) / 1024 )) MiB"
done
after=$(rss_kb)
steps1=$(metric t5serve_decode_step_allocations_count); allocs1=$(metric t5serve_decode_step_allocations_sum)
bytes1=$(metric t5serve_decode_step_allocated_bytes_sum); rows1=$(metric t5serve_batch_size_sum)
.venv/bin/python - "$warm" "$after" "$steps0" "$steps1" "$allocs0" "$allocs1" "$bytes0" "$bytes1" "$rows0" "$rows1" <<'PY'
import sys
warm, after, s0, s1, a0, a1, b0, b1, r0, r1 = map(float, sys.argv[1:])
steps, rows = s1 - s0, r1 - r0
print(f"resident memory change: {100 * (after - warm) / warm:+.2f}% (target: within 5%)")
print(f"decoder steps: {steps:.0f}, mean rows per step {rows / steps:.1f}")
print(f"Rust-side allocations per step: {(a1 - a0) / steps:.1f} ({(a1 - a0) / rows:.2f} per row), "
      f"{(b1 - b0) / steps / 1024:.1f} KiB per step ({(b1 - b0) / rows / 1024:.1f} KiB per row)")
PY
echo "t5serve_kv_cache_bytes now: $(metric t5serve_kv_cache_bytes)"
tail -1 "$WORK/memory-load.json"

# The burst: 1 MB-class bodies, each truncated to the model's longest input.
.venv/bin/python - "$URL" "$BURST" <<'PY'
import concurrent.futures as cf, json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
words = "seven hundred and twelve thousand four hundred and three "
text = (words * (1_000_000 // len(words)))[:1_000_000]
body = json.dumps({"inputs": text, "parameters": {"max_new_tokens": 4, "truncate": 512}}).encode()
def post(_):
    req = urllib.request.Request(url + "/v1/generate", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status
with cf.ThreadPoolExecutor(16) as pool:
    codes = list(pool.map(post, range(n)))
print(f"burst: {n} requests of {len(body) / 1e6:.2f} MB, statuses {sorted(set(codes))}")
PY
echo "right after the burst: VmRSS $(( $(rss_kb) / 1024 )) MiB"
sleep 60
echo "a minute after the burst: VmRSS $(( $(rss_kb) / 1024 )) MiB"
