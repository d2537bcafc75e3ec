//! `bench --topics [RECORDS] [RECORD_BYTES] [TOPICS] [RUNS]`: the backlog spread over many
//! single-partition topics, which is where a per-record cost that grows with the number of
//! topics shows. Systems: `--systems` (default `strait,strait-alt`, the A/B of
//! a build or a setting, see `--alt-bin` and `--alt`), in rotated
//! order per run after one unmeasured round. The ceiling loop copies one topic, so it is
//! not measured here; nor are offset sync and failover (off: their topics are named after
//! the one source topic of the backlog scenario).

use std::time::Duration;

use futures::executor::block_on;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

use crate::{
    admin, delete_topics_matching, measure, preload, report, spawn_strait, stop,
    systems_to_measure, wait_for_leaders_of, Result, PRIMARY, SECONDARY,
};

pub fn many_topics(
    bin_dir: &std::path::Path,
    records: u64,
    size: usize,
    topics: i32,
    runs: u64,
) -> Result<serde_json::Value> {
    println!("\n## Backlog copy over {topics} topics: {records} records of {size} B, {runs} runs");
    let prefix = format!("bench-{}t", std::process::id());
    let sources: Vec<String> = (0..topics).map(|i| format!("{prefix}-{i:04}")).collect();
    create_topics(PRIMARY, sources.iter())?;
    eprintln!("preloading {records} records of {size} B into {topics} topics ({prefix}-*)");
    let names: Vec<&str> = sources.iter().map(String::as_str).collect();
    preload(&names, records, size, 1, None)?;
    let systems = systems_to_measure("strait,strait-alt");
    let mut samples = Vec::new();
    for round in 0..=runs {
        let warming = round == 0;
        let run = round.saturating_sub(1);
        let mut order = systems.clone();
        order.rotate_left(run as usize % systems.len());
        for system in order {
            let alt = match system.as_str() {
                "strait" => false,
                "strait-alt" => true,
                other => {
                    return Err(
                        format!("--topics measures strait and strait-alt, not '{other}'").into(),
                    )
                }
            };
            let alias = match warming {
                true => format!("{}w", system.replace('-', "")),
                false => format!("{}{run}", system.replace('-', "")),
            };
            // Created and led beforehand, as in the backlog scenario, so that the time
            // measured is the copy's.
            let targets: Vec<(String, i32)> = sources
                .iter()
                .map(|t| (format!("{alias}.{t}"), 1))
                .collect();
            create_topics(SECONDARY, targets.iter().map(|(t, _)| t))?;
            let watcher = wait_for_leaders_of(SECONDARY, &targets)?;
            let dir = std::env::temp_dir().join(format!("strait-bench-{prefix}-{alias}"));
            std::fs::create_dir_all(&dir)?;
            let include = format!("^{prefix}-.*");
            let child = spawn_strait(bin_dir, &dir, &alias, &include, false, alt)?;
            let (mut sample, child) = measure(&system, child, &watcher, &targets, records as i64)?;
            stop(child)?;
            let label = if warming {
                "warm-up (not counted)".to_string()
            } else {
                format!("run {run}")
            };
            eprintln!(
                "{label} {system:>10}: {:.2} s ({:.2} s to the first record), {:.1} CPU s, {:.0} MB peak RSS; brokers {:.1} CPU s",
                sample.seconds, sample.startup, sample.cpu_seconds, sample.peak_rss_mb, sample.brokers_cpu_seconds
            );
            let doomed = format!("{alias}.");
            delete_topics_matching(SECONDARY, |t| t.starts_with(&doomed))?;
            std::thread::sleep(Duration::from_secs(5));
            if !warming {
                sample.run = run;
                samples.push(sample);
            }
        }
    }
    delete_topics_matching(PRIMARY, |t| t.starts_with(&prefix))?;
    Ok(report(&samples, records, size))
}

/// Creates single-partition topics in one request.
fn create_topics<'a>(servers: &str, names: impl Iterator<Item = &'a String>) -> Result<()> {
    let new: Vec<NewTopic<'_>> = names
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    for r in block_on(admin(servers)?.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("creating {t}: {e}"))?;
    }
    Ok(())
}
