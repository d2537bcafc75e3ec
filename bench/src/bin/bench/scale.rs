//! The backlog copy at several partition counts.

use super::*;

/// Scenario 3: the backlog copy at 1, 12, 120 and 1,200 partitions (the same records and
/// bytes each time); `done` is a partition count already measured by the caller.
pub(super) fn scale(
    bin_dir: &std::path::Path,
    records: u64,
    size: usize,
    runs: u64,
    done: Option<(i32, &serde_json::Value)>,
) -> Result<serde_json::Value> {
    let counts: Vec<i32> = options()
        .scale_partitions
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .map_err(|_| format!("--scale-partitions: '{c}' is not a number"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mut results = Vec::new();
    for partitions in counts {
        let result = match done {
            Some((p, result)) if p == partitions => result.clone(),
            _ => backlog(bin_dir, records, size, partitions, runs, false)?,
        };
        results.push((partitions, result));
    }
    println!("\n## Scale in partitions: {records} records of {size} B (medians of {runs} runs)");
    println!("\n| partitions | system | median s | MB/s | CPU s/GB | peak RSS MB |\n|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (partitions, result) in &results {
        for system in result["systems"].as_array().into_iter().flatten() {
            println!(
                "| {partitions} | {} | {:.2} | {:.1} | {:.2} | {:.0} |",
                system["system"].as_str().unwrap_or_default(),
                system["median_seconds"].as_f64().unwrap_or(f64::NAN),
                system["mb_per_second"].as_f64().unwrap_or(f64::NAN),
                system["cpu_seconds_per_gb"].as_f64().unwrap_or(f64::NAN),
                system["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            );
        }
        json.push(serde_json::json!({ "partitions": partitions, "result": result }));
    }
    Ok(serde_json::json!(json))
}
