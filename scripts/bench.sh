#!/usr/bin/env bash
# Backlog-copy benchmark: Strait versus the minimal rdkafka loop (this machine's ceiling),
# alternating runs on fresh test clusters. Prints a Markdown table with medians.
#   scripts/bench.sh [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS]   (1000000 1024 12 3)
#   scripts/bench.sh --offset-sync [same arguments]
#     Strait with offset sync on versus off instead of versus the ceiling, on a backlog
#     written in transactions of 1000 records (a commit marker, i.e. an offset gap, in
#     every partition every ~83 records with 12 partitions); also prints the offset map
#     topic's size and the checkpoint lag.
#   scripts/bench.sh --verify [same arguments]
#     After each Strait run, `strait verify` compares the whole copy with the source;
#     prints its rate in MB/s next to the replication rate of the same run.
set -euo pipefail
if [[ "${1:-}" == "--offset-sync" ]]; then
  shift
  export STRAIT_BENCH_SYSTEMS="strait,strait-nosync" STRAIT_BENCH_TXN="${STRAIT_BENCH_TXN:-1000}"
elif [[ "${1:-}" == "--verify" ]]; then
  shift
  export STRAIT_BENCH_VERIFY=1
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cleanup() { scripts/kafka.sh stop || true; }
trap cleanup EXIT INT TERM
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh reset
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh start
cargo build --release -p strait -p strait-bench
# MirrorMaker 2 and Kafka's perf tools run from the test bed's jars.
STRAIT_BENCH_KAFKA_CLASSPATH="$(scripts/kafka.sh classpath)"
export STRAIT_BENCH_KAFKA_CLASSPATH
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/bench "$@"
