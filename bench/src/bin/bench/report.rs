//! The JSON record of a run and the machine it ran on.

use super::*;

/// Cores, memory and CPU model, for the report.
pub(super) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{} cores, {mem_gib:.0} GiB, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

pub(super) fn mb(records: u64, size: usize) -> f64 {
    records as f64 * size as f64 / 1e6
}

pub(super) fn report(samples: &[Sample], records: u64, size: usize) -> serde_json::Value {
    let mb = records as f64 * size as f64 / 1e6;
    println!(
        "\n| system | runs | median s | records/s | MB/s | records/s after the first record | \
         s to the first record | CPU s | CPU s/GB | peak RSS MB | brokers' CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut systems = Vec::new();
    for system in [
        "strait",
        "strait-nosync",
        "strait-alt",
        "mm2",
        "ceiling",
        "ceiling-bare",
        "ceiling-batch",
    ] {
        let Some(secs) = median_of(samples, system, |s| s.seconds) else {
            continue;
        };
        let runs = samples.iter().filter(|s| s.system == system).count();
        let of = |f: &dyn Fn(&Sample) -> f64| median_of(samples, system, f).unwrap_or(f64::NAN);
        let cpu = of(&|s| s.cpu_seconds);
        let rss = of(&|s| s.peak_rss_mb);
        let brokers_cpu = of(&|s| s.brokers_cpu_seconds);
        let startup = of(&|s| s.startup);
        // The copy rate once records flow. Start-up (group join, a JVM's warm-up) is noisy
        // and, on a backlog that copies in a few seconds, a large share of the total.
        let copy_rate = of(&|s| records as f64 / (s.seconds - s.startup).max(1e-3));
        println!(
            "| {system} | {runs} | {secs:.2} | {:.0} | {:.1} | {copy_rate:.0} | {startup:.2} | {cpu:.1} | {:.2} | {rss:.0} | {brokers_cpu:.1} |",
            records as f64 / secs,
            mb / secs,
            cpu / (mb / 1000.0)
        );
        systems.push(serde_json::json!({
            "system": system, "runs": runs, "median_seconds": secs, "records_per_second": records as f64 / secs,
            "mb_per_second": mb / secs, "records_per_second_after_first": copy_rate,
            "seconds_to_first_record": startup, "cpu_seconds": cpu,
            "cpu_seconds_per_gb": cpu / (mb / 1000.0), "peak_rss_mb": rss,
            "brokers_cpu_seconds": brokers_cpu,
        }));
    }
    let ratios = print_ratios(ratio_goals(samples));
    if let Some(cpu) = median_of(samples, "strait", |s| s.cpu_seconds) {
        println!(
            "\nStrait: {:.2} CPU s per GB (goal <= 2); peak RSS {:.0} MB (median)",
            cpu / (mb / 1000.0),
            median_of(samples, "strait", |s| s.peak_rss_mb).unwrap_or(f64::NAN)
        );
    }
    let mut json = serde_json::json!({
        "systems": systems,
        "runs": samples.iter().map(|s| serde_json::json!({
            "run": s.run, "system": s.system, "seconds": s.seconds,
            "seconds_to_first_record": s.startup, "cpu_seconds": s.cpu_seconds,
            "peak_rss_mb": s.peak_rss_mb, "brokers_cpu_seconds": s.brokers_cpu_seconds,
        })).collect::<Vec<_>>(),
    });
    json.as_object_mut().expect("an object").extend(ratios);
    json
}

pub(super) fn report_failover(
    samples: &[(String, Vec<failover::GroupOutcome>)],
) -> serde_json::Value {
    println!(
        "\nFailover exactness: {} groups stopped at fixed random points on the primary (group 0 \
         caught up), offsets read on the secondary once the copy was complete and they had settled.",
        failover::GROUPS
    );
    println!("\n| system | run | records re-read | records missed | partitions without an offset | worst group (re-read / missed) |");
    println!("|---|---|---|---|---|---|");
    let mut runs = Vec::new();
    let mut counts: BTreeMap<&str, usize> = Default::default();
    for (system, outcomes) in samples {
        let run = counts.entry(system).or_default();
        let worst = outcomes
            .iter()
            .filter(|o| o.reread + o.missed > 0)
            .max_by_key(|o| o.reread + o.missed)
            .map_or_else(
                || "none".to_string(),
                |o| format!("{} ({} / {})", o.group, o.reread, o.missed),
            );
        let reread: i64 = outcomes.iter().map(|o| o.reread).sum();
        let missed: i64 = outcomes.iter().map(|o| o.missed).sum();
        let unsynced: usize = outcomes.iter().map(|o| o.unsynced).sum();
        println!("| {system} | {run} | {reread} | {missed} | {unsynced} | {worst} |");
        runs.push(serde_json::json!({
            "system": system, "run": *run, "reread": reread, "missed": missed,
            "partitions_without_offset": unsynced,
            "groups": outcomes.iter().map(|o| serde_json::json!({
                "group": o.group, "reread": o.reread, "missed": o.missed, "partitions_without_offset": o.unsynced,
            })).collect::<Vec<_>>(),
        }));
        *run += 1;
    }
    serde_json::json!(runs)
}

pub(super) fn report_tools(samples: &[(f64, f64)], size: usize) -> serde_json::Value {
    let produce = median(samples.iter().map(|s| s.0).collect());
    let consume = median(samples.iter().map(|s| s.1).collect());
    println!(
        "\nKafka's perf tools (median of {} runs): ProducerPerformance to the secondary {produce:.0} MB/s \
         ({:.0} records/s; {}), ConsumerPerformance from the primary {consume:.0} MB/s (from the first fetch)",
        samples.len(),
        produce * 1e6 / size as f64,
        kafka_tools::PRODUCER_PROPS.join(" ")
    );
    serde_json::json!({ "produce_mb_per_second": produce, "consume_mb_per_second": consume })
}

pub(super) fn print_mm2_settings() {
    println!(
        "\nMirrorMaker 2 (dedicated mode, `java {}`), settings other than its defaults:",
        mm2::HEAP.join(" ")
    );
    for (key, value) in mm2::SETTINGS {
        println!("- `{key} = {value}`");
    }
}
