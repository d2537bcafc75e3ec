//! CPU seconds and peak RSS from /proc, for the copier and the brokers (by thread too).

use super::*;

/// (user+system CPU seconds, peak RSS in MB) of a live process, from /proc.
pub(super) fn proc_usage(pid: u32, clock_ticks: f64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_ticks(&stat)? as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / clock_ticks, hwm_kb / 1024.0))
}

/// CPU ticks (user + system) from a `/proc/.../stat` line.
pub(super) fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The two test brokers' pids (None if unknown), from the files `scripts/kafka.sh` writes
/// (`$STRAIT_TESTBED_DIR`, else `.testbed` in the working directory).
pub(super) fn broker_pids() -> [(&'static str, Option<u32>); 2] {
    let dir = std::env::var_os("STRAIT_TESTBED_DIR")
        .map_or_else(|| std::path::PathBuf::from(".testbed"), Into::into);
    ["primary", "secondary"].map(|name| {
        let pid = std::fs::read_to_string(dir.join(name).join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        (name, pid)
    })
}

/// The two test brokers' CPU seconds so far; NaN if unknown.
pub(super) fn brokers_cpu_seconds(clock_ticks: f64) -> f64 {
    broker_pids()
        .iter()
        .map(|(_, pid)| {
            pid.and_then(|pid| proc_usage(pid, clock_ticks))
                .map_or(f64::NAN, |(cpu, _)| cpu)
        })
        .sum()
}

/// The brokers' CPU ticks so far by thread kind: the thread's name without its digits,
/// as Linux keeps it (15 characters: `data-plane-kafk` are Kafka's network and request
/// handler threads, `C CompilerThre` the JVM's JIT compilers).
pub(super) fn brokers_thread_ticks() -> BTreeMap<(&'static str, String), i64> {
    let mut ticks = BTreeMap::new();
    for (broker, pid) in broker_pids() {
        let Some(Ok(threads)) = pid.map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")))
        else {
            continue;
        };
        for thread in threads.flatten() {
            let Ok(stat) = std::fs::read_to_string(thread.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close), Some(used)) =
                (stat.find('('), stat.rfind(')'), stat_ticks(&stat))
            else {
                continue;
            };
            let kind: String = stat[open + 1..close]
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            *ticks.entry((broker, kind)).or_default() += used as i64;
        }
    }
    ticks
}

/// With `--broker-threads`: the brokers' CPU seconds during one run by
/// thread kind, busiest first (threads that ended during the run are not counted).
pub(super) fn print_brokers_threads(
    system: &str,
    before: &BTreeMap<(&'static str, String), i64>,
    clock_ticks: f64,
) {
    let mut used: Vec<_> = brokers_thread_ticks()
        .into_iter()
        .map(|(kind, after)| {
            let spent = after - before.get(&kind).copied().unwrap_or(0);
            (kind, spent)
        })
        .filter(|(_, spent)| *spent > 0)
        .collect();
    used.sort_by_key(|(_, spent)| -spent);
    let listed: Vec<String> = used
        .iter()
        .map(|((broker, kind), spent)| {
            format!("{broker} '{kind}' {:.2}", *spent as f64 / clock_ticks)
        })
        .collect();
    eprintln!(
        "  {system}: brokers' CPU s by thread: {}",
        listed.join(", ")
    );
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
