#!/usr/bin/env bash
# Strait's real-Kafka test bed: two single-node KRaft clusters on 127.0.0.1.
#   primary   client 127.0.0.1:19092  controller 127.0.0.1:19093  secured 127.0.0.1:19094
#   secondary client 127.0.0.1:29092  controller 127.0.0.1:29093  secured 127.0.0.1:29094
# The secured listeners are SASL_SSL, mechanism PLAIN, users `strait` / `strait-secret` and
# `admin` / `admin-secret`, with ACLs enforced; `scripts/kafka.sh tls-ca` prints the CA
# file a client trusts.
#
# Replicated mode, for fault tests: two clusters of three KRaft nodes each (every node a
# broker and a controller, static voters), with replication factor 3 and
# min.insync.replicas=2 as the default for every topic, internal ones included.
#   rprimary   nodes 1-3: client 127.0.0.1:17092, 17192, 17292  controller port + 1
#   rsecondary nodes 1-3: client 127.0.0.1:27092, 27192, 27292  controller port + 1
# (All below 32768, where Linux picks no ephemeral ports: a client connection could
# otherwise hold a stopped node's port and keep it from starting again.)
#
# Usage: scripts/kafka.sh fetch | start [primary|secondary|all] | stop [..] | kill [..] | restart [..] | reset | status | classpath | tls-ca
#        scripts/kafka.sh replicated start|stop|reset|status
#        scripts/kafka.sh node start|stop|kill|pause|resume|pid rprimary|rsecondary N
# `stop` and `node stop` are clean shutdowns, `kill` and `node kill` a SIGKILL, `pause`/`resume`
# SIGSTOP/SIGCONT.
# Jars come from Maven Central (testbed/pom.xml) and are cached outside git in $STRAIT_KAFKA_CACHE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/testbed/pom.xml")"
CACHE="${STRAIT_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
STATE="${STRAIT_TESTBED_DIR:-$ROOT/.testbed}"
HEAP="${STRAIT_KAFKA_HEAP:-512m}"

port_of() { case "$1" in primary) echo 19092 ;; secondary) echo 29092 ;; *) echo "unknown cluster '$1' (primary|secondary)" >&2; exit 2 ;; esac; }
# Client port of node N (1-3) of a replicated cluster.
node_port() {
  local base
  case "$1" in rprimary) base=17092 ;; rsecondary) base=27092 ;; *) echo "unknown replicated cluster '$1' (rprimary|rsecondary)" >&2; exit 2 ;; esac
  case "$2" in 1|2|3) ;; *) echo "unknown node '$2' (1|2|3)" >&2; exit 2 ;; esac
  echo $((base + 100 * ($2 - 1)))
}
REPLICATED="rprimary rsecondary"
names() { if [ "${1:-all}" = all ]; then echo primary secondary; else echo "$1"; fi; }
log() { echo "[kafka.sh] $*" >&2; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return; fi
  command -v java >/dev/null || { log "java not found; install openjdk-17-jre-headless"; exit 1; }
  command -v mvn >/dev/null || { log "mvn not found; install maven"; exit 1; }
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/testbed/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2
  touch "$LIBS/.complete"
}

