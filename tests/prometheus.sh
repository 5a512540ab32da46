#!/usr/bin/env bash
# A real Prometheus against the real service: promtool checks the /metrics exposition, a
# Prometheus server on loopback scrapes the service, and a PromQL query through its HTTP API
# returns exactly the number of requests this script made. Run by scripts/test.sh.
#   tests/prometheus.sh [path/to/t5serve]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug/t5serve}"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
WORK="$(mktemp -d)"
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true
  [ -n "${PROM:-}" ] && kill "$PROM" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

NO_COLOR=1 RUST_LOG=info "$BIN" serve --model tests/data/tiny-t5 --port 0 > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 200); do
  ADDR=$(grep -o 'listening addr=[0-9.:]*' "$WORK/server.log" | head -1 | cut -d= -f2 || true)
  [ -n "$ADDR" ] && curl -fs "http://$ADDR/health/ready" >/dev/null && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/server.log"; echo "server did not start"; exit 1; }

# Seven generations and two bad requests of our own.
for i in $(seq 1 7); do
  curl -fs "http://$ADDR/v1/generate" -H 'content-type: application/json' \
    -d "{\"inputs\": \"request $i\", \"parameters\": {\"max_new_tokens\": 4}}" >/dev/null
done
for _ in 1 2; do
  curl -s -o /dev/null "http://$ADDR/v1/generate" -H 'content-type: application/json' -d '{"inputs": ""}'
done

curl -fs "http://$ADDR/metrics" > "$WORK/metrics.txt"
promtool check metrics < "$WORK/metrics.txt"
echo "promtool check metrics: ok"

# The compose stack's Prometheus config is valid, and every metric its Grafana dashboard
# queries is one the service exports.
promtool check config docker/prometheus.yml >/dev/null
for name in $(grep -o 't5serve_[a-z_]*' docker/grafana/dashboards/t5serve.json | sort -u); do
  grep -q "^$name[ {]" "$WORK/metrics.txt" || { echo "dashboard metric $name is not exported"; exit 1; }
done
echo "docker/prometheus.yml and the Grafana dashboard's metrics: ok"

PROM_PORT=$(( 20000 + RANDOM % 20000 ))
cat > "$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: t5serve
    static_configs:
      - targets: ["$ADDR"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
PROM=$!

query() {
  curl -fs "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
OK=""; BAD=""
for _ in $(seq 1 60); do
  OK=$(query 'sum(t5serve_requests_total{route="/v1/generate",status="200"})' 2>/dev/null || true)
  BAD=$(query 'sum(t5serve_requests_rejected_total{reason="invalid"})' 2>/dev/null || true)
  [ "$OK" = "7" ] && [ "$BAD" = "2" ] && break
  sleep 0.5
done
echo "PromQL: /v1/generate 200 = ${OK:-none}, rejected invalid = ${BAD:-none}"
if [ "$OK" != "7" ] || [ "$BAD" != "2" ]; then
  tail -20 "$WORK/prometheus.log"
  echo "Prometheus did not report the requests this script made"
  exit 1
fi
echo "prometheus: ok (promtool check metrics, a real scrape, PromQL counts)"
