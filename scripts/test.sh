#!/usr/bin/env bash
# Strait's one test command: installs what is missing, checks formatting and lints,
# fetches Kafka, starts both test clusters, runs the whole suite against them, then the
# fault scenarios on the replicated test bed (two clusters of three nodes,
# tests/faults/), and stops everything, pass or fail.
#   scripts/test.sh [extra cargo test args]
#   scripts/test.sh --faults   only the fault scenarios, the long ones (`long_*`) too
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v perl >/dev/null || need_apt+=(perl)      # vendored OpenSSL's build
command -v openssl >/dev/null || need_apt+=(openssl)  # the test bed's certificate (scripts/kafka.sh)
command -v prometheus >/dev/null || need_apt+=(prometheus)  # tests/dashboards.rs
command -v iptables >/dev/null || need_apt+=(iptables)  # network faults in tests/faults/
command -v gdb >/dev/null || need_apt+=(gdb)            # thread stacks of a process that hangs (tests/common/strait.rs)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[test.sh] installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "[test.sh] cargo not found: install Rust (rustup) first"; exit 1; }

cleanup() { scripts/kafka.sh stop || true; scripts/kafka.sh replicated stop || true; }
trap cleanup EXIT INT TERM

# The fast lane first: it needs no cluster, and a style or unit failure shows in minutes,
# not at the end: formatting, lints (warnings are errors), unit and doc tests, and the
# rules about the code itself.
if [ "${1:-}" != "--faults" ]; then
  echo "[test.sh] fast lane: fmt, clippy, unit and doc tests, code rules"
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo test --workspace --lib --bins
  cargo test --workspace --doc
  cargo test --test code_rules
fi

# Fresh clusters every run, so leftovers from a previous run cannot hide a bug.
scripts/kafka.sh reset
cargo build --workspace --all-targets

# The fault scenarios kill, pause and restart brokers, so they run alone, one at a time,
# on clusters of their own (ports in scripts/kafka.sh).
faults() {
  scripts/kafka.sh replicated start
  cargo test --test faults -- --ignored --test-threads=1 --nocapture "$@" 2>&1 \
    | grep -v -e 'librdkafka' -e 'rdkafka::client' -e 'strait_replicator::status'
  scripts/kafka.sh replicated stop
}

if [ "${1:-}" = "--faults" ]; then
  faults
  exit
fi

scripts/kafka.sh start
cargo test --workspace "$@"
scripts/kafka.sh stop
faults --skip long_