is_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A self-signed certificate for 127.0.0.1 (key and certificate in one PEM file, which
# Kafka reads as a keystore of type PEM); the certificate alone is what clients trust.
write_tls() {
  local dir=$1
  [ -f "$dir/ca.pem" ] && [ -f "$dir/broker.pem" ] && return
  command -v openssl >/dev/null || { log "openssl not found; install openssl"; exit 1; }
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/ca.pem" 2>"$dir/openssl.log" \
    || { log "creating the test bed's certificate failed:"; cat "$dir/openssl.log" >&2; exit 1; }
  cat "$dir/key.pem" "$dir/ca.pem" > "$dir/broker.pem"
}

# Each cluster's third listener, for tests of secured clusters: SASL_SSL with PLAIN, as
# Event Hubs and most managed clusters use, and Kafka's own authorizer. Clients on the
# PLAINTEXT listeners are User:ANONYMOUS, a super user, so nothing else changes for them
# (the controller and the broker itself included); `strait` may do only what ACLs allow.
secured_props() {
  local dir=$1
  cat <<PROPS
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_strait="strait-secret";
ssl.keystore.type=PEM
ssl.keystore.location=$dir/broker.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:admin
allow.everyone.if.no.acl.found=false
PROPS
}

# Settings of every test cluster: $1 is the replication factor of Kafka's internal topics,
# $2 their min.insync.replicas.
shared_props() {
  local rf=$1 isr=$2
  cat <<PROPS
num.partitions=1
# Kafka's default, as on most real clusters: a client that may auto-create topics (a
# producer, or an admin client looking a topic up) has a missing topic created with the
# broker's defaults. Strait's clients must never do that: they set
# allow.auto.create.topics=false (docs/architecture.md, "What gets copied", Delivery).
auto.create.topics.enable=true
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=5000
# Delete a deleted topic's files after 1 s, not 60: the benchmark deletes 1 GB topics
# between runs, and a deferred delete would land in the middle of a later run.
log.segment.delete.delay.ms=1000
PROPS
}

write_config() {
  local name=$1 port=$2 dir=$3 listeners
  mkdir -p "$dir/data"
  write_tls "$STATE/tls"
  listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1)),SASL_SSL://127.0.0.1:$((port + 2))"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$((port + 1))
listeners=$listeners
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$dir/data
$(shared_props 1 1)
PROPS
  secured_props "$STATE/tls" >> "$dir/server.properties"
  write_log4j "$dir"
}

write_log4j() {
  local dir=$1
  cat > "$dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.org.name=org.apache
logger.org.level=WARN
PROPS
}

