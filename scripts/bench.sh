#!/usr/bin/env bash
# Backlog-copy benchmark: Strait versus the minimal rdkafka loop (this machine's ceiling),
# alternating runs on fresh test clusters. Prints a Markdown table with medians.
#   scripts/bench.sh [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS]   (1000000 1024 12 3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cleanup() { scripts/kafka.sh stop || true; }
trap cleanup EXIT INT TERM
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh reset
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh start
cargo build --release -p strait -p strait-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/bench "$@"
