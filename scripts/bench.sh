#!/usr/bin/env bash
# Strait versus real MirrorMaker 2 and this machine's ceiling, on fresh test clusters, in
# one run; prints Markdown tables and writes a JSON file (target/bench/).
#   scripts/bench.sh [SCENARIO] [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS] [FLAGS]   (1000000 1024 12 3)
#   FLAGS: the bench binary's (`target/release/bench --help`), e.g. --systems, --alt, --alt-bin
#   SCENARIO:
#     --all (default)  everything below, in that order
#     --backlog        backlog copy (Strait, MM2, ceiling, alternating) + failover exactness of
#                      10 groups + Kafka's perf tools
#     --steady         20,000 records/s for 60 s (--rate, --seconds):
#                      latency p50/p99 and largest lag, Strait versus MM2
#     --scale          the backlog copy at 1, 12, 120, 1200 partitions (--scale-partitions)
#     --topics         [RECORDS] [RECORD_BYTES] [TOPICS] [RUNS]: the backlog spread over TOPICS
#                      single-partition topics, Strait against strait-alt (--alt-bin,
#                      another build; or --alt, other settings)
#     --offset-sync    Strait with offset sync on versus off, on a backlog written in
#                      transactions of 1000 records (a commit marker, i.e. an offset gap, in
#                      every partition every ~83 records with 12 partitions); also prints the
#                      offset map topic's size and the checkpoint lag
#     --verify         after each Strait run, `strait verify` compares the whole copy with
#                      the source; prints its rate next to the replication rate of the run
set -euo pipefail
SCENARIO=(--all)
case "${1:-}" in
  --offset-sync)
    shift; SCENARIO=(--backlog --systems strait,strait-nosync --txn 1000) ;;
  --verify)
    shift; SCENARIO=(--backlog --verify --systems strait) ;;
  --all|--backlog|--steady|--scale|--topics) SCENARIO=("$1"); shift ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cleanup() { scripts/kafka.sh stop || true; }
trap cleanup EXIT INT TERM
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh reset
STRAIT_KAFKA_HEAP="${STRAIT_KAFKA_HEAP:-1g}" scripts/kafka.sh start
cargo build --release -p strait -p strait-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# MirrorMaker 2 and Kafka's perf tools run from the test bed's jars. Flags after the
# sizes go to the bench too (`target/release/bench --help`).
target/release/bench "${SCENARIO[@]}" --kafka-classpath "$(scripts/kafka.sh classpath)" "$@"
