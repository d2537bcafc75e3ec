#!/usr/bin/env bash
# Runs a command and records the CPU time of each of its threads, for the benchmark's
# --wrap (which then measures this wrapper's own CPU and RSS, not the copier's):
#   --wrap bench/profile/thread-cpu.sh target/release/bench --backlog ...
# Every thread's /proc ticks are sampled every 50 ms, so threads that exit before the
# command (short-lived clients) are counted too. When the command exits, one line per
# thread goes to $THREAD_CPU_DIR/threadcpu.<pid> (default /tmp), busiest first:
#   <tid> '<thread name>' <CPU ticks, usually 1/100 s> <first seen, ms> <last busy, ms>
set -euo pipefail
"$@" &
child=$!
# The benchmark stops a copier with SIGTERM; pass it on.
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
out="${THREAD_CPU_DIR:-/tmp}/threadcpu.$child"
python3 - "$child" "$out" <<'PY' &
import os, sys, time
pid, out = sys.argv[1], sys.argv[2]
seen = {}
start = time.monotonic()
while os.path.exists(f'/proc/{pid}'):
    now = int((time.monotonic() - start) * 1000)
    try:
        tids = os.listdir(f'/proc/{pid}/task')
    except OSError:
        break
    for tid in tids:
        try:
            stat = open(f'/proc/{pid}/task/{tid}/stat').read()
        except OSError:
            continue
        name = stat[stat.index('(') + 1:stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2:].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        old = seen.get(tid)
        if old is None:
            seen[tid] = [name, ticks, now, now]
        elif ticks != old[1]:
            old[:] = [name, ticks, old[2], now]
    time.sleep(0.05)
with open(out, 'w') as f:
    for tid, (name, ticks, first, last) in sorted(seen.items(), key=lambda kv: -kv[1][1]):
        f.write(f'{tid} {name!r} {ticks} {first} {last}\n')
PY
sampler=$!
status=0
wait "$child" || status=$?
# A TERM interrupts the first wait; wait for the child's real exit.
while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
wait "$sampler" || true
exit "$status"
