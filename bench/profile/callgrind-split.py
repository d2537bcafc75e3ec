#!/usr/bin/env python3
"""Instructions per record from two callgrind runs of the benchmark that differ only in
their record count, so that start-up and shutdown cancel out (see "Profiling" in the
docs/benchmarks.md). Needs `valgrind --tool=callgrind --separate-threads=yes` output.

  callgrind-split.py threads SMALL LARGE RECORDS
      SMALL, LARGE: a run's file prefix (/tmp/cg/50/cg.1234); RECORDS: the difference of
      the record counts. Per record, by thread role: the busiest thread outside
      librdkafka (the copying loop), librdkafka's busiest producing and fetching broker
      threads, its statistics timers, and the rest.
  callgrind-split.py functions SMALL LARGE RECORDS [OTHER_SMALL OTHER_LARGE]
      SMALL, LARGE: one thread's files (cg.1234-03). Exclusive instructions per record by
      function, side by side with another program's thread (e.g. the ceiling loop's).

Time-proportional work (statistics every 2 s, timers) grows with valgrind's slowdown, so
compare the copying threads, not the totals."""
import collections, glob, re, subprocess, sys


def annotate(path, *args):
    return subprocess.run(['callgrind_annotate', '--auto=no', '--threshold=100', *args, path],
                          capture_output=True, text=True, check=True).stdout


def costs(text):
    """(instructions, function) for each function line of callgrind_annotate's output."""
    for line in text.splitlines():
        m = re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$', line)
        if m and 'PROGRAM TOTALS' not in line:
            name = m.group(2).split(' [')[0]
            if ':' in name and not name.startswith('???'):
                name = name.split(':', 1)[1]
            yield int(m.group(1).replace(',', '')), name


def total(path):
    lines = [l for l in open(path) if l.startswith(('totals:', 'summary:'))]
    return max((int(l.split()[1]) for l in lines), default=0)


def kind_of(names):
    """A thread's kind, from the functions its inclusive profile names."""
    if 'rd_kafka_broker_thread_main' in names:
        if 'toppar_producer_serve' in names:
            return 'broker, producing'
        if 'broker_consumer_serve' in names:
            return 'broker, fetching'
        return 'other librdkafka threads'
    if 'rd_kafka_thread_main' in names:
        return 'librdkafka statistics' if 'stats_emit' in names else 'other librdkafka threads'
    return 'copying loop'


# Kinds of which only the busiest thread counts as such (a client has a broker thread
# per broker, and a process several clients); the others go to the "other" rows.
BUSIEST_ONLY = {'copying loop': 'other threads',
                'broker, producing': 'other librdkafka threads',
                'broker, fetching': 'other librdkafka threads'}


def roles(prefix):
    """Instructions by role for one run (all its thread files)."""
    threads = []
    for path in glob.glob(prefix + '-*'):
        names = ' '.join(n for _, n in costs(annotate(path, '--inclusive=yes')))
        threads.append((total(path), kind_of(names)))
    by_role = collections.Counter()
    taken = set()
    for cost, kind in sorted(threads, reverse=True):
        if kind in BUSIEST_ONLY and kind in taken:
            kind = BUSIEST_ONLY[kind]
        taken.add(kind)
        by_role[kind] += cost
    return by_role


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == 'threads':
        small, large, records = roles(args[0]), roles(args[1]), float(args[2])
        for role in sorted(set(small) | set(large), key=lambda r: -(large[r] - small[r])):
            print(f'{role:28} {(large[role] - small[role]) / records:8.0f}')
        print(f"{'all threads':28} {(sum(large.values()) - sum(small.values())) / records:8.0f}")
    elif mode == 'functions':
        records = float(args[2])

        def per_record(s, l):
            c = collections.Counter()
            for cost, name in costs(annotate(l)):
                c[name] += cost
            for cost, name in costs(annotate(s)):
                c[name] -= cost
            return c
        a = per_record(args[0], args[1])
        b = per_record(args[3], args[4]) if len(args) > 4 else collections.Counter()
        for name in sorted(set(a) | set(b), key=lambda n: -abs(a[n] - b[n]))[:40]:
            print(f'{name[:80]:80} {a[name] / records:7.0f} {b[name] / records:7.0f}')
        print(f"{'total':80} {sum(a.values()) / records:7.0f} {sum(b.values()) / records:7.0f}")
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
