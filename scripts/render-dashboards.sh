#!/usr/bin/env bash
# Renders the two Grafana dashboards to docs/dashboards/*.png from a real run: fresh test
# clusters, a real Prometheus scraping `strait migrate run`, and Kafka's own tools as the
# application. About four minutes:
#   - flow `dr` (prefix) copies `orders` (2,000 records/s) with offset sync for orders-app;
#   - flow `move` (identity) copies `payments` (500 records/s), and a staged migration
#     moves payments-app to the secondary, stopping at its last gate;
#   - 60 s in, the secondary is stopped for 20 s, so lag and readiness have something to show.
# Needs Debian's prometheus and python3-matplotlib (installed if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/docs/dashboards"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/kafka.sh stop || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { echo "[render] $*" >&2; }

need=()
command -v prometheus >/dev/null || need+=(prometheus)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

scripts/kafka.sh reset
scripts/kafka.sh start
cargo build --release -p strait
STRAIT="$ROOT/target/release/strait"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' testbed/pom.xml)"
CP="${STRAIT_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/kafka-$VERSION}/libs/*"
kafka() { java -cp "$CP" "$@"; }
# In the background, with $! the JVM's own PID, so that `kill $!` stops it.
kafka_bg() { java -cp "$CP" "$@" >/dev/null 2>&1 & }
PRIMARY=127.0.0.1:19092 SECONDARY=127.0.0.1:29092 PROM=127.0.0.1:19090
DR_HTTP=127.0.0.1:19644 HTTP=127.0.0.1:19645

kafka org.apache.kafka.tools.TopicCommand --bootstrap-server $PRIMARY --create --topic orders --partitions 6
kafka org.apache.kafka.tools.TopicCommand --bootstrap-server $PRIMARY --create --topic payments --partitions 3

# Two processes: one config may not hold two flows between the same pair of clusters.
clusters() {
  printf '[clusters.primary]\nbootstrap_servers = "%s"\n[clusters.secondary]\nbootstrap_servers = "%s"\n' \
    "$PRIMARY" "$SECONDARY"
}
cat > "$WORK/dr.toml" <<EOF
[http]
listen = "$DR_HTTP"
$(clusters)
[flows.dr]
source = "primary"
target = "secondary"
topics = ["orders"]
naming = "prefix"
refresh_interval = "5s"
[flows.dr.offset_sync]
groups = ["orders-app"]
checkpoint_interval = "2s"
EOF
cat > "$WORK/strait.toml" <<EOF
[http]
listen = "$HTTP"
$(clusters)
[flows.move]
source = "primary"
target = "secondary"
topics = ["payments"]
naming = "identity"
refresh_interval = "5s"
[flows.move.offset_sync]
groups = ["payments-app"]
checkpoint_interval = "2s"
[migration]
flow = "move"
groups = ["payments-app"]
[migration.gates.move_producers]
approval = "auto"
producers_idle_for = "5s"
[migration.gates.start_consumers]
approval = "manual"
EOF
cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: strait
    static_configs:
      - targets: ["$DR_HTTP", "$HTTP"]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address=$PROM >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
START=$(date +%s)
"$STRAIT" run --config "$WORK/dr.toml" >"$WORK/dr.log" 2>&1 &
PIDS+=($!)
"$STRAIT" migrate run --config "$WORK/strait.toml" >"$WORK/strait.log" 2>&1 &
PIDS+=($!)
sleep 3
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { log "a process exited early"; cat "$WORK"/*.log >&2; exit 1; }
done

status() { curl -s "http://$HTTP/status" || true; }
stage() { status | /usr/bin/python3 -c 'import json,sys; print((json.load(sys.stdin).get("migration") or {}).get("stage",""))' 2>/dev/null || true; }
wait_stage() {
  for _ in $(seq 1 180); do [ "$(stage)" = "$1" ] && return 0; sleep 1; done
  log "migration never reached $1"; tail -20 "$WORK/strait.log" >&2; return 1
}

log "application starts: producers and consumer groups on the primary"
kafka_bg org.apache.kafka.tools.ProducerPerformance --topic orders --num-records 440000 --record-size 512 \
  --throughput 2000 --producer-props bootstrap.servers=$PRIMARY
PIDS+=($!)
kafka_bg org.apache.kafka.tools.ProducerPerformance --topic payments --num-records 45000 --record-size 256 \
  --throughput 500 --producer-props bootstrap.servers=$PRIMARY
PAYMENTS_PRODUCER=$!
PIDS+=($PAYMENTS_PRODUCER)
kafka_bg org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server $PRIMARY --topic orders \
  --group orders-app
PIDS+=($!)
kafka_bg org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server $PRIMARY --topic payments \
  --group payments-app
PAYMENTS_CONSUMER=$!
PIDS+=($PAYMENTS_CONSUMER)

sleep 60
log "secondary down for 20 s"
scripts/kafka.sh stop secondary
sleep 20
scripts/kafka.sh start secondary
sleep 30
log "approving mirror; payments producers stop"
"$STRAIT" migrate approve --config "$WORK/strait.toml" mirror
kill $PAYMENTS_PRODUCER 2>/dev/null || true
wait_stage stop_consumers
log "payments-app stops on the primary"
kill $PAYMENTS_CONSUMER 2>/dev/null || true
wait_stage start_consumers
log "payments-app starts on the secondary"
kafka_bg org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server $SECONDARY --topic payments \
  --group payments-app
PIDS+=($!)
sleep 30
END=$(date +%s)
/usr/bin/python3 scripts/render-dashboards.py "http://$PROM" "$START" "$END" "$OUT"
"$STRAIT" migrate status --config "$WORK/strait.toml" | head -20