# Starts the JVM of the node whose config is in $dir, recording its pid in $dir/pid.
launch() {
  local dir=$1
  : > "$dir/server.log"
  nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS/*" \
    kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
}

start_one() {
  local name=$1 port dir
  port=$(port_of "$name"); dir="$STATE/$name"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "$name already running"; return; fi
  if is_up "$port"; then log "port $port is taken by another process; refusing to start $name"; exit 1; fi
  write_config "$name" "$port" "$dir"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id; id=$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool \
      format --standalone -t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { log "formatting $name failed:"; cat "$dir/format.log" >&2; exit 1; }
  fi
  launch "$dir"
}

wait_ready() {
  local name=$1 port dir
  port=$(port_of "$name"); dir="$STATE/$name"
  wait_up "$name" "$port" "$dir"
}

wait_up() {
  local name=$1 port=$2 dir=$3 deadline=$((SECONDS + 90))
  until is_up "$port" && grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "$name exited during start-up:"; tail -n 30 "$dir/stdout.log" "$dir/server.log" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then log "$name not ready after 90 s"; tail -n 30 "$dir/server.log" >&2; exit 1; fi
    sleep 0.5
  done
  log "$name ready on 127.0.0.1:$port"
}

stop_one() { stop_dir "$1" "$STATE/$1"; }

# SIGKILL: the broker dies as in a crash or power loss of its process.
kill_one() {
  local dir="$STATE/$1"
  [ -f "$dir/pid" ] || return 0
  kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid"
  log "$1 killed"
}

stop_dir() {
  local name=$1 dir=$2 pid
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$dir/pid"
}

# Node N of a replicated cluster: a broker and one of the cluster's three controllers.
# Every topic defaults to replication factor 3 and min.insync.replicas=2, as production
# clusters run. replica.lag.time.max.ms keeps Kafka's 30 s: a frozen follower holds the
# high watermark (and writers with acks=all) back that long before it leaves the in-sync
# set: longer than Strait's consumer `session.timeout.ms` (10 s), as on production clusters.
write_node_config() {
  local cluster=$1 n=$2 dir=$3 port voters="" i
  port=$(node_port "$cluster" "$n")
  for i in 1 2 3; do voters="$voters${voters:+,}$i@127.0.0.1:$(( $(node_port "$cluster" "$i") + 1 ))"; done
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
default.replication.factor=3
min.insync.replicas=2
$(shared_props 3 2)
PROPS
  write_log4j "$dir"
}

node_dir() { echo "$STATE/$1/node$2"; }

# Starts node N; formats its storage first on a fresh test bed, with the cluster's id.
node_start() {
  local cluster=$1 n=$2 dir port
  dir=$(node_dir "$cluster" "$n"); port=$(node_port "$cluster" "$n")
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "$cluster node $n already running"; return; fi
  if is_up "$port"; then log "port $port is taken by another process; refusing to start $cluster node $n"; exit 1; fi
  write_node_config "$cluster" "$n" "$dir"
  if [ ! -f "$dir/data/meta.properties" ]; then
    if [ ! -f "$STATE/$cluster/cluster.id" ]; then
      java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 > "$STATE/$cluster/cluster.id"
    fi
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool \
      format -t "$(cat "$STATE/$cluster/cluster.id")" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { log "formatting $cluster node $n failed:"; cat "$dir/format.log" >&2; exit 1; }
  fi
  launch "$dir"
}

node_signal() {
  local signal=$1 cluster=$2 n=$3 dir
  dir=$(node_dir "$cluster" "$n")
  [ -f "$dir/pid" ] || { log "$cluster node $n is not running"; exit 1; }
  kill "-$signal" "$(cat "$dir/pid")"
}

node() {
  local what=$1 cluster=$2 n=$3
  node_port "$cluster" "$n" >/dev/null
  case "$what" in
    start) node_start "$cluster" "$n"; wait_up "$cluster node $n" "$(node_port "$cluster" "$n")" "$(node_dir "$cluster" "$n")" ;;
    stop) kill -CONT "$(cat "$(node_dir "$cluster" "$n")/pid" 2>/dev/null)" 2>/dev/null || true; stop_dir "$cluster node $n" "$(node_dir "$cluster" "$n")" ;;
    kill) node_signal KILL "$cluster" "$n"; rm -f "$(node_dir "$cluster" "$n")/pid"; log "$cluster node $n killed" ;;
    pause) node_signal STOP "$cluster" "$n" ;;
    resume) node_signal CONT "$cluster" "$n" ;;
    pid) cat "$(node_dir "$cluster" "$n")/pid" ;;
    *) log "unknown node command '$what' (start|stop|kill|pause|resume|pid)"; exit 2 ;;
  esac
}

replicated() {
  local c n
  case "${1:-}" in
    start)
      fetch
      for c in $REPLICATED; do mkdir -p "$STATE/$c"; for n in 1 2 3; do node_start "$c" "$n"; done; done
      for c in $REPLICATED; do for n in 1 2 3; do wait_up "$c node $n" "$(node_port "$c" "$n")" "$(node_dir "$c" "$n")"; done; done ;;
    stop)
      for c in $REPLICATED; do for n in 1 2 3; do
        # Paused nodes would ignore the stop signal.
        kill -CONT "$(cat "$(node_dir "$c" "$n")/pid" 2>/dev/null)" 2>/dev/null || true
        stop_dir "$c node $n" "$(node_dir "$c" "$n")"
      done; done ;;
    reset) replicated stop; for c in $REPLICATED; do rm -rf "${STATE:?}/$c"; done ;;
    status) for c in $REPLICATED; do for n in 1 2 3; do
        if is_up "$(node_port "$c" "$n")"; then echo "$c node $n up"; else echo "$c node $n down"; fi
      done; done ;;
    *) log "usage: scripts/kafka.sh replicated start|stop|reset|status"; exit 2 ;;
  esac
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  start) fetch; for n in $(names "${1:-all}"); do start_one "$n"; done; for n in $(names "${1:-all}"); do wait_ready "$n"; done ;;
  stop) for n in $(names "${1:-all}"); do stop_one "$n"; done ;;
  kill) for n in $(names "${1:-all}"); do kill_one "$n"; done ;;
  restart) for n in $(names "${1:-all}"); do stop_one "$n"; start_one "$n"; wait_ready "$n"; done ;;
  reset) for n in primary secondary; do stop_one "$n"; done; replicated stop; rm -rf "$STATE" ;;
  replicated) replicated "$@" ;;
  node) fetch; node "$@" ;;
  status) for n in primary secondary; do if is_up "$(port_of $n)"; then echo "$n up"; else echo "$n down"; fi; done ;;
  classpath) fetch; echo "$LIBS/*" ;;
  tls-ca) write_tls "$STATE/tls"; echo "$STATE/tls/ca.pem" ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
